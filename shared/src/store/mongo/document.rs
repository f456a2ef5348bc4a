//! How a [`SagaRecord`] looks as a MongoDB document: the BSON mapping of [`super::MongoStore`].
//!
//! Kept apart from the store's logic because it answers a different question ("what is on
//! disk", not "which commands run"). `MongoRecord` mirrors [`SagaRecord`] field for field and is
//! converted by exhaustive destructuring, so a field added to the record fails to compile here
//! until it is mapped. What a document leaves out, to be small (on FerretDB its size is most of
//! what a write costs): the key (its `_id` holds it), empty fields, the saved answer when it is
//! the record's own, and in a version after the first the fields fixed at acceptance. Timestamps become BSON dates (so they sort by time), and client JSON
//! (`body`, `next`, `response.body`) is stored as JSON text, because not every JSON value is a
//! valid BSON document on every server (see the store's module docs).

use crate::saga::{Fallback, HistoryEvent, SagaId, SagaRecord, SavedResponse, Status};
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use mongodb::bson::{self, Bson, Document};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// `rec` as a whole document: every field (the record's first version).
pub(super) fn to_document(rec: &SagaRecord) -> Result<Document, StoreError> {
    serialize(&MongoRecord::of(rec, Version::First))
}

/// `rec` as a version after its first: without the fields fixed when the request was accepted
/// (`fingerprint`, `id`, `count`, `body`, `created_at`), which its first version holds.
pub(super) fn to_later_document(rec: &SagaRecord) -> Result<Document, StoreError> {
    serialize(&MongoRecord::of(rec, Version::Later))
}

fn serialize(rec: &MongoRecord) -> Result<Document, StoreError> {
    bson::serialize_to_document(rec).map_err(|e| StoreError::Backend(Box::new(e)))
}

/// Which version of its record a document is: what it holds of the accepted fields.
#[derive(Clone, Copy, PartialEq)]
enum Version {
    /// The version the record was inserted at: every field.
    First,
    /// A later one: without the fields fixed at acceptance.
    Later,
}

/// A whole document (a first version, or any version written before later versions left the
/// accepted fields out) as its record.
#[cfg(test)]
pub(super) fn from_document(document: Document) -> Result<SagaRecord, StoreError> {
    decode(document)?.into_record(None)
}

/// Decodes a stored document; [`Stored::into_record`] makes it a record.
pub(super) fn decode(document: Document) -> Result<Stored, StoreError> {
    let name = match document.get("saga_id").or_else(|| document.get("_id")) {
        Some(Bson::String(id)) => id.clone(),
        Some(other) => other.to_string(),
        None => "<no _id>".into(),
    };
    let corrupt = |e: String| StoreError::Corrupt(format!("record {name}: {e}"));
    let first = document.get_bool(super::FIRST).unwrap_or(false);
    // The key is the first version's `_id`, and the part of a later one's before its space.
    let from_id = document
        .get_str("_id")
        .map(|id| match id.rsplit_once(' ') {
            Some((key, _)) if !first => key.to_owned(),
            _ => id.to_owned(),
        })
        .ok();
    let mut rec = bson::deserialize_from_document::<MongoRecord>(document)
        .map_err(|e| corrupt(e.to_string()))?;
    // Documents written before the key was left out carry it themselves.
    let key = rec
        .key
        .take()
        .or(from_id)
        .ok_or_else(|| corrupt("no key and no string _id".into()))?;
    Ok(Stored {
        key,
        name,
        first,
        rec,
    })
}

/// One stored document, decoded: a whole record, or a version after the first that needs its
/// first version's accepted fields.
pub(super) struct Stored {
    key: String,
    name: String,
    /// The version the record was inserted at (marked `first: true`).
    first: bool,
    rec: MongoRecord,
}

impl Stored {
    pub(super) fn key(&self) -> &str {
        &self.key
    }

    pub(super) fn version(&self) -> u64 {
        self.rec.version
    }

    /// When the re-driver should take the record up, if this is its newest version.
    pub(super) fn due_at(&self) -> Option<DateTime<Utc>> {
        self.rec.due_at.filter(|_| !self.rec.status.is_terminal())
    }

    /// Whether it is the version the record was inserted at, which holds every field.
    pub(super) fn is_first(&self) -> bool {
        self.first
    }

    /// The record this document is a version of, the fields it leaves out taken from `first`
    /// (the same record's first version).
    pub(super) fn into_record(self, first: Option<&SagaRecord>) -> Result<SagaRecord, StoreError> {
        let Stored {
            key, name, mut rec, ..
        } = self;
        if let Some(first) = first {
            rec.fingerprint
                .get_or_insert_with(|| first.fingerprint.clone());
            rec.id.get_or_insert_with(|| first.id.clone());
            rec.count.get_or_insert(first.count);
            rec.body.get_or_insert_with(|| first.body.clone());
            rec.created_at.get_or_insert(first.created_at);
        }
        rec.into_record(key)
            .map_err(|e| StoreError::Corrupt(format!("record {name}: {e}")))
    }
}

