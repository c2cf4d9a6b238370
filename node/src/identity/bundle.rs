//! The admission bundle's layout: the files the authority writes for an admitted
//! member (`liutong authority admit`) and `liutong init` copies into the node's
//! `identity/` directory beside the keys the node made, and the manifest that names
//! whose they are. A bundle holds no private key.

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

/// File names inside an admission bundle and a node's `identity/` directory.
pub mod files {
    pub const MANIFEST: &str = "bundle.json";
    pub const CA: &str = "ca.crt";
    pub const CERT: &str = "node.crt";
    pub const CREDENTIAL: &str = "credential.json";
    /// What a bundle holds.
    pub const ALL: [&str; 4] = [MANIFEST, CA, CERT, CREDENTIAL];
    /// The node's TLS key, made on the node (`liutong join`); never in a bundle.
    pub const KEY: &str = "node.key";
    /// The node's signing key, made on the node; never in a bundle.
    pub const SIGNING_KEY: &str = "signing.key";
    /// The TLS key a renewal request asks to certify, until its bundle is installed.
    pub const NEXT_KEY: &str = "node.key.next";
    /// The admission request the node made last.
    pub const REQUEST: &str = "admission-request.json";
}
