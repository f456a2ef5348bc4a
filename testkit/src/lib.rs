//! Black-box test helpers: a MongoDB-wire server, the real stack on port 0, an HTTP client.
//!
//! Tests read as the scenario they check: `let s = TestStack::mongo(&[("JUMPS","2")]).await?;`
//! starts order → payment → shipment for real (the same code `saga up` runs) on free loopback
//! ports against a fresh database, and `s.post(Svc::Order, "/create", &seed())` talks HTTP to it.
//! Where a socket adds nothing, [`TestRouter`] answers the same requests from one service's
//! router in-process.

pub mod compose;
pub mod ferretdb;
pub mod mongo;
pub mod process;
pub mod redis;
pub mod router;

pub use mongo::{mongo, unique_db_name, MongoServer};
pub use router::TestRouter;

use saga::up::{Stack, UpArgs};
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr};

/// The original demo's request body (http-tests/order.http), the one `saga load` sends.
pub use saga::load::SEED;

pub fn seed() -> Value {
    serde_json::from_str(SEED).expect("SEED is valid JSON (a constant)")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Svc {
    Order,
    Payment,
    Shipment,
}

impl Svc {
    pub fn name(self) -> &'static str {
        match self {
            Svc::Order => "order",
            Svc::Payment => "payment",
            Svc::Shipment => "shipment",
        }
    }

    pub fn collection(self) -> &'static str {
        match self {
            Svc::Order => "orders",
            Svc::Payment => "payments",
            Svc::Shipment => "shipments",
        }
    }
}

