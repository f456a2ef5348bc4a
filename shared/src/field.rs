//! Field types the services' record types are built from: parsing into them is the validation.
//!
//! A record type (`Order`, `Payment`, `Shipment`) is plain `serde` structs over these, so a body
//! that deserializes is a body that is valid, and nothing past the handler checks again.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Text of 1 to `MAX` characters, not blank, without control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Text<const MAX: usize>(String);

impl<const MAX: usize> TryFrom<String> for Text<MAX> {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        let chars = s.chars().count();
        if s.trim().is_empty() || chars > MAX || s.chars().any(char::is_control) {
            return Err(format!(
                "expected 1 to {MAX} characters, not blank, without control characters \
                 (got {chars} characters)"
            ));
        }
        Ok(Self(s))
    }
}

impl<const MAX: usize> From<Text<MAX>> for String {
    fn from(t: Text<MAX>) -> Self {
        t.0
    }
}

impl<const MAX: usize> Text<MAX> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> fmt::Display for Text<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The client's `id` field: business data (the seed posts `"1"` again and again), never a key.
pub type BusinessId = Text<128>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_refuses_blank_long_and_control_characters() {
        assert!(Text::<5>::try_from("abc".to_string()).is_ok());
        assert!(Text::<5>::try_from("ünï".to_string()).is_ok());
        for bad in ["", "   ", "abcdef", "a\u{0}b", "a\nb"] {
            assert!(Text::<5>::try_from(bad.to_string()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn text_round_trips_through_json() {
        let t: Text<10> = serde_json::from_str("\"home\"").unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"home\"");
        assert!(serde_json::from_str::<Text<3>>("\"home\"").is_err());
    }
}
