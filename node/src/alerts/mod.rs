//! Real-time security monitoring (数据安全实时监测预警): the node watches its own
//! decisions and raises alerts by the rules in `[alerts]` of node.toml.
//!
//! Every alert is, in this order: a counter (`liutong.alerts`, by rule and severity), a
//! WARN or ERROR log line, an `alert` entry in the audit log (durable before
//! [`Alerts::raise`] returns), and, when a webhook is configured, a JSON POST sent by a
//! background task ([`webhook`]) so that a slow or dead receiver never holds up a
//! request.
//!
//! The rules (defaults in the README, "Security alerts"):
//! - [`Rule::PolicyDenials`]: `threshold` policy denials (negotiation or transfer scope)
//!   for one peer within `window`;
//! - [`Rule::FailedAuthentication`]: `threshold` refused authentications (peer or local
//!   API) from one address within `window`;
//! - [`Rule::TransferVolume`]: the bytes this node delivered under one agreement exceed
//!   `factor` × the product size the agreement covers;
//! - [`Rule::ReadOutsideWindow`]: a read of received data outside the time its policy
//!   permits, raised by usage control through [`Alerts::raise`];
//! - [`Rule::WitnessInconsistency`]: a peer's log signed two checkpoints that cannot
//!   both be true;
//! - [`Rule::TrustListExpiry`]: the trust list in force expires within `before`;
//! - [`Rule::StorageFailure`]: a flush or fsync of the node's storage failed, so the
//!   node refuses writes ([`Alerts::storage_failed`]). Its audit entry is left out: the
//!   storage that would hold it is the one that failed.
//! - [`Rule::MemberLimits`]: a caller went over its request rate or its calls in
//!   progress (`[limits]`), raised by the API's limits layer once per caller and window.
//!
//! Windowed counts and transfer volumes are kept in memory: a restart starts them anew.
//! When a windowed rule fires, its count for that source starts again, so a sustained
//! attack raises one alert per `threshold` events, not one per event.
//!
//! The rules and the alert's shape are in `rule.rs` (re-exported here), the windowed
//! counter in `windows.rs`, the delivery to a receiver in [`webhook`].

mod rule;
pub mod webhook;
mod windows;

pub use rule::{Alert, Rule, Severity};
use windows::Windows;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::audit::log::{AuditLog, Event, EventKind};
use crate::audit::witness::Evidence;
use crate::audit::witnessing::WitnessReports;
use crate::base::BoxFuture;
use crate::config::AlertsSection;
use crate::identity::ParticipantId;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::Direction;
use crate::trust::TrustStatus;

/// What the transfer-volume rule needs to know of an agreement under which this node
/// delivers: plain values, so that alerting does not depend on the data space.
#[derive(Clone, Copy, Debug)]
pub struct Delivery<'a> {
    pub agreement_id: &'a str,
    /// Who receives the bytes.
    pub consumer: &'a ParticipantId,
    pub product_id: &'a str,
    pub version: u32,
    /// The bytes of the product version the agreement covers.
    pub size: u64,
}

/// The node's alerting; cheap to clone.
#[derive(Clone)]
pub struct Alerts {
    inner: Arc<Inner>,
}

struct Inner {
    rules: AlertsSection,
    node: ParticipantId,
    audit: AuditLog,
    metrics: Metrics,
    /// Absent without a webhook.
    webhook: Option<webhook::Sender>,
    /// The windowed rules' recent events, per (rule, source).
    windows: Mutex<Windows>,
    /// Per agreement (provider side): bytes delivered since start, and whether the
    /// volume alert was raised.
    volumes: Mutex<HashMap<String, (u64, bool)>>,
    /// The trust-list sequence already alerted about, so each list is reported once.
    trust_alerted: Mutex<Option<u64>>,
    /// Alerts raised since start, by rule.
    raised: Mutex<HashMap<Rule, u64>>,
    /// The latest alerts raised, oldest first, at most [`RECENT_ALERTS`].
    recent: Mutex<VecDeque<Alert>>,
}

/// Alerts [`Alerts::recent`] keeps for the console's overview.
///
/// A small ring in memory, rather than a scan of the audit log for `alert` entries:
/// showing it costs nothing however long the log grows (a scan would read every entry
/// since the last alert, without bound), and it also holds the storage-failure alerts
/// the audit log cannot. It starts empty at each start; the audit log keeps every
/// alert for good.
pub const RECENT_ALERTS: usize = 20;

