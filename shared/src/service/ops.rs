//! The ops endpoints: what an operator, a load balancer or a scraper asks a service.
//!
//! `/` (the original demo's hello), `/health` (the process is up), `/ready` (not shutting down,
//! and its database answers), `/metrics` (Prometheus text), `/breaker` (the next hop's breaker,
//! as a snapshot) and `/openapi.json`. The live page over `/breaker`'s body is `live.rs`. None of
//! them touches a saga; each is a few lines over the state.

use super::part::Part;
use super::state::AppState;
use crate::http::ApiError;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;

pub(super) async fn openapi<P: Part>() -> Json<utoipa::openapi::OpenApi> {
    Json(super::openapi::document::<P>())
}

pub(super) async fn hello(State(state): State<Arc<AppState>>) -> String {
    format!("hello from {}", state.config.id)
}

pub(super) async fn health(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "up", "service": state.service}))
}

/// Ready: not shutting down, and the database answers. The reason a service is not ready is a
/// word (`draining`, `database unavailable`); the database's own error, which can name hosts,
/// users and internal addresses, goes to the log only.
pub(super) async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let not_ready = |reason: &str| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "ready": false, "service": state.service, "store": state.store.kind(),
                "reason": reason
            })),
        )
            .into_response()
    };
    if state.shutdown.is_cancelled() {
        return not_ready("draining");
    }
    match state.store.ping().await {
        Ok(()) => Json(serde_json::json!({
            "ready": true, "service": state.service, "store": state.store.kind()
        }))
        .into_response(),
        Err(e) => {
            tracing::warn!(service = state.service, error = %e, "not ready: the database does not answer");
            not_ready("database unavailable")
        }
    }
}

pub(super) async fn metrics_text() -> Response {
    match crate::telemetry::prometheus() {
        Some(handle) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render(),
        )
            .into_response(),
        None => ApiError::Internal("another metrics recorder is installed".into()).into_response(),
    }
}

pub(super) async fn breaker(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(breaker_body(&state))
}

/// `GET /breaker`'s body, which the live page's stream sends too.
pub(super) fn breaker_body(state: &AppState) -> serde_json::Value {
    serde_json::json!({
        "service": state.service,
        "next_hop": state.hop.as_ref().map(|h| h.url().as_str()),
        "breaker": state.hop.as_ref().map(|h| h.breaker().snapshot()),
        "next_hop_calls": state.hop.as_ref().map(|h| h.sent()),
    })
}
