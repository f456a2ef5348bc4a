//! The payment service binary: configuration from the environment, then [`shared::service::main`].

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shared::service::main::<payment::Payment>().await
}
