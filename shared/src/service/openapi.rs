//! The OpenAPI 3.1 document each service serves at `/openapi.json`, generated from the code.
//!
//! The request body schema comes from the service's own record type (`Part: ToSchema`, derived
//! next to its serde attributes, so validation and documentation can't drift apart); the
//! response shapes are declared here once for all three services. Tools such as schemathesis
//! read this document to generate requests and check the answers against it.

use super::part::Part;
use serde_json::Value;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Ref, Schema, Type};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathItem,
    PathsBuilder, RefOr, Required, ResponseBuilder,
};
use utoipa::ToSchema;

/// The status of a record.
#[allow(dead_code)]
#[derive(ToSchema)]
#[schema(as = Status)]
#[serde(rename_all = "snake_case")]
enum StatusDoc {
    Pending,
    Degraded,
    Compensating,
    Completed,
    Compensated,
    Failed,
}

/// Why the next hop was skipped.
#[allow(dead_code)]
#[derive(ToSchema)]
#[schema(as = Fallback)]
struct FallbackDoc {
    /// `open`, `timeout`, `http 502`, `connect`, `deadline`, …
    reason: String,
    detail: String,
}

/// The answer to `POST /create`.
#[allow(dead_code)]
#[derive(ToSchema)]
#[schema(as = CreateResponse)]
struct CreateDoc {
    service: String,
    /// The saga's server id (UUID v7); null when the chain stopped here (`last`).
    #[schema(value_type = Option<String>, format = Uuid)]
    saga_id: Option<String>,
    id: String,
    count: u32,
    /// `completed`, `degraded`, `failed`, `last`; later (replays, `/compensate`) also
    /// `compensating` or `compensated`.
    status: String,
    /// The next hop's answer, nested.
    #[schema(value_type = Option<Object>)]
    next: Option<Value>,
    fallback: Option<FallbackDoc>,
    /// `Last` when the hop limit (`JUMPS`) was reached.
    message: Option<String>,
}

/// One step of a record's history.
#[allow(dead_code)]
#[derive(ToSchema)]
#[schema(as = HistoryEvent)]
struct HistoryDoc {
    #[schema(format = DateTime)]
    at: String,
    step: String,
    status: StatusDoc,
    reason: Option<String>,
}

/// A stored record.
#[allow(dead_code)]
#[derive(ToSchema)]
#[schema(as = Record)]
struct RecordDoc {
    #[schema(format = Uuid)]
    saga_id: String,
    service: String,
    id: String,
    count: u32,
    status: StatusDoc,
    #[schema(value_type = Object)]
    body: Value,
    #[schema(value_type = Option<Object>)]
    next: Option<Value>,
    fallback: Option<FallbackDoc>,
    history: Vec<HistoryDoc>,
    attempts: u32,
    /// Times the re-driver took the record up.
    redrives: u32,
    /// When the re-driver takes it up next; null once terminal.
    #[schema(format = DateTime)]
    due_at: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

/// Every error answer.
#[allow(dead_code)]
#[derive(ToSchema)]
#[schema(as = Error)]
struct ErrorDoc {
    /// A stable code: `invalid_json`, `invalid_field`, `payload_too_large`, …
    error: String,
    message: String,
    /// The offending field as a dotted path, when there is one.
    field: Option<String>,
}

const UUID_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

fn component<T: ToSchema>(schemas: &mut Vec<(String, RefOr<Schema>)>) -> Ref {
    schemas.push((T::name().into(), T::schema()));
    T::schemas(schemas);
    Ref::from_schema_name(T::name())
}

fn json(schema: &Ref) -> utoipa::openapi::Content {
    ContentBuilder::new().schema(Some(schema.clone())).build()
}

fn respond(description: &str, schema: Option<&Ref>) -> utoipa::openapi::Response {
    let b = ResponseBuilder::new().description(description);
    match schema {
        Some(s) => b.content("application/json", json(s)).build(),
        None => b.build(),
    }
}

fn text(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "text/plain",
            ContentBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .build(),
        )
        .build()
}

fn html(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "text/html",
            ContentBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .build(),
        )
        .build()
}

fn header(name: &str, description: &str, pattern: &str) -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(pattern)),
        ))
        .build()
}

fn any_object() -> Ref {
    Ref::new("#/components/schemas/Object")
}

