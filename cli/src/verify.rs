//! `saga verify`: check the cross-collection invariants of the saga from the databases.
//!
//! The services only ever see their own collection; this is the one place that reads all
//! three and checks that they agree: every completed order has its payment and that
//! payment its shipment, every compensated order's payment is refunded, no idempotency key is
//! used twice, nothing is left non-terminal for longer than `--stuck-after`. The parent/child
//! link is the hop key: payment's key is `<order saga id>/order`, shipment's
//! `<payment saga id>/payment` (see `shared::hop::Hop::key_for`).

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use shared::config::ConfigError;
use shared::env::Reader;
use shared::hop::Hop;
use shared::saga::{SagaId, SagaRecord, Status};
use shared::store::{Store, StoreConfig};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// MongoDB connection string; without it the embedded store under --data-dir is read (stop
    /// the services first: redb files are opened exclusively).
    #[arg(long, env = "MONGO_URL")]
    pub mongo_url: Option<String>,
    #[arg(long, env = "MONGO_DB", default_value = "saga")]
    pub mongo_db: String,
    #[arg(long, env = "DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// A record not yet terminal (pending, degraded, compensating) and unchanged for longer than
    /// this many seconds counts as stuck.
    #[arg(long, default_value_t = 300)]
    pub stuck_after: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

impl VerifyArgs {
    /// Where the records are, read as the services read it: these flags (or `MONGO_URL`,
    /// `MONGO_DB`, `DATA_DIR`) laid over the environment, which gives `MONGO_TIMEOUT_MS`.
    pub fn store(&self) -> Result<StoreConfig, ConfigError> {
        let data_dir = self.data_dir.to_string_lossy();
        let mut r = Reader::new(|var| match var {
            "MONGO_URL" => self.mongo_url.clone(),
            "MONGO_DB" => Some(self.mongo_db.clone()),
            "DATA_DIR" => Some(data_dir.to_string()),
            _ => std::env::var(var).ok(),
        });
        let store = StoreConfig::read(&mut r);
        r.finish(store)
    }
}

const ALL: [Status; 6] = [
    Status::Pending,
    Status::Degraded,
    Status::Compensating,
    Status::Completed,
    Status::Compensated,
    Status::Failed,
];

/// What `verify` found.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    /// Records per collection and status.
    pub counts: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
    pub violations: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

