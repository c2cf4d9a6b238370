//! The signed trust list: which participants are members, their keys, and who has
//! been revoked. The authority signs it with a sequence number and an expiry; nodes
//! fetch it at start and on an interval (compare X-Road's global configuration).
//!
//! [`TrustStore`] is the node's side: it accepts a list only if the authority signed it,
//! it has not expired, and its sequence is not older than the one it holds. An accepted
//! list is written to storage and flushed before it takes effect, so a restart applies
//! the same revocations even before the authority is reachable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use tonic::Status;

use crate::base::error::{ErrorKind, ErrorKinded};
use crate::base::format::format_unix;
use crate::identity::{Envelope, EnvelopeError, Membership, ParticipantId, PublicKey};
use crate::storage::{Storage, StorageError};

/// Payload type of a signed trust list.
pub const TRUST_LIST_PAYLOAD_TYPE: &str = "application/vnd.liutong.trust-list+json";

const TREE: &str = "trust";
const KEY_CURRENT: &[u8] = b"current";

/// The trust list as the authority signs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustList {
    /// Name of the authority; a node accepts only its own authority's lists.
    pub authority: String,
    /// Grows with every change of members or revocations.
    pub sequence: u64,
    /// Unix seconds.
    pub issued_at: i64,
    pub expires_at: i64,
    pub members: Vec<Membership>,
    pub revocations: Vec<Revocation>,
}

/// A member the authority has revoked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    pub participant_id: ParticipantId,
    pub reason: String,
    pub revoked_at: i64,
    /// SHA-256 of the certificate that was revoked.
    pub certificate_sha256: String,
}

/// Why a trust list was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    #[error("trust list refused: {0}")]
    Signature(#[from] EnvelopeError),
    #[error("trust list refused: it was issued by {found:?}, but this node trusts {expected:?}")]
    Authority { expected: String, found: String },
    #[error("trust list refused: it expired at {}", format_unix(*expires_at))]
    Expired { expires_at: i64 },
    #[error(
        "trust list refused: its sequence {offered} is older than the sequence {current} this \
         node already applied (a replayed or rolled-back list)"
    )]
    OlderSequence { current: u64, offered: u64 },
    #[error("trust list could not be stored: {0}")]
    Storage(#[from] StorageError),
    #[error("trust list could not be fetched from {address}: {reason}")]
    Fetch { address: String, reason: String },
}

impl ErrorKinded for TrustError {
    fn kind(&self) -> ErrorKind {
        match self {
            TrustError::Fetch { .. } => ErrorKind::Unavailable,
            TrustError::Storage(_) => ErrorKind::Internal,
            TrustError::Signature(_) => ErrorKind::DataLoss,
            TrustError::Authority { .. }
            | TrustError::Expired { .. }
            | TrustError::OlderSequence { .. } => ErrorKind::FailedPrecondition,
        }
    }
}

/// Why a caller is not accepted as a member.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemberError {
    #[error(
        "this node holds no valid trust list yet, so it cannot check any member; it keeps \
         trying to reach the authority"
    )]
    NoTrustList,
    #[error(
        "this node's trust list expired at {}; it cannot check members until it reaches the \
         authority again",
        format_unix(*expires_at)
    )]
    TrustListExpired { expires_at: i64 },
    #[error("participant {participant} was revoked by the authority at {}: {reason}", format_unix(*revoked_at))]
    Revoked {
        participant: ParticipantId,
        reason: String,
        revoked_at: i64,
    },
    #[error("participant {participant} is not a member in trust list {sequence}")]
    NotMember {
        participant: ParticipantId,
        sequence: u64,
    },
    #[error("the membership of {participant} expired at {}", format_unix(*valid_until))]
    MembershipExpired {
        participant: ParticipantId,
        valid_until: i64,
    },
    #[error(
        "the certificate presented for {participant} is not the one the authority registered \
         (SHA-256 {presented}); it was replaced or never issued"
    )]
    CertificateMismatch {
        participant: ParticipantId,
        presented: String,
    },
}

impl From<MemberError> for Status {
    fn from(e: MemberError) -> Self {
        let message = e.to_string();
        match e {
            MemberError::NoTrustList | MemberError::TrustListExpired { .. } => {
                Status::unavailable(message)
            }
            MemberError::CertificateMismatch { .. } => Status::unauthenticated(message),
            MemberError::Revoked { .. }
            | MemberError::NotMember { .. }
            | MemberError::MembershipExpired { .. } => Status::permission_denied(message),
        }
    }
}

