//! The service side of fault injection: `GET/PUT/DELETE /chaos`, and the gate on the request
//! flow where the faults act.
//!
//! The fault model itself (what a fault is, how it is validated and rolled, the watch channel
//! that holds it) is `crate::chaos`; this file is its HTTP face. Both ends are extractors, so the
//! handlers read as the flow they are: [`ChaosAuthorized`] checks `CHAOS_TOKEN` before a `/chaos`
//! call is looked at, and [`ChaosGate`] applies the faults to `/create` and `/compensate` before
//! anything of the request is accepted — the service behaves as if it were down or slow.

use super::extract::JsonBody;
use super::state::AppState;
use crate::chaos::Faults;
use crate::http::ApiError;
use axum::extract::{FromRequestParts, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::Json;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Extracting it applies the faults set through `/chaos`, before anything is accepted. A
/// request held by a hang or an added latency starts over with the new faults when they change
/// (a cleared hang lets it through). Without `CHAOS_ENABLED` it passes at once.
pub(super) struct ChaosGate;

impl FromRequestParts<Arc<AppState>> for ChaosGate {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, state: &Arc<AppState>) -> Result<Self, ApiError> {
        apply_chaos(state).await.map(|()| ChaosGate)
    }
}

async fn apply_chaos(state: &AppState) -> Result<(), ApiError> {
    if !state.config.chaos_enabled {
        return Ok(());
    }
    let mut changes = state.chaos.subscribe();
    loop {
        let faults = changes.borrow_and_update().clone();
        if !faults.is_active() {
            return Ok(());
        }
        let wait = if faults.hang {
            state.config.request_timeout
        } else {
            state.chaos.latency(&faults)
        };
        if !wait.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = state.shutdown.cancelled() => {}
                Ok(()) = changes.changed() => continue,
            }
        }
        if faults.hang {
            return Err(ApiError::Chaos {
                status: 503,
                what: "hang",
            });
        }
        // A capacity fault: wait for a worker in the queue (the work stays queued if the
        // caller gives up meanwhile).
        state.chaos.serve(&state.shutdown).await;
        return match state.chaos.roll_error(&faults) {
            Some(status) => Err(ApiError::Chaos {
                status,
                what: "error",
            }),
            None => Ok(()),
        };
    }
}

/// A `/chaos` call carrying `Authorization: Bearer <CHAOS_TOKEN>` (any call, when no token is
/// set, which start-up warns about); 401 otherwise. The token is compared in constant time, so
/// how long a refusal takes says nothing about how much of a guess was right.
pub(super) struct ChaosAuthorized;

impl FromRequestParts<Arc<AppState>> for ChaosAuthorized {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let Some(token) = &state.config.chaos_token else {
            return Ok(ChaosAuthorized);
        };
        let sent = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let matches = |s: &str| bool::from(s.trim().as_bytes().ct_eq(token.as_bytes()));
        if sent.is_some_and(matches) {
            Ok(ChaosAuthorized)
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}

pub(super) async fn chaos_get(
    State(state): State<Arc<AppState>>,
    _: ChaosAuthorized,
) -> Json<Faults> {
    Json(state.chaos.get())
}

pub(super) async fn chaos_put(
    State(state): State<Arc<AppState>>,
    _: ChaosAuthorized,
    JsonBody(bytes): JsonBody,
) -> Result<Json<Faults>, ApiError> {
    let faults: Faults =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&bytes))
            .map_err(|e| {
                let field = e.path().to_string();
                ApiError::bad_request(
                    "invalid_field",
                    format!("invalid faults: {}", e.into_inner()),
                    (field != ".").then_some(field),
                )
            })?;
    faults.validate()?;
    state.chaos.set(state.service, faults.clone());
    Ok(Json(faults))
}

pub(super) async fn chaos_delete(
    State(state): State<Arc<AppState>>,
    _: ChaosAuthorized,
) -> Json<Faults> {
    state.chaos.set(state.service, Faults::default());
    Json(Faults::default())
}
