//! docker-compose.yaml's three services as this machine can run them: each service binary with
//! exactly the environment the compose file gives it, so a test of "what `docker-compose up`
//! does" can't drift from the file.
//!
//! Only what exists inside Docker alone is swapped: the compose network's host names become
//! 127.0.0.1, the published ports free ones, and the database the test's own. A test may lay
//! its own changes over a service's environment (and says why), through [`ComposeStack::start`]'s
//! `adjust`.

use crate::process::{free_port, wait_ready, Proc};
use std::collections::BTreeMap;
use std::time::Duration;

/// The services, last hop first (the order docker-compose's `depends_on` starts them in).
pub const SERVICES: [&str; 3] = ["shipment", "payment", "order"];

/// docker-compose.yaml at the workspace root, parsed.
pub fn file() -> serde_yaml_ng::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docker-compose.yaml");
    let text = std::fs::read_to_string(path).expect("docker-compose.yaml is readable");
    serde_yaml_ng::from_str(&text).expect("docker-compose.yaml is YAML")
}

/// A scalar of the compose file as the string the container sees.
pub fn scalar(v: &serde_yaml_ng::Value) -> String {
    match v {
        serde_yaml_ng::Value::String(s) => s.clone(),
        serde_yaml_ng::Value::Number(n) => n.to_string(),
        serde_yaml_ng::Value::Bool(b) => b.to_string(),
        other => panic!("unexpected environment value {other:?}"),
    }
}

/// What docker-compose makes of a value when no variable of the shell is set: a
/// `${VAR:-default}` becomes its default (`HOP_SECRET` is one).
pub fn interpolate(v: &str) -> String {
    v.strip_prefix("${")
        .and_then(|rest| rest.strip_suffix('}'))
        .and_then(|inner| inner.split_once(":-"))
        .map_or_else(|| v.to_string(), |(_, default)| default.to_string())
}

/// `service`'s `environment` in the compose file, in file order, interpolated.
pub fn environment(service: &str) -> Vec<(String, String)> {
    let file = file();
    let env = file["services"][service]["environment"]
        .as_mapping()
        .unwrap_or_else(|| panic!("docker-compose.yaml: {service} has an environment map"));
    env.iter()
        .map(|(k, v)| (scalar(k), interpolate(&scalar(v))))
        .collect()
}

/// The three service processes, running with the compose file's environment.
pub struct ComposeStack {
    procs: BTreeMap<&'static str, Proc>,
    ports: BTreeMap<&'static str, u16>,
}

impl ComposeStack {
    /// Starts shipment, payment and order with their compose environment on free loopback
    /// ports, against `mongo_uri`/`db`; `adjust(service, env)` may change a service's
    /// environment before it starts. Waits until each is ready.
    pub async fn start(
        mongo_uri: &str,
        db: &str,
        adjust: impl Fn(&str, &mut Vec<(String, String)>),
    ) -> Self {
        let compose_ports: BTreeMap<&str, String> = SERVICES
            .iter()
            .map(|s| {
                let port = environment(s)
                    .into_iter()
                    .find(|(k, _)| k == "PORT")
                    .map(|(_, v)| v)
                    .unwrap_or_else(|| panic!("docker-compose.yaml: {s} sets PORT"));
                (*s, port)
            })
            .collect();
        let ports: BTreeMap<&'static str, u16> =
            SERVICES.iter().map(|s| (*s, free_port())).collect();
        let mut procs = BTreeMap::new();
        for name in SERVICES {
            let mut env = environment(name);
            for (k, v) in env.iter_mut() {
                match k.as_str() {
                    "PORT" => *v = ports[name].to_string(),
                    "CHAIN_SVC" => {
                        for (other, port) in &compose_ports {
                            *v = v.replace(
                                &format!("//{other}:{port}"),
                                &format!("//127.0.0.1:{}", ports[other]),
                            );
                        }
                    }
                    "MONGO_URL" => *v = mongo_uri.to_string(),
                    "MONGO_DB" => *v = db.to_string(),
                    _ => {}
                }
            }
            env.push(("HOST".into(), "127.0.0.1".into()));
            adjust(name, &mut env);
            let p = Proc::spawn(name, &env).expect("spawn the service binary");
            let ready = format!("http://127.0.0.1:{}/ready", ports[name]);
            assert!(
                wait_ready(&ready, Duration::from_secs(30)).await,
                "{name} never got ready: {}",
                p.log()
            );
            procs.insert(name, p);
        }
        Self { procs, ports }
    }

    /// `http://127.0.0.1:<port>` of `service`.
    pub fn url(&self, service: &str) -> String {
        format!("http://127.0.0.1:{}", self.ports[service])
    }

    /// What `service` logged so far.
    pub fn log(&self, service: &str) -> String {
        self.procs[service].log()
    }
}
