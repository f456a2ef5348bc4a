//! The shipment service binary: configuration from the environment, then [`shared::service::main`].

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shared::service::main::<shipment::Shipment>().await
}
