//! The fault matrix: every step of a hop crashed, errored and duplicated, and every saga still
//! ends whole.
//!
//! Payment is the hop in the middle — a callee of order, a caller of shipment, and the one that
//! undoes both ways — so the failpoints are armed there (`FAILPOINTS`, see
//! `shared::failpoint`): `accept`, `forward`, `answer`, `write`, `compensate`, each with `crash`
//! (the process aborts; the case restarts it), `error` and `duplicate`. Each case restarts
//! payment with one point armed, then runs two sagas through the real processes against a
//! FerretDB of the test's own: one that completes (it passes the create steps) and one that is
//! cancelled by the client while shipment refuses (it passes `compensate`). The case checks that
//! the point fired, waits until nothing is left open, and `saga verify` must find no violation:
//! every saga all-completed or all-compensated, no key twice, nothing stuck. 15 cases.

use crate::crash::Services;
use serde_json::json;
use shared::failpoint::{Action, Point};
use shared::store::{MongoStore, Store};
use std::time::Duration;
use testkit::ferretdb::FerretDb;
use tokio::time::Instant;

const PAYMENT: usize = 1;
const SHIPMENT: usize = 2;

/// POSTs to order until it answers 2xx (the well-behaved client: same key, again and again).
async fn until_answered(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    body: Option<&serde_json::Value>,
) -> serde_json::Value {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let mut req = http
            .post(url)
            .header("Idempotency-Key", key)
            .timeout(Duration::from_secs(8));
        req = match body {
            Some(b) => req.json(b),
            None => req,
        };
        if let Ok(res) = req.send().await {
            if res.status().is_success() {
                if let Ok(v) = res.json::<serde_json::Value>().await {
                    return v;
                }
            }
        }
        assert!(Instant::now() < until, "{url} never answered {key}");
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
    let payment_env = svcs.envs[PAYMENT].clone();
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
    let base = |i: usize, svcs: &Services| format!("http://127.0.0.1:{}", svcs.ports[i]);

    let mut results = Vec::new();
    let started = Instant::now();
    for point in Point::ALL {
        for action in Action::ALL {
            let case = format!("{point}={action}");
            // Payment again, with this one point armed.
            svcs.kill(PAYMENT);
            svcs.envs[PAYMENT] = payment_env.clone();
            svcs.envs[PAYMENT].push(("FAILPOINTS".into(), case.clone()));
            svcs.all_ready().await;
            // Armed once: a payment restarted after a crash comes back clean.
            svcs.envs[PAYMENT] = payment_env.clone();
            let order = base(0, &svcs);
            let chaos = format!("{}/chaos", base(SHIPMENT, &svcs));
            let crash_line = format!("failpoint {point}: crash");
            let fired_before_restart = |svcs: &mut Services| {
                let p = svcs.procs[PAYMENT].as_mut().expect("payment was started");
                let died = !p.alive();
                let log = p.log();
                let fired = log.contains("\"event\":\"failpoint\"") || log.contains(&crash_line);
                (died, fired, log)
            };

            // A saga that completes: through accept, forward, answer and write.
            let tag = format!("{dbname}-{point}-{action}");
            let a = until_answered(
                &http,
                &format!("{order}/create"),
                &format!("{tag}-a"),
                Some(&testkit::seed()),
            )
            .await;
            assert!(a["saga_id"].is_string(), "{case}: {a}");
            let (mut died, mut fired, mut log) = fired_before_restart(&mut svcs);
            if died {
                svcs.all_ready().await;
            }

            // A saga the client cancels while shipment refuses: through compensate.
            let put = http
                .put(&chaos)
                .json(&json!({"error_rate": 1.0}))
                .send()
                .await;
            assert!(
                put.is_ok_and(|r| r.status().is_success()),
                "{case}: chaos on"
            );
            let b_key = format!("{tag}-b");
            until_answered(
                &http,
                &format!("{order}/create"),
                &b_key,
                Some(&testkit::seed()),
            )
            .await;
            until_answered(&http, &format!("{order}/compensate"), &b_key, None).await;
            let cleared = http.delete(&chaos).send().await;
            assert!(
                cleared.is_ok_and(|r| r.status().is_success()),
                "{case}: chaos off"
            );
            if !fired {
                // `compensate` may fire in the re-driver's undo, a moment later.
                let until = Instant::now() + Duration::from_secs(15);
                loop {
                    (died, fired, log) = fired_before_restart(&mut svcs);
                    if fired || died || Instant::now() > until {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            assert!(fired, "{case}: the failpoint never fired\n{log}");
            assert_eq!(
                died,
                action == Action::Crash,
                "{case}: payment died {died}\n{log}"
            );
            svcs.all_ready().await;

            // Nothing left open, then the invariants.
            let quiet_from = Instant::now();
            loop {
                if open_records(&stores).await == Some(0) {
                    break;
                }
                assert!(
                    quiet_from.elapsed() < Duration::from_secs(60),
                    "{case}: records still open after 60 s"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            let report = saga::verify::verify_stores(
                &stores[0],
                &stores[1],
                &stores[2],
                Duration::from_secs(3600),
            )
            .await
            .expect("the stores can be read");
            assert!(report.ok(), "{case}: saga verify: {:?}", report.violations);
            let b = stores[0].get_by_key(&b_key).await.ok().flatten();
            results.push(format!(
                "{case}: ok in {:.1} s (cancelled saga ended {})",
                quiet_from.elapsed().as_secs_f64(),
                b.map(|r| r.status.to_string()).unwrap_or_default()
            ));
        }
    }
    let report = saga::verify::verify_stores(
        &stores[0],
        &stores[1],
        &stores[2],
        Duration::from_secs(3600),
    )
    .await
    .expect("the stores can be read");
    println!(
        "fault matrix: {} cases ({} points x {} actions on payment) in {:.1} s; verify counts {:?}\n{}",
        results.len(),
        Point::ALL.len(),
        Action::ALL.len(),
        started.elapsed().as_secs_f64(),
        report.counts,
        results.join("\n")
    );
    assert!(report.ok(), "saga verify: {:?}", report.violations);
    assert_eq!(results.len(), 15);
    drop(svcs);
}
