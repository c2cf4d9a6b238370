//! Admission by request, as an operator and a member's IT staff do it with the `liutong`
//! binary: the member's node makes its keys and a request, the authority answers with a
//! bundle that holds no private key, and the node installs it. Every refusal says what
//! to do and writes nothing.

mod process;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use process::*;

struct Space {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    authority: PathBuf,
}

fn space(allow: &[&str]) -> Space {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_owned();
    let authority = root.join("authority");
    let mut args = vec![
        "authority",
        "init",
        "--dir",
        arg(&authority),
        "--name",
        "DS",
    ];
    args.extend_from_slice(allow);
    ok(liutong(&args));
    Space {
        _tmp: tmp,
        root,
        authority,
    }
}

fn ok(o: std::process::Output) -> String {
    assert!(o.status.success(), "{}", text(&o));
    text(&o)
}

fn refused(o: std::process::Output, expect: &str) -> String {
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains(expect), "expected {expect:?} in: {t}");
    t
}

fn request(node: &Path) -> PathBuf {
    node.join("identity/admission-request.json")
}

fn admit(
    s: &Space,
    participant: &str,
    request: &Path,
    out: &Path,
    extra: &[&str],
) -> std::process::Output {
    admit_request(&s.authority, participant, request, out, extra)
}

fn init(node: &Path, bundle: &Path) -> std::process::Output {
    liutong(&[
        "init",
        "--dir",
        arg(node),
        "--bundle",
        arg(bundle),
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--admin-listen",
        &format!("127.0.0.1:{}", free_port()),
    ])
}

fn authority_state(s: &Space) -> Vec<u8> {
    std::fs::read(s.authority.join("authority.json")).unwrap()
}

fn pem_certificate_der(path: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(path).unwrap();
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

#[test]
fn a_member_keeps_its_keys_and_gets_a_certificate_with_its_names() {
    let s = space(&[
        "--allow-dns",
        ".hz.gov.cn,localhost",
        "--allow-ip",
        "127.0.0.0/8",
    ]);
    let node = s.root.join("node");
    let out = ok(liutong(&[
        "join",
        "--dir",
        arg(&node),
        "--participant",
        TRANSPORT,
        "--dns",
        "Node.HZ.gov.cn,localhost",
        "--ip",
        "127.0.0.1",
    ]));
    assert!(out.contains("made new keys"), "{out}");
    for key in ["node.key", "signing.key"] {
        let mode = std::fs::metadata(node.join("identity").join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{key} is owner-only");
    }
    let request_text = std::fs::read_to_string(request(&node)).unwrap();
    assert!(!request_text.contains("PRIVATE KEY"));

    let bundle = s.root.join("bundle");
    let out = ok(admit(&s, TRANSPORT, &request(&node), &bundle, &[]));
    assert!(out.contains("no private key"), "{out}");
    assert!(out.contains("node.hz.gov.cn"), "{out}");
    assert_no_private_key(&bundle);
    let mut files: Vec<String> = std::fs::read_dir(&bundle)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["bundle.json", "ca.crt", "credential.json", "node.crt"]
    );

    // The certificate carries the identity URI and the names asked for (lower-cased).
    let der = pem_certificate_der(&bundle.join("node.crt"));
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    let names: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|n| format!("{n}"))
        .collect();
    let all = names.join(" ");
    for expected in [
        &format!("urn:uscc:{TRANSPORT}"),
        "node.hz.gov.cn",
        "localhost",
        "IPAddress(7f:00:00:01)",
    ] {
        assert!(all.contains(expected), "{expected} in {all}");
    }

    let key_before = std::fs::read(node.join("identity/node.key")).unwrap();
    ok(init(&node, &bundle));
    assert_eq!(
        std::fs::read(node.join("identity/node.key")).unwrap(),
        key_before,
        "init keeps the key the node made"
    );
    assert_eq!(
        std::fs::read(node.join("identity/node.crt")).unwrap(),
        std::fs::read(bundle.join("node.crt")).unwrap()
    );
}

