//! Private key files in formats ordinary tools read: every key a data space writes
//! (authority, member bundle, node, local API certificates, a rotated signing key) is
//! PKCS#8 v1 PEM that `openssl pkey` reads and whose public key is the one the node's
//! credential names; a signing key in ring's PKCS#8 v2 layout, as earlier versions wrote
//! it, still loads and signs; a damaged or shared key file is refused with a message.
//! Needs `openssl` on the PATH.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{DataSpace, TRANSPORT, TestNode};
use liutong_node::identity::PublicKey;
use liutong_node::identity::keys::{pem_decode, pem_encode};
use liutong_node::runtime::RunningNode;
use tokio::net::TcpListener;

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl (install the openssl package)")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every file under `dir` named `*.key` or `*.key.next`.
fn key_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                todo.push(path);
            } else if name.ends_with(".key") || name.ends_with(".key.next") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The public key `openssl pkey -pubout` gives for an Ed25519 key file.
fn openssl_public_key(path: &Path) -> PublicKey {
    let out = openssl(&[
        "pkey",
        "-in",
        path.to_str().unwrap(),
        "-pubout",
        "-outform",
        "DER",
    ]);
    assert!(out.status.success(), "{}: {}", path.display(), stderr(&out));
    // SubjectPublicKeyInfo for Ed25519: a 12-byte header, then the 32-byte key.
    assert_eq!(out.stdout.len(), 44, "{}", path.display());
    PublicKey::from_slice(&out.stdout[12..]).unwrap()
}

fn der_of(path: &Path) -> Vec<u8> {
    pem_decode(&std::fs::read_to_string(path).unwrap(), "PRIVATE KEY").unwrap()
}

/// A PKCS#8 v1 Ed25519 key file is the RFC 8410 layout: 48 bytes, version 0.
fn assert_v1_ed25519(path: &Path) {
    let der = der_of(path);
    assert_eq!(der.len(), 48, "{}", path.display());
    assert_eq!(der[4], 0, "{} is PKCS#8 v1", path.display());
}

