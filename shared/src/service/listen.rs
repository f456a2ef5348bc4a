//! Connections: accept them, cap them, time them out, and drain them on shutdown.
//!
//! `axum::serve` hands hyper no timer, so hyper's header-read timeout never fires: a client that
//! sends its headers one byte a minute (slowloris) holds a connection and a task forever, and
//! nothing bounds how many it may hold. This file is the accept loop that `axum::serve` would
//! be, with those limits:
//!
//! - **a connection cap** (`MAX_CONNECTIONS`): each connection holds a semaphore permit; one
//!   accepted past the cap is closed at once, unread, and counted
//!   (`http_connections_refused_total`). Closing beats leaving it in the kernel's backlog: the
//!   client learns now instead of timing out, and no memory is spent on it.
//! - **a header-read timeout** (`HEADER_TIMEOUT_MS`) on hyper's timer: a request's head must
//!   arrive within it from the moment the connection waits for one. hyper starts that clock
//!   when it starts reading a head, which includes the idle wait between two requests on a
//!   keep-alive connection, so the same timeout is the idle keep-alive timeout. (A slow *body*
//!   is the router's `RequestBodyTimeoutLayer`, 408.)
//! - **a drain** on shutdown: stop accepting, let each connection finish the request it is in
//!   and close (hyper's graceful shutdown), and return when the last one has.
//!
//! Admission of requests (`MAX_IN_FLIGHT`, `admission.rs`) is the next limit in; this one is
//! about sockets, which cost memory and a task even when they never send a request.

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How connections are bounded.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Connections served at once; one more is closed unread.
    pub max_connections: usize,
    /// How long a connection may take to send a request's head, counted from when it is
    /// waited for (so also how long a keep-alive connection may sit idle).
    pub header_timeout: Duration,
}

/// Serves `router` on `listener` within `limits` until `stop` is cancelled, then drains:
/// returns once every connection has finished its request and closed.
pub async fn serve_connections(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    stop: CancellationToken,
    service: &'static str,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let refused = metrics::counter!("http_connections_refused_total", "service" => service);
    let open = metrics::gauge!("http_connections_open", "service" => service);

    loop {
        let (stream, _peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // the listener itself is fine, so wait a moment and go on.
                    tracing::warn!(service, error = %e, "accept failed");
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                    }
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refused.increment(1);
            tracing::debug!(
                service,
                max_connections = limits.max_connections,
                "connection cap reached: closing a new connection unread"
            );
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = http.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        let conn = graceful.watch(conn);
        let open = open.clone();
        open.increment(1.0);
        tokio::spawn(async move {
            // An error here is the client's doing (reset, header timeout, garbage): the
            // connection is gone either way, and hyper has answered what it could.
            if let Err(e) = conn.await {
                tracing::debug!(service, error = %e, "connection ended with an error");
            }
            open.decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