#[test]
fn requests_the_authority_must_not_certify_are_refused_and_nothing_is_written() {
    let s = space(&[]);
    let node = s.root.join("node");
    ok(liutong(&[
        "join",
        "--dir",
        arg(&node),
        "--participant",
        TRANSPORT,
        "--dns",
        "data.example.cn",
        "--ip",
        "10.1.2.3",
    ]));
    let before = authority_state(&s);
    let bundle = s.root.join("bundle");

    // Names outside the rules (loopback only by default).
    let t = refused(
        admit(&s, TRANSPORT, &request(&node), &bundle, &[]),
        "names this authority does not certify: data.example.cn, 10.1.2.3",
    );
    assert!(t.contains("liutong authority names"), "{t}");

    // The request is another participant's.
    let t = refused(
        admit(&s, LOGISTICS, &request(&node), &bundle, &[]),
        &format!("made for participant {TRANSPORT}, not {LOGISTICS}"),
    );
    assert!(!t.contains("PRIVATE"), "{t}");

    // The request altered after the node signed it: a name added.
    let mut envelope: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(request(&node)).unwrap()).unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut payload: serde_json::Value =
        serde_json::from_slice(&b64.decode(envelope["payload"].as_str().unwrap()).unwrap())
            .unwrap();
    payload["dns_names"] = serde_json::json!([]);
    payload["ip_addresses"] = serde_json::json!([]);
    envelope["payload"] = b64.encode(serde_json::to_vec(&payload).unwrap()).into();
    let altered = s.root.join("altered.json");
    std::fs::write(&altered, envelope.to_string()).unwrap();
    refused(
        admit(&s, TRANSPORT, &altered, &bundle, &[]),
        "proof of possession fails",
    );

    // Not a request at all, and an oversized file.
    let garbage = s.root.join("garbage.json");
    std::fs::write(&garbage, "not json").unwrap();
    refused(
        admit(&s, TRANSPORT, &garbage, &bundle, &[]),
        "not a signed request file",
    );
    std::fs::write(&garbage, vec![b' '; 64 * 1024]).unwrap();
    refused(
        admit(&s, TRANSPORT, &garbage, &bundle, &[]),
        "larger than any admission request",
    );

    assert!(!bundle.exists(), "no bundle for a refused request");
    assert_eq!(
        authority_state(&s),
        before,
        "the authority's state is unchanged"
    );

    // The operator allows the domain: the same request is admitted.
    ok(liutong(&[
        "authority",
        "names",
        "--dir",
        arg(&s.authority),
        "--allow-dns",
        ".example.cn",
        "--allow-ip",
        "10.0.0.0/8",
    ]));
    ok(admit(&s, TRANSPORT, &request(&node), &bundle, &[]));
    assert_no_private_key(&bundle);
}

