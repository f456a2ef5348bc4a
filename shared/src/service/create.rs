//! `POST /create`: the request flow of the saga — persist first, then forward.
//!
//! The handler's arguments are its checks, in the order a client sees them: the deadline, the
//! injected faults, the body (content type, size, fields), and last the idempotency key. Then
//! the flow: the hop limit (`count >= JUMPS` answers `last` and stores nothing), the record is
//! inserted — or the one already stored under the same key is replayed — and only once it is
//! safely stored does [`process`] inject `INJECT_ERR`'s 502, forward the nested part through the
//! breaker, move the record by the answer and save that answer in it. A hop with nothing to
//! forward (the last one) stores its record already completed: one write instead of two, since
//! there is no call to persist before.

use super::answer::{apply_answer, located, log_answered, replay, saved_response};
use super::budget::within;
use super::chaos::ChaosGate;
use super::extract::{Count, Deadline, IdempotencyKey, ValidJson};
use super::part::Part;
use super::schedule::{backoff, later};
use super::state::AppState;
use crate::failpoint::{self, Action, Point};
use crate::hop::Hop;
use crate::http::ApiError;
use crate::saga::{Fallback, SagaId, SagaRecord, Status};
use crate::store::Inserted;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// The body of every `/create` answer.
#[derive(Serialize)]
struct CreateBody<'a> {
    service: &'a str,
    saga_id: Option<SagaId>,
    id: &'a str,
    count: u32,
    status: &'a str,
    next: Option<&'a serde_json::Value>,
    fallback: Option<&'a Fallback>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

