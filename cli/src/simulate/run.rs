//! One run: a fresh stack with one setup, the load, the fault, the samples, the series.
//!
//! Every run starts its own three services (on free ports, with a store of their own) so no
//! breaker state, connection pool or record leaks from one setup into the next: a matrix row
//! differs from the one before only in the switches it is meant to compare. The stack is
//! stopped whatever happens, so a failed run leaves no ports or files behind.
//!
//! The fault is made for real: an outage stops the target's listener (callers get connection
//! refused, their pooled connections are closed) and starts it again on the same port when the
//! window ends; the other faults go through the target's `/chaos` API. The simulated client
//! has a deadline (`--client-timeout`): an answer later than that is a timeout, unavailable.

use super::probe;
use super::recording::{self, Class, RequestRecord, Series, Window};
use super::scenario::{Fault, Setup, Target};
use super::settings::{Arrivals, Settings};
use crate::load::{self, Plan, Spacing, SEED};
use crate::up::{self, UpArgs};
use anyhow::Context;
use shared::service::{self, Running};
use shared::store::StoreConfig;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

/// What one run measured.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub setup: Setup,
    pub series: Series,
    /// The load generator's own report (outcomes, fallback reasons, HDR percentiles).
    pub report: load::Report,
}

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
        settings.max_in_flight,
    ));
    env.push(("FALLBACK".into(), settings.fallback.to_string()));
    env.push(("RETRY_SEED".into(), settings.seed.to_string()));
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
    let mut services = Services {
        urls: [&stack.order, &stack.payment, &stack.shipment]
            .map(|r| up::url(r.addr.ip(), r.addr.port())),
        running: [Some(stack.order), Some(stack.payment), Some(stack.shipment)],
        args,
    };
    let result = drive(settings, setup, &mut services, quiet).await;
    services.stop().await;
    drop_run_database(&store).await;
    result
}

/// The run's three services, by [`Target`] index, each of which a fault may stop and start
/// again on the same port.
struct Services {
    urls: [String; 3],
    running: [Option<Running>; 3],
    args: UpArgs,
}

fn index(target: Target) -> usize {
    match target {
        Target::Order => 0,
        Target::Payment => 1,
        Target::Shipment => 2,
    }
}

impl Services {
    fn url(&self, target: Target) -> &str {
        &self.urls[index(target)]
    }

    /// Stops `target`'s listener: from now on a connection to its port is refused, and the
    /// callers' pooled connections are closed under them.
    async fn take_down(&mut self, target: Target) {
        if let Some(running) = self.running[index(target)].take() {
            running.stop().await;
        }
    }

    /// Starts `target` again on its old port, with the configuration it had.
    async fn bring_up(&mut self, target: Target) -> anyhow::Result<()> {
        let i = index(target);
        let port = port_of(&self.urls[i])?;
        let next = match target {
            Target::Order => Some(format!("{}/create", self.urls[1])),
            Target::Payment => Some(format!("{}/create", self.urls[2])),
            Target::Shipment => None,
        };
        let a = &self.args;
        let running = match target {
            Target::Order => {
                service::start::<order::Order>(up::config_for::<order::Order>(a, port, next)?).await
            }
            Target::Payment => {
                service::start::<payment::Payment>(up::config_for::<payment::Payment>(
                    a, port, next,
                )?)
                .await
            }
            Target::Shipment => {
                service::start::<shipment::Shipment>(up::config_for::<shipment::Shipment>(
                    a, port, next,
                )?)
                .await
            }
        }
        .with_context(|| format!("starting {} again on port {port}", target.name()))?;
        self.running[i] = Some(running);
        Ok(())
    }

    async fn stop(self) {
        for running in self.running.into_iter().flatten() {
            running.stop().await;
        }
    }
}

fn port_of(url: &str) -> anyhow::Result<u16> {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.port())
        .with_context(|| format!("no port in {url}"))
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