#[test]
fn a_bundle_that_does_not_fit_the_node_is_refused_and_nothing_is_written() {
    let s = space(&[]);
    let (node, other) = (s.root.join("node"), s.root.join("other"));
    ok(liutong(&[
        "join",
        "--dir",
        arg(&node),
        "--participant",
        TRANSPORT,
    ]));
    ok(liutong(&[
        "join",
        "--dir",
        arg(&other),
        "--participant",
        LOGISTICS,
    ]));
    let other_bundle = s.root.join("bundle-other");
    ok(admit(&s, LOGISTICS, &request(&other), &other_bundle, &[]));
    let listing = |dir: &Path| {
        let mut names: Vec<_> = std::fs::read_dir(dir.join("identity"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let before = listing(&node);

    // Another node's bundle: its certificate is for another TLS key.
    refused(init(&node, &other_bundle), "is for another TLS key");
    assert!(!node.join("node.toml").exists());
    assert_eq!(listing(&node), before, "nothing written");

    // A bundle whose certificate is this node's but whose credential names another key.
    let own_bundle = s.root.join("bundle-own");
    ok(admit(&s, TRANSPORT, &request(&node), &own_bundle, &[]));
    let mixed = s.root.join("bundle-mixed");
    std::fs::create_dir(&mixed).unwrap();
    for f in ["bundle.json", "ca.crt", "node.crt"] {
        std::fs::copy(own_bundle.join(f), mixed.join(f)).unwrap();
    }
    std::fs::copy(
        other_bundle.join("credential.json"),
        mixed.join("credential.json"),
    )
    .unwrap();
    refused(init(&node, &mixed), "its credential names the signing key");
    assert_eq!(listing(&node), before, "nothing written");

    // A bundle in the old form, carrying keys the authority made.
    let old = s.root.join("bundle-old");
    std::fs::create_dir(&old).unwrap();
    for f in ["bundle.json", "ca.crt", "node.crt", "credential.json"] {
        std::fs::copy(own_bundle.join(f), old.join(f)).unwrap();
    }
    std::fs::write(old.join("signing.key"), "-----BEGIN PRIVATE KEY-----\n").unwrap();
    refused(init(&node, &old), "it holds a private key (signing.key)");

    // No keys at all: the member has not joined.
    let fresh = s.root.join("fresh");
    refused(init(&fresh, &own_bundle), "holds no keys of its own yet");
    assert!(!fresh.exists() || !fresh.join("node.toml").exists());

    // Its own bundle installs.
    ok(init(&node, &own_bundle));
}

#[test]
fn a_renewal_replaces_the_tls_key_and_keeps_the_signing_key() {
    let s = space(&["--allow-dns", "localhost,.hz.gov.cn"]);
    let node = s.root.join("node");
    ok(liutong(&[
        "join",
        "--dir",
        arg(&node),
        "--participant",
        TRANSPORT,
        "--dns",
        "localhost",
    ]));
    let bundle = s.root.join("bundle");
    ok(admit(&s, TRANSPORT, &request(&node), &bundle, &[]));
    ok(init(&node, &bundle));
    let (key0, signing0, cert0) = (
        std::fs::read(node.join("identity/node.key")).unwrap(),
        std::fs::read(node.join("identity/signing.key")).unwrap(),
        std::fs::read(node.join("identity/node.crt")).unwrap(),
    );

    // A renewal request with a new name; the authority keeps the member's attributes.
    let out = ok(liutong(&[
        "join",
        "--renew",
        "--dir",
        arg(&node),
        "--dns",
        "localhost,new.hz.gov.cn",
    ]));
    assert!(out.contains("new.hz.gov.cn"), "{out}");
    assert!(node.join("identity/node.key.next").exists());
    let renewed = s.root.join("bundle-renewed");
    // Without --renew the member exists already.
    refused(
        admit(&s, TRANSPORT, &request(&node), &renewed, &[]),
        "already a member",
    );
    ok(liutong(&[
        "authority",
        "admit",
        "--dir",
        arg(&s.authority),
        "--request",
        arg(&request(&node)),
        "--participant",
        TRANSPORT,
        "--renew",
        "--out",
        arg(&renewed),
    ]));
    assert_no_private_key(&renewed);
    let members: serde_json::Value = serde_json::from_slice(
        &liutong(&["authority", "members", "--dir", arg(&s.authority), "--json"]).stdout,
    )
    .unwrap();
    assert_eq!(members["members"][0]["name"], "Hangzhou Transport Bureau");

    ok(init(&node, &renewed));
    let identity = node.join("identity");
    assert!(!identity.join("node.key.next").exists());
    assert_ne!(std::fs::read(identity.join("node.key")).unwrap(), key0);
    assert_ne!(std::fs::read(identity.join("node.crt")).unwrap(), cert0);
    assert_eq!(
        std::fs::read(identity.join("signing.key")).unwrap(),
        signing0
    );
    let der = pem_certificate_der(&identity.join("node.crt"));
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let san = format!(
        "{:?}",
        cert.subject_alternative_name().unwrap().unwrap().value
    );
    assert!(san.contains("new.hz.gov.cn"), "{san}");
    // The installed key is the one the installed certificate certifies.
    let public_of = |args: &[&str]| {
        let o = std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        o.stdout
    };
    assert_eq!(
        public_of(&[
            "x509",
            "-noout",
            "-pubkey",
            "-in",
            arg(&identity.join("node.crt"))
        ]),
        public_of(&["pkey", "-pubout", "-in", arg(&identity.join("node.key"))]),
    );
}
