//! The logs a person watches (`docker-compose logs -f`), read from the service processes'
//! own output: one `info` line per order per hop, saying the saga and its outcome; breaker state
//! changes at `warn` with the state's name first; no per-call breaker lines at `info`; and the
//! same events as JSON with `LOG_FORMAT=json`. The services run with the compose file's
//! environment, as in `docker-compose up`, with shipment's random 502s off so each line is known
//! and hop timeouts of 2 s, so a busy test machine can't add a timeout the test didn't ask for.

use serde_json::Value;
use std::time::Duration;
use testkit::compose::ComposeStack;
use testkit::{mongo, seed, unique_db_name};

/// Sets `name=value` in `env`, replacing the compose file's value.
fn set(env: &mut Vec<(String, String)>, name: &str, value: &str) {
    env.retain(|(k, _)| k != name);
    env.push((name.to_string(), value.to_string()));
}

async fn post(client: &reqwest::Client, url: &str) -> Value {
    client
        .post(url)
        .json(&seed())
        .send()
        .await
        .expect("order answers")
        .json()
        .await
        .expect("JSON")
}

#[tokio::test]
async fn each_hop_logs_one_json_info_line_per_order_with_its_saga_and_outcome() {
    let Some(server) = mongo().await else {
        eprintln!("skipped: no MongoDB");
        return;
    };
    let db = unique_db_name("watch_json");
    let stack = ComposeStack::start(server.uri(), &db, |_, env| {
        set(env, "INJECT_ERR", "0");
        set(env, "BREAKER_TIMEOUT_MS", "2000");
        set(env, "LOG_FORMAT", "json");
    })
    .await;
    let client = reqwest::Client::new();
    let body = post(&client, &format!("{}/create", stack.url("order"))).await;
    assert_eq!(body["status"], "completed", "{body}");

    let hops = [
        ("order", &body, "payment completed"),
        ("payment", &body["next"], "shipment completed"),
        ("shipment", &body["next"]["next"], "-"),
    ];
    for (service, answer, next) in hops {
        let log = stack.log(service);
        let answered: Vec<Value> = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|j| j["event"] == "answered")
            .collect();
        assert_eq!(answered.len(), 1, "{service}: one line per order:\n{log}");
        let line = &answered[0];
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(line["outcome"], "completed", "{line}");
        assert_eq!(line["next"], next, "{line}");
        assert_eq!(line["span"]["saga_id"], answer["saga_id"], "{line}");
        assert_eq!(line["span"]["service"], service, "{line}");
    }
    drop(stack);
    if let Ok(c) = mongodb::Client::with_uri_str(server.uri()).await {
        let _ = c.database(&db).drop().await;
    }
}

#[tokio::test]
async fn breaker_changes_stand_out_at_warn_and_rejected_calls_stay_out_of_info() {
    let Some(server) = mongo().await else {
        eprintln!("skipped: no MongoDB");
        return;
    };
    let db = unique_db_name("watch_pretty");
    let stack = ComposeStack::start(server.uri(), &db, |service, env| {
        set(env, "INJECT_ERR", "0");
        set(env, "BREAKER_TIMEOUT_MS", "2000");
        match service {
            // Opens on the first failure (as in compose) and tries again soon.
            "payment" => set(env, "BREAKER_RESET_MS", "1500"),
            "shipment" => set(env, "CHAOS_ENABLED", "true"),
            _ => {}
        }
    })
    .await;
    let client = reqwest::Client::new();
    let create = format!("{}/create", stack.url("order"));
    let chaos = format!("{}/chaos", stack.url("shipment"));
    let put = client
        .put(&chaos)
        .json(&serde_json::json!({"error_rate": 1}))
        .send()
        .await
        .expect("chaos answers");
    assert_eq!(put.status(), 200);

    let orders = 5;
    for _ in 0..orders {
        let body = post(&client, &create).await;
        assert_eq!(body["status"], "degraded", "{body}");
    }
    client.delete(&chaos).send().await.expect("chaos answers");
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let body = post(&client, &create).await;
    assert_eq!(body["status"], "completed", "the trial closes it: {body}");

    let log = stack.log("payment");
    let warn: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ")).collect();
    let state_of = |l: &str| {
        ["open", "halfOpen", "close"]
            .into_iter()
            .find(|s| l.contains(&format!(" {s}: ")) && l.contains(&format!("event=\"{s}\"")))
    };
    let states: Vec<&str> = warn.iter().filter_map(|l| state_of(l)).collect();
    assert_eq!(states, ["open", "halfOpen", "close"], "{log}");
    // The message starts with the state: nothing but a span name may come before it.
    for l in warn.iter().filter(|l| state_of(l).is_some()) {
        let after_level = l.split(" WARN ").nth(1).unwrap_or_default();
        let message = after_level.strip_prefix("create: ").unwrap_or(after_level);
        assert!(
            ["open:", "halfOpen:", "close:"]
                .iter()
                .any(|s| message.starts_with(s)),
            "{l}"
        );
    }
    let info: Vec<&str> = log.lines().filter(|l| l.contains(" INFO ")).collect();
    assert!(
        !info.iter().any(|l| ["reject", "fallback", "failure"]
            .iter()
            .any(|e| l.contains(&format!("event=\"{e}\"")))),
        "per-call breaker lines at info:\n{log}"
    );
    let answered = info
        .iter()
        .filter(|l| l.contains("event=\"answered\""))
        .count();
    assert_eq!(answered, orders + 1, "one line per order:\n{log}");
    let rejected = info
        .iter()
        .filter(|l| l.contains("not called: breaker open"))
        .count();
    assert_eq!(
        rejected,
        orders - 1,
        "every order after the open says why:\n{log}"
    );
    drop(stack);
    if let Ok(c) = mongodb::Client::with_uri_str(server.uri()).await {
        let _ = c.database(&db).drop().await;
    }
}
