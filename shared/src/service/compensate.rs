//! Compensation: undoing a record and, through the next hop, every hop after it.
//!
//! Two actors give up on a saga. A caller does, with `POST /compensate` (the handler here); and
//! our own re-driver does, when a record exhausts its attempts or its deadline. Both take the
//! same step, [`undo`]: ask the next hop to undo its part under the same idempotency key (it does
//! the same recursively), and end `compensated` — or `completed`, when the rest of the chain had
//! finished after all, so a saga is never half undone.

use super::answer::{located, saved_response};
use super::budget::within;

use super::chaos::ChaosGate;
use super::extract::{Deadline, IdempotencyKey};
use super::part::Part;
use super::schedule::{backoff, later, when_open_ends};
use super::state::AppState;
use crate::breaker::BreakerError;
use crate::hop::{ForwardError, Hop};
use crate::http::ApiError;
use crate::saga::{SagaRecord, Status};
use crate::store::Inserted;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// `POST /compensate` with `Idempotency-Key: <key>`: undo the record stored under that key (the
/// caller gave up on its saga). A record already terminal is left as it is and reported — a
/// `completed` answer tells the caller the saga finished after all. A key nothing was stored
/// under yet gets a compensated tombstone, so a request still on its way can't create the
/// record later. 200 when the record is terminal; 202 while the hops after this one are still
/// being undone (the re-driver carries on; ask again). Idempotent: ask as often as needed.
pub(super) async fn compensate<P: Part>(
    State(state): State<Arc<AppState>>,
    Deadline(deadline): Deadline,
    _: ChaosGate,
    key: Option<IdempotencyKey>,
) -> Result<Response, ApiError> {
    let IdempotencyKey(key) = key.ok_or_else(|| {
        ApiError::bad_request(
            "missing_header",
            "Idempotency-Key is required: it names the record to compensate",
            Some("Idempotency-Key".into()),
        )
    })?;
    // A few rounds settle a race with the re-driver or a replay; then the caller asks again.
    for _ in 0..4 {
        let mut rec = match within(deadline, "reading the record", state.store.get_by_key(&key))
            .await?
        {
            Some(rec) => rec,
            None => {
                let mut stone = SagaRecord::tombstone(key.clone(), "cancelled before it arrived");
                stone.response = Some(saved_response(&state, &stone, StatusCode::OK));
                match within(deadline, "cancelling the key", state.store.insert(&stone)).await? {
                    Inserted::New => return Ok(compensate_answer(&state, &stone)),
                    Inserted::Existing(rec) => rec,
                }
            }
        };
        // Its final write may still be on its way (see `finish`): read again after it.
        if state.finishing.settled(&rec.saga_id).await {
            continue;
        }
        if rec.status.is_terminal() {
            return Ok(compensate_answer(&state, &rec));
        }
        let read = rec.version;
        if rec.status != Status::Compensating {
            rec.transition(
                Status::Compensating,
                "compensate",
                "cancelled by the caller",
            )?;
        }
        let next = match state.hop.as_ref() {
            Some(hop) => serde_json::from_value::<P>(rec.body.clone())
                .ok()
                .and_then(|p| p.forward())
                .map(|_| hop),
            None => None,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let budget = left.saturating_sub(crate::hop::deadline_margin(left));
        // Leaves a record that is still compensating due again (after a backoff).
        undo(&state, &mut rec, next, budget).await?;
        rec.response = Some(saved_response(&state, &rec, StatusCode::OK));
        rec.version = read + 1;
        if within(
            deadline,
            "saving the compensation",
            state.store.replace(&rec, read),
        )
        .await?
        {
            return Ok(compensate_answer(&state, &rec));
        }
    }
    Err(ApiError::Busy(format!(
        "the record under Idempotency-Key {key:?} is changing under concurrent requests; retry"
    )))
}

fn compensate_answer(state: &AppState, rec: &SagaRecord) -> Response {
    let code = if rec.status.is_terminal() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let saved = saved_response(state, rec, code);
    located(state, &rec.saga_id, code, saved.body)
}

/// Undoes `rec` (already `compensating`): asks the next hop to undo its part, and ends
/// `compensated` or `completed` by its answer; stays `compensating` (due after a backoff) when
/// the next hop can't say yet.
pub(super) async fn undo(
    state: &AppState,
    rec: &mut SagaRecord,
    hop: Option<&Hop>,
    budget: Duration,
) -> Result<(), crate::saga::InvalidTransition> {
    let Some(hop) = hop else {
        return rec.transition(Status::Compensated, "compensate", "nothing after this hop");
    };
    let key = Hop::key_for(&rec.saga_id, state.service);
    let answer = hop.compensate(&key, Instant::now() + budget).await;
    let cfg = &state.config.saga;
    match answer {
        Ok(next) => {
            let status = next.get("status").and_then(|s| s.as_str()).unwrap_or("");
            let moved = match status {
                "compensated" => {
                    rec.transition(Status::Compensated, "compensate", "next hop compensated")
                }
                "completed" | "last" => rec.transition(
                    Status::Completed,
                    "compensate",
                    "next hop had completed: the saga finished after all",
                ),
                "failed" => rec.transition(Status::Failed, "compensate", "next hop failed"),
                _ => {
                    rec.redrives += 1;
                    rec.due_at = Some(later(Utc::now(), backoff(cfg, rec.redrives)));
                    rec.transition(
                        Status::Compensating,
                        "compensate",
                        "next hop still compensating",
                    )
                }
            };
            rec.next = Some(next);
            moved
        }
        Err(ForwardError::Breaker(BreakerError::Rejected)) => {
            rec.due_at = Some(when_open_ends(hop));
            Ok(())
        }
        Err(e) => {
            rec.redrives += 1;
            rec.due_at = Some(later(Utc::now(), backoff(cfg, rec.redrives)));
            rec.transition(Status::Compensating, "compensate", e.reason())
        }
    }
}
