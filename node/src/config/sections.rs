//! The sections of `node.toml` other than `[alerts]`: what each setting means and its
//! default when the file leaves it out.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::hsm::{PinSource, TokenSpec};
use crate::identity::{ParticipantId, PublicKey};

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

/// `[hsm]`: the node's signing key is in a PKCS#11 token instead of
/// `identity/signing.key`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmSection {
    /// The token's PKCS#11 module (shared library), relative to the configuration file
    /// if not absolute.
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// The label (CKA_LABEL) of the node's Ed25519 key pair in the token.
    pub signing_key: String,
    /// The environment variable holding the token's user PIN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_env: Option<String>,
    /// A file, readable by its owner only, holding the PIN; relative to the
    /// configuration file if not absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_file: Option<PathBuf>,
    /// Only present to refuse it with a message: the PIN is never written here.
    #[serde(default, skip_serializing)]
    pub pin: Option<toml::Value>,
}

impl HsmSection {
    /// Refuses a PIN written in the file, and asks for exactly one of `pin_env` and
    /// `pin_file`.
    pub fn check(&self) -> Result<(), String> {
        if self.pin.is_some() {
            return Err(
                "[hsm] pin: the token's PIN is never written in node.toml, where \
                 backups and copies of the configuration would carry it; remove the line \
                 and set pin_env = \"VARIABLE\" (an environment variable holding the PIN) \
                 or pin_file = \"/path\" (a file only its owner can read)"
                    .into(),
            );
        }
        PinSource::from_pair(self.pin_env.as_deref(), self.pin_file.as_deref(), "[hsm]").map(|_| ())
    }

    /// The token, with relative paths taken from `base_dir`.
    pub fn token_spec(&self, base_dir: &Path) -> Result<TokenSpec, String> {
        let pin =
            match PinSource::from_pair(self.pin_env.as_deref(), self.pin_file.as_deref(), "[hsm]")?
            {
                PinSource::File(p) => PinSource::File(base_dir.join(p)),
                env => env,
            };
        Ok(TokenSpec {
            module: base_dir.join(&self.module),
            token: self.token.clone(),
            pin,
        })
    }
}

/// Which engine holds the node's database.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageEngine {
    /// sled, embedded, in the data directory's `db/`.
    #[default]
    Sled,
    /// A PostgreSQL (or PostgreSQL-compatible) database that holds the whole node.
    Postgres,
}

/// `[storage]`: where the node keeps its database. Absent: sled in the data directory.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    #[serde(default)]
    pub engine: StorageEngine,
    /// The PostgreSQL connection URL (`postgresql://user@host:port/database`), without
    /// a password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The environment variable holding the database password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// A file, readable by its owner only, holding the database password; relative to
    /// the configuration file if not absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Only present to refuse it with a message: the password is never written here.
    #[serde(default, skip_serializing)]
    pub password: Option<toml::Value>,
    /// Several `liutong serve` replicas share the PostgreSQL database: each starts as a
    /// standby and serves only while it holds the leadership lease.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replicas: bool,
    /// How long a leadership lease lasts unless renewed (default 3 s): a standby takes
    /// over at most this long after the leader dies.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub lease: Option<Duration>,
    /// How often the leader renews its lease (default 1 s); shorter than `lease`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub renew_interval: Option<Duration>,
}

/// The leadership lease's length when `[storage] lease` is not set.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(3);
/// How often the lease is renewed when `[storage] renew_interval` is not set.
pub const DEFAULT_RENEW_INTERVAL: Duration = Duration::from_secs(1);

impl StorageSection {
    /// Refuses a password written in the file or in the URL, and settings that do not
    /// fit the engine.
    pub fn check(&self) -> Result<(), String> {
        if self.password.is_some() {
            return Err(
                "[storage] password: the database password is never written in \
                 node.toml, where backups and copies of the configuration would carry it; \
                 remove the line and set password_env = \"VARIABLE\" (an environment \
                 variable holding it) or password_file = \"/path\" (a file only its owner \
                 can read)"
                    .into(),
            );
        }
        if self.password_env.is_some() && self.password_file.is_some() {
            return Err("[storage]: set either password_env or password_file, not both".into());
        }
        if (self.lease.is_some() || self.renew_interval.is_some()) && !self.replicas {
            return Err(
                "[storage]: lease and renew_interval are settings of replicas = true".into(),
            );
        }
        if self.replicas {
            if self.engine != StorageEngine::Postgres {
                return Err(
                    "[storage]: replicas = true needs engine = \"postgres\": replicas share \
                     one PostgreSQL database, and a sled database belongs to one process"
                        .into(),
                );
            }
            let (lease, renew) = (self.lease(), self.renew_interval());
            if renew.is_zero() || renew >= lease {
                return Err(format!(
                    "[storage]: renew_interval ({}) must be more than zero and shorter than \
                     lease ({}), or the leader loses its lease between two renewals",
                    humantime::format_duration(renew),
                    humantime::format_duration(lease)
                ));
            }
        }
        match self.engine {
            StorageEngine::Sled => {
                if self.url.is_some() || self.password_env.is_some() || self.password_file.is_some()
                {
                    return Err(
                        "[storage]: url, password_env and password_file are settings \
                         of engine = \"postgres\"; the sled engine takes none"
                            .into(),
                    );
                }
                Ok(())
            }
            StorageEngine::Postgres => {
                let url = self.url.as_deref().ok_or(
                    "[storage]: engine = \"postgres\" needs url = \
                     \"postgresql://user@host:port/database\"",
                )?;
                check_postgres_url(url).map_err(|e| format!("[storage] url: {e}"))
            }
        }
    }

