//! The two things a run does to the stack besides loading it: switch a `/chaos` fault on and
//! off, and poll `GET /breaker` on the services that own one.
//!
//! Both talk HTTP, exactly as an operator would against a deployed stack, so the simulator
//! measures the services from outside and does not reach into their state. Both are timed from
//! the same `start` as the load generator's schedule, which is what lets the chart line up the
//! fault window, the breaker states and the latencies on one time axis.

use super::recording::{BreakerSample, Seen, Window};
use super::scenario::Fault;
use anyhow::Context;
use std::time::Duration;
use tokio::sync::{oneshot, Notify};
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

/// How long after the stack is warm the run's schedule starts: the fault of a window that
/// starts at 0 s is switched on before it, so the first request meets it too.
pub const LEAD: Duration = Duration::from_millis(200);

/// Waits for the end of the fault window; a window that lasts to the end of the run also waits
/// for `run_done` (the last requests are answered), so every request of the run meets it.
pub async fn until_off(start: Instant, window: Window, run_done: Option<&Notify>) {
    tokio::time::sleep_until(start + Duration::from_secs_f64(window.end_s)).await;
    if let Some(done) = run_done {
        done.notified().await;
    }
}

/// Sets `fault` on `base_url` through `PUT /chaos`.
pub async fn chaos_on(
    client: &reqwest::Client,
    base_url: &str,
    fault: &Fault,
) -> anyhow::Result<()> {
    let url = format!("{base_url}/chaos");
    let res = client
        .put(&url)
        .json(&fault.chaos_body())
        .send()
        .await
        .with_context(|| format!("PUT {url}"))?;
    anyhow::ensure!(
        res.status().is_success(),
        "PUT {url} answered {}: {}",
        res.status(),
        res.text().await.unwrap_or_default()
    );
    tracing::info!(event = "fault_on", url, fault = %fault.describe());
    Ok(())
}

/// Clears the faults of `base_url` through `DELETE /chaos`.
pub async fn chaos_off(client: &reqwest::Client, base_url: &str) -> anyhow::Result<()> {
    let url = format!("{base_url}/chaos");
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
    tracing::info!(event = "fault_off", url);
    Ok(())
}

/// Seconds since `start`, negative before it.
pub fn elapsed_s(start: Instant) -> f64 {
    let now = Instant::now();
    if now >= start {
        (now - start).as_secs_f64()
    } else {
        -(start - now).as_secs_f64()
    }
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
                            calls: before.calls,
                        });
                    }
                }
            }
            samples.push(BreakerSample {
                at,
                breaker,
                state: now.state,
                calls: now.calls,
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
    /// Requests sent to the next hop so far, counted as they leave (not the ones rejected).
    calls: u64,
}

async fn poll(client: &reqwest::Client, url: &str) -> Option<Poll> {
    let body: serde_json::Value = client.get(url).send().await.ok()?.json().await.ok()?;
    let breaker = &body["breaker"];
    Some(Poll {
        state: Seen::parse(breaker["state"].as_str()?)?,
        opens: breaker["totals"]["open"].as_u64().unwrap_or(0),
        half_opens: breaker["totals"]["halfOpen"].as_u64().unwrap_or(0),
        calls: body["next_hop_calls"].as_u64().unwrap_or(0),
    })
}
