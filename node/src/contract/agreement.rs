//! The digital contract's parts as both nodes sign them: the consumer's
//! [`ContractRequest`], the provider's [`Agreement`] (the product version, its hash, the
//! policy, the parties, the purpose and the time) with what it is used for once signed
//! (the product it covers, policy requests and state, audit events), the payload types
//! of both, the errors of an agreement looked up or read, and [`Role`], the side a node
//! takes.
//!
//! Also the per-agreement key ([`agreement_key`]): HMAC-SHA256 over the agreement ID
//! under a random secret of this node, created once and kept durably. It keys the
//! source hashes of an agreement whose delivery is derived (see
//! [`Agreement::derived`]), the pseudonyms of its masked delivery and its watermark.

use std::sync::Arc;

use liutong_policy::{Action, Classification, Request, Scope, State as PolicyState};
use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::audit::log::{AuditError, AuditLog, Event, EventKind};
use crate::base::bounded::{self, FieldError};
use crate::base::clock;
use crate::base::clock::now;
use crate::catalog::requester_of;
use crate::identity::{Membership, ParticipantId};
use crate::storage::{Storage, StorageError};

/// Payload type of a signed contract request.
pub const REQUEST_PAYLOAD_TYPE: &str = "application/vnd.liutong.contract-request+json";
/// Payload type of a signed agreement.
pub const AGREEMENT_PAYLOAD_TYPE: &str = "application/vnd.liutong.agreement+json";

/// What the consumer signs to ask for a contract.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractRequest {
    pub negotiation_id: String,
    pub consumer: ParticipantId,
    pub provider: ParticipantId,
    pub offer_id: String,
    pub purpose: String,
    /// Random, used once: a replayed request is refused.
    pub nonce: String,
    pub created_at: i64,
    pub expires_at: i64,
}

impl ContractRequest {
    /// Checks every field a consumer chose against its grammar
    /// ([`bounded`](crate::base::bounded)): the negotiation ID, the offer ID, the purpose,
    /// the nonce and both times; the first that does not fit is named. The participants
    /// are checked by their type when the request is read.
    pub fn check_fields(&self) -> Result<RequestValidity, FieldError> {
        bounded::Id::parse("negotiation_id", &self.negotiation_id)?;
        bounded::OfferId::parse("offer_id", &self.offer_id)?;
        bounded::Text::parse("purpose", &self.purpose, bounded::PURPOSE_MAX)?;
        bounded::Nonce::parse("nonce", &self.nonce)?;
        Ok(RequestValidity {
            created_at: bounded::Time::parse("created_at", self.created_at)?,
            expires_at: bounded::Time::parse("expires_at", self.expires_at)?,
        })
    }
}

/// A contract request's validity, both times within the accepted range, so that how long
/// it lasts is computed without overflow.
#[derive(Clone, Copy, Debug)]
pub struct RequestValidity {
    pub created_at: bounded::Time,
    pub expires_at: bounded::Time,
}

impl RequestValidity {
    /// How long the request is valid, in seconds (negative if it expires before it was
    /// made).
    pub fn lifetime(&self) -> i64 {
        self.expires_at.since(self.created_at)
    }
}

/// Why [`Agreement::product`] has no product to offer.
#[derive(Debug, thiserror::Error)]
pub enum AgreedProductError {
    /// The agreed version is no longer in the store.
    #[error("{0}")]
    Gone(String),
    /// The store could not be read.
    #[error("the agreed product cannot be read: {0}")]
    Unreadable(String),
    /// The stored version's record is damaged.
    #[error("the agreed product's stored record is damaged: {0}")]
    Damaged(String),
    /// The stored bytes are not the ones agreed.
    #[error("the stored product no longer matches the agreement's hash")]
    Changed,
}

