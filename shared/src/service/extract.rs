//! The edge of a request: headers, query and body become typed values, or an [`ApiError`].
//!
//! Each extractor is one check a handler would otherwise open-code, and its rejection is the
//! same `ApiError` (same status, same JSON body) the handler used to return:
//!
//! - [`Deadline`]: `X-Deadline-Ms` → when this request must be answered by (400 when malformed
//!   or below the floor);
//! - [`IdempotencyKey`]: the optional `Idempotency-Key`, validated (400 when malformed);
//! - [`Count`]: the hop count from `?count=` (never fails: garbage counts as 0);
//! - [`JsonBody`]: a JSON content type (415) and a body within `MAX_BODY_BYTES` (413);
//! - [`ValidJson`]: a [`JsonBody`] parsed into the service's [`Part`] (400 naming the field),
//!   with the canonical JSON that is stored and fingerprinted.
//!
//! Axum runs extractors in the order of the handler's arguments and stops at the first
//! rejection, so a handler's argument list is the order of its checks.

use super::part::Part;
use super::state::AppState;
use crate::hop::{incoming_deadline, IDEMPOTENCY_HEADER};
use crate::http::ApiError;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use std::convert::Infallible;
use std::sync::Arc;

/// When this request must be answered by: the caller's `X-Deadline-Ms` (400 when malformed or
/// below the 50 ms floor), capped at `REQUEST_TIMEOUT_MS`.
pub(super) struct Deadline(pub tokio::time::Instant);

impl FromRequestParts<Arc<AppState>> for Deadline {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        incoming_deadline(&parts.headers, state.config.request_timeout)
            .map(Deadline)
            .map_err(|e| {
                ApiError::bad_request(
                    "invalid_header",
                    e.to_string(),
                    Some("X-Deadline-Ms".into()),
                )
            })
    }
}

/// The request's `Idempotency-Key`: 1 to 200 visible ASCII characters. Taken as
/// `Option<IdempotencyKey>`: absent is `None`, malformed is a 400.
pub(super) struct IdempotencyKey(pub String);

impl<S: Send + Sync> OptionalFromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, ApiError> {
        Ok(idempotency_key(&parts.headers)?.map(IdempotencyKey))
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::bad_request(
            "invalid_header",
            "Idempotency-Key must be 1 to 200 visible ASCII characters",
            Some("Idempotency-Key".into()),
        )
    };
    let s = v.to_str().map_err(|_| bad())?.trim();
    if s.is_empty() || s.len() > 200 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Some(s.to_string()))
}

/// The `count` the caller sent in the query string (the hops before this one).
pub(super) struct Count(pub u32);

impl<S: Send + Sync> FromRequestParts<S> for Count {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Count(parse_count(parts.uri.query())))
    }
}

/// `count` from the query string; missing or garbage counts as 0, as in the original.
fn parse_count(query: Option<&str>) -> u32 {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("count="))
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(0)
}

/// A JSON body, unparsed: the content type says JSON (415 otherwise) and the body is within
/// `MAX_BODY_BYTES` (413 otherwise, checked on `Content-Length` before reading a byte).
pub(super) struct JsonBody(pub Bytes);

impl FromRequest<Arc<AppState>> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        require_json(req.headers())?;
        let (parts, body) = req.into_parts();
        read_body(&parts.headers, body, state.config.max_body_bytes)
            .await
            .map(JsonBody)
    }
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(ct))
    }
}

async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge { limit })
}

/// The service's part of the request, parsed from a [`JsonBody`]; `canonical` is the parsed part
/// serialized again, which is what is stored and fingerprinted.
pub(super) struct ValidJson<P> {
    pub part: P,
    pub canonical: serde_json::Value,
}

impl<P: Part> FromRequest<Arc<AppState>> for ValidJson<P> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let JsonBody(bytes) = JsonBody::from_request(req, state).await?;
        let (part, canonical) = parse_part::<P>(&bytes)?;
        Ok(ValidJson { part, canonical })
    }
}

/// Parses the body into `P`, naming the offending field (dotted path) on failure.
pub fn parse_part<P: Part>(bytes: &[u8]) -> Result<(P, serde_json::Value), ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("body is not valid JSON: {e}"), None)
    })?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "body must be a JSON object",
            None,
        ));
    }
    let part: P = serde_path_to_error::deserialize(&value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde reports a missing field at its parent's path; name the field itself.
        let missing = inner
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        let field = match (path.as_str(), missing) {
            (".", Some(name)) => Some(name.to_string()),
            (parent, Some(name)) => Some(format!("{parent}.{name}")),
            (".", None) => None,
            (p, None) => Some(p.to_string()),
        };
        let message = match &field {
            Some(f) => format!("invalid field `{f}`: {inner}"),
            None => format!("invalid body: {inner}"),
        };
        ApiError::bad_request("invalid_field", message, field)
    })?;
    // What is stored is the typed part, so it is exactly what was validated.
    let canonical = serde_json::to_value(&part)
        .map_err(|e| ApiError::Internal(format!("can't serialize a parsed {}: {e}", P::SERVICE)))?;
    Ok((part, canonical))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn garbage_or_missing_count_counts_as_zero() {
        assert_eq!(parse_count(None), 0);
        assert_eq!(parse_count(Some("count=abc")), 0);
        assert_eq!(parse_count(Some("count=-3")), 0);
        assert_eq!(parse_count(Some("x=1&count=4")), 4);
        assert_eq!(parse_count(Some("count=")), 0);
    }

    #[test]
    fn json_content_types_are_accepted_others_refused() {
        let mut h = HeaderMap::new();
        assert!(require_json(&h).is_err());
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(require_json(&h).is_ok());
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/merge+json"),
        );
        assert!(require_json(&h).is_ok());
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(require_json(&h).is_err());
    }
}
