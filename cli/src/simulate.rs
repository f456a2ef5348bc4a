//! `saga simulate`: the *Release It!* outage simulator's story, with numbers.
//!
//! A simulation starts the whole chain in this process (as `saga up` does, with a throwaway
//! store), drives it with the open-loop load generator of `saga load` through a client with a
//! deadline (its SLA), and in the middle of the run makes one service fail for real: its
//! listener is stopped (connection refused), or a fault is switched on through its `/chaos`
//! API (slow, hanging, failing). Meanwhile it polls each breaker and counts the calls that
//! reach the faulty service. Afterwards every request is filed under the second it was
//! scheduled in and the run becomes a per-second series (availability, p50/p99, errors by
//! class, worst breaker state, calls to each next hop), written as CSV and drawn as PNG and SVG.
//!
//! Protections are off unless asked, as in the original (`--timeout`, `--circuit-breakers`,
//! `--retries`, `--retry-budget`), and `--no-fallback` turns graceful degradation off, so
//! availability can fall. `--matrix` repeats the scenario for none / timeouts /
//! timeouts+breakers / timeouts+retries / timeouts+retries+budget, each on a fresh stack, and
//! compares them in one table and chart. `--seed` fixes arrivals, fault draws and jitter.
//!
//! The pieces, one concept each: [`settings`] (flags and their checks), [`scenario`] (the fault
//! and the setup as data), [`run`] (one run on a fresh stack), [`probe`] (the `/chaos` and
//! `/breaker` calls), [`recording`] (per-second aggregation), [`recovery`] (goodput after the
//! fault against before it), [`summary`] (the comparison) and [`chart`] (plotters).
//!
//! `metastable` is the lab for a failure that outlives its trigger: the target has a fixed
//! capacity (a worker pool with a FIFO queue, set through `/chaos` for the whole run) and the
//! fault window only makes its service slower for a few seconds. Unbudgeted retries and the
//! work of callers that already gave up can keep the queue full after the trigger is gone; the
//! summary says how goodput after the window compares with before, and when it came back.

pub mod chart;
pub mod probe;
pub mod recording;
pub mod recovery;
pub mod run;
pub mod scenario;
pub mod settings;
pub mod span;
pub mod summary;

pub use settings::{InvalidArgs, Settings, SimulateArgs};

use anyhow::Context;
use run::RunResult;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use summary::{Document, Summary};

/// What a simulation produced.
#[derive(Debug)]
pub struct Outcome {
    pub document: Document,
    pub runs: Vec<RunResult>,
    /// Every file written (CSV, JSON, PNG, SVG).
    pub files: Vec<PathBuf>,
}

/// `saga simulate`: check the flags, run, write the files, print the summary.
pub async fn run(args: SimulateArgs) -> anyhow::Result<Outcome> {
    let settings = args.settings()?;
    let outcome = simulate(&settings, settings.json).await?;
    let text = if settings.json {
        format!("{}\n", serde_json::to_string_pretty(&outcome.document)?)
    } else {
        let mut text = format!("\n{}", summary::table(&outcome.document.runs));
        if settings.scenario == scenario::Scenario::Metastable {
            text.push_str(&summary::recovery_table(&outcome.document.runs));
        }
        text.push_str(&format!("\nseed {}\n", outcome.document.seed));
        for file in &outcome.files {
            text.push_str(&format!("wrote {}\n", file.display()));
        }
        text
    };
    // `saga simulate --json | head` closes the pipe early: the files are written, not an error.
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(anyhow::Error::new(e).context("writing the summary"))
        }
        _ => {}
    }
    Ok(outcome)
}

/// Runs every setup of `settings` in turn and writes their files; `quiet` hides progress.
pub async fn simulate(settings: &Settings, quiet: bool) -> anyhow::Result<Outcome> {
    std::fs::create_dir_all(&settings.out)
        .with_context(|| format!("creating {}", settings.out.display()))?;
    let scenario = scenario_label(settings);
    if !quiet {
        eprintln!(
            "seed {} (repeat this run with --seed {})",
            settings.seed, settings.seed
        );
    }
    let mut runs = Vec::new();
    let mut files = Vec::new();
    for (i, setup) in settings.setups.iter().enumerate() {
        if !quiet {
            eprintln!(
                "run {}/{}: {} — {}",
                i + 1,
                settings.setups.len(),
                setup.label(),
                scenario
            );
        }
        let result = run::run(settings, *setup, quiet)
            .await
            .with_context(|| format!("run {}", setup.label()))?;
        let stem = settings
            .out
            .join(format!("{}-{}", settings.scenario.name(), setup.slug()));
        files.push(write(&stem.with_extension("csv"), &result.series.to_csv())?);
        let title = format!("{} — {}", setup.label(), scenario);
        chart::run_chart(
            &stem,
            &title,
            &result.series,
            settings.duration.as_secs_f64(),
        )?;
        files.push(stem.with_extension("png"));
        files.push(stem.with_extension("svg"));
        runs.push(result);
    }
    let summaries: Vec<Summary> = runs
        .iter()
        .map(|r| Summary::of(r, settings.target))
        .collect();
    let document = Document::new(settings, summaries);
    let name = if settings.matrix {
        format!("{}-matrix", settings.scenario.name())
    } else {
        format!(
            "{}-{}",
            settings.scenario.name(),
            settings
                .setups
                .first()
                .map(|s| s.slug())
                .unwrap_or_default()
        )
    };
    let stem = settings.out.join(format!("{name}-summary"));
    files.push(write(
        &stem.with_extension("json"),
        &serde_json::to_string_pretty(&document)?,
    )?);
    files.push(write(
        &stem.with_extension("csv"),
        &summary::csv(&document.runs),
    )?);
    if settings.matrix {
        let stem = settings.out.join(&name);
        let labelled: Vec<(String, &recording::Series)> =
            runs.iter().map(|r| (r.setup.label(), &r.series)).collect();
        chart::matrix_chart(
            &stem,
            &format!("matrix — {scenario}"),
            &labelled,
            settings.duration.as_secs_f64(),
            settings.target.caller_breaker(),
        )?;
        files.push(stem.with_extension("png"));
        files.push(stem.with_extension("svg"));
    }
    Ok(Outcome {
        document,
        runs,
        files,
    })
}

/// `outage (hang) on shipment 10–20 s, 50 req/s, hop timeout 300ms, client 1s, seed 7`
fn scenario_label(settings: &Settings) -> String {
    let w = settings.fault_window;
    format!(
        "{} ({}) on {} {}–{} s, {} req/s, hop timeout {}, client {}{}, seed {}",
        settings.scenario.name(),
        match &settings.base_fault {
            Some(base) => format!(
                "{}, {} ms in the trigger",
                base.describe(),
                settings.fault.service_ms
            ),
            None => settings.fault.describe(),
        },
        settings.target.name(),
        trim(w.start_s),
        trim(w.end_s),
        trim(settings.rate),
        settings::show(settings.hop_timeout),
        settings::show(settings.client_timeout),
        if settings.fallback {
            ""
        } else {
            ", no fallback"
        },
        settings.seed
    )
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn write(path: &Path, text: &str) -> anyhow::Result<PathBuf> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path.to_path_buf())
}