/// What the node reports about its trust list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustStatus {
    pub sequence: u64,
    pub issued_at: i64,
    pub expires_at: i64,
    pub applied_at: i64,
    pub members: u32,
    pub revocations: u32,
    pub last_error: Option<String>,
}

/// The node's current trust list.
pub struct TrustStore {
    authority_name: String,
    authority_key: PublicKey,
    storage: Arc<dyn Storage>,
    current: RwLock<Option<Arc<ActiveList>>>,
    /// Serializes `apply`, so the sequence check and the swap cannot interleave.
    applying: tokio::sync::Mutex<()>,
    last_error: Mutex<Option<String>>,
}

struct ActiveList {
    list: TrustList,
    members: HashMap<ParticipantId, Membership>,
    revoked: HashMap<ParticipantId, Revocation>,
    applied_at: i64,
}

#[derive(Serialize, Deserialize)]
struct StoredList {
    envelope: Envelope,
    applied_at: i64,
}

impl TrustStore {
    /// Opens the store, restoring the last applied list from storage (its signature is
    /// checked again; an expired one is kept only to keep the sequence from going back).
    pub fn open(
        authority_name: &str,
        authority_key: PublicKey,
        storage: Arc<dyn Storage>,
    ) -> Result<Self, TrustError> {
        let store = Self {
            authority_name: authority_name.to_owned(),
            authority_key,
            storage,
            current: RwLock::new(None),
            applying: tokio::sync::Mutex::new(()),
            last_error: Mutex::new(None),
        };
        if let Some(bytes) = store.storage.get(TREE, KEY_CURRENT)? {
            match serde_json::from_slice::<StoredList>(&bytes) {
                Ok(stored) => {
                    let list = store.open_envelope(&stored.envelope)?;
                    store.install(list, stored.applied_at);
                }
                Err(e) => {
                    tracing::error!(error = %e, "stored trust list is unreadable; waiting for a fresh one")
                }
            }
        }
        Ok(store)
    }

    /// Checks and applies a signed list. Durable before it takes effect.
    pub async fn apply(&self, envelope: Envelope, now: i64) -> Result<TrustStatus, TrustError> {
        let result = self.apply_inner(envelope, now).await;
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        *last = result.as_ref().err().map(ToString::to_string);
        drop(last);
        result.map(|()| self.status())
    }

    async fn apply_inner(&self, envelope: Envelope, now: i64) -> Result<(), TrustError> {
        let _guard = self.applying.lock().await;
        let list = self.open_envelope(&envelope)?;
        if list.expires_at <= now {
            return Err(TrustError::Expired {
                expires_at: list.expires_at,
            });
        }
        if let Some(current) = self.snapshot() {
            let older = list.sequence < current.list.sequence
                || (list.sequence == current.list.sequence
                    && list.issued_at < current.list.issued_at);
            if older {
                return Err(TrustError::OlderSequence {
                    current: current.list.sequence,
                    offered: list.sequence,
                });
            }
        }
        let stored = StoredList {
            envelope,
            applied_at: now,
        };
        // Plain data always serializes.
        let bytes = serde_json::to_vec(&stored).expect("trust list serializes");
        self.storage.put_durable(TREE, KEY_CURRENT, &bytes).await?;
        let changed = self
            .snapshot()
            .is_none_or(|c| c.list.sequence != list.sequence);
        if changed {
            tracing::info!(
                sequence = list.sequence,
                members = list.members.len(),
                revocations = list.revocations.len(),
                "trust list applied"
            );
        }
        self.install(list, now);
        Ok(())
    }

    fn open_envelope(&self, envelope: &Envelope) -> Result<TrustList, TrustError> {
        let list: TrustList = envelope.open_json(TRUST_LIST_PAYLOAD_TYPE, &self.authority_key)?;
        if list.authority != self.authority_name {
            return Err(TrustError::Authority {
                expected: self.authority_name.clone(),
                found: list.authority,
            });
        }
        Ok(list)
    }

    fn install(&self, list: TrustList, applied_at: i64) {
        let members = list
            .members
            .iter()
            .map(|m| (m.participant_id.clone(), m.clone()))
            .collect();
        let revoked = list
            .revocations
            .iter()
            .map(|r| (r.participant_id.clone(), r.clone()))
            .collect();
        let active = Arc::new(ActiveList {
            list,
            members,
            revoked,
            applied_at,
        });
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(active);
    }

