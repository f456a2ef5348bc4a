//! Fuzzing the edge: whole HTTP requests, generated from a seed, written over raw TCP to a live
//! service for a bounded time.
//!
//! A request is built from parts that each go wrong on their own: the method (standard, an
//! invented token, bytes that are no token), the path (every route, a record id that is no
//! id, a long or non-UTF-8 path, a garbage `count`), the version, the headers (content type,
//! lengths that lie, duplicated or huge values, `Transfer-Encoding: chunked` with good or bad
//! chunks, idempotency keys and deadlines of every shape) and the body (the service's own part,
//! mutations of it, random bytes). It is then delivered whole, in slow pieces, or cut off
//! mid-way. What must hold, whatever was sent:
//!
//! - no 5xx but an honest 503 (overloaded, busy, database unavailable): never a 500 or a panic;
//! - the process is alive afterwards and answers `/health`;
//! - memory is flat: resident memory at the end within a bound of what it was once warm.
//!
//! Reproduce a run with `FUZZ_SEED=<seed printed>`; `FUZZ_SECS` sets how long it runs (20 s by
//! default, at most 60).

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::BTreeMap;
use std::time::Duration;
use testkit::process::Alone;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

const WORKERS: u64 = 6;

/// One generated request: its bytes, and how to deliver them.
struct Case {
    bytes: Vec<u8>,
    delivery: Delivery,
}

enum Delivery {
    Whole,
    /// In pieces of at most `chunk` bytes, `pause` apart.
    Slow {
        chunk: usize,
        pause: Duration,
    },
    /// Only the first `keep` bytes, then the write side is closed.
    Truncated {
        keep: usize,
    },
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn random_bytes(rng: &mut StdRng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.random::<u8>()).collect()
}

fn random_token(rng: &mut StdRng) -> String {
    const CHARS: &[u8] =
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~";
    let len = rng.random_range(1..24);
    (0..len).map(|_| *pick(rng, CHARS) as char).collect()
}

fn method(rng: &mut StdRng) -> Vec<u8> {
    match rng.random_range(0..10) {
        0..=3 => b"POST".to_vec(),
        4..=5 => b"GET".to_vec(),
        6 => pick(rng, &["PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE"])
            .as_bytes()
            .to_vec(),
        7 | 8 => random_token(rng).into_bytes(),
        _ => {
            let len = rng.random_range(1..12);
            random_bytes(rng, len)
        }
    }
}

fn path(rng: &mut StdRng) -> Vec<u8> {
    let uuid = uuid::Uuid::now_v7().to_string();
    let base = match rng.random_range(0..12) {
        0..=3 => "/create".to_string(),
        4 => "/compensate".to_string(),
        5 => pick(
            rng,
            &[
                "/",
                "/health",
                "/ready",
                "/metrics",
                "/breaker",
                "/openapi.json",
            ],
        )
        .to_string(),
        6 => format!("/shipments/{uuid}"),
        7 => format!("/shipments/{}", random_token(rng)),
        8 => format!("/{}", "a/".repeat(rng.random_range(1..3000))),
        9 => format!("/{}", random_token(rng)),
        10 => "*".to_string(),
        _ => return [b"/".as_slice(), &random_bytes(rng, 20)].concat(),
    };
    let query = match rng.random_range(0..5) {
        0 => "?count=1".to_string(),
        1 => format!("?count={}", random_token(rng)),
        2 => "?count=99999999999999999999".to_string(),
        3 => format!("?{}={}&count=-3", random_token(rng), random_token(rng)),
        _ => String::new(),
    };
    format!("{base}{query}").into_bytes()
}

fn body(rng: &mut StdRng) -> Vec<u8> {
    let good = r#"{"id":"1","directions":"home"}"#;
    match rng.random_range(0..9) {
        0..=2 => good.as_bytes().to_vec(),
        3 => {
            // A mutation of the good body: a byte flipped, dropped or doubled.
            let mut b = good.as_bytes().to_vec();
            let i = rng.random_range(0..b.len());
            match rng.random_range(0..3) {
                0 => b[i] = rng.random::<u8>(),
                1 => {
                    b.remove(i);
                }
                _ => b.insert(i, b[i]),
            }
            b
        }
        4 => format!(
            r#"{{"id":{},"directions":{}}}"#,
            pick(rng, &["1", "null", "[]", "{}", "\"x\"", "1e999"]),
            pick(rng, &["\"home\"", "7", "null", "\"\\ud800\""])
        )
        .into_bytes(),
        5 => format!(
            r#"{{"id":"1","directions":"{}"}}"#,
            "x".repeat(rng.random_range(0..100_000))
        )
        .into_bytes(),
        6 => "[".repeat(rng.random_range(1..5000)).into_bytes(),
        7 => Vec::new(),
        _ => {
            let len = rng.random_range(0..4096);
            random_bytes(rng, len)
        }
    }
}

