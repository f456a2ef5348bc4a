//! The next-hop client: one `reqwest::Client`, one [`Breaker`], one URL.
//!
//! Every call to the next service goes through [`Hop::forward`], which is the only place that
//! knows how a hop call can fail and what each failure means for the breaker: a 5xx, a refused
//! connection, a timeout, a 401, 408 or 429 counts against the callee; any other 4xx is the caller's fault and passes
//! through uncounted. The call carries an idempotency key derived from the caller's saga id (so a
//! retried or re-driven call can never create a second record downstream) and the caller's
//! remaining time budget (so no hop waits longer than its caller will). With `HOP_SECRET` set it
//! is also signed (`signature`, keys in `keys`), so the next hop can tell it from a stranger's.

pub mod keys;
pub mod signature;

pub use keys::HopKeys;

use crate::breaker::{Breaker, BreakerError, Failure};
use crate::failpoint::{self, Action, Point};
use crate::retry::RetryConfig;
use crate::retry::{self, RetryBudget, Verdict};
use crate::saga::SagaId;
use reqwest::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Client, Url};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The header carrying the caller's remaining budget in milliseconds.
pub const DEADLINE_HEADER: HeaderName = HeaderName::from_static("x-deadline-ms");
/// The idempotency header, the same one clients use.
pub const IDEMPOTENCY_HEADER: HeaderName = HeaderName::from_static("idempotency-key");
/// The least a caller keeps for itself out of a time budget.
pub const MIN_DEADLINE_MARGIN: Duration = Duration::from_millis(5);

/// The least time budget a request may carry. Below it nothing useful can happen (a record
/// write alone takes milliseconds), so an `X-Deadline-Ms` under it is refused with a 400, and a
/// hop never sends less: when what is left is shorter, it sends the floor and waits what it
/// has (the callee's record is reconciled by the re-driver like any late answer).
pub const MIN_DEADLINE: Duration = Duration::from_millis(50);

/// What a caller keeps out of `budget` to persist and answer in: a tenth, at least 5 ms. Every
/// hop keeps its margin, so a callee always answers (if only with its own fallback) before its
/// caller stops waiting, instead of all nested timeouts firing at the same moment.
pub fn deadline_margin(budget: Duration) -> Duration {
    (budget / 10).max(MIN_DEADLINE_MARGIN)
}

/// How a hop call failed, before the breaker has its say.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HopError {
    /// The next hop answered with a non-2xx status.
    #[error("http {status}")]
    Status {
        status: u16,
        body: serde_json::Value,
    },
    /// No connection could be made.
    #[error("connect")]
    Connect(String),
    /// The connection broke or the answer was not JSON.
    #[error("io")]
    Io(String),
}

impl HopError {
    /// What a client may read: the next hop's own answer, but no address or socket error.
    pub fn detail(&self) -> String {
        match self {
            Self::Status { status, body } => format!("next hop answered {status}: {body}"),
            Self::Connect(_) => "could not connect to the next hop".into(),
            Self::Io(_) => "the next hop's answer was unusable".into(),
        }
    }

    /// What the operator's log gets: [`detail`](Self::detail) with the underlying error.
    pub fn internal_detail(&self) -> String {
        match self {
            Self::Status { .. } => self.detail(),
            Self::Connect(e) | Self::Io(e) => format!("{}: {e}", self.detail()),
        }
    }
}

/// 408 (the next hop gave up waiting for our request) and 429 (it is shedding load) are 4xx
/// that say nothing wrong about the request: they pass with time, like a 503. So does 401
/// between hops: the client's request reached us fine, and the next hop refused *our*
/// signature (`HOP_SECRET`s that disagree, a clock off by more than `HOP_MAX_SKEW_MS`). That is
/// the operator's to fix, not the client's to be failed for: the hop degrades, its breaker
/// counts it, and the re-driver carries the saga on once the secrets agree.
fn transient_4xx(status: u16) -> bool {
    matches!(status, 401 | 408 | 429)
}

impl HopError {
    /// A 4xx that refuses the request itself: retrying the same request cannot help.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Status { status, .. }
            if (400..500).contains(status) && !transient_4xx(*status))
    }
}

impl Failure for HopError {
    /// Everything but a refusal: a 5xx, 401, 408, 429, a broken connection. These say the next hop
    /// could not serve us now; a refusal says the request was wrong.
    fn counts_as_failure(&self) -> bool {
        !self.is_refusal()
    }
}

