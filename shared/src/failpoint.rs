//! Named failpoints at every step of a hop, for the fault matrix: `FAILPOINTS=forward=crash`.
//!
//! A saga's promise — every saga ends all-completed or all-compensated, nothing twice, nothing
//! stuck — has to hold whatever step a service dies at, fails at, or sees twice. So each step of
//! a hop is a named [`Point`], and a test arms one with an [`Action`] through `FAILPOINTS`
//! (`point=action`, comma-separated); each armed point fires **once**, the first time a request
//! or the re-driver passes it, then is spent:
//!
//! | point | where |
//! |---|---|
//! | `accept` | the record is stored (the last hop's already completed); nothing forwarded or answered |
//! | `forward` | the next hop answered the forward, before its answer is read |
//! | `answer` | the answer is read, before the record moves by it |
//! | `write` | the record moved, before its final write (which may follow the answer) |
//! | `compensate` | the next hop answered a `/compensate`, before the record moves by it |
//!
//! and the actions are `crash` (the process aborts: nothing after the point runs, nothing is
//! flushed), `error` (the step fails: a 500 at the request's steps, a broken connection at the
//! hop's) and `duplicate` (the message of that step is delivered twice: a twin of the request
//! arrives at that point, or the hop call is sent again).
//!
//! The firing is compiled in only with the `failpoints` cargo feature, which testkit turns on
//! for the workspace's test builds; without it [`fire`] is an inline `None` and a set
//! `FAILPOINTS` stops start-up, so a release build can neither carry nor pretend to carry them.

use crate::env::Reader;
use std::fmt;

/// A step of a hop where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Point {
    Accept,
    Forward,
    Answer,
    Write,
    Compensate,
}

impl Point {
    pub const ALL: [Point; 5] = [
        Point::Accept,
        Point::Forward,
        Point::Answer,
        Point::Write,
        Point::Compensate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Point::Accept => "accept",
            Point::Forward => "forward",
            Point::Answer => "answer",
            Point::Write => "write",
            Point::Compensate => "compensate",
        }
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What an armed point does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Crash,
    Error,
    Duplicate,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Crash, Action::Error, Action::Duplicate];

    pub fn name(self) -> &'static str {
        match self {
            Action::Crash => "crash",
            Action::Error => "error",
            Action::Duplicate => "duplicate",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `FAILPOINTS`: the armed points; empty unless set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failpoints(pub Vec<(Point, Action)>);

impl Failpoints {
    /// `FAILPOINTS=point=action,…`. Refused when set in a build without the `failpoints`
    /// feature, so a test can't believe it injected what was never compiled in.
    pub fn read(r: &mut Reader<'_>) -> Self {
        let Some(raw) = r.raw("FAILPOINTS") else {
            return Self::default();
        };
        if !cfg!(feature = "failpoints") {
            r.reject(
                "FAILPOINTS",
                raw,
                "unset: this build has no failpoints (the `failpoints` cargo feature, for tests)",
            );
            return Self::default();
        }
        let mut armed = Vec::new();
        for entry in raw.split(',').map(str::trim) {
            let parsed = entry.split_once('=').and_then(|(p, a)| {
                let p = Point::ALL.into_iter().find(|x| x.name() == p.trim())?;
                let a = Action::ALL.into_iter().find(|x| x.name() == a.trim())?;
                Some((p, a))
            });
            match parsed {
                Some(pa) => armed.push(pa),
                None => {
                    r.reject(
                        "FAILPOINTS",
                        raw.clone(),
                        "point=action pairs: points accept, forward, answer, write, compensate; \
                         actions crash, error, duplicate",
                    );
                    break;
                }
            }
        }
        Self(armed)
    }
}

#[cfg(feature = "failpoints")]
mod armed {
    use super::{Action, Failpoints, Point};
    use std::sync::Mutex;

    /// The points still armed in this process. A process-wide list, not per service: the
    /// matrix runs each service as its own process.
    static ARMED: Mutex<Vec<(Point, Action)>> = Mutex::new(Vec::new());

    pub fn arm(points: &Failpoints) {
        if let Ok(mut armed) = ARMED.lock() {
            armed.extend(points.0.iter().copied());
        }
    }

    pub fn fire(point: Point) -> Option<Action> {
        let mut armed = ARMED.lock().ok()?;
        let i = armed.iter().position(|(p, _)| *p == point)?;
        let (_, action) = armed.remove(i);
        tracing::warn!(
            event = "failpoint",
            point = point.name(),
            action = action.name()
        );
        if action == Action::Crash {
            // Like a SIGKILL: no unwinding, no flush, no graceful shutdown.
            eprintln!("failpoint {point}: crash");
            std::process::abort();
        }
        Some(action)
    }
}

/// Arms the points of `FAILPOINTS` (start-up). Without the feature there is nothing to arm:
/// [`Failpoints::read`] refused them.
pub fn arm(points: &Failpoints) {
    #[cfg(feature = "failpoints")]
    armed::arm(points);
    #[cfg(not(feature = "failpoints"))]
    let _ = points;
}

/// Fires `point` if it is armed: a crash never returns; an error or a duplicate is for the
/// caller to act out. `None` (always, without the feature) when it is not armed.
#[inline(always)]
pub fn fire(point: Point) -> Option<Action> {
    #[cfg(feature = "failpoints")]
    return armed::fire(point);
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = point;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(v: &str) -> Result<Failpoints, crate::env::ConfigError> {
        let v = v.to_string();
        let mut r = Reader::new(move |k| (k == "FAILPOINTS").then(|| v.clone()));
        let f = Failpoints::read(&mut r);
        r.finish(f)
    }

    #[test]
    fn pairs_parse_and_garbage_is_refused() {
        if cfg!(feature = "failpoints") {
            assert_eq!(
                read("forward=crash, write=duplicate").unwrap().0,
                vec![
                    (Point::Forward, Action::Crash),
                    (Point::Write, Action::Duplicate)
                ]
            );
            assert!(read("forward=explode").is_err());
            assert!(read("nowhere=crash").is_err());
        } else {
            assert!(
                read("forward=crash").is_err(),
                "no failpoints in this build"
            );
        }
    }
}
