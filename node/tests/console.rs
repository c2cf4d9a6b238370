//! The web console in a real browser: Debian's Chromium driven by playwright-core
//! (`tests/console/browser.mjs`) against a node serving its console, with a consumer
//! whose request for important data waits for a person's approval.
//!
//! Needs `chromium`, Node.js and `npm ci` in `tests/console` (`.ci/run` installs them).
//! Without them the browser test says so and passes, unless `LIUTONG_REQUIRE_BROWSER=1`
//! (set by CI), which makes their absence a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use liutong_node::audit::log::AuditLog;
use liutong_node::config::ConsoleSection;
use liutong_node::identity::{MemberRole, SigningKey};
use liutong_node::local::{self, LocalRole};
use liutong_proto::v1::admin_client::AdminClient;
use liutong_proto::v1::audit_client::AuditClient;
use liutong_proto::v1::{
    CreateConsoleLinkRequest, GetContractRequest, GetVerifierKeyRequest, NewCheckpointRequest,
    ReadRequest,
};
use sha2::Digest as _;
use tokio_stream::StreamExt as _;
use tonic::Code;

const IMPORTANT_POLICY: &str = r#"
uid = "urn:liutong:policy:od-matrix"
type = "set"

[[permission]]
action = "use"
constraint = [
  { leftOperand = "purpose", operator = "isA", rightOperand = "research" },
  { leftOperand = "region", operator = "isPartOf", rightOperand = "330000" },
]
duty = [{ action = "log" }]
"#;

const PUBLIC_POLICY: &str = r#"
uid = "urn:liutong:policy:bus-stops"
type = "set"

[[permission]]
action = "use"
constraint = [{ leftOperand = "purpose", operator = "isA", rightOperand = "publicService" }]
"#;

const CHROMIUM: &str = "/usr/bin/chromium";

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console")
}

/// Whether the browser and its driver are here; a failure when CI requires them.
fn browser_available() -> bool {
    let missing: Vec<&str> = [
        (!Path::new(CHROMIUM).exists()).then_some("chromium (apt-get install chromium)"),
        (std::process::Command::new("node")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .map(|s| !s.success())
            .unwrap_or(true))
        .then_some("Node.js"),
        (!scripts_dir().join("node_modules/playwright-core").exists())
            .then_some("playwright-core (npm ci in node/tests/console)"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("LIUTONG_REQUIRE_BROWSER").is_none(),
        "LIUTONG_REQUIRE_BROWSER is set but these are missing: {}",
        missing.join(", ")
    );
    eprintln!("skipping the browser test: missing {}", missing.join(", "));
    false
}

/// base64(SHA-256(SubjectPublicKeyInfo)) of the console's certificate, for Chromium's
/// `--ignore-certificate-errors-spki-list`.
fn spki_pin(cert: &Path) -> String {
    let pem = std::fs::read(cert).expect("the console's certificate");
    let der = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .expect("one certificate")
        .expect("PEM");
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).expect("DER");
    base64::engine::general_purpose::STANDARD
        .encode(sha2::Sha256::digest(parsed.tbs_certificate.subject_pki.raw))
}

async fn link(node: &TestNode, cert_role: LocalRole, role: &str) -> Result<String, tonic::Status> {
    AdminClient::new(local::connect(&node.config, cert_role).await.unwrap())
        .create_console_link(CreateConsoleLinkRequest { role: role.into() })
        .await
        .map(|r| r.into_inner().url)
}

