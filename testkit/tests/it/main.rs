//! The integration tests, one module per scenario, in one test binary.
//!
//! Every test binary links the whole workspace (mongodb, axum, reqwest, the CLI with plotters),
//! so each one costs a full link; on a clean clone that dominated the run. One binary links once,
//! and a group is still selected by its module: `cargo test -p testkit --test it chain::`.
//!
//! Sharing a process is safe for these modules because none of them changes what is
//! process-global:
//! - the tracing subscriber: nobody here installs one. The tests that capture log events do (a
//!   global subscriber sees every test's events, and every stack's breakers have the same
//!   names), so they live in the `logs` binary.
//! - the metrics recorder: `shared::telemetry::prometheus()` installs one Prometheus recorder per
//!   process when the first service starts, and every in-process service records into it. The
//!   one test that reads `/metrics` (`chain::kernel_routes_answer`) checks that metric names are
//!   there, which the other tests' services only add to. A test that installed a recorder of its
//!   own first would leave the services none (their `/metrics` answers 500): it would need a
//!   binary of its own.
//! - the environment: the tests read `MONGODB_URI`, `REDIS_URL` and `CI`, and set nothing; a stack
//!   gets its variables through `UpArgs` (without inheriting ours), a child process an exact
//!   environment.
//! - ports, databases and files: services bind port 0 (a child process a `free_port()`), and
//!   each test gets a database (`unique_db_name`) or temp dir of its own. One test keeps breaker
//!   state in the shared Redis (`chain::the_stack_runs_with_the_redis_shared_breaker`); the
//!   others that use Redis, in `logs`, name their breakers uniquely.
//!
//! What this binary can't share is CPU: the tests that measure rates and latencies, or load the
//! machine for minutes (`load`, `simulate`, `crash`), are in the `heavy` binary.
//!
//! `handlers` drives the routers in-process (no socket); the rest talk HTTP to real services.

mod bad_input;
mod chain;
mod chaos;
mod database_down;
mod edge;
mod fallback;
mod finish;
mod handlers;
mod live;
mod mongo_path;
mod parse_props;
mod policies;
mod processes;
mod saga;
mod signed_hops;
mod store_contract;
