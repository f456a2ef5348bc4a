//! The re-driver: finishes, from the database, what requests left undone.
//!
//! A request persists its record *before* calling the next hop, so a degraded answer (breaker
//! open, timeout, 5xx), a crash between the two, or an injected 502 all leave a non-terminal
//! record behind with a `due_at`. One background task per service reads the records that are due
//! ([`Store::list_due`](crate::store::Store::list_due)), claims each with a lease (a
//! compare-and-swap that moves `due_at` to the end of the lease, so two replicas never drive one
//! record and a driver killed mid-step only delays it by the lease), and then:
//!
//! - **forwards again** with the same idempotency key, through the same breaker: the next hop
//!   answers with its record's *current* state (an idempotent replay), so `completed` and
//!   `compensated` travel back up the chain by themselves;
//! - after `SAGA_MAX_ATTEMPTS` re-drives or `SAGA_DEADLINE_MS`, **gives up**: the record moves
//!   to `compensating` and takes the same undo step as `POST /compensate` (`compensate.rs`):
//!   the next hop is asked to undo its part under the same key, which it does recursively; the
//!   answer ends this record `compensated` — or `completed`, when the rest of the chain had
//!   finished after all, so a saga is never half undone. Compensation itself is retried until it
//!   is answered;
//! - honours an open breaker: a rejected call is not an attempt, the record waits until the
//!   breaker admits a trial, and the rest of the batch is left alone meanwhile.
//!
//! A step ends as a request would: the answer moves the record and is saved in it
//! (`answer.rs`), and an unfinished record is due again after a backoff stored as its `due_at`
//! (`schedule.rs`), so the schedule survives SIGKILL with the rest of the state. When the
//! database is down the re-driver pauses, says so once, and resumes by itself. The serving file
//! spawns it; nothing else in the service depends on it.
//!
//! Metrics: the gauge `saga_redrive_due{service}` (records due at the last pass, at most one
//! batch), the counters `saga_redrives_total{service, status}` (steps, by the status they left
//! the record in) and `saga_give_ups_total{service}`.

use super::answer::{apply_answer, saved_response};
use super::compensate::undo;
use super::part::Part;
use super::schedule::{backoff, later, when_open_ends};
use super::state::AppState;
use crate::breaker::BreakerError;
use crate::config::SagaConfig;
use crate::hop::{ForwardError, Hop};
use crate::saga::{SagaRecord, Status};
use crate::store::StoreError;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Records read per pass.
const BATCH: usize = 64;
/// Records driven at once.
const CONCURRENCY: usize = 8;

/// Why a record should be given up on now, if it should.
pub fn give_up_reason(rec: &SagaRecord, now: DateTime<Utc>, cfg: &SagaConfig) -> Option<String> {
    if rec.redrives >= cfg.max_attempts {
        return Some(format!("max attempts ({})", cfg.max_attempts));
    }
    let age = (now - rec.created_at).to_std().unwrap_or_default();
    (age >= cfg.deadline).then(|| format!("deadline ({} ms)", cfg.deadline.as_millis()))
}

/// Starts the re-driver of the service `state` belongs to; it stops when the service does.
pub fn spawn<P: Part>(state: Arc<AppState>) -> JoinHandle<()> {
    let instance = format!(
        "{}-{}-{:08x}",
        state.service,
        std::process::id(),
        rand::random::<u32>()
    );
    tokio::spawn(run::<P>(state, instance))
}

async fn run<P: Part>(state: Arc<AppState>, instance: String) {
    let mut paused = false;
    // The backlog: records found due in the last pass (at most a batch; a full batch means
    // at least that many).
    let due = metrics::gauge!("saga_redrive_due", "service" => state.service);
    due.set(0.0);
    // Registered now, so a dashboard shows 0 give-ups rather than no data until the first.
    metrics::counter!("saga_give_ups_total", "service" => state.service).increment(0);
    loop {
        if state.shutdown.is_cancelled() {
            break;
        }
        let full = match state.store.list_due(Utc::now(), BATCH).await {
            Ok(batch) => {
                due.set(batch.len() as f64);
                if paused {
                    paused = false;
                    tracing::info!(
                        event = "redriverResumed",
                        service = state.service,
                        "database is back: re-driver resumed"
                    );
                }
                let full = batch.len() == BATCH;
                let open = AtomicBool::new(false);
                let db_trouble = AtomicBool::new(false);
                futures::stream::iter(batch)
                    .for_each_concurrent(CONCURRENCY, |rec| {
                        let (state, instance, open, db_trouble) =
                            (&state, &instance, &open, &db_trouble);
                        async move {
                            // A struggling database gets no more work from us this pass: piling
                            // on is how a slow database becomes a dead one.
                            if db_trouble.load(Ordering::Relaxed) {
                                return;
                            }
                            let id = rec.saga_id;
                            if let Err(e) = step::<P>(state, rec, instance, open).await {
                                if matches!(e, StoreError::Unavailable(_)) {
                                    db_trouble.store(true, Ordering::Relaxed);
                                }
                                tracing::warn!(event = "redriveFailed", service = state.service, saga_id = %id, error = %e, "re-drive step failed; the record stays due");
                            }
                        }
                    })
                    .await;
                // A full batch means more may be due now; an open breaker or a struggling
                // database means wait.
                let wait = open.load(Ordering::Relaxed) || db_trouble.load(Ordering::Relaxed);
                full && !wait
            }
            Err(e) => {
                if !paused {
                    paused = true;
                    tracing::warn!(event = "redriverPaused", service = state.service, error = %e, "database unavailable: re-driver paused");
                }
                false
            }
        };
        if !full {
            tokio::select! {
                _ = tokio::time::sleep(state.config.saga.poll) => {}
                _ = state.shutdown.cancelled() => break,
            }
        }
    }
}

