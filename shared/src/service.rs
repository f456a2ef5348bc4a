//! One service of the chain, generic over its record type.
//!
//! The three binaries differ only in data — what their part of the request looks like, which
//! collection stores it, which nested part goes to the next hop — and that is the [`Part`] trait.
//! Everything else lives here once: parsing at the edge, persisting before forwarding, the
//! idempotent replay, injected failures, the forward through the breaker, the status transition,
//! and starting/stopping the server.

use crate::breaker::Breaker;
use crate::chaos::{Chaos, Faults};
use crate::config::{Config, StoreConfig};
use crate::hop::{incoming_deadline, ForwardError, Hop, IDEMPOTENCY_HEADER};
use crate::http::{self, ApiError};
use crate::saga::{Fallback, InvalidTransition, SagaId, SagaRecord, SavedResponse, Status};
use crate::store::{EmbeddedStore, Inserted, MongoStore, Store, StoreError};
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};

/// What makes a service a service: its part of the request. Implemented by the three binaries'
/// record types; parsing into it *is* the validation (`serde` + newtypes that refuse bad values).
pub trait Part: Serialize + DeserializeOwned + utoipa::ToSchema + Send + Sync + 'static {
    /// The service's name: `order`.
    const SERVICE: &'static str;
    /// Its collection, also the path of `GET /<collection>/{id}`: `orders`.
    const COLLECTION: &'static str;
    /// The port it listens on unless `PORT` says otherwise.
    const DEFAULT_PORT: u16;
    /// The service its nested part goes to (`payment` for order), for the breaker's name.
    const NEXT: Option<&'static str>;

    /// The client's business `id`.
    fn id(&self) -> &str;

    /// The nested part the next hop receives (`payment` for order), if this part has one.
    fn forward(&self) -> Option<serde_json::Value>;
}

/// Shared by every request of one service.
pub struct AppState {
    pub service: &'static str,
    pub collection: &'static str,
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub hop: Option<Hop>,
    /// Faults set through `/chaos` (only with `CHAOS_ENABLED`).
    pub chaos: Chaos,
    /// Cancelled when the service stops: ends injected hangs and waits.
    pub shutdown: CancellationToken,
}

/// The service's router: the shared kernel plus `POST /create` and `GET /<collection>/{id}`.
pub fn app<P: Part>(state: Arc<AppState>) -> Router {
    let record_path = format!("/{}/{{id}}", state.collection);
    let chaos = if state.config.chaos_enabled {
        Router::new().route("/chaos", get(chaos_get).put(chaos_put).delete(chaos_delete))
    } else {
        Router::new()
    };
    Router::new()
        .merge(chaos)
        .route("/", get(hello))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/breaker", get(breaker))
        .route("/openapi.json", get(openapi::<P>))
        .route("/create", post(create::<P>))
        .route("/compensate", post(compensate::<P>))
        .route(&record_path, get(get_record))
        .fallback(http::not_found)
        .method_not_allowed_fallback(http::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(middleware::from_fn(http::limit_headers))
        // A client that sends its body slower than the request budget gets 408, not a task
        // held forever; a handler that somehow outlives its own deadline is cut off (503).
        .layer(RequestBodyTimeoutLayer::new(state.config.request_timeout))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            state.config.request_timeout + Duration::from_secs(2),
        ))
        .layer(CatchPanicLayer::custom(http::panic_response))
        .with_state(state)
}

/// Builds the state for `P` from `config`: opens the store, builds the breaker and hop client.
pub async fn state<P: Part>(config: Config) -> Result<Arc<AppState>, StartError> {
    let store: Arc<dyn Store> = match &config.store {
        StoreConfig::Mongo { url, db, timeout } => {
            Arc::new(MongoStore::connect(url, db, P::COLLECTION, *timeout).await?)
        }
        StoreConfig::Embedded { data_dir } => {
            std::fs::create_dir_all(data_dir).map_err(|e| {
                StartError::DataDir(format!("can't create DATA_DIR {}: {e}", data_dir.display()))
            })?;
            Arc::new(EmbeddedStore::open(data_dir, P::COLLECTION)?)
        }
    };
    state_with_store::<P>(config, store)
}

