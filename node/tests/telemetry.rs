//! OpenTelemetry export across real nodes: an in-process OTLP/gRPC receiver (the
//! collector's own service definitions), two nodes exporting to it, and a negotiation
//! and a transfer between them that must each be one trace spanning both nodes, with
//! the node's metrics arriving beside them.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use liutong_node::config::NodeConfig;
use liutong_node::identity::MemberRole;
use liutong_node::runtime::RunningNode;
use liutong_node::setup::InitOptions;
use liutong_proto::v1::DescribeRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tokio::net::TcpListener;

const POLICY: &str = r#"
uid = "urn:liutong:policy:traffic"
type = "set"

[[permission]]
action = "use"
constraint = [{ leftOperand = "purpose", operator = "isA", rightOperand = "publicService" }]
"#;

const CSV: &[u8] = b"road,hour,vehicles\nYan'an Rd,8,1520\nTianmushan Rd,8,1210\n";

/// What the in-process collector received.
#[derive(Clone, Default)]
struct Collector {
    traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.traces.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.metrics.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

impl Collector {
    /// Serves OTLP/gRPC (plain, as a local collector does) on a loopback port; returns
    /// the endpoint URL.
    async fn start(&self) -> (String, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(self.clone()))
            .add_service(MetricsServiceServer::new(self.clone()));
        tokio::spawn(server.serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            async {
                let _ = stopped.await;
            },
        ));
        (endpoint, stop)
    }

    /// Every span received: (service.instance.id, service.name, span).
    fn spans(&self) -> Vec<(String, String, opentelemetry_proto::tonic::trace::v1::Span)> {
        let mut out = Vec::new();
        for request in self.traces.lock().unwrap().iter() {
            for rs in &request.resource_spans {
                let resource = rs.resource.clone().unwrap_or_default();
                let instance = string_attr(&resource.attributes, "service.instance.id");
                let service = string_attr(&resource.attributes, "service.name");
                for ss in &rs.scope_spans {
                    for span in &ss.spans {
                        out.push((instance.clone(), service.clone(), span.clone()));
                    }
                }
            }
        }
        out
    }

    /// Every metric point received: (service.instance.id, metric name, attributes,
    /// value: the number, or a histogram's count).
    fn points(&self) -> Vec<Point> {
        let mut out = Vec::new();
        for request in self.metrics.lock().unwrap().iter() {
            for rm in &request.resource_metrics {
                let resource = rm.resource.clone().unwrap_or_default();
                let instance = string_attr(&resource.attributes, "service.instance.id");
                for sm in &rm.scope_metrics {
                    for m in &sm.metrics {
                        let mut push = |attributes: &[KeyValue], value: f64| {
                            out.push(Point {
                                instance: instance.clone(),
                                name: m.name.clone(),
                                attributes: attributes.to_vec(),
                                value,
                            })
                        };
                        match &m.data {
                            Some(metric::Data::Sum(sum)) => {
                                for p in &sum.data_points {
                                    push(&p.attributes, number(&p.value));
                                }
                            }
                            Some(metric::Data::Gauge(gauge)) => {
                                for p in &gauge.data_points {
                                    push(&p.attributes, number(&p.value));
                                }
                            }
                            Some(metric::Data::Histogram(h)) => {
                                for p in &h.data_points {
                                    push(&p.attributes, p.count as f64);
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        out
    }
}

#[derive(Debug)]
struct Point {
    instance: String,
    name: String,
    attributes: Vec<KeyValue>,
    value: f64,
}

impl Point {
    fn has(&self, key: &str, value: &str) -> bool {
        self.attributes
            .iter()
            .any(|kv| kv.key == key && value_text(&kv.value) == value)
    }
}

/// The largest value of `name` at `instance` whose attributes include all of `with`
/// (counters are cumulative, so the largest is the latest).
fn largest(points: &[Point], instance: &str, name: &str, with: &[(&str, &str)]) -> Option<f64> {
    points
        .iter()
        .filter(|p| p.instance == instance && p.name == name)
        .filter(|p| with.iter().all(|(k, v)| p.has(k, v)))
        .map(|p| p.value)
        .reduce(f64::max)
}

fn number(value: &Option<number_data_point::Value>) -> f64 {
    match value {
        Some(number_data_point::Value::AsInt(i)) => *i as f64,
        Some(number_data_point::Value::AsDouble(d)) => *d,
        None => f64::NAN,
    }
}

fn value_text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

fn string_attr(attributes: &[KeyValue], key: &str) -> String {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| value_text(&kv.value))
        .unwrap_or_default()
}

/// The process's `tracing` subscriber with the node's OpenTelemetry layer, as the
/// `liutong` binary installs it.
fn install_tracing() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let _ = tracing_subscriber::registry()
        .with(liutong_node::telemetry::tracing_layer())
        .try_init();
}

fn exporting_to(endpoint: &str, service: &str) -> impl FnOnce(&mut NodeConfig) {
    let endpoint = endpoint.to_owned();
    let service = service.to_owned();
    move |c: &mut NodeConfig| {
        c.telemetry.endpoint = Some(endpoint);
        c.telemetry.service_name = Some(service);
    }
}

const BOTH: &[MemberRole] = &[MemberRole::Provider, MemberRole::Consumer];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_negotiation_and_a_transfer_are_each_one_trace_across_both_nodes() {
    install_tracing();
    let collector = Collector::default();
    let (endpoint, stop_collector) = collector.start().await;
    let space = DataSpace::start().await;
    let transport = space
        .node_with(
            TRANSPORT,
            "transport",
            BOTH,
            exporting_to(&endpoint, "transport"),
        )
        .await;
    let ecology = space
        .node_with(ECOLOGY, "ecology", BOTH, exporting_to(&endpoint, "ecology"))
        .await;
    refresh_all(&[&transport, &ecology]).await;
    assert_eq!(
        transport.running.node.telemetry.endpoint(),
        Some(endpoint.as_str())
    );

    let product = publish(
        &transport,
        CSV,
        "Road traffic flow",
        "general-2",
        "csv",
        POLICY,
    )
    .await
    .expect("publish");
    let contract = ecology
        .request_contract(&transport, &product.offer_id, "urbanPlanning")
        .await
        .expect("negotiation");
    assert_eq!(contract.state, "FINALIZED");
    let last = ecology
        .pull_all(&contract.agreement_id)
        .await
        .expect("pull");
    assert_eq!(last.state, "COMPLETED");
    // An alert is a metric too.
    transport
        .running
        .node
        .alerts
        .raise(
            liutong_node::alerts::Rule::ReadOutsideWindow,
            None,
            "raised by the telemetry test",
        )
        .await;

    // Shutting down exports what is pending.
    let consumer_id = ecology.participant.to_string();
    let provider_id = transport.participant.to_string();
    ecology.running.shutdown().await.unwrap();
    transport.running.shutdown().await.unwrap();
    let names = |c: &Collector, who: &str| -> HashSet<String> {
        c.spans()
            .into_iter()
            .filter(|(i, _, _)| i == who)
            .map(|(_, _, s)| s.name)
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(20), || {
            let c = collector.clone();
            let (consumer, provider) = (consumer_id.clone(), provider_id.clone());
            async move {
                names(&c, &consumer).contains("liutong.v1.Admin/PullTransfer")
                    && names(&c, &provider).contains("liutong.v1.Transfer/Receipt")
            }
        })
        .await,
        "spans from both nodes; got {:?}",
        collector
            .spans()
            .iter()
            .map(|(i, _, s)| (i.clone(), s.name.clone()))
            .collect::<Vec<_>>()
    );
    let spans = collector.spans();
    let find = |who: &str, name: &str, kind: SpanKind| {
        spans
            .iter()
            .find(|(i, _, s)| i == who && s.name == name && s.kind == kind as i32)
            .map(|(_, service, s)| (service.clone(), s.clone()))
            .unwrap_or_else(|| panic!("no {kind:?} span {name} from {who}"))
    };

    // The negotiation: the consumer's local request, its call to the provider, and the
    // provider's handling of it are one trace, parent to child.
    let (service, asked) = find(
        &consumer_id,
        "liutong.v1.Admin/RequestContract",
        SpanKind::Server,
    );
    assert_eq!(service, "ecology");
    let (_, called) = find(
        &consumer_id,
        "liutong.v1.Negotiation/Request",
        SpanKind::Client,
    );
    let (service, served) = find(
        &provider_id,
        "liutong.v1.Negotiation/Request",
        SpanKind::Server,
    );
    assert_eq!(service, "transport");
    assert_eq!(called.trace_id, asked.trace_id);
    assert_eq!(called.parent_span_id, asked.span_id);
    assert_eq!(
        served.trace_id, asked.trace_id,
        "one trace across both nodes"
    );
    assert_eq!(served.parent_span_id, called.span_id);
    // The countersigned agreement goes back in the same trace.
    let (_, verified) = find(
        &provider_id,
        "liutong.v1.Negotiation/Verify",
        SpanKind::Server,
    );
    assert_eq!(verified.trace_id, asked.trace_id);
    assert_eq!(string_attr(&served.attributes, "rpc.grpc.status_code"), "0");

    // The transfer: the consumer's pull, the provider's delivery and the receipt.
    let (_, pulled) = find(
        &consumer_id,
        "liutong.v1.Admin/PullTransfer",
        SpanKind::Server,
    );
    let (_, delivered) = find(&provider_id, "liutong.v1.Transfer/Pull", SpanKind::Server);
    let (_, receipt) = find(
        &provider_id,
        "liutong.v1.Transfer/Receipt",
        SpanKind::Server,
    );
    assert_eq!(
        delivered.trace_id, pulled.trace_id,
        "one trace across both nodes"
    );
    assert_eq!(receipt.trace_id, pulled.trace_id);
    assert_ne!(
        pulled.trace_id, asked.trace_id,
        "two operations, two traces"
    );

    // The metrics of both nodes.
    assert!(
        wait_until(Duration::from_secs(20), || {
            let c = collector.clone();
            let consumer = consumer_id.clone();
            async move {
                largest(&c.points(), &consumer, "liutong.transfer.duration", &[]).is_some()
            }
        })
        .await,
        "metrics arrive"
    );
    let points = collector.points();
    let got = |who: &str, name: &str, with: &[(&str, &str)]| {
        largest(&points, who, name, with)
            .unwrap_or_else(|| panic!("no {name} {with:?} from {who}: {points:#?}"))
    };
    assert!(
        got(
            &provider_id,
            "liutong.rpc.server.requests",
            &[
                ("liutong.api", "peer"),
                ("rpc.service", "liutong.v1.Negotiation"),
                ("rpc.method", "Request"),
                ("rpc.grpc.status_code", "0"),
            ],
        ) >= 1.0
    );
    assert!(
        got(
            &consumer_id,
            "liutong.rpc.server.requests",
            &[("liutong.api", "local"), ("rpc.method", "RequestContract")],
        ) >= 1.0
    );
    for scope in ["catalog", "negotiation", "transfer"] {
        assert!(
            got(
                &provider_id,
                "liutong.policy.decisions",
                &[
                    ("liutong.policy.scope", scope),
                    ("liutong.policy.outcome", "permit")
                ],
            ) >= 1.0,
            "{scope}"
        );
    }
    assert_eq!(
        got(
            &provider_id,
            "liutong.transfer.bytes",
            &[("liutong.transfer.direction", "sent")]
        ),
        CSV.len() as f64
    );
    assert_eq!(
        got(
            &consumer_id,
            "liutong.transfer.bytes",
            &[("liutong.transfer.direction", "received")]
        ),
        CSV.len() as f64
    );
    assert_eq!(
        got(
            &consumer_id,
            "liutong.negotiation.duration",
            &[("liutong.negotiation.outcome", "FINALIZED")]
        ),
        1.0
    );
    assert_eq!(
        got(
            &consumer_id,
            "liutong.transfer.duration",
            &[("liutong.transfer.outcome", "COMPLETED")]
        ),
        1.0
    );
    assert!(got(&provider_id, "liutong.audit.log.size", &[]) > 5.0);
    assert_eq!(
        got(
            &provider_id,
            "liutong.alerts",
            &[
                ("liutong.alert.rule", "read_outside_window"),
                ("liutong.alert.severity", "warning")
            ]
        ),
        1.0
    );
    // Gauges are reported even with nothing to say.
    got(&provider_id, "liutong.audit.witness.lag", &[]);
    let _ = stop_collector.send(());
}

/// Starts a node whose configuration `edit` changes; the start's result.
async fn start_with(
    space: &DataSpace,
    id: &str,
    name: &str,
    edit: impl FnOnce(&mut NodeConfig),
) -> Result<RunningNode, liutong_node::runtime::NodeError> {
    let bundle = space.admit(DataSpace::admission(
        id,
        name,
        liutong_node::identity::ParticipantKind::Government,
    ));
    let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let path = space.init_from_bundle(
        &bundle,
        InitOptions {
            dir: space.dir.path().join(format!("node-{name}")),
            bundle: bundle.clone(),
            listen: peer.local_addr().unwrap(),
            admin_listen: admin.local_addr().unwrap(),
            authority: space.authority.addr.to_string(),
            force: false,
            important_regions: vec![],
            development: None,
        },
    );
    let mut config = NodeConfig::load(&path).unwrap();
    edit(&mut config);
    RunningNode::start_with_listeners(config, peer, admin).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_collector_address_stops_the_start_and_a_dead_collector_stops_nothing() {
    let space = DataSpace::start().await;
    let err = start_with(&space, TRANSPORT, "bad", |c| {
        c.telemetry.endpoint = Some("not a url".into())
    })
    .await
    .err()
    .expect("refused");
    let message = err.to_string();
    assert!(
        message.contains("not a url") && message.contains("[telemetry] endpoint"),
        "{message}"
    );

    // Nothing listens there: the node serves as usual and stops promptly.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let node = start_with(&space, ECOLOGY, "dead-collector", |c| {
        c.telemetry.endpoint = Some(dead)
    })
    .await
    .expect("starts");
    let identity = liutong_node::tls::TlsIdentity::load(
        &node.node.config.identity_dir().join("node.crt"),
        &node.node.config.identity_dir().join("node.key"),
    )
    .unwrap();
    let roots =
        liutong_node::tls::load_roots(&node.node.config.identity_dir().join("ca.crt")).unwrap();
    let mut client = node_client(node.peer_addr(), Some(&identity), roots).await;
    client.describe(DescribeRequest {}).await.expect("served");
    node.shutdown().await.expect("clean shutdown");
}