/// Why a forward produced no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(transparent)]
    Breaker(#[from] BreakerError<HopError>),
    /// The caller's budget was spent before the hop could be called.
    #[error("deadline")]
    DeadlineSpent,
}

impl ForwardError {
    /// The short reason the response's `fallback` and the record's history show.
    pub fn reason(&self) -> String {
        match self {
            Self::Breaker(BreakerError::Rejected) => "open".into(),
            Self::Breaker(BreakerError::Timeout(_)) => "timeout".into(),
            Self::Breaker(BreakerError::Failed(e)) => e.to_string(),
            Self::DeadlineSpent => "deadline".into(),
        }
    }

    /// The `fallback.detail` a client reads: names the breaker, never the next hop's internal
    /// URL or a socket error (those are in [`internal_detail`](Self::internal_detail)).
    pub fn detail(&self, hop: &Hop) -> String {
        match self {
            Self::Breaker(BreakerError::Rejected) => format!(
                "breaker {} is open: the next hop was not called",
                hop.breaker.name()
            ),
            Self::Breaker(BreakerError::Timeout(d)) => {
                format!("the next hop did not answer within {} ms", d.as_millis())
            }
            Self::Breaker(BreakerError::Failed(e)) => e.detail(),
            Self::DeadlineSpent => "the caller's deadline was spent before the call".into(),
        }
    }

    /// For the log: what happened, with the next hop's URL and the underlying error.
    pub fn internal_detail(&self, hop: &Hop) -> String {
        match self {
            Self::Breaker(BreakerError::Failed(e)) => {
                format!("{}: {}", hop.url, e.internal_detail())
            }
            _ => format!("{}: {}", hop.url, self.detail(hop)),
        }
    }

    /// A 4xx other than 401/408/429: the next hop refused the request itself, a retry can't help.
    pub fn rejected_by_next_hop(&self) -> Option<(u16, &serde_json::Value)> {
        match self {
            Self::Breaker(BreakerError::Failed(e @ HopError::Status { status, body }))
                if e.is_refusal() =>
            {
                Some((*status, body))
            }
            _ => None,
        }
    }
}

/// The client for one next hop.
pub struct Hop {
    url: Url,
    client: Client,
    breaker: Arc<Breaker>,
    retry: RetryConfig,
    budget: RetryBudget,
    /// `HOP_SECRET` and friends: when set, every call is signed with the signing key.
    keys: Option<HopKeys>,
    /// Requests sent to the next hop (admitted by the breaker), counted as they leave.
    sent: AtomicU64,
}

