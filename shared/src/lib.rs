//! Everything the three saga-breaker services have in common.
//!
//! The services (`order`, `payment`, `shipment`) are thin binaries that only say what their record
//! looks like ([`service::Part`]); every mechanism — configuration, the breaker, the next-hop
//! client, persistence, the saga status machine, the HTTP edge, logs and metrics — lives here
//! once, one concept per module, and a concept with parts is a folder of one file per part
//! (`service/`, `store/`, `breaker/`). `service` sits on top, built from the others, and none
//! of them imports from it.

pub mod breaker;
pub mod chaos;
pub mod config;
pub mod env;
pub mod failpoint;
pub mod field;
pub mod hop;
pub mod http;
pub mod retry;
pub mod saga;
pub mod service;
pub mod store;
pub mod telemetry;

pub use config::Config;
pub use service::{redrive, shutdown_signal, Part};
