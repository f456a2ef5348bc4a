//! The order service binary: configuration from the environment, then [`shared::service::main`].

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shared::service::main::<order::Order>().await
}