    /// The leadership lease's length.
    pub fn lease(&self) -> Duration {
        self.lease.unwrap_or(DEFAULT_LEASE)
    }

    /// How often the leader renews its lease.
    pub fn renew_interval(&self) -> Duration {
        self.renew_interval.unwrap_or(DEFAULT_RENEW_INTERVAL)
    }

    /// The PostgreSQL database to use, with its password read now; `None` for sled.
    pub fn postgres(&self, base_dir: &Path) -> Result<Option<PostgresSettings>, String> {
        if self.engine != StorageEngine::Postgres {
            return Ok(None);
        }
        self.check()?;
        let url = self.url.as_deref().unwrap_or_default();
        let password = match (&self.password_env, &self.password_file) {
            (Some(var), _) => Some(std::env::var(var).map_err(|_| {
                format!(
                    "[storage]: the environment variable {var} that should hold the database \
                     password is not set (or not UTF-8); export it before starting"
                )
            })?),
            (None, Some(file)) => {
                let path = base_dir.join(file);
                crate::base::files::check_private(&path).map_err(|e| match e {
                    crate::base::files::PrivateFileError::Read(source) => format!(
                        "[storage]: cannot read the password file {}: {source}",
                        path.display()
                    ),
                    crate::base::files::PrivateFileError::Mode(mode) => format!(
                        "[storage]: the password file {} can be read by other users (mode \
                         {mode:o}); run chmod 600 on it",
                        path.display()
                    ),
                })?;
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    format!(
                        "[storage]: cannot read the password file {}: {e}",
                        path.display()
                    )
                })?;
                Some(text.strip_suffix('\n').unwrap_or(&text).to_owned())
            }
            (None, None) => None,
        };
        Ok(Some(PostgresSettings {
            url: url.to_owned(),
            password,
        }))
    }
}

/// The PostgreSQL database of `[storage]`, its password read.
pub struct PostgresSettings {
    /// The connection URL, without a password.
    pub url: String,
    pub password: Option<String>,
}

impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Checks a PostgreSQL connection URL: valid, and without a password.
fn check_postgres_url(url: &str) -> Result<(), String> {
    let parsed: tokio_postgres::Config = url
        .parse()
        .map_err(|e| format!("the PostgreSQL URL is not valid: {e}"))?;
    if parsed.get_password().is_some() {
        return Err(
            "the PostgreSQL URL holds a password: remove it, and give the password \
                    in password_env or password_file instead"
                .into(),
        );
    }
    Ok(())
}

/// The Dataspace Protocol 2025-1 HTTPS listener (`[dsp]`), for connectors that speak
/// DSP rather than the peer API; off when the section is absent.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DspSection {
    /// Address of the HTTPS listener.
    pub listen: SocketAddr,
    /// The base URL other connectors reach the listener at (`https://host:port`), named
    /// in catalogs as the data service's endpoint; when absent, the listen address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// How long the bearer token of a transfer's data address opens the data endpoint:
    /// long enough to begin a download, short enough that a leaked one is soon
    /// worthless. Between 1 s and 1 h.
    #[serde(with = "humantime_serde", default = "default_token_lifetime")]
    pub token_lifetime: Duration,
}

/// The longest `[dsp] token_lifetime` taken: a token is a bearer credential.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

fn default_token_lifetime() -> Duration {
    Duration::from_secs(600)
}

impl DspSection {
    /// A listener on `listen`, named by that address, with the default token lifetime.
    pub fn on(listen: SocketAddr) -> Self {
        Self {
            listen,
            url: None,
            token_lifetime: default_token_lifetime(),
        }
    }