impl Hop {
    pub fn new(
        url: Url,
        breaker: Arc<Breaker>,
        retry: RetryConfig,
        keys: Option<HopKeys>,
    ) -> Result<Self, reqwest::Error> {
        let client = Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self {
            url,
            client,
            breaker,
            retry,
            budget: RetryBudget::seeded(retry.seed),
            keys,
            sent: AtomicU64::new(0),
        })
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }

    /// Requests sent to the next hop so far: every attempt the breaker admitted (retries,
    /// re-drives and compensations included), counted when it is sent, so a call its caller
    /// gave up on still counts. What the next hop felt, for `GET /breaker` and the simulator.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// The idempotency key for the call a record of `service` with id `saga` makes: the same
    /// for every retry and re-drive of that record, different for every other record.
    pub fn key_for(saga: &SagaId, service: &str) -> String {
        format!("{saga}/{service}")
    }

    /// POSTs `body` to the next hop's `/create?count=<count>` through the breaker, retrying
    /// transient failures (`RETRY_*`, full jitter, within the hop's retry budget and the
    /// deadline). `deadline` is when the caller stops waiting; each attempt gets what is left
    /// of it minus a margin. Returns the answer and how many attempts it took.
    pub async fn forward(
        &self,
        key: &str,
        count: u32,
        body: &serde_json::Value,
        deadline: Instant,
    ) -> (Result<serde_json::Value, ForwardError>, u32) {
        let (result, attempts, _) = retry::run(
            self.breaker.name(),
            &self.retry,
            &self.budget,
            deadline,
            |e: &ForwardError| match e {
                // An open breaker, a refusal and a spent deadline don't pass by retrying.
                ForwardError::Breaker(BreakerError::Rejected) | ForwardError::DeadlineSpent => {
                    Verdict::Stop
                }
                ForwardError::Breaker(BreakerError::Failed(h)) if !h.counts_as_failure() => {
                    Verdict::Stop
                }
                _ => Verdict::Retry,
            },
            |_| self.attempt(key, count, body, deadline),
        )
        .await;
        (result, attempts)
    }

    /// One attempt through the breaker.
    async fn attempt(
        &self,
        key: &str,
        count: u32,
        body: &serde_json::Value,
        deadline: Instant,
    ) -> Result<serde_json::Value, ForwardError> {
        let mut url = self.url.clone();
        url.query_pairs_mut()
            .clear()
            .append_pair("count", &count.to_string());
        self.call(url, key, Some(body), deadline).await
    }

    /// Asks the next hop to undo what it did (or will do) under `key`: `POST /compensate` next
    /// to its `/create`, through the same breaker, once (the re-driver retries later). The
    /// answer's `status` says how the next hop's record ended: `compensated`, or `completed`
    /// when it had finished before the request arrived, or `compensating` while it is still
    /// undoing the hops after it.
    pub async fn compensate(
        &self,
        key: &str,
        deadline: Instant,
    ) -> Result<serde_json::Value, ForwardError> {
        let url = self.url.join("compensate").map_err(|e| {
            ForwardError::Breaker(BreakerError::Failed(HopError::Io(format!(
                "no compensate URL next to {}: {e}",
                self.url
            ))))
        })?;
        self.call(url, key, None, deadline).await
    }

    /// One POST through the breaker, bounded by the caller's deadline (minus its margin) and
    /// the breaker's timeout.
    async fn call(
        &self,
        url: Url,
        key: &str,
        body: Option<&serde_json::Value>,
        deadline: Instant,
    ) -> Result<serde_json::Value, ForwardError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let budget = left
            .checked_sub(deadline_margin(left))
            .filter(|b| !b.is_zero())
            .ok_or(ForwardError::DeadlineSpent)?;
        // We wait `wait`; the callee is told less, so its answer arrives before we give up.
        let wait = budget.min(self.breaker.config().timeout);
        let sent_budget = wait.saturating_sub(deadline_margin(wait)).max(MIN_DEADLINE);
        let io = |what: String| ForwardError::Breaker(BreakerError::Failed(HopError::Io(what)));
        let bytes = match body {
            Some(b) => {
                serde_json::to_vec(b).map_err(|e| io(format!("unserializable body: {e}")))?
            }
            None => Vec::new(),
        };
        let signed = self.keys.as_ref().map(|keys| {
            let path_and_query = match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_string(),
            };
            let call = signature::Call {
                method: "POST",
                path_and_query: &path_and_query,
                idempotency_key: Some(key),
                body: &bytes,
            };
            signature::sign(&keys.signing, signature::unix_now(), &call)
        });
        let key = HeaderValue::from_str(key).map_err(|e| io(format!("bad key: {e}")))?;
        let value = self
            .breaker
            .call(Some(budget), || async {
                let mut req = self
                    .client
                    .post(url)
                    .header(IDEMPOTENCY_HEADER, key)
                    .header(DEADLINE_HEADER, sent_budget.as_millis().to_string());
                for (name, value) in signed.into_iter().flatten() {
                    req = req.header(name, value);
                }
                req = match body {
                    Some(_) => req.header(CONTENT_TYPE, "application/json").body(bytes),
                    None => req.header(CONTENT_LENGTH, "0"),
                };
                let twin = req.try_clone();
                self.sent.fetch_add(1, Ordering::Relaxed);
                let mut res = req.send().await.map_err(classify)?;
                if body.is_some() {
                    match failpoint::fire(Point::Forward) {
                        Some(Action::Error) => {
                            return Err(HopError::Io("failpoint forward: error".into()))
                        }
                        Some(Action::Duplicate) => {
                            if let Some(twin) = twin {
                                res = twin.send().await.map_err(classify)?;
                            }
                        }
                        _ => {}
                    }
                }
                let status = res.status();
                let bytes = res.bytes().await.map_err(classify)?;
                let json: serde_json::Value = serde_json::from_slice(&bytes)
                    .unwrap_or_else(|_| serde_json::Value::String(lossy(&bytes)));
                if status.is_success() {
                    Ok(json)
                } else {
                    Err(HopError::Status {
                        status: status.as_u16(),
                        body: json,
                    })
                }
            })
            .await?;
        Ok(value)
    }
}

fn lossy(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.chars().take(512).collect()
}

