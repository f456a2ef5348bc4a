//! How a service is told to stop, and how long it gives itself.
//!
//! Stopping is one `CancellationToken` per service (`AppState::shutdown`): the server, the
//! re-driver and every request held by an injected hang or wait listen to it. This file holds the
//! two things around that token: the process signal that cancels it in a binary, and the grace
//! period `main` allows requests in flight before it exits anyway.

use std::time::Duration;

/// How long `main` waits for requests in flight on shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

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