    /// The token lifetime must be whole seconds between 1 s and an hour; the advertised
    /// base URL must be HTTPS, without a trailing slash, query or fragment: it is joined
    /// with the binding's paths.
    pub fn check(&self) -> Result<(), String> {
        let lifetime = self.token_lifetime;
        if lifetime < Duration::from_secs(1) || lifetime > MAX_TOKEN_LIFETIME {
            return Err(format!(
                "dsp.token_lifetime = \"{}\": a data address's token must open the data \
                 endpoint for at least 1s and at most {} (e.g. \"10m\")",
                humantime::format_duration(lifetime),
                humantime::format_duration(MAX_TOKEN_LIFETIME)
            ));
        }
        let Some(url) = &self.url else {
            return Ok(());
        };
        let rest = url.strip_prefix("https://").ok_or_else(|| {
            format!("dsp.url = {url:?}: the Dataspace Protocol endpoint must be an https:// URL")
        })?;
        if rest.is_empty() || rest.ends_with('/') || rest.contains(['?', '#', ' ']) {
            return Err(format!(
                "dsp.url = {url:?}: give the base URL only, e.g. \"https://node.example:7703\" \
                 (no trailing slash, query or fragment)"
            ));
        }
        Ok(())
    }
}

/// The web console (`[console]`): pages for department IT and auditors, served over
/// HTTPS with a certificate from the node's local CA; off when the section is absent.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSection {
    /// Address of the console's HTTPS listener; loopback unless the operator means
    /// otherwise.
    #[serde(default = "ConsoleSection::default_listen")]
    pub listen: SocketAddr,
    /// How long a signed-in browser stays signed in.
    #[serde(default = "ConsoleSection::default_session", with = "humantime_serde")]
    pub session_lifetime: std::time::Duration,
}

impl ConsoleSection {
    pub fn default_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 7704))
    }

    fn default_session() -> std::time::Duration {
        std::time::Duration::from_secs(8 * 3600)
    }

    /// A session must last at least a minute and at most a week.
    pub fn check(&self) -> Result<(), String> {
        let lifetime = self.session_lifetime.as_secs();
        if !(60..=7 * 24 * 3600).contains(&lifetime) {
            return Err(format!(
                "console.session_lifetime = {:?}: give between 1m and 7d",
                humantime::format_duration(self.session_lifetime).to_string()
            ));
        }
        Ok(())
    }
}

impl Default for ConsoleSection {
    fn default() -> Self {
        Self {
            listen: Self::default_listen(),
            session_lifetime: Self::default_session(),
        }
    }
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
    /// Requests per second one caller (a member on the peer API, a role on the local
    /// API) may make on average; more are refused with `RESOURCE_EXHAUSTED`. 0: no limit.
    #[serde(default = "default_requests_per_second")]
    pub requests_per_second_per_member: u32,
    /// Requests one caller may make at once above that rate (its token bucket's size).
    #[serde(default = "default_request_burst")]
    pub request_burst_per_member: u32,
    /// Calls one caller may have in progress at once, a call counting until its
    /// response (a stream included) ends. 0: no limit.
    #[serde(default = "default_streams_per_member")]
    pub streams_per_member: u32,
    /// Refusals of one caller for one method recorded one by one per `refusal_window`;
    /// the rest are counted in one entry at the end of the window.
    #[serde(default = "default_refusals_per_window")]
    pub refusals_recorded_per_window: u32,
    /// The window of `refusals_recorded_per_window`, and how often a caller over its
    /// limits raises the `member_limits` alert at most.
    #[serde(with = "humantime_serde", default = "default_refusal_window")]
    pub refusal_window: Duration,
    // Transport limits: what one connection or one signed message may cost the node.
    /// Signatures one envelope from a peer may carry. More are refused before any is
    /// verified, so a message padded with signatures cannot buy CPU time.
    #[serde(default = "default_max_envelope_signatures")]
    pub max_envelope_signatures: usize,
    /// Concurrent HTTP/2 streams (calls) per connection; a client opening more waits
    /// until one ends.
    #[serde(default = "default_max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    /// HTTP/2 flow-control window of each stream, in bytes: how much a peer may send
    /// the node on one call before the node reads it, and the largest part of a
    /// response held for a peer that does not read.
    #[serde(default = "default_stream_window")]
    pub stream_window_bytes: u32,
    /// How long a TLS handshake may take before the connection is closed.
    #[serde(with = "humantime_serde", default = "default_handshake_timeout")]
    pub handshake_timeout: Duration,
    /// How long a connection that presented no client certificate is kept open: long
    /// enough to be told why every call is refused, not long enough to hold a socket.
    #[serde(with = "humantime_serde", default = "default_no_certificate_timeout")]
    pub no_certificate_timeout: Duration,
    /// Interval of HTTP/2 keepalive pings on an idle connection; a peer that does not
    /// answer one within the same time is disconnected.
    #[serde(with = "humantime_serde", default = "default_keepalive_interval")]
    pub keepalive_interval: Duration,
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
                .map(crate::identity::RegionCode::code)
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
    /// Before a read of a received copy is permitted, the node asks the copy's provider
    /// whether the agreement was revoked. When the provider cannot be reached, the read
    /// is permitted only if the last successful check with that provider is younger
    /// than this; `0s` refuses every read the provider cannot confirm (fail closed).
    #[serde(with = "humantime_serde", default = "default_revocation_grace")]
    pub revocation_grace: Duration,
}

