//! Writing `node.toml` with a comment on every setting, as `liutong init` does: the
//! file an operator reads and edits, which [`NodeConfig::load`] reads back.

use super::{NodeConfig, StorageEngine};

impl NodeConfig {
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
        self.write_hsm(&mut out);
        self.write_storage(&mut out);
        out.push_str("[limits]\n# Largest gRPC message accepted, in bytes.\n");
        out.push_str(&format!(
            "max_message_bytes = {}\n",
            self.limits.max_message_bytes
        ));
        let l = &self.limits;
        out.push_str(&format!(
            "# Requests per second one caller (a member on the peer API, a role on the\n\
             # local API) may make on average, and at once above that; 0: no limit.\n\
             requests_per_second_per_member = {}\n\
             request_burst_per_member = {}\n\
             # Calls one caller may have in progress at once (a stream counts until it\n\
             # ends); 0: no limit.\n\
             streams_per_member = {}\n\
             # Refusals of one caller for one method recorded one by one per window; the\n\
             # rest are counted in one audit entry at the end of the window.\n\
             refusals_recorded_per_window = {}\n\
             refusal_window = \"{}\"\n",
            l.requests_per_second_per_member,
            l.request_burst_per_member,
            l.streams_per_member,
            l.refusals_recorded_per_window,
            humantime::format_duration(l.refusal_window)
        ));
        self.write_transport_limits(&mut out);
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
            "# Before a read of a received copy, the provider is asked whether the agreement\n\
             # was revoked. If it cannot be reached, the read is permitted only when the last\n\
             # successful check with it is younger than this (\"0s\": refuse such reads).\n",
        );
        out.push_str(&format!(
            "revocation_grace = \"{}\"\n",
            humantime::format_duration(self.usage.revocation_grace)
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
        self.write_dsp(&mut out);
        self.write_console(&mut out);
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
    fn write_transport_limits(&self, out: &mut String) {
        let l = &self.limits;
        out.push_str(
            "# Signatures one signed message from a peer may carry; more are refused\n\
             # (INVALID_ARGUMENT) before any is checked.\n",
        );
        out.push_str(&format!(
            "max_envelope_signatures = {}\n",
            l.max_envelope_signatures
        ));
        out.push_str(
            "# Concurrent calls (HTTP/2 streams) per connection; a client opening more\n\
             # waits until one ends.\n",
        );
        out.push_str(&format!(
            "max_concurrent_streams = {}\n",
            l.max_concurrent_streams
        ));
        out.push_str(
            "# HTTP/2 flow-control window per call, in bytes: what a peer may send before\n\
             # the node reads it, and about what the node holds for a peer that stops reading.\n",
        );
        out.push_str(&format!(
            "stream_window_bytes = {}\n",
            l.stream_window_bytes
        ));
        out.push_str("# A TLS handshake not finished within this time is dropped.\n");
        out.push_str(&format!(
            "handshake_timeout = \"{}\"\n",
            humantime::format_duration(l.handshake_timeout)
        ));
        out.push_str(
            "# A connection without a client certificate is closed after this time (its\n\
             # calls are all refused with UNAUTHENTICATED).\n",
        );
        out.push_str(&format!(
            "no_certificate_timeout = \"{}\"\n",
            humantime::format_duration(l.no_certificate_timeout)
        ));
        out.push_str(
            "# HTTP/2 keepalive: an idle connection is pinged at this interval and closed\n\
             # if the peer does not answer within the same time.\n",
        );
        out.push_str(&format!(
            "keepalive_interval = \"{}\"\n",
            humantime::format_duration(l.keepalive_interval)
        ));
    }

    fn write_storage(&self, out: &mut String) {
        out.push_str(
            "# Where the node keeps its database: engine = \"sled\" (the default, in the\n\
             # data directory's db/) or \"postgres\" (one PostgreSQL database holds every\n\
             # record and payload). The password is never written here: password_env\n\
             # names an environment variable holding it, password_file a file only its\n\
             # owner can read.\n",
        );
        let s = &self.storage;
        if s.engine == StorageEngine::Sled && s.url.is_none() {
            out.push_str(
                "# [storage]\n\
                 # engine = \"postgres\"\n\
                 # url = \"postgresql://liutong@db.example:5432/liutong\"\n\
                 # password_env = \"LIUTONG_DB_PASSWORD\"\n\
                 # password_file = \"/run/secrets/db-password\"\n\
                 # replicas = true      # several `liutong serve` share the database\n\
                 # lease = \"3s\"         # a standby takes over this long after the leader dies\n\
                 # renew_interval = \"1s\"\n\n",
            );
            return;
        }
        out.push_str("[storage]\n");
        let engine = match s.engine {
            StorageEngine::Sled => "sled",
            StorageEngine::Postgres => "postgres",
        };
        out.push_str(&format!("engine = {}\n", toml_string(engine)));
        if let Some(url) = &s.url {
            out.push_str(&format!("url = {}\n", toml_string(url)));
        }
        if let Some(var) = &s.password_env {
            out.push_str(&format!("password_env = {}\n", toml_string(var)));
        }
        if let Some(file) = &s.password_file {
            out.push_str(&format!(
                "password_file = {}\n",
                toml_string(&file.to_string_lossy())
            ));
        }
        if s.replicas {
            out.push_str(
                "# Replicas sharing this database: each starts as a standby (health\n\
                 # NOT_SERVING) and serves only while it holds the leadership lease.\n\
                 replicas = true\n",
            );
            if let Some(lease) = s.lease {
                out.push_str(&format!(
                    "lease = \"{}\"\n",
                    humantime::format_duration(lease)
                ));
            }
            if let Some(every) = s.renew_interval {
                out.push_str(&format!(
                    "renew_interval = \"{}\"\n",
                    humantime::format_duration(every)
                ));
            }
        }
        out.push('\n');
    }

    fn write_hsm(&self, out: &mut String) {
        out.push_str(
            "# The node's signing key in a PKCS#11 token (HSM) instead of\n\
             # identity/signing.key: the token signs agreements, receipts and checkpoints,\n\
             # and the key never leaves it. The key pair's public key must be the one in\n\
             # the node's membership credential (identity/credential.json). The PIN is\n\
             # never written here: pin_env names an environment variable holding it,\n\
             # pin_file a file only its owner can read.\n",
        );
        match &self.hsm {
            Some(h) => {
                out.push_str("[hsm]\n");
                out.push_str(&format!(
                    "module = {}\n",
                    toml_string(&h.module.to_string_lossy())
                ));
                out.push_str(&format!("token = {}\n", toml_string(&h.token)));
                out.push_str(&format!("signing_key = {}\n", toml_string(&h.signing_key)));
                if let Some(var) = &h.pin_env {
                    out.push_str(&format!("pin_env = {}\n", toml_string(var)));
                }
                if let Some(file) = &h.pin_file {
                    out.push_str(&format!(
                        "pin_file = {}\n",
                        toml_string(&file.to_string_lossy())
                    ));
                }
                out.push('\n');
            }
            None => out.push_str(
                "# [hsm]\n\
                 # module = \"/usr/lib/softhsm/libsofthsm2.so\"\n\
                 # token = \"liutong\"\n\
                 # signing_key = \"node-signing\"\n\
                 # pin_env = \"LIUTONG_HSM_PIN\"\n\
                 # pin_file = \"/run/secrets/hsm-pin\"\n\n",
            ),
        }
    }

    fn write_dsp(&self, out: &mut String) {
        out.push_str(
            "\n# Dataspace Protocol 2025-1 over HTTPS, for connectors that speak DSP (Eclipse\n\
             # EDC and those built on it). /.well-known/dspace-version answers anyone; every\n\
             # other endpoint needs a current member's certificate (mutual TLS with the\n\
             # data-space CA, checked against the trust list like the peer API). Off unless\n\
             # this section is set. `url` is the base URL other connectors reach it at, named\n\
             # in catalogs (default: https:// and the listen address). `token_lifetime` is\n\
             # how long a transfer's data address token opens the data endpoint (1s to 1h;\n\
             # a restart after suspension issues a new one).\n",
        );
        match &self.dsp {
            Some(dsp) => {
                out.push_str(&format!("[dsp]\nlisten = \"{}\"\n", dsp.listen));
                match &dsp.url {
                    Some(url) => out.push_str(&format!("url = {}\n", toml_string(url))),
                    None => out.push_str("# url = \"https://node.example:7703\"\n"),
                }
                out.push_str(&format!(
                    "token_lifetime = \"{}\"\n",
                    humantime::format_duration(dsp.token_lifetime)
                ));
            }
            None => out.push_str(
                "# [dsp]\n\
                 # listen = \"127.0.0.1:7703\"\n\
                 # url = \"https://node.example:7703\"\n\
                 # token_lifetime = \"10m\"\n",
            ),
        }
    }

    fn write_console(&self, out: &mut String) {
        out.push_str(
            "\n# The web console for department IT and auditors, over HTTPS with a certificate\n\
             # from this node's local CA (local/ca.crt, to trust in the browser). Sign in with\n\
             # the one-time link `liutong console login [--role admin|auditor]` prints. Off\n\
             # unless this section is set; `listen` defaults to 127.0.0.1:7704.\n",
        );
        match &self.console {
            Some(console) => out.push_str(&format!(
                "[console]\nlisten = \"{}\"\nsession_lifetime = \"{}\"\n",
                console.listen,
                humantime::format_duration(console.session_lifetime)
            )),
            None => out.push_str(
                "# [console]\n\
                 # listen = \"127.0.0.1:7704\"\n\
                 # session_lifetime = \"8h\"\n",
            ),
        }
    }

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
        out.push_str(&format!(
            "\n# A caller went over its request rate or its calls in progress (see\n\
             # [limits]); once per caller and refusal window.\n\
             [alerts.member_limits]\nenabled = {}\n",
            a.member_limits.enabled
        ));
    }
}

fn toml_string(s: &str) -> String {
    // Basic TOML strings share JSON's escapes for the characters that matter here.
    serde_json::to_string(s).expect("strings serialize")
}
