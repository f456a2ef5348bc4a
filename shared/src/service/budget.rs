//! The request's deadline bounds every database wait.
//!
//! A request carries a deadline (`X-Deadline-Ms`, or `REQUEST_TIMEOUT_MS`). The hop call already
//! keeps inside it; the database calls around it must too, or a slow database turns into a
//! caller's timeout: under overload FerretDB on SQLite takes seconds per command, and the
//! driver's own timeout (`MONGO_TIMEOUT_MS`) knows nothing of the caller. So each store call of a
//! request runs under the request's deadline, and one that is still waiting when it passes ends
//! the request with 503 + `Retry-After` (`deadline_exceeded`): an answer the caller can act on,
//! before it stops listening.
//!
//! Stopping the wait does not stop the write: it may still land. That is the same as any answer
//! lost on the way, and handled the same way: the record is due to the re-driver a second after
//! the deadline, and a retry with the same `Idempotency-Key` finds it (and replays its answer,
//! or carries on with it).

use crate::hop::deadline_margin;
use crate::http::ApiError;
use crate::store::StoreError;
use std::future::Future;
use tokio::time::Instant;

/// Runs `call` until it ends or the deadline, less the margin every hop keeps to answer in
/// ([`deadline_margin`]), passes; `step` says what was waited on. The 503 then reaches the
/// caller before its own timeout fires, not in the same instant.
pub(super) async fn within<T>(
    deadline: Instant,
    step: &'static str,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, ApiError> {
    let left = deadline.saturating_duration_since(Instant::now());
    let until = deadline - deadline_margin(left).min(left);
    match tokio::time::timeout_at(until, call).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(_) => Err(ApiError::DeadlineExceeded { step }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_the_deadline_is_a_503_with_the_step() {
        let start = Instant::now();
        let deadline = start + Duration::from_millis(100);
        // The margin kept to answer in: a tenth of what is left, at least 5 ms.
        let margin = Duration::from_millis(10);
        let slow = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, StoreError>(1)
        };
        let err = within(deadline, "accepting the request", slow)
            .await
            .expect_err("the deadline passes first");
        assert_eq!(err.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.code(), "deadline_exceeded");
        assert!(err.to_string().contains("accepting the request"), "{err}");
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(100) - margin,
            "ends a margin before the deadline"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_before_the_deadline_passes_through() {
        let deadline = Instant::now() + Duration::from_millis(100);
        let quick = async {
            tokio::time::sleep(Duration::from_millis(89)).await;
            Ok::<_, StoreError>(7)
        };
        assert_eq!(within(deadline, "x", quick).await.ok(), Some(7));
    }
}
