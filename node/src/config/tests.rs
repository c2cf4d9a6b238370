//! Round trips of the commented file through [`NodeConfig::load`], and the load
//! errors an operator sees.

use std::time::Duration;

use super::*;
use crate::identity::{ParticipantId, SigningKey};

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
        storage: Default::default(),
        hsm: None,
        dsp: None,
        console: None,
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
fn hsm_section_loads_back_and_never_takes_a_pin() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    let mut config = sample();
    config.hsm = Some(super::HsmSection {
        module: "/usr/lib/softhsm/libsofthsm2.so".into(),
        token: "liutong".into(),
        signing_key: "node-signing".into(),
        pin_env: None,
        pin_file: Some("/run/secrets/hsm-pin".into()),
        pin: None,
    });
    std::fs::write(&path, config.to_commented_toml()).unwrap();
    let back = NodeConfig::load(&path)
        .unwrap()
        .hsm
        .expect("[hsm] loads back");
    assert_eq!(back.token, "liutong");
    assert_eq!(back.signing_key, "node-signing");
    assert_eq!(
        back.pin_file.as_deref(),
        Some(Path::new("/run/secrets/hsm-pin"))
    );

    // Without a section, the file shows a commented example.
    assert!(sample().to_commented_toml().contains("# [hsm]\n"));

    let good = config.to_commented_toml();
    let with_pin = good.replace(
        "pin_file = \"/run/secrets/hsm-pin\"",
        "pin = \"123456\"\npin_file = \"/run/secrets/hsm-pin\"",
    );
    let msg = load_text(&with_pin);
    assert!(
        msg.contains("never written in node.toml")
            && msg.contains("pin_env")
            && msg.contains("pin_file"),
        "{msg}"
    );
    let no_pin = good.replace("pin_file = \"/run/secrets/hsm-pin\"\n", "");
    let msg = load_text(&no_pin);
    assert!(msg.contains("PIN is missing"), "{msg}");
}

