//! The node's metric instruments, in one place so their names and attributes stay
//! consistent (the README lists them under "Telemetry").

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, ObservableGauge};

use crate::audit::log::AuditLog;

/// Latency buckets in seconds: from a few milliseconds (a local decision) to minutes
/// (a large transfer).
const SECONDS_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Every instrument of a node. Cloning shares the instruments.
#[derive(Clone)]
pub struct Metrics {
    meter: Meter,
    rpc_requests: Counter<u64>,
    rpc_duration: Histogram<f64>,
    decisions: Counter<u64>,
    transfer_bytes: Counter<u64>,
    negotiation_duration: Histogram<f64>,
    transfer_duration: Histogram<f64>,
    alerts: Counter<u64>,
    /// The largest audit-log size covered by a checkpoint with its quorum of cosignatures.
    witnessed_size: Arc<AtomicU64>,
    /// Observable gauges stay registered while these live.
    gauges: Arc<std::sync::Mutex<Vec<ObservableGauge<u64>>>>,
}

impl Metrics {
    pub(crate) fn new(meter: &Meter) -> Self {
        Self {
            meter: meter.clone(),
            rpc_requests: meter
                .u64_counter("liutong.rpc.server.requests")
                .with_description("Requests served, by API, RPC and gRPC status")
                .with_unit("{request}")
                .build(),
            rpc_duration: meter
                .f64_histogram("liutong.rpc.server.duration")
                .with_description("Time to serve a request, to the end of its response")
                .with_unit("s")
                .with_boundaries(SECONDS_BUCKETS.to_vec())
                .build(),
            decisions: meter
                .u64_counter("liutong.policy.decisions")
                .with_description("Policy decisions, by scope and outcome (permit or deny)")
                .with_unit("{decision}")
                .build(),
            transfer_bytes: meter
                .u64_counter("liutong.transfer.bytes")
                .with_description("Payload bytes transferred, by direction (sent or received)")
                .with_unit("By")
                .build(),
            negotiation_duration: meter
                .f64_histogram("liutong.negotiation.duration")
                .with_description(
                    "Consumer side: from the contract request to the provider's final answer",
                )
                .with_unit("s")
                .with_boundaries(SECONDS_BUCKETS.to_vec())
                .build(),
            transfer_duration: meter
                .f64_histogram("liutong.transfer.duration")
                .with_description("Consumer side: one pull of a product, to its end or a stop")
                .with_unit("s")
                .with_boundaries(SECONDS_BUCKETS.to_vec())
                .build(),
            alerts: meter
                .u64_counter("liutong.alerts")
                .with_description("Security alerts raised, by rule and severity")
                .with_unit("{alert}")
                .build(),
            witnessed_size: Arc::new(AtomicU64::new(0)),
            gauges: Arc::default(),
        }
    }

    /// Registers the gauges read from the audit log: its size and the witness lag.
    pub fn observe_audit_log(&self, audit: &AuditLog) {
        let log = audit.clone();
        let size = self
            .meter
            .u64_observable_gauge("liutong.audit.log.size")
            .with_description("Entries in the node's audit log")
            .with_unit("{entry}")
            .with_callback(move |o| o.observe(log.size(), &[]))
            .build();
        let log = audit.clone();
        let witnessed = self.witnessed_size.clone();
        let lag = self
            .meter
            .u64_observable_gauge("liutong.audit.witness.lag")
            .with_description(
                "Audit-log entries not yet covered by a checkpoint with its quorum of cosignatures",
            )
            .with_unit("{entry}")
            .with_callback(move |o| {
                o.observe(
                    log.size().saturating_sub(witnessed.load(Ordering::Relaxed)),
                    &[],
                )
            })
            .build();
        let mut gauges = self.gauges.lock().unwrap_or_else(|p| p.into_inner());
        gauges.push(size);
        gauges.push(lag);
    }

    /// A checkpoint of `size` entries now carries its quorum of cosignatures.
    pub fn witnessed(&self, size: u64) {
        self.witnessed_size.fetch_max(size, Ordering::Relaxed);
    }

    /// One request served.
    pub fn rpc_served(
        &self,
        api: &'static str,
        service: &str,
        method: &str,
        code: i64,
        took: Duration,
    ) {
        let attributes = [
            KeyValue::new("liutong.api", api),
            KeyValue::new("rpc.service", service.to_owned()),
            KeyValue::new("rpc.method", method.to_owned()),
            KeyValue::new("rpc.grpc.status_code", code),
        ];
        self.rpc_requests.add(1, &attributes);
        self.rpc_duration.record(took.as_secs_f64(), &attributes);
    }

    /// One policy decision; `scope` is catalog, negotiation, transfer or use.
    pub fn policy_decision(&self, scope: &'static str, permit: bool) {
        self.decisions.add(
            1,
            &[
                KeyValue::new("liutong.policy.scope", scope),
                KeyValue::new(
                    "liutong.policy.outcome",
                    if permit { "permit" } else { "deny" },
                ),
            ],
        );
    }

    /// Payload bytes sent (provider) or received (consumer).
    pub fn transfer_bytes(&self, direction: Direction, bytes: u64) {
        self.transfer_bytes.add(
            bytes,
            &[KeyValue::new(
                "liutong.transfer.direction",
                direction.as_str(),
            )],
        );
    }

    /// A negotiation requested by this node ended in `outcome` (the state reached, or
    /// `error`).
    pub fn negotiation_finished(&self, outcome: String, took: Duration) {
        self.negotiation_duration.record(
            took.as_secs_f64(),
            &[KeyValue::new("liutong.negotiation.outcome", outcome)],
        );
    }

    /// A pull by this node ended in `outcome` (the transfer state reached, or `error`).
    pub fn transfer_finished(&self, outcome: String, took: Duration) {
        self.transfer_duration.record(
            took.as_secs_f64(),
            &[KeyValue::new("liutong.transfer.outcome", outcome)],
        );
    }

    /// An alert was raised.
    pub fn alert(&self, rule: &'static str, severity: &'static str) {
        self.alerts.add(
            1,
            &[
                KeyValue::new("liutong.alert.rule", rule),
                KeyValue::new("liutong.alert.severity", severity),
            ],
        );
    }
}

/// Which way payload bytes went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Delivered by this node as provider.
    Sent,
    /// Received by this node as consumer.
    Received,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Received => "received",
        }
    }
}