fn console_on(config: &mut liutong_node::config::NodeConfig) {
    config.console = Some(ConsoleSection {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    });
    // New checkpoints while the browser works, for the consistency check.
    config.audit.checkpoint_interval = Duration::from_millis(300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn links_are_given_by_role_and_only_where_the_console_is_on() {
    let space = DataSpace::start().await;
    let transport = space
        .node_with(
            TRANSPORT,
            "transport",
            &[MemberRole::Provider, MemberRole::Consumer],
            console_on,
        )
        .await;
    let ecology = space
        .node(ECOLOGY, "ecology", Duration::from_secs(3600))
        .await;

    let url = link(&transport, LocalRole::Admin, "auditor").await.unwrap();
    let origin = format!(
        "https://127.0.0.1:{}",
        transport.running.console_addr().unwrap().port()
    );
    assert!(url.starts_with(&format!("{origin}/login?token=")), "{url}");
    // An auditor may not make an admin link; the app role has no console.
    let err = link(&transport, LocalRole::Auditor, "admin")
        .await
        .unwrap_err();
    assert_refused(&err, Code::PermissionDenied, "an admin console link");
    let err = link(&transport, LocalRole::App, "").await.unwrap_err();
    assert_refused(&err, Code::InvalidArgument, "no app role");
    // A node without [console].
    let err = link(&ecology, LocalRole::Admin, "admin").await.unwrap_err();
    assert_refused(&err, Code::FailedPrecondition, "[console] listen");
    // Each link made is on the record.
    let made = transport
        .audit_texts()
        .iter()
        .filter(|t| {
            t.contains("console_sign_in") && t.contains("sign-in link for the auditor role")
        })
        .count();
    assert_eq!(made, 1);

    // The CLI prints a link for the role of the certificate it uses.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_liutong"))
        .args(["console", "login", "--role", "auditor", "--config"])
        .arg(transport.config_path())
        .output()
        .unwrap();
    assert_succeeded(&out);
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(
        printed
            .trim()
            .starts_with(&format!("{origin}/login?token=")),
        "{printed}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("as auditor"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_works_in_a_real_browser() {
    if !browser_available() {
        return;
    }
    let space = DataSpace::start().await;
    // Ecology witnesses the console node's log, so its checkpoints carry a cosignature.
    let ecology = space
        .node(ECOLOGY, "ecology", Duration::from_secs(3600))
        .await;
    let witness_addr = ecology.peer_addr().to_string();
    let transport = space
        .node_with(
            TRANSPORT,
            "transport",
            &[MemberRole::Provider, MemberRole::Consumer],
            |config| {
                console_on(config);
                // One denial is an alert, for the overview's latest alerts.
                config.alerts.policy_denials.threshold = 1;
                config.audit.witnesses = vec![witness_addr];
                config.audit.quorum = 1;
            },
        )
        .await;
    refresh_all(&[&transport, &ecology]).await;

    // ---- evidence: an agreement delivered, and a request denied, for the search and
    // the charts ------------------------------------------------------------------------
    let public_csv = "stop,district\nWulin Sq,330103\n";
    let public = publish(
        &transport,
        public_csv.as_bytes(),
        "Bus stop names",
        "general-1",
        "csv",
        PUBLIC_POLICY,
    )
    .await
    .expect("publish");
    let agreement = ecology
        .agree_and_pull(&transport, &public.offer_id, "publicService")
        .await;
    ecology
        .request_contract(&transport, &public.offer_id, "marketing")
        .await
        .expect_err("a purpose the policy does not permit");
    let receipt_kept = wait_until(Duration::from_secs(15), || {
        let done = transport
            .audit_texts()
            .iter()
            .any(|t| t.contains("transfer COMPLETED: receipt for"));
        async move { done }
    })
    .await;
    assert!(receipt_kept, "the provider keeps the consumer's receipt");
    // ---- end of evidence setup -----------------------------------------------------------

    // A request for important data, waiting for a person at the provider.
    let od = publish(
        &transport,
        b"origin,destination,trips\n330102,330106,5210\n",
        "OD matrix",
        "important",
        "csv",
        IMPORTANT_POLICY,
    )
    .await
    .expect("publish");
    let waiting = ecology
        .request_contract(&transport, &od.offer_id, "scientificResearch")
        .await
        .expect("request");
    assert_eq!(waiting.state, "REQUESTED");

    // ---- flows: peers' catalogs, transfers, received copies, alerts -----------------
    // The ecology node offers a product; the console's node agrees on it, pulls it and
    // reads it once, so that its console has a completed transfer and a copy with a use.
    let air = publish(
        &ecology,
        b"station,pm25\nWest Lake,31\nXixi,28\n",
        "Air quality",
        "general-2",
        "csv",
        PUBLIC_POLICY,
    )
    .await
    .expect("publish at the ecology node");
    let air_agreement = transport
        .agree_and_pull(&ecology, &air.offer_id, "publicService")
        .await;
    let mut read = transport
        .usage(LocalRole::App)
        .await
        .read(ReadRequest {
            agreement_id: air_agreement.clone(),
            purpose: "publicService".into(),
        })
        .await
        .expect("the copy is readable")
        .into_inner();
    while let Some(part) = read.next().await {
        part.expect("the read goes through");
    }
    // A request the provider's policy denies (the OD matrix is for research): with a
    // threshold of one denial, an alert at the console's node.
    let denied = ecology
        .request_contract(&transport, &od.offer_id, "publicService")
        .await;
    assert!(
        denied.as_ref().map_or(true, |c| c.state == "TERMINATED"),
        "{denied:?}"
    );
    let alerted = wait_until(Duration::from_secs(10), || {
        let transport = &transport;
        async move {
            transport
                .audit_texts()
                .iter()
                .any(|t| t.contains("policy_denials:"))
        }
    })
    .await;
    assert!(alerted, "the denial raised an alert");
    // ---- end of flows -----------------------------------------------------------------

    // A signed checkpoint for the audit page, and the log's verifier key, which the
    // auditor would have from the authority.
    let mut audit = AuditClient::new(
        local::connect(&transport.config, LocalRole::Admin)
            .await
            .unwrap(),
    );
    audit.new_checkpoint(NewCheckpointRequest {}).await.unwrap();
    let key = audit
        .get_verifier_key(GetVerifierKeyRequest {})
        .await
        .unwrap()
        .into_inner();
    let other_key = AuditLog::verifier_key(&key.origin, &SigningKey::generate().unwrap())
        .unwrap()
        .to_string();

    // ---- evidence: a cosigned checkpoint, and the decisions the charts should show ---
    let cosigned = wait_until(Duration::from_secs(15), || {
        let log = transport.running.node.audit.clone();
        async move {
            log.kept_checkpoints(None, 10)
                .is_ok_and(|p| p.checkpoints.iter().any(|k| !k.witnesses.is_empty()))
        }
    })
    .await;
    assert!(cosigned, "a kept checkpoint cosigned by the witness");
    let decisions: Vec<String> = transport
        .audit_events()
        .iter()
        .filter(|e| e["kind"] == "policy_decision")
        .map(|e| e["detail"].as_str().unwrap_or_default().to_owned())
        .collect();
    let permits = decisions
        .iter()
        .filter(|d| d.contains("permitted") && !d.contains("refused"))
        .count();
    assert!(permits >= 2 && decisions.len() > permits, "{decisions:?}");
    let participant_refusal = liutong_node::base::bounded::id("participant", "not an ID!")
        .unwrap_err()
        .to_string();
    // ---- end of evidence --------------------------------------------------------------

    let bad_policy = IMPORTANT_POLICY.replace("isPartOf", "isNear");
    let bad_policy_message = format!(
        "policy: {}",
        liutong_node::catalog::parse_policy(&bad_policy, None).unwrap_err()
    );
    let console = transport.running.console_addr().expect("the console is on");
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let plan = serde_json::json!({
        "chromium": CHROMIUM,
        "origin": format!("https://127.0.0.1:{}", console.port()),
        "spki": spki_pin(&transport.config.local_dir().join("console.crt")),
        "auditor_link": link(&transport, LocalRole::Auditor, "auditor").await.unwrap(),
        "admin_link": link(&transport, LocalRole::Admin, "admin").await.unwrap(),
        "verifier_key": key.log_key,
        "other_key": other_key,
        "waiting": waiting.negotiation_id,
        "bad_policy": bad_policy,
        "bad_policy_message": bad_policy_message,
        "good_policy": PUBLIC_POLICY,
        "product_csv": "stop,district,shelters\nWulin Sq,330103,4\nHuanglong,330106,2\n",
        "out_dir": out_dir,
        "flows_admin_link": link(&transport, LocalRole::Admin, "admin").await.unwrap(),
        "flows_auditor_link": link(&transport, LocalRole::Auditor, "auditor").await.unwrap(),
        "flows_peer": ecology.peer_addr().to_string(),
        "flows_offer": air.offer_id,
        "flows_agreement": air_agreement,
        // Port 1 on loopback: nothing listens there.
        "flows_unreachable": "127.0.0.1:1",
        "agreement": agreement,
        "delivered_bytes": public_csv.len(),
        "permits": permits,
        "denials": decisions.len() - permits,
        "participant_refusal": participant_refusal,
    });
    let plan_path = space.dir.path().join("console-plan.json");
    std::fs::write(&plan_path, plan.to_string()).unwrap();

    let (out_path, err_path) = (
        space.dir.path().join("browser.out"),
        space.dir.path().join("browser.err"),
    );
    let mut child = std::process::Command::new("node")
        .arg(scripts_dir().join("browser.mjs"))
        .env("LIUTONG_CONSOLE_PLAN", &plan_path)
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("node runs");
    // Bounded: the run ends by itself well within four minutes, or is killed.
    let mut status = None;
    for _ in 0..2400 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the browser run did not end within 4 minutes");
    };
    let out = std::fs::read_to_string(&out_path).unwrap();
    let err = std::fs::read_to_string(&err_path).unwrap();
    let seen: serde_json::Value = out
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no result from the browser run; stderr:\n{err}"));
    assert!(
        status.success() && seen["ok"] == true,
        "the browser run failed: {}\n{err}",
        seen["error"]
    );
    assert_eq!(seen["auditor_post"], 403);
    assert!(
        seen["altered_consistency"]
            .as_str()
            .unwrap()
            .contains("一致性证明不成立"),
        "{seen}"
    );
    assert_eq!(seen["forged_post"], 403);
    // The evidence views, as the browser saw them.
    assert!(seen["search_matches"].as_u64().unwrap() >= 2, "{seen}");
    assert!(
        seen["altered_search_proof"]
            .as_str()
            .unwrap()
            .contains("根哈希"),
        "{seen}"
    );
    assert!(seen["kept_verified"].as_u64().unwrap() >= 2, "{seen}");
    assert!(
        seen["cosignatures_verified"].as_u64().unwrap() >= 1,
        "{seen}"
    );
    assert!(
        seen["search_until_before_since"]
            .as_str()
            .unwrap()
            .contains("is before since"),
        "{seen}"
    );
    assert!(
        seen["wrong_key"]
            .as_str()
            .unwrap()
            .contains("没有此验证密钥的签名"),
        "{seen}"
    );
    for page in [
        "overview-auditor",
        "link-used-twice",
        "contracts-auditor",
        "audit-verified",
        "audit-altered-proof",
        "audit-altered-consistency",
        "audit-consistent",
        "audit-english",
        "overview-admin",
        "contracts-admin",
        "publish-bad-policy",
        "product",
        "products",
        "contracts-approved",
        "overview-alert",
        "peers-auditor",
        "transfers-auditor",
        "copies-auditor",
        "copy-uses",
        "peers-unreachable",
        "peers-admin",
        "transfers-admin",
        "copies-admin",
        "search-verified",
        "search-altered-proof",
        "search-refused",
        "checkpoints-verified",
        "charts",
    ] {
        assert!(
            out_dir.join(format!("{page}.png")).exists(),
            "a screenshot of {page}"
        );
    }

    // The product published through the form is in the catalog, with its policy.
    let products = transport
        .admin(LocalRole::Admin)
        .await
        .list_products(liutong_proto::v1::ListProductsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .products;
    let stops = products
        .iter()
        .find(|p| p.title == "Bus stops")
        .expect("the product published in the browser");
    assert_eq!(Some(stops.product_id.as_str()), seen["published"].as_str());
    assert_eq!(stops.classification, "general-2");
    assert!(stops.policy_odrl_json.contains("publicService"));
    assert_eq!(
        products.len(),
        3,
        "the refused form published nothing (the bus stop names were published above)"
    );

    // The approval reached the consumer.
    let finalized = wait_until(Duration::from_secs(15), || {
        let ecology = &ecology;
        let id = waiting.negotiation_id.clone();
        async move {
            ecology
                .admin(LocalRole::Admin)
                .await
                .get_contract(GetContractRequest { negotiation_id: id })
                .await
                .is_ok_and(|c| c.into_inner().state == "FINALIZED")
        }
    })
    .await;
    assert!(
        finalized,
        "the consumer's agreement FINALIZED after the approval in the browser"
    );

    // The auditor's request-a-contract form, posted anyway, was refused; the admin's
    // reached the ecology node and was agreed.
    assert_eq!(seen["flows_auditor_request_post"], 403, "{seen}");
    let requested = ecology
        .admin(LocalRole::Admin)
        .await
        .list_contracts(liutong_proto::v1::ListContractsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .contracts
        .into_iter()
        .filter(|c| c.role == "provider" && c.offer_id == air.offer_id)
        .count();
    assert_eq!(
        requested, 2,
        "the pull's agreement and the one requested in the browser"
    );

    // Sign-ins and refusals are on the provider's record.
    let log = transport.audit_texts().join("\n");
    for expected in [
        "a browser signed in with the auditor role",
        "a browser signed in with the admin role",
        "calling console GET /login: PermissionDenied: a sign-in link was refused",
        "refused the local role admin calling console POST /products: InvalidArgument: policy:",
        "refused the local role auditor calling console POST /contracts/",
        "/approve: PermissionDenied",
        "the form's token or origin is not this console's",
        "refused the local role auditor calling console POST /peers/request: PermissionDenied",
        "refused the local role auditor calling console GET /peers: PermissionDenied",
    ] {
        assert!(
            log.contains(expected),
            "the audit log records: {expected}\n{}",
            log.lines()
                .filter(|l| l.contains("refus"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
