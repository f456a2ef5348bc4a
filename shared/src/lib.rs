//! Everything the three saga-breaker services have in common.
//!
//! The services (`order`, `payment`, `shipment`) are thin binaries that only say what their record
//! looks like ([`service::Part`]); every mechanism — configuration, the breaker, the next-hop
//! client, persistence, the saga status machine, the HTTP edge, logs and metrics — lives here
//! once, one concept per module.

pub mod breaker;
pub mod chaos;
pub mod config;
pub mod env;
pub mod field;
pub mod hop;
pub mod http;
pub mod openapi;
pub mod redrive;
pub mod retry;
pub mod saga;
pub mod service;
pub mod store;
pub mod telemetry;

pub use config::Config;
pub use service::Part;

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
