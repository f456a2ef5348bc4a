//! The fault matrix: every step of a hop crashed, errored and duplicated, and every saga still
//! ends whole.
//!
//! The failpoints (`FAILPOINTS`, see `shared::failpoint`) are armed one at a time: on payment
//! and on order, each of `accept`, `forward`, `answer`, `write` and `compensate`; on shipment,
//! the last hop, which stores its record completed in one write and forwards and undoes nothing
//! downstream, `accept`. Each with `crash` (the process aborts; it is restarted, as a supervisor
//! would), `error` and `duplicate`: 33 cases. Each case restarts its service with the point armed, then runs two
//! sagas through the real processes against a FerretDB of the test's own — one that completes
//! (it passes the create steps) and one the client cancels while shipment refuses (it passes
//! `compensate`) — with a client that retries under its idempotency key until it is answered.
//! The point must have fired, the service must have died exactly when the action was `crash`,
//! nothing may stay open, and `saga verify` must find no violation: every saga all-completed or
//! all-compensated, no key twice, no orphan, nothing stuck.

use crate::crash::{Services, NAMES};
use serde_json::json;
use shared::failpoint::{Action, Point};
use shared::store::{MongoStore, Store};
use std::time::Duration;
use testkit::ferretdb::FerretDb;
use tokio::time::Instant;

const ORDER: usize = 0;
const PAYMENT: usize = 1;
const SHIPMENT: usize = 2;

/// One case of the matrix: which service has which point armed, and what was seen of it.
struct Case {
    victim: usize,
    point: Point,
    action: Action,
    died: bool,
    fired: bool,
    log: String,
}

impl Case {
    fn name(&self) -> String {
        format!("{} {}={}", NAMES[self.victim], self.point, self.action)
    }

    /// Looks at the victim: did the point fire, did it die? A dead victim is restarted (clean:
    /// its environment no longer arms anything), as its supervisor would.
    async fn observe(&mut self, svcs: &mut Services) {
        if let Some(p) = svcs.procs[self.victim].as_mut() {
            let log = p.log();
            self.fired |= log.contains("\"event\":\"failpoint\"")
                || log.contains(&format!("failpoint {}: crash", self.point));
            if !p.alive() {
                self.died = true;
                self.log = log;
                svcs.all_ready().await;
            } else {
                self.log = log;
            }
        }
    }
}