impl Alerts {
    /// Alerting for the node `node`, logging into `audit`. Starts the webhook sender if
    /// `[alerts] webhook` is set (needs a Tokio runtime).
    pub fn new(
        rules: AlertsSection,
        webhook_ca: Option<&std::path::Path>,
        node: ParticipantId,
        audit: AuditLog,
        metrics: Metrics,
    ) -> Result<Self, webhook::WebhookError> {
        let webhook = match &rules.webhook {
            Some(url) => Some(webhook::Sender::start(url, webhook_ca)?),
            None => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                rules,
                node,
                audit,
                metrics,
                webhook,
                windows: Mutex::default(),
                volumes: Mutex::default(),
                trust_alerted: Mutex::default(),
                raised: Mutex::default(),
                recent: Mutex::default(),
            }),
        })
    }

    /// Raises an alert now, unless its rule is disabled: metric, log line, audit entry
    /// (durable when this returns), webhook. `peer` is a participant ID or another
    /// description of the other side. Never fails: an alert that cannot be logged is
    /// reported on the log output.
    pub async fn raise(&self, rule: Rule, peer: Option<&str>, detail: impl Into<String>) {
        self.raise_logged(rule, peer, detail.into(), true).await
    }

    /// Raises [`Rule::StorageFailure`]: metric, ERROR line, webhook, but no audit entry,
    /// which the failed storage could not make durable (and whose failure would only
    /// be reported again).
    pub async fn storage_failed(&self, reason: &str) {
        self.raise_logged(
            Rule::StorageFailure,
            None,
            format!(
                "the node's storage failed ({reason}); writes are refused until the node is \
                 restarted after the disk is checked"
            ),
            false,
        )
        .await
    }

    async fn raise_logged(&self, rule: Rule, peer: Option<&str>, detail: String, audit: bool) {
        if !self.enabled(rule) {
            return;
        }
        let severity = rule.severity();
        let time = crate::base::clock::now();
        self.inner.metrics.alert(rule.name(), severity.name());
        *lock(&self.inner.raised).entry(rule).or_default() += 1;
        let peer_text = peer.unwrap_or("-");
        match severity {
            Severity::Warning => {
                tracing::warn!(rule = rule.name(), peer = peer_text, "ALERT: {detail}")
            }
            Severity::Critical => {
                tracing::error!(rule = rule.name(), peer = peer_text, "ALERT: {detail}")
            }
        }
        let mut event = Event::new(EventKind::Alert, time, format!("{rule}: {detail}"));
        // Only a participant ID goes into the searchable field; an address stays in
        // the alert's own text.
        event.participant = peer
            .filter(|p| ParticipantId::parse(p).is_ok())
            .map(str::to_owned);
        let audit_index = if audit {
            match self.inner.audit.append(&event).await {
                Ok(index) => Some(index),
                Err(e) => {
                    tracing::error!(error = %e, rule = rule.name(), "cannot log the alert in the audit log");
                    None
                }
            }
        } else {
            None
        };
        let alert = Alert {
            rule,
            severity,
            node: self.inner.node.to_string(),
            peer: peer.map(str::to_owned),
            detail,
            time: crate::base::format::format_unix(time),
            time_unix: time,
            audit_index,
        };
        self.keep_recent(alert.clone());
        if let Some(webhook) = &self.inner.webhook {
            webhook.send(alert);
        }
    }

    fn keep_recent(&self, alert: Alert) {
        let mut recent = lock(&self.inner.recent);
        if recent.len() == RECENT_ALERTS {
            recent.pop_front();
        }
        recent.push_back(alert);
    }

    /// The latest alerts raised since the node started, newest first, at most
    /// [`RECENT_ALERTS`].
    pub fn recent(&self) -> Vec<Alert> {
        lock(&self.inner.recent).iter().rev().cloned().collect()
    }

    /// Counts a policy decision (the `liutong.policy.decisions` metric) and, for a
    /// denial, the [`Rule::PolicyDenials`] window of `peer`.
    pub async fn policy_decision(
        &self,
        scope: &'static str,
        peer: &ParticipantId,
        permit: bool,
        explanation: &str,
    ) {
        self.inner.metrics.policy_decision(scope, permit);
        if permit {
            return;
        }
        let rule = &self.inner.rules.policy_denials;
        if let Some(count) = self.count(
            Rule::PolicyDenials,
            peer.as_str(),
            rule.threshold,
            rule.window,
        ) {
            self.raise(
                Rule::PolicyDenials,
                Some(peer.as_str()),
                format!(
                    "{count} policy denials for {peer} within {}; the latest at {scope} scope: \
                     {explanation}",
                    humantime::format_duration(rule.window)
                ),
            )
            .await;
        }
    }

    /// Counts a refused authentication from `remote` (the [`Rule::FailedAuthentication`]
    /// window of its address).
    pub async fn authentication_failed(
        &self,
        api: &str,
        remote: Option<SocketAddr>,
        method: &str,
        reason: &str,
    ) {
        let source = remote.map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string());
        let rule = &self.inner.rules.failed_authentication;
        if let Some(count) = self.count(
            Rule::FailedAuthentication,
            &source,
            rule.threshold,
            rule.window,
        ) {
            self.raise(
                Rule::FailedAuthentication,
                Some(&format!("address {source}")),
                format!(
                    "{count} refused authentications from {source} on the {api} within {}; \
                     the latest calling {method}: {reason}",
                    humantime::format_duration(rule.window)
                ),
            )
            .await;
        }
    }

    /// Counts payload bytes this node delivered under an agreement (provider side);
    /// raises [`Rule::TransferVolume`] once per agreement when they exceed the rule's
    /// factor × the size the agreement covers.
    pub async fn delivered(&self, agreement: Delivery<'_>, bytes: u64) {
        self.inner.metrics.transfer_bytes(Direction::Sent, bytes);
        if !self.enabled(Rule::TransferVolume) {
            return;
        }
        let rule = &self.inner.rules.transfer_volume;
        let limit = (agreement.size as f64 * rule.factor).max(0.0) as u64;
        let total = {
            let mut volumes = lock(&self.inner.volumes);
            let entry = match volumes.get_mut(agreement.agreement_id) {
                Some(entry) => entry,
                None => volumes
                    .entry(agreement.agreement_id.to_owned())
                    .or_default(),
            };
            entry.0 += bytes;
            if entry.0 <= limit || entry.1 {
                return;
            }
            entry.1 = true;
            entry.0
        };
        self.raise(
            Rule::TransferVolume,
            Some(agreement.consumer.as_str()),
            format!(
                "{total} bytes delivered under agreement {} for {} v{}, which covers {} bytes \
                 (alert above {} × that)",
                agreement.agreement_id,
                agreement.product_id,
                agreement.version,
                agreement.size,
                rule.factor
            ),
        )
        .await;
    }

    /// Checks the trust list in force against [`Rule::TrustListExpiry`]; each list
    /// (sequence) is reported at most once.
    pub async fn check_trust_list(&self, status: &TrustStatus, now: i64) {
        if status.sequence == 0 {
            return; // no list yet; the refresh errors say why
        }
        let before = self.inner.rules.trust_list_expiry.before.as_secs() as i64;
        let left = status.expires_at - now;
        if left > before {
            return;
        }
        {
            let mut alerted = lock(&self.inner.trust_alerted);
            if *alerted == Some(status.sequence) {
                return;
            }
            *alerted = Some(status.sequence);
        }
        let when = crate::base::format::format_unix(status.expires_at);
        let detail = if left > 0 {
            format!(
                "the trust list in force (sequence {}) expires in {} (at {when}); no newer \
                 list has been fetched{}",
                status.sequence,
                humantime::format_duration(Duration::from_secs(left as u64)),
                last_error(status)
            )
        } else {
            format!(
                "the trust list in force (sequence {}) expired at {when}; peers are refused \
                 until a fresh list is fetched{}",
                status.sequence,
                last_error(status)
            )
        };
        self.raise(Rule::TrustListExpiry, None, detail).await;
    }

    /// Alerts raised since the node started, by rule (every rule listed).
    pub fn counts(&self) -> Vec<(Rule, u64)> {
        let raised = lock(&self.inner.raised);
        Rule::ALL
            .iter()
            .map(|r| (*r, raised.get(r).copied().unwrap_or(0)))
            .collect()
    }

    fn enabled(&self, rule: Rule) -> bool {
        let r = &self.inner.rules;
        match rule {
            Rule::PolicyDenials => r.policy_denials.enabled,
            Rule::FailedAuthentication => r.failed_authentication.enabled,
            Rule::TransferVolume => r.transfer_volume.enabled,
            Rule::ReadOutsideWindow => r.read_outside_window.enabled,
            Rule::WitnessInconsistency => r.witness_inconsistency.enabled,
            Rule::TrustListExpiry => r.trust_list_expiry.enabled,
            Rule::StorageFailure => r.storage_failure.enabled,
            Rule::MemberLimits => r.member_limits.enabled,
        }
    }

    /// Adds an event from `source` to the rule's window; returns the count when it
    /// reaches `threshold` (and starts the count again).
    fn count(&self, rule: Rule, source: &str, threshold: u32, window: Duration) -> Option<usize> {
        if !self.enabled(rule) {
            return None;
        }
        lock(&self.inner.windows).count(
            &self.inner.rules,
            (rule, source.to_owned()),
            threshold,
            window,
            Instant::now(),
        )
    }
}

