//! The router: every route a service answers, and the layers every request passes through.
//!
//! Reading [`app`] top to bottom gives the whole HTTP surface; reading its layers bottom to top
//! gives what a request meets on its way in: a caught panic, the time limit on the whole request,
//! the one on its body, the header limits, then the request metrics, and only then a handler —
//! for the saga's flow (`/create`, `/compensate`), after the hop signature check (behind the
//! edge, with `HOP_SECRET` set) and admission control.

use super::admission::admit;
use super::chaos::{chaos_delete, chaos_get, chaos_put};
use super::compensate::compensate;
use super::create::create;
use super::live;
use super::ops::{breaker, health, hello, metrics_text, openapi, ready};
use super::part::Part;
use super::record::get_record;
use super::shutdown::HANDLER_CUTOFF;
use super::signed::require_signature;
use super::state::AppState;
use crate::http;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};

/// The service's router: the ops endpoints, `/chaos` when enabled, `POST /create`,
/// `POST /compensate` and `GET /<collection>/{id}`.
pub fn app<P: Part>(state: Arc<AppState>) -> Router {
    let record_path = format!("/{}/{{id}}", state.collection);
    let chaos = if state.config.chaos_enabled {
        Router::new().route("/chaos", get(chaos_get).put(chaos_put).delete(chaos_delete))
    } else {
        Router::new()
    };
    let flow = Router::new()
        .route("/create", post(create::<P>))
        .route("/compensate", post(compensate::<P>))
        .route_layer(middleware::from_fn_with_state(state.clone(), admit));
    // Behind the edge, a hop call is checked (when HOP_SECRET is set) before it takes a permit.
    let flow = if P::EDGE {
        flow
    } else {
        flow.route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_signature,
        ))
    };
    Router::new()
        .merge(chaos)
        .route("/", get(hello))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/breaker", get(breaker))
        .route("/live", get(live::page))
        .route("/live/events", get(live::events))
        .route("/openapi.json", get(openapi::<P>))
        .merge(flow)
        .route(&record_path, get(get_record))
        .fallback(http::not_found)
        .method_not_allowed_fallback(http::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(middleware::from_fn(http::limit_headers))
        // A client that sends its body slower than the request budget gets 408, not a task
        // held forever; a handler that somehow outlives its own deadline is cut off (503).
        .layer(RequestBodyTimeoutLayer::new(state.config.request_timeout))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            state.config.request_timeout + HANDLER_CUTOFF,
        ))
        .layer(CatchPanicLayer::custom(http::panic_response))
        .with_state(state)
}

/// Request metrics: the `http_request_duration_seconds` histogram, labelled with the service,
/// the matched route, the method and the status.
///
/// Every label value comes from a fixed set, never from the request as sent: each distinct
/// value is a series kept in memory for the life of the process, and hyper accepts any token as
/// a method and any path. So the route is the router's template (`/orders/{id}`, never the id)
/// or `unmatched`, the method one of the standard nine or `other`
/// ([`telemetry::method_label`](crate::telemetry::method_label)), and the status a code this
/// service answered.
async fn observe(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = crate::telemetry::method_label(req.method());
    let started = tokio::time::Instant::now();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    let labels = [
        ("service", state.service.to_string()),
        ("route", route),
        ("method", method.to_string()),
        ("status", status),
    ];
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    res
}
