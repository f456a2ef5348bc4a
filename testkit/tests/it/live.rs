//! The live page's stream (`GET /live/events`): breaker changes arrive as they happen, and a
//! client that goes away is dropped with its receivers.

use serde_json::{json, Value};
use std::time::Duration;
use testkit::{eventually, seed, Svc, TestStack};
use tokio::sync::mpsc;

/// One Server-Sent Event: its name and its JSON body.
#[derive(Debug)]
struct Sse {
    event: String,
    data: Value,
}

/// Reads `res` as an SSE stream into a channel until the connection or the receiver ends.
async fn read_events(mut res: reqwest::Response, tx: mpsc::UnboundedSender<Sse>) {
    let mut buf = String::new();
    while let Ok(Some(chunk)) = res.chunk().await {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut event, mut data) = (String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                }
            }
            if event.is_empty() {
                continue; // a keep-alive comment
            }
            let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
            if tx.send(Sse { event, data }).is_err() {
                return;
            }
        }
    }
}

/// Posts orders until an event `pick` accepts arrives; returns it. Orders keep the breaker
/// busy: it only moves when it is called.
async fn order_until(
    s: &TestStack,
    rx: &mut mpsc::UnboundedReceiver<Sse>,
    seen: &mut Vec<Sse>,
    what: &str,
    pick: impl Fn(&Sse) -> bool,
) -> Value {
    for _ in 0..100 {
        let r = s.post(Svc::Order, "/create", &seed()).await;
        assert_eq!(r.status, 200, "{}", r.text);
        while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
            let hit = pick(&ev);
            let data = ev.data.clone();
            seen.push(ev);
            if hit {
                return data;
            }
        }
    }
    panic!("{what}: not seen after 100 orders; events: {seen:?}");
}

/// The stream's next event, within 5 s (`what` says which one the test waits for).
async fn next_event(rx: &mut mpsc::UnboundedReceiver<Sse>, what: &str) -> Sse {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}"))
        .expect("the stream is open")
}

fn note(ev: &Sse, name: &str) -> bool {
    ev.event == "note" && ev.data["event"] == name
}

#[tokio::test]
async fn the_stream_follows_the_breaker_open_and_closed_and_drops_a_gone_client() {
    let s = TestStack::embedded(
        &[
            ("CHAOS_ENABLED", "true"),
            ("BREAKER_MIN_CALLS", "2"),
            ("BREAKER_RESET_MS", "300"),
        ],
        &[],
    )
    .await;
    let payment = &s.stack.as_ref().expect("the stack is running").payment;
    let breaker = payment
        .state
        .hop
        .as_ref()
        .expect("payment has a next hop")
        .breaker();
    assert_eq!(breaker.watchers(), 0);

    let page = s.get(Svc::Payment, "/live").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        page.text.contains("live/events"),
        "the page reads the stream"
    );

    let res = s
        .http
        .get(format!("{}/live/events", s.url(Svc::Payment)))
        .send()
        .await
        .expect("GET /live/events");
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let reader = tokio::spawn(read_events(res, tx));

    // On connect: a snapshot, closed.
    let first = next_event(&mut rx, "a first event within 5 s").await;
    assert_eq!(first.event, "breaker", "{first:?}");
    assert_eq!(first.data["breaker"]["name"], "payment->shipment");
    assert_eq!(first.data["breaker"]["state"], "closed");
    assert_eq!(breaker.watchers(), 1, "one client, one receiver");
    assert_eq!(payment.state.live.watchers(), 1);

    // Shipment fails every call: the breaker opens, and the page hears it at once, followed by
    // a snapshot that says open.
    let put = s
        .put_chaos(Svc::Shipment, json!({"error_rate": 1, "status": 502}), None)
        .await;
    assert_eq!(put.status, 200);
    let mut seen = Vec::new();
    let opened = order_until(&s, &mut rx, &mut seen, "note open", |e| note(e, "open")).await;
    assert_eq!(opened["breaker"], "payment->shipment");
    let next = next_event(&mut rx, "a snapshot right after the note").await;
    assert_eq!(next.event, "breaker", "{next:?}");
    assert_eq!(next.data["breaker"]["state"], "open", "{next:?}");
    assert!(
        seen.iter().any(|e| note(e, "failure")),
        "the failures that opened it were published: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|e| e.event == "saga" && e.data["status"] == "degraded"),
        "payment's degraded outcomes were published: {seen:?}"
    );

    // Healthy again: after the reset, a trial closes it.
    s.clear_chaos(Svc::Shipment).await;
    order_until(&s, &mut rx, &mut seen, "note close", |e| note(e, "close")).await;
    let transitions: Vec<&str> = seen
        .iter()
        .filter(|e| e.event == "note")
        .filter_map(|e| e.data["event"].as_str())
        .filter(|e| ["open", "halfOpen", "close"].contains(e))
        .collect();
    assert_eq!(
        transitions.last_chunk::<2>(),
        Some(&["halfOpen", "close"]),
        "{transitions:?}"
    );

    // The client goes away: at the stream's next write (the 1 s tick) it is dropped, and its
    // receivers with it.
    reader.abort();
    drop(rx);
    eventually(
        "the gone client's receivers dropped",
        Duration::from_secs(10),
        || async { (breaker.watchers() == 0 && payment.state.live.watchers() == 0).then_some(()) },
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn a_service_without_a_next_hop_streams_snapshots_without_a_breaker() {
    let s = TestStack::embedded(&[], &[]).await;
    let res = s
        .http
        .get(format!("{}/live/events", s.url(Svc::Shipment)))
        .send()
        .await
        .expect("GET /live/events");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let reader = tokio::spawn(read_events(res, tx));
    let first = next_event(&mut rx, "a first event within 5 s").await;
    assert_eq!(first.event, "breaker");
    assert_eq!(first.data["service"], "shipment");
    assert_eq!(first.data["breaker"], Value::Null);
    // Stopping the service ends open streams: graceful shutdown does not wait on them.
    tokio::time::timeout(Duration::from_secs(10), s.stop())
        .await
        .expect("the stack stops with a stream open");
    tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("the stream ended with the service")
        .expect("the reader did not panic");
}
