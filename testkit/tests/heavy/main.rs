//! The tests that load the whole machine or measure it, in a binary apart from `it`.
//!
//! `load` and `simulate` assert on rates and latencies (a constant arrival rate kept up with,
//! p99 during a hang compared across four runs), `crash` runs three service processes and a
//! FerretDB of its own through minutes of SIGKILLs, and `faults` (the fault matrix) through every
//! failpoint of a hop. Beside `it`'s dozens of stacks on two cores
//! the measurements measure the neighbours (a `load` run next to them saw hop timeouts), and the
//! neighbours' own 300 ms hop timeouts would feel the crash test. So they get a binary of their
//! own, and inside it [`alone`] and [`beside_others`] keep what measures from overlapping
//! anything: the same isolation each had when every file was its own binary (the two crash
//! tests always ran side by side).

mod crash;
mod faults;
mod fuzz;
mod load;
mod metastable;
mod simulate;
mod simulate_story;
mod story;

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

static MACHINE: RwLock<()> = RwLock::const_new(());

/// Waits until no other test of this binary runs, and keeps it so while the guard lives: for a
/// test whose assertions are about time.
pub async fn alone() -> RwLockWriteGuard<'static, ()> {
    MACHINE.write().await
}

/// Waits while a test that must be [`alone`] runs: for a test that only loads the machine.
pub async fn beside_others() -> RwLockReadGuard<'static, ()> {
    MACHINE.read().await
}
