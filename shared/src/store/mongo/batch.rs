//! Group writes: the MongoDB analogue of the embedded store's group commit.
//!
//! Every write a request makes — "insert this record unless its key exists" and "replace this
//! record if its `version` is still the one I read" — becomes one statement of an `update`
//! command. Writers queue their statement; a flush takes everything queued (up to
//! [`MAX_BATCH`]) and sends it as **one** command, so sixteen concurrent requests cost one round
//! trip instead of sixteen. At most [`MAX_FLUSHES`] commands are in flight per store; a lone
//! writer finds none and its statement goes out at once, so light load pays nothing for the
//! grouping. No writer is answered before the command holding its statement is acknowledged.
//!
//! The statements:
//!
//! - insert: `{q: {_id: key}, u: {$setOnInsert: record}, upsert: true}` — a new key inserts, a
//!   stored one is matched and left alone (and read back for the caller to replay);
//! - compare-and-swap: `{q: {_id: key, version: v}, u: record}` — matches only while the stored
//!   version is still `v`.
//!
//! Telling the statements' outcomes apart, on MongoDB and on FerretDB v1 alike: every written
//! document carries a random `write_stamp`, and the reply's `upserted` list names the new `_id`s
//! (its `index` field is not reliable on FerretDB v1, so only `_id`s are used). When the reply's
//! `n` says every statement matched, that is the answer; otherwise (a lost compare-and-swap, or
//! a write error that stopped the ordered batch) the batch's documents are read back and each
//! statement is judged by whether the stored stamp is its own.
//!
//! Flushes run in their own tasks, so a request that is dropped mid-write (its client went away)
//! can't cancel a command that other requests' statements ride in. The queue is bounded, by
//! length ([`MAX_QUEUED`]) and by age ([`MAX_WAIT`], the oldest statement's wait): past either, a
//! write is refused at once as "unavailable" (503 with `Retry-After`) instead of joining a queue
//! that would outlive its caller's patience. That is what keeps a slow database (FerretDB on
//! SQLite under a load it can't carry) from turning every request into a client timeout.

use super::{bounded_raw, classify, to_i64};
use crate::store::StoreError;
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::{Collection, Database};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Most statements in one command.
pub const MAX_BATCH: usize = 128;
/// Most commands in flight at once per store.
pub const MAX_FLUSHES: usize = 2;
/// Most statements waiting for a flush; past this a write is refused (503) rather than queued.
pub const MAX_QUEUED: usize = 1024;
/// The longest the oldest waiting statement may have waited for a new one to join the queue:
/// past it the database is not keeping up, and a new write is refused (503) at once — a caller
/// told "retry shortly" now is better served than one answered after its own timeout.
pub const MAX_WAIT: Duration = Duration::from_millis(250);

/// The field that tells whose write a stored document is.
pub const STAMP: &str = "write_stamp";

/// One write, as a caller hands it in.
pub enum Write {
    /// Store `doc` (its `_id` is `key`) unless a document with that `_id` exists.
    Insert { key: String, doc: Document },
    /// Replace the document `_id: key` with `doc` if its stored version is `expected`.
    Replace {
        key: String,
        expected: u64,
        doc: Document,
    },
}

/// What became of one write.
#[derive(Debug)]
pub enum Written {
    /// The insert stored a new document.
    Inserted,
    /// The key was taken: the stored document, unchanged.
    Existing(Document),
    /// The compare-and-swap: `true` when it replaced, `false` when the version had moved on.
    Replaced(bool),
}

struct Job {
    queued_at: Instant,
    key: String,
    kind: Kind,
    stamp: i64,
    statement: Document,
    done: oneshot::Sender<Result<Written, StoreError>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Insert,
    Replace,
}

struct Queue {
    waiting: VecDeque<Job>,
    flushing: usize,
}

/// One store's write queue. Cheap to clone; clones share the queue.
#[derive(Clone)]
pub struct Batcher {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    records: Collection<Document>,
    op_timeout: Duration,
    queue: Mutex<Queue>,
}

