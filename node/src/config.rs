//! `node.toml`: the node's configuration, written (with comments) by `liutong init`.
//!
//! Every field is typed (participant IDs, socket addresses, durations, keys), so a bad
//! value is refused while parsing, with the key and line named by the TOML parser.
//! Unknown keys are refused too, so a misspelt key never silently falls back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::identity::{ParticipantId, PublicKey};

/// Default address of the peer API.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7700";
/// Default address of the local administration API.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:7701";
/// Default address of the authority's trust-list service.
pub const DEFAULT_AUTHORITY: &str = "127.0.0.1:7800";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read the configuration {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the configuration {path} is not valid:\n{message}")]
    Parse { path: PathBuf, message: String },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub node: NodeSection,
    pub authority: AuthoritySection,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub guardrails: GuardrailsSection,
    pub audit: AuditSection,
    #[serde(default)]
    pub usage: UsageSection,
    #[serde(default)]
    pub recovery: RecoverySection,
    #[serde(default)]
    pub telemetry: TelemetrySection,
    #[serde(default)]
    pub alerts: AlertsSection,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub development: Option<Development>,
    /// Directory of the configuration file; relative paths are taken from here.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// The participant this node acts for.
    pub participant: ParticipantId,
    /// Peer API address.
    pub listen: SocketAddr,
    /// Local administration API address.
    pub admin_listen: SocketAddr,
    /// Data directory, relative to the configuration file.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Plain (no TLS) gRPC health endpoint for probes; off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_listen: Option<SocketAddr>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthoritySection {
    /// host:port of the authority's trust-list service.
    pub address: String,
    /// The authority's name, as in its signed trust lists.
    pub name: String,
    /// The authority's Ed25519 public key (base64), pinned from the admission bundle.
    pub public_key: PublicKey,
    /// How often the node fetches the trust list.
    #[serde(with = "humantime_serde", default = "default_refresh")]
    pub refresh_interval: Duration,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest gRPC message the node accepts, in bytes.
    #[serde(default = "default_max_message")]
    pub max_message_bytes: usize,
}

/// Node-wide limits above every product policy (classification and grading).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailsSection {
    /// Regions where recipients of important data (重要数据) may be. Empty: important
    /// data cannot be offered at all.
    #[serde(default)]
    pub important_regions: Vec<crate::identity::RegionCode>,
}

impl GuardrailsSection {
    /// The policy engine's form of these guardrails.
    pub fn to_policy(&self) -> liutong_policy::Guardrails {
        liutong_policy::Guardrails {
            important_regions: self
                .important_regions
                .iter()
                .filter_map(|r| r.as_str().parse().ok())
                .collect(),
            important_requires_approval: true,
        }
    }
}

/// The audit log: checkpoints and witnessing (`[audit]`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// How often to sign a checkpoint, if the log grew since the last one.
    #[serde(with = "humantime_serde", default = "default_checkpoint_interval")]
    pub checkpoint_interval: Duration,
    /// Peer API addresses (host:port) of the members asked to cosign each checkpoint.
    #[serde(default)]
    pub witnesses: Vec<String>,
    /// How many cosignatures make a checkpoint witnessed.
    #[serde(default)]
    pub quorum: u32,
}

impl Default for AuditSection {
    fn default() -> Self {
        Self {
            checkpoint_interval: default_checkpoint_interval(),
            witnesses: Vec::new(),
            quorum: 0,
        }
    }
}

fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(60)
}

/// Usage control of received copies (`[usage]`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageSection {
    /// How often the node carries out its usage-control duties: deleting copies whose
    /// deleteAfter deadline passed, sending notices and deletion receipts that wait in
    /// the outbox, and asking providers for revocations.
    #[serde(with = "humantime_serde", default = "default_usage_interval")]
    pub check_interval: Duration,
}

impl Default for UsageSection {
    fn default() -> Self {
        Self {
            check_interval: default_usage_interval(),
        }
    }
}

