//! Per-caller limits and the record of every refusal, in one tower layer behind
//! authentication on both APIs.
//!
//! [`LimitsLayer`] reads the caller that [`AuthLayer`](crate::tls::auth::AuthLayer) left
//! in the request (a [`PeerCaller`] on the peer API, a [`LocalRole`] on the local API)
//! and:
//! - refuses a caller over its request rate (a token bucket per caller:
//!   `limits.requests_per_second_per_member`, `limits.request_burst_per_member`) or over
//!   its calls in progress (`limits.streams_per_member`; a call counts until its response
//!   body, a stream included, ends or is dropped) with `RESOURCE_EXHAUSTED`, and raises
//!   the `member_limits` alert once per caller and `limits.refusal_window`;
//! - records every refusal (any response whose gRPC status is not OK: a trailers-only
//!   answer or the trailers that end a stream) in the audit log through [`RefusalLog`];
//! - caps the status message a caller gets to [`MESSAGE_CAP`] characters, so an echoed
//!   oversized input cannot come back whole.
//!
//! The tables are keyed by authenticated callers only (members of the trust list, local
//! roles), never by anything a caller makes up, so their memory is bounded by the data
//! space's size. Refusals of unauthenticated callers (the authentication layer's refusal
//! hook) are keyed by address, with a cap on how many are tracked.
//!
//! Successful reads (catalog listings, offers) keep one audit entry each: who saw which
//! offer when is evidence an auditor asks for, and the request rate bounds how fast one
//! member can add such entries.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::HeaderMap;
use http_body::{Frame, SizeHint};
use tonic::body::Body;
use tonic::{Code, Status};

use super::caller::PeerCaller;
use crate::alerts::{Alerts, Rule};
use crate::audit::log::{AuditLog, Event, EventKind};
use crate::base::BoxFuture;
use crate::base::bounded::shown;
use crate::base::clock::now;
use crate::base::shutdown::Shutdown;
use crate::config::Limits;
use crate::local::LocalRole;

/// The most characters of a caller's text (a method, a message, a certificate subject)
/// that an audit entry carries.
pub const TEXT_CAP: usize = 256;

/// The most characters of a status message a caller is answered with: room for the
/// domain's own explanations (which quote a caller's text cut already), while an echoed
/// oversized input can no longer exceed what an HTTP/2 client accepts in its trailers.
pub const MESSAGE_CAP: usize = 2048;

/// Most callers whose refusals are counted separately; past that, the refusals of
/// further unauthenticated addresses share one count (members and roles are always
/// counted on their own).
const MAX_TRACKED: usize = 1024;

/// Most methods a refusal summary names; the rest are counted together.
const SUMMARY_METHODS: usize = 8;

/// Who a refusal was given to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Caller {
    /// An authenticated member (peer API).
    Member(String),
    /// A local client certificate's role (local API).
    Local(LocalRole),
    /// A caller that did not authenticate: its address and, if it presented one, its
    /// certificate's subject.
    Unauthenticated {
        remote: Option<SocketAddr>,
        subject: Option<String>,
    },
}

impl Caller {
    /// The caller of an authenticated request, from what the authentication layer left.
    fn of(extensions: &http::Extensions) -> Option<Self> {
        if let Some(PeerCaller(m)) = extensions.get::<PeerCaller>() {
            return Some(Self::Member(m.participant_id.to_string()));
        }
        extensions.get::<LocalRole>().map(|r| Self::Local(*r))
    }

    /// What the limits and the refusal counts are kept under: the member, the role, or
    /// an unauthenticated caller's IP address (not its port, which it can change at will).
    fn key(&self) -> String {
        match self {
            Self::Member(id) => id.clone(),
            Self::Local(role) => format!("local role {role}"),
            Self::Unauthenticated { remote, .. } => match remote {
                Some(addr) => format!("unauthenticated {}", addr.ip()),
                None => "unauthenticated".to_owned(),
            },
        }
    }