async fn one_node(space: &DataSpace) -> TestNode {
    space
        .node(TRANSPORT, "transport", Duration::from_secs(3600))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_reads_every_key_file_and_finds_the_credentials_keys() {
    let space = DataSpace::start().await;
    let node = one_node(&space).await;

    let files = key_files(space.dir.path());
    let names: Vec<String> = files
        .iter()
        .map(|p| {
            p.strip_prefix(space.dir.path())
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    // The authority's CA, signing and server keys, the member node's
    // TLS and signing keys, the node's local API keys.
    for expected in [
        "authority/ca.key",
        "authority/signing.key",
        "authority/server.key",
        "node-transport/identity/node.key",
        "node-transport/identity/signing.key",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    assert!(
        names
            .iter()
            .any(|n| n.contains("local/") && n.ends_with("admin.key")),
        "{names:?}"
    );
    for file in &files {
        let out = openssl(&["pkey", "-in", file.to_str().unwrap(), "-noout"]);
        assert!(out.status.success(), "{}: {}", file.display(), stderr(&out));
        let text = std::fs::read_to_string(file).unwrap();
        assert!(
            text.starts_with("-----BEGIN PRIVATE KEY-----\n"),
            "{}: {text}",
            file.display()
        );
        if file.file_name().unwrap() == "signing.key" {
            assert_v1_ed25519(file);
        }
    }

    // The node's signing key is the one its credential names, and the authority's the
    // one the node pins.
    let identity = &node.running.node.identity;
    assert_eq!(
        identity.membership.signing_key,
        identity.signing_key.public_key()
    );
    assert_eq!(
        openssl_public_key(&node.config.identity_dir().join("signing.key")),
        identity.membership.signing_key
    );
    assert_eq!(
        openssl_public_key(&space.authority_dir.join("signing.key")),
        node.config.authority.public_key
    );
    node.running.shutdown().await.unwrap();
}

/// The key in ring's PKCS#8 v2 layout, as earlier versions wrote it: v1's fields with
/// version 1 and the public key after the seed in a `[1]` tag.
fn ring_v2(seed: &[u8], public: &PublicKey) -> Vec<u8> {
    let mut der = vec![
        0x30, 0x53, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(seed);
    der.extend_from_slice(&[0xa1, 0x23, 0x03, 0x21, 0x00]);
    der.extend_from_slice(&public.0);
    der
}

/// Starts the stopped node's configuration on fresh loopback ports; the database of the
/// node stopped before may take a moment to be released, so a failure that does not
/// name `expect` is retried until a deadline.
async fn start_on_fresh_ports(
    config: &liutong_node::config::NodeConfig,
    expect: Option<&str>,
) -> Result<RunningNode, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut config = config.clone();
        config.node.listen = peer.local_addr().unwrap();
        config.node.admin_listen = admin.local_addr().unwrap();
        match RunningNode::start_with_listeners(config, peer, admin).await {
            Ok(running) => return Ok(running),
            Err(e) => {
                let msg = e.to_string();
                let wanted = expect.is_some_and(|x| msg.contains(x));
                if wanted || tokio::time::Instant::now() >= deadline {
                    return Err(msg);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_v2_key_still_signs_and_rotation_writes_v1() {
    let space = DataSpace::start().await;
    let node = one_node(&space).await;
    let config = node.config.clone();
    let public = node.running.node.identity.signing_key.public_key();
    node.running.shutdown().await.unwrap();

    // The node's key rewritten as earlier versions wrote it; ring accepts the layout.
    let path = config.identity_dir().join("signing.key");
    let v2 = ring_v2(&der_of(&path)[16..48], &public);
    assert!(ring::signature::Ed25519KeyPair::from_pkcs8(&v2).is_ok());
    let old_text = pem_encode("PRIVATE KEY", &v2);
    std::fs::write(&path, &old_text).unwrap();

    // The node starts on it and signs a checkpoint with it; the file stays as it was.
    let running = start_on_fresh_ports(&config, None)
        .await
        .expect("the node starts on its v2 key");
    assert_eq!(running.node.identity.signing_key.public_key(), public);
    let signature = running
        .node
        .identity
        .signing_key
        .sign(b"checkpoint")
        .unwrap();
    assert!(public.verify(b"checkpoint", &signature));
    running.shutdown().await.unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), old_text);

    // The next key, prepared by a rotation, is v1 and openssl reads it.
    let (next, created) = liutong_node::rotation::prepare(&config.identity_dir()).unwrap();
    assert!(created);
    let next_path = config.identity_dir().join(liutong_node::rotation::NEXT_KEY);
    assert_v1_ed25519(&next_path);
    assert_eq!(openssl_public_key(&next_path), next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_shared_signing_key_is_refused_with_what_to_do() {
    let space = DataSpace::start().await;
    let node = one_node(&space).await;
    let config = node.config.clone();
    node.running.shutdown().await.unwrap();
    let path = config.identity_dir().join("signing.key");
    let good = std::fs::read(&path).unwrap();
    let shown = path.display().to_string();

    std::fs::write(&path, b"this is not a key\n").unwrap();
    let msg = start_on_fresh_ports(&config, Some(&shown))
        .await
        .err()
        .expect("a garbage key file is refused");
    assert!(msg.contains(&shown), "{msg}");
    assert!(msg.contains("PKCS#8 PEM"), "{msg}");
    assert!(msg.contains("restore it from a backup"), "{msg}");
    assert_eq!(std::fs::read(&path).unwrap(), b"this is not a key\n");

    std::fs::write(&path, &good).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let msg = start_on_fresh_ports(&config, Some(&shown))
        .await
        .err()
        .expect("a key file others can read is refused");
    assert!(msg.contains(&shown), "{msg}");
    assert!(msg.contains("chmod 600"), "{msg}");
    assert_eq!(std::fs::read(&path).unwrap(), good);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "the refusal changes nothing");
}
