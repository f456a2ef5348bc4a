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

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, RedisError, Script};

use super::policy::{WindowStats, BUCKETS};
use super::{BreakerBuildError, BreakerConfig, BreakerState};

/// Longest any one Redis round trip may take, connecting included, before the breaker gives up
/// on Redis and decides locally.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(100);

/// While Redis is down, how often (on the breaker's [`Clock`]) one caller tries it again.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Added to the call timeout to give the trial lease: room for the verdict's round trip.
pub const TRIAL_LEASE_MARGIN: Duration = Duration::from_secs(1);

const ADMIT: &str = include_str!("redis/admit.lua");
const RECORD: &str = include_str!("redis/record.lua");
const RELEASE: &str = include_str!("redis/release.lua");

/// Wall-clock time shared by all replicas, in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system's wall clock: what production replicas agree on (through NTP).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock that moves only when told to: tests share one between "replicas" and advance it
/// past windows, resets and leases without sleeping.
#[derive(Debug)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock reading `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        Self(AtomicU64::new(start_ms))
    }

    /// A clock reading the system time now (then moving only on [`advance`](Self::advance)).
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now_ms())
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(millis(by), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The Redis keys of the breaker called `name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    /// A hash: `state` (`open` | `halfOpen`; absent = closed), `until` (ms), `trial` (the trial
    /// holder's token), `lease` (when the trial's lease ends, ms).
    pub state: String,
    /// A hash of `<bucket>:c` and `<bucket>:f` counts, `<bucket>` = `floor(now / bucket_ms)`.
    pub window: String,
}

impl Keys {
    /// `breaker:{<name>}:state` and `breaker:{<name>}:window`.
    pub fn for_breaker(name: &str) -> Self {
        Self {
            state: format!("breaker:{{{name}}}:state"),
            window: format!("breaker:{{{name}}}:window"),
        }
    }
}

/// How long a half-open trial holds its slot before another caller may take it over.
pub fn trial_lease(cfg: &BreakerConfig) -> Duration {
    cfg.timeout.saturating_add(TRIAL_LEASE_MARGIN)
}

/// The keys' time to live: twice the longest span a key must cover (the window, the longest
/// open time, the trial lease), at least one second.
pub fn key_ttl(cfg: &BreakerConfig) -> Duration {
    cfg.window
        .max(cfg.reset.saturating_add(cfg.reset_jitter))
        .max(trial_lease(cfg))
        .saturating_mul(2)
        .max(Duration::from_secs(1))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

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

/// `admit.lua`'s verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Closed: an ordinary call.
    Normal,
    /// This caller moved the breaker open → half-open and holds the trial.
    HalfOpened,
    /// This caller took a free (or expired) trial slot.
    Trial,
    /// Do not call the hop.
    Reject,
}

/// `record.lua`'s transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Recorded {
    /// Counted, no change.
    Counted,
    /// This outcome tripped the window.
    Opened,
    /// The trial failed.
    Reopened,
    /// The trial succeeded.
    Closed,
    /// Not counted: too late, or a trial whose lease was taken over.
    Stale,
}

/// The shared state as this replica last saw it (for `state()` and `snapshot()`, which cannot
/// wait for Redis).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct View {
    pub state: BreakerState,
    pub until_ms: u64,
    pub window: WindowStats,
}

fn parse_state(s: &str) -> Result<BreakerState, RedisDown> {
    match s {
        "closed" => Ok(BreakerState::Closed),
        "open" => Ok(BreakerState::Open),
        "halfOpen" => Ok(BreakerState::HalfOpen),
        other => Err(RedisDown::Reply(format!("state {other:?}"))),
    }
}

fn parse_admit(
    (verdict, state, until): (String, String, u64),
) -> Result<(Verdict, BreakerState, u64), RedisDown> {
    let verdict = match verdict.as_str() {
        "normal" => Verdict::Normal,
        "halfOpen" => Verdict::HalfOpened,
        "trial" => Verdict::Trial,
        "reject" => Verdict::Reject,
        other => return Err(RedisDown::Reply(format!("admit verdict {other:?}"))),
    };
    Ok((verdict, parse_state(&state)?, until))
}

type RecordReply = (String, String, u64, u32, u32);

fn parse_record(
    (transition, state, until, calls, failures): RecordReply,
) -> Result<(Recorded, View), RedisDown> {
    let recorded = match transition.as_str() {
        "none" => Recorded::Counted,
        "opened" => Recorded::Opened,
        "reopened" => Recorded::Reopened,
        "closed" => Recorded::Closed,
        "stale" => Recorded::Stale,
        other => return Err(RedisDown::Reply(format!("record transition {other:?}"))),
    };
    let view = View {
        state: parse_state(&state)?,
        until_ms: until,
        window: WindowStats::new(calls, failures),
    };
    Ok((recorded, view))
}

/// One breaker's handle on Redis: the lazily connected client, the scripts, whether Redis is
/// answering, and the last state seen.
pub(super) struct Shared {
    name: String,
    client: Client,
    /// A multiplexed connection, cloned out for each round trip (never held across `.await`).
    conn: Mutex<Option<MultiplexedConnection>>,
    clock: Arc<dyn Clock>,
    keys: Keys,
    admit: Script,
    record: Script,
    release: Script,
    bucket_ms: u64,
    lease_ms: u64,
    ttl_ms: u64,
    min_calls: u32,
    threshold_pct: u8,
    enabled: bool,
    /// `false` from the first failed round trip until a probe succeeds.
    up: AtomicBool,
    /// While down, when (on `clock`) the next caller tries Redis again.
    next_probe_ms: AtomicU64,
    view: Mutex<View>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("keys", &self.keys)
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
            keys: Keys::for_breaker(name),
            admit: Script::new(ADMIT),
            record: Script::new(RECORD),
            release: Script::new(RELEASE),
            bucket_ms: (millis(cfg.window) / BUCKETS as u64).max(1),
            lease_ms: millis(trial_lease(cfg)),
            ttl_ms: millis(key_ttl(cfg)),
            min_calls: cfg.min_calls,
            threshold_pct: cfg.error_threshold_pct,
            enabled: cfg.enabled,
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
        let now = self.clock.now_ms();
        let mut invocation = self.admit.prepare_invoke();
        invocation
            .key(&self.keys.state)
            .arg(now)
            .arg(token)
            .arg(self.lease_ms)
            .arg(self.ttl_ms);
        let reply = self
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
        let now = self.clock.now_ms();
        let mut invocation = self.record.prepare_invoke();
        invocation
            .key(&self.keys.state)
            .key(&self.keys.window)
            .arg(now)
            .arg(if failed { "1" } else { "0" })
            .arg(trial.map(|t| t.to_string()).unwrap_or_default())
            .arg(self.bucket_ms)
            .arg(self.min_calls)
            .arg(u32::from(self.threshold_pct))
            .arg(millis(open_for))
            .arg(self.ttl_ms)
            .arg(if self.enabled { "1" } else { "0" });
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
        let mut invocation = self.release.prepare_invoke();
        invocation.key(&self.keys.state).arg(token);
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
        let mut load = ::redis::pipe();
        for code in [ADMIT, RECORD, RELEASE] {
            load.cmd("SCRIPT").arg("LOAD").arg(code);
        }
        load.query_async::<()>(&mut conn).await?;
        *lock(&self.conn) = Some(conn.clone());
        Ok(conn)
    }
}

/// Nothing panics while these locks are held (plain stores and loads), so a poisoned lock is
/// taken over.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag_named_after_the_breaker() {
        let keys = Keys::for_breaker("payment->shipment");
        assert_eq!(keys.state, "breaker:{payment->shipment}:state");
        assert_eq!(keys.window, "breaker:{payment->shipment}:window");
    }

    #[test]
    fn lease_is_the_call_timeout_plus_a_margin() {
        let cfg = BreakerConfig::default();
        assert_eq!(trial_lease(&cfg), Duration::from_millis(1_300));
    }

    #[test]
    fn keys_outlive_the_window_the_open_time_and_the_lease() {
        let cfg = BreakerConfig {
            reset: Duration::from_secs(10),
            reset_jitter: Duration::from_secs(5),
            window: Duration::from_secs(10),
            ..BreakerConfig::default()
        };
        assert_eq!(key_ttl(&cfg), Duration::from_secs(30));
        let short = BreakerConfig {
            reset: Duration::from_millis(10),
            window: Duration::from_millis(10),
            timeout: Duration::ZERO,
            ..BreakerConfig::default()
        };
        assert_eq!(
            key_ttl(&short),
            Duration::from_secs(2),
            "the lease dominates"
        );
        let long_window = BreakerConfig {
            window: Duration::from_secs(60),
            ..BreakerConfig::default()
        };
        assert_eq!(key_ttl(&long_window), Duration::from_secs(120));
    }

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let clock = ManualClock::new(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        clock.advance(Duration::from_millis(2_500));
        assert_eq!(clock.now_ms(), 3_500);
        let wall = ManualClock::starting_now().now_ms();
        assert!(wall.abs_diff(SystemClock.now_ms()) < 60_000);
    }

    #[test]
    fn admit_replies_parse_into_verdicts() {
        let reply = |v: &str, s: &str, until| parse_admit((v.into(), s.into(), until));
        assert_eq!(
            reply("normal", "closed", 0).expect("valid"),
            (Verdict::Normal, BreakerState::Closed, 0)
        );
        assert_eq!(
            reply("halfOpen", "halfOpen", 0).expect("valid"),
            (Verdict::HalfOpened, BreakerState::HalfOpen, 0)
        );
        assert_eq!(
            reply("trial", "halfOpen", 0).expect("valid").0,
            Verdict::Trial
        );
        assert_eq!(
            reply("reject", "open", 42).expect("valid"),
            (Verdict::Reject, BreakerState::Open, 42)
        );
        assert!(matches!(
            reply("maybe", "open", 0),
            Err(RedisDown::Reply(_))
        ));
        assert!(matches!(
            reply("normal", "ajar", 0),
            Err(RedisDown::Reply(_))
        ));
    }

    #[test]
    fn record_replies_carry_the_window() {
        let (recorded, view) =
            parse_record(("opened".into(), "open".into(), 9_000, 5, 3)).expect("valid");
        assert_eq!(recorded, Recorded::Opened);
        assert_eq!(view.state, BreakerState::Open);
        assert_eq!(view.until_ms, 9_000);
        assert_eq!((view.window.calls, view.window.failures), (5, 3));
        assert_eq!(view.window.failure_pct, 60.0);
        for (name, expected) in [
            ("none", Recorded::Counted),
            ("reopened", Recorded::Reopened),
            ("closed", Recorded::Closed),
            ("stale", Recorded::Stale),
        ] {
            let reply = (name.into(), "closed".into(), 0, 0, 0);
            assert_eq!(parse_record(reply).expect("valid").0, expected);
        }
        assert!(parse_record(("tripped".into(), "open".into(), 0, 0, 0)).is_err());
    }

    #[test]
    fn a_bad_url_fails_the_build_without_connecting() {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let cfg = BreakerConfig::default();
        assert!(Shared::new("b", &cfg, "http://nope", Arc::clone(&clock)).is_err());
        assert!(Shared::new("b", &cfg, "redis://127.0.0.1:1/", clock).is_ok());
    }

    #[tokio::test]
    async fn only_one_caller_claims_a_due_probe() {
        let clock = Arc::new(ManualClock::new(10_000));
        let shared = Shared::new(
            "b",
            &BreakerConfig::default(),
            "redis://127.0.0.1:1/",
            clock.clone(),
        )
        .expect("a valid URL");
        assert!(shared.should_ask(), "up: every call asks");
        shared.went_down(&RedisDown::Timeout(REDIS_TIMEOUT));
        assert!(!shared.should_ask(), "down: no probe before PROBE_EVERY");
        clock.advance(PROBE_EVERY);
        assert!(shared.should_ask(), "the first caller after it probes");
        assert!(!shared.should_ask(), "the others do not");
        shared.came_up();
        assert!(shared.is_up() && shared.should_ask());
    }
}