/// Unfinished negotiation and transfer steps (`[recovery]`): a step that has a next
/// step (a request not answered yet, a countersignature or a receipt not confirmed by
/// the provider, an agreement the consumer has not countersigned) is retried from its
/// stored record in the background until it reaches a final state, or given up with a
/// recorded reason once it is older than `expire_after` and the running node has tried
/// it. A countersigned agreement is not given up by time (the provider may hold it
/// FINALIZED; only its answer ends it), and a request that never reached the provider
/// is sent again only within its own validity (5 minutes from when it was made).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoverySection {
    /// The wait before the first retry of a step; each failed attempt doubles it, up to
    /// 64 times this.
    #[serde(with = "humantime_serde", default = "default_retry_interval")]
    pub retry_interval: Duration,
    /// How long an unfinished step is retried (or, at a provider, waited for) before it
    /// is given up: the negotiation is TERMINATED, a receipt is no longer sent. A
    /// request counts from when it was made, also while it waits for a person's
    /// approval at the provider.
    #[serde(with = "humantime_serde", default = "default_expire_after")]
    pub expire_after: Duration,
}

impl Default for RecoverySection {
    fn default() -> Self {
        Self {
            retry_interval: default_retry_interval(),
            expire_after: default_expire_after(),
        }
    }
}

fn default_retry_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_expire_after() -> Duration {
    Duration::from_secs(3600)
}

/// OpenTelemetry export (`[telemetry]`). Without an endpoint here or in the
/// `OTEL_EXPORTER_OTLP_ENDPOINT` variable, nothing is exported.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySection {
    /// OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`. The environment variable
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The `service.name` the node reports; `OTEL_SERVICE_NAME` if unset, else
    /// `liutong-node`. `service.instance.id` is always the participant ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// How often metrics are exported.
    #[serde(with = "humantime_serde", default = "default_metrics_interval")]
    pub metrics_interval: Duration,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        Self {
            endpoint: None,
            service_name: None,
            metrics_interval: default_metrics_interval(),
        }
    }
}

fn default_usage_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_metrics_interval() -> Duration {
    Duration::from_secs(60)
}

/// Security alert rules (`[alerts]`): 数据安全实时监测预警. Every rule is on by default.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSection {
    /// Where alerts are POSTed as JSON, `http://` or `https://`; none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// PEM file of the CA that issued an `https://` webhook's certificate, relative to
    /// this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_ca: Option<PathBuf>,
    #[serde(default)]
    pub policy_denials: WindowRule<5, 600>,
    #[serde(default)]
    pub failed_authentication: WindowRule<3, 300>,
    #[serde(default)]
    pub transfer_volume: VolumeRule,
    #[serde(default)]
    pub read_outside_window: SwitchRule,
    #[serde(default)]
    pub witness_inconsistency: SwitchRule,
    #[serde(default)]
    pub trust_list_expiry: ExpiryRule,
    #[serde(default)]
    pub storage_failure: SwitchRule,
}

/// A rule that fires when `threshold` events from one source fall within `window`.
/// The const parameters are the defaults.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowRule<const THRESHOLD: u32, const WINDOW_SECS: u64> {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "WindowRule::<THRESHOLD, WINDOW_SECS>::default_threshold")]
    pub threshold: u32,
    #[serde(
        with = "humantime_serde",
        default = "WindowRule::<THRESHOLD, WINDOW_SECS>::default_window"
    )]
    pub window: Duration,
}

impl<const T: u32, const W: u64> WindowRule<T, W> {
    fn default_threshold() -> u32 {
        T
    }

    fn default_window() -> Duration {
        Duration::from_secs(W)
    }
}

impl<const T: u32, const W: u64> Default for WindowRule<T, W> {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold: T,
            window: Duration::from_secs(W),
        }
    }
}

