//! One run: a fresh stack with one setup, the load, the fault, the samples, the series.
//!
//! Every run starts its own three services (on free ports, with a store of their own) so no
//! breaker state, connection pool or record leaks from one setup into the next: a matrix row
//! differs from the one before only in the switches it is meant to compare. The stack is
//! stopped whatever happens, so a failed run leaves no ports or files behind.

use super::probe;
use super::recording::{self, Class, RequestRecord, Series};
use super::scenario::{Setup, Target};
use super::settings::Settings;
use crate::load::{self, Plan, SEED};
use crate::up::{self, Stack, UpArgs};
use anyhow::Context;
use shared::store::StoreConfig;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// What one run measured.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub setup: Setup,
    pub series: Series,
    /// The load generator's own report (outcomes, fallback reasons, HDR percentiles).
    pub report: load::Report,
}

/// How long the load client waits beyond the services' own request timeout: every service
/// answers within that timeout, so a client timeout means the machine itself fell behind.
const CLIENT_SLACK: Duration = Duration::from_secs(2);

/// Starts a stack for `setup`, runs the scenario against it, stops it.
pub async fn run(settings: &Settings, setup: Setup, quiet: bool) -> anyhow::Result<RunResult> {
    let data = tempfile::Builder::new()
        .prefix("saga-simulate-")
        .tempdir()
        .context("creating a temporary directory for the embedded store")?;
    let mut env = settings.env.clone();
    env.extend(setup.env(
        settings.hop_timeout,
        settings.request_timeout,
        settings.retry_attempts,
    ));
    let mongo_db = format!(
        "simulate_{}_{}_{}",
        settings.scenario.name(),
        setup.slug().replace('-', "_"),
        chrono::Utc::now().format("%Y%m%d%H%M%S%3f")
    );
    let store = match &settings.mongo_url {
        Some(url) => StoreConfig::mongo(url, mongo_db),
        None => StoreConfig::embedded(data.path()),
    };
    match &store {
        StoreConfig::Mongo { db, .. } => env.push(("MONGO_DB".into(), db.clone())),
        StoreConfig::Embedded { data_dir } => {
            env.push(("DATA_DIR".into(), data_dir.display().to_string()))
        }
    }
    let args = UpArgs {
        host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        order_port: 0,
        payment_port: 0,
        shipment_port: 0,
        mongo_url: settings.mongo_url.clone(),
        inject_err: Vec::new(),
        env,
        inherit_env: false,
    };
    let stack = up::start(&args).await?;
    let result = drive(settings, setup, &stack, quiet).await;
    stack.stop().await;
    drop_run_database(&store).await;
    result
}

/// The run's MongoDB database is throwaway, like the embedded store's temp dir: drop it, so
/// runs don't pile up databases. A failure only warns; the run's results stand.
async fn drop_run_database(store: &StoreConfig) {
    if let StoreConfig::Mongo { db, .. } = store {
        if let Err(e) = store.drop_database().await {
            eprintln!("warning: could not drop the run's database {db}: {e}");
        }
    }
}

fn base_url(stack: &Stack, target: Target) -> String {
    let running = match target {
        Target::Order => &stack.order,
        Target::Payment => &stack.payment,
        Target::Shipment => &stack.shipment,
    };
    up::url(running.addr.ip(), running.addr.port())
}

async fn drive(
    settings: &Settings,
    setup: Setup,
    stack: &Stack,
    quiet: bool,
) -> anyhow::Result<RunResult> {
    let order = base_url(stack, Target::Order);
    let create = format!("{order}/create");
    let control = probe::control_client()?;
    warm_up(&control, &create).await?;

    let client = reqwest::Client::builder()
        .timeout(settings.request_timeout + CLIENT_SLACK)
        .build()
        .context("building the load client")?;
    let plan = Plan {
        rate: settings.rate,
        duration: settings.duration,
        timeout: settings.request_timeout + CLIENT_SLACK,
        limit: settings.concurrency_limit,
    };
    let start = Instant::now();
    let inject = tokio::spawn({
        let (control, url, fault) = (
            control.clone(),
            base_url(stack, settings.target),
            settings.fault.clone(),
        );
        let window = settings.fault_window;
        async move { probe::inject(&control, &url, &fault, start, window).await }
    });
    let (stop_sampling, stopped) = oneshot::channel();
    let breakers = vec![
        format!("{order}/breaker"),
        format!("{}/breaker", base_url(stack, Target::Payment)),
    ];
    let sampler = tokio::spawn(probe::sample_breakers(
        control.clone(),
        breakers,
        settings.sample_every,
        start,
        stopped,
    ));

    let mut requests = Vec::with_capacity(usize::try_from(plan.scheduled()).unwrap_or(0));
    let progress = load::progress_bar(plan.scheduled(), quiet);
    let report = load::drive_observed(
        &client,
        &create,
        SEED,
        plan,
        Some(progress),
        start,
        |sample| {
            requests.push(RequestRecord {
                scheduled: sample.scheduled,
                class: Class::of(&sample.outcome),
                latency: sample.latency,
            })
        },
    )
    .await;
    let _ = stop_sampling.send(());
    let samples = sampler.await.context("the breaker sampler stopped")?;
    let applied = inject
        .await
        .context("the fault injector stopped")?
        .context("injecting the fault")?;
    tracing::debug!(
        setup = %setup.label(),
        planned_start_s = settings.fault_window.start_s,
        applied_start_s = applied.window.start_s,
        "fault applied"
    );
    let series = recording::aggregate(
        settings.duration.as_secs(),
        applied.window,
        &requests,
        &samples,
    );
    Ok(RunResult {
        setup,
        series,
        report,
    })
}

/// A few orders before the clock starts: connections are open, stores are warm, and a stack
/// that can't take an order at all fails here with its answer instead of producing a chart of
/// nothing but errors.
async fn warm_up(client: &reqwest::Client, create: &str) -> anyhow::Result<()> {
    for _ in 0..3 {
        let res = client
            .post(create)
            .header("content-type", "application/json")
            .body(SEED)
            .send()
            .await
            .with_context(|| format!("warm-up order to {create}"))?;
        let status = res.status();
        anyhow::ensure!(
            status.is_success(),
            "the fresh stack refused a warm-up order with {status}: {}",
            res.text().await.unwrap_or_default()
        );
    }
    Ok(())
}
