//! shipment stores `Shipment` records in `shipments`; it is the last hop and forwards nothing.

use serde::{Deserialize, Serialize};
use shared::saga::BusinessId;
use shared::Part;

/// Where to deliver: 1 to 1000 characters of text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Directions(String);

impl TryFrom<String> for Directions {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s.trim().is_empty() || s.chars().count() > 1000 {
            return Err(format!(
                "expected 1 to 1000 characters, got {} characters",
                s.chars().count()
            ));
        }
        Ok(Self(s))
    }
}

impl From<Directions> for String {
    fn from(d: Directions) -> Self {
        d.0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shipment {
    pub id: BusinessId,
    pub directions: Directions,
}

impl Part for Shipment {
    const SERVICE: &'static str = "shipment";
    const COLLECTION: &'static str = "shipments";
    const DEFAULT_PORT: u16 = 3002;
    const NEXT: Option<&'static str> = None;

    fn id(&self) -> &str {
        self.id.as_str()
    }

    fn forward(&self) -> Option<serde_json::Value> {
        None
    }
}
