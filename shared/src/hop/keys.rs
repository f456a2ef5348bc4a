//! The hop secrets: [`HopKeys`], read from `HOP_*`, and the [`Secret`] that never prints.
//!
//! A service signs its hop calls with one key and accepts calls signed with any key it lists, so
//! a secret is rotated without a moment where two services disagree: first every service learns
//! the new key (`HOP_ACCEPTED_SECRETS`), then each signs with it (`HOP_SECRET`, `HOP_KEY_ID`), and
//! last the old one is dropped from every list. A key id travels with each call and picks the
//! secret to check it with, so the receiver never has to try them all.
//!
//! Secrets are opaque strings of at least [`MIN_SECRET_LEN`] visible ASCII characters. A bad
//! one is reported like any bad variable — its name and what was expected — but with its value
//! replaced by its length: a secret must not reach a log, not even a start-up error's.

use crate::env::Reader;
use std::fmt;
use std::time::Duration;

/// The shortest secret accepted: 32 characters, so a random one carries at least the 128 bits
/// a guess must beat even from a small alphabet.
pub const MIN_SECRET_LEN: usize = 32;
/// The longest: far more than any key needs, and short enough to stay out of memory trouble.
pub const MAX_SECRET_LEN: usize = 1024;
/// The key id when `HOP_KEY_ID` is unset.
pub const DEFAULT_KEY_ID: &str = "k1";

/// A shared secret. `Debug` and `Display` print its length, never the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret as given; [`HopKeys::read`] is where one from the environment is checked.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub(crate) fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} characters>)", self.0.len())
    }
}

/// One key: its id and its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopKey {
    pub id: String,
    pub secret: Secret,
}

/// The hop-signing configuration of one service; [`HopKeys::read`] gives `None` when
/// `HOP_SECRET` is unset (hops are neither signed nor checked).
#[derive(Debug, Clone, PartialEq)]
pub struct HopKeys {
    /// `HOP_SECRET` under `HOP_KEY_ID`: signs every call to the next hop; also accepted.
    pub signing: HopKey,
    /// `HOP_ACCEPTED_SECRETS`: further keys whose calls are accepted (rotation).
    pub accepted: Vec<HopKey>,
    /// `HOP_MAX_SKEW_MS`: how far a call's timestamp may be from our clock, either way.
    pub max_skew: Duration,
}

impl HopKeys {
    /// The secret for `id`, if this service accepts it.
    pub fn find(&self, id: &str) -> Option<&Secret> {
        std::iter::once(&self.signing)
            .chain(&self.accepted)
            .find(|k| k.id == id)
            .map(|k| &k.secret)
    }

    /// `HOP_SECRET`, `HOP_KEY_ID`, `HOP_ACCEPTED_SECRETS` (`id:secret,id:secret`) and
    /// `HOP_MAX_SKEW_MS` (30000). Key ids are 1 to 32 of `A-Z a-z 0-9 . _ -`, and unique.
    pub fn read(r: &mut Reader<'_>) -> Option<Self> {
        let max_skew = r.millis("HOP_MAX_SKEW_MS", Duration::from_secs(30), 1_000, 600_000);
        let id = r.parse(
            "HOP_KEY_ID",
            DEFAULT_KEY_ID.to_string(),
            "1 to 32 characters of A-Z a-z 0-9 . _ -",
            |v| valid_id(v).then(|| v.to_string()),
        );
        let secret = r.raw("HOP_SECRET").and_then(|v| match check_secret(&v) {
            Ok(()) => Some(Secret::new(v)),
            Err(why) => {
                r.reject("HOP_SECRET", redacted(&v), why);
                None
            }
        });
        let accepted = r
            .raw("HOP_ACCEPTED_SECRETS")
            .map(|v| parse_list(r, &v))
            .unwrap_or_default();
        let Some(secret) = secret else {
            if !accepted.is_empty() && r.raw("HOP_SECRET").is_none() {
                r.reject(
                    "HOP_ACCEPTED_SECRETS",
                    format!("<{} keys>", accepted.len()),
                    "HOP_SECRET set too: a service that checks signatures also signs",
                );
            }
            return None;
        };
        let signing = HopKey { id, secret };
        let mut seen = vec![signing.id.as_str()];
        for k in &accepted {
            if seen.contains(&k.id.as_str()) {
                r.reject(
                    "HOP_ACCEPTED_SECRETS",
                    format!("<key id {}>", k.id),
                    "each key id once, and not HOP_KEY_ID's",
                );
            }
            seen.push(&k.id);
        }
        Some(Self {
            signing,
            accepted,
            max_skew,
        })
    }
}

