//! The final write, off the answer's path.
//!
//! A hop writes its record twice: *accepted*, before anything is forwarded (that write holds the
//! request: nothing is forwarded or answered before it is acknowledged), and *finished*, with the
//! next hop's answer and the outcome. The second need not hold the answer. If the process dies
//! before it lands, the record is still `pending` in the database and due to the re-driver a
//! second after the request's deadline; the re-driver forwards again under the same hop key, the
//! next hop replays the answer it stored, and the record ends where the answer said. So the
//! answer leaves at once and the final write follows, batched with whatever else is being
//! written: one database round trip less on the critical path of every hop but the last.
//!
//! What a client can observe stays the same:
//! - Reads in this process wait for the saga's final write ([`Finishing::settled`]): a
//!   `GET /<collection>/{id}`, a replay under the same key or a `/compensate` right after the
//!   answer see what the answer said.
//! - Shutdown waits for every final write ([`Finishing::drain`]).
//! - The number of writes in the background is bounded (`MAX_IN_FLIGHT`): past it, the final
//!   write holds the answer again, so an overloaded database slows the answers down (and sheds
//!   them at the admission limit) instead of piling up work behind them.
//!
//! A final write that fails (the database went away) or loses its version check (a replay or the
//! re-driver moved the record first) leaves the record to whoever holds it now; both are logged.

use crate::failpoint::{self, Action, Point};
use crate::saga::{SagaId, SagaRecord};
use crate::store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{watch, Semaphore};
use tokio_util::task::TaskTracker;

/// The final write itself. The `write` failpoint (tests, `crate::failpoint`) sits right before
/// it: a crash there loses the write after the answer left, an error fails it, a duplicate
/// delivers it twice (the second loses its version check).
async fn write(store: &dyn Store, rec: &SagaRecord, read: u64) -> Result<bool, StoreError> {
    match failpoint::fire(Point::Write) {
        Some(Action::Error) => Err(StoreError::Unavailable("failpoint write: error".into())),
        Some(Action::Duplicate) => {
            let first = store.replace(rec, read).await;
            let _ = store.replace(rec, read).await;
            first
        }
        _ => store.replace(rec, read).await,
    }
}

/// Final writes in flight in this process, by saga.
pub struct Finishing {
    /// One receiver per saga whose final write is in flight; its sender is dropped when the
    /// write ends, which wakes every reader waiting on it.
    pending: Arc<Mutex<HashMap<SagaId, watch::Receiver<()>>>>,
    /// Bounds the writes in the background; past it the write holds the answer.
    room: Arc<Semaphore>,
    tasks: TaskTracker,
}

impl Finishing {
    /// Room for `limit` final writes in the background.
    pub fn new(limit: usize) -> Self {
        Self {
            pending: Arc::new(Mutex::new(HashMap::new())),
            room: Arc::new(Semaphore::new(limit.max(1))),
            tasks: TaskTracker::new(),
        }
    }

    /// Writes `rec` (version `read + 1`, checked against `read`) after the answer, or now when
    /// there is no room. Returns `Ok(true)` when the write was handed to the background or
    /// landed, `Ok(false)` when it was made here and lost its version check.
    /// `service` names the service in the log lines.
    pub(super) async fn finish(
        &self,
        store: &Arc<dyn Store>,
        service: &'static str,
        rec: SagaRecord,
        read: u64,
    ) -> Result<bool, StoreError> {
        let Ok(permit) = self.room.clone().try_acquire_owned() else {
            return write(store.as_ref(), &rec, read).await;
        };
        let (done, waiting) = watch::channel(());
        let saga_id = rec.saga_id;
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(saga_id, waiting.clone());
        }
        let (store, pending) = (store.clone(), self.pending.clone());
        self.tasks.spawn(async move {
            match write(store.as_ref(), &rec, read).await {
                Ok(true) => {}
                Ok(false) => tracing::debug!(
                    service,
                    %saga_id,
                    "the record moved before its final write landed; the newer state stands"
                ),
                Err(e) => tracing::warn!(
                    service,
                    %saga_id,
                    error = %e,
                    "final write failed; the re-driver finishes the record after its deadline"
                ),
            }
            if let Ok(mut pending) = pending.lock() {
                if pending
                    .get(&saga_id)
                    .is_some_and(|w| w.same_channel(&waiting))
                {
                    pending.remove(&saga_id);
                }
            }
            drop(done);
            drop(permit);
        });
        Ok(true)
    }

    /// Waits until no final write of `saga_id` is in flight here; true if it had to wait.
    pub async fn settled(&self, saga_id: &SagaId) -> bool {
        let waiting = match self.pending.lock() {
            Ok(pending) => pending.get(saga_id).cloned(),
            Err(_) => None,
        };
        match waiting {
            Some(mut w) => {
                // Err: the sender is gone, i.e. the write ended; that is the wake-up.
                let _ = w.changed().await;
                true
            }
            None => false,
        }
    }

    /// Stops taking writes into the background and waits for those in flight.
    pub async fn drain(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}
