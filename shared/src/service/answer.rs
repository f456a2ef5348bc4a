//! Answers, both ways: how the next hop's answer moves our record, and what we answer about it.
//!
//! The request flow, compensation and the re-driver all end the same way — the next hop said
//! something (or could not be reached), the record moves, and the answer about the record's
//! *current* state is saved in it. Keeping those steps here, below all three, is what lets the
//! re-driver finish a request exactly as the request would have.
//!
//! [`log_answered`] is the one `info` line a hop writes per order it answers: the outcome and
//! what the next hop did for it, so a person reading `docker-compose logs -f` sees each order
//! go by once per hop, and the breaker's own per-call lines can stay at `debug`.

use super::state::AppState;
use crate::hop::{ForwardError, Hop};
use crate::saga::{Fallback, InvalidTransition, SagaId, SagaRecord, SavedResponse, Status};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// What a record's next status is, given what the next hop says of its own record.
///
/// Only an answer that says `completed` (or `last`: the hop limit, nothing further to do)
/// completes the record. A 2xx without a status we know (a proxy's page, an empty body, a
/// newer peer's word) proves nothing about the next hop's record, so the record stays
/// `degraded` and the re-driver asks again: the idempotent replay then says what happened.
pub fn settle(next: &serde_json::Value) -> (Status, &'static str) {
    match next.get("status").and_then(|s| s.as_str()) {
        Some("completed" | "last") => (Status::Completed, ""),
        Some("degraded" | "pending") => (Status::Degraded, "downstream degraded"),
        Some("compensating") => (Status::Degraded, "downstream compensating"),
        Some("compensated") => (Status::Compensated, "downstream compensated"),
        Some("failed") => (Status::Failed, "downstream failed"),
        _ => (Status::Degraded, "downstream answer without a known status"),
    }
}

/// Moves `rec` by the next hop's answer (`step` names the attempt in the history) and returns
/// the HTTP status to answer with: the next hop's 4xx when it refused the request, else 200.
/// `fallback` counts a skipped hop in the breaker's fallback metric (requests, not re-drives).
pub(crate) fn apply_answer(
    rec: &mut SagaRecord,
    answer: Result<serde_json::Value, ForwardError>,
    hop: &Hop,
    step: &str,
    fallback: bool,
) -> Result<StatusCode, InvalidTransition> {
    match answer {
        Ok(next) => {
            // The chain is only complete when every hop after us is.
            let (status, reason) = settle(&next);
            rec.transition(status, step, reason)?;
            rec.next = Some(next);
            rec.fallback = None;
            Ok(StatusCode::OK)
        }
        Err(e) => {
            let reason = e.reason();
            let detail = e.detail(hop);
            tracing::debug!(
                breaker = hop.breaker().name(),
                reason = %reason,
                detail = %e.internal_detail(hop),
                "next hop gave no usable answer"
            );
            let mut http_status = StatusCode::OK;
            if let Some((code, body)) = e.rejected_by_next_hop() {
                http_status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
                rec.next = Some(body.clone());
                rec.transition(Status::Failed, step, &reason)?;
            } else {
                if fallback {
                    hop.breaker().record_fallback(&reason);
                }
                rec.transition(Status::Degraded, step, &reason)?;
            }
            rec.fallback = Some(Fallback { reason, detail });
            Ok(http_status)
        }
    }
}

/// What `/create` answers about `rec` now; saved in the record so a replay of the same request
/// answers the record's *current* state (this is how a later `completed` or `compensated`
/// travels back up the chain).
pub(crate) fn saved_response(
    state: &AppState,
    rec: &SagaRecord,
    status: StatusCode,
) -> SavedResponse {
    let body = rec.answer_body(state.service);
    SavedResponse {
        status: status.as_u16(),
        body,
    }
}

/// Answers a repeated request with what the first one got.
pub(super) fn replay(state: &AppState, rec: &SagaRecord, saved: &SavedResponse) -> Response {
    let status = StatusCode::from_u16(saved.status).unwrap_or(StatusCode::OK);
    let mut res = (status, Json(saved.body.clone())).into_response();
    res.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    with_location(res, state, &rec.saga_id)
}