/// Transfer volume: fires when the bytes delivered under one agreement exceed
/// `factor` × the size the agreement covers.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeRule {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_volume_factor")]
    pub factor: f64,
}

impl Default for VolumeRule {
    fn default() -> Self {
        Self {
            enabled: true,
            factor: default_volume_factor(),
        }
    }
}

fn default_volume_factor() -> f64 {
    2.0
}

/// A rule with nothing to tune.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchRule {
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for SwitchRule {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// Trust list expiry: fires when the trust list in force expires within `before`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpiryRule {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(with = "humantime_serde", default = "default_expiry_before")]
    pub before: Duration,
}

impl Default for ExpiryRule {
    fn default() -> Self {
        Self {
            enabled: true,
            before: default_expiry_before(),
        }
    }
}

fn default_expiry_before() -> Duration {
    Duration::from_secs(300)
}

fn yes() -> bool {
    true
}

/// Present only in the zero-configuration development set-up.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Development {
    /// A development authority to run inside this node's process.
    pub authority_dir: PathBuf,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: default_max_message(),
        }
    }
}

/// The database's directory inside the data directory.
pub const DATABASE_DIR: &str = "db";
/// The node's identity (admission bundle: keys, certificate, credential) inside the
/// data directory.
pub const IDENTITY_DIR: &str = "identity";
/// The local API's certificate authority and client certificates inside the data
/// directory.
pub const LOCAL_DIR: &str = "local";

/// The database's directory in the data directory `data_dir` (a node's, or a restored
/// one's before it has a configuration).
pub fn database_dir_in(data_dir: &Path) -> PathBuf {
    data_dir.join(DATABASE_DIR)
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(".")
}

fn default_refresh() -> Duration {
    Duration::from_secs(60)
}

fn default_max_message() -> usize {
    4 * 1024 * 1024
}