/// `body` as chunked transfer coding, well-formed or not.
fn chunked(rng: &mut StdRng, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in body.chunks(rng.random_range(1..64)) {
        match rng.random_range(0..20) {
            0 => out.extend_from_slice(b"zz\r\n"),
            1 => out.extend_from_slice(format!("{:x}\r\n", piece.len() + 7).as_bytes()),
            2 => out.extend_from_slice(b"ffffffffffffffffff\r\n"),
            _ => out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes()),
        }
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    if rng.random_bool(0.9) {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    out
}

fn case(rng: &mut StdRng) -> Case {
    let mut req = method(rng);
    req.push(b' ');
    req.extend(path(rng));
    req.extend_from_slice(
        pick(
            rng,
            &[
                " HTTP/1.1\r\n",
                " HTTP/1.1\r\n",
                " HTTP/1.0\r\n",
                " HTTP/9.9\r\n",
                "\r\n",
            ],
        )
        .as_bytes(),
    );
    let mut headers: Vec<(String, Vec<u8>)> = vec![("Host".into(), b"fuzz".to_vec())];
    let content_type = match rng.random_range(0..6) {
        0..=2 => Some("application/json".to_string()),
        3 => Some("application/problem+json; charset=utf-8".into()),
        4 => Some(random_token(rng)),
        _ => None,
    };
    if let Some(ct) = content_type {
        headers.push(("Content-Type".into(), ct.into_bytes()));
    }
    if rng.random_bool(0.3) {
        let key = match rng.random_range(0..4) {
            0 => "x".repeat(rng.random_range(150..400)),
            1 => String::new(),
            _ => random_token(rng),
        };
        headers.push(("Idempotency-Key".into(), key.into_bytes()));
    }
    if rng.random_bool(0.3) {
        let deadline = match rng.random_range(0..5) {
            0 => "0".to_string(),
            1 => rng.random_range(0..100u32).to_string(),
            2 => rng.random_range(100..5000u32).to_string(),
            3 => "9999999999".to_string(),
            _ => random_token(rng),
        };
        headers.push(("X-Deadline-Ms".into(), deadline.into_bytes()));
    }
    for _ in 0..rng.random_range(0..4) {
        let value = if rng.random_bool(0.1) {
            vec![b'v'; rng.random_range(1000..20_000)]
        } else {
            random_token(rng).into_bytes()
        };
        headers.push((random_token(rng), value));
    }
    if rng.random_bool(0.05) {
        // More headers than the limit.
        for i in 0..100 {
            headers.push((format!("X-Many-{i}"), b"1".to_vec()));
        }
    }
    if rng.random_bool(0.7) {
        headers.push(("Connection".into(), b"close".to_vec()));
    }
    let payload = body(rng);
    let encoded = match rng.random_range(0..10) {
        0..=5 => {
            let len = match rng.random_range(0..12) {
                0 => payload.len() + rng.random_range(1..50),
                1 => payload.len().saturating_sub(rng.random_range(1..10)),
                2 => 99_999_999_999,
                _ => payload.len(),
            };
            headers.push(("Content-Length".into(), len.to_string().into_bytes()));
            if rng.random_bool(0.05) {
                headers.push(("Content-Length".into(), b"3".to_vec()));
            }
            payload
        }
        6..=7 => {
            headers.push(("Transfer-Encoding".into(), b"chunked".to_vec()));
            if rng.random_bool(0.1) {
                headers.push(("Content-Length".into(), b"5".to_vec()));
            }
            chunked(rng, &payload)
        }
        8 => {
            headers.push(("Content-Length".into(), b"-1".to_vec()));
            payload
        }
        _ => Vec::new(),
    };
    for (name, value) in headers {
        req.extend_from_slice(name.as_bytes());
        req.extend_from_slice(b": ");
        req.extend_from_slice(&value);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    req.extend(encoded);
    let delivery = match rng.random_range(0..10) {
        0 => Delivery::Slow {
            chunk: rng.random_range(1..200),
            pause: Duration::from_millis(rng.random_range(5..60)),
        },
        1 => Delivery::Truncated {
            keep: rng.random_range(0..req.len().max(1)),
        },
        _ => Delivery::Whole,
    };
    Case {
        bytes: req,
        delivery,
    }
}

/// Sends `case` on a fresh connection; the status of the first answer, if one came.
async fn send(addr: std::net::SocketAddr, case: &Case) -> Option<u16> {
    let mut conn = TcpStream::connect(addr).await.ok()?;
    let sent = async {
        match case.delivery {
            Delivery::Whole => conn.write_all(&case.bytes).await,
            Delivery::Slow { chunk, pause } => {
                // At most ~1.5 s of dripping: a slow client, not a hung test.
                let until = Instant::now() + Duration::from_millis(1500);
                for piece in case.bytes.chunks(chunk) {
                    conn.write_all(piece).await?;
                    if Instant::now() > until {
                        break;
                    }
                    tokio::time::sleep(pause).await;
                }
                Ok(())
            }
            Delivery::Truncated { keep } => {
                conn.write_all(&case.bytes[..keep.min(case.bytes.len())])
                    .await?;
                conn.shutdown().await
            }
        }
    };
    // A write may fail because the service already answered and closed: read what it said.
    let _ = sent.await;
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    let until = Instant::now() + Duration::from_secs(5);
    while seen.len() < 64 {
        let left = until.saturating_duration_since(Instant::now());
        match timeout(left, conn.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&seen);
    let status = text.strip_prefix("HTTP/1.")?.get(2..5)?;
    status.parse().ok()
}

#[tokio::test]
async fn generated_requests_over_raw_tcp_never_get_a_5xx_crash_or_leak() {
    let _machine = crate::beside_others().await;
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    let secs = std::env::var("FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(20)
        .clamp(1, 60);
    println!("fuzz seed {seed} for {secs} s (reproduce with FUZZ_SEED={seed})");

    let svc = Alone::start(
        "shipment",
        &[
            ("HEADER_TIMEOUT_MS", "500"),
            ("REQUEST_TIMEOUT_MS", "1000"),
            ("MAX_BODY_BYTES", "65536"),
            ("RUST_LOG", "warn"),
        ],
    )
    .await;
    let addr = svc.addr;
    let run = Duration::from_secs(secs);
    let warm = run / 4;
    let started = Instant::now();

    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed.wrapping_add(w));
                let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
                let mut bad: Vec<(u16, String)> = Vec::new();
                let mut unanswered = 0u64;
                while started.elapsed() < run {
                    let case = case(&mut rng);
                    match send(addr, &case).await {
                        Some(status) => {
                            *statuses.entry(status).or_default() += 1;
                            if status >= 500 && status != 503 && bad.len() < 5 {
                                let head = case.bytes.iter().take(300).copied().collect::<Vec<_>>();
                                bad.push((status, String::from_utf8_lossy(&head).into()));
                            }
                        }
                        None => unanswered += 1,
                    }
                }
                (statuses, bad, unanswered)
            })
        })
        .collect();

    tokio::time::sleep(warm).await;
    let rss_warm = svc.rss_kib();

    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut bad = Vec::new();
    let mut unanswered = 0;
    for w in workers {
        let (s, b, u) = w.await.expect("a fuzz worker");
        for (k, v) in s {
            *statuses.entry(k).or_default() += v;
        }
        bad.extend(b);
        unanswered += u;
    }
    let rss_end = svc.rss_kib();
    let total: u64 = statuses.values().sum::<u64>() + unanswered;
    println!(
        "fuzz: {total} requests, statuses {statuses:?}, {unanswered} closed without an answer, \
         RSS {rss_warm:?} KiB once warm, {rss_end:?} KiB at the end"
    );

    assert!(
        bad.is_empty(),
        "seed {seed}: 5xx other than 503 for:\n{bad:#?}"
    );
    assert!(
        statuses.values().sum::<u64>() > 100,
        "seed {seed}: too few answers to mean anything: {statuses:?}"
    );
    let mut svc = svc;
    assert!(
        svc.proc.alive(),
        "seed {seed}: the service died:\n{}",
        svc.proc.log()
    );
    let health = reqwest::get(format!("{}/health", svc.url()))
        .await
        .expect("GET /health after the fuzz");
    assert_eq!(health.status(), 200, "seed {seed}");
    assert!(
        !svc.proc.log().contains("panicked"),
        "seed {seed}: a panic was logged:\n{}",
        svc.proc.log()
    );
    if let (Some(warm), Some(end)) = (rss_warm, rss_end) {
        assert!(
            end <= warm + 24 * 1024,
            "seed {seed}: RSS grew from {warm} KiB once warm to {end} KiB"
        );
    }
}
