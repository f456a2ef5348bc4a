//! payment stores `Payment` records in `payments` and forwards `shipment` to the next hop.

use serde::{Deserialize, Serialize};
use shared::field::BusinessId;
use shared::Part;
use shipment::Shipment;
use utoipa::ToSchema;

/// A payment amount: a finite number, zero or more.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Amount(f64);

impl TryFrom<f64> for Amount {
    type Error = String;
    fn try_from(v: f64) -> Result<Self, Self::Error> {
        if v.is_finite() && v >= 0.0 {
            Ok(Self(v))
        } else {
            Err(format!("expected a number of zero or more, got {v}"))
        }
    }
}

impl From<Amount> for f64 {
    fn from(a: Amount) -> Self {
        a.0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Payment {
    #[schema(value_type = String, min_length = 1, max_length = 128, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub id: BusinessId,
    #[schema(value_type = f64, minimum = 0)]
    pub amount: Amount,
    pub shipment: Shipment,
}

impl Part for Payment {
    const SERVICE: &'static str = "payment";
    const COLLECTION: &'static str = "payments";
    const DEFAULT_PORT: u16 = 3001;
    const NEXT: Option<&'static str> = Some("shipment");

    fn id(&self) -> &str {
        self.id.as_str()
    }

    fn forward(&self) -> Option<serde_json::Value> {
        serde_json::to_value(&self.shipment).ok()
    }
}
