//! shipment stores `Shipment` records in `shipments`; it is the last hop and forwards nothing.

use serde::{Deserialize, Serialize};
use shared::field::{BusinessId, Text};
use shared::Part;
use utoipa::ToSchema;

/// Where to deliver: free text, up to 1000 characters.
pub type Directions = Text<1000>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Shipment {
    #[schema(value_type = String, min_length = 1, max_length = 128, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub id: BusinessId,
    #[schema(value_type = String, min_length = 1, max_length = 1000, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$")]
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
