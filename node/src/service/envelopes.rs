//! Signed envelopes as peers send them: bounded before anything else looks at them.

use tonic::Status;

use crate::identity::Envelope;

/// A signed envelope a peer sent in the message field `field`, refused with
/// `INVALID_ARGUMENT` when it carries more than `limit` signatures
/// (`limits.max_envelope_signatures`), before any of them is verified.
pub(super) fn peer_envelope(
    envelope: liutong_proto::v1::Envelope,
    field: &str,
    limit: usize,
) -> Result<Envelope, Status> {
    let envelope = Envelope::from(envelope);
    envelope
        .check_signature_count(field, limit)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(envelope)
}
