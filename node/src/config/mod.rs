//! `node.toml`: the node's configuration, written (with comments) by `liutong init`.
//!
//! Every field is typed (participant IDs, socket addresses, durations, keys), so a bad
//! value is refused while parsing, with the key and line named by the TOML parser.
//! Unknown keys are refused too, so a misspelt key never silently falls back to a default.
//!
//! - this file: the file as a whole ([`NodeConfig`]), reading it, and the directories
//!   it names;
//! - `sections`: the sections other than `[alerts]`, with their defaults;
//! - `alerts`: the security alert rules (`[alerts]`);
//! - `commented`: writing the file with a comment on every setting.

mod alerts;
mod commented;
mod sections;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::hsm::HsmError;
use crate::identity::bundle::files as bundle_files;
use crate::identity::{KeyError, SigningKey};

pub use alerts::{AlertsSection, ExpiryRule, SwitchRule, VolumeRule, WindowRule};
pub use sections::{
    AuditSection, AuthoritySection, ConsoleSection, Development, DspSection, GuardrailsSection,
    HsmSection, Limits, NodeSection, RecoverySection, StorageEngine, StorageSection,
    TelemetrySection, UsageSection,
};

/// Default address of the peer API.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7700";
/// Default address of the local administration API.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:7701";
/// Default address of the authority's trust-list service.
pub const DEFAULT_AUTHORITY: &str = "127.0.0.1:7800";
/// Address of the development node's Dataspace Protocol listener.
pub const DEV_DSP_LISTEN: &str = "127.0.0.1:7703";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read the configuration {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the configuration {path} is not valid:\n{message}")]
    Parse { path: PathBuf, message: String },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub node: NodeSection,
    pub authority: AuthoritySection,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub guardrails: GuardrailsSection,
    pub audit: AuditSection,
    #[serde(default)]
    pub usage: UsageSection,
    #[serde(default)]
    pub recovery: RecoverySection,
    #[serde(default)]
    pub telemetry: TelemetrySection,
    #[serde(default)]
    pub alerts: AlertsSection,
    /// Where the database is; absent: sled in the data directory.
    #[serde(default)]
    pub storage: StorageSection,
    /// The node's signing key in a PKCS#11 token; absent: `identity/signing.key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsm: Option<HsmSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsp: Option<DspSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<ConsoleSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub development: Option<Development>,
    /// Directory of the configuration file; relative paths are taken from here.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// The database's directory inside the data directory.
pub const DATABASE_DIR: &str = "db";
/// The node's identity (admission bundle: keys, certificate, credential) inside the
/// data directory.
pub const IDENTITY_DIR: &str = "identity";
/// The local API's certificate authority and client certificates inside the data
/// directory.
pub const LOCAL_DIR: &str = "local";

/// The database's directory in the data directory `data_dir` (a node's, or a restored
/// one's before it has a configuration).
pub fn database_dir_in(data_dir: &Path) -> PathBuf {
    data_dir.join(DATABASE_DIR)
}

impl NodeConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: NodeConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config
            .limits
            .check_transport()
            .map_err(|message| ConfigError::Parse {
                path: path.to_owned(),
                message,
            })?;
        config
            .storage
            .check()
            .map_err(|message| ConfigError::Parse {
                path: path.to_owned(),
                message,
            })?;
        if let Some(hsm) = &config.hsm {
            hsm.check().map_err(|message| ConfigError::Parse {
                path: path.to_owned(),
                message,
            })?;
        }
        if let Some(dsp) = &config.dsp {
            dsp.check().map_err(|message| ConfigError::Parse {
                path: path.to_owned(),
                message,
            })?;
        }
        if let Some(console) = &config.console {
            console.check().map_err(|message| ConfigError::Parse {
                path: path.to_owned(),
                message,
            })?;
        }
        let base = path.parent().unwrap_or(Path::new("."));
        config.base_dir = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base.to_owned()
        };
        Ok(config)
    }

    /// The node's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.base_dir.join(&self.node.data_dir)
    }

    pub fn identity_dir(&self) -> PathBuf {
        self.data_dir().join(IDENTITY_DIR)
    }

    pub fn local_dir(&self) -> PathBuf {
        self.data_dir().join(LOCAL_DIR)
    }

    pub fn database_dir(&self) -> PathBuf {
        database_dir_in(&self.data_dir())
    }

    /// The node's signing key: the key `[hsm]` names in its token, or else
    /// `identity/signing.key`.
    pub fn load_signing_key(&self) -> Result<SigningKey, KeyError> {
        match &self.hsm {
            None => SigningKey::load(&self.identity_dir().join(bundle_files::SIGNING_KEY)),
            Some(hsm) => {
                let spec = hsm
                    .token_spec(&self.base_dir)
                    .map_err(|reason| KeyError::Token(HsmError::Pin(reason)))?;
                SigningKey::open_token(&spec, &hsm.signing_key)
            }
        }
    }

    pub fn development_authority_dir(&self) -> Option<PathBuf> {
        self.development
            .as_ref()
            .map(|d| self.base_dir.join(&d.authority_dir))
    }
}

#[cfg(test)]
mod tests;
