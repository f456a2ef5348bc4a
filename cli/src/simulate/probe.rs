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
///
/// A successful half-open trial can begin and end between two polls; the breaker's event
/// totals still count it, so when `halfOpen` (or `open`) went up without being seen, a sample
/// of that state is added half-way between the two polls rather than lost.
pub async fn sample_breakers(
    client: reqwest::Client,
    urls: Vec<String>,
    every: Duration,
    start: Instant,
    mut stop: oneshot::Receiver<()>,
) -> Vec<BreakerSample> {
    let mut samples = Vec::new();
    let mut last: Vec<Option<(Duration, Poll)>> = vec![None; urls.len()];
    let mut tick = tokio::time::interval_at(start, every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        for (breaker, url) in urls.iter().enumerate() {
            let Some(now) = poll(&client, url).await else {
                continue;
            };
            let at = start.elapsed();
            if let Some((before_at, before)) = last[breaker] {
                let between = before_at + (at - before_at) / 2;
                for (missed, went_up) in [
                    (Seen::Open, now.opens > before.opens),
                    (Seen::HalfOpen, now.half_opens > before.half_opens),
                ] {
                    if went_up && now.state != missed {
                        samples.push(BreakerSample {
                            at: between,
                            breaker,
                            state: missed,
                        });
                    }
                }
            }
            samples.push(BreakerSample {
                at,
                breaker,
                state: now.state,
            });
            last[breaker] = Some((at, now));
        }
    }
    samples
}

/// One answer of `GET /breaker`: the state and the event totals.
#[derive(Debug, Clone, Copy)]
struct Poll {
    state: Seen,
    opens: u64,
    half_opens: u64,
}

async fn poll(client: &reqwest::Client, url: &str) -> Option<Poll> {
    let body: serde_json::Value = client.get(url).send().await.ok()?.json().await.ok()?;
    let breaker = &body["breaker"];
    Some(Poll {
        state: Seen::parse(breaker["state"].as_str()?)?,
        opens: breaker["totals"]["open"].as_u64().unwrap_or(0),
        half_opens: breaker["totals"]["halfOpen"].as_u64().unwrap_or(0),
    })
}