/// The checks, on records already read: pure, so they are unit-tested on hand-made records.
pub fn check(
    orders: &[SagaRecord],
    payments: &[SagaRecord],
    shipments: &[SagaRecord],
    now: DateTime<Utc>,
    stuck_after: Duration,
) -> Report {
    let mut r = Report::default();
    for (name, recs) in [
        ("orders", orders),
        ("payments", payments),
        ("shipments", shipments),
    ] {
        let counts = r.counts.entry(name).or_default();
        for s in ALL {
            counts.insert(s.as_str(), 0);
        }
        let mut keys: HashMap<&str, u32> = HashMap::new();
        for rec in recs {
            *counts.entry(rec.status.as_str()).or_default() += 1;
            *keys.entry(rec.key.as_str()).or_default() += 1;
            let age = now.signed_duration_since(rec.updated_at);
            if !rec.status.is_terminal() && age.to_std().is_ok_and(|a| a > stuck_after) {
                r.violations.push(format!(
                    "{name} {} is stuck in {} since {}",
                    rec.saga_id, rec.status, rec.updated_at
                ));
            }
        }
        for (key, n) in keys {
            if n > 1 {
                r.violations.push(format!(
                    "{name}: idempotency key {key:?} is used by {n} records"
                ));
            }
        }
    }

    let by_key = |recs: &'_ [SagaRecord]| -> HashMap<String, usize> {
        recs.iter()
            .enumerate()
            .map(|(i, rec)| (rec.key.clone(), i))
            .collect()
    };
    let pay_by_key = by_key(payments);
    let ship_by_key = by_key(shipments);
    let order_ids: HashMap<SagaId, ()> = orders.iter().map(|o| (o.saga_id, ())).collect();

    for order in orders {
        let payment = pay_by_key
            .get(&Hop::key_for(&order.saga_id, "order"))
            .map(|&i| &payments[i]);
        let shipment = payment
            .and_then(|p| ship_by_key.get(&Hop::key_for(&p.saga_id, "payment")))
            .map(|&i| &shipments[i]);
        let id = order.saga_id;
        match order.status {
            Status::Completed => match (payment, shipment) {
                (None, _) => r
                    .violations
                    .push(format!("completed order {id} has no payment")),
                (Some(p), None) => r.violations.push(format!(
                    "completed order {id}: payment {} has no shipment",
                    p.saga_id
                )),
                (Some(p), Some(s)) => {
                    for (what, rec) in [("payment", p), ("shipment", s)] {
                        if rec.status != Status::Completed {
                            r.violations.push(format!(
                                "completed order {id} has {what} {} in {}",
                                rec.saga_id, rec.status
                            ));
                        }
                    }
                }
            },
            // Undone all the way down: whatever was made after the order is undone too (or
            // never existed).
            Status::Compensated => {
                for (what, rec) in [("payment", payment), ("shipment", shipment)] {
                    if let Some(rec) = rec.filter(|r| r.status != Status::Compensated) {
                        r.violations.push(format!(
                            "compensated order {id}: {what} {} is {} instead of {}",
                            rec.saga_id,
                            rec.status,
                            if what == "payment" {
                                "refunded"
                            } else {
                                "cancelled"
                            }
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    // A record made for a caller must have that caller: otherwise an accepted one was lost.
    let payment_ids: HashMap<SagaId, ()> = payments.iter().map(|p| (p.saga_id, ())).collect();
    for (what, recs, suffix, parents, parent_name) in [
        ("payment", payments, "/order", &order_ids, "order"),
        ("shipment", shipments, "/payment", &payment_ids, "payment"),
    ] {
        for rec in recs {
            let parent = rec
                .key
                .strip_suffix(suffix)
                .and_then(|p| p.parse::<SagaId>().ok());
            if let Some(id) = parent.filter(|id| !parents.contains_key(id)) {
                r.violations.push(format!(
                    "{what} {} belongs to a missing {parent_name} {id}",
                    rec.saga_id
                ));
            }
        }
    }
    r
}

/// Reads the three stores and checks them (the services may keep running: each record is read
/// whole, and a record read mid-change is at worst reported stuck or pending).
pub async fn verify_stores(
    orders: &dyn Store,
    payments: &dyn Store,
    shipments: &dyn Store,
    stuck_after: Duration,
) -> anyhow::Result<Report> {
    // Children before parents: a parent that completes meanwhile finds its child already read
    // as at least as far along, never a child "missing".
    let shipments = read(shipments).await?;
    let payments = read(payments).await?;
    let orders = read(orders).await?;
    Ok(check(
        &orders,
        &payments,
        &shipments,
        Utc::now(),
        stuck_after,
    ))
}

async fn read(store: &dyn Store) -> anyhow::Result<Vec<SagaRecord>> {
    store
        .list_by_status(&ALL, usize::MAX)
        .await
        .with_context(|| format!("reading the {} store", store.kind()))
}

async fn open(store: &StoreConfig, collection: &str) -> anyhow::Result<Arc<dyn Store>> {
    let opened = store.open(collection).await;
    Ok(match store {
        StoreConfig::Embedded { data_dir } => opened.with_context(|| {
            format!(
                "opening {}/{collection}.redb (are the services still running?)",
                data_dir.display()
            )
        })?,
        StoreConfig::Mongo { .. } => opened?,
    })
}

/// Reads the three collections, checks, prints; `Ok(false)` when an invariant is violated.
pub async fn run(args: VerifyArgs) -> anyhow::Result<bool> {
    let store = args.store()?;
    let report = verify_stores(
        &*open(&store, "orders").await?,
        &*open(&store, "payments").await?,
        &*open(&store, "shipments").await?,
        Duration::from_secs(args.stuck_after),
    )
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(report.ok())
}

fn print_table(r: &Report) {
    println!(
        "{:<10} {:>8} {:>8} {:>12} {:>10} {:>12} {:>7} {:>7}",
        "", "pending", "degraded", "compensating", "completed", "compensated", "failed", "total"
    );
    for (name, c) in &r.counts {
        let get = |s: &str| c.get(s).copied().unwrap_or(0);
        let total: u64 = c.values().sum();
        println!(
            "{:<10} {:>8} {:>8} {:>12} {:>10} {:>12} {:>7} {:>7}",
            name,
            get("pending"),
            get("degraded"),
            get("compensating"),
            get("completed"),
            get("compensated"),
            get("failed"),
            total
        );
    }
    if r.ok() {
        println!("\nok: no invariant violated");
    } else {
        println!("\n{} violation(s):", r.violations.len());
        for v in r.violations.iter().take(50) {
            println!("  - {v}");
        }
        if r.violations.len() > 50 {
            println!("  … and {} more", r.violations.len() - 50);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: String, status: Status) -> SagaRecord {
        let mut r = SagaRecord::accepted(key, "f".into(), "1".into(), 1, serde_json::json!({}));
        r.status = status;
        r
    }

    fn chain(status: Status) -> (SagaRecord, SagaRecord, SagaRecord) {
        let o = rec("k".into(), status);
        let p = rec(Hop::key_for(&o.saga_id, "order"), status);
        let s = rec(Hop::key_for(&p.saga_id, "payment"), status);
        (o, p, s)
    }

    fn violations(o: &[SagaRecord], p: &[SagaRecord], s: &[SagaRecord]) -> Vec<String> {
        check(o, p, s, Utc::now(), Duration::from_secs(300)).violations
    }

    #[test]
    fn the_flags_choose_the_store_as_the_services_variables_do() {
        let mut args = VerifyArgs {
            mongo_url: None,
            mongo_db: "saga".into(),
            data_dir: PathBuf::from("/tmp/saga-data"),
            stuck_after: 300,
            json: false,
        };
        assert_eq!(
            args.store().expect("valid"),
            StoreConfig::embedded("/tmp/saga-data")
        );
        args.mongo_url = Some("mongodb://db:27017".into());
        args.mongo_db = "other".into();
        assert!(matches!(
            args.store().expect("valid"),
            StoreConfig::Mongo { ref db, .. } if db == "other"
        ));
        args.mongo_url = Some("postgres://db".into());
        assert_eq!(
            args.store().expect_err("not mongodb://").0[0].var,
            "MONGO_URL"
        );
    }

    #[test]
    fn a_complete_chain_passes() {
        let (o, p, s) = chain(Status::Completed);
        assert!(violations(&[o], &[p], &[s]).is_empty());
    }

    #[test]
    fn a_completed_order_without_payment_or_shipment_is_a_violation() {
        let (o, p, _) = chain(Status::Completed);
        assert_eq!(violations(std::slice::from_ref(&o), &[], &[]).len(), 1);
        let v = violations(&[o], &[p], &[]);
        assert!(v[0].contains("has no shipment"), "{v:?}");
    }

    #[test]
    fn a_payment_without_its_order_is_a_lost_order() {
        let (_, p, s) = chain(Status::Completed);
        let v = violations(&[], &[p], &[s]);
        assert!(v[0].contains("missing order"), "{v:?}");
    }

    #[test]
    fn a_compensated_order_needs_a_refunded_payment() {
        let (o, mut p, s) = chain(Status::Compensated);
        assert!(violations(
            std::slice::from_ref(&o),
            std::slice::from_ref(&p),
            std::slice::from_ref(&s)
        )
        .is_empty());
        p.status = Status::Completed;
        assert!(violations(&[o], &[p], &[s])[0].contains("instead of refunded"));
    }

    #[test]
    fn a_compensated_order_needs_its_shipment_cancelled_and_a_completed_one_all_completed() {
        let (o, p, mut s) = chain(Status::Compensated);
        s.status = Status::Completed;
        let v = violations(&[o], &[p], &[s]);
        assert!(v[0].contains("instead of cancelled"), "{v:?}");
        let (o, p, mut s) = chain(Status::Completed);
        s.status = Status::Pending;
        let v = violations(&[o], &[p], &[s]);
        assert!(v[0].contains("has shipment"), "{v:?}");
    }

    #[test]
    fn a_shipment_without_its_payment_is_a_lost_payment() {
        let (o, _, s) = chain(Status::Degraded);
        let v = violations(&[o], &[], &[s]);
        assert!(v.iter().any(|m| m.contains("missing payment")), "{v:?}");
    }

    #[test]
    fn old_non_terminal_records_are_stuck_and_duplicate_keys_are_reported() {
        let mut o = rec("k".into(), Status::Degraded);
        o.updated_at = Utc::now() - chrono::TimeDelta::minutes(10);
        let twin = rec("k".into(), Status::Failed);
        let v = violations(&[o, twin], &[], &[]);
        assert!(v.iter().any(|m| m.contains("stuck in degraded")), "{v:?}");
        assert!(v.iter().any(|m| m.contains("used by 2 records")), "{v:?}");
    }
}
