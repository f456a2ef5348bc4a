//! Group inserts: the MongoDB analogue of the embedded store's group commit.
//!
//! Every write the store makes is an insert (a record's first version, or its next one; see the
//! store's module docs). The inserts of concurrent requests wait in one queue per store; a
//! flush takes everything waiting (up to [`MAX_BATCH`]) and sends it as **one** unordered
//! `insert` command, which FerretDB writes as one SQL transaction: sixteen concurrent requests
//! cost one round trip and one commit instead of sixteen. At most [`MAX_FLUSHES`] flush runs at
//! once per store (one: measured at 16 connections on FerretDB/PostgreSQL, 620 orders/s and 1.6
//! commands per order, against 524/s and 2.5 with two); a lone writer finds none running and
//! its insert goes out at once, so light load pays nothing for the grouping. No writer is answered before the command holding its
//! insert is acknowledged. An `_id` already taken comes back as a duplicate-key write error at
//! its index (the others still land), and — when the caller wants it — the stored document is
//! read back.
//!
//! Flushes run in their own tasks, so a request that is dropped mid-write (its client went away)
//! can't cancel a command that other requests' inserts ride in. The queue is bounded, by length
//! ([`MAX_QUEUED`]) and by age ([`MAX_WAIT`], the oldest insert's wait): past either, a write is
//! refused at once as "unavailable" (503 with `Retry-After`) instead of joining a queue that
//! would outlive its caller's patience, which keeps a database that can't keep up from turning
//! every request into a client timeout.

use super::errors::{bounded_raw, classify};
use crate::store::StoreError;
use mongodb::bson::{doc, Bson, Document};
use mongodb::{Collection, Database};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Most documents in one `insert` command.
pub const MAX_BATCH: usize = 128;
/// Most `insert` commands in flight at once per store.
pub const MAX_FLUSHES: usize = 1;
/// Most inserts waiting for a flush; past this an insert is refused (503) rather than queued.
pub const MAX_QUEUED: usize = 1024;
/// The longest the oldest waiting insert may have waited for a new one to join the queue:
/// past it the database is not keeping up, and a new insert is refused (503) at once — a caller
/// told "retry shortly" now is better served than one answered after its own timeout.
pub const MAX_WAIT: Duration = Duration::from_millis(250);

/// MongoDB's error code for a unique-index violation.
const DUPLICATE_KEY: i64 = 11000;

/// What became of an insert.
#[derive(Debug)]
pub enum Inserted {
    /// A new document.
    New,
    /// The `_id` was taken; nothing was written.
    Taken,
}

/// Where an insert's outcome goes.
type Answer = oneshot::Sender<Result<Inserted, StoreError>>;

struct Job {
    queued_at: Instant,
    doc: Document,
    done: Answer,
}

struct Queue {
    waiting: VecDeque<Job>,
    flushing: usize,
}

/// One store's writes. Cheap to clone; clones share the insert queue.
#[derive(Clone)]
pub struct Writer {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    records: Collection<Document>,
    op_timeout: Duration,
    queue: Mutex<Queue>,
}

impl Writer {
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

    /// Stores `doc` under `_id: id` unless that `_id` is taken; waits for the command that
    /// carries it to be acknowledged.
    pub async fn insert(&self, id: String, mut doc: Document) -> Result<Inserted, StoreError> {
        doc.insert("_id", id);
        let (done, answer) = oneshot::channel();
        let job = Job {
            queued_at: Instant::now(),
            doc,
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
                "the insert's outcome was lost: its flush stopped (shutting down?)".into(),
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
            self.insert_all(batch).await;
        }
    }

    /// One unordered `insert` command; a taken key answers with the stored document.
    async fn insert_all(&self, jobs: Vec<Job>) {
        let (documents, waiting): (Vec<Document>, Vec<Answer>) =
            jobs.into_iter().map(|j| (j.doc, j.done)).unzip();
        let command = doc! {
            "insert": self.records.name(),
            "documents": documents,
            "ordered": false,
            "writeConcern": { "w": "majority", "j": true },
        };
        let reply = match self.run("insert", command).await {
            Ok(reply) => reply,
            Err(failed) => return fail_all(waiting, || failed.error()),
        };
        if let Some(e) = write_concern_error(&reply) {
            return fail_all(waiting, || write_failed(e.clone()));
        }
        let errors = write_errors(&reply);
        for (i, done) in waiting.into_iter().enumerate() {
            let result = match errors.get(&i) {
                None => Ok(Inserted::New),
                Some((DUPLICATE_KEY, _)) => Ok(Inserted::Taken),
                Some((code, text)) => Err(write_failed(format!("write error {code}: {text}"))),
            };
            let _ = done.send(result);
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
}

/// An integer field of a reply, whatever integer type the server chose.
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

fn write_failed(text: String) -> StoreError {
    StoreError::Backend(Box::new(Message(text)))
}

fn fail_all(waiting: Vec<Answer>, error: impl Fn() -> StoreError) {
    for done in waiting {
        let _ = done.send(Err(error()));
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
