//! The shared breaker (`BREAKER_BACKEND=redis`): one breaker's state for every replica of a
//! service, kept in Redis.
//!
//! Every process whose breaker has the same name (`payment->shipment`) reads and writes the same
//! two keys, so failures seen by one replica open the breaker for all of them and only one
//! replica's caller gets the half-open trial. The state machine of [`super::machine`] is
//! replayed in three Lua scripts, because a read-decide-write from Rust would race between
//! replicas while a script runs atomically inside Redis:
//!
//! - `admit.lua` (one `EVALSHA` per call): closed admits; open rejects until `until`, then the
//!   first caller moves it half-open and takes the *trial lease*; half-open rejects while the
//!   lease runs. The lease expires on its own (the call timeout plus [`TRIAL_LEASE_MARGIN`]), so a
//!   replica that dies mid-trial cannot wedge the breaker half-open.
//! - `record.lua` (one `EVALSHA` per outcome): counts the outcome in the rolling window (10
//!   buckets in a hash, fields named by absolute bucket number so all replicas agree) and trips
//!   it, or takes the trial's verdict. Outcomes of calls admitted while closed that land after
//!   the breaker left closed, and verdicts of a trial whose lease was taken over, are ignored.
//! - `release.lua`: a trial that ended without a verdict (4xx, cancelled caller) frees its slot.
//!
//! Both keys ([`Keys`]) share the hash tag `{name}` (one cluster slot, as scripts require) and
//! carry a time to live of twice the longest span they must cover ([`key_ttl`]), refreshed on
//! every write: an abandoned breaker leaves nothing behind. A closed breaker has no state key.
//!
//! **Time.** The scripts take "now" from the caller, in wall-clock milliseconds from an
//! injected [`Clock`] ([`SystemClock`] in production), rather than from Redis `TIME`. Replicas
//! run on NTP-synced hosts whose skew (milliseconds) is negligible next to windows and resets of
//! seconds, and the trial lease keeps "one trial" true even under skew. What the choice buys:
//! tests drive windows, resets and leases with a [`ManualClock`] in virtual milliseconds against
//! a real Redis, without sleeping. The reset jitter (`BREAKER_RESET_JITTER_MS`) is drawn by the
//! replica whose outcome opens the breaker and passed in with it.
//!
//! **Degrading.** Redis must never fail a request or delay it by more than [`REDIS_TIMEOUT`]:
//! every round trip (connecting included) runs under that bound, and the first error or
//! timeout switches the breaker to its local in-memory machine (one `warn` line, `event =
//! "redisDown"`). While down, calls do not touch Redis at all; once per [`PROBE_EVERY`] (on the
//! breaker's clock) one caller tries Redis again, and the first success switches back (one
//! `info` line, `event = "redisUp"`). The client connects lazily (one multiplexed connection,
//! dropped on error and remade by the next probe; redis's `ConnectionManager` would connect
//! eagerly and retry on its own schedule), so a service starts with Redis down.
//!
//! **Shape.** This module is the connection and its health: `Shared` makes the round trips,
//! bounds them, and keeps the last state it saw. What the scripts are told and what their
//! replies mean is `script`'s (no I/O there), where "now" comes from is `clock`'s, and the
//! breaker's call path that asks Redis first is `super::distributed`.

mod clock;
mod script;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, RedisError};

pub use clock::{Clock, ManualClock, SystemClock};
pub use script::{key_ttl, trial_lease, Keys, TRIAL_LEASE_MARGIN};
use script::{parse_admit, parse_record, AdmitReply, RecordReply, Scripts};
pub(super) use script::{Recorded, Verdict, View};

use super::config::BreakerConfig;
use super::error::BreakerBuildError;
use super::machine::BreakerState;
use super::policy::WindowStats;
use crate::env::millis;

/// Longest any one Redis round trip may take, connecting included, before the breaker gives up
/// on Redis and decides locally.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(100);

/// While Redis is down, how often (on the breaker's [`Clock`]) one caller tries it again.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Why a Redis round trip did not give an answer; the breaker then decides locally.
#[derive(Debug, thiserror::Error)]
pub enum RedisDown {
    /// No answer within [`REDIS_TIMEOUT`].
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Connecting or the command failed.
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// A script answered something it never answers: a version mismatch between replicas.
    #[error("unexpected reply from the breaker script: {0}")]
    Reply(String),
}

