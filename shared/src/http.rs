//! The HTTP edge every service shares, below any one service: errors → responses, the JSON
//! answers for what no route handles (unknown route, wrong method, a panic), and the header
//! limits.
//!
//! Handlers return `Result<_, ApiError>` and use `?`; this file is the one place that decides
//! status codes and the JSON error body `{"error","message","field"}`. Nothing a client sends can
//! turn into a 500 or an HTML page: bad input is 4xx, a dead database is 503 (nothing accepted,
//! safe to retry), and even a panic is caught and answered in JSON. Nothing here knows which
//! service it serves; the routes themselves are the service's (`crate::service`).

use crate::hop::signature::Refusal;
use crate::store::StoreError;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// The most headers a request may carry, and their total size: far above what any client of
/// ours sends, far below what would let one request hog memory.
pub const MAX_HEADERS: usize = 64;
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Everything a handler can answer instead of success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed JSON, a missing field, a wrong type, a bad header: names the field.
    #[error("{message}")]
    BadRequest {
        code: &'static str,
        message: String,
        field: Option<String>,
    },
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error(
        "request headers too large: {count} headers, {bytes} bytes (limits: {} headers, {} bytes)",
        MAX_HEADERS,
        MAX_HEADER_BYTES
    )]
    HeadersTooLarge { count: usize, bytes: usize },
    #[error("Content-Type must be application/json, got {0:?}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The record is being moved by another actor right now (a twin request, the re-driver):
    /// transient, so 503 + `Retry-After` — a 4xx would tell a calling hop to give up for good.
    #[error("{0}")]
    Busy(String),
    /// More requests in flight than `MAX_IN_FLIGHT`: shed at once, before anything is read or
    /// accepted, so the ones admitted keep their latency (503 + `Retry-After`).
    #[error(
        "more than {limit} requests in flight (MAX_IN_FLIGHT): nothing was accepted; retry shortly"
    )]
    Overloaded { limit: usize },
    /// The request's deadline passed while it waited on the database: it may have been
    /// accepted, so the caller retries with the same `Idempotency-Key` (503 + `Retry-After`).
    #[error(
        "the request's deadline passed while {step}; it may have been accepted: retry with the same Idempotency-Key"
    )]
    DeadlineExceeded { step: &'static str },
    /// `INJECT_ERR`: the original demo's random failure, after the record was persisted.
    #[error("injected failure (INJECT_ERR=1, ERR_RATE={rate}); saga {saga_id} was persisted")]
    Injected { rate: f64, saga_id: String },
    /// `FALLBACK=false` and the next hop failed: no degraded answer. The record was persisted
    /// and the re-driver finishes it; a retry under the same key carries it on.
    #[error(
        "{hop} failed ({reason}): {detail}; FALLBACK=false, so no degraded answer \
         (saga {saga_id} was persisted and will be re-driven)"
    )]
    NextHopFailed {
        hop: String,
        reason: String,
        detail: String,
        saga_id: String,
    },
    /// A fault set through `PUT /chaos`: nothing was accepted.
    #[error("fault injected through /chaos ({what}); nothing was accepted")]
    Chaos { status: u16, what: &'static str },
    /// `/chaos` without the right `Authorization: Bearer` token.
    #[error("the chaos API needs Authorization: Bearer <CHAOS_TOKEN>")]
    Unauthorized,
    /// A hop call without a valid signature, with `HOP_SECRET` set: nothing was read or accepted.
    #[error("{0}")]
    HopSignature(crate::hop::signature::Refusal),
    /// Our own database is unreachable: nothing was accepted.
    #[error("database unavailable, nothing was accepted; retry later")]
    Unavailable(#[source] StoreError),
    /// A fault on our side that the client could not have caused.
    #[error("internal error: {0}")]
    Internal(String),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
    field: Option<&'a str>,
}

impl ApiError {
    pub fn bad_request(
        code: &'static str,
        message: impl Into<String>,
        field: Option<String>,
    ) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
            field,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::DeadlineExceeded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Injected { .. } => StatusCode::BAD_GATEWAY,
            Self::NextHopFailed { .. } => StatusCode::BAD_GATEWAY,
            Self::Chaos { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
            }
            Self::Unauthorized | Self::HopSignature(_) => StatusCode::UNAUTHORIZED,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. } => code,
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::HeadersTooLarge { .. } => "headers_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::Busy(_) => "busy",
            Self::Overloaded { .. } => "overloaded",
            Self::DeadlineExceeded { .. } => "deadline_exceeded",
            Self::Injected { .. } => "injected",
            Self::NextHopFailed { .. } => "next_hop_failed",
            Self::Chaos { .. } => "chaos",
            Self::Unauthorized => "unauthorized",
            Self::HopSignature(Refusal::Missing(_)) => "signature_required",
            Self::HopSignature(Refusal::Stale { .. }) => "signature_stale",
            Self::HopSignature(_) => "signature_invalid",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// The JSON body, also what an idempotent replay of this answer returns.
    pub fn body(&self) -> serde_json::Value {
        let field = match self {
            Self::BadRequest { field, .. } => field.as_deref(),
            _ => None,
        };
        let mut body = serde_json::to_value(ErrorBody {
            error: self.code(),
            message: self.to_string(),
            field,
        })
        .unwrap_or(serde_json::Value::Null);
        if let (
            Self::NextHopFailed {
                reason, saga_id, ..
            },
            Some(map),
        ) = (self, body.as_object_mut())
        {
            // The short cause (`open`, `timeout`, `connect`, `http 503`, …) for programs.
            map.insert("reason".into(), reason.clone().into());
            map.insert("saga_id".into(), saga_id.clone().into());
        }
        body
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => Self::Unavailable(e),
            other => Self::Internal(other.to_string()),
        }
    }
}

/// A transition the status machine refuses is a bug on our side, never the client's.
impl From<crate::saga::InvalidTransition> for ApiError {
    fn from(e: crate::saga::InvalidTransition) -> Self {
        Self::Internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let Self::Injected { .. } | Self::Chaos { .. } = self {
            tracing::info!(error = %self, status = status.as_u16(), "injected failure");
        } else if let Self::Overloaded { .. }
        | Self::DeadlineExceeded { .. }
        | Self::NextHopFailed { .. } = self
        {
            // One line per shed request (or per request failed by a sick next hop, which the
            // breaker already logs) would be a log flood exactly when the machine has no time
            // to spare: the count is in `http_request_duration_seconds{status=…}`.
            tracing::debug!(error = %self, "request shed");
        } else if status.is_server_error() {
            let cause = std::error::Error::source(&self)
                .map(|c| c.to_string())
                .unwrap_or_default();
            tracing::warn!(error = %self, %cause, status = status.as_u16(), "request failed");
        }
        let mut res = (status, Json(self.body())).into_response();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body was never read: say the connection ends here, so a
            // keep-alive client doesn't send its next request into a closed socket.
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res
    }
}

/// Answers a panic in a handler in JSON instead of dropping the connection.
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::Internal("the handler panicked; this is a bug".into()).into_response()
}

/// 404 for unknown routes, in JSON.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}

/// 405 for a known route with the wrong method, in JSON.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let body = serde_json::json!({
        "error": "method_not_allowed",
        "message": format!("{method} is not allowed on {}", uri.path()),
        "field": null,
    });
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

/// 431 for a request with too many or too large headers, in JSON like every other error.
pub async fn limit_headers(req: Request, next: Next) -> Response {
    let headers = req.headers();
    let bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return ApiError::HeadersTooLarge {
            count: headers.len(),
            bytes,
        }
        .into_response();
    }
    next.run(req).await
}
