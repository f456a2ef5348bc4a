//! The service's saga outcomes for the live page: a bounded broadcast channel ([`Live`]) that a
//! request or the re-driver publishes to without ever waiting, and builds nothing for when no
//! page is open. The page's side, the stream that reads it, is `live.rs`; this half is what
//! every request shares through `AppState`, so it depends on nothing of the service.

use crate::saga::SagaRecord;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::broadcast;

/// How many saga outcomes a client may fall behind before it skips the oldest.
const OUTCOMES: usize = 64;

/// One saga outcome as the live page shows it.
#[derive(Clone, Debug, Serialize)]
pub struct SagaNote {
    pub saga_id: String,
    /// The record's status after this step: `completed`, `degraded`, `compensated`, …
    pub status: &'static str,
    /// `request` or `redrive`.
    pub by: &'static str,
    /// The fallback's reason, when the next hop was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// The service's saga outcomes, on a bounded broadcast channel.
pub struct Live {
    outcomes: broadcast::Sender<SagaNote>,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            outcomes: broadcast::Sender::new(OUTCOMES),
        }
    }
}

impl Live {
    /// Publishes the outcome of one step of `rec`; builds nothing when no page is open.
    pub fn saga(&self, rec: &SagaRecord, by: &'static str) {
        self.publish(self.note(rec, by));
    }

    /// The outcome of `rec` as the page shows it, or `None` when no page is open: built before
    /// the record is handed away, published once its write is known to have won.
    pub fn note(&self, rec: &SagaRecord, by: &'static str) -> Option<SagaNote> {
        (self.outcomes.receiver_count() > 0).then(|| SagaNote {
            saga_id: rec.saga_id.to_string(),
            status: rec.status.as_str(),
            by,
            reason: rec.fallback.as_ref().map(|f| f.reason.clone()),
            at: Utc::now(),
        })
    }

    /// Sends a note built by [`note`](Self::note).
    pub fn publish(&self, note: Option<SagaNote>) {
        if let Some(note) = note {
            // An error only means the last receiver left meanwhile.
            let _ = self.outcomes.send(note);
        }
    }

    /// A receiver for one page's stream.
    pub(in crate::service) fn subscribe(&self) -> broadcast::Receiver<SagaNote> {
        self.outcomes.subscribe()
    }

    /// How many clients receive the outcomes (open pages).
    pub fn watchers(&self) -> usize {
        self.outcomes.receiver_count()
    }
}