#[test]
fn storage_section_loads_back_and_never_takes_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    // Without a section: sled, and the file shows a commented example.
    let text = sample().to_commented_toml();
    assert!(text.contains("# [storage]\n"), "{text}");
    std::fs::write(&path, &text).unwrap();
    assert_eq!(
        NodeConfig::load(&path).unwrap().storage.engine,
        StorageEngine::Sled
    );

    let mut config = sample();
    config.storage = StorageSection {
        engine: StorageEngine::Postgres,
        url: Some("postgresql://liutong@db.example:5432/liutong".into()),
        password_env: None,
        password_file: Some("db-password".into()),
        password: None,
        ..Default::default()
    };
    let good = config.to_commented_toml();
    std::fs::write(&path, &good).unwrap();
    let back = NodeConfig::load(&path).unwrap();
    assert_eq!(back.storage.engine, StorageEngine::Postgres);
    assert_eq!(
        back.storage.url.as_deref(),
        Some("postgresql://liutong@db.example:5432/liutong")
    );
    assert_eq!(
        back.storage.password_file.as_deref(),
        Some(Path::new("db-password"))
    );

    let msg = load_text(&good.replace(
        "password_file = \"db-password\"",
        "password = \"s3cret\"\npassword_file = \"db-password\"",
    ));
    assert!(
        msg.contains("never written in node.toml")
            && msg.contains("password_env")
            && msg.contains("password_file"),
        "{msg}"
    );
    assert!(!msg.contains("s3cret"), "{msg}");
    let msg = load_text(&good.replace("liutong@db.example", "liutong:s3cret@db.example"));
    assert!(msg.contains("URL holds a password"), "{msg}");
    assert!(!msg.contains("s3cret"), "{msg}");
    let msg = load_text(&good.replace(
        "url = \"postgresql://liutong@db.example:5432/liutong\"\n",
        "",
    ));
    assert!(msg.contains("needs url"), "{msg}");
    let msg = load_text(&good.replace("engine = \"postgres\"", "engine = \"sled\""));
    assert!(msg.contains("the sled engine takes none"), "{msg}");

    // The password file is read when the node starts: it must be the owner's only.
    let file = dir.path().join("db-password");
    std::fs::write(&file, "s3cret\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = back.storage.postgres(dir.path()).err().unwrap();
    assert!(err.contains("can be read by other users"), "{err}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let db = back.storage.postgres(dir.path()).unwrap().unwrap();
    assert_eq!(db.url, "postgresql://liutong@db.example:5432/liutong");
    assert_eq!(db.password.as_deref(), Some("s3cret"));
}

#[test]
fn missing_file_is_named() {
    let err = NodeConfig::load(Path::new("/nonexistent/node.toml")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/node.toml"), "{err}");
}

#[test]
fn guardrail_regions_are_checked_when_loading() {
    let good = sample().to_commented_toml();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    let with = |regions: &str| good.replace("important_regions = []", regions);
    std::fs::write(&path, with("important_regions = [\"330000\", \"110105\"]")).unwrap();
    let loaded = NodeConfig::load(&path).unwrap();
    let regions: Vec<String> = loaded
        .guardrails
        .to_policy()
        .important_regions
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(regions, ["330000", "110105"]);
    // 19 is no province: refused by name, not dropped from the guardrails.
    let msg = load_text(&with("important_regions = [\"190000\"]"));
    assert!(msg.contains("\"190000\" starts with 19"), "{msg}");
}

#[test]
fn transport_limits_load_back_and_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    let mut config = sample();
    config.limits.max_envelope_signatures = 2;
    config.limits.max_concurrent_streams = 8;
    config.limits.stream_window_bytes = 262_144;
    config.limits.handshake_timeout = Duration::from_secs(3);
    config.limits.no_certificate_timeout = Duration::from_millis(1500);
    config.limits.keepalive_interval = Duration::from_secs(20);
    std::fs::write(&path, config.to_commented_toml()).unwrap();
    let loaded = NodeConfig::load(&path).unwrap();
    assert_eq!(loaded.limits.max_envelope_signatures, 2);
    assert_eq!(loaded.limits.max_concurrent_streams, 8);
    assert_eq!(loaded.limits.stream_window_bytes, 262_144);
    assert_eq!(loaded.limits.handshake_timeout, Duration::from_secs(3));
    assert_eq!(
        loaded.limits.no_certificate_timeout,
        Duration::from_millis(1500)
    );
    assert_eq!(loaded.limits.keepalive_interval, Duration::from_secs(20));

    // Limits that would stop the node from working are refused by name.
    let good = sample().to_commented_toml();
    for (from, to, named) in [
        (
            "max_envelope_signatures = 4",
            "max_envelope_signatures = 0",
            "limits.max_envelope_signatures must be between 1 and 16",
        ),
        (
            "max_concurrent_streams = 32",
            "max_concurrent_streams = 0",
            "limits.max_concurrent_streams must be at least 1",
        ),
        (
            "stream_window_bytes = 1048576",
            "stream_window_bytes = 1000",
            "limits.stream_window_bytes must be between 65535 and 2147483647",
        ),
        (
            "no_certificate_timeout = \"10s\"",
            "no_certificate_timeout = \"0s\"",
            "limits.no_certificate_timeout must be longer than 0s",
        ),
    ] {
        assert!(good.contains(from), "{from} not in the default file");
        let msg = load_text(&good.replace(from, to));
        assert!(msg.contains(named), "{msg}");
    }
}

#[test]
fn the_dsp_listener_is_off_unless_configured_and_loads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    let mut config = sample();
    std::fs::write(&path, config.to_commented_toml()).unwrap();
    assert!(NodeConfig::load(&path).unwrap().dsp.is_none());

    config.dsp = Some(DspSection {
        url: Some("https://node.example:7703".into()),
        token_lifetime: Duration::from_secs(90),
        ..DspSection::on("127.0.0.1:7703".parse().unwrap())
    });
    std::fs::write(&path, config.to_commented_toml()).unwrap();
    let dsp = NodeConfig::load(&path)
        .unwrap()
        .dsp
        .expect("[dsp] loads back");
    assert_eq!(dsp.listen, "127.0.0.1:7703".parse().unwrap());
    assert_eq!(dsp.url.as_deref(), Some("https://node.example:7703"));
    assert_eq!(dsp.token_lifetime, Duration::from_secs(90));
}

