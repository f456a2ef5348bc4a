//! The tests that read the structured log events, in a binary of their own.
//!
//! Capturing events takes a process-global tracing subscriber ([`capture`]), which sees every
//! event of every test in the process. Here each test tells its events apart by breaker name:
//! the Redis breaker tests give every breaker a unique one, and `breaker_cycle` runs the only
//! stack in this binary, so `payment->shipment` events are its own. In the `it` binary other
//! stacks' breakers would log under that same name beside it, and the subscriber would be
//! installed under every test there.

mod breaker_cycle;
mod capture;
mod redis_breaker;
mod redis_policies;
mod watch;