/// Like [`state`] with a store the caller opened (tests, or several services sharing a client).
pub fn state_with_store<P: Part>(
    config: Config,
    store: Arc<dyn Store>,
) -> Result<Arc<AppState>, StartError> {
    // Metric handles are taken when a breaker is built: the recorder must exist first.
    let _ = crate::telemetry::prometheus();
    let hop = match &config.chain_svc {
        Some(url) => {
            let next = P::NEXT.or(url.host_str()).unwrap_or("next");
            let name = format!("{}->{next}", P::SERVICE);
            let breaker = Arc::new(
                Breaker::with_backend(name, config.breaker.clone(), &config.breaker_backend)
                    .map_err(|e| StartError::Breaker(e.to_string()))?,
            );
            Some(
                Hop::new(url.clone(), breaker, config.retry)
                    .map_err(|e| StartError::Client(e.to_string()))?,
            )
        }
        None => None,
    };
    if hop.is_some() && P::NEXT.is_none() {
        tracing::warn!(
            service = P::SERVICE,
            "CHAIN_SVC is set but this service's records have no nested part to forward"
        );
    }
    Ok(Arc::new(AppState {
        service: P::SERVICE,
        collection: P::COLLECTION,
        config,
        store,
        hop,
        chaos: Chaos::default(),
        shutdown: CancellationToken::new(),
    }))
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    DataDir(String),
    #[error("can't build the HTTP client: {0}")]
    Client(String),
    #[error("can't build the breaker: {0}")]
    Breaker(String),
    #[error("can't listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A service that is serving: where, and how to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    redriver: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, lets requests in flight finish, and waits.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
        let _ = self.redriver.await;
    }

    /// Stops when `token` is cancelled (e.g. Ctrl-C), then waits.
    pub async fn wait(self, token: CancellationToken) {
        token.cancelled().await;
        self.stop().await;
    }
}

/// Binds `config.host:config.port` (0 = any free port) and serves `P` until stopped.
pub async fn start<P: Part>(config: Config) -> Result<Running, StartError> {
    let state = state::<P>(config).await?;
    serve::<P>(state).await
}

/// Serves an already-built state.
pub async fn serve<P: Part>(state: Arc<AppState>) -> Result<Running, StartError> {
    let addr = SocketAddr::new(state.config.host, state.config.port);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    let shutdown = state.shutdown.clone();
    let router = app::<P>(state.clone());
    let stop = shutdown.clone();
    let service = state.service;
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(service, error = %e, "server stopped with an error");
        }
    });
    // Create the indexes now if the database is up; if not, the first request tries again and
    // `/ready` says not ready until it works.
    let warm = state.clone();
    tokio::spawn(async move {
        if let Err(e) = warm.store.ping().await {
            tracing::warn!(service = warm.service, error = %e, "database not ready at start-up");
        }
    });
    tracing::info!(
        service = state.service,
        %addr,
        store = state.store.kind(),
        next = state.hop.as_ref().map(|h| h.url().as_str()).unwrap_or("-"),
        "listening"
    );
    let redriver = crate::redrive::spawn::<P>(state.clone());
    Ok(Running {
        addr,
        state,
        shutdown,
        task,
        redriver,
    })
}

pub use crate::http::{MAX_HEADERS, MAX_HEADER_BYTES};

/// Request metrics and a span per request with the fields that matter.
async fn observe(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let started = tokio::time::Instant::now();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    let labels = [
        ("service", state.service.to_string()),
        ("route", route),
        ("method", method.to_string()),
        ("status", status),
    ];
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    res
}

async fn openapi<P: Part>() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::document::<P>())
}