/// Why no agreement is given for an agreement ID
/// ([`Contracts::finalized`](super::Contracts::finalized),
/// [`consumer_agreement`](super::Contracts::consumer_agreement)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgreementError {
    /// No FINALIZED negotiation on this node's side carries the agreement.
    #[error("no finalized agreement {0}")]
    Unknown(String),
    /// The caller is not the agreement's consumer. The message names only the caller:
    /// who the consumer is stays between the parties.
    #[error("{caller} is not a party to agreement {agreement_id}")]
    NotConsumer {
        agreement_id: String,
        caller: ParticipantId,
    },
    /// The stored negotiation or agreement is damaged, or not signed by this node.
    #[error("{0}")]
    Damaged(String),
    /// The store could not be read.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The digital contract: what both parties sign.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agreement {
    pub agreement_id: String,
    pub negotiation_id: String,
    pub provider: ParticipantId,
    pub consumer: ParticipantId,
    pub offer_id: String,
    pub product_id: String,
    pub version: u32,
    /// SHA-256 of the product version's payload, hex; keyed when [`derived`](Self::derived).
    pub product_sha256: String,
    pub size: u64,
    /// The size of the product version's chunks, and the SHA-256 over their hashes
    /// ([`chunk_list_sha256`](crate::catalog::product::chunk_list_sha256)): they fix
    /// every chunk of the agreed bytes, which the consumer checks as each arrives;
    /// keyed when [`derived`](Self::derived).
    pub chunk_size: u32,
    pub chunks_sha256: String,
    /// The delivery is made for this agreement alone (masked by the policy's mask
    /// duties, watermarked, or both), so the consumer never holds the product's own
    /// bytes. `product_sha256` and `chunks_sha256` are then HMAC-SHA256 under the
    /// agreement's key ([`source_hashes`]) rather than plain hashes: a plain hash of
    /// the unmasked bytes would let the consumer confirm guesses of masked values
    /// offline, and strip a watermark by trying which cells were marked. They still
    /// bind the provider to the source version (it checks them before every delivery);
    /// the consumer checks the delivered bytes against the signed manifest.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub derived: bool,
    pub classification: Classification,
    pub purpose: String,
    /// The agreement's policy, ODRL 2.2 JSON-LD; its offer implies it.
    pub policy: serde_json::Value,
    pub agreed_at: i64,
    /// Who approved it, when the guardrails asked for a person's approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
}

impl Agreement {
    /// The product version this agreement names, from the provider's store, checked
    /// against the agreement's hash.
    pub fn product(
        &self,
        store: &crate::catalog::product::ProductStore,
    ) -> Result<crate::catalog::product::ProductVersion, AgreedProductError> {
        let product = store
            .get(&self.product_id, self.version)
            .map_err(|e| match e {
                crate::catalog::product::ProductError::Damaged(why) => {
                    AgreedProductError::Damaged(why)
                }
                other => AgreedProductError::Unreadable(other.to_string()),
            })?
            .ok_or_else(|| {
                AgreedProductError::Gone(format!(
                    "product {} v{} is gone",
                    self.product_id, self.version
                ))
            })?;
        let expected = if self.derived {
            let key = stored_agreement_key(store.storage().as_ref(), &self.agreement_id)
                .map_err(|e| AgreedProductError::Unreadable(e.to_string()))?
                .ok_or_else(|| {
                    AgreedProductError::Damaged(
                        "the node secret that keys the agreement's hashes is missing".into(),
                    )
                })?;
            source_hashes(&key, &product.sha256, "").0
        } else {
            product.sha256.clone()
        };
        if expected != self.product_sha256 {
            return Err(AgreedProductError::Changed);
        }
        Ok(product)
    }

    /// An audit event of `kind` about this agreement and its product, naming the other
    /// `participant`.
    pub fn event(&self, kind: EventKind, participant: &str, detail: String) -> Event {
        let mut event = Event::new(kind, now(), detail);
        event.participant = Some(participant.to_owned());
        event.agreement = Some(self.agreement_id.clone());
        event.product = Some(self.product_id.clone());
        event
    }

