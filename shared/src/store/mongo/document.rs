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
    bson::serialize_to_document(&MongoRecord::from(rec))
        .map_err(|e| StoreError::Backend(Box::new(e)))
}

pub(super) fn from_document(document: Document) -> Result<SagaRecord, StoreError> {
    let id = match document.get("saga_id").or_else(|| document.get("_id")) {
        Some(Bson::String(id)) => id.clone(),
        Some(other) => other.to_string(),
        None => "<no _id>".into(),
    };
    bson::deserialize_from_document::<MongoRecord>(document)
        .map_err(|e| e.to_string())
        .and_then(SagaRecord::try_from)
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
    #[serde(
        default,
        with = "json_text::option",
        skip_serializing_if = "Option::is_none"
    )]
    next: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fallback: Option<Fallback>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    response: Option<MongoResponse>,
    #[serde(default)]
    history: Vec<MongoEvent>,
    #[serde(default, skip_serializing_if = "is_zero")]
    attempts: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
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

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// [`SavedResponse`] as stored in MongoDB. An answer is nearly always the record's own
/// ([`SagaRecord::answer_body`]: every field of it is a field of the record), so it is stored
/// as the name of the service that gave it, and spelled again on read; any other body (an
/// error's, or one saved before the record changed) is stored as it is. This keeps a final
/// version from carrying the next hop's answer twice, once in `next` and once inside the
/// answer: on FerretDB a document's size is most of what a write costs.
#[derive(Serialize, Deserialize)]
struct MongoResponse {
    status: u16,
    /// The body, unless it is the record's own.
    #[serde(
        default,
        with = "json_text::option",
        skip_serializing_if = "Option::is_none"
    )]
    body: Option<Json>,
    /// The service whose own answer about the record the body is, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    of: Option<String>,
}

impl MongoResponse {
    fn of(rec: &SagaRecord, saved: &SavedResponse) -> Self {
        let own = saved
            .body
            .get("service")
            .and_then(Json::as_str)
            .filter(|service| rec.answer_body(service) == saved.body);
        MongoResponse {
            status: saved.status,
            body: own.is_none().then(|| saved.body.clone()),
            of: own.map(str::to_owned),
        }
    }
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

impl From<&SagaRecord> for MongoRecord {
    fn from(rec: &SagaRecord) -> Self {
        let response = rec
            .response
            .as_ref()
            .map(|saved| MongoResponse::of(rec, saved));
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
            response: _,
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
            saga_id: *saga_id,
            key: key.clone(),
            fingerprint: fingerprint.clone(),
            id: id.clone(),
            count: *count,
            status: *status,
            body: body.clone(),
            next: next.clone(),
            fallback: fallback.clone(),
            response,
            history: history.iter().cloned().map(MongoEvent::from).collect(),
            attempts: *attempts,
            redrives: *redrives,
            due_at: *due_at,
            leased_by: leased_by.clone(),
            version: *version,
            created_at: *created_at,
            updated_at: *updated_at,
        }
    }
}

impl TryFrom<MongoRecord> for SagaRecord {
    type Error = String;

    fn try_from(rec: MongoRecord) -> Result<Self, String> {
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
        let mut record = SagaRecord {
            saga_id,
            key,
            fingerprint,
            id,
            count,
            status,
            body,
            next,
            fallback,
            response: None,
            history: history.into_iter().map(HistoryEvent::from).collect(),
            attempts,
            redrives,
            due_at,
            leased_by,
            version,
            created_at,
            updated_at,
        };
        record.response = match response {
            None => None,
            Some(MongoResponse {
                status,
                body: Some(body),
                of: _,
            }) => Some(SavedResponse { status, body }),
            Some(MongoResponse {
                status,
                body: None,
                of: Some(service),
            }) => Some(SavedResponse {
                status,
                body: record.answer_body(&service),
            }),
            Some(MongoResponse {
                body: None,
                of: None,
                ..
            }) => {
                return Err(
                    "response has neither a body nor the service it is the answer of".into(),
                )
            }
        };
        Ok(record)
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record() -> SagaRecord {
        let mut rec = SagaRecord::accepted(
            "k".into(),
            "f".into(),
            "1".into(),
            1,
            json!({"id": "1", "payment": {"id": "1"}}),
        );
        rec.next = Some(json!({"service": "payment", "status": "completed"}));
        rec.status = Status::Completed;
        rec
    }

    #[test]
    fn the_records_own_answer_is_stored_as_its_services_name_and_read_back_whole() {
        let mut rec = record();
        rec.response = Some(SavedResponse {
            status: 200,
            body: rec.answer_body("order"),
        });
        let doc = to_document(&rec).expect("serialises");
        let response = doc.get_document("response").expect("a response");
        assert_eq!(response.get_str("of").ok(), Some("order"));
        assert!(
            response.get("body").is_none(),
            "the body is not stored: {doc}"
        );
        for absent in ["fallback", "attempts", "redrives"] {
            assert!(doc.get(absent).is_none(), "{absent} is empty: {doc}");
        }
        assert_eq!(from_document(doc).expect("reads back"), rec);
    }

    #[test]
    fn any_other_answer_is_stored_as_it_is() {
        let mut rec = record();
        // An answer saved before the record moved on is not the record's own any more.
        let mut body = rec.answer_body("order");
        rec.response = Some(SavedResponse { status: 200, body });
        rec.status = Status::Compensated;
        let doc = to_document(&rec).expect("serialises");
        let response = doc.get_document("response").expect("a response");
        assert!(response.get("of").is_none(), "{doc}");
        assert!(response.get_str("body").is_ok(), "{doc}");
        assert_eq!(from_document(doc).expect("reads back"), rec);

        body = json!({"error": "conflict", "service": "order"});
        rec.response = Some(SavedResponse { status: 409, body });
        assert_eq!(
            from_document(to_document(&rec).expect("serialises")).expect("reads back"),
            rec
        );
    }

    #[test]
    fn a_response_with_neither_body_nor_service_is_corrupt() {
        let rec = record();
        let mut doc = to_document(&rec).expect("serialises");
        doc.insert("response", bson::doc! { "status": 200 });
        assert!(matches!(from_document(doc), Err(StoreError::Corrupt(_))));
    }
}