async fn hello(State(state): State<Arc<AppState>>) -> String {
    format!("hello from {}", state.config.id)
}

async fn health(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "up", "service": state.service}))
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    match state.store.ping().await {
        Ok(()) => Json(serde_json::json!({
            "ready": true, "service": state.service, "store": state.store.kind()
        }))
        .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "ready": false, "service": state.service, "store": state.store.kind(),
                "reason": e.to_string()
            })),
        )
            .into_response(),
    }
}

async fn metrics_text() -> Response {
    match crate::telemetry::prometheus() {
        Some(handle) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render(),
        )
            .into_response(),
        None => ApiError::Internal("another metrics recorder is installed".into()).into_response(),
    }
}

async fn breaker(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "service": state.service,
        "next_hop": state.hop.as_ref().map(|h| h.url().as_str()),
        "breaker": state.hop.as_ref().map(|h| h.breaker().snapshot()),
    }))
}

/// Applies the faults set through `/chaos`, before anything is accepted. A request held by a
/// hang or an added latency starts over with the new faults when they change (a cleared hang
/// lets it through).
async fn apply_chaos(state: &AppState) -> Result<(), ApiError> {
    if !state.config.chaos_enabled {
        return Ok(());
    }
    let mut changes = state.chaos.subscribe();
    loop {
        let faults = changes.borrow_and_update().clone();
        if !faults.is_active() {
            return Ok(());
        }
        let wait = if faults.hang {
            state.config.request_timeout
        } else {
            faults.latency()
        };
        if !wait.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = state.shutdown.cancelled() => {}
                Ok(()) = changes.changed() => continue,
            }
        }
        if faults.hang {
            return Err(ApiError::Chaos {
                status: 503,
                what: "hang",
            });
        }
        return match faults.roll_error() {
            Some(status) => Err(ApiError::Chaos {
                status,
                what: "error",
            }),
            None => Ok(()),
        };
    }
}

fn chaos_authorized(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &state.config.chaos_token else {
        return Ok(());
    };
    let sent = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if sent.is_some_and(|s| s.trim() == token) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

async fn chaos_get(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Faults>, ApiError> {
    chaos_authorized(&state, &headers)?;
    Ok(Json(state.chaos.get()))
}

async fn chaos_put(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Faults>, ApiError> {
    chaos_authorized(&state, &headers)?;
    require_json(&headers)?;
    let bytes = read_body(&headers, body, state.config.max_body_bytes).await?;
    let faults: Faults =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&bytes))
            .map_err(|e| {
                let field = e.path().to_string();
                ApiError::bad_request(
                    "invalid_field",
                    format!("invalid faults: {}", e.into_inner()),
                    (field != ".").then_some(field),
                )
            })?;
    faults.validate()?;
    state.chaos.set(state.service, faults.clone());
    Ok(Json(faults))
}

async fn chaos_delete(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Faults>, ApiError> {
    chaos_authorized(&state, &headers)?;
    state.chaos.set(state.service, Faults::default());
    Ok(Json(Faults::default()))
}

/// A record as the API shows it.
#[derive(Serialize)]
struct RecordView<'a> {
    saga_id: SagaId,
    service: &'a str,
    id: &'a str,
    count: u32,
    status: Status,
    body: &'a serde_json::Value,
    next: &'a Option<serde_json::Value>,
    fallback: &'a Option<Fallback>,
    history: &'a [crate::saga::HistoryEvent],
    attempts: u32,
    redrives: u32,
    due_at: Option<chrono::DateTime<chrono::Utc>>,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
}

async fn get_record(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let saga_id: SagaId = id.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_id",
            format!("{id:?} is not a saga id (a UUID)"),
            Some("id".into()),
        )
    })?;
    let rec = state
        .store
        .get(&saga_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no {} with id {saga_id}", state.service)))?;
    Ok(Json(RecordView {
        saga_id: rec.saga_id,
        service: state.service,
        id: &rec.id,
        count: rec.count,
        status: rec.status,
        body: &rec.body,
        next: &rec.next,
        fallback: &rec.fallback,
        history: &rec.history,
        attempts: rec.attempts,
        redrives: rec.redrives,
        due_at: rec.due_at,
        created_at: rec.created_at,
        updated_at: rec.updated_at,
    })
    .into_response())
}