/// `id:secret,id:secret`; a bad entry is reported by its position and id, never its secret.
fn parse_list(r: &mut Reader<'_>, v: &str) -> Vec<HopKey> {
    let mut keys = Vec::new();
    for (n, entry) in v.split(',').map(str::trim).enumerate() {
        let at = format!("<entry {}>", n + 1);
        let Some((id, secret)) = entry.split_once(':') else {
            r.reject(
                "HOP_ACCEPTED_SECRETS",
                at,
                "id:secret pairs separated by commas",
            );
            continue;
        };
        if !valid_id(id) {
            r.reject(
                "HOP_ACCEPTED_SECRETS",
                at,
                "a key id of 1 to 32 characters of A-Z a-z 0-9 . _ - before the colon",
            );
            continue;
        }
        match check_secret(secret) {
            Ok(()) => keys.push(HopKey {
                id: id.to_string(),
                secret: Secret::new(secret),
            }),
            Err(why) => r.reject("HOP_ACCEPTED_SECRETS", format!("<key id {id}>"), why),
        }
    }
    keys
}

fn valid_id(v: &str) -> bool {
    (1..=32).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn check_secret(v: &str) -> Result<(), String> {
    if v.len() < MIN_SECRET_LEN || v.len() > MAX_SECRET_LEN {
        return Err(format!(
            "a secret of {MIN_SECRET_LEN} to {MAX_SECRET_LEN} characters"
        ));
    }
    if !v.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
        return Err("a secret of visible ASCII characters, without commas or spaces".into());
    }
    Ok(())
}

/// What an error shows instead of a secret.
fn redacted(v: &str) -> String {
    format!("<secret, {} characters>", v.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "fedcba9876543210fedcba9876543210";

    fn read(vars: &[(&str, &str)]) -> Result<Option<HopKeys>, crate::env::ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut r = Reader::new(|k| map.get(k).cloned());
        let keys = HopKeys::read(&mut r);
        r.finish(keys)
    }

    #[test]
    fn unset_means_no_signing_and_a_secret_with_accepted_keys_parses() {
        assert_eq!(read(&[]).unwrap(), None);
        let keys = read(&[
            ("HOP_SECRET", A),
            ("HOP_KEY_ID", "k2"),
            ("HOP_ACCEPTED_SECRETS", &format!("k1:{B}")),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(keys.signing.id, "k2");
        assert_eq!(keys.find("k2").map(Secret::expose), Some(A.as_bytes()));
        assert_eq!(keys.find("k1").map(Secret::expose), Some(B.as_bytes()));
        assert!(keys.find("k3").is_none());
        assert_eq!(keys.max_skew, Duration::from_secs(30));
    }

    #[test]
    fn bad_secrets_are_refused_without_showing_them() {
        for (vars, var) in [
            (vec![("HOP_SECRET", "short")], "HOP_SECRET"),
            (
                vec![("HOP_SECRET", "0123456789 abcdef0123456789abcdef")],
                "HOP_SECRET",
            ),
            (
                vec![("HOP_SECRET", A), ("HOP_ACCEPTED_SECRETS", "k0:tooshort")],
                "HOP_ACCEPTED_SECRETS",
            ),
            (
                vec![("HOP_SECRET", A), ("HOP_ACCEPTED_SECRETS", B)],
                "HOP_ACCEPTED_SECRETS",
            ),
            (
                vec![
                    ("HOP_SECRET", A),
                    ("HOP_ACCEPTED_SECRETS", &format!("k1:{B}")),
                ],
                "HOP_ACCEPTED_SECRETS",
            ),
            (
                vec![("HOP_ACCEPTED_SECRETS", &format!("k0:{B}"))],
                "HOP_ACCEPTED_SECRETS",
            ),
            (vec![("HOP_SECRET", A), ("HOP_KEY_ID", "a b")], "HOP_KEY_ID"),
            (
                vec![("HOP_SECRET", A), ("HOP_MAX_SKEW_MS", "10")],
                "HOP_MAX_SKEW_MS",
            ),
        ] {
            let err = read(&vars).unwrap_err();
            assert_eq!(err.0[0].var, var, "{vars:?}");
            let text = err.to_string();
            for (_, v) in &vars {
                if v.len() >= 20 {
                    assert!(!text.contains(&v[..20]), "a secret in {text:?}");
                }
            }
        }
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let keys = read(&[("HOP_SECRET", A)]).unwrap().unwrap();
        let shown = format!("{keys:?}");
        assert!(!shown.contains(A), "{shown}");
        assert!(shown.contains("32 characters"), "{shown}");
    }
}
