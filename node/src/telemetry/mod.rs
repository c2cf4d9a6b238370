//! Telemetry: traces and metrics through `tracing` and OpenTelemetry, exported over
//! OTLP/gRPC when a collector is named (`[telemetry] endpoint` in node.toml, or the
//! standard `OTEL_EXPORTER_OTLP_ENDPOINT` variable, which wins). With neither, nothing
//! is exported and nothing is retried: the node runs exactly as without telemetry.
//!
//! - Spans are ordinary `tracing` spans. [`rpc::RpcLayer`] opens one per request a node
//!   serves (continuing the W3C `traceparent` the caller sent in the gRPC metadata), and
//!   [`rpc::PeerChannel`] one per call to a peer (sending its own `traceparent`), so a
//!   negotiation or a transfer is one trace across both nodes.
//! - Each node owns its tracer and meter providers ([`Telemetry`], in the node's
//!   context), with `service.instance.id` = its participant ID, so several nodes in one
//!   process (the tests, or an embedding) export as separate services and shut down
//!   separately. There is no global OpenTelemetry provider or propagator.
//! - The one process-wide piece is the `tracing` subscriber: [`tracing_layer`] bridges
//!   `tracing` spans to OpenTelemetry. It finds the node a span belongs to in the
//!   OpenTelemetry context, where the node's RPC layers put it at the root of each
//!   request, and every child span inherits it. Spans that belong to no exporting node
//!   are not recorded. The `liutong` binary installs this layer; an embedding that wants
//!   traces installs it in its own subscriber (metrics need nothing process-wide).
//! - [`metrics::Metrics`] holds every instrument (names in the README, "Telemetry").

pub mod metrics;
pub mod rpc;

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::metrics::{MeterProvider as _, NoopMeterProvider};
use opentelemetry::trace::{SpanBuilder, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;

pub use metrics::Metrics;
pub use rpc::{PeerChannel, RpcLayer};

use crate::config::NodeConfig;

/// The standard variable naming an OTLP collector; it overrides `[telemetry] endpoint`.
pub const ENDPOINT_VARIABLE: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// `service.name` when neither the configuration nor `OTEL_SERVICE_NAME` gives one.
pub const DEFAULT_SERVICE_NAME: &str = "liutong-node";
/// The instrumentation scope of the node's spans and metrics.
const SCOPE: &str = "liutong";
/// How long one OTLP export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    #[error(
        "cannot set up the OTLP exporter for {endpoint} ({source_of_endpoint}): {reason}; \
         give a URL such as http://127.0.0.1:4317"
    )]
    Exporter {
        endpoint: String,
        source_of_endpoint: &'static str,
        reason: String,
    },
}

/// One node's telemetry: its metrics, and its OpenTelemetry providers when exporting.
pub struct Telemetry {
    /// Every instrument the node records into.
    pub metrics: Metrics,
    /// Present when a collector is configured.
    export: Option<Export>,
}

struct Export {
    endpoint: String,
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    /// Carried in the OpenTelemetry context of this node's requests.
    node: NodeTrace,
}

/// The tracer of the node a span belongs to, carried in the OpenTelemetry context.
#[derive(Clone, Debug)]
pub(crate) struct NodeTrace(SdkTracer);