    /// The policy request of `requester` to take `action` at `scope` under this
    /// agreement, for the agreement's purpose.
    pub fn request(&self, scope: Scope, action: Action, requester: &Membership) -> Request {
        Request {
            scope,
            action,
            requester: requester_of(requester),
            purpose: Some(self.purpose.clone()),
        }
    }

    /// The policy state of this agreement now, after `uses` uses: the time since it
    /// was agreed, and the uses.
    pub fn policy_state(&self, uses: u64) -> PolicyState {
        let now = clock::now_utc();
        PolicyState {
            now,
            elapsed: std::time::Duration::from_secs(
                (now.unix_timestamp() - self.agreed_at).max(0) as u64
            ),
            uses,
        }
    }

    /// The other party of this agreement, seen from this node (`me`).
    pub fn other_party(&self, me: &ParticipantId) -> &ParticipantId {
        if self.provider == *me {
            &self.consumer
        } else {
            &self.provider
        }
    }

    /// Logs an audit event of `kind` about this agreement, naming the other party
    /// (for a step that changes no stored state); durable when this returns.
    pub async fn log(
        &self,
        audit: &AuditLog,
        me: &ParticipantId,
        kind: EventKind,
        detail: String,
    ) -> Result<(), AuditError> {
        let other = self.other_party(me);
        audit
            .append(&self.event(kind, other.as_str(), detail))
            .await
            .map(|_| ())
    }
}

/// This node's side of a negotiation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Provider,
    Consumer,
}

/// Storage tree of the node secret (shared with the masked deliveries' records, whose
/// pseudonyms it keys).
const KEY_TREE: &str = "desensitized";
const SECRET: &[u8] = b"node-secret";
/// Domain separation of the per-agreement key derivation.
const KEY_LABEL: &[u8] = b"liutong/desensitize/hash-key/v1\0";
/// Domain separation of the keyed source hashes of a derived agreement.
const SOURCE_LABEL: &[u8] = b"liutong/agreement/source-sha256/v1\0";
const CHUNKS_LABEL: &[u8] = b"liutong/agreement/source-chunks/v1\0";

/// Why the per-agreement key is not there.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the node secret cannot be created: {0}")]
    Random(String),
    #[error("the node secret vanished after it was written")]
    Vanished,
}

/// The key of an agreement (creates the node secret on first use, durably).
pub async fn agreement_key(
    storage: &Arc<dyn Storage>,
    agreement_id: &str,
) -> Result<hmac::Key, KeyError> {
    if let Some(key) = stored_agreement_key(storage.as_ref(), agreement_id)? {
        return Ok(key);
    }
    crate::storage::node_secret(storage.as_ref(), KEY_TREE, SECRET).map_err(|e| match e {
        crate::storage::SecretError::Storage(e) => KeyError::Storage(e),
        crate::storage::SecretError::Random(e) => KeyError::Random(e.to_string()),
    })?;
    storage.flush().await?;
    stored_agreement_key(storage.as_ref(), agreement_id)?.ok_or(KeyError::Vanished)
}

/// The key of an agreement, if the node secret exists.
pub fn stored_agreement_key(
    storage: &dyn Storage,
    agreement_id: &str,
) -> Result<Option<hmac::Key>, StorageError> {
    let Some(secret) = storage.get(KEY_TREE, SECRET)? else {
        return Ok(None);
    };
    let mut label = KEY_LABEL.to_vec();
    label.extend_from_slice(agreement_id.as_bytes());
    let derived = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &secret), &label);
    Ok(Some(hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref())))
}

/// The keyed forms of a product's SHA-256 and chunk-list hash that a derived agreement
/// carries (hex).
pub fn source_hashes(key: &hmac::Key, sha256: &str, chunks_sha256: &str) -> (String, String) {
    let keyed = |label: &[u8], value: &str| {
        let mut ctx = hmac::Context::with_key(key);
        ctx.update(label);
        ctx.update(value.as_bytes());
        hex::encode(ctx.sign())
    };
    (
        keyed(SOURCE_LABEL, sha256),
        keyed(CHUNKS_LABEL, chunks_sha256),
    )
}
