//! Admission control: at most `MAX_IN_FLIGHT` requests in the saga's flow at once.
//!
//! Past what the machine and its database can carry, every request admitted makes all the
//! others slower, and a queue only adds latency until every client times out. So one more than
//! the limit is not queued: it is answered at once with `503` and `Retry-After` (nothing was
//! read or accepted, so a retry is safe), and the requests already admitted keep their latency.
//! Only the flow is limited (`POST /create`, `POST /compensate`); `/health`, `/ready`,
//! `/metrics` and `/breaker` answer whatever the load, which is when they are needed most.

use super::state::AppState;
use crate::http::ApiError;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Runs the request if a permit is free, else sheds it.
pub(super) async fn admit(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    match state.admission.clone().try_acquire_owned() {
        Ok(permit) => {
            let res = next.run(req).await;
            drop(permit);
            res
        }
        Err(_) => ApiError::Overloaded {
            limit: state.config.max_in_flight,
        }
        .into_response(),
    }
}
