//! Setting a node up: `liutong join` makes the node's keys and its admission request,
//! `liutong init` installs the authority's admission bundle beside those keys, and the
//! zero-configuration development set-up that `liutong serve` makes on first start goes
//! through the same two steps. The node's private keys are made here and never leave
//! its directory.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::authority::{Admission, Authority, AuthorityError, DEFAULT_MEMBERSHIP_DAYS};
use crate::base::clock;
use crate::base::files;
use crate::config::{
    self, AuthoritySection, Development, GuardrailsSection, Limits, NodeConfig, NodeSection,
};
use crate::config::{DspSection, HsmSection};
use crate::identity::bundle::{BundleManifest, files as bundle_files};
use crate::identity::membership::{MEMBERSHIP_PAYLOAD_TYPE, Membership};
use crate::identity::request::{self, AdmissionRequest, HostName};
use crate::identity::{
    Envelope, MemberRole, ParticipantId, ParticipantKind, PublicKey, RegionCode, SigningKey,
};
use crate::local;
use crate::tls::certs::{self, HostNames};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    #[error(
        "cannot create the data directory {path}: {source}; choose a writable place with \
         --dir or the LIUTONG_DATA environment variable"
    )]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} already exists; pass --force to overwrite it (the node's keys are replaced)")]
    Exists(PathBuf),
    #[error("the admission bundle {path} is incomplete or unreadable: {reason}")]
    Bundle { path: PathBuf, reason: String },
    #[error("the admission bundle {path} does not fit this node: {reason}")]
    Mismatch { path: PathBuf, reason: String },
    #[error(
        "{0} holds no keys of its own yet; run `liutong join --dir {0} --participant ID` \
         first, send the request it writes to the authority, then install the bundle you \
         get back"
    )]
    NoKeys(PathBuf),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Key(#[from] crate::identity::KeyError),
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    #[error(transparent)]
    Cert(#[from] crate::tls::certs::CertError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Options of `liutong join`.
pub struct JoinOptions {
    /// The node's directory; its keys go into `identity/` there.
    pub dir: PathBuf,
    pub participant: ParticipantId,
    /// Host names the node asks to be named by in its certificate.
    pub dns: Vec<String>,
    /// Addresses the node asks to be named by in its certificate.
    pub ips: Vec<IpAddr>,
    /// The signing key is this key in a PKCS#11 token instead of a new key file;
    /// recorded in `identity/hsm.toml` for `liutong init` to put in `node.toml`.
    pub hsm: Option<HsmSection>,
}

/// Where `join` records the token that holds the signing key, until `init` writes it
/// into `node.toml` as `[hsm]`.
pub const JOIN_HSM_FILE: &str = "hsm.toml";

/// What `join` made.
pub struct Joined {
    /// The admission request to send to the authority (not secret).
    pub request_path: PathBuf,
    pub request: AdmissionRequest,
    /// Whether the node's keys were made now (false: an earlier `join` made them).
    pub new_keys: bool,
}

/// Makes the node's TLS key and signing key in `dir/identity/` (owner-only), unless an
/// earlier `join` made them, and writes the signed admission request beside them.
/// A node that is already set up (has `node.toml`) renews instead: see [`renew`].
pub fn join(opts: &JoinOptions) -> Result<Joined, SetupError> {
    if opts.dir.join("node.toml").exists() {
        return Err(SetupError::Invalid(format!(
            "{} is already a member's node; to renew its certificate or replace its TLS key \
             run `liutong join --renew --dir {}`",
            opts.dir.display(),
            opts.dir.display()
        )));
    }
    let (dns, ips) = host_names(&opts.dns, &opts.ips)?;
    // A token key is opened (and the PIN checked) before anything is written.
    let token_key = match &opts.hsm {
        Some(hsm) => Some(open_token_key(hsm, &opts.dir)?),
        None => None,
    };
    let identity = make_identity_dir(&opts.dir)?;
    let key_path = identity.join(bundle_files::KEY);
    let signing_path = identity.join(bundle_files::SIGNING_KEY);
    let new_keys = !(key_path.exists() && (signing_path.exists() || token_key.is_some()));
    let names = HostNames {
        dns: dns.iter().map(ToString::to_string).collect(),
        ips: ips.clone(),
    };
    let common_name = format!("Liutong node {}", opts.participant);
    let san = opts.participant.san_uri();
    let signing = match token_key {
        Some(key) => key,
        None if new_keys => {
            let key = SigningKey::generate()?;
            key.save(&signing_path)?;
            key
        }
        None => SigningKey::load(&signing_path)?,
    };
    let csr_pem = if new_keys {
        let tls = certs::tls_key_request(&common_name, &san, &names)?;
        write_private(&key_path, tls.key_pem.as_bytes())?;
        tls.csr_pem
    } else {
        certs::csr_for_key(
            &certs::read_private_text(&key_path)?,
            &common_name,
            &san,
            &names,
        )?
    };
    if let Some(hsm) = opts.hsm.as_ref().filter(|_| new_keys) {
        let text = toml::to_string(hsm).map_err(|e| SetupError::Invalid(e.to_string()))?;
        write_private(&identity.join(JOIN_HSM_FILE), text.as_bytes())?;
    }
    let request = AdmissionRequest {
        participant_id: opts.participant.clone(),
        csr_pem,
        signing_key: signing.public_key(),
        dns_names: dns,
        ip_addresses: ips,
        created_at: clock::now(),
    };
    write_request(&identity, request, &signing, new_keys)
}

/// Signs `request` and writes it as `identity/admission-request.json` (not secret).
fn write_request(
    identity: &Path,
    request: AdmissionRequest,
    signing: &SigningKey,
    new_keys: bool,
) -> Result<Joined, SetupError> {
    let request_path = identity.join(bundle_files::REQUEST);
    write_public(&request_path, request.sign(signing)?.to_json().as_bytes())?;
    Ok(Joined {
        request_path,
        request,
        new_keys,
    })
}

/// Options of `liutong join --renew`.
pub struct RenewOptions {
    pub dir: PathBuf,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

/// Prepares a set-up node's renewal: a new TLS key beside the current one
/// (`identity/node.key.next`, reused if an earlier renewal made it) and an admission
/// request for it, signed with the node's current signing key. The node keeps serving
/// with its current certificate until the new bundle is installed with `liutong init`.
pub fn renew(opts: &RenewOptions) -> Result<Joined, SetupError> {
    let config = NodeConfig::load(&opts.dir.join("node.toml"))
        .map_err(|e| SetupError::Invalid(e.to_string()))?;
    let identity = config.identity_dir();
    let (dns, ips) = host_names(&opts.dns, &opts.ips)?;
    let names = HostNames {
        dns: dns.iter().map(ToString::to_string).collect(),
        ips: ips.clone(),
    };
    let participant = config.node.participant.clone();
    let common_name = format!("Liutong node {participant}");
    let san = participant.san_uri();
    let next = identity.join(bundle_files::NEXT_KEY);
    let csr_pem = if next.exists() {
        certs::csr_for_key(
            &certs::read_private_text(&next)?,
            &common_name,
            &san,
            &names,
        )?
    } else {
        let tls = certs::tls_key_request(&common_name, &san, &names)?;
        write_private(&next, tls.key_pem.as_bytes())?;
        tls.csr_pem
    };
    let signing = config.load_signing_key()?;
    let request = AdmissionRequest {
        participant_id: participant,
        csr_pem,
        signing_key: signing.public_key(),
        dns_names: dns,
        ip_addresses: ips,
        created_at: clock::now(),
    };
    write_request(&identity, request, &signing, true)
}

fn open_token_key(hsm: &HsmSection, base_dir: &Path) -> Result<SigningKey, SetupError> {
    hsm.check().map_err(SetupError::Invalid)?;
    let spec = hsm.token_spec(base_dir).map_err(SetupError::Invalid)?;
    Ok(SigningKey::open_token(&spec, &hsm.signing_key)?)
}

/// The token `join` recorded for this node's signing key, if it recorded one.
fn joined_hsm(identity: &Path) -> Result<Option<HsmSection>, SetupError> {
    let path = identity.join(JOIN_HSM_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text)
            .map(Some)
            .map_err(|e| SetupError::Invalid(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SetupError::Write { path, source }),
    }
}

fn host_names(dns: &[String], ips: &[IpAddr]) -> Result<(Vec<HostName>, Vec<IpAddr>), SetupError> {
    let dns = dns
        .iter()
        .map(|d| HostName::parse(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(SetupError::Invalid)?;
    request::check_name_counts(&dns, ips).map_err(SetupError::Invalid)?;
    Ok((dns, ips.to_vec()))
}

fn make_identity_dir(dir: &Path) -> Result<PathBuf, SetupError> {
    files::create_private_dir(dir).map_err(|source| SetupError::DataDir {
        path: dir.to_owned(),
        source,
    })?;
    let identity = dir.join(crate::config::IDENTITY_DIR);
    files::create_private_dir(&identity).map_err(|source| SetupError::DataDir {
        path: identity.clone(),
        source,
    })?;
    Ok(identity)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SetupError> {
    files::write_private(path, bytes).map_err(|source| SetupError::Write {
        path: path.to_owned(),
        source,
    })
}

fn write_public(path: &Path, bytes: &[u8]) -> Result<(), SetupError> {
    files::write_public(path, bytes).map_err(|source| SetupError::Write {
        path: path.to_owned(),
        source,
    })
}

/// A bundle read and checked against the keys in a node's `identity/` directory.
struct CheckedBundle {
    manifest: BundleManifest,
    /// The bundle's files, by name.
    files: Vec<(&'static str, Vec<u8>)>,
}

/// Reads the bundle in `dir` and checks it against the node's keys: the certificate must
/// certify `tls_key`, the credential (signed by the authority the manifest names) must
/// name the node's signing key, that certificate and the manifest's participant.
fn check_bundle(
    dir: &Path,
    tls_key: &Path,
    signing: (PublicKey, &str),
) -> Result<CheckedBundle, SetupError> {
    let bundle_err = |reason: String| SetupError::Bundle {
        path: dir.to_owned(),
        reason,
    };
    let mismatch = |reason: String| SetupError::Mismatch {
        path: dir.to_owned(),
        reason,
    };
    for f in [bundle_files::KEY, bundle_files::SIGNING_KEY] {
        if dir.join(f).exists() {
            return Err(bundle_err(format!(
                "it holds a private key ({f}): the authority made this member's keys, so its \
                 signatures would prove nothing about the member; make the keys on the node \
                 with `liutong join` and ask for admission with the request it writes"
            )));
        }
    }
    let mut read = Vec::new();
    for f in bundle_files::ALL {
        let path = dir.join(f);
        let bytes = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => bundle_err(format!("{f} is missing")),
            _ => bundle_err(format!("{f}: {e}")),
        })?;
        read.push((f, bytes));
    }
    let file = |name: &str| &read.iter().find(|(f, _)| *f == name).expect("read above").1;
    let manifest: BundleManifest = serde_json::from_slice(file(bundle_files::MANIFEST))
        .map_err(|e| bundle_err(format!("{}: {e}", bundle_files::MANIFEST)))?;
    let credential: Envelope = serde_json::from_slice(file(bundle_files::CREDENTIAL))
        .map_err(|e| bundle_err(format!("{}: {e}", bundle_files::CREDENTIAL)))?;
    let membership: Membership = credential
        .open_json(MEMBERSHIP_PAYLOAD_TYPE, &manifest.authority_key)
        .map_err(|e| {
            bundle_err(format!(
                "{} is not signed by the authority the manifest names: {e}",
                bundle_files::CREDENTIAL
            ))
        })?;
    let cert_pem = String::from_utf8_lossy(file(bundle_files::CERT)).into_owned();
    let cert_der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| bundle_err(format!("{} holds no certificate", bundle_files::CERT)))?;
    let key_pem = certs::read_private_text(tls_key)?;
    if !certs::key_matches_certificate(&key_pem, &cert_der).map_err(bundle_err)? {
        return Err(mismatch(format!(
            "its certificate is for another TLS key than {}; it was issued for another \
             node's request",
            tls_key.display()
        )));
    }
    let (signing, where_) = signing;
    if membership.signing_key != signing {
        return Err(mismatch(format!(
            "its credential names the signing key {}, but this node's key ({where_}) is \
             {signing}",
            membership.signing_key,
        )));
    }
    if membership.participant_id != manifest.participant_id {
        return Err(mismatch(format!(
            "its credential is for {}, its manifest for {}",
            membership.participant_id, manifest.participant_id
        )));
    }
    if membership.certificate_sha256 != certs::fingerprint(&cert_der) {
        return Err(mismatch(
            "its credential names another certificate than the one it holds".into(),
        ));
    }
    Ok(CheckedBundle {
        manifest,
        files: read,
    })
}

/// Options of `liutong init`.
pub struct InitOptions {
    pub dir: PathBuf,
    pub bundle: PathBuf,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub authority: String,
    pub force: bool,
    /// Regions where recipients of important data may be.
    pub important_regions: Vec<RegionCode>,
    pub development: Option<Development>,
}

/// Creates a node directory from an admission bundle and writes a commented
/// `node.toml`. Returns the path of `node.toml`.
pub fn init_node(opts: &InitOptions) -> Result<PathBuf, SetupError> {
    let config_path = opts.dir.join("node.toml");
    let identity = opts.dir.join(crate::config::IDENTITY_DIR);
    if is_pending_renewal(&opts.dir) && !opts.force {
        install_renewal(&config_path, &opts.bundle)?;
        return Ok(config_path);
    }
    if config_path.exists() && !opts.force {
        return Err(SetupError::Exists(config_path));
    }
    let (key, signing) = (
        identity.join(bundle_files::KEY),
        identity.join(bundle_files::SIGNING_KEY),
    );
    let hsm = joined_hsm(&identity)?;
    if !key.exists() || !(signing.exists() || hsm.is_some()) {
        return Err(SetupError::NoKeys(opts.dir.clone()));
    }
    let signing_public = match &hsm {
        Some(hsm) => (
            open_token_key(hsm, &opts.dir)?.public_key(),
            format!("key {:?} in token {:?}", hsm.signing_key, hsm.token),
        ),
        None => (
            SigningKey::load(&signing)?.public_key(),
            signing.display().to_string(),
        ),
    };
    let bundle = check_bundle(&opts.bundle, &key, (signing_public.0, &signing_public.1))?;
    let manifest = bundle.manifest.clone();
    for (f, bytes) in &bundle.files {
        let to = identity.join(f);
        // Everything in the node's directory is owner-only, certificates included.
        write_private(&to, bytes)?;
    }
    local::create_local_pki(&opts.dir.join(crate::config::LOCAL_DIR))?;

    let config = NodeConfig {
        node: NodeSection {
            participant: manifest.participant_id,
            listen: opts.listen,
            admin_listen: opts.admin_listen,
            data_dir: PathBuf::from("."),
            health_listen: None,
        },
        authority: AuthoritySection {
            address: opts.authority.clone(),
            name: manifest.authority_name,
            public_key: manifest.authority_key,
            refresh_interval: Duration::from_secs(60),
        },
        limits: Limits::default(),
        guardrails: GuardrailsSection {
            important_regions: opts.important_regions.clone(),
        },
        audit: Default::default(),
        usage: Default::default(),
        recovery: Default::default(),
        telemetry: Default::default(),
        alerts: Default::default(),
        storage: Default::default(),
        hsm,
        dsp: None,
        console: None,
        development: opts.development.clone(),
        base_dir: opts.dir.clone(),
    };
    files::write_private(&config_path, config.to_commented_toml().as_bytes()).map_err(
        |source| SetupError::Write {
            path: config_path.clone(),
            source,
        },
    )?;
    // The local CA writes its certificates world-readable; in a node they are not.
    files::make_owner_only(&opts.dir).map_err(|source| SetupError::Write {
        path: opts.dir.clone(),
        source,
    })?;
    Ok(config_path)
}

/// Whether `dir` is a set-up node waiting for the bundle of its renewal request.
pub fn is_pending_renewal(dir: &Path) -> bool {
    dir.join("node.toml").exists()
        && dir
            .join(crate::config::IDENTITY_DIR)
            .join(bundle_files::NEXT_KEY)
            .exists()
}

/// Installs the bundle answering a renewal request (`liutong join --renew`) in a stopped
/// node: the certificate and credential from the bundle, and the new TLS key in place of
/// the old. The bundle's files are written first and the key renamed last; if that is cut
/// short, running the same `liutong init` again finishes it.
fn install_renewal(config_path: &Path, bundle_dir: &Path) -> Result<(), SetupError> {
    let config = NodeConfig::load(config_path).map_err(|e| SetupError::Invalid(e.to_string()))?;
    crate::backup::ensure_stopped(&config.data_dir())
        .map_err(|e| SetupError::Invalid(e.to_string()))?;
    let identity = config.identity_dir();
    let next = identity.join(bundle_files::NEXT_KEY);
    let signing = config.load_signing_key()?.public_key();
    let bundle = check_bundle(bundle_dir, &next, (signing, "the key it signs with"))?;
    if bundle.manifest.participant_id != config.node.participant {
        return Err(SetupError::Mismatch {
            path: bundle_dir.to_owned(),
            reason: format!(
                "it admits {}, but this node is {}",
                bundle.manifest.participant_id, config.node.participant
            ),
        });
    }
    for (f, bytes) in &bundle.files {
        write_private(&identity.join(f), bytes)?;
    }
    let key = identity.join(bundle_files::KEY);
    files::rename(&next, &key).map_err(|source| SetupError::Write { path: key, source })?;
    Ok(())
}

/// The participant ID of the development node (a made-up, well-formed USCC).
pub const DEV_PARTICIPANT: &str = "91330100MA2DEP0010";
/// Name of the development authority; it says what it is wherever it appears.
pub const DEV_AUTHORITY_NAME: &str = "Liutong DEVELOPMENT authority (not for production)";

/// The data root of the zero-configuration node: `$LIUTONG_DATA` or `./liutong-data`.
pub fn default_data_root() -> PathBuf {
    std::env::var_os("LIUTONG_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("liutong-data"))
}

/// The `node.toml` of the zero-configuration node under `root`.
pub fn dev_config_path(root: &Path) -> PathBuf {
    root.join("node").join("node.toml")
}

/// Makes the development set-up under `root` if it is not there yet: a development
/// authority, one admitted participant, and a node directory. Returns the config path
/// and whether it was created now.
pub fn ensure_dev_setup(root: &Path) -> Result<(PathBuf, bool), SetupError> {
    let config_path = dev_config_path(root);
    if config_path.exists() {
        return Ok((config_path, false));
    }
    files::create_private_dir(root).map_err(|source| SetupError::DataDir {
        path: root.to_owned(),
        source,
    })?;
    let authority_dir = root.join("dev-authority");
    // An earlier first start may have stopped half-way: reuse what it made.
    let mut authority = match Authority::open(&authority_dir) {
        Ok(a) => a,
        Err(AuthorityError::Missing(_)) => Authority::init(&authority_dir, DEV_AUTHORITY_NAME)?,
        Err(e) => return Err(e.into()),
    };
    let node_dir = root.join("node");
    let participant = ParticipantId::parse(DEV_PARTICIPANT).expect("constant is a valid USCC");
    // The same two steps as for any member: the node makes its keys and asks, the
    // authority answers with a bundle that holds no key.
    let joined = join(&JoinOptions {
        dir: node_dir.clone(),
        participant: participant.clone(),
        dns: vec!["localhost".into()],
        ips: vec![
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
        ],
        hsm: None,
    })?;
    let now = clock::now_utc();
    let bundle = authority.admit(
        Admission {
            participant,
            name: "Development node".into(),
            kind: ParticipantKind::Government,
            sector: "development".into(),
            region: RegionCode::parse("330100").expect("constant is a valid region"),
            // The one member of its development authority, there to try every part of the
            // node on its own (publish, ask itself for a contract, read its own log over
            // the peer API): every role, and no other member to use them on.
            roles: vec![
                MemberRole::Provider,
                MemberRole::Consumer,
                MemberRole::Auditor,
            ],
            not_before: now - time::Duration::minutes(5),
            not_after: now + time::Duration::days(DEFAULT_MEMBERSHIP_DAYS),
            renew: true,
        },
        &joined.request,
    )?;
    let bundle_dir = root.join("dev-bundle");
    if bundle_dir.exists() {
        std::fs::remove_dir_all(&bundle_dir).map_err(|source| SetupError::Write {
            path: bundle_dir.clone(),
            source,
        })?;
    }
    bundle.write(&bundle_dir)?;
    let config_path = init_node(&InitOptions {
        dir: node_dir,
        bundle: bundle_dir.clone(),
        listen: config::DEFAULT_LISTEN.parse().expect("constant address"),
        admin_listen: config::DEFAULT_ADMIN_LISTEN
            .parse()
            .expect("constant address"),
        authority: config::DEFAULT_AUTHORITY.into(),
        force: true,
        important_regions: vec![RegionCode::parse("330000").expect("constant region")],
        development: Some(Development {
            authority_dir: PathBuf::from("../dev-authority"),
        }),
    })?;
    // The node has its own copy.
    let _ = std::fs::remove_dir_all(&bundle_dir);
    // The development node speaks the Dataspace Protocol too, by the name its
    // certificate carries.
    let mut config =
        NodeConfig::load(&config_path).map_err(|e| SetupError::Invalid(e.to_string()))?;
    let listen: SocketAddr = config::DEV_DSP_LISTEN.parse().expect("constant address");
    config.dsp = Some(DspSection {
        url: Some(format!("https://localhost:{}", listen.port())),
        ..DspSection::on(listen)
    });
    // And serves its web console on loopback.
    config.console = Some(config::ConsoleSection::default());
    write_private(&config_path, config.to_commented_toml().as_bytes())?;
    Ok((config_path, true))
}
