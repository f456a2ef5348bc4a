//! The saga record every service persists, and its status machine.
//!
//! Each service stores one [`SagaRecord`] per accepted request, in its own collection. The record
//! is written *before* the next hop is called (so nothing accepted is lost) and then moved through
//! [`Status`] by explicit transitions that append to a bounded [`HistoryEvent`] list. Updates are
//! optimistic: every write names the `version` it read, so two actors racing on one record can't
//! lose each other's transition. That needs only single-document atomicity, which MongoDB,
//! FerretDB and the embedded store all give.

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

/// Where a record stands. `Completed`, `Compensated` and `Failed` are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Persisted, the next hop not yet answered.
    Pending,
    /// The next hop was skipped (breaker open, timeout, 5xx, connect): the saga finishes later.
    Degraded,
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
            (Pending, Completed | Degraded | Failed | Compensated)
                | (Degraded, Degraded | Completed | Compensated | Failed)
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
    /// Bumped on every write; writers name the version they read (optimistic concurrency).
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl SagaRecord {
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
            version: 0,
            created_at: now,
            updated_at: now,
        }
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