/// The body of every `/create` answer.
#[derive(Serialize)]
struct CreateBody<'a> {
    service: &'a str,
    saga_id: Option<SagaId>,
    id: &'a str,
    count: u32,
    status: &'a str,
    next: Option<&'a serde_json::Value>,
    fallback: Option<&'a Fallback>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

/// `count` from the query string; missing or garbage counts as 0, as in the original.
fn parse_count(query: Option<&str>) -> u32 {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("count="))
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(0)
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(ct))
    }
}

async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge { limit })
}

/// Parses the body into `P`, naming the offending field (dotted path) on failure.
pub fn parse_part<P: Part>(bytes: &[u8]) -> Result<(P, serde_json::Value), ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("body is not valid JSON: {e}"), None)
    })?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "body must be a JSON object",
            None,
        ));
    }
    let part: P = serde_path_to_error::deserialize(&value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde reports a missing field at its parent's path; name the field itself.
        let missing = inner
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        let field = match (path.as_str(), missing) {
            (".", Some(name)) => Some(name.to_string()),
            (parent, Some(name)) => Some(format!("{parent}.{name}")),
            (".", None) => None,
            (p, None) => Some(p.to_string()),
        };
        let message = match &field {
            Some(f) => format!("invalid field `{f}`: {inner}"),
            None => format!("invalid body: {inner}"),
        };
        ApiError::bad_request("invalid_field", message, field)
    })?;
    // What is stored is the typed part, so it is exactly what was validated.
    let canonical = serde_json::to_value(&part)
        .map_err(|e| ApiError::Internal(format!("can't serialize a parsed {}: {e}", P::SERVICE)))?;
    Ok((part, canonical))
}

/// A stable fingerprint of what a request asked for (FNV-1a over count and canonical JSON), so
/// a repeated idempotency key with a different request is told apart from a replay.
fn fingerprint(count: u32, body: &serde_json::Value) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let text = body.to_string();
    for b in count.to_le_bytes().iter().chain(text.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::bad_request(
            "invalid_header",
            "Idempotency-Key must be 1 to 200 visible ASCII characters",
            Some("Idempotency-Key".into()),
        )
    };
    let s = v.to_str().map_err(|_| bad())?.trim();
    if s.is_empty() || s.len() > 200 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Some(s.to_string()))
}

#[tracing::instrument(
    name = "create",
    skip_all,
    fields(service = state.service, saga_id = tracing::field::Empty, count = tracing::field::Empty)
)]
async fn create<P: Part>(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let deadline = request_deadline(&state, &headers)?;
    apply_chaos(&state).await?;
    require_json(&headers)?;
    let bytes = read_body(&headers, body, state.config.max_body_bytes).await?;
    let (part, canonical) = parse_part::<P>(&bytes)?;
    let key = idempotency_key(&headers)?;
    let count = parse_count(query.as_deref()).saturating_add(1);
    let span = tracing::Span::current();
    span.record("count", count);

    if count >= state.config.jumps {
        let body = CreateBody {
            service: state.service,
            saga_id: None,
            id: part.id(),
            count,
            status: "last",
            next: None,
            fallback: None,
            message: Some("Last"),
        };
        return Ok(Json(body).into_response());
    }

    let mut rec = SagaRecord::accepted(
        String::new(),
        fingerprint(count, &canonical),
        part.id().to_string(),
        count,
        canonical,
    );
    rec.key = key.unwrap_or_else(|| rec.saga_id.to_string());
    // If this request dies before it answers, the re-driver takes the record up once the
    // request's own deadline (and a second's grace) has passed.
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    rec.due_at = Some(crate::redrive::later(
        rec.created_at,
        left + Duration::from_secs(1),
    ));
    let rec = match state.store.insert(&rec).await? {
        Inserted::New => rec,
        Inserted::Existing(old) => {
            if old.is_tombstone() {
                // Cancelled by the caller before this request arrived: nothing to do.
                if let Some(saved) = &old.response {
                    return Ok(replay(&state, &old, saved));
                }
            }
            if old.fingerprint != rec.fingerprint {
                return Err(ApiError::Conflict(format!(
                    "Idempotency-Key {:?} was already used for a different request (saga {})",
                    old.key, old.saga_id
                )));
            }
            if let Some(saved) = &old.response {
                return Ok(replay(&state, &old, saved));
            }
            // Accepted before but never answered (a crash, an injected failure, a request still
            // in flight): carry on with the stored record; the version check settles races.
            old
        }
    };
    span.record("saga_id", tracing::field::display(rec.saga_id));
    process(&state, rec, part.forward(), deadline).await
}

