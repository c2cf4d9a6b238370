//! The events the audit log records: [`Event`], a versioned, typed record with a fixed
//! JSON field order so the same event always gives the same bytes, and [`EventKind`],
//! what an entry is about. The entry format is part of what auditors and peers read, so
//! it changes only with [`ENTRY_VERSION`].

use serde::{Deserialize, Serialize};

/// The version of the entry format written by this software.
pub const ENTRY_VERSION: u32 = 1;

/// One event, as written to the log: a versioned, typed record serialized as JSON with a
/// fixed field order, so the same event always gives the same bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Entry format version.
    pub v: u32,
    /// Unix seconds.
    pub time: i64,
    pub kind: EventKind,
    /// The other participant involved, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<String>,
    /// What happened, in words.
    pub detail: String,
}

/// What kind of event an entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    NodeStarted,
    NodeStopped,
    TrustListApplied,
    TrustListRefused,
    ProductPublished,
    /// A peer listed the catalog or read an offer.
    CatalogAccessed,
    /// A policy decision (permit or deny) with its reasons.
    PolicyDecision,
    NegotiationStateChanged,
    /// A transfer started, completed, or a chunk was refused.
    Transfer,
    /// Something an operator must look at, e.g. a peer's log signed two checkpoints that
    /// cannot both be true.
    Alert,
    /// The node started with a configuration other than the one it ran with before.
    ConfigurationChanged,
    /// A use of a received copy (consumer side: a permitted read), or a consumer's
    /// signed usage notice (provider side).
    Usage,
    /// A received copy deleted (deleteAfter, revocation), or a consumer's signed
    /// deletion receipt (provider side).
    CopyDeleted,
    /// An agreement revoked by its provider (provider side), or a revocation received
    /// (consumer side).
    Revocation,
    /// A backup of the whole node (keys included) was taken.
    BackupTaken,
    /// The node signs with a new key (its credential was renewed by the authority).
    SigningKeyRotated,
    /// A compute-to-data query: sent (consumer) or answered or refused (provider), with
    /// the size of its answer.
    Query,
    /// A request refused at the peer or local API: who called, what (the method) and
    /// why (the code and message); or the count of one caller's further refusals for a
    /// method within a window.
    Refusal,
    /// A sign-in link to the web console was made, or a browser signed in with one
    /// (with the role it gives).
    ConsoleSignIn,
}

impl Event {
    pub fn new(kind: EventKind, time: i64, detail: impl Into<String>) -> Self {
        Self {
            v: ENTRY_VERSION,
            time,
            kind,
            participant: None,
            product: None,
            agreement: None,
            detail: detail.into(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Plain data always serializes.
        serde_json::to_vec(self).expect("events serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_canonical_json() {
        let mut e = Event::new(EventKind::TrustListApplied, 1_800_000_000, "sequence 3");
        e.participant = Some("91110000600037341L".into());
        assert_eq!(
            String::from_utf8(e.to_bytes()).unwrap(),
            r#"{"v":1,"time":1800000000,"kind":"trust_list_applied","participant":"91110000600037341L","detail":"sequence 3"}"#
        );
        let back: Event = serde_json::from_slice(&e.to_bytes()).unwrap();
        assert_eq!(back, e);
    }
}