impl NodeConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: NodeConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.base_dir = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base.to_owned()
        };
        Ok(config)
    }

    /// The node's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.base_dir.join(&self.node.data_dir)
    }

    pub fn identity_dir(&self) -> PathBuf {
        self.data_dir().join(IDENTITY_DIR)
    }

    pub fn local_dir(&self) -> PathBuf {
        self.data_dir().join(LOCAL_DIR)
    }

    pub fn database_dir(&self) -> PathBuf {
        database_dir_in(&self.data_dir())
    }

    pub fn development_authority_dir(&self) -> Option<PathBuf> {
        self.development
            .as_ref()
            .map(|d| self.base_dir.join(&d.authority_dir))
    }

    /// The file text, with a comment on every setting.
    pub fn to_commented_toml(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# Liutong node configuration, written by `liutong init`.\n\
             # Relative paths are taken from the directory of this file.\n\
             # Start the node with: liutong serve --config <this file>\n\n",
        );
        out.push_str("[node]\n");
        out.push_str(
            "# The participant this node acts for (统一社会信用代码); it must match the\n\
             # certificate in identity/node.crt.\n",
        );
        out.push_str(&format!("participant = \"{}\"\n", self.node.participant));
        out.push_str(
            "# Peer API: other members connect here over mutual TLS. Use 0.0.0.0:7700 to\n\
             # accept connections from other hosts.\n",
        );
        out.push_str(&format!("listen = \"{}\"\n", self.node.listen));
        out.push_str(
            "# Local administration API for the `liutong` command and local applications.\n\
             # Mutual TLS with the client certificates in local/ (roles admin, app, auditor).\n",
        );
        out.push_str(&format!("admin_listen = \"{}\"\n", self.node.admin_listen));
        out.push_str("# Keys, certificates and the database (db/) live here.\n");
        out.push_str(&format!(
            "data_dir = {}\n",
            toml_string(&self.node.data_dir.to_string_lossy())
        ));
        out.push_str(
            "# Plain gRPC health endpoint (grpc.health.v1, no TLS, health checks only) for\n\
             # probes that cannot do mutual TLS: Kubernetes, container HEALTHCHECK, `liutong\n\
             # health`. Off unless set, e.g. \"0.0.0.0:7702\".\n",
        );
        match self.node.health_listen {
            Some(addr) => out.push_str(&format!("health_listen = \"{addr}\"\n\n")),
            None => out.push_str("# health_listen = \"127.0.0.1:7702\"\n\n"),
        }
        out.push_str("[authority]\n");
        out.push_str("# The data-space authority's trust-list service (host:port).\n");
        out.push_str(&format!(
            "address = {}\n",
            toml_string(&self.authority.address)
        ));
        out.push_str("# The authority's name and Ed25519 key, pinned from the admission bundle.\n");
        out.push_str(&format!("name = {}\n", toml_string(&self.authority.name)));
        out.push_str(&format!("public_key = \"{}\"\n", self.authority.public_key));
        out.push_str(
            "# How often to fetch the signed trust list (members and revocations). A list\n\
             # expires after the validity the authority gives it (10 minutes by default).\n",
        );
        out.push_str(&format!(
            "refresh_interval = \"{}\"\n\n",
            humantime::format_duration(self.authority.refresh_interval)
        ));
        out.push_str("[limits]\n# Largest gRPC message accepted, in bytes.\n");
        out.push_str(&format!(
            "max_message_bytes = {}\n",
            self.limits.max_message_bytes
        ));
        out.push_str(
            "\n[guardrails]\n\
             # Node-wide limits above every product policy. Core data (核心数据) is never\n\
             # offered. Important data (重要数据) needs a person's approval for every\n\
             # agreement and a recipient inside one of these regions (6-digit codes;\n\
             # \"330000\" covers all of Zhejiang). Empty: important data is not offered.\n",
        );
        let regions: Vec<String> = self
            .guardrails
            .important_regions
            .iter()
            .map(|r| format!("\"{r}\""))
            .collect();
        out.push_str(&format!("important_regions = [{}]\n", regions.join(", ")));
        out.push_str(
            "\n[audit]\n\
             # How often to sign a checkpoint of the audit log (only if it grew).\n",
        );
        out.push_str(&format!(
            "checkpoint_interval = \"{}\"\n",
            humantime::format_duration(self.audit.checkpoint_interval)
        ));
        out.push_str(
            "# Peer API addresses (host:port) of the members asked to witness (cosign) each\n\
             # checkpoint, e.g. [\"10.0.0.2:7700\"].\n",
        );
        let witnesses: Vec<String> = self
            .audit
            .witnesses
            .iter()
            .map(|w| toml_string(w))
            .collect();
        out.push_str(&format!("witnesses = [{}]\n", witnesses.join(", ")));
        out.push_str("# How many cosignatures make a checkpoint witnessed.\n");
        out.push_str(&format!("quorum = {}\n", self.audit.quorum));
        out.push_str(
            "\n[usage]\n\
             # How often to carry out usage-control duties: delete received copies whose\n\
             # deleteAfter deadline passed, send waiting notices and deletion receipts to\n\
             # providers (retried with backoff until acknowledged), and ask providers for\n\
             # revoked agreements.\n",
        );
        out.push_str(&format!(
            "check_interval = \"{}\"\n",
            humantime::format_duration(self.usage.check_interval)
        ));
        out.push_str(
            "\n[recovery]\n\
             # Unfinished steps (a request not answered, a countersignature or a receipt not\n\
             # confirmed, an agreement not countersigned) are retried from their stored\n\
             # record, first after retry_interval, then with doubling waits (up to 64 times\n\
             # it), until they finish or are older than expire_after; then the negotiation\n\
             # is TERMINATED (or the receipt no longer sent) with the reason recorded. A\n\
             # countersigned agreement does not expire: only the provider's answer ends it.\n",
        );
        out.push_str(&format!(
            "retry_interval = \"{}\"\n",
            humantime::format_duration(self.recovery.retry_interval)
        ));
        out.push_str(&format!(
            "expire_after = \"{}\"\n",
            humantime::format_duration(self.recovery.expire_after)
        ));
        self.write_telemetry(&mut out);
        self.write_alerts(&mut out);
        if let Some(dev) = &self.development {
            out.push_str(
                "\n# DEVELOPMENT ONLY: run this development authority inside the node process.\n\
                 # Remove this section for a node that belongs to a real data space.\n\
                 [development]\n",
            );
            out.push_str(&format!(
                "authority_dir = {}\n",
                toml_string(&dev.authority_dir.to_string_lossy())
            ));
        }
        out
    }
}

