//! TEMPORARY STUB (replaced by the real breaker module).
use serde::Serialize;
use std::future::Future;
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
pub struct BreakerConfig {
    pub enabled: bool,
    pub timeout: Duration,
    pub error_threshold_pct: u8,
    pub reset: Duration,
    pub reset_jitter: Duration,
    pub window: Duration,
    pub min_calls: u32,
}
impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            timeout: Duration::from_millis(300),
            error_threshold_pct: 50,
            reset: Duration::from_secs(10),
            reset_jitter: Duration::ZERO,
            window: Duration::from_secs(10),
            min_calls: 5,
        }
    }
}
pub trait Failure {
    fn counts_as_failure(&self) -> bool;
}
#[derive(Debug, thiserror::Error)]
pub enum BreakerError<E> {
    #[error("open")]
    Rejected,
    #[error("timeout")]
    Timeout(Duration),
    #[error("failed")]
    Failed(E),
}
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}
#[derive(Serialize)]
pub struct BreakerSnapshot {
    name: String,
}
pub struct Breaker {
    name: String,
    cfg: BreakerConfig,
}
impl Breaker {
    pub fn new(name: impl Into<String>, cfg: BreakerConfig) -> Self {
        Self {
            name: name.into(),
            cfg,
        }
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn config(&self) -> &BreakerConfig {
        &self.cfg
    }
    pub fn state(&self) -> BreakerState {
        BreakerState::Closed
    }
    pub async fn call<T, E, F, Fut>(
        &self,
        timeout: Option<Duration>,
        f: F,
    ) -> Result<T, BreakerError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Failure,
    {
        let t = timeout.map_or(self.cfg.timeout, |d| d.min(self.cfg.timeout));
        match tokio::time::timeout(t, f()).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(BreakerError::Failed(e)),
            Err(_) => Err(BreakerError::Timeout(t)),
        }
    }
    pub fn record_fallback(&self, _reason: &str) {}
    pub fn snapshot(&self) -> BreakerSnapshot {
        BreakerSnapshot {
            name: self.name.clone(),
        }
    }
}
