//! gRPC calls in and out of a node: a span and the request metrics around every request
//! it serves ([`RpcLayer`]), and a span around every call it makes to a peer, with the
//! W3C trace context sent in the request metadata ([`PeerChannel`]).
//!
//! A gRPC status travels in the response trailers (or, for an immediate refusal, in
//! the headers), so the server side watches the response body to its end before it
//! counts the request: a streaming transfer is measured to its last chunk.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use http::HeaderMap;
use http_body::{Frame, SizeHint};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use tonic::body::Body;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::{Metrics, NodeTrace, Telemetry, propagator};
use crate::base::BoxFuture;

/// A tower layer for a node's router: one `rpc.server` span per request (continuing the
/// caller's trace), and `liutong.rpc.server.*` metrics by RPC and status. It goes
/// outside the authentication layer, so refused requests are counted too.
#[derive(Clone)]
pub struct RpcLayer {
    telemetry: Arc<Telemetry>,
    /// `peer` or `local`: which API the router serves.
    api: &'static str,
}

impl RpcLayer {
    pub fn new(telemetry: Arc<Telemetry>, api: &'static str) -> Self {
        Self { telemetry, api }
    }
}

impl<S> tower::Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`RpcLayer`] makes.
#[derive(Clone)]
pub struct RpcService<S> {
    inner: S,
    layer: RpcLayer,
}

impl<S, B> tower::Service<http::Request<B>> for RpcService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (service, method) = split_path(request.uri().path());
        let span = tracing::debug_span!(
            "rpc.server",
            otel.name = %format!("{service}/{method}"),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            liutong.api = self.layer.api,
            rpc.grpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        if let Some(node) = self.layer.telemetry.node_trace() {
            let parent = propagator().extract(&HeaderExtractor(request.headers()));
            // Fails only when no OpenTelemetry layer is installed: then there is no
            // trace to continue.
            let _ = span.set_parent(parent.with_value(node.clone()));
        }
        let finish = Finish {
            metrics: self.layer.telemetry.metrics.clone(),
            api: self.layer.api,
            service,
            method,
            started: Instant::now(),
            span: span.clone(),
        };
        // The inner service was driven to readiness in poll_ready; call that instance
        // and leave a fresh clone in its place for the next request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let call = span.in_scope(|| inner.call(request)).instrument(span);
        Box::pin(async move {
            let response = call.await?;
            Ok(finish.watch(response))
        })
    }
}

/// What is recorded when a served request ends.
struct Finish {
    metrics: Metrics,
    api: &'static str,
    service: String,
    method: String,
    started: Instant,
    /// Ends when this is dropped (the last handle to the span).
    span: tracing::Span,
}

impl Finish {
    /// Records at once if the headers carry the status (a refusal); otherwise when the
    /// body reaches its trailers.
    fn watch(self, response: http::Response<Body>) -> http::Response<Body> {
        match grpc_status(response.headers()) {
            Some(code) => {
                self.record(code);
                response
            }
            None => response.map(|inner| {
                Body::new(ObservedBody {
                    inner,
                    finish: Some(self),
                })
            }),
        }
    }

    fn record(self, code: i64) {
        self.span.record("rpc.grpc.status_code", code);
        if code != 0 {
            self.span.record("otel.status_code", "error");
        }
        self.metrics.rpc_served(
            self.api,
            &self.service,
            &self.method,
            code,
            self.started.elapsed(),
        );
    }
}

/// A response body that records its request's status when its trailers pass.
struct ObservedBody {
    inner: Body,
    finish: Option<Finish>,
}

impl ObservedBody {
    fn finish(&mut self, code: i64) {
        if let Some(f) = self.finish.take() {
            f.record(code);
        }
    }
}

/// gRPC status codes used when the trailers say nothing.
const CODE_OK: i64 = 0;
const CODE_CANCELLED: i64 = 1;
const CODE_UNKNOWN: i64 = 2;

impl http_body::Body for ObservedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.finish(grpc_status(trailers).unwrap_or(CODE_OK));
                }
            }
            Poll::Ready(Some(Err(status))) => this.finish(status.code() as i64),
            Poll::Ready(None) => this.finish(CODE_UNKNOWN),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        // The client went away before the end of the response.
        self.finish(CODE_CANCELLED);
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<i64> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// `/liutong.v1.Negotiation/Request` → (`liutong.v1.Negotiation`, `Request`).
fn split_path(path: &str) -> (String, String) {
    let trimmed = path.trim_start_matches('/');
    match trimmed.split_once('/') {
        Some((service, method)) => (service.to_owned(), method.to_owned()),
        None => (trimmed.to_owned(), String::new()),
    }
}

/// A channel to a peer that opens an `rpc.client` span per call and sends its W3C
/// trace context (`traceparent`) in the request metadata. Cheap to clone, like the
/// channel it wraps.
#[derive(Clone)]
pub struct PeerChannel {
    inner: tonic::transport::Channel,
    /// The calling node's tracer, when it exports traces.
    node: Option<NodeTrace>,
}

impl PeerChannel {
    pub(crate) fn new(inner: tonic::transport::Channel, telemetry: &Telemetry) -> Self {
        Self {
            inner,
            node: telemetry.node_trace().cloned(),
        }
    }
}

impl tower::Service<http::Request<Body>> for PeerChannel {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let (service, method) = split_path(request.uri().path());
        let span = tracing::debug_span!(
            "rpc.client",
            otel.name = %format!("{service}/{method}"),
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            server.address = request.uri().authority().map(|a| a.as_str()).unwrap_or(""),
        );
        if let Some(node) = &self.node {
            // A child of whatever this node is doing (the current span), or the root of
            // a new trace for a background task; either way, this node's.
            let _ = span.set_parent(Context::current().with_value(node.clone()));
            propagator()
                .inject_context(&span.context(), &mut HeaderInjector(request.headers_mut()));
        }
        let call = span.in_scope(|| tower::Service::call(&mut self.inner, request));
        Box::pin(call.instrument(span))
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::header::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/liutong.v1.Negotiation/Request"),
            ("liutong.v1.Negotiation".into(), "Request".into())
        );
        assert_eq!(split_path("/odd"), ("odd".into(), String::new()));
    }

    #[test]
    fn trace_context_survives_the_metadata_round_trip() {
        use opentelemetry::trace::{
            SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
        };
        let sent = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let mut headers = HeaderMap::new();
        propagator().inject_context(
            &Context::new().with_remote_span_context(sent.clone()),
            &mut HeaderInjector(&mut headers),
        );
        assert_eq!(
            headers["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let received = propagator().extract(&HeaderExtractor(&headers));
        assert_eq!(received.span().span_context().trace_id(), sent.trace_id());
        assert_eq!(received.span().span_context().span_id(), sent.span_id());
    }
}