    /// The members of the current list (empty without one), in the list's order.
    pub fn members(&self) -> Vec<Membership> {
        self.snapshot()
            .map(|a| a.list.members.clone())
            .unwrap_or_default()
    }

    fn snapshot(&self) -> Option<Arc<ActiveList>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records a failed refresh, for `status`.
    pub fn record_error(&self, error: &TrustError) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.to_string());
    }

    /// Is `participant`, presenting a certificate with this SHA-256, a current member?
    pub fn check_member(
        &self,
        participant: &ParticipantId,
        certificate_sha256: &str,
        now: i64,
    ) -> Result<Membership, MemberError> {
        let member = self.member(participant, now)?;
        if !member
            .certificate_sha256
            .eq_ignore_ascii_case(certificate_sha256)
        {
            return Err(MemberError::CertificateMismatch {
                participant: participant.clone(),
                presented: certificate_sha256.to_owned(),
            });
        }
        Ok(member)
    }

    /// This node's own membership as the trust list now states it, so that roles the
    /// authority has changed since `own` (the node's credential) was issued count; `own`
    /// itself while the list does not name the node as a current member.
    pub fn own_membership(&self, own: &Membership) -> Membership {
        self.member(&own.participant_id, crate::base::clock::now())
            .unwrap_or_else(|_| own.clone())
    }

    /// The current membership of `participant` (e.g. to learn its signing key), if it is
    /// a member now: listed, not revoked, not expired, in an unexpired trust list.
    pub fn member(&self, participant: &ParticipantId, now: i64) -> Result<Membership, MemberError> {
        let active = self.snapshot().ok_or(MemberError::NoTrustList)?;
        if active.list.expires_at <= now {
            return Err(MemberError::TrustListExpired {
                expires_at: active.list.expires_at,
            });
        }
        if let Some(r) = active.revoked.get(participant) {
            return Err(MemberError::Revoked {
                participant: participant.clone(),
                reason: r.reason.clone(),
                revoked_at: r.revoked_at,
            });
        }
        let member = active
            .members
            .get(participant)
            .ok_or_else(|| MemberError::NotMember {
                participant: participant.clone(),
                sequence: active.list.sequence,
            })?;
        if member.valid_until <= now {
            return Err(MemberError::MembershipExpired {
                participant: participant.clone(),
                valid_until: member.valid_until,
            });
        }
        Ok(member.clone())
    }

    pub fn status(&self) -> TrustStatus {
        let last_error = self
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match self.snapshot() {
            None => TrustStatus {
                last_error,
                ..TrustStatus::default()
            },
            Some(a) => TrustStatus {
                sequence: a.list.sequence,
                issued_at: a.list.issued_at,
                expires_at: a.list.expires_at,
                applied_at: a.applied_at,
                members: a.list.members.len() as u32,
                revocations: a.list.revocations.len() as u32,
                last_error,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{MemberRole, ParticipantKind, RegionCode, SigningKey};
    use crate::storage::SledStorage;

    const NOW: i64 = 1_800_000_000;

    fn member(id: &str, fp: &str) -> Membership {
        Membership {
            participant_id: ParticipantId::parse(id).unwrap(),
            name: "Test".into(),
            kind: ParticipantKind::Government,
            sector: "transport".into(),
            region: RegionCode::parse("330100").unwrap(),
            roles: vec![MemberRole::Provider],
            valid_from: NOW - 10,
            valid_until: NOW + 1000,
            signing_key: SigningKey::generate().unwrap().public_key(),
            certificate_sha256: fp.into(),
            authority: "Test Authority".into(),
        }
    }

    fn list(
        seq: u64,
        issued: i64,
        members: Vec<Membership>,
        revocations: Vec<Revocation>,
    ) -> TrustList {
        TrustList {
            authority: "Test Authority".into(),
            sequence: seq,
            issued_at: issued,
            expires_at: issued + 600,
            members,
            revocations,
        }
    }

    fn signed(key: &SigningKey, l: &TrustList) -> Envelope {
        Envelope::sign_json(TRUST_LIST_PAYLOAD_TYPE, l, key).unwrap()
    }

    #[tokio::test]
    async fn applies_checks_and_revokes() {
        let key = SigningKey::generate().unwrap();
        let store = TrustStore::open(
            "Test Authority",
            key.public_key(),
            SledStorage::temporary().unwrap(),
        )
        .unwrap();
        let a = ParticipantId::parse("91110000600037341L").unwrap();
        assert_eq!(
            store.check_member(&a, "aa", NOW),
            Err(MemberError::NoTrustList)
        );

        store
            .apply(
                signed(&key, &list(1, NOW, vec![member(a.as_str(), "aa")], vec![])),
                NOW,
            )
            .await
            .unwrap();
        store.check_member(&a, "aa", NOW).unwrap();
        assert!(matches!(
            store.check_member(&a, "bb", NOW),
            Err(MemberError::CertificateMismatch { .. })
        ));

        let revocation = Revocation {
            participant_id: a.clone(),
            reason: "left the data space".into(),
            revoked_at: NOW,
            certificate_sha256: "aa".into(),
        };
        store
            .apply(
                signed(&key, &list(2, NOW + 1, vec![], vec![revocation])),
                NOW + 1,
            )
            .await
            .unwrap();
        let err = store.check_member(&a, "aa", NOW + 1).unwrap_err();
        assert!(err.to_string().contains("left the data space"), "{err}");
        assert_eq!(Status::from(err).code(), tonic::Code::PermissionDenied);
    }

    #[tokio::test]
    async fn refuses_older_sequence_bad_signature_other_authority_and_expired() {
        let key = SigningKey::generate().unwrap();
        let store = TrustStore::open(
            "Test Authority",
            key.public_key(),
            SledStorage::temporary().unwrap(),
        )
        .unwrap();
        store
            .apply(signed(&key, &list(5, NOW, vec![], vec![])), NOW)
            .await
            .unwrap();

        let err = store
            .apply(signed(&key, &list(4, NOW + 5, vec![], vec![])), NOW + 5)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                TrustError::OlderSequence {
                    current: 5,
                    offered: 4
                }
            ),
            "{err}"
        );

        let forger = SigningKey::generate().unwrap();
        let err = store
            .apply(signed(&forger, &list(6, NOW, vec![], vec![])), NOW)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                TrustError::Signature(EnvelopeError::BadSignature { .. })
            ),
            "{err}"
        );

        let mut altered = signed(&key, &list(7, NOW, vec![], vec![]));
        altered.payload = serde_json::to_vec(&list(8, NOW, vec![], vec![])).unwrap();
        assert!(matches!(
            store.apply(altered, NOW).await,
            Err(TrustError::Signature(_))
        ));

        let mut foreign = list(9, NOW, vec![], vec![]);
        foreign.authority = "Other Authority".into();
        assert!(matches!(
            store.apply(signed(&key, &foreign), NOW).await,
            Err(TrustError::Authority { .. })
        ));

        let err = store
            .apply(signed(&key, &list(10, NOW - 700, vec![], vec![])), NOW)
            .await
            .unwrap_err();
        assert!(matches!(err, TrustError::Expired { .. }), "{err}");

        // None of the refused lists replaced the applied one, and the error is reported.
        let status = store.status();
        assert_eq!(status.sequence, 5);
        assert!(status.last_error.unwrap().contains("expired"));
    }

    #[tokio::test]
    async fn applied_list_survives_reopening_and_keeps_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate().unwrap();
        {
            let storage = SledStorage::open(dir.path()).unwrap();
            let store = TrustStore::open("Test Authority", key.public_key(), storage).unwrap();
            store
                .apply(signed(&key, &list(3, NOW, vec![], vec![])), NOW)
                .await
                .unwrap();
        }
        // sled's own threads may hold the closed database's lock for a moment.
        let mut reopened = None;
        for _ in 0..200 {
            match SledStorage::open(dir.path()) {
                Ok(s) => {
                    reopened = Some(s);
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
        let storage = reopened.expect("the closed database is released");
        let store = TrustStore::open("Test Authority", key.public_key(), storage).unwrap();
        assert_eq!(store.status().sequence, 3);
        assert!(
            store
                .apply(signed(&key, &list(2, NOW, vec![], vec![])), NOW)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn expired_list_refuses_everyone() {
        let key = SigningKey::generate().unwrap();
        let store = TrustStore::open(
            "Test Authority",
            key.public_key(),
            SledStorage::temporary().unwrap(),
        )
        .unwrap();
        let a = ParticipantId::parse("91110000600037341L").unwrap();
        store
            .apply(
                signed(&key, &list(1, NOW, vec![member(a.as_str(), "aa")], vec![])),
                NOW,
            )
            .await
            .unwrap();
        let err = store.check_member(&a, "aa", NOW + 601).unwrap_err();
        assert!(matches!(err, MemberError::TrustListExpired { .. }));
        assert_eq!(Status::from(err).code(), tonic::Code::Unavailable);
    }
}
