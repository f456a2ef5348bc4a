//! The `saga` command line as a library, so tests drive the same code the binary runs.

pub mod advise;
pub mod load;
pub mod simulate;
pub mod up;
pub mod verify;