impl Default for UsageSection {
    fn default() -> Self {
        Self {
            check_interval: default_usage_interval(),
            revocation_grace: default_revocation_grace(),
        }
    }
}

fn default_revocation_grace() -> Duration {
    Duration::from_secs(60)
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

/// Present only in the zero-configuration development set-up.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Development {
    /// A development authority to run inside this node's process.
    pub authority_dir: PathBuf,
}

/// The HTTP/2 bounds of a flow-control window (RFC 9113, 6.9.2).
const WINDOW_RANGE: std::ops::RangeInclusive<u32> = 65_535..=(1 << 31) - 1;

impl Limits {
    /// Refuses transport limits that would stop the node from working at all.
    pub fn check_transport(&self) -> Result<(), String> {
        let most = crate::identity::envelope::MAX_SIGNATURES;
        if !(1..=most).contains(&self.max_envelope_signatures) {
            return Err(format!(
                "limits.max_envelope_signatures must be between 1 and {most}"
            ));
        }
        if self.max_concurrent_streams == 0 {
            return Err("limits.max_concurrent_streams must be at least 1".into());
        }
        if !WINDOW_RANGE.contains(&self.stream_window_bytes) {
            return Err(format!(
                "limits.stream_window_bytes must be between {} and {}",
                WINDOW_RANGE.start(),
                WINDOW_RANGE.end()
            ));
        }
        for (key, d) in [
            ("handshake_timeout", self.handshake_timeout),
            ("no_certificate_timeout", self.no_certificate_timeout),
            ("keepalive_interval", self.keepalive_interval),
        ] {
            if d.is_zero() {
                return Err(format!("limits.{key} must be longer than 0s"));
            }
        }
        Ok(())
    }

    /// The pace that keeps one client within this node's per-caller rate: at most
    /// `requests` requests in each `per`, which averages a little under
    /// `requests_per_second_per_member` and never asks for more than half the burst at
    /// once, so the node's bucket never runs dry. `None` when the rate is unlimited.
    /// The node's own commands use it on its local API, so a long listing is paced
    /// instead of refused part way.
    pub fn client_pace(&self) -> Option<(u64, Duration)> {
        let rate = self.requests_per_second_per_member;
        if rate == 0 {
            return None;
        }
        let requests = rate.min(self.request_burst_per_member / 2).max(1);
        // 5 % slower than the rate, so the bucket's refill is never a hair short.
        let per = Duration::from_secs_f64(f64::from(requests) / f64::from(rate) * 1.05);
        Some((requests.into(), per))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: default_max_message(),
            requests_per_second_per_member: default_requests_per_second(),
            request_burst_per_member: default_request_burst(),
            streams_per_member: default_streams_per_member(),
            refusals_recorded_per_window: default_refusals_per_window(),
            refusal_window: default_refusal_window(),
            max_envelope_signatures: default_max_envelope_signatures(),
            max_concurrent_streams: default_max_concurrent_streams(),
            stream_window_bytes: default_stream_window(),
            handshake_timeout: default_handshake_timeout(),
            no_certificate_timeout: default_no_certificate_timeout(),
            keepalive_interval: default_keepalive_interval(),
        }
    }
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

fn default_requests_per_second() -> u32 {
    100
}

fn default_request_burst() -> u32 {
    400
}

fn default_streams_per_member() -> u32 {
    32
}

fn default_refusals_per_window() -> u32 {
    10
}

fn default_refusal_window() -> Duration {
    Duration::from_secs(60)
}

fn default_max_envelope_signatures() -> usize {
    4
}

fn default_max_concurrent_streams() -> u32 {
    32
}

fn default_stream_window() -> u32 {
    1 << 20
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_no_certificate_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_keepalive_interval() -> Duration {
    Duration::from_secs(60)
}
