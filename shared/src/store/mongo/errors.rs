//! How the driver's errors become [`StoreError`]s, and the backstop timer on every call.
//!
//! A service answers `503` with `Retry-After` for [`StoreError::Unavailable`] (nothing was
//! accepted; retry later) and treats [`StoreError::Backend`] as final, so the one decision that
//! matters is "transient or not": no server, network, timeouts and a node stepping down are
//! transient; everything else is not. Every driver call
//! also runs under a backstop timer, for a server that accepts a connection and then never
//! answers (the driver's own timeouts cover the rest).

use crate::store::StoreError;
use mongodb::error::{ErrorKind, WriteFailure};
use std::future::IntoFuture;
use std::time::Duration;

/// Server error codes that mean "not now" rather than "never": the node is shutting down,
/// stepping down, unreachable from a router, or ran out of time. Retrying later can succeed.
const TRANSIENT_CODES: [i32; 13] = [
    6,     // HostUnreachable
    7,     // HostNotFound
    50,    // MaxTimeMSExpired
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    189,   // PrimarySteppedDown
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
];

/// Runs one driver call under a backstop of twice `op_timeout`, handing the driver's error back
/// unclassified (for callers that treat some errors as an answer).
pub(crate) async fn bounded_raw<T>(
    op_timeout: Duration,
    what: &'static str,
    call: impl IntoFuture<Output = mongodb::error::Result<T>>,
) -> Result<mongodb::error::Result<T>, StoreError> {
    let backstop = op_timeout.saturating_mul(2);
    tokio::time::timeout(backstop, call).await.map_err(|_| {
        StoreError::Unavailable(Box::new(TimedOut {
            what,
            after: backstop,
        }))
    })
}

/// A driver call that outlived the backstop timer.
#[derive(Debug, thiserror::Error)]
#[error("{what} got no answer within {after:?}")]
struct TimedOut {
    what: &'static str,
    after: Duration,
}

/// `version` can't be bumped past what BSON's `Int64` holds.
#[derive(Debug, thiserror::Error)]
#[error("record version does not fit in BSON's Int64")]
pub(crate) struct VersionOverflow;

pub(crate) fn to_i64(version: u64) -> Result<i64, StoreError> {
    i64::try_from(version).map_err(|_| StoreError::Backend(Box::new(VersionOverflow)))
}

/// `NamespaceNotFound` (26): listing the indexes of a collection that does not exist yet.
pub(crate) fn is_namespace_not_found(e: &mongodb::error::Error) -> bool {
    matches!(&*e.kind, ErrorKind::Command(c) if c.code == 26)
}

/// Sorts a driver error into "retry later" ([`StoreError::Unavailable`]: no server, network,
/// timeouts, a node stepping down) and everything else ([`StoreError::Backend`]).
pub(crate) fn classify(e: mongodb::error::Error) -> StoreError {
    let transient = match e.kind.as_ref() {
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::DnsResolve { .. } => true,
        ErrorKind::Command(c) => TRANSIENT_CODES.contains(&c.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(c)) => TRANSIENT_CODES.contains(&c.code),
        _ => e.contains_label("RetryableWriteError"),
    };
    if transient {
        StoreError::Unavailable(Box::new(e))
    } else {
        StoreError::Backend(Box::new(e))
    }
}