impl Telemetry {
    /// Sets up the node's telemetry from `[telemetry]` and the environment. Exporters
    /// connect lazily: an unreachable collector delays nothing here. Needs a Tokio
    /// runtime (the gRPC exporter's channel lives on it).
    pub fn start(config: &NodeConfig) -> Result<Self, TelemetryError> {
        let (endpoint, source_of_endpoint) = match std::env::var(ENDPOINT_VARIABLE) {
            Ok(e) if !e.trim().is_empty() => (Some(e.trim().to_owned()), ENDPOINT_VARIABLE),
            _ => (config.telemetry.endpoint.clone(), "[telemetry] endpoint"),
        };
        let Some(endpoint) = endpoint else {
            // Nothing reads the metrics, so the instruments are no-ops. An SDK meter
            // provider without a reader would aggregate for nobody, and it refuses
            // observable gauges (no reader, no stream), logging an error for each.
            return Ok(Self {
                metrics: Metrics::new(&NoopMeterProvider::new().meter(SCOPE)),
                export: None,
            });
        };
        let resource = resource(config);
        let exporter_err = |reason: String| TelemetryError::Exporter {
            endpoint: endpoint.clone(),
            source_of_endpoint,
            reason,
        };
        let spans = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| exporter_err(e.to_string()))?;
        let metrics = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| exporter_err(e.to_string()))?;
        let tracer_provider = SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_batch_exporter(spans)
            .build();
        let meter_provider = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(
                PeriodicReader::builder(metrics)
                    .with_interval(config.telemetry.metrics_interval)
                    .build(),
            )
            .build();
        let node = NodeTrace(tracer_provider.tracer(SCOPE));
        tracing::info!(%endpoint, "exporting traces and metrics over OTLP/gRPC");
        Ok(Self {
            metrics: Metrics::new(&meter_provider.meter(SCOPE)),
            export: Some(Export {
                endpoint,
                tracer_provider,
                meter_provider,
                node,
            }),
        })
    }

    /// The collector this node exports to, if any.
    pub fn endpoint(&self) -> Option<&str> {
        self.export.as_ref().map(|e| e.endpoint.as_str())
    }

    /// The node's trace handle, if it exports traces.
    pub(crate) fn node_trace(&self) -> Option<&NodeTrace> {
        self.export.as_ref().map(|e| &e.node)
    }

    /// Exports what is pending and stops the exporters. Blocks while exporting: call it
    /// from a blocking thread (`tokio::task::spawn_blocking`), never on a runtime worker.
    pub fn shutdown(&self) {
        let Some(export) = &self.export else { return };
        if let Err(e) = export.tracer_provider.shutdown() {
            tracing::warn!(error = %e, "traces not all exported at shutdown");
        }
        if let Err(e) = export.meter_provider.shutdown() {
            tracing::warn!(error = %e, "metrics not all exported at shutdown");
        }
    }
}

/// `service.name`, `service.instance.id` (the participant ID) and `liutong.participant`.
fn resource(config: &NodeConfig) -> Resource {
    let name = config
        .telemetry
        .service_name
        .clone()
        .or_else(|| {
            std::env::var("OTEL_SERVICE_NAME")
                .ok()
                .filter(|n| !n.trim().is_empty())
        })
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
    Resource::builder()
        .with_service_name(name)
        .with_attributes([
            KeyValue::new("service.instance.id", config.node.participant.to_string()),
            KeyValue::new("service.version", crate::base::VERSION),
            KeyValue::new("liutong.participant", config.node.participant.to_string()),
        ])
        .build()
}

/// The `tracing` layer that turns the node's spans into OpenTelemetry spans, each
/// exported by the node it belongs to (see the module doc). Install it once per
/// process, beside the log output:
///
/// ```no_run
/// use tracing_subscriber::layer::SubscriberExt as _;
/// use tracing_subscriber::util::SubscriberInitExt as _;
/// tracing_subscriber::registry()
///     .with(liutong_node::telemetry::tracing_layer())
///     .init();
/// ```
pub fn tracing_layer<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(NodeRouter)
        .with_threads(false)
        // The node's own spans (at DEBUG, so the log output shows them only when asked
        // for) and the log lines inside them; not the libraries' own (h2, hyper, tonic),
        // which would flood the spans with transport detail.
        .with_filter(Targets::new().with_target("liutong_node", tracing::Level::DEBUG))
}

/// Routes each span to the tracer of the node it belongs to ([`NodeTrace`] in the parent
/// context), or to a tracer that records nothing.
struct NodeRouter;

impl opentelemetry::trace::Tracer for NodeRouter {
    type Span = opentelemetry_sdk::trace::Span;

    fn build_with_context(&self, builder: SpanBuilder, parent_cx: &Context) -> Self::Span {
        match parent_cx.get::<NodeTrace>() {
            Some(node) => node.0.build_with_context(builder, parent_cx),
            None => unrecorded().build_with_context(builder, parent_cx),
        }
    }
}

/// A tracer whose spans are never sampled or exported, for spans of no exporting node.
fn unrecorded() -> &'static SdkTracer {
    static TRACER: OnceLock<SdkTracer> = OnceLock::new();
    TRACER.get_or_init(|| {
        SdkTracerProvider::builder()
            .with_sampler(Sampler::AlwaysOff)
            .build()
            .tracer(SCOPE)
    })
}

/// The W3C trace-context propagator (stateless, so one per use costs nothing).
pub(crate) fn propagator() -> TraceContextPropagator {
    TraceContextPropagator::new()
}