impl Batcher {
    pub fn new(db: Database, records: Collection<Document>, op_timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                records,
                op_timeout,
                queue: Mutex::new(Queue {
                    waiting: VecDeque::new(),
                    flushing: 0,
                }),
            }),
        }
    }

    /// Queues `write` and waits for the command that carries it to be acknowledged.
    pub async fn write(&self, write: Write) -> Result<Written, StoreError> {
        let stamp: i64 = rand::random();
        let (key, kind, statement) = match write {
            Write::Insert { key, mut doc } => {
                doc.remove("_id");
                doc.insert(STAMP, stamp);
                let statement = doc! {
                    "q": { "_id": &key },
                    "u": { "$setOnInsert": doc },
                    "upsert": true,
                };
                (key, Kind::Insert, statement)
            }
            Write::Replace {
                key,
                expected,
                mut doc,
            } => {
                doc.remove("_id");
                doc.insert(STAMP, stamp);
                let statement = doc! {
                    "q": { "_id": &key, "version": to_i64(expected)? },
                    "u": doc,
                };
                (key, Kind::Replace, statement)
            }
        };
        let (done, answer) = oneshot::channel();
        let job = Job {
            queued_at: Instant::now(),
            key,
            kind,
            stamp,
            statement,
            done,
        };
        let start_flush = {
            let mut queue = self.inner.lock();
            let waited = queue
                .waiting
                .front()
                .map(|oldest| oldest.queued_at.elapsed())
                .unwrap_or_default();
            if queue.waiting.len() >= MAX_QUEUED || waited > MAX_WAIT {
                return Err(StoreError::Unavailable(Box::new(Overloaded {
                    queued: queue.waiting.len(),
                    waited,
                })));
            }
            queue.waiting.push_back(job);
            let start = queue.flushing < MAX_FLUSHES;
            if start {
                queue.flushing += 1;
            }
            start
        };
        if start_flush {
            let inner = self.inner.clone();
            tokio::spawn(async move { inner.flush_until_empty().await });
        }
        answer.await.map_err(|_| {
            StoreError::Unavailable(Box::new(Message(
                "the write's outcome was lost: its flush stopped (shutting down?)".into(),
            )))
        })?
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends batches until nothing is waiting, then gives up its flush slot.
    async fn flush_until_empty(self: Arc<Self>) {
        loop {
            let batch: Vec<Job> = {
                let mut queue = self.lock();
                if queue.waiting.is_empty() {
                    queue.flushing -= 1;
                    return;
                }
                let n = queue.waiting.len().min(MAX_BATCH);
                queue.waiting.drain(..n).collect()
            };
            self.flush(batch).await;
        }
    }

    /// One `update` command for `batch`; every job gets its answer.
    async fn flush(&self, batch: Vec<Job>) {
        let statements: Vec<Document> = batch.iter().map(|j| j.statement.clone()).collect();
        let command = doc! {
            "update": self.records.name(),
            "updates": statements,
            "ordered": true,
            "writeConcern": { "w": "majority", "j": true },
        };
        let reply = match bounded_raw(self.op_timeout, "update", self.db.run_command(command)).await
        {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return fail_all(batch, || classify_clone(&e)),
            Err(e) => {
                let text = e.to_string();
                return fail_all(batch, || {
                    StoreError::Unavailable(Box::new(Message(text.clone())))
                });
            }
        };
        let matched = reply_count(&reply, "n");
        let write_error = first_write_error(&reply);
        let upserted: HashSet<String> = reply
            .get_array("upserted")
            .map(|a| {
                a.iter()
                    .filter_map(|u| u.as_document()?.get_str("_id").ok().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();

        // The quick path: every statement matched or inserted.
        if write_error.is_none() && matched == batch.len() as i64 {
            let mut seen: HashSet<&str> = HashSet::new();
            let mut existing: Vec<&str> = Vec::new();
            for job in &batch {
                let first = seen.insert(job.key.as_str());
                if job.kind == Kind::Insert && !(first && upserted.contains(&job.key)) {
                    existing.push(job.key.as_str());
                }
            }
            let stored = if existing.is_empty() {
                Ok(HashMap::new())
            } else {
                self.read_back(&existing).await
            };
            let mut seen: HashSet<String> = HashSet::new();
            for job in batch {
                let first = seen.insert(job.key.clone());
                let result = match (&job.kind, &stored) {
                    (Kind::Replace, _) => Ok(Written::Replaced(true)),
                    (Kind::Insert, _) if first && upserted.contains(&job.key) => {
                        Ok(Written::Inserted)
                    }
                    (Kind::Insert, Ok(stored)) => existing_or_missing(stored, &job.key),
                    (Kind::Insert, Err(e)) => {
                        Err(StoreError::Unavailable(Box::new(Message(e.to_string()))))
                    }
                };
                let _ = job.done.send(result);
            }
            return;
        }

        // Something did not match, or the ordered batch stopped at an error: ask the database
        // what it holds now and judge each statement by its stamp.
        let keys: Vec<&str> = batch.iter().map(|j| j.key.as_str()).collect();
        let stored = match self.read_back(&keys).await {
            Ok(stored) => stored,
            Err(e) => {
                let text = e.to_string();
                return fail_all(batch, || {
                    StoreError::Unavailable(Box::new(Message(text.clone())))
                });
            }
        };
        for job in batch {
            let doc = stored.get(&job.key);
            let ours = doc.is_some_and(|d| stamp_of(d) == Some(job.stamp));
            let result = match job.kind {
                Kind::Insert if ours => Ok(Written::Inserted),
                // Taken by another writer (a twin request, or a concurrent upsert's E11000).
                Kind::Insert => match doc {
                    Some(d) if stamp_of(d).is_some() || write_error.is_none() => {
                        Ok(Written::Existing(d.clone()))
                    }
                    _ => Err(write_failed(&write_error)),
                },
                Kind::Replace if ours => Ok(Written::Replaced(true)),
                // Not applied: a lost compare-and-swap — unless an error stopped the batch
                // before this statement ran, in which case nobody can say.
                Kind::Replace if write_error.is_none() => Ok(Written::Replaced(false)),
                Kind::Replace => Err(write_failed(&write_error)),
            };
            let _ = job.done.send(result);
        }
    }

    /// The stored documents under `keys`, by key.
    async fn read_back(&self, keys: &[&str]) -> Result<HashMap<String, Document>, StoreError> {
        let find = self
            .records
            .find(doc! { "_id": { "$in": keys } })
            .batch_size(u32::try_from(keys.len()).unwrap_or(u32::MAX));
        let docs: Vec<Document> = bounded_raw(self.op_timeout, "find", async {
            find.await?.try_collect().await
        })
        .await?
        .map_err(classify)?;
        Ok(docs
            .into_iter()
            .filter_map(|d| Some((d.get_str("_id").ok()?.to_owned(), d)))
            .collect())
    }
}

fn existing_or_missing(
    stored: &HashMap<String, Document>,
    key: &str,
) -> Result<Written, StoreError> {
    match stored.get(key) {
        Some(d) => Ok(Written::Existing(d.clone())),
        None => Err(StoreError::Backend(Box::new(Message(format!(
            "the key {key:?} was reported taken, but no record is stored under it"
        ))))),
    }
}

fn stamp_of(d: &Document) -> Option<i64> {
    match d.get(STAMP) {
        Some(Bson::Int64(n)) => Some(*n),
        Some(Bson::Int32(n)) => Some(i64::from(*n)),
        _ => None,
    }
}

/// `n` of a write reply, whatever integer type the server chose.
fn reply_count(reply: &Document, field: &str) -> i64 {
    match reply.get(field) {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(n)) => *n as i64,
        _ => 0,
    }
}

/// The first write error or write-concern error of a reply, as text.
fn first_write_error(reply: &Document) -> Option<String> {
    if let Ok(errors) = reply.get_array("writeErrors") {
        if let Some(e) = errors.iter().filter_map(Bson::as_document).next() {
            return Some(format!(
                "write error {}: {}",
                reply_count(e, "code"),
                e.get_str("errmsg").unwrap_or("")
            ));
        }
    }
    reply.get_document("writeConcernError").ok().map(|e| {
        format!(
            "write concern error {}: {}",
            reply_count(e, "code"),
            e.get_str("errmsg").unwrap_or("")
        )
    })
}

fn write_failed(error: &Option<String>) -> StoreError {
    StoreError::Backend(Box::new(Message(
        error
            .clone()
            .unwrap_or_else(|| "the write was not applied".into()),
    )))
}

fn fail_all(batch: Vec<Job>, error: impl Fn() -> StoreError) {
    for job in batch {
        let _ = job.done.send(Err(error()));
    }
}

/// A driver error shared by every statement of a failed command, classified for each.
fn classify_clone(e: &mongodb::error::Error) -> StoreError {
    classify(e.clone())
}

/// A write refused because too many are already waiting.
#[derive(Debug, thiserror::Error)]
#[error("database busy: {queued} writes waiting, the oldest for {waited:?}; retry shortly")]
struct Overloaded {
    queued: usize,
    waited: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Message(String);