    /// The searchable participant of its entries: only a member's ID.
    fn participant(&self) -> Option<String> {
        match self {
            Self::Member(id) => Some(id.clone()),
            _ => None,
        }
    }
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Member(id) => write!(f, "member {id}"),
            Self::Local(role) => write!(f, "the local role {role}"),
            Self::Unauthenticated { remote, subject } => {
                f.write_str("an unauthenticated caller")?;
                if let Some(addr) = remote {
                    write!(f, " from {addr}")?;
                }
                match subject {
                    Some(s) => write!(
                        f,
                        " presenting a certificate for \"{}\"",
                        shown(s, TEXT_CAP)
                    ),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Every refusal on record, without letting a flood grow the log without bound: per
/// caller and window, the first `per_window` refusals get an entry each; the rest are
/// counted and written as one summary entry when the window ends (or the node stops).
pub struct RefusalLog {
    audit: AuditLog,
    per_window: u32,
    window: Duration,
    callers: Mutex<HashMap<String, Window>>,
}

/// One caller's refusals in the current window.
struct Window {
    started: Instant,
    caller: Caller,
    recorded: u32,
    /// Refusals not recorded one by one: by method, and those past [`SUMMARY_METHODS`].
    more: BTreeMap<String, u64>,
    more_other: u64,
    latest: String,
}

impl Window {
    fn suppressed(&self) -> u64 {
        self.more.values().sum::<u64>() + self.more_other
    }

    fn summary(&self, window: Duration) -> Event {
        let mut methods: Vec<String> = self.more.iter().map(|(m, n)| format!("{m} ×{n}")).collect();
        if self.more_other > 0 {
            methods.push(format!("other methods ×{}", self.more_other));
        }
        let mut event = Event::new(
            EventKind::Refusal,
            now(),
            format!(
                "{} more refusals of {} within {} for {}; the latest: {}",
                self.suppressed(),
                self.caller,
                humantime::format_duration(window),
                methods.join(", "),
                self.latest
            ),
        );
        event.participant = self.caller.participant();
        event
    }
}

impl RefusalLog {
    pub fn new(audit: AuditLog, limits: &Limits) -> Self {
        Self {
            audit,
            per_window: limits.refusals_recorded_per_window,
            window: limits.refusal_window.max(Duration::from_secs(1)),
            callers: Mutex::default(),
        }
    }

    /// Records that `caller` was refused calling `method` with `code` and `message`:
    /// an entry of its own (durable when this returns), or a count towards the window's
    /// summary. Never fails: an entry that cannot be written is reported on the log
    /// output (the audit log refusing writes already fails every operation that changes
    /// state).
    pub async fn record(&self, caller: &Caller, method: &str, code: Code, message: &str) {
        let method = shown(method, TEXT_CAP);
        let message = shown(message, TEXT_CAP);
        let detail = format!("refused {caller} calling {method}: {code:?}: {message}");
        let (own, summary) = {
            let mut callers = lock(&self.callers);
            let mut key = caller.key();
            // Members and roles are few (the trust list, three roles); only addresses
            // that did not authenticate can be many, so only they are ever pooled.
            let unauthenticated = matches!(caller, Caller::Unauthenticated { .. });
            if unauthenticated && !callers.contains_key(&key) && callers.len() >= MAX_TRACKED {
                self.sweep(&mut callers, Instant::now());
                if callers.len() >= MAX_TRACKED {
                    key = "untracked callers".to_owned();
                }
            }
            let now = Instant::now();
            let mut summary = None;
            if let Some(w) = callers.get(&key)
                && now.duration_since(w.started) >= self.window
            {
                summary = callers
                    .remove(&key)
                    .filter(|w| w.suppressed() > 0)
                    .map(|w| w.summary(self.window));
            }
            let w = callers.entry(key.clone()).or_insert_with(|| Window {
                started: now,
                caller: if key == "untracked callers" {
                    Caller::Unauthenticated {
                        remote: None,
                        subject: None,
                    }
                } else {
                    caller.clone()
                },
                recorded: 0,
                more: BTreeMap::new(),
                more_other: 0,
                latest: String::new(),
            });
            let own = if w.recorded < self.per_window {
                w.recorded += 1;
                true
            } else {
                if let Some(n) = w.more.get_mut(&method) {
                    *n += 1;
                } else if w.more.len() < SUMMARY_METHODS {
                    w.more.insert(method.clone(), 1);
                } else {
                    w.more_other += 1;
                }
                w.latest = format!("{method}: {code:?}: {message}");
                false
            };
            (own, summary)
        };
        if let Some(summary) = summary {
            self.append(&summary).await;
        }
        if own {
            let mut event = Event::new(EventKind::Refusal, now(), detail);
            event.participant = caller.participant();
            self.append(&event).await;
        }
    }

    async fn append(&self, event: &Event) {
        if let Err(e) = self.audit.append(event).await {
            tracing::error!(error = %e, detail = %event.detail, "cannot record a refusal in the audit log");
        }
    }

    /// Drops the callers whose window ended with nothing left to summarise.
    fn sweep(&self, callers: &mut HashMap<String, Window>, now: Instant) {
        callers.retain(|_, w| now.duration_since(w.started) < self.window || w.suppressed() > 0);
    }

    /// Writes the summaries of the windows that ended (`all`: of every window).
    pub async fn flush(&self, all: bool) {
        let now = Instant::now();
        let summaries: Vec<Event> = {
            let mut callers = lock(&self.callers);
            let ended: Vec<String> = callers
                .iter()
                .filter(|(_, w)| all || now.duration_since(w.started) >= self.window)
                .map(|(k, _)| k.clone())
                .collect();
            ended
                .into_iter()
                .filter_map(|k| callers.remove(&k))
                .filter(|w| w.suppressed() > 0)
                .map(|w| w.summary(self.window))
                .collect()
        };
        for summary in &summaries {
            self.append(summary).await;
        }
    }

    /// Writes each window's summary soon after it ends, until shutdown; the node writes
    /// what is left when it stops ([`RefusalLog::flush`]).
    pub async fn run(self: Arc<Self>, mut shutdown: Shutdown) {
        let every = (self.window / 4).clamp(Duration::from_millis(250), Duration::from_secs(5));
        while shutdown.sleep(every).await {
            self.flush(false).await;
        }
    }
}

/// The tower layer; see the module doc.
#[derive(Clone)]
pub struct LimitsLayer {
    shared: Arc<Shared>,
}

struct Shared {
    rate: f64,
    burst: f64,
    streams: u32,
    window: Duration,
    refusals: Arc<RefusalLog>,
    alerts: Alerts,
    /// Per authenticated caller: its bucket, its calls in progress, its last alert.
    callers: Mutex<HashMap<String, Arc<CallerState>>>,
}

struct CallerState {
    bucket: Mutex<Bucket>,
    in_flight: AtomicU32,
    alerted: Mutex<Option<Instant>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl LimitsLayer {
    pub fn new(limits: &Limits, refusals: Arc<RefusalLog>, alerts: Alerts) -> Self {
        Self {
            shared: Arc::new(Shared {
                rate: f64::from(limits.requests_per_second_per_member),
                burst: f64::from(limits.request_burst_per_member.max(1)),
                streams: limits.streams_per_member,
                window: limits.refusal_window.max(Duration::from_secs(1)),
                refusals,
                alerts,
                callers: Mutex::default(),
            }),
        }
    }
}

impl Shared {
    fn state(&self, caller: &Caller) -> Arc<CallerState> {
        lock(&self.callers)
            .entry(caller.key())
            .or_insert_with(|| {
                Arc::new(CallerState {
                    bucket: Mutex::new(Bucket {
                        tokens: self.burst,
                        at: Instant::now(),
                    }),
                    in_flight: AtomicU32::new(0),
                    alerted: Mutex::new(None),
                })
            })
            .clone()
    }

    /// Admits one call of `caller`, or says why not.
    fn admit(&self, caller: &Caller, state: &Arc<CallerState>) -> Result<InFlight, Status> {
        if self.rate > 0.0 {
            let mut bucket = lock(&state.bucket);
            let now = Instant::now();
            let refill = now.duration_since(bucket.at).as_secs_f64() * self.rate;
            bucket.tokens = (bucket.tokens + refill).min(self.burst);
            bucket.at = now;
            if bucket.tokens < 1.0 {
                return Err(Status::resource_exhausted(format!(
                    "{caller} made more requests than this node serves one caller: {} per \
                     second, {} at once (limits.requests_per_second_per_member, \
                     limits.request_burst_per_member); slow down and retry",
                    self.rate, self.burst
                )));
            }
            bucket.tokens -= 1.0;
        }
        let in_flight = state.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(state.clone());
        if self.streams > 0 && in_flight >= self.streams {
            return Err(Status::resource_exhausted(format!(
                "{caller} has {in_flight} calls in progress, the most this node serves one \
                 caller at once (limits.streams_per_member); retry when one has ended"
            )));
        }
        Ok(guard)
    }

    /// Raises the `member_limits` alert for `caller`, at most once per window.
    async fn alert(&self, caller: &Caller, state: &CallerState, method: &str, status: &Status) {
        {
            let mut alerted = lock(&state.alerted);
            let now = Instant::now();
            if alerted.is_some_and(|at| now.duration_since(at) < self.window) {
                return;
            }
            *alerted = Some(now);
        }
        let peer = match caller {
            Caller::Member(id) => id.clone(),
            other => other.key(),
        };
        self.alerts
            .raise(
                Rule::MemberLimits,
                Some(&peer),
                format!(
                    "{caller} went over its limits calling {}: {} (further refusals within {} \
                     raise no alert)",
                    shown(method, TEXT_CAP),
                    status.message(),
                    humantime::format_duration(self.window)
                ),
            )
            .await;
    }
}

/// One call in progress: counted until this is dropped, with the response body.
struct InFlight(Arc<CallerState>);

/// A call admitted by [`LimitsLayer::admit`], counted as in progress until dropped.
pub struct Admitted {
    _in_flight: InFlight,
}

impl LimitsLayer {
    /// Admits one call of an authenticated `caller` to `method` that does not pass
    /// through a gRPC router (the Dataspace Protocol binding), under the same limits
    /// and the same counts as its gRPC calls: a member cannot double its rate by
    /// using both. A refusal raises the alert and is recorded as the layer does.
    pub async fn admit(&self, caller: &Caller, method: &str) -> Result<Admitted, Status> {
        let shared = &self.shared;
        let state = shared.state(caller);
        match shared.admit(caller, &state) {
            Ok(in_flight) => Ok(Admitted {
                _in_flight: in_flight,
            }),
            Err(status) => {
                shared.alert(caller, &state, method, &status).await;
                shared
                    .refusals
                    .record(caller, method, status.code(), status.message())
                    .await;
                Err(status)
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<S> tower::Layer<S> for LimitsLayer {
    type Service = LimitsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LimitsService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[derive(Clone)]
pub struct LimitsService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, B> tower::Service<http::Request<B>> for LimitsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The inner service was driven to readiness in poll_ready; call that instance
        // and leave a fresh clone in its place for the next request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(caller) = Caller::of(request.extensions()) else {
            // Only authenticated requests reach this layer; nothing to count otherwise.
            return Box::pin(inner.call(request));
        };
        let shared = self.shared.clone();
        let method = request.uri().path().to_owned();
        let state = shared.state(&caller);
        let guard = match shared.admit(&caller, &state) {
            Ok(guard) => guard,
            Err(status) => {
                return Box::pin(async move {
                    shared.alert(&caller, &state, &method, &status).await;
                    shared
                        .refusals
                        .record(&caller, &method, status.code(), status.message())
                        .await;
                    Ok(status.into_http())
                });
            }
        };
        let call = inner.call(request);
        Box::pin(async move {
            let mut response = crate::tls::auth::limit_status(call.await?);
            let refusals = shared.refusals.clone();
            if let Some(status) = capped_status(response.headers_mut()) {
                // A trailers-only answer: recorded before the caller hears it.
                refusals
                    .record(&caller, &method, status.code(), status.message())
                    .await;
                return Ok(response);
            }
            Ok(response.map(|inner| {
                Body::new(WatchedBody {
                    inner,
                    end: Some(End {
                        caller,
                        method,
                        refusals,
                    }),
                    _guard: guard,
                })
            }))
        })
    }
}

/// The status in `headers` if it is not OK, its message capped to [`MESSAGE_CAP`] in
/// place.
fn capped_status(headers: &mut HeaderMap) -> Option<Status> {
    let status = Status::from_header_map(headers)?;
    if status.code() == Code::Ok {
        return None;
    }
    let message = shown(status.message(), MESSAGE_CAP);
    if message != status.message() {
        let capped = Status::new(status.code(), message.clone());
        headers.remove("grpc-message");
        if capped.add_header(headers).is_err() {
            headers.remove("grpc-message");
        }
        return Some(capped);
    }
    Some(status)
}

/// What a streamed response records if it ends with an error.
struct End {
    caller: Caller,
    method: String,
    refusals: Arc<RefusalLog>,
}

/// A response body that holds its call's place among the caller's calls in progress
/// until it ends or is dropped, and records an error that ends the stream.
struct WatchedBody {
    inner: Body,
    end: Option<End>,
    _guard: InFlight,
}

impl http_body::Body for WatchedBody {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        let frame = match frame.into_trailers() {
            Ok(mut trailers) => {
                if let (Some(status), Some(end)) = (capped_status(&mut trailers), this.end.take()) {
                    // The stream's end cannot wait for the audit log here; the entry is
                    // written beside it.
                    tokio::spawn(async move {
                        end.refusals
                            .record(&end.caller, &end.method, status.code(), status.message())
                            .await;
                    });
                }
                Frame::trailers(trailers)
            }
            Err(frame) => frame,
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The tables stay consistent under a panic (plain inserts and counters).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SledStorage;

    fn logged(audit: &AuditLog) -> Vec<Event> {
        (0..audit.size())
            .map(|i| serde_json::from_slice(&audit.entry(i).unwrap().unwrap()).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn a_scan_of_many_addresses_is_pooled_but_members_are_not() {
        let audit = AuditLog::open(SledStorage::temporary().unwrap()).unwrap();
        let limits = Limits {
            refusals_recorded_per_window: 1,
            refusal_window: Duration::from_secs(3600),
            ..Limits::default()
        };
        let log = RefusalLog::new(audit.clone(), &limits);
        let from = |i: usize| Caller::Unauthenticated {
            remote: Some(SocketAddr::from((
                [10, (i >> 16) as u8, (i >> 8) as u8, i as u8],
                443,
            ))),
            subject: None,
        };
        // A scan: each address refused twice, far more addresses than are tracked.
        for i in 0..MAX_TRACKED + 100 {
            for _ in 0..2 {
                log.record(&from(i), "/x", Code::Unauthenticated, "no")
                    .await;
            }
        }
        let member = Caller::Member("11330100MA2TRA0011".into());
        log.record(&member, "/y", Code::NotFound, "none").await;
        // The tracked addresses, the pool, and the member.
        assert_eq!(lock(&log.callers).len(), MAX_TRACKED + 2);
        let entries = logged(&audit);
        // One entry per tracked address, one for the pooled rest, one for the member.
        assert_eq!(entries.len(), MAX_TRACKED + 2, "{}", entries.len());
        assert_eq!(
            entries.last().unwrap().participant.as_deref(),
            Some("11330100MA2TRA0011")
        );
        log.flush(true).await;
        let summaries: Vec<Event> = logged(&audit).split_off(MAX_TRACKED + 2);
        // Each tracked address's second refusal, and the pool's further ones.
        assert_eq!(summaries.len(), MAX_TRACKED + 1, "{}", summaries.len());
        let pooled: Vec<&Event> = summaries
            .iter()
            .filter(|e| {
                e.detail
                    .starts_with("199 more refusals of an unauthenticated caller ")
            })
            .collect();
        assert_eq!(pooled.len(), 1, "{:?}", &summaries[..3]);
    }
}
