//! One service's router driven in-process, without a socket: the HTTP edge's answers (status
//! codes, JSON error bodies, headers) for the price of a function call.
//!
//! [`TestRouter::new`] builds exactly the router a service serves (`shared::service::app`) on
//! an embedded store in a temp dir, and sends each request through `tower::ServiceExt::oneshot`,
//! as axum's `testing` example does. Nothing listens and nothing runs in the background (no
//! re-driver), and `CHAIN_SVC` is unset unless a test sets it, so the service is the last hop and
//! a `/create` completes on its own. What needs a wire — hyper's own limits, a next hop, timing —
//! belongs to [`crate::TestStack`].

use crate::Reply;
use axum::body::Body;
use axum::http::{header, Method, Request};
use axum::Router;
use serde_json::Value;
use shared::service::{app, state_with_store, AppState, Part};
use shared::store::{EmbeddedStore, Store};
use shared::Config;
use std::collections::HashMap;
use std::sync::Arc;
use tower::ServiceExt;

/// A service's router and its store, for one test.
pub struct TestRouter {
    router: Router,
    state: Arc<AppState>,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

impl TestRouter {
    /// `P`'s router, configured by `env` (the variables a test would set; nothing is read from
    /// the process environment).
    pub fn new<P: Part>(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir for the embedded store");
        let store: Arc<dyn Store> = Arc::new(
            EmbeddedStore::open(dir.path(), P::COLLECTION).expect("the embedded store opens"),
        );
        let vars: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let config = Config::from_lookup(P::SERVICE, P::DEFAULT_PORT, |k| vars.get(k).cloned())
            .expect("the test's variables are a valid configuration");
        let state = state_with_store::<P>(config, store.clone()).expect("the service's state");
        Self {
            router: app::<P>(state.clone()),
            state,
            store,
            _dir: dir,
        }
    }

    /// The state the router's handlers share (to hold a permit, read the config, …).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Sends `req` through the router and reads the whole answer.
    pub async fn send(&self, req: Request<Body>) -> Reply {
        let res = match self.router.clone().oneshot(req).await {
            Ok(res) => res,
            Err(never) => match never {},
        };
        let (parts, body) = res.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .expect("an in-memory body reads");
        Reply::new(
            parts.status.as_u16(),
            parts.headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(request(Method::GET, path, &[], Body::empty()))
            .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.post_with(path, body, &[]).await
    }

    /// A JSON `POST` with extra headers.
    pub async fn post_with(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
        let mut all = vec![(header::CONTENT_TYPE.as_str(), "application/json")];
        all.extend_from_slice(headers);
        self.send(request(
            Method::POST,
            path,
            &all,
            Body::from(body.to_string()),
        ))
        .await
    }

    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
        let headers = [(header::CONTENT_TYPE.as_str(), content_type)];
        self.send(request(Method::POST, path, &headers, Body::from(body)))
            .await
    }

    /// How many records the service stored.
    pub async fn count(&self) -> u64 {
        self.store
            .count()
            .await
            .expect("count on the embedded store")
    }
}

/// A request as a client would send it (no `Content-Length`: add one to `headers` to declare
/// the size up front).
pub fn request(method: Method, path: &str, headers: &[(&str, &str)], body: Body) -> Request<Body> {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(body)
        .expect("a request built from a valid path and headers")
}