/// POSTs to order until it answers 2xx (the well-behaved client: same key, again and again),
/// restarting the case's victim whenever it died.
async fn until_answered(
    svcs: &mut Services,
    case: &mut Case,
    path: &str,
    key: &str,
    body: Option<&serde_json::Value>,
) -> serde_json::Value {
    let http = reqwest::Client::new();
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let url = format!("http://127.0.0.1:{}{path}", svcs.ports[0]);
        let mut req = http
            .post(&url)
            .header("Idempotency-Key", key)
            .timeout(Duration::from_secs(8));
        req = match body {
            Some(b) => req.json(b),
            None => req,
        };
        if let Ok(res) = req.send().await {
            if res.status().is_success() {
                if let Ok(v) = res.json::<serde_json::Value>().await {
                    case.observe(svcs).await;
                    return v;
                }
            }
        }
        case.observe(svcs).await;
        assert!(
            Instant::now() < until,
            "{}: {url} never answered {key}",
            case.name()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Counts of records not yet terminal, over the three collections.
async fn open_records(stores: &[MongoStore; 3]) -> Option<u64> {
    let r = saga::verify::verify_stores(
        &stores[0],
        &stores[1],
        &stores[2],
        Duration::from_secs(3600),
    )
    .await
    .ok()?;
    Some(
        r.counts
            .values()
            .flat_map(|c| {
                ["pending", "degraded", "compensating"].map(|s| c.get(s).copied().unwrap_or(0))
            })
            .sum(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_of_a_hop_crashed_errored_or_duplicated_leaves_every_saga_whole() {
    let _turn = crate::beside_others().await;
    let Some(db) = FerretDb::start().await else {
        return;
    };
    let dbname = testkit::unique_db_name("faults");
    let mut svcs = Services::new(&db.uri(), &dbname);
    for env in &mut svcs.envs {
        env.extend(
            [
                ("CHAOS_ENABLED", "true"),
                ("SAGA_POLL_MS", "200"),
                ("SAGA_BACKOFF_BASE_MS", "100"),
                ("SAGA_BACKOFF_CAP_MS", "1000"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
    }
    let clean_envs = svcs.envs.clone();
    svcs.all_ready().await;
    let open = |c: &'static str| {
        let (uri, dbname) = (db.uri(), dbname.clone());
        async move {
            MongoStore::connect(&uri, &dbname, c, Duration::from_secs(5))
                .await
                .expect("connect to the test database")
        }
    };
    let stores = [
        open("orders").await,
        open("payments").await,
        open("shipments").await,
    ];
    let http = reqwest::Client::new();
    // Shipment, the last hop, stores its record completed in one write, forwards nothing and
    // undoes nothing downstream: one step.
    let steps: [(usize, &[Point]); 3] = [
        (PAYMENT, &Point::ALL),
        (ORDER, &Point::ALL),
        (SHIPMENT, &[Point::Accept]),
    ];

    let mut results = Vec::new();
    let started = Instant::now();
    for (victim, points) in steps {
        for &point in points {
            for action in Action::ALL {
                let mut case = Case {
                    victim,
                    point,
                    action,
                    died: false,
                    fired: false,
                    log: String::new(),
                };
                let name = case.name();
                // The victim again, with this one point armed; restarted after a crash, it
                // comes back clean.
                svcs.kill(victim);
                svcs.envs[victim].push(("FAILPOINTS".into(), format!("{point}={action}")));
                svcs.all_ready().await;
                svcs.envs[victim] = clean_envs[victim].clone();
                let chaos = format!("http://127.0.0.1:{}/chaos", svcs.ports[SHIPMENT]);
                let tag = format!("{dbname}-{}-{point}-{action}", NAMES[victim]);

                // A saga that completes: through accept, forward, answer and write.
                let a_key = format!("{tag}-a");
                let a = until_answered(
                    &mut svcs,
                    &mut case,
                    "/create",
                    &a_key,
                    Some(&testkit::seed()),
                )
                .await;
                assert!(a["saga_id"].is_string(), "{name}: {a}");

                // A saga the client cancels while shipment refuses: through compensate.
                let put = http
                    .put(&chaos)
                    .json(&json!({"error_rate": 1.0}))
                    .send()
                    .await;
                assert!(
                    put.is_ok_and(|r| r.status().is_success()),
                    "{name}: chaos on"
                );
                let b_key = format!("{tag}-b");
                until_answered(
                    &mut svcs,
                    &mut case,
                    "/create",
                    &b_key,
                    Some(&testkit::seed()),
                )
                .await;
                until_answered(&mut svcs, &mut case, "/compensate", &b_key, None).await;
                let cleared = http.delete(&chaos).send().await;
                assert!(
                    cleared.is_ok_and(|r| r.status().is_success()),
                    "{name}: chaos off"
                );
                // `compensate` may fire in a re-driver's undo, a moment later.
                let until = Instant::now() + Duration::from_secs(15);
                while !case.fired && Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    case.observe(&mut svcs).await;
                }
                assert!(
                    case.fired,
                    "{name}: the failpoint never fired\n{}",
                    case.log
                );
                assert_eq!(
                    case.died,
                    action == Action::Crash,
                    "{name}: died?\n{}",
                    case.log
                );

                // Nothing left open, then the invariants.
                let quiet_from = Instant::now();
                loop {
                    case.observe(&mut svcs).await;
                    if open_records(&stores).await == Some(0) {
                        break;
                    }
                    assert!(
                        quiet_from.elapsed() < Duration::from_secs(60),
                        "{name}: records still open after 60 s"
                    );
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                let report = verify(&stores).await;
                assert!(report.ok(), "{name}: saga verify: {:?}", report.violations);
                let ended = |key: String| {
                    let store = &stores[0];
                    async move {
                        store
                            .get_by_key(&key)
                            .await
                            .ok()
                            .flatten()
                            .map(|r| r.status.to_string())
                            .unwrap_or_default()
                    }
                };
                results.push(format!(
                    "{name}: clean, quiet {:.1} s later (sagas ended {} and {})",
                    quiet_from.elapsed().as_secs_f64(),
                    ended(a_key).await,
                    ended(b_key).await
                ));
            }
        }
    }
    let report = verify(&stores).await;
    println!(
        "fault matrix: {} cases in {:.1} s; verify counts {:?}\n{}",
        results.len(),
        started.elapsed().as_secs_f64(),
        report.counts,
        results.join("\n")
    );
    assert!(report.ok(), "saga verify: {:?}", report.violations);
    assert_eq!(results.len(), 33);
    drop(svcs);
}

async fn verify(stores: &[MongoStore; 3]) -> saga::verify::Report {
    saga::verify::verify_stores(
        &stores[0],
        &stores[1],
        &stores[2],
        Duration::from_secs(3600),
    )
    .await
    .expect("the stores can be read")
}
