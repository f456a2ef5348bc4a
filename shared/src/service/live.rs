//! The live page: `GET /live` (one HTML page, no build step) and `GET /live/events`, the
//! Server-Sent Events stream it reads.
//!
//! The stream says three things, each as a named SSE event with a JSON body:
//! - `breaker`: the same body as `GET /breaker` (state, window counts, totals, config), sent on
//!   connect, right after every state change (`open`, `halfOpen`, `close`), and once a second
//!   (window counts change with every call, and calls that succeed are not published, see
//!   `breaker/events.rs`). Not after every event: an open breaker rejects at the request rate,
//!   and a snapshot per reject per client would cost more than all the notes;
//! - `note`: one breaker event (`open`, `halfOpen`, `close`, `reject`, `fallback`, `failure`,
//!   `timeout`) with its time, from the breaker's bounded broadcast channel;
//! - `saga`: one saga outcome of this service (a request's or the re-driver's), from the
//!   service's own bounded broadcast channel ([`Live`]);
//! - `lagged`: how many notes or outcomes this client skipped because it read too slowly.
//!
//! Why broadcast channels: a request or a breaker call only ever does a non-blocking `send`
//! (nothing at all when no page is open), so a slow client costs the request path nothing; it
//! skips what it missed instead (`RecvError::Lagged`). Events reach a client in batches, at
//! most one write every 200 ms, so its cost does not grow with the request rate. A client that disconnects is dropped the
//! next time its stream writes (within a second, at the next `breaker` tick), and with it its
//! receivers. The stream ends when the service stops, so graceful shutdown never waits on it.
//!
//! The service's side of it, what a request publishes, is `live/outcomes.rs`.

pub(super) mod outcomes;

use super::ops::breaker_body;
use super::state::AppState;
use crate::breaker::Note;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::Html;

use futures::Stream;
use outcomes::SagaNote;
use serde::Serialize;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// The page, served as is.
const PAGE: &str = include_str!("live.html");

/// How often the `breaker` snapshot is sent when nothing else happens.
const TICK: Duration = Duration::from_secs(1);

/// How long events are gathered before they are written together.
const BATCH: Duration = Duration::from_millis(200);

/// At most this many are gathered (a busy service's outcomes come faster than any page reads).
const BATCH_MAX: usize = 128;

pub(super) async fn page() -> Html<&'static str> {
    Html(PAGE)
}

pub(super) async fn events(
    State(state): State<Arc<AppState>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let feed = Feed {
        notes: state.hop.as_ref().map(|h| h.breaker().subscribe()),
        outcomes: state.live.subscribe(),
        tick,
        queue: VecDeque::new(),
        state,
    };
    let stream = futures::stream::unfold(feed, |mut feed| async move {
        let event = feed.next().await?;
        Some((Ok(event), feed))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// One client's stream: its receivers, its tick, and the events gathered for its next write.
struct Feed {
    notes: Option<broadcast::Receiver<Note>>,
    outcomes: broadcast::Receiver<SagaNote>,
    tick: Interval,
    /// Gathered and not yet handed to the connection.
    queue: VecDeque<Event>,
    state: Arc<AppState>,
}

impl Feed {
    /// The next event to send; `None` ends the stream (the service is stopping).
    ///
    /// Events are gathered for [`BATCH`] after the first one and then handed over back to back,
    /// which the connection writes together: a page watching a busy service costs a few writes
    /// and wake-ups a second, not one per request.
    async fn next(&mut self) -> Option<Event> {
        if let Some(event) = self.queue.pop_front() {
            return Some(event);
        }
        self.gather(None).await?;
        let until = Instant::now() + BATCH;
        while self.queue.len() < BATCH_MAX && self.gather(Some(until)).await? {}
        self.queue.pop_front()
    }

    /// Waits for one thing to say and queues it: `Some(true)`; `Some(false)` when `until`
    /// passed first; `None` when the service is stopping.
    async fn gather(&mut self, until: Option<Instant>) -> Option<bool> {
        let deadline = async {
            match until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                biased;
                () = self.state.shutdown.cancelled() => return None,
                () = &mut deadline => return Some(false),
                note = recv(&mut self.notes) => match note {
                    Ok(note) => {
                        let changed = matches!(note.event, "open" | "halfOpen" | "close");
                        self.queue.push_back(json_event("note", &note));
                        if changed {
                            // The snapshot that shows the change, taken right after it.
                            self.queue.push_back(self.snapshot());
                        }
                        return Some(true);
                    }
                    Err(RecvError::Lagged(n)) => {
                        self.queue.push_back(lagged("note", n));
                        return Some(true);
                    }
                    // The breaker is gone: only its service's end drops it.
                    Err(RecvError::Closed) => self.notes = None,
                },
                outcome = self.outcomes.recv() => {
                    match outcome {
                        Ok(outcome) => self.queue.push_back(json_event("saga", &outcome)),
                        Err(RecvError::Lagged(n)) => self.queue.push_back(lagged("saga", n)),
                        Err(RecvError::Closed) => return None,
                    }
                    return Some(true);
                }
                _ = self.tick.tick() => {
                    self.queue.push_back(self.snapshot());
                    return Some(true);
                }
            }
        }
    }

    fn snapshot(&self) -> Event {
        json_event("breaker", &breaker_body(&self.state))
    }
}

/// The next note, or never when the service has no breaker.
async fn recv(notes: &mut Option<broadcast::Receiver<Note>>) -> Result<Note, RecvError> {
    match notes {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn json_event(name: &'static str, body: &impl Serialize) -> Event {
    let data = serde_json::to_string(body).unwrap_or_else(|e| {
        serde_json::json!({ "error": format!("unserializable {name}: {e}") }).to_string()
    });
    Event::default().event(name).data(data)
}

fn lagged(what: &'static str, skipped: u64) -> Event {
    json_event(
        "lagged",
        &serde_json::json!({ "what": what, "skipped": skipped }),
    )
}