/// One breaker's handle on Redis: the lazily connected client, the scripts, whether Redis is
/// answering, and the last state seen.
pub(super) struct Shared {
    name: String,
    client: Client,
    /// A multiplexed connection, cloned out for each round trip (never held across `.await`).
    conn: Mutex<Option<MultiplexedConnection>>,
    clock: Arc<dyn Clock>,
    scripts: Scripts,
    /// `false` from the first failed round trip until a probe succeeds.
    up: AtomicBool,
    /// While down, when (on `clock`) the next caller tries Redis again.
    next_probe_ms: AtomicU64,
    view: Mutex<View>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("keys", &self.scripts.keys)
            .field("up", &self.up)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Parses `url` (no connection yet: the first call connects).
    pub(super) fn new(
        name: &str,
        cfg: &BreakerConfig,
        url: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, BreakerBuildError> {
        let client = Client::open(url).map_err(BreakerBuildError::RedisUrl)?;
        Ok(Self {
            name: name.to_owned(),
            client,
            conn: Mutex::new(None),
            clock,
            scripts: Scripts::new(name, cfg),
            up: AtomicBool::new(true),
            next_probe_ms: AtomicU64::new(0),
            view: Mutex::new(View {
                state: BreakerState::Closed,
                until_ms: 0,
                window: WindowStats::default(),
            }),
        })
    }

    /// Whether Redis answered the last round trip.
    pub(super) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Now on the breaker's clock.
    pub(super) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The shared state as last seen.
    pub(super) fn view(&self) -> View {
        *lock(&self.view)
    }

    /// Whether this call should ask Redis: always while up; while down, only the one caller
    /// that claims a due probe.
    pub(super) fn should_ask(&self) -> bool {
        if self.is_up() {
            return true;
        }
        let now = self.clock.now_ms();
        let due = self.next_probe_ms.load(Ordering::Acquire);
        now >= due
            && self
                .next_probe_ms
                .compare_exchange(
                    due,
                    now.saturating_add(millis(PROBE_EVERY)),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    /// Asks `admit.lua` whether to call; `token` names this caller should it become the trial.
    pub(super) async fn admit(&self, token: u64) -> Result<Verdict, RedisDown> {
        let invocation = self.scripts.admit(self.clock.now_ms(), token);
        let reply: AdmitReply = self
            .round_trip(async |conn| invocation.invoke_async(conn).await)
            .await?;
        let (verdict, state, until_ms) = parse_admit(reply)?;
        let mut view = lock(&self.view);
        if view.state != state {
            // The window is only known after a record; a state change makes the old one moot.
            view.window = WindowStats::default();
        }
        view.state = state;
        view.until_ms = until_ms;
        Ok(verdict)
    }

    /// Hands an outcome to `record.lua`: `trial` is the trial's token (`None` for a call
    /// admitted while closed); `open_for` is how long to stay open should it open.
    pub(super) async fn record(
        &self,
        trial: Option<u64>,
        failed: bool,
        open_for: Duration,
    ) -> Result<(Recorded, View), RedisDown> {
        let invocation = self
            .scripts
            .record(self.clock.now_ms(), trial, failed, open_for);
        let reply: RecordReply = self
            .round_trip(async |conn| invocation.invoke_async(conn).await)
            .await?;
        let (recorded, view) = parse_record(reply)?;
        let mut seen = lock(&self.view);
        if recorded == Recorded::Stale {
            // The script did not read the window: keep the last counts unless the state moved.
            if seen.state != view.state {
                seen.window = WindowStats::default();
            }
            seen.state = view.state;
            seen.until_ms = view.until_ms;
        } else {
            *seen = view;
        }
        Ok((recorded, view))
    }

    /// Frees the trial slot held by `token` (no verdict).
    pub(super) async fn release(&self, token: u64) -> Result<(), RedisDown> {
        let invocation = self.scripts.release(token);
        self.round_trip(async |conn| invocation.invoke_async::<()>(conn).await)
            .await
    }

    /// Frees the trial slot from a `Drop` (a cancelled trial): on a task of its own, bounded
    /// like any round trip. Without a runtime the lease runs out instead.
    pub(super) fn release_later(self: &Arc<Self>, token: u64) {
        if !self.is_up() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let shared = Arc::clone(self);
            runtime.spawn(async move {
                if let Err(e) = shared.release(token).await {
                    shared.went_down(&e);
                }
            });
        }
    }

    /// Redis failed a round trip: decide locally from now on. Logs only the first time.
    pub(super) fn went_down(&self, error: &RedisDown) {
        *lock(&self.conn) = None;
        self.next_probe_ms.store(
            self.clock.now_ms().saturating_add(millis(PROBE_EVERY)),
            Ordering::Release,
        );
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                event = "redisDown",
                breaker = %self.name,
                error = %error,
                retry_every_ms = millis(PROBE_EVERY),
                "redis unavailable: the local breaker decides until it answers again"
            );
        }
    }

    /// Redis answered: shared state again. Logs only when it was down.
    pub(super) fn came_up(&self) {
        if !self.is_up() && !self.up.swap(true, Ordering::AcqRel) {
            tracing::info!(event = "redisUp", breaker = %self.name, "redis answers again: state is shared");
        }
    }

    /// Runs `op` on a connection (connecting first if there is none), all within
    /// [`REDIS_TIMEOUT`].
    async fn round_trip<T>(
        &self,
        op: impl AsyncFnOnce(&mut MultiplexedConnection) -> Result<T, RedisError>,
    ) -> Result<T, RedisDown> {
        let attempt = async {
            let mut conn = self.connection().await?;
            op(&mut conn).await.map_err(RedisDown::from)
        };
        tokio::time::timeout(REDIS_TIMEOUT, attempt)
            .await
            .map_err(|_| RedisDown::Timeout(REDIS_TIMEOUT))?
    }

    /// The connection, made (and the scripts loaded, so the first `EVALSHA` finds them) if
    /// there is none. Racing callers may each connect once; the last one stored is kept.
    async fn connection(&self) -> Result<MultiplexedConnection, RedisError> {
        if let Some(conn) = lock(&self.conn).clone() {
            return Ok(conn);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT));
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Scripts::load().query_async::<()>(&mut conn).await?;
        *lock(&self.conn) = Some(conn.clone());
        Ok(conn)
    }
}

/// Nothing panics while these locks are held (plain stores and loads), so a poisoned lock is
/// taken over.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
