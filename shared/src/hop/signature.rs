//! Signed hop calls: an HMAC-SHA256 over what a hop call asks for, and its check.
//!
//! Payment and shipment act on whatever reaches their `/create` and `/compensate`, and the key
//! that names a record (`<saga id>/<service>`) is no secret: saga ids are handed to clients. So
//! when `HOP_SECRET` is set, a hop call carries three headers — the key id
//! ([`KEY_ID_HEADER`]), the time it was signed in Unix seconds ([`TIMESTAMP_HEADER`]) and the
//! signature ([`SIGNATURE_HEADER`], lowercase hex) — and the callee refuses a call that lacks
//! them, names a key it doesn't hold, was signed too long ago (or too far ahead: `HOP_MAX_SKEW_MS`
//! either way) or doesn't match. What is signed is one line per field, in this order:
//!
//! ```text
//! saga-hop-v1
//! <key id>
//! <timestamp>
//! <METHOD>
//! <path?query>
//! <Idempotency-Key, or nothing>
//! <SHA-256 of the body, lowercase hex>
//! ```
//!
//! so a captured call can't be pointed at another path, count, key or body, and it stops
//! working once the window has passed. Inside the window a replay is the same call again, which
//! the idempotency key already turns into the same answer. `X-Deadline-Ms` is not signed: a
//! replayer can only shorten or lengthen the callee's patience within its own cap.
//!
//! The check compares in constant time (`hmac`'s `verify_slice`), and the check of the headers
//! comes before the body is read, so an unsigned flood costs no body reads.

use super::keys::{HopKey, HopKeys, Secret};
use axum::http::{HeaderMap, HeaderName};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::fmt::Write;

/// The id of the key a call is signed with.
pub const KEY_ID_HEADER: HeaderName = HeaderName::from_static("x-hop-key-id");
/// When the call was signed, in whole seconds since the Unix epoch.
pub const TIMESTAMP_HEADER: HeaderName = HeaderName::from_static("x-hop-timestamp");
/// The HMAC-SHA256, 64 lowercase hex digits.
pub const SIGNATURE_HEADER: HeaderName = HeaderName::from_static("x-hop-signature");

/// The first line of what is signed: a new scheme gets a new tag, never a reinterpretation.
const VERSION: &str = "saga-hop-v1";

/// What a call asks for: the fields the signature covers, besides the key and the time.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub method: &'a str,
    pub path_and_query: &'a str,
    pub idempotency_key: Option<&'a str>,
    pub body: &'a [u8],
}

/// Seconds since the Unix epoch by the wall clock: signatures travel between machines, so they
/// carry wall time (the paused test clock has no meaning to another process).
pub fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn mac(secret: &Secret, key_id: &str, timestamp: i64, call: &Call<'_>) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose())
        .expect("HMAC takes a key of any length");
    let body = hex(&Sha256::digest(call.body));
    let text = format!(
        "{VERSION}\n{key_id}\n{timestamp}\n{}\n{}\n{}\n{body}",
        call.method,
        call.path_and_query,
        call.idempotency_key.unwrap_or("")
    );
    m.update(text.as_bytes());
    m
}

/// The three headers that sign `call` with `key` at `timestamp` (Unix seconds).
pub fn sign(key: &HopKey, timestamp: i64, call: &Call<'_>) -> [(HeaderName, String); 3] {
    let signature = hex(&mac(&key.secret, &key.id, timestamp, call)
        .finalize()
        .into_bytes());
    [
        (KEY_ID_HEADER, key.id.clone()),
        (TIMESTAMP_HEADER, timestamp.to_string()),
        (SIGNATURE_HEADER, signature),
    ]
}

/// Why a call was refused. The message says what to fix and never shows a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "this hop needs a signed call: {0} is missing (X-Hop-Key-Id, X-Hop-Timestamp, X-Hop-Signature)"
    )]
    Missing(&'static str),
    #[error("{0} is malformed: {1}")]
    Malformed(&'static str, &'static str),
    #[error("key id {0:?} is not one this hop accepts")]
    UnknownKey(String),
    #[error("the signature is {skew_s} s away from this hop's clock (at most {max_s} s): stale or replayed")]
    Stale { skew_s: i64, max_s: u64 },
    #[error("the signature does not match the call")]
    Mismatch,
}

/// The signature headers of a call, checked for form, key and time; the body comes later.
pub struct Claim<'k> {
    key_id: String,
    timestamp: i64,
    signature: Vec<u8>,
    secret: &'k Secret,
}

