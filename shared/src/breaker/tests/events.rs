//! The breaker's log events: each under its literal name, at its level.

use tokio::time::{advance, sleep};

use super::*;

/// Collects `(level, event, breaker)` of every tracing event on this thread.
mod capture {
    use std::fmt;
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Level, Metadata, Subscriber};

    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Seen {
        pub level: Level,
        pub event: String,
        pub breaker: String,
    }

    #[derive(Clone, Default)]
    pub struct Capture(pub Arc<Mutex<Vec<Seen>>>);

    #[derive(Default)]
    struct Fields {
        event: String,
        breaker: String,
    }

    impl Visit for Fields {
        fn record_str(&mut self, field: &Field, value: &str) {
            self.record_debug(field, &format_args!("{value}"));
        }
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            match field.name() {
                "event" => self.event = format!("{value:?}"),
                "breaker" => self.breaker = format!("{value:?}"),
                _ => {}
            }
        }
    }

    impl Subscriber for Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut fields = Fields::default();
            event.record(&mut fields);
            if !fields.event.is_empty() {
                self.0.lock().expect("capture lock").push(Seen {
                    level: *event.metadata().level(),
                    event: fields.event,
                    breaker: fields.breaker,
                });
            }
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }
}

/// Goes through every event once: success, failure, timeout + open, reject, fallback,
/// halfOpen + success + close.
async fn every_event() {
    let b = breaker(BreakerConfig {
        min_calls: 2,
        ..config()
    });
    ok(&b).await.expect("success");
    let _ = fail(&b).await; // 1 of 2: 50 %, stays closed
    let _ = b
        .call(None, || async {
            sleep(Duration::from_secs(1)).await;
            Ok::<u32, Status>(1)
        })
        .await; // timeout: 2 of 3 failed, opens
    let _ = ok(&b).await; // reject
    b.record_fallback("open");
    advance(Duration::from_secs(10)).await;
    ok(&b).await.expect("trial"); // halfOpen, success, close
}

#[tokio::test(start_paused = true)]
async fn events_are_emitted_with_literal_names() {
    use tracing::Level;

    let capture = capture::Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    // Tests on other threads may have registered these callsites while only the no-op
    // dispatcher existed; once all are registered, recompute their interest with ours.
    every_event().await;
    tracing::callsite::rebuild_interest_cache();
    capture.0.lock().expect("capture lock").clear();

    every_event().await;
    let seen = capture.0.lock().expect("capture lock").clone();
    let names: Vec<&str> = seen.iter().map(|s| s.event.as_str()).collect();
    assert_eq!(
        names,
        [
            "success", "failure", "timeout", "open", "reject", "fallback", "halfOpen", "success",
            "close"
        ]
    );
    assert!(seen.iter().all(|s| s.breaker == "payment->shipment"));
    let level = |name: &str| {
        seen.iter()
            .find(|s| s.event == name)
            .map(|s| s.level)
            .expect("event seen")
    };
    // State changes stand out; per-call lines stay out of an `info` log.
    for name in ["open", "halfOpen", "close"] {
        assert_eq!(level(name), Level::WARN, "{name}");
    }
    for name in ["success", "reject", "fallback", "failure", "timeout"] {
        assert_eq!(level(name), Level::DEBUG, "{name}");
    }
}
