//! Nothing accepted is lost, nothing is duplicated, everything finishes — under SIGKILL.
//!
//! The three service binaries run as real processes against a FerretDB of the test's own.
//! Clients send sagas at a steady rate, each under its own `Idempotency-Key`, and retry (same
//! key) until they get an answer, as a well-behaved client does. Meanwhile every service is
//! SIGKILLed and restarted several times and the database is killed and restarted once. When
//! the load is over and the services are back, the re-drivers must bring every record to a
//! terminal state, and `saga verify` must find no violation: every acknowledged order exists
//! under its key with the id the client was given, every completed order has its one payment
//! and one shipment, every compensated one is undone all the way down.
//!
//! `CRASH_SAGAS=1000` runs the longer variant (default 300).

use serde_json::json;
use shared::saga::Status;
use shared::store::{MongoStore, Store};
use std::collections::HashMap;
use std::time::Duration;
use testkit::ferretdb::FerretDb;
use testkit::process::{free_port, wait_ready, Proc};
use tokio::time::Instant;

pub(crate) const NAMES: [&str; 3] = ["order", "payment", "shipment"];

/// The three services as processes, each restartable with the environment it first had (the
/// fault matrix in `faults` drives them too).
pub(crate) struct Services {
    pub(crate) procs: Vec<Option<Proc>>,
    pub(crate) envs: Vec<Vec<(String, String)>>,
    pub(crate) ports: Vec<u16>,
}

impl Services {
    pub(crate) fn new(db_uri: &str, db: &str) -> Self {
        let ports: Vec<u16> = NAMES.iter().map(|_| free_port()).collect();
        let envs = NAMES
            .iter()
            .enumerate()
            .map(|(i, _)| {
                let mut env: Vec<(String, String)> = [
                    ("HOST", "127.0.0.1".to_string()),
                    ("PORT", ports[i].to_string()),
                    ("MONGO_URL", db_uri.to_string()),
                    ("MONGO_DB", db.to_string()),
                    // FerretDB on SQLite, three debug builds and the test on two cores: slow
                    // but not dead, so generous timeouts; this test is about losing nothing.
                    ("MONGO_TIMEOUT_MS", "3000".into()),
                    ("REQUEST_TIMEOUT_MS", "5000".into()),
                    ("BREAKER_TIMEOUT_MS", "1500".into()),
                    ("SAGA_BACKOFF_BASE_MS", "200".into()),
                    ("SAGA_BACKOFF_CAP_MS", "2000".into()),
                    ("SAGA_POLL_MS", "500".into()),
                    ("SAGA_LEASE_MS", "3000".into()),
                    ("SAGA_MAX_ATTEMPTS", "40".into()),
                    ("BREAKER_RESET_MS", "1000".into()),
                    ("LOG_FORMAT", "json".into()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
                if let Some(next) = ports.get(i + 1) {
                    env.push((
                        "CHAIN_SVC".into(),
                        format!("http://127.0.0.1:{next}/create"),
                    ));
                }
                env
            })
            .collect();
        Self {
            procs: NAMES.iter().map(|_| None).collect(),
            envs,
            ports,
        }
    }

    pub(crate) fn start(&mut self, i: usize) {
        self.procs[i] = Some(Proc::spawn(NAMES[i], &self.envs[i]).expect("spawn a service"));
    }

    pub(crate) fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.procs[i].take() {
            p.kill();
        }
    }

    pub(crate) async fn all_ready(&mut self) {
        for (i, name) in NAMES.iter().enumerate() {
            if self.procs[i].as_mut().is_none_or(|p| !p.alive()) {
                self.start(i);
            }
            let url = format!("http://127.0.0.1:{}/ready", self.ports[i]);
            let log = self.procs[i].as_ref().map(|p| p.log()).unwrap_or_default();
            assert!(
                wait_ready(&url, Duration::from_secs(180)).await,
                "{name} never got ready: {log}"
            );
        }
    }
}

/// A small xorshift: the kill schedule is random, but reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.next() % (to - from + 1))
    }
}

