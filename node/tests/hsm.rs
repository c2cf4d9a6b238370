//! Keys in a PKCS#11 token, with real SoftHSM2 tokens made by `softhsm2-util` and
//! `pkcs11-tool`: a node whose signing key is in a token agrees, delivers and signs its
//! checkpoints there; an authority whose CA and signing keys are in a token admits a
//! member and serves trust lists signed in it; and each wrong setting refuses to start
//! with a message naming what to fix, having written nothing.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use liutong_node::audit::log::origin_for;
use liutong_node::audit::note::{self, KeyType, VerifierKey};
use liutong_node::authority::{self, Authority};
use liutong_node::config::{HsmSection, NodeConfig};
use liutong_node::hsm::{PinSource, TokenSpec};
use liutong_node::identity::{Envelope, MemberRole, PublicKey, SigningKey};
use liutong_node::local::{self, LocalRole};
use liutong_node::runtime::RunningNode;
use liutong_node::setup::InitOptions;
use liutong_proto::v1::audit_client::AuditClient;
use liutong_proto::v1::{GetCheckpointRequest, NewCheckpointRequest};
use tokio::net::TcpListener;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "4711-user";
const SO_PIN: &str = "4711-officer";
/// Holds [`PIN`] in this process and in the commands it runs.
const PIN_ENV: &str = "LIUTONG_TEST_HSM_PIN";

/// Any use, for any purpose.
const OPEN: &str = r#"
uid = "urn:liutong:policy:open"
type = "set"

[[permission]]
action = "use"
"#;

/// Tokens, each used by the tests named beside it.
const NODE_TOKEN: &str = "node"; // node_signs_in_the_token, mismatch, missing label
const NODE_KEY: &str = "node-signing";
const AUTHORITY_TOKEN: &str = "authority"; // authority_keys_in_the_token
const AUTHORITY_CA: &str = "authority-ca";
const AUTHORITY_SIGNING: &str = "authority-signing";
/// Logged into by nobody in this process: a wrong PIN must meet a token this process is
/// not already logged in to, which would accept it without asking.
const PIN_TOKEN: &str = "wrong-pin";
/// Logged out of behind the key's back by a_lost_session_is_opened_again alone.
const SESSION_TOKEN: &str = "session";
/// a_member_joins_with_its_signing_key_in_a_token
const JOIN_TOKEN: &str = "joined";

/// The SoftHSM2 configuration and token directory of this test binary.
struct SoftHsm {
    _dir: tempfile::TempDir,
    conf: PathBuf,
}

/// One token directory for the whole binary, made before anything in this process loads
/// the module: SoftHSM2 reads `SOFTHSM2_CONF` when it is initialised, and sees the tokens
/// present then.
fn softhsm() -> &'static SoftHsm {
    static SOFTHSM: OnceLock<SoftHsm> = OnceLock::new();
    SOFTHSM.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        // SAFETY: every test calls softhsm() first, and OnceLock holds the others there
        // until this returns, so no other thread of this process reads the environment
        // while it is changed.
        unsafe {
            std::env::set_var("SOFTHSM2_CONF", &conf);
            std::env::set_var(PIN_ENV, PIN);
        }
        let soft = SoftHsm { _dir: dir, conf };
        soft.token(NODE_TOKEN, &[(NODE_KEY, "EC:edwards25519")]);
        soft.token(
            AUTHORITY_TOKEN,
            &[
                (AUTHORITY_CA, "EC:prime256v1"),
                (AUTHORITY_SIGNING, "EC:edwards25519"),
            ],
        );
        soft.token(PIN_TOKEN, &[(NODE_KEY, "EC:edwards25519")]);
        soft.token(SESSION_TOKEN, &[(NODE_KEY, "EC:edwards25519")]);
        soft.token(JOIN_TOKEN, &[(NODE_KEY, "EC:edwards25519")]);
        soft
    })
}

impl SoftHsm {
    fn run(&self, program: &str, args: &[&str]) {
        let out = Command::new(program)
            .args(args)
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .unwrap_or_else(|e| panic!("{program} cannot run ({e}); install softhsm2 and opensc"));
        assert_succeeded(&out);
    }

    fn token(&self, label: &str, keys: &[(&str, &str)]) {
        self.run(
            "softhsm2-util",
            &[
                "--init-token",
                "--free",
                "--label",
                label,
                "--pin",
                PIN,
                "--so-pin",
                SO_PIN,
            ],
        );
        for (key, kind) in keys {
            self.run(
                "pkcs11-tool",
                &[
                    "--module",
                    MODULE,
                    "--token-label",
                    label,
                    "--login",
                    "--pin",
                    PIN,
                    "--keypairgen",
                    "--key-type",
                    kind,
                    "--label",
                    key,
                ],
            );
        }
    }
}

