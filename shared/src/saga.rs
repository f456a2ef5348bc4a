//! The saga record every service persists, and its status machine.
//!
//! Each service stores one [`SagaRecord`] per accepted request, in its own collection. The record
//! is written *before* the next hop is called (so nothing accepted is lost) and then moved through
//! [`Status`] by explicit transitions that append to a bounded [`HistoryEvent`] list. Updates are
//! optimistic: every write names the `version` it read, so two actors racing on one record can't
//! lose each other's transition. That needs only single-document atomicity, which MongoDB,
//! FerretDB and the embedded store all give.
//!
//! How long and how often the re-driver tries before giving a saga up is [`SagaConfig`]
//! (`SAGA_*`), in `config`.

mod config;

pub use config::SagaConfig;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// How many history events a record keeps; older ones are dropped first.
pub const HISTORY_LIMIT: usize = 50;

/// A saga's server-side id: a UUID v7, so ids sort by creation time. Always serialized as the
/// hyphenated string (also in BSON, so `_id` reads the same in the mongo shell as in the API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SagaId(pub Uuid);

impl Serialize for SagaId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0.hyphenated())
    }
}

impl<'de> Deserialize<'de> for SagaId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Uuid::parse_str(&s)
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

impl SagaId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for SagaId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for SagaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for SagaId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// Where a record stands. `Completed`, `Compensated` and `Failed` are terminal; the re-driver
/// keeps working on the others until they reach one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Persisted, the next hop not yet answered.
    Pending,
    /// The next hop was skipped (breaker open, timeout, 5xx, connect): the saga finishes later.
    Degraded,
    /// Given up on (attempts or deadline spent, or the caller cancelled): undoing this hop and
    /// every hop after it, which ends in `compensated` — or `completed`, when it turns out the
    /// rest of the chain had finished after all.
    Compensating,
    /// This hop and every hop after it succeeded.
    Completed,
    /// Gave up and undid this hop's effect (payment refunded, order cancelled).
    Compensated,
    /// Rejected for good (e.g. the next hop refused the request with a 4xx).
    Failed,
}

impl Status {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Compensated | Self::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Degraded => "degraded",
            Self::Compensating => "compensating",
            Self::Completed => "completed",
            Self::Compensated => "compensated",
            Self::Failed => "failed",
        }
    }

    /// The status machine: which moves are allowed. Anything else is a bug or a lost race.
    pub fn can_move_to(self, next: Status) -> bool {
        use Status::*;
        matches!(
            (self, next),
            (
                Pending | Degraded,
                Completed | Degraded | Compensating | Compensated | Failed
            ) | (
                Compensating,
                Compensating | Compensated | Completed | Failed
            )
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the next hop was skipped: what the response's `fallback` field and the history say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fallback {
    /// Short machine-readable cause: `open`, `timeout`, `http 502`, `connect`, `deadline`, …
    pub reason: String,
    /// A sentence for humans.
    pub detail: String,
}

/// One entry of a record's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEvent {
    pub at: DateTime<Utc>,
    /// What was attempted: `accepted`, `forward`, `inject`, `redrive`, `compensate`, …
    pub step: String,
    /// The status after this step.
    pub status: Status,
    /// Why (fallback reason, http status, …); empty when nothing needs saying.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// The response a hop gave for this record, kept so an idempotent replay returns it verbatim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedResponse {
    pub status: u16,
    pub body: serde_json::Value,
}

