//! One service of the chain, generic over its record type.
//!
//! The three binaries differ only in data — what their part of the request looks like, which
//! collection stores it, which nested part goes to the next hop — and that is the [`Part`] trait.
//! Everything else lives here once, one concept per file. A `POST /create` travels through them
//! in this order:
//!
//! 1. `serve.rs` bound the port and serves the router through `listen.rs` (connection cap,
//!    header and idle timeouts, drain); `state.rs` built the [`AppState`] every
//!    request shares (store, next-hop client with its breaker, fault switchboard).
//! 2. `router.rs`: the layers (panic → JSON, time limits, header limits, request metrics) and
//!    the route to the handler; `signed.rs` refuses hop calls without a valid signature (when
//!    `HOP_SECRET` is set, behind the edge); `admission.rs` sheds what is past `MAX_IN_FLIGHT`.
//! 3. `extract.rs` and `chaos.rs`: the handler's arguments are its checks, in order — the
//!    deadline, the injected faults, the JSON body parsed into the [`Part`] (naming a bad field),
//!    the idempotency key.
//! 4. `create.rs`: the flow — persist the record first, then forward its nested part through
//!    the breaker, move the record by the answer and save that answer (`answer.rs`), scheduling
//!    what is unfinished (`schedule.rs`). Every database wait ends at the request's deadline
//!    (`budget.rs`); the final write follows the answer instead of holding it (`finish.rs`).
//! 5. `redrive.rs`, in the background: takes up what requests left unfinished, from the
//!    database, and gives up through the same undo step as `POST /compensate`
//!    (`compensate.rs`).
//!
//! Beside the flow: `ops.rs` (`/`, `/health`, `/ready`, `/metrics`, `/breaker`,
//! `/openapi.json`), `record.rs` (`GET /<collection>/{id}`), `shutdown.rs` (the stop signal and
//! the grace period). The files import each other downwards only (part → state → answer →
//! create/compensate → router/redrive → serve); this root only names them and re-exports the public
//! paths.

mod admission;
mod answer;
mod budget;
mod chaos;
mod compensate;
mod create;
mod extract;
mod finish;
mod listen;
mod live;
mod openapi;
mod ops;
pub(crate) mod part;
mod record;
pub mod redrive;
mod router;
mod schedule;
mod serve;
mod shutdown;
mod signed;
mod state;

pub use crate::http::{MAX_HEADERS, MAX_HEADER_BYTES};
pub use extract::parse_part;
pub use live::outcomes::{Live, SagaNote};
pub use part::Part;
pub use router::app;
pub use serve::{main, serve, start, Running};
pub use shutdown::{shutdown_grace, shutdown_signal, HANDLER_CUTOFF};
pub use state::{state, state_with_store, AppState, StartError};