/// Witnessing reports a forked log here: [`Rule::WitnessInconsistency`], an ERROR line,
/// an `alert` entry in this node's own audit log naming the participant whose log
/// forked, and the webhook if one is configured.
impl WitnessReports for Alerts {
    fn conflict<'a>(&'a self, log_owner: &'a str, evidence: &'a Evidence) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.raise(
                Rule::WitnessInconsistency,
                Some(log_owner),
                format!(
                    "witness conflict: log {} signed two checkpoints that cannot both be true \
                     ({:?}); both are kept as evidence",
                    evidence.origin, evidence.kind
                ),
            )
            .await;
        })
    }
}

fn last_error(status: &TrustStatus) -> String {
    status
        .last_error
        .as_ref()
        .map(|e| format!(" (last refresh: {e})"))
        .unwrap_or_default()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps stay consistent under a panic elsewhere (each update is one insert).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SledStorage;

    async fn alerts(rules: AlertsSection) -> (Alerts, AuditLog) {
        use opentelemetry::metrics::MeterProvider as _;
        let audit = AuditLog::open(SledStorage::temporary().unwrap()).unwrap();
        let meter = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
            .build()
            .meter("test");
        let node = ParticipantId::parse("91110000600037341L").unwrap();
        let alerts = Alerts::new(rules, None, node, audit.clone(), Metrics::new(&meter)).unwrap();
        (alerts, audit)
    }

    fn logged(audit: &AuditLog) -> Vec<Event> {
        (0..audit.size())
            .map(|i| serde_json::from_slice(&audit.entry(i).unwrap().unwrap()).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn a_window_counts_per_source_and_starts_again_after_firing() {
        let mut rules = AlertsSection::default();
        rules.policy_denials.threshold = 2;
        let (alerts, audit) = alerts(rules).await;
        let a = ParticipantId::parse("11330100MA2TRA0011").unwrap();
        let b = ParticipantId::parse("11330000MA2ECE0015").unwrap();
        alerts.policy_decision("negotiation", &a, false, "x").await;
        alerts.policy_decision("negotiation", &b, false, "x").await;
        alerts
            .policy_decision("negotiation", &a, true, "permits do not count")
            .await;
        assert!(logged(&audit).is_empty(), "one denial each");
        alerts.policy_decision("transfer", &a, false, "y").await;
        let events = logged(&audit);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventKind::Alert);
        assert_eq!(events[0].participant.as_deref(), Some(a.as_str()));
        assert!(
            events[0]
                .detail
                .starts_with("policy_denials: 2 policy denials")
        );
        alerts.policy_decision("transfer", &a, false, "y").await;
        assert_eq!(logged(&audit).len(), 1, "the count started again");
        alerts.policy_decision("transfer", &a, false, "y").await;
        assert_eq!(logged(&audit).len(), 2);
        assert_eq!(alerts.counts()[0], (Rule::PolicyDenials, 2));
    }

    #[tokio::test]
    async fn the_latest_alerts_are_kept_newest_first_and_bounded() {
        let mut rules = AlertsSection::default();
        rules.policy_denials.threshold = 1;
        let (alerts, _audit) = alerts(rules).await;
        let a = ParticipantId::parse("11330100MA2TRA0011").unwrap();
        for i in 0..RECENT_ALERTS + 5 {
            alerts
                .policy_decision("negotiation", &a, false, &format!("denial {i}"))
                .await;
        }
        let recent = alerts.recent();
        assert_eq!(recent.len(), RECENT_ALERTS);
        let last = RECENT_ALERTS + 4;
        assert!(recent[0].detail.ends_with(&format!("denial {last}")));
        assert!(recent[RECENT_ALERTS - 1].detail.ends_with("denial 5"));
        assert_eq!(recent[0].rule, Rule::PolicyDenials);
        assert_eq!(recent[0].peer.as_deref(), Some(a.as_str()));
        assert!(
            recent[0].audit_index.is_some(),
            "the alert is on the audit log too"
        );
    }

    #[tokio::test]
    async fn a_source_is_forgotten_once_its_alert_fired() {
        let mut rules = AlertsSection::default();
        rules.policy_denials.threshold = 2;
        let (alerts, audit) = alerts(rules).await;
        let a = ParticipantId::parse("11330100MA2TRA0011").unwrap();
        alerts.policy_decision("negotiation", &a, false, "x").await;
        assert_eq!(lock(&alerts.inner.windows).events.len(), 1);
        alerts.policy_decision("negotiation", &a, false, "x").await;
        assert_eq!(logged(&audit).len(), 1);
        assert!(
            lock(&alerts.inner.windows).events.is_empty(),
            "no empty window is kept for the source"
        );
    }

    /// A witness store whose sink is the node's alerting: a log that signed two
    /// checkpoints of one size with different roots is alerted, in this node's own log,
    /// under the participant whose log forked.
    #[tokio::test]
    async fn a_conflict_the_witness_store_finds_is_alerted_under_the_log_owner() {
        use crate::audit::log::origin_for;
        use crate::audit::merkle::leaf_hash;
        use crate::audit::note::{self, Checkpoint, KeyType, VerifierKey};
        use crate::audit::witness::WitnessError;
        use crate::audit::witnessing::{CheckpointOffer, WitnessStore, WitnessingError};
        use ring::rand::SystemRandom;
        use ring::signature::Ed25519KeyPair;

        let (alerts, audit) = alerts(AlertsSection::default()).await;
        let witness =
            WitnessStore::new(SledStorage::temporary().unwrap(), Arc::new(alerts.clone()));
        let key_pair = |_| {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
            Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
        };
        let (log_pair, witness_pair) = (key_pair(0), key_pair(1));
        let owner = ParticipantId::parse("11330100MA2TRA0011").unwrap();
        let origin = origin_for(&owner);
        let log_key = || VerifierKey::from_key_pair(&origin, KeyType::Ed25519, &log_pair).unwrap();
        let sign = |history: &[u8]| {
            let checkpoint = Checkpoint {
                origin: origin.clone(),
                size: 3,
                root: leaf_hash(history),
            };
            note::sign_checkpoint(&checkpoint, &origin, &log_pair)
                .unwrap()
                .to_string()
        };
        let (honest, forged) = (sign(b"one history"), sign(b"another history"));
        let offer = CheckpointOffer {
            note: honest.as_bytes(),
            old_size: 0,
            proof: &[],
        };
        witness
            .cosign(
                "liutong.witness/witness",
                &witness_pair,
                log_key(),
                offer,
                10,
            )
            .await
            .expect("the first checkpoint is cosigned");
        assert!(logged(&audit).is_empty(), "nothing to alert yet");

        let refused = witness.report(log_key(), forged.as_bytes(), 11).await;
        assert!(
            matches!(
                refused,
                Err(WitnessingError::Witness(WitnessError::Conflict(_)))
            ),
            "{:?}",
            refused.err()
        );
        let events = logged(&audit);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventKind::Alert);
        assert_eq!(events[0].participant.as_deref(), Some(owner.as_str()));
        assert!(
            events[0].detail.starts_with(&format!(
                "witness_inconsistency: witness conflict: log {origin} signed two checkpoints"
            )),
            "{}",
            events[0].detail
        );
        assert_eq!(witness.evidence().unwrap().len(), 1);
        assert_eq!(alerts.counts()[4], (Rule::WitnessInconsistency, 1));
    }

    #[tokio::test]
    async fn disabled_rules_stay_silent() {
        let mut rules = AlertsSection::default();
        rules.failed_authentication.enabled = false;
        rules.failed_authentication.threshold = 1;
        rules.witness_inconsistency.enabled = false;
        let (alerts, audit) = alerts(rules).await;
        alerts
            .authentication_failed("peer API", None, "/x", "no certificate")
            .await;
        alerts.raise(Rule::WitnessInconsistency, None, "fork").await;
        assert!(logged(&audit).is_empty());
        alerts.raise(Rule::TrustListExpiry, None, "soon").await;
        assert_eq!(logged(&audit).len(), 1);
    }
}
