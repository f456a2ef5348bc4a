//! `saga up`: the whole chain in one process, for a laptop without Docker.
//!
//! Each service gets the process environment (so every variable of the README's table works)
//! with its own `ID`, `PORT` and `CHAIN_SVC` laid over it, exactly as docker-compose would set
//! them. Services start last hop first, so order never forwards to a port nobody listens on.

use anyhow::Context;
use clap::Args;
use shared::service::{self, Running};
use shared::{Config, Part};
use std::collections::HashMap;
use std::net::IpAddr;

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Address to bind all three services to.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    #[arg(long, default_value_t = 3000)]
    pub order_port: u16,
    #[arg(long, default_value_t = 3001)]
    pub payment_port: u16,
    #[arg(long, default_value_t = 3002)]
    pub shipment_port: u16,
    /// MongoDB connection string; without it (and without MONGO_URL) records go to DATA_DIR.
    #[arg(long, env = "MONGO_URL")]
    pub mongo_url: Option<String>,
    /// Services that fail at random with 502 (INJECT_ERR=1), comma-separated: e.g. `shipment`,
    /// as in docker-compose.yaml.
    #[arg(long, value_delimiter = ',', value_parser = ["order", "payment", "shipment"])]
    pub inject_err: Vec<String>,
    /// Variables laid over the process environment for all three (tests set these instead of
    /// mutating the environment they share).
    #[arg(skip)]
    pub env: Vec<(String, String)>,
    /// Read the process environment at all (tests turn it off to be hermetic).
    #[arg(skip = true)]
    pub inherit_env: bool,
}

/// The three services of one stack, running.
pub struct Stack {
    pub order: Running,
    pub payment: Running,
    pub shipment: Running,
}

impl Stack {
    pub async fn stop(self) {
        self.order.stop().await;
        self.payment.stop().await;
        self.shipment.stop().await;
    }
}

/// The configuration `saga up` gives service `P`: the environment with `args` laid over it.
pub fn config_for<P: Part>(
    args: &UpArgs,
    port: u16,
    next: Option<String>,
) -> Result<Config, shared::config::ConfigError> {
    let mut over: HashMap<&str, String> = HashMap::new();
    over.insert("ID", P::SERVICE.to_string());
    over.insert("HOST", args.host.to_string());
    over.insert("PORT", port.to_string());
    if let Some(url) = &args.mongo_url {
        over.insert("MONGO_URL", url.clone());
    }
    if args.inject_err.iter().any(|s| s == P::SERVICE) {
        over.insert("INJECT_ERR", "1".into());
    }
    let chain = next.unwrap_or_default();
    Config::from_lookup(P::SERVICE, port, |k| {
        if k == "CHAIN_SVC" {
            return Some(chain.clone()).filter(|c| !c.is_empty());
        }
        over.get(k)
            .cloned()
            .or_else(|| {
                args.env
                    .iter()
                    .rev()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
            })
            .or_else(|| args.inherit_env.then(|| std::env::var(k).ok()).flatten())
    })
}

/// The base URL of a service bound to `host:port`, as a client would dial it.
pub fn url(host: IpAddr, port: u16) -> String {
    let host = match host {
        IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".to_string(),
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    format!("http://{host}:{port}")
}

/// Starts shipment, payment, order (in that order) and returns them running.
pub async fn start(args: &UpArgs) -> anyhow::Result<Stack> {
    let shipment = service::start::<shipment::Shipment>(config_for::<shipment::Shipment>(
        args,
        args.shipment_port,
        None,
    )?)
    .await
    .context("starting shipment")?;
    let payment = service::start::<payment::Payment>(config_for::<payment::Payment>(
        args,
        args.payment_port,
        Some(format!("{}/create", url(args.host, shipment.addr.port()))),
    )?)
    .await
    .context("starting payment")?;
    let order = service::start::<order::Order>(config_for::<order::Order>(
        args,
        args.order_port,
        Some(format!("{}/create", url(args.host, payment.addr.port()))),
    )?)
    .await
    .context("starting order")?;
    Ok(Stack {
        order,
        payment,
        shipment,
    })
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let stack = start(&args).await?;
    for (name, r) in [
        ("order", &stack.order),
        ("payment", &stack.payment),
        ("shipment", &stack.shipment),
    ] {
        println!("{name:<9} {}", url(args.host, r.addr.port()));
    }
    println!("store: {}   (Ctrl-C stops)", stack.order.state.store.kind());
    shared::shutdown_signal().await;
    tracing::info!("stopping");
    stack.stop().await;
    Ok(())
}