/// [`SagaRecord`] as stored in MongoDB: the same fields, with BSON dates. The fields fixed when
/// the request was accepted are optional: a version after the first leaves them out.
#[derive(Serialize, Deserialize)]
struct MongoRecord {
    /// The idempotency key: not stored, since the document's `_id` holds it (the key itself for
    /// the version a record was inserted at, `"<key> <version>"` for each later version; see
    /// the store's module docs). Read from documents written before it was left out.
    #[serde(default, skip_serializing)]
    key: Option<String>,
    saga_id: SagaId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    count: Option<u32>,
    status: Status,
    #[serde(
        default,
        with = "json_text::option",
        skip_serializing_if = "Option::is_none"
    )]
    body: Option<Json>,
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
    #[serde(
        default,
        with = "bson_date::option",
        skip_serializing_if = "Option::is_none"
    )]
    created_at: Option<DateTime<Utc>>,
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

impl MongoRecord {
    /// `rec` as the document of `which` version.
    fn of(rec: &SagaRecord, which: Version) -> Self {
        let first = which == Version::First;
        let response = rec
            .response
            .as_ref()
            .map(|saved| MongoResponse::of(rec, saved));
        let SagaRecord {
            saga_id,
            key: _, // in the document's `_id`
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
            key: None,
            fingerprint: first.then(|| fingerprint.clone()),
            id: first.then(|| id.clone()),
            count: first.then_some(*count),
            status: *status,
            body: first.then(|| body.clone()),
            next: next.clone(),
            fallback: fallback.clone(),
            response,
            history: history.iter().cloned().map(MongoEvent::from).collect(),
            attempts: *attempts,
            redrives: *redrives,
            due_at: *due_at,
            leased_by: leased_by.clone(),
            version: *version,
            created_at: first.then_some(*created_at),
            updated_at: *updated_at,
        }
    }
}

impl MongoRecord {
    /// The record under `key`; fails on an accepted field still missing (a later version read
    /// without its first).
    fn into_record(self, key: String) -> Result<SagaRecord, String> {
        let MongoRecord {
            saga_id,
            key: _,
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
        } = self;
        let missing = |field: &str| {
            format!("version {version} has no {field} (and no first version was read)")
        };
        let fingerprint = fingerprint.ok_or_else(|| missing("fingerprint"))?;
        let id = id.ok_or_else(|| missing("id"))?;
        let count = count.ok_or_else(|| missing("count"))?;
        let body = body.ok_or_else(|| missing("body"))?;
        let created_at = created_at.ok_or_else(|| missing("created_at"))?;
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
    use serde::Serializer;
    use serde_json::Value;

    pub fn serialize<S: Serializer>(value: &Value, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&value.to_string())
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

    /// `rec` as its first version's document, `_id` and all.
    fn whole(rec: &SagaRecord) -> Document {
        let mut doc = to_document(rec).expect("serialises");
        doc.insert("_id", rec.key.clone());
        doc.insert(crate::store::mongo::FIRST, true);
        doc
    }

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
        let doc = whole(&rec);
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
        let doc = whole(&rec);
        let response = doc.get_document("response").expect("a response");
        assert!(response.get("of").is_none(), "{doc}");
        assert!(response.get_str("body").is_ok(), "{doc}");
        assert_eq!(from_document(doc).expect("reads back"), rec);

        body = json!({"error": "conflict", "service": "order"});
        rec.response = Some(SavedResponse { status: 409, body });
        assert_eq!(from_document(whole(&rec)).expect("reads back"), rec);
    }

    #[test]
    fn a_later_version_leaves_the_accepted_fields_to_the_first() {
        let first = record();
        let doc = whole(&first);
        assert!(doc.get("key").is_none(), "the key is the _id: {doc}");
        let first_back = decode(doc).expect("decodes");
        assert!(first_back.is_first());
        let first_back = first_back.into_record(None).expect("whole");
        assert_eq!(first_back, first);

        let mut next = first.clone();
        next.version = 1;
        next.status = Status::Compensating;
        next.attempts = 2;
        let mut doc = to_later_document(&next).expect("serialises");
        for absent in ["key", "body", "fingerprint", "id", "count", "created_at"] {
            assert!(doc.get(absent).is_none(), "{absent} is left out: {doc}");
        }
        doc.insert("_id", "k 1");
        let later = decode(doc).expect("decodes");
        assert_eq!(
            (later.key(), later.version(), later.is_first()),
            ("k", 1, false)
        );
        assert!(
            matches!(
                decode(
                    to_later_document(&next)
                        .map(|mut d| {
                            d.insert("_id", "k 1");
                            d
                        })
                        .expect("serialises")
                )
                .expect("decodes")
                .into_record(None),
                Err(StoreError::Corrupt(_))
            ),
            "alone, a later version is not a record"
        );
        assert_eq!(later.into_record(Some(&first)).expect("completed"), next);
    }

    #[test]
    fn a_response_with_neither_body_nor_service_is_corrupt() {
        let rec = record();
        let mut doc = whole(&rec);
        doc.insert("response", bson::doc! { "status": 200 });
        assert!(matches!(from_document(doc), Err(StoreError::Corrupt(_))));
    }
}