/// A stable fingerprint of what a request asked for (FNV-1a over count and canonical JSON), so
/// a repeated idempotency key with a different request is told apart from a replay.
fn fingerprint(count: u32, body: &serde_json::Value) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let text = body.to_string();
    for b in count.to_le_bytes().iter().chain(text.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[tracing::instrument(
    name = "create",
    skip_all,
    fields(service = state.service, saga_id = tracing::field::Empty, count = tracing::field::Empty)
)]
pub(super) async fn create<P: Part>(
    State(state): State<Arc<AppState>>,
    Deadline(deadline): Deadline,
    _: ChaosGate,
    Count(count): Count,
    // Taken before the body (axum wants the body last) but checked after it, as it always was:
    // a request wrong in both gets the body's error.
    key: Result<Option<IdempotencyKey>, ApiError>,
    ValidJson { part, canonical }: ValidJson<P>,
) -> Result<Response, ApiError> {
    let started = tokio::time::Instant::now();
    let key = key?.map(|IdempotencyKey(k)| k);
    let count = count.saturating_add(1);
    let span = tracing::Span::current();
    span.record("count", count);

    if count >= state.config.jumps {
        let body = CreateBody {
            service: state.service,
            saga_id: None,
            id: part.id(),
            count,
            status: "last",
            next: None,
            fallback: None,
            message: Some("Last"),
        };
        tracing::info!(
            event = "answered",
            outcome = "last",
            "answered: hop limit reached"
        );
        return Ok(Json(body).into_response());
    }

    // From here the request runs in a task of its own, so a caller who hangs up does not
    // cancel it half-way: once its record is stored, the forward, the final write and the next
    // hop's work all finish now, instead of the re-driver taking the record up after its
    // deadline (reads, a re-forward and the next hop's replay: on FerretDB each read is a scan).
    let flow = accept(state, deadline, part, canonical, key, count, started).in_current_span();
    tokio::spawn(flow)
        .await
        .map_err(|e| ApiError::Internal(format!("the request's task ended early: {e}")))?
}

/// Stores the accepted record (or finds the one stored under the same key) and carries on.
async fn accept<P: Part>(
    state: Arc<AppState>,
    deadline: tokio::time::Instant,
    part: P,
    canonical: serde_json::Value,
    key: Option<String>,
    count: u32,
    started: tokio::time::Instant,
) -> Result<Response, ApiError> {
    let span = tracing::Span::current();
    let forward = part.forward();
    // One roll per request, made before the insert: an injected failure still comes after the
    // record is stored, as in the original.
    let injected = state.config.inject_err && rand::random::<f64>() < state.config.err_rate;
    let mut rec = SagaRecord::accepted(
        String::new(),
        fingerprint(count, &canonical),
        part.id().to_string(),
        count,
        canonical,
    );
    rec.key = key.unwrap_or_else(|| rec.saga_id.to_string());
    // If this request dies before it answers, the re-driver takes the record up once the
    // request's own deadline (and a second's grace) has passed.
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    rec.due_at = Some(later(rec.created_at, left + Duration::from_secs(1)));
    let finishes_here = state.hop.is_none() || forward.is_none();
    if finishes_here && !injected {
        // Nothing to forward and nothing to inject: the record is born completed, and one
        // write both accepts and finishes it.
        rec.transition(Status::Completed, "last hop", "")?;
        rec.response = Some(saved_response(&state, &rec, StatusCode::OK));
    }
    let inserted = within(deadline, "accepting the request", state.store.insert(&rec)).await?;
    // Stored (or found stored); for the last hop, already completed: nothing answered yet.
    failpoint_at(Point::Accept, &state, &rec.key, &forward, deadline)?;
    let rec = match inserted {
        Inserted::New => {
            if let Some(saved) = rec.response.as_ref().filter(|_| rec.status.is_terminal()) {
                span.record("saga_id", tracing::field::display(rec.saga_id));
                log_answered(&rec, false, started);
                return Ok(located(
                    &state,
                    &rec.saga_id,
                    StatusCode::OK,
                    saved.body.clone(),
                ));
            }
            rec
        }
        Inserted::Existing(mut old) => {
            // Its final write may still be on its way (see `finish`): read what it wrote.
            if state.finishing.settled(&old.saga_id).await {
                if let Some(now) = within(
                    deadline,
                    "reading the record",
                    state.store.get_by_key(&old.key),
                )
                .await?
                {
                    old = now;
                }
            }
            if old.is_tombstone() {
                // Cancelled by the caller before this request arrived: nothing to do.
                if let Some(saved) = &old.response {
                    log_answered(&old, true, started);
                    return Ok(replay(&state, &old, saved));
                }
            }
            if old.fingerprint != rec.fingerprint {
                return Err(ApiError::Conflict(format!(
                    "Idempotency-Key {:?} was already used for a different request (saga {})",
                    old.key, old.saga_id
                )));
            }
            if let Some(saved) = &old.response {
                span.record("saga_id", tracing::field::display(old.saga_id));
                log_answered(&old, true, started);
                return Ok(replay(&state, &old, saved));
            }
            // Accepted before but never answered (a crash, an injected failure, a request still
            // in flight): carry on with the stored record; the version check settles races.
            old
        }
    };
    span.record("saga_id", tracing::field::display(rec.saga_id));
    process(&state, rec, forward, deadline, injected, started).await
}

/// Acts out an armed failpoint at a step of the request's flow (see `crate::failpoint`): an
/// error fails the request there (500); a duplicate delivers a twin of the request, which
/// picks up the stored record at this point, as a retried request would.
fn failpoint_at(
    point: Point,
    state: &Arc<AppState>,
    key: &str,
    forward: &Option<serde_json::Value>,
    deadline: tokio::time::Instant,
) -> Result<(), ApiError> {
    match failpoint::fire(point) {
        Some(Action::Error) => Err(ApiError::Internal(format!("failpoint {point}: error"))),
        Some(Action::Duplicate) => {
            let (state, key, forward) = (state.clone(), key.to_string(), forward.clone());
            tokio::spawn(twin(state, key, forward, deadline));
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The twin of a duplicated request: carries on with the stored record unless it is answered.
fn twin(
    state: Arc<AppState>,
    key: String,
    forward: Option<serde_json::Value>,
    deadline: tokio::time::Instant,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(async move {
        if let Ok(Some(rec)) = state.store.get_by_key(&key).await {
            if rec.response.is_none() {
                let started = tokio::time::Instant::now();
                let _ = process(&state, rec, forward, deadline, false, started).await;
            }
        }
    })
}

/// Everything after the record is safely stored: inject, forward, transition, answer.
async fn process(
    state: &Arc<AppState>,
    mut rec: SagaRecord,
    forward: Option<serde_json::Value>,
    deadline: tokio::time::Instant,
    injected: bool,
    started: tokio::time::Instant,
) -> Result<Response, ApiError> {
    if injected {
        let read = rec.version;
        rec.note(rec.status, "inject", "http 502");
        rec.version = read + 1;
        // Best effort: the history note is for humans; the 502 goes out either way.
        let _ = within(
            deadline,
            "noting the injected failure",
            state.store.replace(&rec, read),
        )
        .await;
        return Err(ApiError::Injected {
            rate: state.config.err_rate,
            saga_id: rec.saga_id.to_string(),
        });
    }

    let mut http_status = StatusCode::OK;
    let read = rec.version;
    match (state.hop.as_ref(), forward.as_ref()) {
        (Some(hop), Some(part)) => {
            let key = Hop::key_for(&rec.saga_id, state.service);
            let (answer, tries) = hop.forward(&key, rec.count, part, deadline).await;
            failpoint_at(Point::Answer, state, &rec.key, &forward, deadline)?;
            rec.attempts += tries;
            let fallback = state.config.fallback;
            http_status = apply_answer(&mut rec, answer, hop, "forward", fallback)?;
            if !rec.status.is_terminal() {
                let wait = backoff(&state.config.saga, rec.redrives);
                rec.due_at = Some(later(chrono::Utc::now(), wait));
            }
            if !fallback && rec.status == Status::Degraded {
                if let Some(failed) = rec.fallback.clone() {
                    return fail_without_fallback(state, rec, read, hop, failed).await;
                }
            }
        }
        _ => {
            rec.transition(Status::Completed, "last hop", "")?;
        }
    }

    let saved = saved_response(state, &rec, http_status);
    let body = saved.body.clone();
    rec.response = Some(saved);
    rec.version = read + 1;
    let (saga_id, key) = (rec.saga_id, rec.key.clone());
    let outcome = state.live.note(&rec, "request");
    log_answered(&rec, false, started);
    // The answer need not wait for this write (see `finish`); it does when too many are queued.
    let finish = state
        .finishing
        .finish(&state.store, state.service, rec, read);
    if !within(deadline, "saving the outcome", finish).await? {
        // Someone else (a concurrent replay, the re-driver) moved this record first: answer
        // what it stored.
        if let Some(current) = within(
            deadline,
            "reading the outcome",
            state.store.get_by_key(&key),
        )
        .await?
        {
            if let Some(saved) = &current.response {
                log_answered(&current, true, started);
                return Ok(replay(state, &current, saved));
            }
        }
        return Err(ApiError::Busy(format!(
            "saga {saga_id} is being processed by another request; retry"
        )));
    }
    state.live.publish(outcome);
    Ok(located(state, &saga_id, http_status, body))
}

/// `FALLBACK=false`: the next hop failed and no degraded answer is given. The record is saved
/// as it moved (degraded, due for the re-driver) but without a saved answer, so a retry under
/// the same key carries the record on instead of replaying a 502; the caller gets 502.
async fn fail_without_fallback(
    state: &AppState,
    mut rec: SagaRecord,
    read: u64,
    hop: &Hop,
    failed: Fallback,
) -> Result<Response, ApiError> {
    rec.version = read + 1;
    if !state.store.replace(&rec, read).await? {
        if let Some(current) = state.store.get_by_key(&rec.key).await? {
            if let Some(saved) = &current.response {
                return Ok(replay(state, &current, saved));
            }
        }
    }
    Err(ApiError::NextHopFailed {
        hop: hop.breaker().name().to_string(),
        reason: failed.reason,
        detail: failed.detail,
        saga_id: rec.saga_id.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_depends_on_count_and_body() {
        let a = serde_json::json!({"id": "1"});
        let b = serde_json::json!({"id": "2"});
        assert_eq!(fingerprint(1, &a), fingerprint(1, &a));
        assert_ne!(fingerprint(1, &a), fingerprint(2, &a));
        assert_ne!(fingerprint(1, &a), fingerprint(1, &b));
    }
}
