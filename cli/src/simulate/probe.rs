//! The two things a run does to the stack besides loading it: switch the fault on and off
//! through `/chaos` at fixed times, and poll `GET /breaker` on the services that own one.
//!
//! Both talk HTTP, exactly as an operator would against a deployed stack, so the simulator
//! measures the services from outside and does not reach into their state. Both are timed from
//! the same `start` as the load generator's schedule, which is what lets the chart line up the
//! fault window, the breaker states and the latencies on one time axis.

use super::recording::{BreakerSample, Seen, Window};
use super::scenario::Fault;
use anyhow::Context;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::{Instant, MissedTickBehavior};

/// How long a control call (`/chaos`, `/breaker`) may take; they are cheap, so a slow one means
/// the machine is overloaded and the run says so instead of waiting.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// A client for control calls.
pub fn control_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(CONTROL_TIMEOUT)
        .build()
        .context("building the control HTTP client")
}

/// When the fault was actually switched on and off, from `start`.
#[derive(Debug, Clone, Copy)]
pub struct Applied {
    pub window: Window,
}

/// Sets `fault` on `base_url` at `start + window.start_s` and clears it at `window.end_s`.
pub async fn inject(
    client: &reqwest::Client,
    base_url: &str,
    fault: &Fault,
    start: Instant,
    window: Window,
) -> anyhow::Result<Applied> {
    let url = format!("{base_url}/chaos");
    tokio::time::sleep_until(start + Duration::from_secs_f64(window.start_s)).await;
    let on = start.elapsed().as_secs_f64();
    let res = client
        .put(&url)
        .json(fault)
        .send()
        .await
        .with_context(|| format!("PUT {url}"))?;
    anyhow::ensure!(
        res.status().is_success(),
        "PUT {url} answered {}: {}",
        res.status(),
        res.text().await.unwrap_or_default()
    );
    tracing::info!(event = "fault_on", url, fault = %fault.describe(), at_s = on);
    tokio::time::sleep_until(start + Duration::from_secs_f64(window.end_s)).await;
    let off = start.elapsed().as_secs_f64();
    let res = client
        .delete(&url)
        .send()
        .await
        .with_context(|| format!("DELETE {url}"))?;
    anyhow::ensure!(
        res.status().is_success(),
        "DELETE {url} answered {}",
        res.status()
    );
    tracing::info!(event = "fault_off", url, at_s = off);
    Ok(Applied {
        window: Window {
            start_s: on,
            end_s: off,
        },
    })
}

/// Polls `GET /breaker` on each of `urls` (index = breaker) every `every` until `stop` fires.
/// A failed or unreadable poll is skipped: a gap in the strip, not a made-up state.
pub async fn sample_breakers(
    client: reqwest::Client,
    urls: Vec<String>,
    every: Duration,
    start: Instant,
    mut stop: oneshot::Receiver<()>,
) -> Vec<BreakerSample> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval_at(start, every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        let at = start.elapsed();
        for (breaker, url) in urls.iter().enumerate() {
            if let Some(state) = poll(&client, url).await {
                samples.push(BreakerSample { at, breaker, state });
            }
        }
    }
    samples
}

async fn poll(client: &reqwest::Client, url: &str) -> Option<Seen> {
    let body: serde_json::Value = client.get(url).send().await.ok()?.json().await.ok()?;
    Seen::parse(body["breaker"]["state"].as_str()?)
}