/// The part of `rec` the next hop gets, if this service has a next hop and the record a part
/// for it. `Err` when the stored body no longer parses (a record written by other code).
fn downstream<'a, P: Part>(
    state: &'a AppState,
    rec: &SagaRecord,
) -> Result<Option<(&'a Hop, serde_json::Value)>, String> {
    let Some(hop) = state.hop.as_ref() else {
        return Ok(None);
    };
    let part: P = serde_json::from_value(rec.body.clone()).map_err(|e| e.to_string())?;
    Ok(part.forward().map(|p| (hop, p)))
}

/// Claims `rec` and takes it one step on. Errors only for the store; everything else is
/// written into the record.
async fn step<P: Part>(
    state: &AppState,
    mut rec: SagaRecord,
    instance: &str,
    open: &AtomicBool,
) -> Result<(), StoreError> {
    let cfg = &state.config.saga;
    let (next, unreadable) = match downstream::<P>(state, &rec) {
        Ok(next) => (next, None),
        Err(e) => {
            tracing::error!(service = state.service, saga_id = %rec.saga_id, error = %e, "stored body is unreadable");
            (None, Some(e))
        }
    };
    if next.is_some() && open.load(Ordering::Relaxed) {
        return Ok(());
    }
    // Claim: whoever moves the version first drives; a crash leaves `due_at` at the lease's end.
    let read = rec.version;
    let now = Utc::now();
    let lease_end = later(now, cfg.lease);
    rec.due_at = Some(lease_end);
    rec.leased_by = Some(instance.to_owned());
    rec.version = read + 1;
    if !state.store.replace(&rec, read).await? {
        return Ok(());
    }
    let claimed = rec.version;
    let budget = state.config.request_timeout.min(cfg.lease / 2);
    let mut http = StatusCode::OK;
    let moved = match (rec.status, next) {
        _ if unreadable.is_some() => rec.transition(
            Status::Failed,
            "redrive",
            format!(
                "stored body is unreadable: {}",
                unreadable.unwrap_or_default()
            ),
        ),
        (Status::Compensating, next) => {
            undo(state, &mut rec, next.map(|(hop, _)| hop), budget).await
        }
        (_, None) => rec.transition(Status::Completed, "redrive", "last hop"),
        (_, Some((hop, part))) => match give_up_reason(&rec, now, cfg) {
            Some(why) => {
                tracing::warn!(event = "giveUp", service = state.service, saga_id = %rec.saga_id, reason = %why, "giving up: compensating");
                metrics::counter!("saga_give_ups_total", "service" => state.service).increment(1);
                match rec.transition(Status::Compensating, "give up", why) {
                    Ok(()) => undo(state, &mut rec, Some(hop), budget).await,
                    Err(e) => Err(e),
                }
            }
            None => {
                let key = Hop::key_for(&rec.saga_id, state.service);
                let (answer, tries) = hop
                    .forward(&key, rec.count, &part, Instant::now() + budget)
                    .await;
                rec.attempts += tries;
                if is_rejected(&answer) {
                    open.store(true, Ordering::Relaxed);
                    rec.due_at = Some(when_open_ends(hop));
                    Ok(())
                } else {
                    rec.redrives += 1;
                    apply_answer(&mut rec, answer, hop, "redrive", false)
                        .map(|status| http = status)
                }
            }
        },
    };
    if let Err(e) = moved {
        tracing::error!(service = state.service, saga_id = %rec.saga_id, error = %e, "re-drive made an impossible move");
    }
    if !rec.status.is_terminal() && rec.due_at == Some(lease_end) {
        // Not finished and not rescheduled above: back off.
        rec.due_at = Some(later(Utc::now(), backoff(cfg, rec.redrives)));
    }
    rec.leased_by = None;
    metrics::counter!("saga_redrives_total", "service" => state.service, "status" => rec.status.as_str())
        .increment(1);
    tracing::info!(event = "redrive", service = state.service, saga_id = %rec.saga_id, status = %rec.status, redrives = rec.redrives, "re-driven");
    rec.response = Some(saved_response(state, &rec, http));
    rec.version = claimed + 1;
    // Lost to a concurrent replay of the same request: that one wrote the newer state.
    let saved = state.store.replace(&rec, claimed).await?;
    if saved {
        state.live.saga(&rec, "redrive");
    }
    Ok(())
}

fn is_rejected<T>(answer: &Result<T, ForwardError>) -> bool {
    matches!(answer, Err(ForwardError::Breaker(BreakerError::Rejected)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn cfg() -> SagaConfig {
        SagaConfig {
            max_attempts: 3,
            deadline: Duration::from_secs(60),
            ..SagaConfig::default()
        }
    }

    fn rec() -> SagaRecord {
        SagaRecord::accepted("k".into(), "f".into(), "1".into(), 1, json!({}))
    }

    #[test]
    fn gives_up_after_max_attempts_or_the_deadline() {
        let c = cfg();
        let mut r = rec();
        let now = r.created_at;
        assert_eq!(give_up_reason(&r, now, &c), None);
        r.redrives = 3;
        assert_eq!(
            give_up_reason(&r, now, &c).as_deref(),
            Some("max attempts (3)")
        );
        r.redrives = 0;
        let late = later(now, Duration::from_secs(61));
        assert_eq!(
            give_up_reason(&r, late, &c).as_deref(),
            Some("deadline (60000 ms)")
        );
    }
}
