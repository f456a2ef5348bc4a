//! The check on hop calls: with `HOP_SECRET` set, `/create` and `/compensate` of a service
//! behind the edge answer only calls signed by a hop that holds a listed key.
//!
//! A middleware rather than an extractor, because the signature covers the body, and the
//! handlers' own extractors read the body after it: the check reads the headers first (a call
//! without a valid key id and a fresh timestamp is refused before a byte of its body is read),
//! then the body within `MAX_BODY_BYTES`, verifies, and hands the request on with the same
//! bytes. Refusals are 401 through [`ApiError::HopSignature`], counted in
//! `hop_signature_refused_total{reason}` and logged at debug level only (a flood of forged calls
//! must not become a flood of log lines). The edge (order, [`Part::EDGE`]) takes clients' calls
//! and is never behind this check.
//!
//! [`Part::EDGE`]: super::part::Part::EDGE

use super::state::AppState;
use crate::hop::signature::{self, Call, Refusal};
use crate::hop::IDEMPOTENCY_HEADER;
use crate::http::ApiError;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

pub(super) async fn require_signature(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(keys) = state.config.hop_keys.as_ref() else {
        return next.run(req).await;
    };
    let claim = match signature::claim(keys, req.headers(), signature::unix_now()) {
        Ok(c) => c,
        Err(r) => return refuse(&state, r),
    };
    let (parts, body) = req.into_parts();
    let limit = state.config.max_body_bytes;
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return ApiError::PayloadTooLarge { limit }.into_response();
    };
    let call = Call {
        method: parts.method.as_str(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map_or(parts.uri.path(), |p| p.as_str()),
        idempotency_key: parts
            .headers
            .get(IDEMPOTENCY_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim),
        body: &bytes,
    };
    if let Err(r) = claim.verify(&call) {
        return refuse(&state, r);
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn refuse(state: &AppState, r: Refusal) -> Response {
    let reason = match r {
        Refusal::Missing(_) => "missing",
        Refusal::Malformed(..) => "malformed",
        Refusal::UnknownKey(_) => "unknown_key",
        Refusal::Stale { .. } => "stale",
        Refusal::Mismatch => "mismatch",
    };
    metrics::counter!(
        "hop_signature_refused_total",
        "service" => state.service,
        "reason" => reason
    )
    .increment(1);
    tracing::debug!(event = "hopRefused", reason, error = %r, "unsigned or badly signed hop call");
    ApiError::HopSignature(r).into_response()
}
