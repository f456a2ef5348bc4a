//! `saga`: run the stack, load it, simulate outages and verify invariants.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "saga",
    version,
    about = "saga-breaker: order → payment → shipment behind circuit breakers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start order, payment and shipment in this process (embedded store unless MONGO_URL).
    Up(saga::up::UpArgs),
    /// Check the saga's invariants across the three collections; exit 1 on a violation.
    Verify(saga::verify::VerifyArgs),
    /// Drive POST /create at a constant arrival rate and report latency percentiles.
    Load(saga::load::LoadArgs),
    /// Start the stack, load it, inject a fault mid-run, and chart availability, p99 and breaker
    /// states (CSV, PNG, SVG); `--matrix` compares none / timeouts / +breakers / +retries /
    /// +retries within a budget.
    /// Service logs are off unless RUST_LOG is set.
    Simulate(Box<saga::simulate::SimulateArgs>),
    /// Measure a healthy hop under load and recommend breaker settings (timeout, window, min
    /// calls, threshold, retries) that detect its outage within a target, with the expected
    /// detection time and false-open rate.
    Advise(saga::advise::AdviseArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match std::env::var("LOG_FORMAT").as_deref() {
        Ok("json") => shared::config::LogFormat::Json,
        _ => shared::config::LogFormat::Pretty,
    };
    // A simulation runs the services in this process at full load: their per-request logs
    // would bury its progress and table, so they are opt-in there.
    let simulating = matches!(cli.command, Command::Simulate(_));
    if !simulating || std::env::var_os("RUST_LOG").is_some() {
        shared::telemetry::init_logging(format);
    }
    let _ = shared::telemetry::prometheus();
    let result = match cli.command {
        Command::Up(args) => saga::up::run(args).await,
        Command::Verify(args) => match saga::verify::run(args).await {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Command::Load(args) => saga::load::run(args).await.map(drop),
        Command::Simulate(args) => saga::simulate::run(*args).await.map(drop),
        Command::Advise(args) => saga::advise::run(args).await.map(drop),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("saga: {e:#}");
            if e.downcast_ref::<shared::config::ConfigError>().is_some()
                || e.downcast_ref::<saga::simulate::InvalidArgs>().is_some()
                || e.downcast_ref::<saga::advise::model::NoAdvice>().is_some()
            {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