/// When this request must be answered by: the caller's `X-Deadline-Ms` (400 when malformed),
/// capped at `REQUEST_TIMEOUT_MS`.
fn request_deadline(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<tokio::time::Instant, ApiError> {
    incoming_deadline(headers, state.config.request_timeout).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_header",
            "X-Deadline-Ms must be a whole number of milliseconds (at most 9 digits)",
            Some("X-Deadline-Ms".into()),
        )
    })
}

/// `POST /compensate` with `Idempotency-Key: <key>`: undo the record stored under that key (the
/// caller gave up on its saga). A record already terminal is left as it is and reported — a
/// `completed` answer tells the caller the saga finished after all. A key nothing was stored
/// under yet gets a compensated tombstone, so a request still on its way can't create the
/// record later. 200 when the record is terminal; 202 while the hops after this one are still
/// being undone (the re-driver carries on; ask again). Idempotent: ask as often as needed.
async fn compensate<P: Part>(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let deadline = request_deadline(&state, &headers)?;
    apply_chaos(&state).await?;
    let key = idempotency_key(&headers)?.ok_or_else(|| {
        ApiError::bad_request(
            "missing_header",
            "Idempotency-Key is required: it names the record to compensate",
            Some("Idempotency-Key".into()),
        )
    })?;
    // A few rounds settle a race with the re-driver or a replay; then the caller asks again.
    for _ in 0..4 {
        let mut rec = match state.store.get_by_key(&key).await? {
            Some(rec) => rec,
            None => {
                let mut stone = SagaRecord::tombstone(key.clone(), "cancelled before it arrived");
                stone.response = Some(saved_response(&state, &stone, StatusCode::OK));
                match state.store.insert(&stone).await? {
                    Inserted::New => return Ok(compensate_answer(&state, &stone)),
                    Inserted::Existing(rec) => rec,
                }
            }
        };
        if rec.status.is_terminal() {
            return Ok(compensate_answer(&state, &rec));
        }
        let read = rec.version;
        if rec.status != Status::Compensating {
            rec.transition(
                Status::Compensating,
                "compensate",
                "cancelled by the caller",
            )?;
        }
        let next = match state.hop.as_ref() {
            Some(hop) => serde_json::from_value::<P>(rec.body.clone())
                .ok()
                .and_then(|p| p.forward())
                .map(|_| hop),
            None => None,
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let budget = left.saturating_sub(crate::hop::deadline_margin(left));
        // Leaves a record that is still compensating due again (after a backoff).
        crate::redrive::undo(&state, &mut rec, next, budget).await?;
        rec.response = Some(saved_response(&state, &rec, StatusCode::OK));
        rec.version = read + 1;
        if state.store.replace(&rec, read).await? {
            return Ok(compensate_answer(&state, &rec));
        }
    }
    Err(ApiError::Busy(format!(
        "the record under Idempotency-Key {key:?} is changing under concurrent requests; retry"
    )))
}

fn compensate_answer(state: &AppState, rec: &SagaRecord) -> Response {
    let code = if rec.status.is_terminal() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let saved = saved_response(state, rec, code);
    let mut res = (code, Json(saved.body)).into_response();
    if let Ok(loc) = HeaderValue::from_str(&location(state, &rec.saga_id)) {
        res.headers_mut().insert(header::LOCATION, loc);
    }
    res
}

/// Answers a repeated request with what the first one got.
fn replay(state: &AppState, rec: &SagaRecord, saved: &SavedResponse) -> Response {
    let status = StatusCode::from_u16(saved.status).unwrap_or(StatusCode::OK);
    let mut res = (status, Json(saved.body.clone())).into_response();
    let h = res.headers_mut();
    h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    if let Ok(loc) = HeaderValue::from_str(&location(state, &rec.saga_id)) {
        h.insert(header::LOCATION, loc);
    }
    res
}

fn location(state: &AppState, id: &SagaId) -> String {
    format!("/{}/{id}", state.collection)
}

/// Everything after the record is safely stored: inject, forward, transition, answer.
async fn process(
    state: &AppState,
    mut rec: SagaRecord,
    forward: Option<serde_json::Value>,
    deadline: tokio::time::Instant,
) -> Result<Response, ApiError> {
    if state.config.inject_err && rand::random::<f64>() < state.config.err_rate {
        let read = rec.version;
        rec.note(rec.status, "inject", "http 502");
        rec.version = read + 1;
        // Best effort: the history note is for humans; the 502 goes out either way.
        let _ = state.store.replace(&rec, read).await;
        return Err(ApiError::Injected {
            rate: state.config.err_rate,
            saga_id: rec.saga_id.to_string(),
        });
    }

    let mut http_status = StatusCode::OK;
    let read = rec.version;
    match (state.hop.as_ref(), forward) {
        (Some(hop), Some(part)) => {
            let key = Hop::key_for(&rec.saga_id, state.service);
            let (answer, tries) = hop.forward(&key, rec.count, &part, deadline).await;
            rec.attempts += tries;
            http_status = apply_answer(&mut rec, answer, hop, "forward", true)?;
            if !rec.status.is_terminal() {
                let wait = crate::redrive::backoff(&state.config.saga, rec.redrives);
                rec.due_at = Some(crate::redrive::later(chrono::Utc::now(), wait));
            }
        }
        _ => {
            rec.transition(Status::Completed, "last hop", "")?;
        }
    }

    let saved = saved_response(state, &rec, http_status);
    let body = saved.body.clone();
    rec.response = Some(saved);
    rec.version = read + 1;
    if !state.store.replace(&rec, read).await? {
        // Someone else (a concurrent replay, the re-driver) moved this record first: answer
        // what it stored.
        if let Some(current) = state.store.get(&rec.saga_id).await? {
            if let Some(saved) = &current.response {
                return Ok(replay(state, &current, saved));
            }
        }
        return Err(ApiError::Busy(format!(
            "saga {} is being processed by another request; retry",
            rec.saga_id
        )));
    }
    let mut res = (http_status, Json(body)).into_response();
    if let Ok(loc) = HeaderValue::from_str(&location(state, &rec.saga_id)) {
        res.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(res)
}

/// Moves `rec` by the next hop's answer (`step` names the attempt in the history) and returns
/// the HTTP status to answer with: the next hop's 4xx when it refused the request, else 200.
/// `fallback` counts a skipped hop in the breaker's fallback metric (requests, not re-drives).
pub(crate) fn apply_answer(
    rec: &mut SagaRecord,
    answer: Result<serde_json::Value, ForwardError>,
    hop: &Hop,
    step: &str,
    fallback: bool,
) -> Result<StatusCode, InvalidTransition> {
    match answer {
        Ok(next) => {
            // The chain is only complete when every hop after us is.
            let (status, reason) = crate::redrive::settle(&next);
            rec.transition(status, step, reason)?;
            rec.next = Some(next);
            rec.fallback = None;
            Ok(StatusCode::OK)
        }
        Err(e) => {
            let reason = e.reason();
            let detail = e.detail(hop);
            let mut http_status = StatusCode::OK;
            if let Some((code, body)) = e.rejected_by_next_hop() {
                http_status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
                rec.next = Some(body.clone());
                rec.transition(Status::Failed, step, &reason)?;
            } else {
                if fallback {
                    hop.breaker().record_fallback(&reason);
                }
                rec.transition(Status::Degraded, step, &reason)?;
            }
            rec.fallback = Some(Fallback { reason, detail });
            Ok(http_status)
        }
    }
}

/// What `/create` answers about `rec` now; saved in the record so a replay of the same request
/// answers the record's *current* state (this is how a later `completed` or `compensated`
/// travels back up the chain).
pub(crate) fn saved_response(
    state: &AppState,
    rec: &SagaRecord,
    status: StatusCode,
) -> SavedResponse {
    let body = serde_json::json!({
        "service": state.service,
        "saga_id": rec.saga_id,
        "id": rec.id,
        "count": rec.count,
        "status": rec.status.as_str(),
        "next": rec.next,
        "fallback": rec.fallback,
    });
    SavedResponse {
        status: status.as_u16(),
        body,
    }
}

/// How long `main` waits for requests in flight on shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The whole `main` of a service binary: config (exit 2 on a bad value), logs, serve until
/// Ctrl-C/SIGTERM, stop gracefully.
pub async fn main<P: Part>() -> std::process::ExitCode {
    let config = match Config::from_env(P::SERVICE, P::DEFAULT_PORT) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", P::SERVICE);
            return std::process::ExitCode::from(2);
        }
    };
    crate::telemetry::init_logging(config.log_format);
    let _ = crate::telemetry::prometheus();
    let running = match start::<P>(config).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "start-up failed");
            return std::process::ExitCode::from(1);
        }
    };
    let token = CancellationToken::new();
    let signal = token.clone();
    tokio::spawn(async move {
        crate::shutdown_signal().await;
        signal.cancel();
    });
    let service = running.state.service;
    // Serve until told to stop; only then does the grace period start.
    token.cancelled().await;
    tracing::info!(service, "stopping: finishing requests in flight");
    if tokio::time::timeout(SHUTDOWN_GRACE, running.stop())
        .await
        .is_err()
    {
        tracing::warn!(service, "requests still in flight after the grace period");
    }
    tracing::info!(service, "stopped");
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_or_missing_count_counts_as_zero() {
        assert_eq!(parse_count(None), 0);
        assert_eq!(parse_count(Some("count=abc")), 0);
        assert_eq!(parse_count(Some("count=-3")), 0);
        assert_eq!(parse_count(Some("x=1&count=4")), 4);
        assert_eq!(parse_count(Some("count=")), 0);
    }

    #[test]
    fn fingerprint_depends_on_count_and_body() {
        let a = serde_json::json!({"id": "1"});
        let b = serde_json::json!({"id": "2"});
        assert_eq!(fingerprint(1, &a), fingerprint(1, &a));
        assert_ne!(fingerprint(1, &a), fingerprint(2, &a));
        assert_ne!(fingerprint(1, &a), fingerprint(1, &b));
    }

    #[test]
    fn json_content_types_are_accepted_others_refused() {
        let mut h = HeaderMap::new();
        assert!(require_json(&h).is_err());
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(require_json(&h).is_ok());
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/merge+json"),
        );
        assert!(require_json(&h).is_ok());
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(require_json(&h).is_err());
    }
}
