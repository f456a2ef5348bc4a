//! `GET /<collection>/{id}`: one record as the API shows it, with its status and history.
//!
//! The view is a borrow of the stored record with the service's name added; what is stored
//! internally for the saga's own bookkeeping (the idempotency key, the fingerprint, the saved
//! response, the lease) stays out of it.

use super::state::AppState;
use crate::http::ApiError;
use crate::saga::{Fallback, SagaId, Status};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use std::sync::Arc;

/// A record as the API shows it.
#[derive(Serialize)]
struct RecordView<'a> {
    saga_id: SagaId,
    service: &'a str,
    id: &'a str,
    count: u32,
    status: Status,
    body: &'a serde_json::Value,
    next: &'a Option<serde_json::Value>,
    fallback: &'a Option<Fallback>,
    history: &'a [crate::saga::HistoryEvent],
    attempts: u32,
    redrives: u32,
    due_at: Option<chrono::DateTime<chrono::Utc>>,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
}

pub(super) async fn get_record(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let saga_id: SagaId = id.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_id",
            format!("{id:?} is not a saga id (a UUID)"),
            Some("id".into()),
        )
    })?;
    // A final write of this saga may still be on its way (see `finish`): read after it.
    state.finishing.settled(&saga_id).await;
    let rec = state
        .store
        .get(&saga_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no {} with id {saga_id}", state.service)))?;
    Ok(Json(RecordView {
        saga_id: rec.saga_id,
        service: state.service,
        id: &rec.id,
        count: rec.count,
        status: rec.status,
        body: &rec.body,
        next: &rec.next,
        fallback: &rec.fallback,
        history: &rec.history,
        attempts: rec.attempts,
        redrives: rec.redrives,
        due_at: rec.due_at,
        created_at: rec.created_at,
        updated_at: rec.updated_at,
    })
    .into_response())
}