impl NodeConfig {
    fn write_telemetry(&self, out: &mut String) {
        let t = &self.telemetry;
        out.push_str(
            "\n[telemetry]\n\
             # OpenTelemetry export of traces and metrics over OTLP/gRPC. Nothing is exported\n\
             # unless a collector is named here or in OTEL_EXPORTER_OTLP_ENDPOINT (which wins).\n",
        );
        match &t.endpoint {
            Some(e) => out.push_str(&format!("endpoint = {}\n", toml_string(e))),
            None => out.push_str("# endpoint = \"http://127.0.0.1:4317\"\n"),
        }
        out.push_str(
            "# service.name reported to the collector (default: OTEL_SERVICE_NAME, else\n\
             # liutong-node); service.instance.id is the participant ID.\n",
        );
        match &t.service_name {
            Some(n) => out.push_str(&format!("service_name = {}\n", toml_string(n))),
            None => out.push_str("# service_name = \"liutong-node\"\n"),
        }
        out.push_str("# How often metrics are exported.\n");
        out.push_str(&format!(
            "metrics_interval = \"{}\"\n",
            humantime::format_duration(t.metrics_interval)
        ));
    }

    fn write_alerts(&self, out: &mut String) {
        let a = &self.alerts;
        out.push_str(
            "\n[alerts]\n\
             # Security alerts (数据安全实时监测预警). Each alert is an audit entry, a metric\n\
             # (liutong.alerts), a WARN or ERROR log line and, if set, a JSON POST to this URL.\n",
        );
        match &a.webhook {
            Some(w) => out.push_str(&format!("webhook = {}\n", toml_string(w))),
            None => out.push_str("# webhook = \"http://127.0.0.1:9000/liutong-alerts\"\n"),
        }
        out.push_str("# CA (PEM) of an https:// webhook's certificate.\n");
        match &a.webhook_ca {
            Some(p) => out.push_str(&format!(
                "webhook_ca = {}\n",
                toml_string(&p.to_string_lossy())
            )),
            None => out.push_str("# webhook_ca = \"webhook-ca.pem\"\n"),
        }
        let window = |out: &mut String, name: &str, what: &str, enabled, threshold, w| {
            out.push_str(&format!(
                "\n# {what}\n[alerts.{name}]\nenabled = {enabled}\nthreshold = {threshold}\nwindow = \"{}\"\n",
                humantime::format_duration(w)
            ));
        };
        let r = &a.policy_denials;
        window(
            out,
            "policy_denials",
            "Policy denials (negotiation and transfer scope) from one peer within the window.",
            r.enabled,
            r.threshold,
            r.window,
        );
        let r = &a.failed_authentication;
        window(
            out,
            "failed_authentication",
            "Refused authentications (peer or local API) from one address within the window.",
            r.enabled,
            r.threshold,
            r.window,
        );
        out.push_str(&format!(
            "\n# Bytes delivered under one agreement above factor x the size it covers.\n\
             [alerts.transfer_volume]\nenabled = {}\nfactor = {:?}\n",
            a.transfer_volume.enabled, a.transfer_volume.factor
        ));
        out.push_str(&format!(
            "\n# A read of received data outside the window its policy permits.\n\
             [alerts.read_outside_window]\nenabled = {}\n",
            a.read_outside_window.enabled
        ));
        out.push_str(&format!(
            "\n# A peer's audit log signed two checkpoints that cannot both be true.\n\
             [alerts.witness_inconsistency]\nenabled = {}\n",
            a.witness_inconsistency.enabled
        ));
        out.push_str(&format!(
            "\n# The trust list in force expires within this time (the authority is not\n\
             # reachable, or serves a list about to lapse).\n\
             [alerts.trust_list_expiry]\nenabled = {}\nbefore = \"{}\"\n",
            a.trust_list_expiry.enabled,
            humantime::format_duration(a.trust_list_expiry.before)
        ));
        out.push_str(&format!(
            "\n# A flush or fsync of the node's storage failed: the node refuses writes\n\
             # until it is restarted after the disk is checked.\n\
             [alerts.storage_failure]\nenabled = {}\n",
            a.storage_failure.enabled
        ));
    }
}