/// One persisted record: a service's part of one saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaRecord {
    /// The server id; `_id` in MongoDB.
    #[serde(rename = "_id")]
    pub saga_id: SagaId,
    /// The idempotency key: the client's `Idempotency-Key`, the caller's derived hop key, or the
    /// saga id when neither was sent. Unique per collection (enforced by the database).
    pub key: String,
    /// Fingerprint of the request body, to tell a replay from a different request under one key.
    pub fingerprint: String,
    /// The client's `id` field: business data, not a key.
    pub id: String,
    /// The hop counter after this service incremented it.
    pub count: u32,
    pub status: Status,
    /// This service's part of the request as it was accepted (nested parts included, so a
    /// re-drive can forward them again).
    pub body: serde_json::Value,
    /// What the next hop answered, when it answered.
    #[serde(default)]
    pub next: Option<serde_json::Value>,
    #[serde(default)]
    pub fallback: Option<Fallback>,
    /// The last response given to the caller for this record.
    #[serde(default)]
    pub response: Option<SavedResponse>,
    #[serde(default)]
    pub history: Vec<HistoryEvent>,
    /// How many times the next hop was tried for this record.
    #[serde(default)]
    pub attempts: u32,
    /// How many times the re-driver took this record up (`SAGA_MAX_ATTEMPTS` bounds it).
    #[serde(default)]
    pub redrives: u32,
    /// When the re-driver may next take this record up; `None` once it is terminal. Claiming a
    /// record moves it to the end of the claim's lease, so a crashed driver's claim expires.
    #[serde(default)]
    pub due_at: Option<DateTime<Utc>>,
    /// Which re-driver holds the lease (for people reading the record).
    #[serde(default)]
    pub leased_by: Option<String>,
    /// Bumped on every write; writers name the version they read (optimistic concurrency).
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl SagaRecord {
    /// What `service` answers about this record now: the body of `/create`'s and
    /// `/compensate`'s answers, and of a replay's. Every field comes from the record, so a store
    /// may keep a saved answer that equals it as "the record's own" and spell it again on read.
    pub fn answer_body(&self, service: &str) -> serde_json::Value {
        serde_json::json!({
            "service": service,
            "saga_id": self.saga_id,
            "id": self.id,
            "count": self.count,
            "status": self.status.as_str(),
            "next": self.next,
            "fallback": self.fallback,
        })
    }

    /// A freshly accepted record in `pending`, with its first history event.
    pub fn accepted(
        key: String,
        fingerprint: String,
        id: String,
        count: u32,
        body: serde_json::Value,
    ) -> Self {
        let now = now_ms();
        Self {
            saga_id: SagaId::new(),
            key,
            fingerprint,
            id,
            count,
            status: Status::Pending,
            body,
            next: None,
            fallback: None,
            response: None,
            history: vec![HistoryEvent {
                at: now,
                step: "accepted".into(),
                status: Status::Pending,
                reason: String::new(),
            }],
            attempts: 0,
            redrives: 0,
            due_at: None,
            leased_by: None,
            version: 0,
            created_at: now,
            updated_at: now,
        }
    }

    /// A record for a key that was cancelled before any request under it arrived: born
    /// `compensated`, so a late request under that key finds it and does nothing. Its empty
    /// fingerprint matches no request (see [`SagaRecord::is_tombstone`]).
    pub fn tombstone(key: String, reason: &str) -> Self {
        let mut rec = Self::accepted(
            key,
            String::new(),
            String::new(),
            0,
            // An empty object, not null: a record's body is an object (the OpenAPI says so).
            serde_json::Value::Object(serde_json::Map::new()),
        );
        rec.note(Status::Compensated, "compensate", reason);
        rec
    }

    /// Whether this record was made by [`SagaRecord::tombstone`].
    pub fn is_tombstone(&self) -> bool {
        self.fingerprint.is_empty()
    }

    /// Moves to `next`, appending a history event; refuses moves the status machine forbids.
    /// The caller persists the result with `Store::replace(&rec, old_version)`.
    pub fn transition(
        &mut self,
        next: Status,
        step: &str,
        reason: impl Into<String>,
    ) -> Result<(), InvalidTransition> {
        if !self.status.can_move_to(next) {
            return Err(InvalidTransition {
                from: self.status,
                to: next,
            });
        }
        self.note(next, step, reason);
        Ok(())
    }

    /// Appends a history event without a status check (e.g. an injected failure while pending).
    pub fn note(&mut self, status: Status, step: &str, reason: impl Into<String>) {
        let now = now_ms();
        self.status = status;
        self.history.push(HistoryEvent {
            at: now,
            step: step.into(),
            status,
            reason: reason.into(),
        });
        if status.is_terminal() {
            self.due_at = None;
            self.leased_by = None;
        }
        if self.history.len() > HISTORY_LIMIT {
            let drop = self.history.len() - HISTORY_LIMIT;
            self.history.drain(..drop);
        }
        self.updated_at = now;
    }
}

/// Now, to the millisecond: what BSON dates hold, so a record in memory equals its stored copy.
fn now_ms() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a record can't move from {from} to {to}")]
pub struct InvalidTransition {
    pub from: Status,
    pub to: Status,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> SagaRecord {
        SagaRecord::accepted("k".into(), "f".into(), "1".into(), 1, serde_json::json!({}))
    }

    #[test]
    fn terminal_statuses_accept_no_move() {
        for from in [Status::Completed, Status::Compensated, Status::Failed] {
            for to in [Status::Pending, Status::Degraded, Status::Completed] {
                assert!(!from.can_move_to(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn degraded_can_complete_later() {
        let mut r = rec();
        r.transition(Status::Degraded, "forward", "open").unwrap();
        r.transition(Status::Completed, "redrive", "").unwrap();
        assert_eq!(r.status, Status::Completed);
        assert_eq!(r.history.len(), 3);
        assert!(r.transition(Status::Degraded, "x", "").is_err());
    }

    #[test]
    fn compensation_ends_compensated_or_completed() {
        let mut r = rec();
        r.transition(Status::Degraded, "forward", "timeout")
            .unwrap();
        r.due_at = Some(Utc::now());
        r.transition(Status::Compensating, "give up", "max attempts")
            .unwrap();
        assert!(r.due_at.is_some(), "still the re-driver's to finish");
        r.transition(Status::Compensating, "compensate", "connect")
            .unwrap();
        r.transition(Status::Compensated, "compensate", "").unwrap();
        assert_eq!(r.due_at, None, "a terminal record is due for nothing");
        assert!(r.transition(Status::Degraded, "forward", "").is_err());
        let mut late = rec();
        late.transition(Status::Compensating, "give up", "")
            .unwrap();
        late.transition(Status::Completed, "compensate", "already completed")
            .unwrap();
    }

    #[test]
    fn a_tombstone_is_born_compensated_and_matches_no_request() {
        let t = SagaRecord::tombstone("k/payment".into(), "cancelled by the caller");
        assert_eq!(t.status, Status::Compensated);
        assert!(t.is_tombstone());
        assert!(!rec().is_tombstone());
    }

    #[test]
    fn history_is_bounded_and_keeps_the_newest() {
        let mut r = rec();
        for i in 0..(HISTORY_LIMIT + 10) {
            r.note(Status::Degraded, "forward", format!("try {i}"));
        }
        assert_eq!(r.history.len(), HISTORY_LIMIT);
        assert_eq!(
            r.history.last().map(|e| e.reason.as_str()),
            Some(format!("try {}", HISTORY_LIMIT + 9).as_str())
        );
    }

    #[test]
    fn saga_ids_are_v7_and_sort_by_time() {
        let a = SagaId::new();
        let b = SagaId::new();
        assert_eq!(a.0.get_version_num(), 7);
        assert!(a < b);
    }
}