#[test]
fn a_dsp_token_lifetime_out_of_bounds_is_refused_and_absent_is_ten_minutes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    let mut config = sample();
    config.dsp = Some(DspSection::on("127.0.0.1:7703".parse().unwrap()));
    let good = config.to_commented_toml();
    assert!(good.contains("token_lifetime = \"10m\""), "{good}");
    // Absent: the default.
    std::fs::write(&path, good.replace("token_lifetime = \"10m\"\n", "")).unwrap();
    let dsp = NodeConfig::load(&path).unwrap().dsp.unwrap();
    assert_eq!(dsp.token_lifetime, Duration::from_secs(600));
    for (value, expected) in [
        ("0s", "at least 1s and at most 1h"),
        ("2h", "at least 1s and at most 1h"),
        ("500ms", "at least 1s"),
        ("soon", "token_lifetime"),
    ] {
        std::fs::write(
            &path,
            good.replace(
                "token_lifetime = \"10m\"",
                &format!("token_lifetime = \"{value}\""),
            ),
        )
        .unwrap();
        let e = NodeConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains(expected), "{value}: {e}");
    }
    std::fs::write(
        &path,
        good.replace("token_lifetime = \"10m\"", "token_lifetime = \"1h\""),
    )
    .unwrap();
    let dsp = NodeConfig::load(&path).unwrap().dsp.unwrap();
    assert_eq!(dsp.token_lifetime, Duration::from_secs(3600));
}

#[test]
fn a_dsp_url_that_is_not_a_plain_https_base_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    for (url, expected) in [
        ("http://node.example:7703", "must be an https:// URL"),
        ("https://node.example:7703/", "no trailing slash"),
        ("https://node.example/?x=1", "no trailing slash, query"),
    ] {
        let mut config = sample();
        config.dsp = Some(DspSection {
            url: Some(url.into()),
            ..DspSection::on("127.0.0.1:7703".parse().unwrap())
        });
        std::fs::write(&path, config.to_commented_toml()).unwrap();
        let e = NodeConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains(expected), "{url}: {e}");
    }
}

#[test]
fn replicas_settings_round_trip_and_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    let mut config = sample();
    config.storage = StorageSection {
        engine: StorageEngine::Postgres,
        url: Some("postgresql://liutong@db.example:5432/liutong".into()),
        password_env: Some("LIUTONG_DB_PASSWORD".into()),
        replicas: true,
        lease: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    let good = config.to_commented_toml();
    std::fs::write(&path, &good).unwrap();
    let back = NodeConfig::load(&path).unwrap();
    assert!(back.storage.replicas);
    assert_eq!(back.storage.lease(), Duration::from_secs(5));
    assert_eq!(back.storage.renew_interval(), Duration::from_secs(1));

    let msg = load_text(&good.replace("lease = \"5s\"", "lease = \"5s\"\nrenew_interval = \"5s\""));
    assert!(msg.contains("shorter than lease"), "{msg}");
    let msg = load_text(&good.replace("replicas = true\n", ""));
    assert!(msg.contains("settings of replicas = true"), "{msg}");
    let sled = good
        .replace("engine = \"postgres\"\n", "")
        .replace(
            "url = \"postgresql://liutong@db.example:5432/liutong\"\n",
            "",
        )
        .replace("password_env = \"LIUTONG_DB_PASSWORD\"\n", "");
    let msg = load_text(&sled);
    assert!(msg.contains("replicas = true needs engine"), "{msg}");
}

#[test]
fn the_client_pace_never_empties_the_nodes_bucket() {
    let mut limits = Limits::default();
    assert_eq!(
        limits.client_pace(),
        Some((100, Duration::from_secs_f64(1.05)))
    );
    limits.requests_per_second_per_member = 0;
    assert_eq!(limits.client_pace(), None, "no limit, no pace");

    for (rate, burst) in [(100, 400), (2, 1), (5, 2), (100, 10), (1, 1000), (1000, 3)] {
        limits.requests_per_second_per_member = rate;
        limits.request_burst_per_member = burst;
        let (requests, per) = limits.client_pace().unwrap();
        assert!(
            requests <= u64::from((burst / 2).max(1)),
            "{rate}/s, burst {burst}: {requests} at once"
        );
        assert!(
            requests as f64 / per.as_secs_f64() < f64::from(rate),
            "{rate}/s, burst {burst}: {requests} per {per:?}"
        );
        // The node's token bucket (full at first, refilled at the rate, at most the
        // burst) against a client sending each window's requests at its very start.
        let (rate, burst) = (f64::from(rate), f64::from(burst.max(1)));
        let mut tokens = burst;
        for _ in 0..1000 {
            for _ in 0..requests {
                assert!(tokens >= 1.0, "{rate}/s, burst {burst}: refused");
                tokens -= 1.0;
            }
            tokens = (tokens + per.as_secs_f64() * rate).min(burst);
        }
    }
}
