//! The names of the logs and witness keys: a participant's log origin
//! (`liutong.<participant>/audit`), the name it cosigns with as a witness
//! (`liutong.<participant>/witness`), and the participant an origin belongs to. Peers and
//! auditors derive these from the participant ID alone, so they are fixed text.

use crate::identity::ParticipantId;

/// The origin of a participant's log, e.g. `liutong.91110000600037341L/audit`.
pub fn origin_for(participant: &ParticipantId) -> String {
    format!("liutong.{participant}/audit")
}

/// The participant whose log has `origin` (the inverse of [`origin_for`]); `None` for
/// an origin that is not a Liutong log's.
pub fn owner_of(origin: &str) -> Option<ParticipantId> {
    let id = origin.strip_prefix("liutong.")?.strip_suffix("/audit")?;
    ParticipantId::parse(id).ok()
}

/// The key name a participant's node cosigns with as a witness, e.g.
/// `liutong.91110000600037341L/witness`. Same Ed25519 key as its log, other key type.
pub fn witness_name_for(participant: &ParticipantId) -> String {
    format!("liutong.{participant}/witness")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_of_inverts_origin_for() {
        let participant = ParticipantId::parse("91110000600037341L").unwrap();
        assert_eq!(owner_of(&origin_for(&participant)), Some(participant));
        for other in [
            "liutong.91110000600037341L/witness",
            "example.org/91110000600037341L/audit",
            "liutong.not-an-id/audit",
            "",
        ] {
            assert_eq!(owner_of(other), None, "{other}");
        }
    }
}
