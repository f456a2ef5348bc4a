//! order stores `Order` records in `orders` and forwards `payment` to the next hop.

use payment::Payment;
use serde::{Deserialize, Serialize};
use shared::field::BusinessId;
use shared::Part;
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Order {
    #[schema(value_type = String, min_length = 1, max_length = 128, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub id: BusinessId,
    /// Line items, opaque to the saga but each an object, as the schema says (the seed sends
    /// `[]`).
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<serde_json::Map<String, serde_json::Value>>,
    pub payment: Payment,
}

impl Part for Order {
    const SERVICE: &'static str = "order";
    const COLLECTION: &'static str = "orders";
    const DEFAULT_PORT: u16 = 3000;
    const EDGE: bool = true;
    const NEXT: Option<&'static str> = Some("payment");

    fn id(&self) -> &str {
        self.id.as_str()
    }

    fn forward(&self) -> Option<serde_json::Value> {
        serde_json::to_value(&self.payment).ok()
    }
}