/// An HTTP answer, with the body parsed as JSON when it is JSON.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    /// An answer whose body `text` is parsed as JSON when it is JSON (`Value::Null` otherwise).
    pub fn new(status: u16, headers: reqwest::header::HeaderMap, text: String) -> Self {
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self {
            status,
            headers,
            text,
            json,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Where a test stack keeps its records.
pub enum Backing {
    Mongo {
        server: Box<MongoServer>,
        db: String,
    },
    Embedded(tempfile::TempDir),
    /// A MongoDB URL nobody answers at: the database-down scenario.
    Unreachable,
}

/// The three services running for one test.
pub struct TestStack {
    pub stack: Option<Stack>,
    pub backing: Backing,
    pub args: UpArgs,
    pub http: reqwest::Client,
}

fn args(env: &[(&str, &str)], inject: &[&str]) -> UpArgs {
    UpArgs {
        host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        order_port: 0,
        payment_port: 0,
        shipment_port: 0,
        mongo_url: None,
        inject_err: inject.iter().map(|s| s.to_string()).collect(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        inherit_env: false,
    }
}

impl TestStack {
    /// The stack on a fresh database of the test MongoDB; `None` when there is no server (only
    /// outside CI: in CI [`mongo()`] fails the test instead).
    pub async fn mongo(env: &[(&str, &str)], inject: &[&str]) -> Option<Self> {
        let server = mongo().await?;
        let db = unique_db_name("chain");
        let mut a = args(env, inject);
        a.mongo_url = Some(server.uri().to_string());
        a.env.push(("MONGO_DB".into(), db.clone()));
        Some(
            Self::start(
                a,
                Backing::Mongo {
                    server: Box::new(server),
                    db,
                },
            )
            .await,
        )
    }

    /// The stack on the embedded store in a temporary directory.
    pub async fn embedded(env: &[(&str, &str)], inject: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir for the embedded store");
        let mut a = args(env, inject);
        a.env
            .push(("DATA_DIR".into(), dir.path().display().to_string()));
        Self::start(a, Backing::Embedded(dir)).await
    }

    /// The stack pointed at a MongoDB URL where nothing listens.
    pub async fn unreachable_mongo(env: &[(&str, &str)]) -> Self {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a probe port");
            l.local_addr().expect("probe port address").port()
        }; // dropped: nothing listens there now
        let mut a = args(env, &[]);
        a.mongo_url = Some(format!("mongodb://127.0.0.1:{port}/"));
        Self::start(a, Backing::Unreachable).await
    }

    /// Stops shipment and starts it again on the same port, failing at random or not: the
    /// "the callee got healthy again" step of a breaker scenario.
    pub async fn restart_shipment(&mut self, inject_err: bool) {
        self.args.inject_err.retain(|s| s != "shipment");
        if inject_err {
            self.args.inject_err.push("shipment".into());
        }
        let Stack {
            order,
            payment,
            shipment,
        } = self.stack.take().expect("the stack is running");
        let port = shipment.addr.port();
        shipment.stop().await;
        let cfg = saga::up::config_for::<shipment::Shipment>(&self.args, port, None)
            .expect("shipment's config parses");
        let shipment = shared::service::start::<shipment::Shipment>(cfg)
            .await
            .expect("shipment restarts on its old port");
        self.stack = Some(Stack {
            order,
            payment,
            shipment,
        });
    }

    async fn start(args: UpArgs, backing: Backing) -> Self {
        let stack = saga::up::start(&args)
            .await
            .expect("the stack starts on free ports");
        Self {
            stack: Some(stack),
            backing,
            args,
            http: reqwest::Client::new(),
        }
    }

    fn running(&self) -> &Stack {
        self.stack.as_ref().expect("the stack is running")
    }

    pub fn url(&self, svc: Svc) -> String {
        let s = self.running();
        let r = match svc {
            Svc::Order => &s.order,
            Svc::Payment => &s.payment,
            Svc::Shipment => &s.shipment,
        };
        format!("http://{}", r.addr)
    }

    pub async fn get(&self, svc: Svc, path: &str) -> Reply {
        let res = self
            .http
            .get(format!("{}{path}", self.url(svc)))
            .send()
            .await
            .expect("GET reaches the service");
        reply(res).await
    }

    pub async fn post(&self, svc: Svc, path: &str, body: &Value) -> Reply {
        self.post_with(svc, path, body, &[]).await
    }

    pub async fn post_with(
        &self,
        svc: Svc,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self
            .http
            .post(format!("{}{path}", self.url(svc)))
            .header("content-type", "application/json")
            .body(body.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        reply(req.send().await.expect("POST reaches the service")).await
    }

    pub async fn post_raw(&self, svc: Svc, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
        let res = self
            .http
            .post(format!("{}{path}", self.url(svc)))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("POST reaches the service");
        reply(res).await
    }

    /// `PUT /chaos` on `svc` with `faults`, with a bearer `token` when given.
    pub async fn put_chaos(&self, svc: Svc, faults: Value, token: Option<&str>) -> Reply {
        let mut req = self
            .http
            .put(format!("{}/chaos", self.url(svc)))
            .header("content-type", "application/json")
            .body(faults.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        reply(req.send().await.expect("PUT /chaos")).await
    }

    /// `DELETE /chaos` on `svc`, which must succeed.
    pub async fn clear_chaos(&self, svc: Svc) {
        let cleared = self
            .http
            .delete(format!("{}/chaos", self.url(svc)))
            .send()
            .await
            .expect("DELETE /chaos");
        assert_eq!(cleared.status(), 200);
    }

    /// How many records a service stored, read straight from its database: the documents that
    /// are a record's first version (`MongoStore` keeps each later version as a document of its
    /// own). Not through a `MongoStore` of our own: its first operation would create indexes
    /// beside the service's, and FerretDB v1 drops the connection of a `createIndexes` that
    /// races another.
    pub async fn count(&self, svc: Svc) -> u64 {
        match &self.backing {
            Backing::Mongo { server, db } => {
                let client = mongodb::Client::with_uri_str(server.uri())
                    .await
                    .expect("a client for the test database");
                client
                    .database(db)
                    .collection::<mongodb::bson::Document>(svc.collection())
                    .count_documents(mongodb::bson::doc! { shared::store::mongo::FIRST: true })
                    .await
                    .expect("count_documents on the test database")
            }
            Backing::Unreachable => 0,
            Backing::Embedded(_) => {
                let s = self.running();
                let r = match svc {
                    Svc::Order => &s.order,
                    Svc::Payment => &s.payment,
                    Svc::Shipment => &s.shipment,
                };
                r.state
                    .store
                    .count()
                    .await
                    .expect("count on the embedded store")
            }
        }
    }

    /// The store a running service writes to.
    pub fn store(&self, svc: Svc) -> std::sync::Arc<dyn shared::store::Store> {
        let s = self.running();
        let r = match svc {
            Svc::Order => &s.order,
            Svc::Payment => &s.payment,
            Svc::Shipment => &s.shipment,
        };
        r.state.store.clone()
    }

    /// `saga verify` on the running stack's three stores.
    pub async fn verify(&self) -> saga::verify::Report {
        saga::verify::verify_stores(
            &*self.store(Svc::Order),
            &*self.store(Svc::Payment),
            &*self.store(Svc::Shipment),
            std::time::Duration::from_secs(300),
        )
        .await
        .expect("the three stores can be read")
    }

    /// Stops the services and drops the test database.
    pub async fn stop(mut self) {
        if let Some(stack) = self.stack.take() {
            stack.stop().await;
        }
        if let Backing::Mongo { server, db } = &self.backing {
            if let Ok(client) = mongodb::Client::with_uri_str(server.uri()).await {
                let _ = client.database(db).drop().await;
            }
        }
    }
}

/// Polls `probe` until it returns `Some`, for at most `within`; panics naming `what` otherwise.
/// For waiting on *eventual* states (a re-driven saga finishing), never for timing claims.
pub async fn eventually<T, F, Fut>(what: &str, within: std::time::Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{what}: not reached within {within:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

pub async fn reply(res: reqwest::Response) -> Reply {
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap_or_default();
    Reply::new(status, headers, text)
}

/// Skips the rest of a test when there is no MongoDB (never in CI, where `mongo()` panics).
#[macro_export]
macro_rules! mongo_stack_or_skip {
    ($env:expr, $inject:expr) => {
        match $crate::TestStack::mongo($env, $inject).await {
            Some(s) => s,
            None => {
                eprintln!("skipped: no MongoDB");
                return;
            }
        }
    };
}
