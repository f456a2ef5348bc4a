//! The re-driver's schedule, kept in memory so that a poll with nothing due costs nothing.
//!
//! Every record this store writes passes through here: one with a `due_at` (pending while its
//! request runs, degraded, compensating) is scheduled under its key, a terminal one is dropped.
//! [`Schedule::due`] answers "which keys are due by now" from memory, so the re-driver's poll
//! sends no command at all while nothing is due — and when something is, one `find` by `_id`
//! reads exactly those records (the database stays the truth: a record that moved on is
//! rescheduled or dropped by what is stored, not by what was remembered).
//!
//! [`Known`] keeps, beside it, the newest version of each unfinished record this process has
//! seen stored, so that a request's own compare-and-swap needs no read first, and a due record
//! this process stored last is taken up without reading it back.
//!
//! What memory can't know is work left by *another* process: records of a service that was
//! killed before it finished them, or of another replica. Those are read from the database by a
//! scan on `due_at` when the store first polls (so a restarted service picks up where the killed
//! one stopped) and then every [`SWEEP_EVERY`]: the only whole-collection reads left, once per
//! start and once per sweep period rather than on every poll.

use crate::saga::SagaRecord;
use chrono::{DateTime, Utc};
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// How often the records themselves are scanned for due work this process didn't write.
pub const SWEEP_EVERY: Duration = Duration::from_secs(300);

/// Keys with work left, by when.
#[derive(Default)]
pub struct Schedule {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_time: BTreeSet<(DateTime<Utc>, String)>,
    by_key: HashMap<String, DateTime<Utc>>,
    /// When the records were last scanned; `None` until the first scan.
    swept: Option<Instant>,
}

impl Schedule {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes what a write left: `key` is due at `at`, or (`None`) has no work left.
    pub fn set(&self, key: &str, at: Option<DateTime<Utc>>) {
        let mut inner = self.lock();
        if let Some(old) = inner.by_key.remove(key) {
            inner.by_time.remove(&(old, key.to_owned()));
        }
        if let Some(at) = at {
            inner.by_key.insert(key.to_owned(), at);
            inner.by_time.insert((at, key.to_owned()));
        }
    }

    /// Up to `limit` keys due by `now`, earliest first.
    pub fn due(&self, now: DateTime<Utc>, limit: usize) -> Vec<String> {
        self.lock()
            .by_time
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(limit)
            .map(|(_, key)| key.clone())
            .collect()
    }

    /// Whether the records should be scanned now (the first poll, then every [`SWEEP_EVERY`]);
    /// a `true` answer starts the next period.
    pub fn sweep_now(&self) -> bool {
        let mut inner = self.lock();
        let now = Instant::now();
        let go = inner
            .swept
            .is_none_or(|last| now.duration_since(last) >= SWEEP_EVERY);
        if go {
            inner.swept = Some(now);
        }
        go
    }

    /// Forgets the last scan, so the next poll scans again (after it failed).
    pub fn sweep_failed(&self) {
        self.lock().swept = None;
    }

    /// How many keys are scheduled.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().by_key.len()
    }
}

/// The newest version this process has seen stored of each record that is not finished, whole:
/// what lets a request's own compare-and-swap skip the read that proves the version it read
/// exists, and the re-driver take up a record this process wrote without reading it back (on
/// FerretDB every read is a scan of the collection). Trusting it is safe because every write
/// is a compare-and-swap: if another process moved the record on, the write finds its `_id`
/// taken, the entry is forgotten, and the next attempt reads what is stored.
///
/// Bounded: past [`Known::LIMIT`] records it forgets them all (they are then read).
#[derive(Default)]
pub struct Known {
    records: Mutex<HashMap<String, SagaRecord>>,
}

impl Known {
    /// A pending record is a few KB in memory: at most some tens of MB in all.
    pub const LIMIT: usize = 10_000;

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SagaRecord>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that `rec` is stored as version `v` (an older version than one already noted is
    /// ignored).
    pub fn set(&self, rec: &SagaRecord, v: u64) {
        let mut records = self.lock();
        if records
            .get(&rec.key)
            .is_some_and(|known| known.version >= v)
        {
            return;
        }
        if records.len() >= Self::LIMIT && !records.contains_key(&rec.key) {
            records.clear();
        }
        let mut rec = rec.clone();
        rec.version = v;
        records.insert(rec.key.clone(), rec);
    }

    /// Forgets `key` (finished, or moved on by someone else).
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Whether version `v` of `key` is known to be stored and the newest (a caller naming an
    /// older one is stale, and is checked by reading).
    pub fn is(&self, key: &str, v: u64) -> bool {
        self.lock().get(key).is_some_and(|rec| rec.version == v)
    }

    /// The newest version of `key` this process stored or read, if it is not finished.
    pub fn record(&self, key: &str) -> Option<SagaRecord> {
        self.lock().get(key).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap_or_default()
    }

    #[test]
    fn due_keys_come_earliest_first_and_follow_every_write() {
        let s = Schedule::default();
        s.set("b", Some(at(2_000)));
        s.set("a", Some(at(1_000)));
        s.set("c", Some(at(9_000)));
        assert_eq!(s.due(at(5_000), 10), ["a", "b"]);
        assert_eq!(s.due(at(5_000), 1), ["a"]);
        s.set("a", Some(at(8_000)));
        assert_eq!(s.due(at(5_000), 10), ["b"]);
        s.set("b", None);
        assert!(s.due(at(5_000), 10).is_empty());
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn known_records_are_the_newest_seen_and_forgotten_when_finished() {
        let k = Known::default();
        let rec =
            SagaRecord::accepted("a".into(), "f".into(), "1".into(), 1, serde_json::json!({}));
        assert!(!k.is("a", 0) && k.record("a").is_none());
        k.set(&rec, 0);
        assert!(k.is("a", 0));
        let mut moved = rec.clone();
        moved.attempts = 1;
        k.set(&moved, 2);
        assert!(k.is("a", 2) && !k.is("a", 1) && !k.is("a", 3));
        assert_eq!(k.record("a").map(|r| (r.version, r.attempts)), Some((2, 1)));
        k.set(&rec, 1);
        assert!(
            k.is("a", 2),
            "an older version seen later does not move it back"
        );
        k.forget("a");
        assert!(!k.is("a", 0) && k.record("a").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn the_records_are_swept_at_the_first_poll_then_once_a_period() {
        let s = Schedule::default();
        assert!(s.sweep_now());
        assert!(!s.sweep_now());
        tokio::time::advance(SWEEP_EVERY - Duration::from_millis(1)).await;
        assert!(!s.sweep_now());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(s.sweep_now());
        s.sweep_failed();
        assert!(s.sweep_now());
    }
}
