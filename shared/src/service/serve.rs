//! Serving: bind, serve the router, start the re-driver, and stop them together.
//!
//! [`start`] is state + [`serve`]; [`serve`] returns a [`Running`] at once, with the server
//! (`listen.rs`: the connection cap, timeouts and drain) and the re-driver as two tasks that both end when the state's shutdown token is cancelled.
//! [`main`] is the whole `main` of a service binary on top of that: config, logs, serve until a
//! signal, then stop within the grace period.

use super::listen::{serve_connections, ConnLimits};
use super::part::Part;
use super::router::app;
use super::shutdown::{shutdown_grace, shutdown_signal};
use super::state::{state, AppState, StartError};
use crate::config::Config;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A service that is serving: where, and how to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    redriver: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, lets requests in flight finish, and waits.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
        let _ = self.redriver.await;
        self.state.finishing.drain().await;
    }

    /// Stops when `token` is cancelled (e.g. Ctrl-C), then waits.
    pub async fn wait(self, token: CancellationToken) {
        token.cancelled().await;
        self.stop().await;
    }
}

/// Binds `config.host:config.port` (0 = any free port) and serves `P` until stopped.
pub async fn start<P: Part>(config: Config) -> Result<Running, StartError> {
    let state = state::<P>(config).await?;
    serve::<P>(state).await
}

/// Serves an already-built state.
pub async fn serve<P: Part>(state: Arc<AppState>) -> Result<Running, StartError> {
    let addr = SocketAddr::new(state.config.host, state.config.port);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    let shutdown = state.shutdown.clone();
    let router = app::<P>(state.clone());
    let stop = shutdown.clone();
    let service = state.service;
    let limits = ConnLimits {
        max_connections: state.config.max_connections,
        header_timeout: state.config.header_timeout,
    };
    let task = tokio::spawn(serve_connections(listener, router, limits, stop, service));
    // Create the indexes now if the database is up; if not, the first request tries again and
    // `/ready` says not ready until it works.
    let warm = state.clone();
    tokio::spawn(async move {
        if let Err(e) = warm.store.ping().await {
            tracing::warn!(service = warm.service, error = %e, "database not ready at start-up");
        }
    });
    tracing::info!(
        service = state.service,
        %addr,
        store = state.store.kind(),
        next = state.hop.as_ref().map(|h| h.url().as_str()).unwrap_or("-"),
        "listening"
    );
    if state.config.chaos_enabled && state.config.chaos_token.is_none() {
        tracing::warn!(
            service = state.service,
            "CHAOS_ENABLED without CHAOS_TOKEN: anyone who reaches this port can inject faults \
             through /chaos; set CHAOS_TOKEN outside a test bench"
        );
    }
    let redriver = super::redrive::spawn::<P>(state.clone());
    Ok(Running {
        addr,
        state,
        shutdown,
        task,
        redriver,
    })
}

/// The whole `main` of a service binary: config (exit 2 on a bad value), logs, serve until
/// Ctrl-C/SIGTERM, stop gracefully.
pub async fn main<P: Part>() -> std::process::ExitCode {
    let config = match Config::from_env(P::SERVICE, P::DEFAULT_PORT) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", P::SERVICE);
            return std::process::ExitCode::from(2);
        }
    };
    crate::telemetry::init_logging(config.log_format);
    let _ = crate::telemetry::prometheus();
    let running = match start::<P>(config).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "start-up failed");
            return std::process::ExitCode::from(1);
        }
    };
    let token = CancellationToken::new();
    let signal = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        signal.cancel();
    });
    let service = running.state.service;
    // Serve until told to stop; only then does the grace period start.
    token.cancelled().await;
    tracing::info!(service, "stopping: finishing requests in flight");
    let grace = shutdown_grace(running.state.config.request_timeout);
    if tokio::time::timeout(grace, running.stop()).await.is_err() {
        tracing::warn!(service, "requests still in flight after the grace period");
    }
    tracing::info!(service, "stopped");
    std::process::ExitCode::SUCCESS
}
