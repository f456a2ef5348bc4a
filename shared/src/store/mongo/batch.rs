//! Group writes: the MongoDB analogue of the embedded store's group commit.
//!
//! Every write a request makes — "insert this record unless its key exists" and "replace this
//! record if its `version` is still the one I read" — waits in one queue per store. A flush takes
//! everything waiting (up to [`MAX_BATCH`]) and sends it as at most two commands, run side by
//! side: one `insert` holding every new document, one `update` holding every compare-and-swap.
//! Sixteen concurrent requests cost two round trips instead of sixteen, and FerretDB writes a
//! multi-document `insert` as one SQL transaction (one commit, one fsync, for all of them). At
//! most [`MAX_FLUSHES`] flushes run at once per store; a lone writer finds none running and its
//! write goes out at once, so light load pays nothing for the grouping. No writer is answered
//! before the command holding its write is acknowledged.
//!
//! Telling the outcomes apart, on MongoDB and on FerretDB v1 alike:
//!
//! - inserts are unordered: a key already taken comes back as a duplicate-key write error at
//!   its index (the others still land), and the stored document is read back for the caller to
//!   replay;
//! - compare-and-swaps are `{q: {_id: key, version: v}, u: record}` in an ordered `update`.
//!   Every replacement carries a random `write_stamp`. When the reply's `n` says every
//!   statement matched, that is the answer; otherwise (a lost compare-and-swap, or an error that
//!   stopped the batch) the documents are read back and each statement is judged by whether the
//!   stored stamp is its own. (Per-statement indexes in an `update` reply are not reliable on
//!   FerretDB v1, so none is used.)
//!
//! Flushes run in their own tasks, so a request that is dropped mid-write (its client went away)
//! can't cancel a command that other requests' writes ride in. The queue is bounded, by
//! length ([`MAX_QUEUED`]) and by age ([`MAX_WAIT`], the oldest write's wait): past either, a
//! write is refused at once as "unavailable" (503 with `Retry-After`) instead of joining a queue
//! that would outlive its caller's patience. That is what keeps a slow database (FerretDB on
//! SQLite under a load it can't carry) from turning every request into a client timeout.

use super::{bounded_raw, classify, to_i64};
use crate::store::StoreError;
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::{Collection, Database};
use std::collections::{HashMap, VecDeque};
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

/// MongoDB's error code for a unique-index violation.
const DUPLICATE_KEY: i64 = 11000;