/// The document for service `P` (its `/create` body and `/<collection>/{id}` path).
pub fn document<P: Part>() -> OpenApi {
    let mut schemas = Vec::new();
    let part = component::<P>(&mut schemas);
    let created = component::<CreateDoc>(&mut schemas);
    let record = component::<RecordDoc>(&mut schemas);
    let error = component::<ErrorDoc>(&mut schemas);
    schemas.push((
        "Object".into(),
        ObjectBuilder::new().schema_type(Type::Object).into(),
    ));

    let create = OperationBuilder::new()
        .operation_id(Some(format!("create_{}", P::SERVICE)))
        .summary(Some(format!(
            "Accept a {} (persisted before the next hop is called)",
            P::SERVICE
        )))
        .parameter(
            ParameterBuilder::new()
                .name("count")
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some("Hop counter; missing or garbage counts as 0"))
                .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
        )
        .parameter(header(
            "Idempotency-Key",
            "The same key returns the same saga; 1 to 200 visible ASCII characters",
            "^[!-~]{1,200}$",
        ))
        .parameter(header(
            "X-Deadline-Ms",
            "The caller's remaining time budget in milliseconds: at least 50 (400 below it)",
            "^([5-9][0-9]|[1-9][0-9]{2,8})$",
        ))
        .request_body(Some(
            RequestBodyBuilder::new()
                .required(Some(Required::True))
                .content("application/json", json(&part))
                .build(),
        ))
        .response(
            "200",
            respond(
                "Completed, degraded (with fallback) or last",
                Some(&created),
            ),
        )
        .response(
            "400",
            respond("Malformed JSON, missing or wrong-typed field", Some(&error)),
        )
        .response(
            "409",
            respond(
                "Idempotency-Key reused for a different request",
                Some(&error),
            ),
        )
        .response("413", respond("Body over MAX_BODY_BYTES", Some(&error)))
        .response("415", respond("Content-Type is not JSON", Some(&error)))
        .response(
            "502",
            respond("Injected failure (INJECT_ERR)", Some(&error)),
        )
        .response(
            "503",
            respond(
                "Database unavailable (nothing accepted), or the saga is being processed by a twin request: retry",
                Some(&error),
            ),
        );

    let mut key = header(
        "Idempotency-Key",
        "The key the record to undo was created under (the caller's hop key)",
        "^[!-~]{1,200}$",
    );
    key.required = Required::True;
    let compensate = OperationBuilder::new()
        .operation_id(Some(format!("compensate_{}", P::SERVICE)))
        .summary(Some(format!(
            "Undo the {} stored under Idempotency-Key, and every hop after it",
            P::SERVICE
        )))
        .parameter(key)
        .parameter(header(
            "X-Deadline-Ms",
            "The caller's remaining time budget in milliseconds: at least 50 (400 below it)",
            "^([5-9][0-9]|[1-9][0-9]{2,8})$",
        ))
        .response(
            "200",
            respond(
                "Terminal: compensated (a tombstone if nothing was stored yet), or completed / \
                 failed when it had finished before",
                Some(&created),
            ),
        )
        .response(
            "202",
            respond(
                "Still compensating the hops after this one; ask again",
                Some(&created),
            ),
        )
        .response("400", respond("Missing or malformed header", Some(&error)))
        .response(
            "503",
            respond(
                "Database unavailable, or the record is changing under concurrent requests: nothing changed, retry",
                Some(&error),
            ),
        );

    let get_record = OperationBuilder::new()
        .operation_id(Some(format!("get_{}", P::SERVICE)))
        .summary(Some(format!(
            "A stored {} with status and history",
            P::SERVICE
        )))
        .parameter(
            ParameterBuilder::new()
                .name("id")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                            utoipa::openapi::KnownFormat::Uuid,
                        )))
                        .pattern(Some(UUID_PATTERN)),
                )),
        )
        .response("200", respond("The record", Some(&record)))
        .response("400", respond("Not a saga id", Some(&error)))
        .response("404", respond("No such record", Some(&error)))
        .response("503", respond("Database unavailable", Some(&error)));

    let simple = |id: &str, summary: &str, res: utoipa::openapi::Response| {
        PathItem::new(
            HttpMethod::Get,
            OperationBuilder::new()
                .operation_id(Some(id))
                .summary(Some(summary))
                .response("200", res),
        )
    };
    let ready = OperationBuilder::new()
        .operation_id(Some("ready"))
        .summary(Some("The database answers"))
        .response("200", respond("Ready", Some(&any_object())))
        .response("503", respond("Not ready", Some(&any_object())));

    let paths = PathsBuilder::new()
        .path("/create", PathItem::new(HttpMethod::Post, create))
        .path("/compensate", PathItem::new(HttpMethod::Post, compensate))
        .path(
            format!("/{}/{{id}}", P::COLLECTION),
            PathItem::new(HttpMethod::Get, get_record),
        )
        .path("/", simple("hello", "hello from <ID>", text("Greeting")))
        .path(
            "/health",
            simple(
                "health",
                "The process is up",
                respond("Up", Some(&any_object())),
            ),
        )
        .path("/ready", PathItem::new(HttpMethod::Get, ready))
        .path(
            "/breaker",
            simple(
                "breaker",
                "The breaker to the next hop",
                respond("State, window, totals, config", Some(&any_object())),
            ),
        )
        .path(
            "/metrics",
            simple("metrics", "Prometheus metrics", text("Prometheus text")),
        )
        // `/live/events` (the page's Server-Sent Events) is left out on purpose: a stream that
        // never ends can't be answered to a client that waits for the end of the body, which is
        // what generated-request testers do. docs/request-flow.md describes it.
        .path(
            "/live",
            simple(
                "live",
                "The live breaker page (HTML; it reads /live/events)",
                html("The page"),
            ),
        );

    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title(format!("saga-breaker {}", P::SERVICE))
                .version(env!("CARGO_PKG_VERSION"))
                .build(),
        )
        .paths(paths)
        .components(Some(
            ComponentsBuilder::new().schemas_from_iter(schemas).build(),
        ))
        .build()
}
