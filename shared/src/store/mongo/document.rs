//! How a [`SagaRecord`] looks as a MongoDB document: the BSON mapping of [`super::MongoStore`].
//!
//! Kept apart from the store's logic because it answers a different question ("what is on
//! disk", not "which commands run"). `MongoRecord` mirrors [`SagaRecord`] field for field and is
//! converted by exhaustive destructuring, so a field added to the record fails to compile here
//! until it is mapped. Timestamps become BSON dates (so they sort by time), and client JSON
//! (`body`, `next`, `response.body`) is stored as JSON text, because not every JSON value is a
//! valid BSON document on every server (see the store's module docs).

use crate::saga::{Fallback, HistoryEvent, SagaId, SagaRecord, SavedResponse, Status};
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use mongodb::bson::{self, Bson, Document};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

pub(super) fn to_document(rec: &SagaRecord) -> Result<Document, StoreError> {
    bson::serialize_to_document(&MongoRecord::from(rec.clone()))
        .map_err(|e| StoreError::Backend(Box::new(e)))
}

pub(super) fn from_document(document: Document) -> Result<SagaRecord, StoreError> {
    let id = match document.get("saga_id").or_else(|| document.get("_id")) {
        Some(Bson::String(id)) => id.clone(),
        Some(other) => other.to_string(),
        None => "<no _id>".into(),
    };
    bson::deserialize_from_document::<MongoRecord>(document)
        .map(SagaRecord::from)
        .map_err(|e| StoreError::Corrupt(format!("record {id}: {e}")))
}

/// [`SagaRecord`] as stored in MongoDB: the same fields, with BSON dates.
#[derive(Serialize, Deserialize)]
struct MongoRecord {
    /// The idempotency key. The document's `_id` is not part of the record: it is the key for
    /// the version a record was inserted at, and `"<key> <version>"` for each later version
    /// (see the store's module docs).
    key: String,
    saga_id: SagaId,
    fingerprint: String,
    id: String,
    count: u32,
    status: Status,
    #[serde(with = "json_text")]
    body: Json,
    #[serde(default, with = "json_text::option")]
    next: Option<Json>,
    #[serde(default)]
    fallback: Option<Fallback>,
    #[serde(default)]
    response: Option<MongoResponse>,
    #[serde(default)]
    history: Vec<MongoEvent>,
    #[serde(default)]
    attempts: u32,
    #[serde(default)]
    redrives: u32,
    #[serde(
        default,
        with = "bson_date::option",
        skip_serializing_if = "Option::is_none"
    )]
    due_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    leased_by: Option<String>,
    version: u64,
    #[serde(with = "bson_date")]
    created_at: DateTime<Utc>,
    #[serde(with = "bson_date")]
    updated_at: DateTime<Utc>,
}

/// [`SavedResponse`] as stored in MongoDB.
#[derive(Serialize, Deserialize)]
struct MongoResponse {
    status: u16,
    #[serde(with = "json_text")]
    body: Json,
}

/// [`HistoryEvent`] as stored in MongoDB.
#[derive(Serialize, Deserialize)]
struct MongoEvent {
    #[serde(with = "bson_date")]
    at: DateTime<Utc>,
    step: String,
    status: Status,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    reason: String,
}

impl From<SagaRecord> for MongoRecord {
    fn from(rec: SagaRecord) -> Self {
        let SagaRecord {
            saga_id,
            key,
            fingerprint,
            id,
            count,
            status,
            body,
            next,
            fallback,
            response,
            history,
            attempts,
            redrives,
            due_at,
            leased_by,
            version,
            created_at,
            updated_at,
        } = rec;
        MongoRecord {
            saga_id,
            key,
            fingerprint,
            id,
            count,
            status,
            body,
            next,
            fallback,
            response: response.map(|SavedResponse { status, body }| MongoResponse { status, body }),
            history: history.into_iter().map(MongoEvent::from).collect(),
            attempts,
            redrives,
            due_at,
            leased_by,
            version,
            created_at,
            updated_at,
        }
    }
}

impl From<MongoRecord> for SagaRecord {
    fn from(rec: MongoRecord) -> Self {
        let MongoRecord {
            saga_id,
            key,
            fingerprint,
            id,
            count,
            status,
            body,
            next,
            fallback,
            response,
            history,
            attempts,
            redrives,
            due_at,
            leased_by,
            version,
            created_at,
            updated_at,
        } = rec;
        SagaRecord {
            saga_id,
            key,
            fingerprint,
            id,
            count,
            status,
            body,
            next,
            fallback,
            response: response.map(|MongoResponse { status, body }| SavedResponse { status, body }),
            history: history.into_iter().map(HistoryEvent::from).collect(),
            attempts,
            redrives,
            due_at,
            leased_by,
            version,
            created_at,
            updated_at,
        }
    }
}

impl From<HistoryEvent> for MongoEvent {
    fn from(event: HistoryEvent) -> Self {
        let HistoryEvent {
            at,
            step,
            status,
            reason,
        } = event;
        MongoEvent {
            at,
            step,
            status,
            reason,
        }
    }
}

impl From<MongoEvent> for HistoryEvent {
    fn from(event: MongoEvent) -> Self {
        let MongoEvent {
            at,
            step,
            status,
            reason,
        } = event;
        HistoryEvent {
            at,
            step,
            status,
            reason,
        }
    }
}

/// `chrono` ⇄ BSON date (milliseconds since the epoch; sub-millisecond digits are dropped).
mod bson_date {
    use chrono::{DateTime, Utc};
    use mongodb::bson;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        bson::DateTime::from_millis(at.timestamp_millis()).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let millis = bson::DateTime::deserialize(d)?.timestamp_millis();
        DateTime::from_timestamp_millis(millis).ok_or_else(|| {
            serde::de::Error::custom(format!("date out of range: {millis} ms since the epoch"))
        })
    }

    /// An optional date; with `skip_serializing_if = "Option::is_none"` a `None` is no field at
    /// all, which `{"$lte": …}` never matches.
    pub mod option {
        use chrono::{DateTime, Utc};
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(
            at: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match at {
                Some(at) => super::serialize(at, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            #[derive(Deserialize)]
            struct Wrap(#[serde(with = "super")] DateTime<Utc>);
            Ok(Option::<Wrap>::deserialize(d)?.map(|Wrap(at)| at))
        }
    }
}

/// A JSON value ⇄ its JSON text (see the module docs for why).
mod json_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_json::Value;

    pub fn serialize<S: Serializer>(value: &Value, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&value.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        let text = String::deserialize(d)?;
        serde_json::from_str(&text).map_err(serde::de::Error::custom)
    }

    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};
        use serde_json::Value;

        pub fn serialize<S: Serializer>(value: &Option<Value>, s: S) -> Result<S::Ok, S::Error> {
            match value {
                Some(value) => super::serialize(value, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|text| serde_json::from_str(&text).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}