/// Sends one saga under `key` until it is answered with a 2xx (or `give_up` passes).
async fn client(
    http: reqwest::Client,
    url: String,
    key: String,
    give_up: Instant,
) -> Option<String> {
    let body = testkit::seed();
    while Instant::now() < give_up {
        let sent = http
            .post(&url)
            .header("Idempotency-Key", &key)
            .timeout(Duration::from_secs(5))
            .json(&body)
            .send()
            .await;
        if let Ok(res) = sent {
            if res.status().is_success() {
                if let Ok(v) = res.json::<serde_json::Value>().await {
                    return v["saga_id"].as_str().map(str::to_owned);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkills_and_a_database_restart_lose_nothing_and_duplicate_nothing() {
    let _turn = crate::beside_others().await;
    let Some(mut db) = FerretDb::start().await else {
        return;
    };
    let sagas: usize = std::env::var("CRASH_SAGAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let rate = 5.0;
    let dbname = testkit::unique_db_name("crash");
    let mut svcs = Services::new(&db.uri(), &dbname);
    svcs.all_ready().await;

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    let mut rng = Rng(seed);
    let started = Instant::now();
    let load_time = Duration::from_secs_f64(sagas as f64 / rate);

    // The load: one task per saga, scheduled at a constant rate.
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{}/create", svcs.ports[0]);
    let give_up = started + load_time + Duration::from_secs(180);
    let mut clients = Vec::with_capacity(sagas);
    for i in 0..sagas {
        let at = started + Duration::from_secs_f64(i as f64 / rate);
        let (http, url, key) = (http.clone(), url.clone(), format!("{dbname}-{i}"));
        clients.push(tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let id = client(http, url, key.clone(), give_up).await;
            (key, id)
        }));
    }

    // The chaos: each service SIGKILLed at least 3 times in a shuffled order, the database once
    // half-way through, all spread over the load.
    let per_service = 3 + sagas / 300;
    let mut victims: Vec<usize> = (0..NAMES.len())
        .flat_map(|i| std::iter::repeat_n(i, per_service))
        .collect();
    for i in (1..victims.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        victims.swap(i, j);
    }
    let gap = load_time / (victims.len() as u32 + 1);
    let mut kills = [0u32; 3];
    let mut db_restarts = 0;
    for (n, &v) in victims.iter().enumerate() {
        tokio::time::sleep(gap.saturating_sub(Duration::from_millis(400))).await;
        svcs.kill(v);
        kills[v] += 1;
        tokio::time::sleep(rng.millis(100, 700)).await;
        svcs.start(v);
        if n == victims.len() / 2 {
            db.kill();
            tokio::time::sleep(rng.millis(1000, 2000)).await;
            db.restart().await;
            db_restarts += 1;
        }
    }

    let mut acked: HashMap<String, String> = HashMap::new();
    let mut unanswered = 0;
    for c in clients {
        match c.await.expect("a client task") {
            (key, Some(id)) => {
                acked.insert(key, id);
            }
            (_, None) => unanswered += 1,
        }
    }
    let load_done = started.elapsed();

    // Quiescence: every record terminal.
    svcs.all_ready().await;
    let open = |c: &str| {
        let (uri, dbname) = (db.uri(), dbname.clone());
        let c = c.to_string();
        async move {
            MongoStore::connect(&uri, &dbname, &c, Duration::from_secs(5))
                .await
                .expect("connect to the test database")
        }
    };
    let (orders, payments, shipments) = (
        open("orders").await,
        open("payments").await,
        open("shipments").await,
    );
    let quiet_from = Instant::now();
    let report = loop {
        let r =
            saga::verify::verify_stores(&orders, &payments, &shipments, Duration::from_secs(3600))
                .await;
        if let Ok(r) = r {
            let open: u64 = r
                .counts
                .values()
                .flat_map(|c| {
                    ["pending", "degraded", "compensating"].map(|s| c.get(s).copied().unwrap_or(0))
                })
                .sum();
            if open == 0 {
                break r;
            }
            if quiet_from.elapsed()
                > Duration::from_secs(
                    std::env::var("CRASH_QUIET_SECS")
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(240),
                )
            {
                let mut stuck = Vec::new();
                for store in [&orders, &payments, &shipments] {
                    let recs = store
                        .list_by_status(
                            &[Status::Pending, Status::Degraded, Status::Compensating],
                            3,
                        )
                        .await
                        .unwrap_or_default();
                    stuck.extend(recs.into_iter().map(|r| {
                        format!(
                            "{} {} due {:?} leased {:?} redrives {} history {:?}",
                            r.key, r.status, r.due_at, r.leased_by, r.redrives, r.history
                        )
                    }));
                }
                for p in svcs.procs.iter().flatten() {
                    let log = p.log();
                    let tail: String = log
                        .chars()
                        .skip(log.chars().count().saturating_sub(4000))
                        .collect();
                    eprintln!("--- {} log tail ---\n{tail}", p.name);
                    let _ = std::fs::write(
                        std::env::temp_dir().join(format!("crash-{}.log", p.name)),
                        &log,
                    );
                }
                panic!(
                    "not quiescent after 240 s: {:?}\n{}",
                    r.counts,
                    stuck.join("\n")
                );
            }
        }
        // Reading three whole collections is work for the database too: not too often.
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let quiescence = quiet_from.elapsed();

    println!(
        "crash test (seed {seed:#x}): {sagas} sagas at {rate}/s, {} acknowledged, {unanswered} unanswered; \
         SIGKILLs order/payment/shipment = {}/{}/{}, database restarts = {db_restarts}; \
         load {:.1} s, quiescent {:.1} s later; verify counts {:?}; violations {:?}",
        acked.len(),
        kills[0],
        kills[1],
        kills[2],
        load_done.as_secs_f64(),
        quiescence.as_secs_f64(),
        report.counts,
        report.violations
    );
    assert!(report.ok(), "saga verify: {:?}", report.violations);
    // A client that gave up (the run is slow on a busy machine) may or may not have an order;
    // either way there is at most one per key, and every acknowledged one is there.
    let total_orders: u64 = report.counts["orders"].values().sum();
    assert!(
        (acked.len() as u64..=sagas as u64).contains(&total_orders),
        "{total_orders} orders for {} acknowledged of {sagas}: {:?}",
        acked.len(),
        report.counts
    );
    for (key, id) in &acked {
        let rec = orders
            .get_by_key(key)
            .await
            .expect("read an order by key")
            .unwrap_or_else(|| panic!("acknowledged order {key} ({id}) is lost"));
        assert_eq!(&rec.saga_id.to_string(), id, "order {key} changed identity");
    }
    drop(svcs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_pauses_everything_and_it_all_resumes_without_a_restart() {
    let _turn = crate::beside_others().await;
    let Some(mut db) = FerretDb::start().await else {
        return;
    };
    let dbname = testkit::unique_db_name("outage");
    let mut svcs = Services::new(&db.uri(), &dbname);
    for env in &mut svcs.envs {
        env.push(("CHAOS_ENABLED".into(), "true".into()));
    }
    svcs.all_ready().await;
    let http = reqwest::Client::new();
    let base = |i: usize| format!("http://127.0.0.1:{}", svcs.ports[i]);

    // A saga left degraded (shipment refuses everything), for the re-driver to finish later.
    let chaos = format!("{}/chaos", base(2));
    http.put(&chaos)
        .json(&json!({"error_rate": 1.0}))
        .send()
        .await
        .expect("chaos on");
    let first: serde_json::Value = http
        .post(format!("{}/create", base(0)))
        .json(&testkit::seed())
        .send()
        .await
        .expect("order answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(first["status"], "degraded", "{first}");
    let id = first["saga_id"].as_str().expect("saga id").to_string();

    db.kill();
    for i in 0..NAMES.len() {
        let ready = testkit::eventually(
            "not ready while the database is down",
            Duration::from_secs(20),
            || async {
                let r = http.get(format!("{}/ready", base(i))).send().await.ok()?;
                (r.status() == 503).then_some(())
            },
        );
        ready.await;
    }
    let refused = http
        .post(format!("{}/create", base(0)))
        .json(&testkit::seed())
        .send()
        .await
        .expect("order answers");
    assert_eq!(
        refused.status(),
        503,
        "nothing is accepted without a database"
    );
    // The re-drivers with work to do (order's and payment's degraded records) find the
    // database gone and say so; shipment's has nothing due, and a poll with nothing due sends
    // no command (idle cost zero), so it has nothing to notice.
    let with_work = ["order", "payment"];
    testkit::eventually(
        "the re-drivers with due work say they paused",
        Duration::from_secs(20),
        || async {
            let logs: Vec<String> = svcs.procs.iter().flatten().map(|p| p.log()).collect();
            logs.iter()
                .zip(NAMES)
                .filter(|(_, name)| with_work.contains(name))
                .all(|(l, _)| l.contains("redriverPaused"))
                .then_some(())
        },
    )
    .await;

    // Shipment heals and the database returns; nobody restarts a service.
    http.delete(&chaos).send().await.expect("chaos off");
    db.restart().await;
    let done = testkit::eventually(
        "the degraded order completes",
        Duration::from_secs(60),
        || async {
            let r: serde_json::Value = http
                .get(format!("{}/orders/{id}", base(0)))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (r["status"] == "completed").then_some(r)
        },
    )
    .await;
    assert_eq!(done["status"], "completed");
    for (i, name) in NAMES.iter().enumerate() {
        let r = http
            .get(format!("{}/ready", base(i)))
            .send()
            .await
            .expect("ready answers");
        assert_eq!(r.status(), 200, "{name} is ready again");
    }
    let logs: Vec<String> = svcs.procs.iter().flatten().map(|p| p.log()).collect();
    assert!(
        logs.iter()
            .zip(NAMES)
            .filter(|(_, name)| with_work.contains(name))
            .all(|(l, _)| l.contains("redriverResumed")),
        "{logs:?}"
    );
    drop(svcs);
}