fn toml_string(s: &str) -> String {
    // Basic TOML strings share JSON's escapes for the characters that matter here.
    serde_json::to_string(s).expect("strings serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SigningKey;

    fn sample() -> NodeConfig {
        NodeConfig {
            node: NodeSection {
                participant: ParticipantId::parse("91110000600037341L").unwrap(),
                listen: DEFAULT_LISTEN.parse().unwrap(),
                admin_listen: DEFAULT_ADMIN_LISTEN.parse().unwrap(),
                data_dir: PathBuf::from("."),
                health_listen: Some("127.0.0.1:7702".parse().unwrap()),
            },
            authority: AuthoritySection {
                address: DEFAULT_AUTHORITY.into(),
                name: "Zhejiang \"Data\" Space".into(),
                public_key: SigningKey::generate().unwrap().public_key(),
                refresh_interval: Duration::from_secs(60),
            },
            limits: Limits::default(),
            guardrails: GuardrailsSection::default(),
            audit: AuditSection {
                witnesses: vec!["127.0.0.1:7710".into()],
                quorum: 1,
                ..AuditSection::default()
            },
            usage: UsageSection::default(),
            recovery: RecoverySection {
                retry_interval: Duration::from_millis(250),
                expire_after: Duration::from_secs(600),
            },
            telemetry: TelemetrySection::default(),
            alerts: AlertsSection::default(),
            development: Some(Development {
                authority_dir: "../dev-authority".into(),
            }),
            base_dir: PathBuf::new(),
        }
    }

    #[test]
    fn commented_file_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        let config = sample();
        std::fs::write(&path, config.to_commented_toml()).unwrap();
        let loaded = NodeConfig::load(&path).unwrap();
        assert_eq!(loaded.node.participant, config.node.participant);
        assert_eq!(loaded.authority.name, config.authority.name);
        assert_eq!(loaded.authority.refresh_interval, Duration::from_secs(60));
        assert_eq!(loaded.audit.witnesses, ["127.0.0.1:7710"]);
        assert_eq!(loaded.audit.quorum, 1);
        assert_eq!(loaded.node.health_listen, config.node.health_listen);
        assert_eq!(loaded.audit.checkpoint_interval, Duration::from_secs(60));
        assert_eq!(loaded.usage.check_interval, Duration::from_secs(5));
        assert_eq!(loaded.recovery.retry_interval, Duration::from_millis(250));
        assert_eq!(loaded.recovery.expire_after, Duration::from_secs(600));
        assert_eq!(loaded.base_dir, dir.path());
        assert_eq!(loaded.telemetry.endpoint, None);
        assert_eq!(loaded.alerts.policy_denials.threshold, 5);
        assert_eq!(
            loaded.alerts.failed_authentication.window,
            Duration::from_secs(300)
        );
        assert_eq!(loaded.alerts.transfer_volume.factor, 2.0);
        assert!(loaded.alerts.witness_inconsistency.enabled);
        assert_eq!(
            loaded.development_authority_dir().unwrap(),
            dir.path().join("../dev-authority")
        );
    }

    #[test]
    fn telemetry_and_alert_settings_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        let mut config = sample();
        config.telemetry.endpoint = Some("http://127.0.0.1:4317".into());
        config.telemetry.service_name = Some("transport-bureau".into());
        config.telemetry.metrics_interval = Duration::from_secs(15);
        config.alerts.webhook = Some("https://alerts.example/hook".into());
        config.alerts.webhook_ca = Some("webhook-ca.pem".into());
        config.alerts.policy_denials.threshold = 2;
        config.alerts.failed_authentication.enabled = false;
        config.alerts.transfer_volume.factor = 1.25;
        config.alerts.trust_list_expiry.before = Duration::from_secs(120);
        std::fs::write(&path, config.to_commented_toml()).unwrap();
        let loaded = NodeConfig::load(&path).unwrap();
        assert_eq!(
            loaded.telemetry.endpoint.as_deref(),
            Some("http://127.0.0.1:4317")
        );
        assert_eq!(
            loaded.telemetry.service_name.as_deref(),
            Some("transport-bureau")
        );
        assert_eq!(loaded.telemetry.metrics_interval, Duration::from_secs(15));
        assert_eq!(
            loaded.alerts.webhook.as_deref(),
            Some("https://alerts.example/hook")
        );
        assert_eq!(
            loaded.alerts.webhook_ca,
            Some(PathBuf::from("webhook-ca.pem"))
        );
        assert_eq!(loaded.alerts.policy_denials.threshold, 2);
        assert_eq!(
            loaded.alerts.policy_denials.window,
            Duration::from_secs(600)
        );
        assert!(!loaded.alerts.failed_authentication.enabled);
        assert_eq!(loaded.alerts.transfer_volume.factor, 1.25);
        assert_eq!(
            loaded.alerts.trust_list_expiry.before,
            Duration::from_secs(120)
        );

        // Sections left out take the defaults; a misspelt rule setting is refused.
        let good = sample().to_commented_toml();
        let start = good.find("\n[telemetry]").unwrap();
        std::fs::write(&path, &good[..start]).unwrap();
        let loaded = NodeConfig::load(&path).unwrap();
        assert_eq!(loaded.alerts.failed_authentication.threshold, 3);
        assert!(loaded.alerts.trust_list_expiry.enabled);
        let msg = load_text(&good.replace("threshold = 5", "treshold = 5"));
        assert!(msg.contains("treshold"), "{msg}");
        let msg = load_text(&good.replace("window = \"10m\"", "window = \"ten minutes\""));
        assert!(msg.contains("window"), "{msg}");
    }

    fn load_text(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, text).unwrap();
        NodeConfig::load(&path).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let good = sample().to_commented_toml();

        let bad_id = good.replace("91110000600037341L", "91110000600037341K");
        let msg = load_text(&bad_id);
        let line = bad_id
            .lines()
            .position(|l| l.starts_with("participant"))
            .unwrap()
            + 1;
        assert!(msg.contains(&format!("line {line}")), "{msg}");
        assert!(msg.contains("check character"), "{msg}");

        let typo = good.replace("admin_listen", "admin_lisen");
        let msg = load_text(&typo);
        assert!(msg.contains("admin_lisen"), "{msg}");

        let bad_addr = good.replace("127.0.0.1:7700", "127.0.0.1:port");
        let msg = load_text(&bad_addr);
        assert!(msg.contains("listen") && msg.contains("line"), "{msg}");

        let msg = load_text("[node\nparticipant = 1");
        assert!(msg.contains("line 1"), "{msg}");
    }

    #[test]
    fn missing_file_is_named() {
        let err = NodeConfig::load(Path::new("/nonexistent/node.toml")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/node.toml"), "{err}");
    }
}
