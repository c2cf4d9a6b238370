//! This node as a member: its membership as the authority signed it, the signed
//! credential itself, the key that signs its envelopes, and the credentials of its
//! earlier signing keys. Loaded once at start; every component that signs or names this
//! node holds it.

use super::{Envelope, Membership, ParticipantId, SigningKey};

/// This node's own identity in the data space.
pub struct NodeIdentity {
    /// This node's membership, as the authority signed it.
    pub membership: Membership,
    /// The authority-signed credential that carries [`membership`](Self::membership).
    pub credential: Envelope,
    /// Signs this node's envelopes (agreements, receipts, checkpoints).
    pub signing_key: SigningKey,
    /// Credentials of this node's earlier signing keys, oldest first (key rotation).
    pub previous_credentials: Vec<Envelope>,
}

impl NodeIdentity {
    /// This node's participant ID.
    pub fn participant_id(&self) -> &ParticipantId {
        &self.membership.participant_id
    }
}
