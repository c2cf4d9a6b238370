//! Evidence bundles: the entries about one agreement (or product, or participant) from
//! the logs of the nodes involved, each with its inclusion proof, the signed checkpoint
//! it leads to, the cosignatures, and the credentials that vouch for every key. A bundle
//! is one JSON file that [`verify_bundle`] checks offline with only the authority's key.
//! Each node's part is collected over gRPC by
//! [`AuditorClient::collect_evidence`](crate::audit_client::AuditorClient::collect_evidence).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use super::auditor::{TrustedLog, VerifyError, open_credential, verify_checkpoint};
use super::log::{Event, log_key_of};
use super::merkle;
use super::search::SearchFilter;
use crate::identity::{Envelope, PublicKey};

/// The bundle format written by this software.
pub const BUNDLE_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EvidenceBundle {
    pub version: u32,
    /// Unix seconds.
    pub created: i64,
    /// What the entries were selected by.
    pub filter: SearchFilter,
    pub logs: Vec<LogEvidence>,
}

/// One node's part of a bundle.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogEvidence {
    pub origin: String,
    /// The verifier key line of the log.
    pub log_key: String,
    /// The node's membership credential, signed by the authority (it names the key).
    pub credential: Envelope,
    /// The signed checkpoint note the proofs lead to, cosignatures included.
    pub checkpoint: String,
    pub witness_credentials: Vec<Envelope>,
    pub entries: Vec<ProvenEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProvenEntry {
    pub index: u64,
    /// Base64 of the exact entry bytes.
    pub data: String,
    /// Base64 hashes of the RFC 9162 inclusion proof in the checkpoint's tree.
    pub proof: Vec<String>,
    /// The decoded event, for people; the verifier reads `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Event>,
}

/// What [`verify_bundle`] checked, per log.
#[derive(Clone, Debug)]
pub struct BundleReport {
    pub logs: Vec<(String, u64, usize, Vec<String>)>,
}

/// Checks a bundle offline: each log's key against its authority-signed credential, the
/// checkpoint's signature and cosignatures, every entry's inclusion proof, and that
/// every entry matches the bundle's filter.
pub fn verify_bundle(
    bundle: &EvidenceBundle,
    authority_key: &PublicKey,
) -> Result<BundleReport, VerifyError> {
    let mut report = BundleReport { logs: Vec::new() };
    for evidence in &bundle.logs {
        let membership = open_credential(&evidence.credential, authority_key, &evidence.origin)?;
        let log_key = log_key_of(&membership).map_err(|e| VerifyError::Credential {
            whose: evidence.origin.clone(),
            reason: e.to_string(),
        })?;
        if log_key.to_string() != evidence.log_key {
            return Err(VerifyError::KeyMismatch {
                presented: evidence.log_key.clone(),
                expected: log_key.to_string(),
            });
        }
        let log = TrustedLog {
            origin: log_key.name().to_owned(),
            log_key,
            membership,
            credential: evidence.credential.clone(),
        };
        let checkpoint = verify_checkpoint(
            &log,
            &evidence.checkpoint,
            &evidence.witness_credentials,
            authority_key,
            0,
        )?;
        let cp = &checkpoint.checkpoint;
        for entry in &evidence.entries {
            let bad = |reason: String| VerifyError::BadEntry {
                index: entry.index,
                reason: format!("{} (log {})", reason, evidence.origin),
            };
            let data = B64
                .decode(&entry.data)
                .map_err(|_| bad("its data is not base64".into()))?;
            let proof = entry
                .proof
                .iter()
                .map(|h| B64.decode(h))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| bad("its proof is not base64".into()))?;
            merkle::verify_inclusion(
                &merkle::leaf_hash(&data),
                entry.index,
                cp.size,
                &proof,
                &cp.root,
            )
            .map_err(|e| bad(format!("its inclusion proof fails: {e}")))?;
            let event: Event = serde_json::from_slice(&data)
                .map_err(|e| bad(format!("it is not an event: {e}")))?;
            if !bundle.filter.matches(&event) {
                return Err(bad("it does not match the bundle's filter".into()));
            }
        }
        report.logs.push((
            log.origin,
            cp.size,
            evidence.entries.len(),
            checkpoint.cosigners,
        ));
    }
    Ok(report)
}