fn classify(e: reqwest::Error) -> HopError {
    if e.is_connect() {
        HopError::Connect(e.to_string())
    } else if let Some(status) = e.status() {
        HopError::Status {
            status: status.as_u16(),
            body: serde_json::Value::Null,
        }
    } else {
        HopError::Io(e.to_string())
    }
}

/// Why an incoming `X-Deadline-Ms` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadDeadline {
    #[error("X-Deadline-Ms must be a whole number of milliseconds (at most 9 digits)")]
    Malformed,
    #[error("X-Deadline-Ms must be at least {floor} ms (got {0} ms)", floor = MIN_DEADLINE.as_millis())]
    BelowFloor(u64),
}

/// The deadline of an incoming request: its caller's budget when it sent one (capped at our own
/// request timeout), else our own request timeout. Refused when the header is there but is not
/// a whole number of milliseconds (at most 9 digits), or is below [`MIN_DEADLINE`]: the caller
/// gets a 400 naming it.
pub fn incoming_deadline(
    headers: &axum::http::HeaderMap,
    own: Duration,
) -> Result<Instant, BadDeadline> {
    let budget = match headers.get(DEADLINE_HEADER) {
        None => own,
        Some(v) => {
            let text = v.to_str().map_err(|_| BadDeadline::Malformed)?.trim();
            if text.is_empty() || text.len() > 9 || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(BadDeadline::Malformed);
            }
            let ms: u64 = text.parse().map_err(|_| BadDeadline::Malformed)?;
            if Duration::from_millis(ms) < MIN_DEADLINE {
                return Err(BadDeadline::BelowFloor(ms));
            }
            Duration::from_millis(ms).min(own)
        }
    };
    Ok(Instant::now() + budget)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn with_deadline(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(DEADLINE_HEADER, HeaderValue::from_str(v).expect("ascii"));
        h
    }

    fn status(code: u16) -> ForwardError {
        ForwardError::Breaker(BreakerError::Failed(HopError::Status {
            status: code,
            body: serde_json::Value::Null,
        }))
    }

    #[test]
    fn a_401_408_or_429_is_transient_and_other_4xx_are_refusals() {
        for code in [401, 408, 429, 500, 502, 503] {
            assert!(status(code).rejected_by_next_hop().is_none(), "{code}");
            let ForwardError::Breaker(BreakerError::Failed(e)) = status(code) else {
                unreachable!()
            };
            assert!(e.counts_as_failure(), "{code}");
        }
        for code in [400, 404, 409, 413, 422] {
            assert!(status(code).rejected_by_next_hop().is_some(), "{code}");
        }
    }

    #[test]
    fn fallback_details_name_no_internal_url_or_socket_error() {
        let url = Url::parse("http://10.9.8.7:4102/create").expect("url");
        let breaker = Arc::new(Breaker::new("payment->shipment", Default::default()));
        let hop = Hop::new(url, breaker, RetryConfig::default(), None).expect("client");
        let socket = "tcp connect error: 10.9.8.7:4102: Connection refused (os error 111)";
        for e in [
            ForwardError::Breaker(BreakerError::Rejected),
            ForwardError::Breaker(BreakerError::Timeout(Duration::from_millis(300))),
            ForwardError::Breaker(BreakerError::Failed(HopError::Connect(socket.into()))),
            ForwardError::Breaker(BreakerError::Failed(HopError::Io(socket.into()))),
        ] {
            let detail = e.detail(&hop);
            assert!(!detail.contains("10.9.8.7"), "{detail}");
            assert!(
                e.internal_detail(&hop).contains("10.9.8.7"),
                "the log keeps it"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_below_the_floor_is_refused_not_obeyed() {
        let own = Duration::from_secs(10);
        for tiny in ["0", "2", "8", "49"] {
            assert!(
                matches!(
                    incoming_deadline(&with_deadline(tiny), own),
                    Err(BadDeadline::BelowFloor(_))
                ),
                "{tiny}"
            );
        }
        let at = incoming_deadline(&with_deadline("50"), own).expect("the floor itself is fine");
        assert_eq!(at - Instant::now(), MIN_DEADLINE);
        assert_eq!(
            incoming_deadline(&with_deadline("soon"), own),
            Err(BadDeadline::Malformed)
        );
        let capped = incoming_deadline(&with_deadline("999999999"), own).expect("capped");
        assert_eq!(capped - Instant::now(), own);
    }
}