/// The field that tells whose compare-and-swap a stored document is.
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
                doc.insert("_id", &key);
                (key, Kind::Insert, doc)
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

    /// One flush: the inserts and the compare-and-swaps of `batch`, side by side.
    async fn flush(&self, batch: Vec<Job>) {
        let (inserts, replaces): (Vec<Job>, Vec<Job>) =
            batch.into_iter().partition(|j| j.kind == Kind::Insert);
        futures::future::join(self.insert_all(inserts), self.replace_all(replaces)).await;
    }

    /// One unordered `insert` command; a taken key answers with the stored document.
    async fn insert_all(&self, jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        let documents: Vec<Document> = jobs.iter().map(|j| j.statement.clone()).collect();
        let command = doc! {
            "insert": self.records.name(),
            "documents": documents,
            "ordered": false,
            "writeConcern": { "w": "majority", "j": true },
        };
        let reply = match self.run("insert", command).await {
            Ok(reply) => reply,
            Err(failed) => return fail_all(jobs, || failed.error()),
        };
        if let Some(e) = write_concern_error(&reply) {
            return fail_all(jobs, || write_failed(&Some(e.clone())));
        }
        let errors: HashMap<usize, (i64, String)> = write_errors(&reply);
        let taken: Vec<&str> = jobs
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                errors
                    .get(i)
                    .is_some_and(|(code, _)| *code == DUPLICATE_KEY)
            })
            .map(|(_, j)| j.key.as_str())
            .collect();
        let stored = if taken.is_empty() {
            Ok(HashMap::new())
        } else {
            self.read_back(&taken).await
        };
        for (i, job) in jobs.into_iter().enumerate() {
            let result = match errors.get(&i) {
                None => Ok(Written::Inserted),
                Some((DUPLICATE_KEY, _)) => match &stored {
                    Ok(stored) => existing_or_missing(stored, &job.key),
                    Err(e) => Err(StoreError::Unavailable(Box::new(Message(e.to_string())))),
                },
                Some((code, text)) => {
                    Err(write_failed(&Some(format!("write error {code}: {text}"))))
                }
            };
            let _ = job.done.send(result);
        }
    }

    /// One ordered `update` command of compare-and-swaps.
    async fn replace_all(&self, jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        let statements: Vec<Document> = jobs.iter().map(|j| j.statement.clone()).collect();
        let command = doc! {
            "update": self.records.name(),
            "updates": statements,
            "ordered": true,
            "writeConcern": { "w": "majority", "j": true },
        };
        let reply = match self.run("update", command).await {
            Ok(reply) => reply,
            Err(failed) => return fail_all(jobs, || failed.error()),
        };
        let write_error = write_errors(&reply)
            .into_values()
            .next()
            .map(|(code, text)| format!("write error {code}: {text}"))
            .or_else(|| write_concern_error(&reply));
        if write_error.is_none() && reply_count(&reply, "n") == jobs.len() as i64 {
            for job in jobs {
                let _ = job.done.send(Ok(Written::Replaced(true)));
            }
            return;
        }
        // Something did not match, or an error stopped the ordered batch: ask the database
        // what it holds now and judge each statement by its stamp.
        let keys: Vec<&str> = jobs.iter().map(|j| j.key.as_str()).collect();
        let stored = match self.read_back(&keys).await {
            Ok(stored) => stored,
            Err(e) => {
                let text = e.to_string();
                return fail_all(jobs, || {
                    StoreError::Unavailable(Box::new(Message(text.clone())))
                });
            }
        };
        for job in jobs {
            let ours = stored
                .get(&job.key)
                .is_some_and(|d| stamp_of(d) == Some(job.stamp));
            let result = if ours {
                Ok(Written::Replaced(true))
            } else if write_error.is_none() {
                // Not applied, and nothing stopped the batch: the version had moved on.
                Ok(Written::Replaced(false))
            } else {
                // An error stopped the batch before this statement ran, or failed it.
                Err(write_failed(&write_error))
            };
            let _ = job.done.send(result);
        }
    }

    /// Runs one command under the backstop timer.
    async fn run(&self, what: &'static str, command: Document) -> Result<Document, Failed> {
        match bounded_raw(self.op_timeout, what, self.db.run_command(command)).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(Failed::Driver(e)),
            Err(e) => Err(Failed::Store(e.to_string())),
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

/// A reply's write errors: code and message by statement index.
fn write_errors(reply: &Document) -> HashMap<usize, (i64, String)> {
    let Ok(errors) = reply.get_array("writeErrors") else {
        return HashMap::new();
    };
    errors
        .iter()
        .filter_map(Bson::as_document)
        .filter_map(|e| {
            let index = usize::try_from(reply_count(e, "index")).ok()?;
            let text = e.get_str("errmsg").unwrap_or("").to_owned();
            Some((index, (reply_count(e, "code"), text)))
        })
        .collect()
}

/// A reply's write-concern error, as text: the write happened but is not known durable.
fn write_concern_error(reply: &Document) -> Option<String> {
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

fn fail_all(jobs: Vec<Job>, error: impl Fn() -> StoreError) {
    for job in jobs {
        let _ = job.done.send(Err(error()));
    }
}

/// A command that failed as a whole: every write in it gets the error.
enum Failed {
    Driver(mongodb::error::Error),
    Store(String),
}

impl Failed {
    fn error(&self) -> StoreError {
        match self {
            Failed::Driver(e) => classify(e.clone()),
            Failed::Store(text) => StoreError::Unavailable(Box::new(Message(text.clone()))),
        }
    }
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