/// Checks the headers of a call at `now` (Unix seconds): present, well-formed, a key we hold,
/// inside the window. Cheap, so it runs before the body is read.
pub fn claim<'k>(keys: &'k HopKeys, headers: &HeaderMap, now: i64) -> Result<Claim<'k>, Refusal> {
    let get = |name: &HeaderName, label: &'static str| {
        let v = headers.get(name).ok_or(Refusal::Missing(label))?;
        v.to_str()
            .map(str::trim)
            .map_err(|_| Refusal::Malformed(label, "not visible ASCII"))
    };
    let key_id = get(&KEY_ID_HEADER, "X-Hop-Key-Id")?;
    let timestamp = get(&TIMESTAMP_HEADER, "X-Hop-Timestamp")?;
    let signature = get(&SIGNATURE_HEADER, "X-Hop-Signature")?;
    let timestamp: i64 = timestamp
        .parse()
        .ok()
        .filter(|_| timestamp.len() <= 12)
        .ok_or(Refusal::Malformed(
            "X-Hop-Timestamp",
            "expected whole seconds since the Unix epoch",
        ))?;
    let signature = unhex(signature).ok_or(Refusal::Malformed(
        "X-Hop-Signature",
        "expected 64 hex digits",
    ))?;
    let secret = keys
        .find(key_id)
        .ok_or_else(|| Refusal::UnknownKey(key_id.chars().take(32).collect()))?;
    let skew_s = now.saturating_sub(timestamp).saturating_abs();
    let max_ms = crate::env::millis(keys.max_skew);
    if skew_s.saturating_mul(1000) as u64 > max_ms {
        return Err(Refusal::Stale {
            skew_s,
            max_s: max_ms / 1000,
        });
    }
    Ok(Claim {
        key_id: key_id.to_string(),
        timestamp,
        signature,
        secret,
    })
}

impl Claim<'_> {
    /// Checks the signature against the call, in constant time.
    pub fn verify(self, call: &Call<'_>) -> Result<(), Refusal> {
        mac(self.secret, &self.key_id, self.timestamp, call)
            .verify_slice(&self.signature)
            .map_err(|_| Refusal::Mismatch)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn keys() -> HopKeys {
        HopKeys {
            signing: HopKey {
                id: "k2".into(),
                secret: Secret::new("0123456789abcdef0123456789abcdef"),
            },
            accepted: vec![HopKey {
                id: "k1".into(),
                secret: Secret::new("fedcba9876543210fedcba9876543210"),
            }],
            max_skew: Duration::from_secs(30),
        }
    }

    const CALL: Call<'static> = Call {
        method: "POST",
        path_and_query: "/create?count=1",
        idempotency_key: Some("0190f0e2-0000-7000-8000-000000000000/order"),
        body: br#"{"id":"1"}"#,
    };

    fn headers(signed: [(HeaderName, String); 3]) -> HeaderMap {
        signed
            .into_iter()
            .map(|(k, v)| (k, v.parse().expect("signature headers are ASCII")))
            .collect()
    }

    #[test]
    fn a_signed_call_verifies_with_either_listed_key() {
        let k = keys();
        for key in [&k.signing, &k.accepted[0]] {
            let h = headers(sign(key, 1_000, &CALL));
            assert_eq!(claim(&k, &h, 1_010).and_then(|c| c.verify(&CALL)), Ok(()));
        }
    }

    #[test]
    fn any_changed_field_breaks_the_signature() {
        let k = keys();
        let h = headers(sign(&k.signing, 1_000, &CALL));
        let changed = [
            Call {
                method: "PUT",
                ..CALL
            },
            Call {
                path_and_query: "/create?count=0",
                ..CALL
            },
            Call {
                path_and_query: "/compensate",
                ..CALL
            },
            Call {
                idempotency_key: Some("other/order"),
                ..CALL
            },
            Call {
                idempotency_key: None,
                ..CALL
            },
            Call {
                body: br#"{"id":"2"}"#,
                ..CALL
            },
        ];
        for call in changed {
            let verdict = claim(&k, &h, 1_000).and_then(|c| c.verify(&call));
            assert_eq!(verdict, Err(Refusal::Mismatch), "{call:?}");
        }
        // The same headers under another key id, or a secret not listed: refused too.
        let mut other = h.clone();
        other.insert(KEY_ID_HEADER, "k1".parse().unwrap());
        assert_eq!(
            claim(&k, &other, 1_000).and_then(|c| c.verify(&CALL)),
            Err(Refusal::Mismatch)
        );
        let forged = HopKey {
            id: "k2".into(),
            secret: Secret::new("not the secret, but long enough!!"),
        };
        let h = headers(sign(&forged, 1_000, &CALL));
        assert_eq!(
            claim(&k, &h, 1_000).and_then(|c| c.verify(&CALL)),
            Err(Refusal::Mismatch)
        );
    }

    #[test]
    fn the_window_holds_both_ways_and_missing_or_unknown_is_refused() {
        let k = keys();
        let h = headers(sign(&k.signing, 1_000, &CALL));
        assert!(claim(&k, &h, 1_030).is_ok());
        assert!(claim(&k, &h, 970).is_ok());
        assert!(matches!(
            claim(&k, &h, 1_031),
            Err(Refusal::Stale { skew_s: 31, .. })
        ));
        assert!(matches!(claim(&k, &h, 969), Err(Refusal::Stale { .. })));
        assert!(matches!(
            claim(&k, &HeaderMap::new(), 1_000),
            Err(Refusal::Missing("X-Hop-Key-Id"))
        ));
        let mut unknown = h.clone();
        unknown.insert(KEY_ID_HEADER, "k9".parse().unwrap());
        assert!(matches!(
            claim(&k, &unknown, 1_000),
            Err(Refusal::UnknownKey(_))
        ));
        let mut bad = h;
        bad.insert(SIGNATURE_HEADER, "zz".parse().unwrap());
        assert!(matches!(
            claim(&k, &bad, 1_000),
            Err(Refusal::Malformed("X-Hop-Signature", _))
        ));
    }
}
