//! Setting a node up: `liutong init` from an admission bundle, and the zero-configuration
//! development set-up that `liutong serve` makes on first start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::authority::{Admission, Authority, AuthorityError, DEFAULT_MEMBERSHIP_DAYS};
use crate::base::clock;
use crate::base::files;
use crate::config::{
    self, AuthoritySection, Development, GuardrailsSection, Limits, NodeConfig, NodeSection,
};
use crate::identity::bundle::{BundleManifest, files as bundle_files};
use crate::identity::{MemberRole, ParticipantId, ParticipantKind, RegionCode};
use crate::local;

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
    if config_path.exists() && !opts.force {
        return Err(SetupError::Exists(config_path));
    }
    let bundle_err = |reason: String| SetupError::Bundle {
        path: opts.bundle.clone(),
        reason,
    };
    for f in bundle_files::ALL {
        if !opts.bundle.join(f).is_file() {
            return Err(bundle_err(format!("{f} is missing")));
        }
    }
    let manifest: BundleManifest = serde_json::from_slice(
        &std::fs::read(opts.bundle.join(bundle_files::MANIFEST))
            .map_err(|e| bundle_err(e.to_string()))?,
    )
    .map_err(|e| bundle_err(format!("{}: {e}", bundle_files::MANIFEST)))?;

    files::create_private_dir(&opts.dir).map_err(|source| SetupError::DataDir {
        path: opts.dir.clone(),
        source,
    })?;
    let identity = opts.dir.join(crate::config::IDENTITY_DIR);
    files::create_private_dir(&identity).map_err(|source| SetupError::DataDir {
        path: identity.clone(),
        source,
    })?;
    for f in bundle_files::ALL {
        let bytes = std::fs::read(opts.bundle.join(f)).map_err(|e| bundle_err(e.to_string()))?;
        let to = identity.join(f);
        // Everything in the node's directory is owner-only, certificates included.
        files::write_private(&to, &bytes)
            .map_err(|source| SetupError::Write { path: to, source })?;
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
        dsp: None,
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
    let now = clock::now_utc();
    let bundle = authority.admit(Admission {
        participant: ParticipantId::parse(DEV_PARTICIPANT).expect("constant is a valid USCC"),
        name: "Development node".into(),
        kind: ParticipantKind::Government,
        sector: "development".into(),
        region: RegionCode::parse("330100").expect("constant is a valid region"),
        // The one member of its development authority, there to try every part of the
        // node on its own (publish, ask itself for a contract, read its own log over the
        // peer API): every role, and no other member to use them on.
        roles: vec![
            MemberRole::Provider,
            MemberRole::Consumer,
            MemberRole::Auditor,
        ],
        not_before: now - time::Duration::minutes(5),
        not_after: now + time::Duration::days(DEFAULT_MEMBERSHIP_DAYS),
        renew: true,
    })?;
    let bundle_dir = root.join("dev-bundle");
    if bundle_dir.exists() {
        std::fs::remove_dir_all(&bundle_dir).map_err(|source| SetupError::Write {
            path: bundle_dir.clone(),
            source,
        })?;
    }
    bundle.write(&bundle_dir)?;
    let config_path = init_node(&InitOptions {
        dir: root.join("node"),
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
    // The node has its own copy; the bundle held private keys.
    let _ = std::fs::remove_dir_all(&bundle_dir);
    Ok((config_path, true))
}
