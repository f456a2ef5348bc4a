//! A live breaker cycle — open → reject → halfOpen → close — seen from outside: the answers
//! order gives, `GET /breaker`, and the structured log events. Its own test binary, so the
//! event log it captures holds only this scenario's breaker.

use std::sync::Mutex;
use std::time::Duration;
use testkit::{mongo_stack_or_skip, seed, Svc};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

static EVENTS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Records the `breaker` and `event` fields of every tracing event that has both.
struct Capture;

#[derive(Default)]
struct Fields {
    breaker: Option<String>,
    event: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "breaker" => self.breaker = Some(value.to_string()),
            "event" => self.event = Some(value.to_string()),
            _ => {}
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let v = format!("{value:?}").trim_matches('"').to_string();
        match field.name() {
            "breaker" => self.breaker = Some(v),
            "event" => self.event = Some(v),
            _ => {}
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        if let (Some(b), Some(e)) = (f.breaker, f.event) {
            if let Ok(mut v) = EVENTS.lock() {
                v.push((b, e));
            }
        }
    }
}

fn events_of(breaker: &str) -> Vec<String> {
    EVENTS
        .lock()
        .map(|v| {
            v.iter()
                .filter(|(b, _)| b == breaker)
                .map(|(_, e)| e.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// `needles` appear in `hay` in this order (not necessarily next to each other).
fn in_order(hay: &[String], needles: &[&str]) -> bool {
    let mut it = hay.iter();
    needles.iter().all(|n| it.any(|h| h == n))
}

#[tokio::test]
async fn breaker_opens_under_injected_errors_and_closes_after_reset_once_healthy() {
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::DEBUG)
        .with(Capture);
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber here");

    let mut s = mongo_stack_or_skip!(
        &[
            ("ERR_RATE", "1"),
            ("BREAKER_MIN_CALLS", "3"),
            ("BREAKER_RESET_MS", "400"),
        ],
        &["shipment"]
    );
    // Three failures in the window: payment's breaker to shipment opens.
    for _ in 0..3 {
        let r = s.post(Svc::Order, "/create", &seed()).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(
            r.json["next"]["fallback"]["reason"], "http 502",
            "{}",
            r.text
        );
    }
    let b = s.get(Svc::Payment, "/breaker").await;
    assert_eq!(b.json["breaker"]["state"], "open", "{}", b.text);

    // Open: order still answers 200 at once, and payment says why it skipped shipment.
    let shipments_before = s.count(Svc::Shipment).await;
    for _ in 0..3 {
        let r = s.post(Svc::Order, "/create", &seed()).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json["status"], "degraded");
        assert_eq!(r.json["next"]["fallback"]["reason"], "open", "{}", r.text);
    }
    assert_eq!(
        s.count(Svc::Shipment).await,
        shipments_before,
        "an open breaker must not call the hop"
    );

    // Shipment healthy again; after the reset the trial call goes through and closes it.
    s.restart_shipment(false).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = s.post(Svc::Order, "/create", &seed()).await;
    assert_eq!(r.json["status"], "completed", "{}", r.text);
    let b = s.get(Svc::Payment, "/breaker").await;
    assert_eq!(b.json["breaker"]["state"], "closed", "{}", b.text);

    let seen = events_of("payment->shipment");
    assert!(
        in_order(
            &seen,
            &["failure", "open", "reject", "fallback", "halfOpen", "success", "close"]
        ),
        "events: {seen:?}"
    );
    s.stop().await;
}