/// The token `token` as this process opens it.
fn spec(token: &str) -> TokenSpec {
    // The tokens, and SOFTHSM2_CONF, exist before the module is loaded.
    softhsm();
    TokenSpec {
        module: MODULE.into(),
        token: token.into(),
        pin: PinSource::Env(PIN_ENV.into()),
    }
}

fn hsm_section(token: &str, key: &str) -> HsmSection {
    softhsm();
    HsmSection {
        module: MODULE.into(),
        token: token.into(),
        signing_key: key.into(),
        pin_env: Some(PIN_ENV.into()),
        pin_file: None,
        pin: None,
    }
}

/// The public key of the Ed25519 key `label` in `token`, as the node reads it.
fn token_public_key(token: &str, label: &str) -> PublicKey {
    SigningKey::open_token(&spec(token), label)
        .expect("the token key opens")
        .public_key()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_signs_in_the_token() {
    softhsm();
    let token_key = token_public_key(NODE_TOKEN, NODE_KEY);
    let TwoMembers {
        space,
        provider,
        consumer,
    } = two_members().await;

    // The provider moves its signing key into the token: the authority names the
    // token's key in a new credential, the key file goes, node.toml gains [hsm].
    let stopped = provider.stop().await;
    let credential = Authority::open(&space.authority_dir)
        .unwrap()
        .rekey(&stopped.participant, token_key)
        .unwrap();
    let identity_dir = stopped.config.identity_dir();
    std::fs::write(
        identity_dir.join("credential.json"),
        credential.to_json().as_bytes(),
    )
    .unwrap();
    std::fs::remove_file(identity_dir.join("signing.key")).unwrap();
    let mut config = stopped.config.clone();
    config.hsm = Some(hsm_section(NODE_TOKEN, NODE_KEY));
    let config_path = config.base_dir.join("node.toml");
    std::fs::write(&config_path, config.to_commented_toml()).unwrap();
    let from_file = NodeConfig::load(&config_path).unwrap().hsm.expect("[hsm]");
    assert_eq!(
        (from_file.token.as_str(), from_file.signing_key.as_str()),
        (NODE_TOKEN, NODE_KEY)
    );
    let provider = StoppedNode { config, ..stopped }.start().await;
    assert!(provider.running.node.identity.signing_key.in_token());
    assert_eq!(
        provider.running.node.identity.signing_key.public_key(),
        token_key
    );
    refresh_all(&[&provider, &consumer]).await;

    // The consumer agrees and pulls; the provider's signature is the token's.
    let product = publish(
        &provider,
        b"road,flow\nG60,1200\nG92,800\n",
        "Road traffic flow",
        "general-2",
        "csv",
        OPEN,
    )
    .await
    .expect("publish");
    let contract = consumer
        .request_contract(&provider, &product.offer_id, "publicService")
        .await
        .expect("the contract is agreed");
    assert_eq!(contract.state, "FINALIZED", "{contract:?}");
    let done = consumer
        .pull_all(&contract.agreement_id)
        .await
        .expect("pull");
    assert_eq!(done.state, "COMPLETED", "{done:?}");
    let agreement: Envelope = serde_json::from_str(&contract.agreement_json).unwrap();
    agreement
        .verify(&token_key)
        .expect("signed by the token's key");

    // Checkpoints are signed in the token too: the one made at start, and a new one.
    let origin = origin_for(&provider.participant);
    let log_key = VerifierKey::new(&origin, KeyType::Ed25519, token_key.0).unwrap();
    let mut audit = AuditClient::new(
        local::connect(&provider.config, LocalRole::Admin)
            .await
            .unwrap(),
    );
    let at_start = audit
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    note::open_checkpoint(at_start.note.as_bytes(), std::slice::from_ref(&log_key))
        .expect("the checkpoint made at start verifies with the token's key");
    let fresh = audit
        .new_checkpoint(NewCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    let (checkpoint, _) =
        note::open_checkpoint(fresh.note.as_bytes(), std::slice::from_ref(&log_key))
            .expect("a new checkpoint verifies with the token's key");
    assert_eq!(checkpoint.size, fresh.size);
    drop(space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authority_keys_in_the_token() {
    let soft = softhsm();
    let dir = tempfile::tempdir().unwrap();
    let authority_dir = dir.path().join("authority");
    let out = Command::new(env!("CARGO_BIN_EXE_liutong"))
        .args(["authority", "init", "--name", "Token Data Space", "--dir"])
        .arg(&authority_dir)
        .args(["--hsm-module", MODULE, "--hsm-token", AUTHORITY_TOKEN])
        .args(["--hsm-ca-key", AUTHORITY_CA, "--hsm-signing-key"])
        .arg(AUTHORITY_SIGNING)
        .args(["--hsm-pin-env", PIN_ENV])
        .env("SOFTHSM2_CONF", &soft.conf)
        .env(PIN_ENV, PIN)
        .output()
        .unwrap();
    assert_succeeded(&out);
    // No private key of the authority's own in its directory, and no PIN.
    assert!(!authority_dir.join("ca.key").exists());
    assert!(!authority_dir.join("signing.key").exists());
    let hsm_toml = std::fs::read_to_string(authority_dir.join(authority::HSM_FILE)).unwrap();
    assert!(!hsm_toml.contains(PIN), "{hsm_toml}");

    let signing = token_public_key(AUTHORITY_TOKEN, AUTHORITY_SIGNING);
    let opened = Authority::open(&authority_dir).expect("the authority opens its token");
    assert_eq!(opened.public_key(), signing);
    let list = opened
        .trust_list(0, Duration::from_secs(600))
        .expect("the token signs the trust list");
    list.verify(&signing).unwrap();

    // The CA certificate is the token's CA key's.
    let ca_pem = std::fs::read(authority_dir.join("ca.crt")).unwrap();
    let ca_der = rustls_pemfile::certs(&mut ca_pem.as_slice())
        .next()
        .unwrap()
        .unwrap();
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    let ca_point = ca.public_key().subject_public_key.data.to_vec();
    let token_ca = liutong_node::hsm::TokenKey::open(
        &spec(AUTHORITY_TOKEN),
        AUTHORITY_CA,
        liutong_node::hsm::KeyKind::P256,
    )
    .unwrap();
    assert_eq!(ca_point, token_ca.public_key());

    // It serves; a member it admits (certificate and credential signed in the token)
    // starts, fetches the trust list signed in the token, and is in it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let serving = authority::serve(
        &authority_dir,
        listener,
        authority::DEFAULT_TRUST_LIST_VALIDITY,
    )
    .await
    .expect("the authority serves");
    let space = DataSpace {
        dir,
        authority_dir,
        authority: serving,
    };
    let roles = [MemberRole::Provider, MemberRole::Consumer];
    let member = space
        .node_with(TRANSPORT, "transport", &roles, |_| {})
        .await;
    assert_eq!(member.config.authority.public_key, signing);
    refresh_all(&[&member]).await;
    let status = member.running.node.trust.status();
    assert!(status.sequence >= 2, "{status:?}");
    assert!(
        member
            .running
            .node
            .trust
            .member(
                &member.participant,
                time::OffsetDateTime::now_utc().unix_timestamp()
            )
            .is_ok()
    );
}

#[test]
fn a_lost_session_is_opened_again() {
    let key = SigningKey::open_token(&spec(SESSION_TOKEN), NODE_KEY).unwrap();
    let before = key.sign(b"before").unwrap();
    assert!(key.public_key().verify(b"before", &before));

    // Log this process out of the token, as a token pulled out and put back leaves it:
    // the key's session can no longer reach the private key.
    let pkcs11 = cryptoki::context::Pkcs11::new(MODULE).unwrap();
    // Already initialised by the key above; the module stays initialised.
    let _ = pkcs11.initialize(cryptoki::context::CInitializeArgs::new(
        cryptoki::context::CInitializeFlags::OS_LOCKING_OK,
    ));
    let slot = pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| pkcs11.get_token_info(*s).unwrap().label().trim_end() == SESSION_TOKEN)
        .unwrap();
    pkcs11.open_ro_session(slot).unwrap().logout().unwrap();

    let after = key
        .sign(b"after")
        .expect("the key opens a new session, logs in again and signs");
    assert!(key.public_key().verify(b"after", &after));
}

/// A member admitted to a new data space, its node directory made but not started.
struct Prepared {
    _space: DataSpace,
    config: NodeConfig,
    peer: TcpListener,
    admin: TcpListener,
}

async fn prepared() -> Prepared {
    softhsm();
    let space = DataSpace::start().await;
    let bundle = space.admit(DataSpace::admission(
        TRANSPORT,
        "transport",
        liutong_node::identity::ParticipantKind::Government,
    ));
    let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config_path = space.init_from_bundle(
        &bundle,
        InitOptions {
            dir: space.dir.path().join("node"),
            bundle: bundle.clone(),
            listen: peer.local_addr().unwrap(),
            admin_listen: admin.local_addr().unwrap(),
            authority: space.authority.addr.to_string(),
            force: false,
            important_regions: vec![],
            development: None,
        },
    );
    let config = NodeConfig::load(&config_path).unwrap();
    Prepared {
        _space: space,
        config,
        peer,
        admin,
    }
}

/// Starts the prepared node with `hsm`; returns the refusal, after checking that the
/// node wrote no database.
async fn refused_start(hsm: HsmSection) -> String {
    let Prepared {
        _space,
        mut config,
        peer,
        admin,
    } = prepared().await;
    config.hsm = Some(hsm);
    let err = match RunningNode::start_with_listeners(config.clone(), peer, admin).await {
        Ok(_) => panic!("the node started"),
        Err(e) => e.to_string(),
    };
    assert!(
        !config.database_dir().exists(),
        "a refused start wrote the database: {err}"
    );
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_module_is_refused_by_path() {
    let mut hsm = hsm_section(NODE_TOKEN, NODE_KEY);
    hsm.module = "/usr/lib/nowhere/libpkcs11-missing.so".into();
    let err = refused_start(hsm).await;
    assert!(
        err.contains("/usr/lib/nowhere/libpkcs11-missing.so") && err.contains("does not exist"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pin_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pin_file = dir.path().join("pin");
    liutong_node::base::files::write_private(&pin_file, b"not-the-pin\n").unwrap();
    let mut hsm = hsm_section(PIN_TOKEN, NODE_KEY);
    hsm.pin_env = None;
    hsm.pin_file = Some(pin_file.clone());
    let err = refused_start(hsm).await;
    assert!(
        err.contains("refused the PIN")
            && err.contains(PIN_TOKEN)
            && err.contains(&pin_file.display().to_string()),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_token_label_is_refused_naming_the_tokens_present() {
    let err = refused_start(hsm_section("no-such-token", NODE_KEY)).await;
    assert!(
        err.contains("no token labelled \"no-such-token\"")
            && err.contains(&format!("\"{NODE_TOKEN}\"")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_key_label_is_refused() {
    let err = refused_start(hsm_section(NODE_TOKEN, "no-such-key")).await;
    assert!(
        err.contains("holds no private key labelled \"no-such-key\"")
            && err.contains("--keypairgen"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_key_the_credential_does_not_name_is_refused_naming_both() {
    let token_key = token_public_key(NODE_TOKEN, NODE_KEY);
    let Prepared {
        _space,
        mut config,
        peer,
        admin,
    } = prepared().await;
    let credential_key = SigningKey::load(&config.identity_dir().join("signing.key"))
        .unwrap()
        .public_key();
    config.hsm = Some(hsm_section(NODE_TOKEN, NODE_KEY));
    let err = match RunningNode::start_with_listeners(config.clone(), peer, admin).await {
        Ok(_) => panic!("the node started with a key its credential does not name"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(&token_key.to_string())
            && err.contains(&credential_key.to_string())
            && err.contains("rekey"),
        "{err}"
    );
    assert!(!config.database_dir().exists(), "{err}");
}

#[test]
fn authority_init_with_a_bad_token_writes_nothing() {
    let soft = softhsm();
    let dir = tempfile::tempdir().unwrap();
    let wrong_pin = dir.path().join("pin");
    liutong_node::base::files::write_private(&wrong_pin, b"not-the-pin").unwrap();
    let wrong_pin = wrong_pin.to_str().unwrap();
    // (what, module, token, CA key label, PIN arguments, what stderr says)
    let cases = [
        (
            "missing-module",
            "/nonexistent/libpkcs11.so",
            AUTHORITY_TOKEN,
            AUTHORITY_CA,
            ["--hsm-pin-env", PIN_ENV],
            "/nonexistent/libpkcs11.so does not exist",
        ),
        (
            "wrong-pin",
            MODULE,
            PIN_TOKEN,
            AUTHORITY_CA,
            ["--hsm-pin-file", wrong_pin],
            "refused the PIN",
        ),
        (
            "no-token",
            MODULE,
            "no-such-token",
            AUTHORITY_CA,
            ["--hsm-pin-env", PIN_ENV],
            "no token labelled \"no-such-token\"",
        ),
        (
            "missing-key",
            MODULE,
            AUTHORITY_TOKEN,
            "absent-ca",
            ["--hsm-pin-env", PIN_ENV],
            "holds no private key labelled \"absent-ca\"",
        ),
    ];
    for (what, module, token, ca_key, pin_args, expected) in cases {
        let authority_dir = dir.path().join(what);
        let out = Command::new(env!("CARGO_BIN_EXE_liutong"))
            .args(["authority", "init", "--name", "Refused", "--dir"])
            .arg(&authority_dir)
            .args(["--hsm-module", module, "--hsm-token", token])
            .args([
                "--hsm-ca-key",
                ca_key,
                "--hsm-signing-key",
                AUTHORITY_SIGNING,
            ])
            .args(pin_args)
            .env("SOFTHSM2_CONF", &soft.conf)
            .env(PIN_ENV, PIN)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: {stderr}");
        assert!(stderr.contains(expected), "{what}: {stderr}");
        assert!(!authority_dir.exists(), "{what}: the directory was made");
    }
}

/// Runs the `liutong` binary with this process's token settings (SOFTHSM2_CONF, the PIN
/// variable) and `env` on top.
fn liutong_cli(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    softhsm();
    let mut c = Command::new(env!("CARGO_BIN_EXE_liutong"));
    c.args(args)
        .env_remove("LIUTONG_CONFIG")
        .env_remove("LIUTONG_DATA");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run liutong")
}

#[test]
fn a_member_joins_with_its_signing_key_in_a_token() {
    let tmp = tempfile::tempdir().unwrap();
    let (authority, node, bundle) = (
        tmp.path().join("authority"),
        tmp.path().join("node"),
        tmp.path().join("bundle"),
    );
    let path = |p: &PathBuf| p.to_str().unwrap().to_owned();
    let ok = |o: std::process::Output| {
        assert!(
            o.status.success(),
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    };
    ok(liutong_cli(
        &[
            "authority",
            "init",
            "--dir",
            &path(&authority),
            "--name",
            "DS",
        ],
        &[],
    ));
    let join = |dir: &PathBuf, env: &[(&str, &str)]| {
        liutong_cli(
            &[
                "join",
                "--dir",
                &path(dir),
                "--participant",
                TRANSPORT,
                "--dns",
                "localhost",
                "--hsm-module",
                MODULE,
                "--hsm-token",
                JOIN_TOKEN,
                "--hsm-key",
                NODE_KEY,
                "--hsm-pin-env",
                PIN_ENV,
            ],
            env,
        )
    };

    // A wrong PIN: refused before anything is written.
    let refused_dir = tmp.path().join("refused");
    let o = join(&refused_dir, &[(PIN_ENV, "0000-wrong")]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("PIN"), "{err}");
    assert!(!refused_dir.exists(), "nothing written");

    ok(join(&node, &[]));
    let identity = node.join("identity");
    assert!(
        !identity.join("signing.key").exists(),
        "no key file for a token key"
    );
    let token_key = token_public_key(JOIN_TOKEN, NODE_KEY);
    let request = liutong_node::identity::request::open(
        &std::fs::read_to_string(identity.join("admission-request.json")).unwrap(),
    )
    .expect("the request's proof of possession, signed in the token, holds");
    assert_eq!(request.signing_key, token_key);

    ok(liutong_cli(
        &[
            "authority",
            "admit",
            "--dir",
            &path(&authority),
            "--request",
            &path(&identity.join("admission-request.json")),
            "--participant",
            TRANSPORT,
            "--name",
            "Transport",
            "--kind",
            "government",
            "--sector",
            "transport",
            "--region",
            "330100",
            "--roles",
            "provider,consumer",
            "--out",
            &path(&bundle),
        ],
        &[],
    ));
    assert_no_private_key(&bundle);
    ok(liutong_cli(
        &["init", "--dir", &path(&node), "--bundle", &path(&bundle)],
        &[],
    ));
    let config = NodeConfig::load(&node.join("node.toml")).unwrap();
    let hsm = config.hsm.clone().expect("init writes [hsm]");
    assert_eq!(
        (hsm.token.as_str(), hsm.signing_key.as_str()),
        (JOIN_TOKEN, NODE_KEY)
    );
    assert_eq!(config.load_signing_key().unwrap().public_key(), token_key);
}