/// `body` as JSON with `status`, and the record's address in `Location`.
pub(super) fn located(
    state: &AppState,
    id: &SagaId,
    status: StatusCode,
    body: serde_json::Value,
) -> Response {
    with_location((status, Json(body)).into_response(), state, id)
}

/// Adds `Location: /<collection>/<saga id>`.
fn with_location(mut res: Response, state: &AppState, id: &SagaId) -> Response {
    let location = format!("/{}/{id}", state.collection);
    if let Ok(loc) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, loc);
    }
    res
}

/// What the next hop did for `rec`, in a few words: `shipment completed`, `failed: http 502`,
/// `not called: breaker open`, or `-` when there is no next hop.
pub(super) fn next_hop_summary(rec: &SagaRecord) -> String {
    if let Some(f) = &rec.fallback {
        return match f.reason.as_str() {
            "open" => "not called: breaker open".to_string(),
            "deadline" => "not called: deadline spent".to_string(),
            reason => format!("failed: {reason}"),
        };
    }
    match &rec.next {
        Some(next) => format!(
            "{} {}",
            next.get("service")
                .and_then(|s| s.as_str())
                .unwrap_or("next hop"),
            next.get("status")
                .and_then(|s| s.as_str())
                .unwrap_or("answered")
        ),
        None => "-".to_string(),
    }
}

/// The `info` line of an answered order (`event = "answered"`); the request's span adds the
/// service, the count and the saga id. A replay (`replayed`: an idempotent repeat answered from
/// the store, as every re-drive of the caller's is) logs at `debug`, so an outage's re-drives
/// don't repeat each order's line.
pub(super) fn log_answered(rec: &SagaRecord, replayed: bool, started: tokio::time::Instant) {
    let next = next_hop_summary(rec);
    let ms = started.elapsed().as_millis() as u64;
    if replayed {
        tracing::debug!(event = "answered", outcome = %rec.status, next, ms, replayed, "replayed");
    } else {
        tracing::info!(event = "answered", outcome = %rec.status, next, ms, "answered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_next_hops_status_decides_ours() {
        assert_eq!(settle(&json!({"status": "completed"})).0, Status::Completed);
        assert_eq!(settle(&json!({"status": "last"})).0, Status::Completed);
        assert_eq!(settle(&json!({"status": "degraded"})).0, Status::Degraded);
        assert_eq!(
            settle(&json!({"status": "compensating"})).0,
            Status::Degraded
        );
        assert_eq!(
            settle(&json!({"status": "compensated"})).0,
            Status::Compensated
        );
        assert_eq!(settle(&json!({"status": "failed"})).0, Status::Failed);
    }

    #[test]
    fn the_answer_line_says_what_the_next_hop_did() {
        let mut rec =
            SagaRecord::accepted("k".into(), "f".into(), "1".into(), 1, json!({"id": "1"}));
        assert_eq!(next_hop_summary(&rec), "-");
        rec.next = Some(json!({"service": "shipment", "status": "completed"}));
        assert_eq!(next_hop_summary(&rec), "shipment completed");
        let fallback = |reason: &str| Fallback {
            reason: reason.into(),
            detail: String::new(),
        };
        rec.next = None;
        rec.fallback = Some(fallback("open"));
        assert_eq!(next_hop_summary(&rec), "not called: breaker open");
        rec.fallback = Some(fallback("http 502"));
        assert_eq!(next_hop_summary(&rec), "failed: http 502");
    }

    #[test]
    fn a_2xx_without_a_known_status_is_not_completion() {
        for answer in [
            json!({}),
            json!({"status": "ok"}),
            json!({"status": 200}),
            json!("<html>Welcome to nginx!</html>"),
            json!(null),
        ] {
            assert_eq!(settle(&answer).0, Status::Degraded, "{answer}");
        }
    }
}
