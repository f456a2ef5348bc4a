//! The event log the tests read: a tracing layer that keeps the `event`, `breaker` and level of
//! every event that names an `event`, installed once as this process's global subscriber.
//!
//! One subscriber per process is all tracing allows, so both test modules share this one and
//! filter what it kept by breaker name.

use std::fmt;
use std::sync::{Mutex, OnceLock, PoisonError};
use tracing::field::{Field, Visit};
use tracing::Level;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// One captured event.
#[derive(Clone, Debug)]
pub struct Seen {
    pub level: Level,
    pub event: String,
    /// Empty when the event names no breaker.
    pub breaker: String,
}

static EVENTS: Mutex<Vec<Seen>> = Mutex::new(Vec::new());

/// Records every tracing event that has an `event` field.
struct Capture;

#[derive(Default)]
struct Fields {
    event: Option<String>,
    breaker: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%name` records without quotes, `?name` with; keep the bare text either way.
        let v = format!("{value:?}").trim_matches('"').to_string();
        match field.name() {
            "event" => self.event = Some(v),
            "breaker" => self.breaker = v,
            _ => {}
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        if let Some(name) = fields.event {
            EVENTS
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Seen {
                    level: *event.metadata().level(),
                    event: name,
                    breaker: fields.breaker,
                });
        }
    }
}

/// Installs the capturing subscriber for the whole test binary (tests tell their events apart
/// by breaker name).
pub fn install() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Capture))
            .expect("no other global subscriber in this test binary");
    });
}

/// The events logged by breaker `name`, in order.
pub fn events(name: &str) -> Vec<Seen> {
    EVENTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|s| s.breaker == name)
        .cloned()
        .collect()
}
