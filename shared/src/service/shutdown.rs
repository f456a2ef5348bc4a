//! How a service is told to stop, and how long it gives itself.
//!
//! Stopping is one `CancellationToken` per service (`AppState::shutdown`): the server, the
//! re-driver and every request held by an injected hang or wait listen to it. This file holds the
//! two things around that token: the process signal that cancels it in a binary, and the grace
//! period `main` allows requests in flight before it exits anyway. Once the token is cancelled
//! `/ready` answers 503 `draining`, so a load balancer that asks stops sending before the
//! connections close.

use std::time::Duration;

/// How long after its deadline (`REQUEST_TIMEOUT_MS`) the router cuts a handler off with 503.
pub const HANDLER_CUTOFF: Duration = Duration::from_secs(2);

/// How long `main` waits for requests in flight on shutdown: longer than any request may run
/// (its `REQUEST_TIMEOUT_MS`, then [`HANDLER_CUTOFF`]), plus 3 s to write the answers, so a
/// request that was admitted is answered rather than cut by the exit.
pub fn shutdown_grace(request_timeout: Duration) -> Duration {
    request_timeout + HANDLER_CUTOFF + Duration::from_secs(3)
}

/// Resolves on Ctrl-C, or on SIGTERM where there is one (what `docker stop` sends).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
