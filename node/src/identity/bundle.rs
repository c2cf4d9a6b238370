//! The admission bundle's layout: the files the authority writes for an admitted
//! member (`liutong authority admit`) and `liutong init` copies into the node's
//! `identity/` directory, and the manifest that names whose they are.

use serde::{Deserialize, Serialize};

use super::{ParticipantId, PublicKey};

/// The bundle's manifest, `bundle.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleManifest {
    pub participant_id: ParticipantId,
    pub name: String,
    pub authority_name: String,
    pub authority_key: PublicKey,
}

/// File names inside an admission bundle (and a node's `identity/` directory).
pub mod files {
    pub const MANIFEST: &str = "bundle.json";
    pub const CA: &str = "ca.crt";
    pub const CERT: &str = "node.crt";
    pub const KEY: &str = "node.key";
    pub const SIGNING_KEY: &str = "signing.key";
    pub const CREDENTIAL: &str = "credential.json";
    pub const ALL: [&str; 6] = [MANIFEST, CA, CERT, KEY, SIGNING_KEY, CREDENTIAL];
}
