//! What makes a service a service: its part of the request.
//!
//! The three binaries differ only in data — what their part of the request looks like, which
//! collection stores it, which nested part goes to the next hop — and this trait is all of it.
//! It sits at the bottom of `service/` (and under the OpenAPI document) so every other file can
//! be generic over it without importing anything else.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// What makes a service a service: its part of the request. Implemented by the three binaries'
/// record types; parsing into it *is* the validation (`serde` + newtypes that refuse bad values).
pub trait Part: Serialize + DeserializeOwned + utoipa::ToSchema + Send + Sync + 'static {
    /// The service's name: `order`.
    const SERVICE: &'static str;
    /// Its collection, also the path of `GET /<collection>/{id}`: `orders`.
    const COLLECTION: &'static str;
    /// The port it listens on unless `PORT` says otherwise.
    const DEFAULT_PORT: u16;
    /// The public entry of the chain (order): its `/create` and `/compensate` take clients'
    /// calls, so they never ask for a hop signature. The others, with `HOP_SECRET` set, do.
    const EDGE: bool = false;
    /// The service its nested part goes to (`payment` for order), for the breaker's name.
    const NEXT: Option<&'static str>;

    /// The client's business `id`.
    fn id(&self) -> &str;

    /// The nested part the next hop receives (`payment` for order), if this part has one.
    fn forward(&self) -> Option<serde_json::Value>;
}
