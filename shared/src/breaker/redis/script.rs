//! The Lua scripts' side of the shared breaker: which keys they touch, what they are told, and
//! what their replies mean.
//!
//! Nothing here does I/O. [`Scripts`] turns one breaker's configuration into the fixed
//! arguments every invocation carries (bucket length, lease, key TTL, threshold) and prepares
//! `admit`, `record` and `release` invocations; the `parse_*` functions turn the scripts' replies
//! into [`Verdict`], [`Recorded`] and [`View`], refusing anything a script never answers (a
//! version mismatch between replicas) rather than guessing. The round trips themselves, and
//! what happens when Redis does not answer, are the parent module's.

use std::time::Duration;

use ::redis::{Pipeline, Script, ScriptInvocation};

use super::RedisDown;
use crate::breaker::config::{BreakerConfig, BreakerPolicy};
use crate::breaker::machine::BreakerState;
use crate::breaker::policy::{WindowStats, BUCKETS};
use crate::env::millis;

/// Added to the call timeout to give the trial lease: room for the verdict's round trip.
pub const TRIAL_LEASE_MARGIN: Duration = Duration::from_secs(1);

const ADMIT: &str = include_str!("admit.lua");
const RECORD: &str = include_str!("record.lua");
const RELEASE: &str = include_str!("release.lua");

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

/// `admit.lua`'s verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::breaker) enum Verdict {
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
pub(in crate::breaker) enum Recorded {
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
pub(in crate::breaker) struct View {
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

/// `admit.lua`'s reply: the verdict, the state it leaves, and until when it stays open.
pub(super) type AdmitReply = (String, String, u64);

pub(super) fn parse_admit(
    (verdict, state, until): AdmitReply,
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

/// `record.lua`'s reply: the transition, the state, until when it stays open, and the window's
/// calls and failures.
pub(super) type RecordReply = (String, String, u64, u32, u32);

pub(super) fn parse_record(
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

/// One breaker's scripts, its keys, and the arguments its configuration fixes.
pub(super) struct Scripts {
    pub(super) keys: Keys,
    admit: Script,
    record: Script,
    release: Script,
    bucket_ms: u64,
    lease_ms: u64,
    ttl_ms: u64,
    min_calls: u32,
    threshold_pct: u8,
    /// The count policy's failures; 0 for the rate rule.
    count_failures: u32,
    enabled: bool,
}

impl Scripts {
    pub(super) fn new(name: &str, cfg: &BreakerConfig) -> Self {
        Self {
            keys: Keys::for_breaker(name),
            admit: Script::new(ADMIT),
            record: Script::new(RECORD),
            release: Script::new(RELEASE),
            bucket_ms: (millis(cfg.window) / BUCKETS as u64).max(1),
            lease_ms: millis(trial_lease(cfg)),
            ttl_ms: millis(key_ttl(cfg)),
            min_calls: cfg.min_calls,
            threshold_pct: cfg.error_threshold_pct,
            count_failures: match cfg.policy {
                BreakerPolicy::Count { failures } => failures,
                BreakerPolicy::Rate | BreakerPolicy::Slow { .. } => 0,
            },
            enabled: cfg.enabled,
        }
    }

    /// `SCRIPT LOAD` of all three, so the first `EVALSHA` on a new connection finds them.
    pub(super) fn load() -> Pipeline {
        let mut load = ::redis::pipe();
        for code in [ADMIT, RECORD, RELEASE] {
            load.cmd("SCRIPT").arg("LOAD").arg(code);
        }
        load
    }

    /// "May I call?" at `now`; `token` names this caller should it become the trial.
    pub(super) fn admit(&self, now: u64, token: u64) -> ScriptInvocation<'_> {
        let mut invocation = self.admit.prepare_invoke();
        invocation
            .key(&self.keys.state)
            .arg(now)
            .arg(token)
            .arg(self.lease_ms)
            .arg(self.ttl_ms);
        invocation
    }

    /// An outcome at `now`: `trial` is the trial's token (`None` for a call admitted while
    /// closed); `open_for` is how long to stay open should it open.
    pub(super) fn record(
        &self,
        now: u64,
        trial: Option<u64>,
        failed: bool,
        open_for: Duration,
    ) -> ScriptInvocation<'_> {
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
            .arg(if self.enabled { "1" } else { "0" })
            .arg(self.count_failures);
        invocation
    }

    /// Frees the trial slot held by `token`.
    pub(super) fn release(&self, token: u64) -> ScriptInvocation<'_> {
        let mut invocation = self.release.prepare_invoke();
        invocation.key(&self.keys.state).arg(token);
        invocation
    }
}
