//! The edge against a client that means harm, on a real socket: slowloris, idle keep-alive,
//! more connections than the cap, invented methods and paths that would grow the metrics.
//! Each test starts one service as a process of its own (`Alone`), so its limits, metrics and
//! memory are its own.

use std::time::Duration;
use testkit::process::Alone;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// Reads until the peer closes (or `within` passes): what was read, and whether it closed.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let until = Instant::now() + within;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&seen).into(), true),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&seen).into(), false),
        }
    }
}

#[tokio::test]
async fn a_slowloris_client_is_disconnected_after_the_header_timeout() {
    let svc = Alone::start("shipment", &[("HEADER_TIMEOUT_MS", "200")]).await;
    let mut conn = TcpStream::connect(svc.addr).await.expect("connect");
    conn.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("the request line goes out");
    // One header line every 50 ms: the head is never complete.
    let started = Instant::now();
    let mut closed_after = None;
    for i in 0..60 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let line = format!("X-Drip-{i}: a\r\n");
        let wrote = conn.write_all(line.as_bytes()).await;
        let mut probe = [0u8; 1];
        let eof = matches!(
            timeout(Duration::from_millis(1), conn.read(&mut probe)).await,
            Ok(Ok(0)) | Ok(Err(_))
        );
        if wrote.is_err() || eof {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let closed_after = closed_after.expect("a 3 s drip of headers was never cut off");
    assert!(
        closed_after < Duration::from_millis(1500),
        "closed only after {closed_after:?}"
    );
    // The service is fine, and answers a client that sends its head at once.
    let r = reqwest::get(format!("{}/health", svc.url()))
        .await
        .expect("GET /health");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let svc = Alone::start("shipment", &[("HEADER_TIMEOUT_MS", "200")]).await;
    let mut conn = TcpStream::connect(svc.addr).await.expect("connect");
    conn.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    let mut buf = [0u8; 1024];
    let n = conn.read(&mut buf).await.expect("the answer");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Keep-alive: the connection stays open for the next request, but not forever.
    let (_, closed) = read_until_closed(&mut conn, Duration::from_secs(2)).await;
    assert!(closed, "an idle keep-alive connection was held for 2 s");
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_unserved_until_one_frees() {
    let svc = Alone::start(
        "shipment",
        &[("MAX_CONNECTIONS", "4"), ("HEADER_TIMEOUT_MS", "10000")],
    )
    .await;
    // Four connections that are being served (each answered once and kept alive). The probe
    // connection `Alone::start` used may hold a slot for a moment after it closed: a held
    // connection refused because of it is simply opened again.
    let mut held = Vec::new();
    for _ in 0..100 {
        if held.len() == 4 {
            break;
        }
        let mut c = TcpStream::connect(svc.addr).await.expect("connect");
        let _ = c
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let mut buf = [0u8; 1024];
        match timeout(Duration::from_secs(2), c.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => held.push(c),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert_eq!(held.len(), 4, "four connections are served");

    let mut extra = TcpStream::connect(svc.addr)
        .await
        .expect("the kernel accepts");
    let _ = extra
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let (answer, closed) = read_until_closed(&mut extra, Duration::from_secs(2)).await;
    assert!(
        closed && answer.is_empty(),
        "the fifth connection was served: closed={closed} {answer:?}"
    );

    // One held connection goes away: a new one is served again.
    drop(held.pop());
    let mut served = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut c = TcpStream::connect(svc.addr).await.expect("connect");
        let _ = c
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        let (answer, _) = read_until_closed(&mut c, Duration::from_secs(2)).await;
        if !answer.is_empty() {
            served = Some(answer);
            break;
        }
    }
    let served = served.expect("a freed slot is served again");
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    let metrics = reqwest::Client::new()
        .get(format!("{}/metrics", svc.url()))
        .header("connection", "close")
        .send()
        .await;
    // The cap may still be full of our held connections: /metrics is best effort here.
    if let Ok(m) = metrics {
        let text = m.text().await.unwrap_or_default();
        assert!(
            text.is_empty() || text.contains("http_connections_refused_total"),
            "{text}"
        );
    }
}

/// The label values of `http_request_duration_seconds` in a Prometheus text page.
fn label_values(metrics: &str, label: &str) -> Vec<String> {
    let key = format!("{label}=\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("http_request_duration_seconds_count{"))
        .filter_map(|l| {
            let start = l.find(&key)? + key.len();
            let end = l[start..].find('"')? + start;
            Some(l[start..end].to_string())
        })
        .collect()
}

#[tokio::test]
async fn invented_methods_and_paths_add_no_metric_series() {
    let svc = Alone::start("shipment", &[]).await;
    let client = reqwest::Client::new();
    for i in 0..40 {
        let method = reqwest::Method::from_bytes(format!("BREW{i}").as_bytes()).expect("a token");
        let _ = client
            .request(method, format!("{}/pot-{i}/{i}", svc.url()))
            .send()
            .await
            .expect("an answer");
        let _ = client
            .get(format!("{}/shipments/{i}-not-a-uuid", svc.url()))
            .send()
            .await
            .expect("an answer");
    }
    let text = client
        .get(format!("{}/metrics", svc.url()))
        .send()
        .await
        .expect("/metrics")
        .text()
        .await
        .expect("text");
    let methods = label_values(&text, "method");
    let allowed = [
        "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE", "other",
    ];
    assert!(!methods.is_empty(), "no request series at all:\n{text}");
    for m in &methods {
        assert!(allowed.contains(&m.as_str()), "method label {m:?}");
    }
    for route in label_values(&text, "route") {
        assert!(
            !route.contains("pot-") && !route.contains("not-a-uuid"),
            "route label {route:?} came from the request"
        );
    }
    let series = text
        .lines()
        .filter(|l| l.starts_with("http_request_duration_seconds_count{"))
        .count();
    assert!(series <= 6, "{series} series from 80 requests:\n{text}");
}

#[tokio::test]
async fn an_open_chaos_api_is_warned_about_and_a_blank_token_is_no_token() {
    for token in [None, Some("   ")] {
        let mut env = vec![("CHAOS_ENABLED", "true")];
        env.extend(token.map(|t| ("CHAOS_TOKEN", t)));
        let svc = Alone::start("shipment", &env).await;
        let log = svc.proc.log();
        assert!(
            log.contains("CHAOS_ENABLED without CHAOS_TOKEN"),
            "token {token:?}: no warning in\n{log}"
        );
    }
    let svc = Alone::start(
        "shipment",
        &[("CHAOS_ENABLED", "true"), ("CHAOS_TOKEN", " s3cret ")],
    )
    .await;
    assert!(!svc.proc.log().contains("CHAOS_ENABLED without CHAOS_TOKEN"));
    let client = reqwest::Client::new();
    let get = |auth: &'static str| {
        client
            .get(format!("{}/chaos", svc.url()))
            .header("authorization", auth)
            .send()
    };
    assert_eq!(get("Bearer s3cret").await.expect("GET").status(), 200);
    assert_eq!(get("Bearer s3cre").await.expect("GET").status(), 401);
    assert_eq!(get("Bearer ").await.expect("GET").status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_request_that_runs_longer_than_ten_seconds() {
    // A next hop that accepts and never answers: payment's request waits out its hop timeout
    // (11.5 s), longer than the old fixed 10 s grace, shorter than the request cap.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let next = format!("http://{}/create", silent.local_addr().expect("addr"));
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            held.push(c);
        }
    });
    let mut svc = Alone::start(
        "payment",
        &[
            ("CHAIN_SVC", next.as_str()),
            ("REQUEST_TIMEOUT_MS", "13000"),
            ("BREAKER_TIMEOUT_MS", "11500"),
            ("RETRY_MAX_ATTEMPTS", "1"),
        ],
    )
    .await;
    let url = format!("{}/create", svc.url());
    let request = tokio::spawn(async move {
        let body = serde_json::json!({
            "amount": 0, "id": "1", "shipment": {"id": "1", "directions": "home"}
        });
        let r = reqwest::Client::new().post(url).json(&body).send().await?;
        let status = r.status().as_u16();
        Ok::<_, reqwest::Error>((status, r.text().await?))
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let exit = tokio::task::block_in_place(|| svc.proc.terminate(Duration::from_secs(25)));
    let (status, text) = request
        .await
        .expect("request task")
        .expect("the request in flight is answered, not cut by the exit");
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"degraded\""), "{text}");
    let exit = exit.expect("exits within the grace");
    assert!(exit.success(), "{exit:?}: {}", svc.proc.log());
    assert!(
        !svc.proc.log().contains("still in flight"),
        "{}",
        svc.proc.log()
    );
    hold.abort();
}