/// Switches the fault on, for real: the target's listener stopped, or a `/chaos` fault set.
async fn fault_on(
    services: &mut Services,
    control: &reqwest::Client,
    target: Target,
    fault: &Fault,
) -> anyhow::Result<()> {
    if fault.down {
        services.take_down(target).await;
        tracing::info!(
            event = "fault_on",
            target = target.name(),
            "listener stopped"
        );
        Ok(())
    } else {
        let url = services.url(target).to_string();
        probe::chaos_on(control, &url, fault).await
    }
}

/// Switches the fault off: the listener started again on its port, or the target back to
/// its `base` (a metastable run's capacity), or the `/chaos` faults cleared.
async fn fault_off(
    services: &mut Services,
    control: &reqwest::Client,
    target: Target,
    fault: &Fault,
    base: Option<&Fault>,
) -> anyhow::Result<()> {
    if fault.down {
        services.bring_up(target).await?;
        tracing::info!(event = "fault_off", target = target.name(), "listener back");
        Ok(())
    } else {
        let url = services.url(target).to_string();
        match base {
            Some(base) => probe::chaos_on(control, &url, base).await,
            None => probe::chaos_off(control, &url).await,
        }
    }
}

async fn drive(
    settings: &Settings,
    setup: Setup,
    services: &mut Services,
    quiet: bool,
) -> anyhow::Result<RunResult> {
    let order = services.url(Target::Order).to_string();
    let create = format!("{order}/create");
    let control = probe::control_client()?;
    // A metastable run's capacity holds all run long, the warm-up included.
    if let Some(base) = &settings.base_fault {
        probe::chaos_on(&control, services.url(settings.target), base).await?;
    }
    warm_up(&control, &create).await?;

    // The client is the SLA: what it does not get within its deadline is not available.
    let client = reqwest::Client::builder()
        .timeout(settings.client_timeout)
        .build()
        .context("building the load client")?;
    let plan = Plan {
        rate: settings.rate,
        duration: settings.duration,
        timeout: settings.client_timeout,
        limit: settings.concurrency_limit,
        spacing: match settings.arrivals {
            Arrivals::Constant => Spacing::Even,
            Arrivals::Poisson => Spacing::Random {
                seed: settings.seed,
            },
        },
        // Deadline propagation is a timeout: only setups with timeouts tell the services.
        deadline: setup.timeouts,
    };
    // A fault from the first second is on before the clock starts, so the first request
    // meets it whatever the machine's load.
    let window = settings.fault_window;
    let early = window.start_s <= 0.0;
    if early {
        fault_on(services, &control, settings.target, &settings.fault).await?;
    }
    let start = Instant::now() + probe::LEAD;
    let (stop_sampling, stopped) = oneshot::channel();
    let breakers = vec![
        format!("{order}/breaker"),
        format!("{}/breaker", services.url(Target::Payment)),
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
    let load = load::drive_observed(
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
    );
    // A fault that lasts to the end of the run stays on until the last answer: then every
    // request meets it, and a seeded run draws the same number of times.
    let done = Notify::new();
    let lasts = settings.fault_window.end_s >= settings.duration.as_secs_f64() - 1e-9;
    let load = async {
        let report = load.await;
        done.notify_one();
        report
    };
    let fault = async {
        let on = if early {
            0.0
        } else {
            tokio::time::sleep_until(start + Duration::from_secs_f64(window.start_s)).await;
            let on = probe::elapsed_s(start);
            fault_on(services, &control, settings.target, &settings.fault).await?;
            on
        };
        probe::until_off(start, window, lasts.then_some(&done)).await;
        let off = probe::elapsed_s(start);
        fault_off(
            services,
            &control,
            settings.target,
            &settings.fault,
            settings.base_fault.as_ref(),
        )
        .await?;
        anyhow::Ok(Window {
            start_s: on,
            end_s: off,
        })
    };
    let (report, applied) = tokio::join!(load, fault);
    let _ = stop_sampling.send(());
    let samples = sampler.await.context("the breaker sampler stopped")?;
    let applied = applied.context("applying the fault")?;
    tracing::debug!(
        setup = %setup.label(),
        planned_start_s = window.start_s,
        applied_start_s = applied.start_s,
        "fault applied"
    );
    let series = recording::aggregate(settings.duration_s(), applied, &requests, &samples);
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
