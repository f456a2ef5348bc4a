//! What every request of one service shares: [`AppState`], and how it is built at start-up.
//!
//! Building the state is where start-up can fail (the store won't open, the breaker or the HTTP
//! client can't be built), so [`StartError`] lives here too; binding the port is the only other
//! failure and belongs to the serving file, which reuses the same error.

use super::finish::Finishing;
use super::live::outcomes::Live;
use super::part::Part;
use crate::breaker::Breaker;
use crate::chaos::Chaos;
use crate::config::Config;
use crate::hop::Hop;
use crate::store::{Store, StoreError};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Shared by every request of one service.
pub struct AppState {
    pub service: &'static str,
    pub collection: &'static str,
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub hop: Option<Hop>,
    /// Faults set through `/chaos` (only with `CHAOS_ENABLED`).
    pub chaos: Chaos,
    /// Cancelled when the service stops: ends injected hangs and waits.
    pub shutdown: CancellationToken,
    /// `MAX_IN_FLIGHT` permits for `POST /create` and `/compensate` (see `admission`).
    pub admission: Arc<tokio::sync::Semaphore>,
    /// Final writes made after the answer (see `finish`).
    pub finishing: Finishing,
    /// Saga outcomes for the live page (see `live`).
    pub live: Live,
}

/// Builds the state for `P` from `config`: opens the store, builds the breaker and hop client.
pub async fn state<P: Part>(config: Config) -> Result<Arc<AppState>, StartError> {
    let store = config.store.open(P::COLLECTION).await?;
    state_with_store::<P>(config, store)
}

/// Like [`state`] with a store the caller opened (tests, or several services sharing a client).
pub fn state_with_store<P: Part>(
    config: Config,
    store: Arc<dyn Store>,
) -> Result<Arc<AppState>, StartError> {
    // Metric handles are taken when a breaker is built: the recorder must exist first.
    let _ = crate::telemetry::prometheus();
    let hop = match &config.chain_svc {
        Some(url) => {
            let next = P::NEXT.or(url.host_str()).unwrap_or("next");
            let name = format!("{}->{next}", P::SERVICE);
            let breaker = Arc::new(
                Breaker::with_backend(name, config.breaker.clone(), &config.breaker_backend)
                    .map_err(|e| StartError::Breaker(e.to_string()))?,
            );
            Some(
                Hop::new(url.clone(), breaker, config.retry, config.hop_keys.clone())
                    .map_err(|e| StartError::Client(e.to_string()))?,
            )
        }
        None => None,
    };
    if hop.is_some() && P::NEXT.is_none() {
        tracing::warn!(
            service = P::SERVICE,
            "CHAIN_SVC is set but this service's records have no nested part to forward"
        );
    }
    crate::failpoint::arm(&config.failpoints);
    let max_in_flight = config.max_in_flight;
    let admission = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
    Ok(Arc::new(AppState {
        service: P::SERVICE,
        collection: P::COLLECTION,
        config,
        store,
        hop,
        chaos: Chaos::default(),
        shutdown: CancellationToken::new(),
        admission,
        finishing: Finishing::new(max_in_flight),
        live: Live::default(),
    }))
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("can't build the HTTP client: {0}")]
    Client(String),
    #[error("can't build the breaker: {0}")]
    Breaker(String),
    #[error("can't listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}
