//! A standard gRPC client against a node: `standard_client/client.py` (Python grpcio,
//! stubs generated from `proto/` at run time) calls the peer API's health check and
//! `Describe` over mutual TLS with grpcio's default server verification, by the host
//! name `localhost` and by the address `127.0.0.1`, which the node's certificate must
//! name; asked for by a name the certificate lacks, the client refuses the node. A
//! client presenting no certificate is refused by the node.
//!
//! Needs Python 3 with grpcio and grpc_tools (Debian: `python3-grpcio`,
//! `python3-grpc-tools`). The test uses `LIUTONG_PYTHON` when set, else the first of
//! `python3` on the PATH and `/usr/bin/python3` (where the Debian packages install) that
//! has both; with neither it fails and says what to install.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{TestNode, TwoMembers, two_members};
use serde_json::Value;

/// The interpreters tried, in order, when `LIUTONG_PYTHON` is not set.
const PYTHONS: &[&str] = &["python3", "/usr/bin/python3"];

/// The Python interpreter that has grpcio and grpc_tools.
fn python() -> String {
    let candidates: Vec<String> = match std::env::var("LIUTONG_PYTHON") {
        Ok(p) => vec![p],
        Err(_) => PYTHONS.iter().map(|p| p.to_string()).collect(),
    };
    let mut tried = Vec::new();
    for python in &candidates {
        match Command::new(python)
            .args(["-c", "import grpc, grpc_tools.protoc"])
            .output()
        {
            Ok(out) if out.status.success() => return python.clone(),
            Ok(out) => tried.push(format!(
                "{python}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => tried.push(format!("{python}: {e}")),
        }
    }
    panic!(
        "the standard gRPC client test needs Python 3 with grpcio and grpc_tools: install \
         the Debian packages python3-grpcio and python3-grpc-tools (or `pip install grpcio \
         grpcio-tools`), or set LIUTONG_PYTHON to an interpreter that has them. Tried:\n{}",
        tried.join("\n")
    );
}

/// A member's certificate and key files, as its node holds them.
struct ClientFiles {
    cert: PathBuf,
    key: PathBuf,
}

impl ClientFiles {
    fn of(node: &TestNode) -> Self {
        let dir = node.config.identity_dir();
        Self {
            cert: dir.join("node.crt"),
            key: dir.join("node.key"),
        }
    }
}

/// How the Python client is run.
struct Call<'a> {
    /// HOST:PORT of the node's peer API.
    target: String,
    /// The data-space CA file.
    ca: &'a Path,
    /// The certificate to present, if any.
    client: Option<ClientFiles>,
    /// A name to ask for instead of the host in `target`.
    authority: Option<&'a str>,
}

/// Runs the Python client; returns what it printed.
async fn run_client(call: Call<'_>) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/standard_client/client.py");
    let mut command = Command::new(python());
    command.arg(&script).arg("--target").arg(&call.target);
    command.arg("--ca").arg(call.ca);
    if let Some(files) = call.client {
        command.arg("--cert").arg(files.cert);
        command.arg("--key").arg(files.key);
    }
    if let Some(name) = call.authority {
        command.arg("--authority").arg(name);
    }
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("run the Python client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Python client failed ({}):\n{stderr}",
        out.status
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("the client printed no JSON ({e}):\n{stdout}\n{stderr}"))
}

/// The data-space CA file, as `node` holds it.
fn ca_file(node: &TestNode) -> PathBuf {
    node.config.identity_dir().join("ca.crt")
}

/// Asserts the client saw the provider serving and describing itself to the consumer.
#[track_caller]
fn assert_described(answer: &Value, provider: &TestNode, consumer: &TestNode) {
    assert_eq!(answer["health"]["status"], "SERVING", "{answer:#}");
    let describe = &answer["describe"];
    assert_eq!(
        describe["node"]["participant_id"],
        provider.participant.to_string(),
        "{answer:#}"
    );
    assert_eq!(
        describe["caller"]["participant_id"],
        consumer.participant.to_string(),
        "{answer:#}"
    );
}

async fn stop(members: TwoMembers) {
    members.provider.running.shutdown().await.unwrap();
    members.consumer.running.shutdown().await.unwrap();
}

/// The consumer asks the provider at `host` (and the provider's port), presenting its
/// own certificate.
fn as_consumer<'a>(members: &'a TwoMembers, ca: &'a Path, host: &str) -> Call<'a> {
    Call {
        target: format!("{host}:{}", members.provider.peer_addr().port()),
        ca,
        client: Some(ClientFiles::of(&members.consumer)),
        authority: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpcio_client_verifies_the_node_by_host_name() {
    let members = two_members().await;
    let ca = ca_file(&members.consumer);
    let answer = run_client(as_consumer(&members, &ca, "localhost")).await;
    assert_described(&answer, &members.provider, &members.consumer);
    stop(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpcio_client_verifies_the_node_by_ip_address() {
    let members = two_members().await;
    let ca = ca_file(&members.consumer);
    let answer = run_client(as_consumer(&members, &ca, "127.0.0.1")).await;
    assert_described(&answer, &members.provider, &members.consumer);
    stop(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpcio_client_refuses_a_name_the_node_certificate_lacks() {
    let members = two_members().await;
    let ca = ca_file(&members.consumer);
    // The right address, asked for by another name: the client's check of the name,
    // not the connection, is what refuses it.
    let call = Call {
        authority: Some("other.example"),
        ..as_consumer(&members, &ca, "127.0.0.1")
    };
    let answer = run_client(call).await;
    for call in ["health", "describe"] {
        let error = &answer[call]["error"];
        assert_eq!(error["code"], "UNAVAILABLE", "{call}: {answer:#}");
        let details = error["details"].as_str().unwrap_or("");
        assert!(
            details.contains("other.example is not in peer certificate"),
            "{call}: {answer:#}"
        );
    }
    stop(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpcio_client_without_a_certificate_is_refused() {
    let members = two_members().await;
    let ca = ca_file(&members.consumer);
    let call = Call {
        client: None,
        ..as_consumer(&members, &ca, "localhost")
    };
    let answer = run_client(call).await;
    // The TLS handshake succeeds (the server is verified by name), then the node
    // refuses the calls: the peer API, health included, is for members only.
    for call in ["health", "describe"] {
        let error = &answer[call]["error"];
        assert_eq!(error["code"], "UNAUTHENTICATED", "{call}: {answer:#}");
    }
    let details = answer["describe"]["error"]["details"]
        .as_str()
        .unwrap_or("");
    assert!(details.contains("no client certificate"), "{answer:#}");
    stop(members).await;
}
