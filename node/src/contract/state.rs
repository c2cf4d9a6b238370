//! The negotiation state machine (Dataspace Protocol names): which state may follow
//! which, decided by a pure function, and what the background work does next with a
//! stored negotiation.
//!
//! REQUESTED → (OFFERED ↔ REQUESTED)* → AGREED → VERIFIED → FINALIZED, or TERMINATED
//! from any state that is not final. The consumer records no AGREED of its own: it
//! checks the provider's agreement and countersigns it in one step, REQUESTED →
//! VERIFIED. ACCEPTED is named by the protocol, but no step of this node enters it.
//!
//! A state string that arrives (a peer's answer, a stored record) is parsed here once,
//! and only the enum goes further.

use serde::{Deserialize, Serialize};

use super::negotiation::SENT;
use super::{Negotiation, Role};

/// A negotiation's state (Dataspace Protocol names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NegotiationStatus {
    Requested,
    Offered,
    Accepted,
    Agreed,
    Verified,
    Finalized,
    Terminated,
}

impl NegotiationStatus {
    /// Every state, in protocol order.
    pub const ALL: [Self; 7] = [
        Self::Requested,
        Self::Offered,
        Self::Accepted,
        Self::Agreed,
        Self::Verified,
        Self::Finalized,
        Self::Terminated,
    ];

    /// The state's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "REQUESTED",
            Self::Offered => "OFFERED",
            Self::Accepted => "ACCEPTED",
            Self::Agreed => "AGREED",
            Self::Verified => "VERIFIED",
            Self::Finalized => "FINALIZED",
            Self::Terminated => "TERMINATED",
        }
    }

    /// The state a wire name names: exactly as [`as_str`](Self::as_str) writes it (a
    /// peer's lowercase or padded text names none).
    pub fn parse(text: &str) -> Result<Self, UnknownState> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| UnknownState(text.to_owned()))
    }

    /// No step follows a final state.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Finalized | Self::Terminated)
    }
}

impl std::fmt::Display for NegotiationStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text that names no negotiation state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a negotiation state")]
pub struct UnknownState(pub String);

/// What moves a negotiation: a message of either party, or a step of this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The consumer records its request before it sends it (again).
    RequestSent,
    /// The request waits for the provider's decision: a person's approval there, or
    /// the provider's answer that it has not decided yet.
    Pending,
    /// The provider answers with a counter-offer.
    Offered,
    /// The consumer answers a counter-offer with a new request.
    CounterRequested,
    /// The provider signs the agreement (on its own decision or a person's approval).
    Agreed,
    /// The consumer checks the provider's agreement and countersigns it.
    Countersigned,
    /// The provider checks the consumer's countersignature on its agreement.
    CountersignatureVerified,
    /// The provider holds the countersigned agreement (provider), or confirmed it
    /// does (consumer).
    Finalized,
    /// The provider refuses a request (its policy, or a person).
    Rejected,
    /// Either party ends the negotiation, with a reason.
    Terminated,
    /// The step awaited did not come within `recovery.expire_after`.
    Expired,
}

impl Event {
    /// Every event.
    pub const ALL: [Self; 11] = [
        Self::RequestSent,
        Self::Pending,
        Self::Offered,
        Self::CounterRequested,
        Self::Agreed,
        Self::Countersigned,
        Self::CountersignatureVerified,
        Self::Finalized,
        Self::Rejected,
        Self::Terminated,
        Self::Expired,
    ];
}

/// An event that cannot follow a state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{event:?} cannot follow {from}")]
pub struct IllegalTransition {
    pub from: NegotiationStatus,
    pub event: Event,
}

/// The state `event` leads to from `from`, or why it cannot follow it.
pub fn next(from: NegotiationStatus, event: Event) -> Result<NegotiationStatus, IllegalTransition> {
    use Event as E;
    use NegotiationStatus as S;
    let to = match (from, event) {
        (S::Requested, E::RequestSent | E::Pending) => S::Requested,
        (S::Requested, E::Offered) => S::Offered,
        (S::Offered, E::CounterRequested) => S::Requested,
        (S::Requested, E::Agreed) => S::Agreed,
        (S::Requested, E::Countersigned) => S::Verified,
        (S::Agreed, E::CountersignatureVerified) => S::Verified,
        (S::Verified, E::Finalized) => S::Finalized,
        (S::Requested, E::Rejected) => S::Terminated,
        // A countersigned agreement does not expire: the provider may hold it FINALIZED.
        (S::Requested | S::Agreed, E::Expired) => S::Terminated,
        (from, E::Terminated) if !from.is_final() => S::Terminated,
        (from, event) => return Err(IllegalTransition { from, event }),
    };
    Ok(to)
}

/// What a provider's answer to a request (or to the question how it stands) says,
/// by the state it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// AGREED, VERIFIED or FINALIZED: the answer carries the agreement to check.
    Agreement,
    /// TERMINATED: the provider ended the negotiation, with its reason.
    Terminated,
    /// Not decided yet: the states before AGREED, and a state this node does not
    /// know (a provider's own word for waiting is not a step of this node's).
    Undecided,
}

/// Reads the state a provider's answer to a request names (parsed once, here).
pub(crate) fn answer_to_request(state: &str) -> Answer {
    use NegotiationStatus as S;
    match NegotiationStatus::parse(state) {
        Ok(S::Agreed | S::Verified | S::Finalized) => Answer::Agreement,
        Ok(S::Terminated) => Answer::Terminated,
        Ok(S::Requested | S::Offered | S::Accepted) | Err(UnknownState(_)) => Answer::Undecided,
    }
}

/// Whether a provider's answer to the countersigned agreement names FINALIZED, the
/// only state that confirms it; any other, known or not, is an unexpected answer.
pub(crate) fn confirms_countersignature(state: &str) -> bool {
    NegotiationStatus::parse(state) == Ok(NegotiationStatus::Finalized)
}

/// What the background work does next with a stored negotiation ([`recovery_step`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// Consumer, REQUESTED: ask the provider how the request stands (and send it again
    /// if the provider never got it).
    Ask,
    /// Consumer, VERIFIED: send the countersigned agreement again.
    Countersign,
    /// Provider, AGREED: the consumer's countersignature is awaited.
    Wait,
    /// Give the step up: TERMINATED with this reason.
    Expire(String),
}

/// The next action for `n` at `now` (Unix seconds), or `None` when `n` has no step to
/// come (final, or not this node's to take). `tried`: this process has taken the step
/// up before (for a provider's AGREED, for long enough that a consumer retrying at its
/// longest backoff has come by); no step is given up before, so a node that was down
/// longer than `expire_after` first tries what it can.
///
/// A request is measured from when it was made (`created_at`), whatever the provider
/// said of it since: one waiting for a person's approval there expires too. A
/// countersigned agreement never expires by time: the provider may hold it FINALIZED,
/// so it ends only on the provider's answer ([`send_countersigned`](super::send_countersigned)).
/// A provider's AGREED is measured from when it was entered (`updated_at`).
pub(crate) fn recovery_step(
    n: &Negotiation,
    now: i64,
    expire_after: std::time::Duration,
    tried: bool,
) -> Option<Recovery> {
    let after = humantime::format_duration(expire_after);
    match (n.role, n.state) {
        (Role::Consumer, NegotiationStatus::Requested) => Some(
            if tried && crate::recovery::expired(n.created_at, now, expire_after) {
                Recovery::Expire(if n.reason == SENT {
                    format!("expired: the provider did not answer the request within {after}")
                } else {
                    format!(
                        "expired: the provider did not decide on the request within {after} \
                         (last told: {})",
                        n.reason
                    )
                })
            } else {
                Recovery::Ask
            },
        ),
        (Role::Consumer, NegotiationStatus::Verified) => Some(Recovery::Countersign),
        (Role::Provider, NegotiationStatus::Agreed) => Some(
            if tried && crate::recovery::expired(n.updated_at, now, expire_after) {
                Recovery::Expire(format!(
                    "expired: the consumer did not countersign the agreement within {after}"
                ))
            } else {
                Recovery::Wait
            },
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use NegotiationStatus as S;

    /// Every legal (state, event, next state), and nothing else.
    const LEGAL: [(S, Event, S); 13] = [
        (S::Requested, Event::RequestSent, S::Requested),
        (S::Requested, Event::Pending, S::Requested),
        (S::Requested, Event::Offered, S::Offered),
        (S::Offered, Event::CounterRequested, S::Requested),
        (S::Requested, Event::Agreed, S::Agreed),
        (S::Requested, Event::Countersigned, S::Verified),
        (S::Agreed, Event::CountersignatureVerified, S::Verified),
        (S::Verified, Event::Finalized, S::Finalized),
        (S::Requested, Event::Rejected, S::Terminated),
        (S::Requested, Event::Expired, S::Terminated),
        (S::Agreed, Event::Expired, S::Terminated),
        (S::Requested, Event::Terminated, S::Terminated),
        (S::Offered, Event::Terminated, S::Terminated),
    ];

    #[test]
    fn every_legal_transition_leads_where_the_protocol_says() {
        for (from, event, to) in LEGAL {
            assert_eq!(next(from, event), Ok(to), "{from} {event:?}");
        }
        for from in [S::Accepted, S::Agreed, S::Verified] {
            assert_eq!(next(from, Event::Terminated), Ok(S::Terminated), "{from}");
        }
    }

    #[test]
    fn every_other_transition_is_refused() {
        let terminated_from = [S::Accepted, S::Agreed, S::Verified];
        for from in S::ALL {
            for event in Event::ALL {
                let legal = LEGAL.iter().any(|&(f, e, _)| (f, e) == (from, event))
                    || (event == Event::Terminated && terminated_from.contains(&from));
                if !legal {
                    assert_eq!(
                        next(from, event),
                        Err(IllegalTransition { from, event }),
                        "{from} {event:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_final_state_accepts_no_event() {
        for from in S::ALL.into_iter().filter(|s| s.is_final()) {
            for event in Event::ALL {
                assert!(next(from, event).is_err(), "{from} {event:?}");
            }
        }
        assert_eq!(
            S::ALL
                .into_iter()
                .filter(|s| s.is_final())
                .collect::<Vec<_>>(),
            [S::Finalized, S::Terminated]
        );
    }

    #[test]
    fn no_step_goes_back_or_skips_the_countersignature() {
        for (from, event) in [
            (S::Agreed, Event::RequestSent),
            (S::Agreed, Event::Pending),
            (S::Agreed, Event::Agreed),
            (S::Agreed, Event::Finalized),
            (S::Agreed, Event::Countersigned),
            (S::Requested, Event::Finalized),
            (S::Requested, Event::CountersignatureVerified),
            (S::Verified, Event::Expired),
            (S::Verified, Event::Rejected),
            (S::Verified, Event::Agreed),
            (S::Finalized, Event::Terminated),
            (S::Terminated, Event::RequestSent),
        ] {
            assert!(next(from, event).is_err(), "{from} {event:?}");
        }
    }

    #[test]
    fn each_wire_name_parses_to_its_state() {
        for s in S::ALL {
            assert_eq!(S::parse(s.as_str()), Ok(s));
            assert_eq!(s.to_string(), s.as_str());
            // The stored form is the wire name.
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert_eq!(S::parse("FINALIZED"), Ok(S::Finalized));
    }

    #[test]
    fn a_provider_s_answer_is_read_by_the_state_it_names() {
        for state in ["AGREED", "VERIFIED", "FINALIZED"] {
            assert_eq!(answer_to_request(state), Answer::Agreement, "{state}");
        }
        assert_eq!(answer_to_request("TERMINATED"), Answer::Terminated);
        // What a provider says while it decides, in words this node knows or not, is
        // not taken for an agreement or an end.
        for state in [
            "REQUESTED",
            "OFFERED",
            "ACCEPTED",
            "",
            "agreed",
            " AGREED",
            "TERMINATED ",
            "terminated",
            "PENDING",
        ] {
            assert_eq!(answer_to_request(state), Answer::Undecided, "{state:?}");
        }
        assert!(confirms_countersignature("FINALIZED"));
        for state in [
            "AGREED",
            "VERIFIED",
            "TERMINATED",
            "finalized",
            "FINALIZED ",
            "",
        ] {
            assert!(!confirms_countersignature(state), "{state:?}");
        }
    }

    #[test]
    fn unknown_lowercase_or_padded_names_are_refused() {
        for text in [
            "",
            "finalized",
            "Finalized",
            " FINALIZED",
            "FINALIZED ",
            "FINALIZED\n",
            "DONE",
            "REQUESTED,AGREED",
        ] {
            assert_eq!(
                S::parse(text),
                Err(UnknownState(text.to_owned())),
                "{text:?}"
            );
        }
    }
}

#[cfg(test)]
mod recovery_tests {
    use super::*;
    use crate::contract::REQUEST_PAYLOAD_TYPE;
    use crate::identity::{Envelope, ParticipantId};
    use std::time::Duration;

    fn negotiation(role: Role, state: NegotiationStatus, reason: &str) -> Negotiation {
        let key = crate::identity::SigningKey::generate().unwrap();
        Negotiation {
            id: "neg-1".into(),
            role,
            peer: ParticipantId::parse("91330100MA2L0G0013").unwrap(),
            peer_address: "127.0.0.1:7700".into(),
            offer_id: "offer".into(),
            purpose: "statistics".into(),
            state,
            reason: reason.into(),
            failed_constraints: Vec::new(),
            request: Envelope::sign_json(REQUEST_PAYLOAD_TYPE, &"request", &key),
            offer_policy: None,
            offer_classification: None,
            agreement: None,
            agreement_id: None,
            created_at: 1_000,
            updated_at: 1_000,
        }
    }

    const LIMIT: Duration = Duration::from_secs(60);

    #[test]
    fn a_request_not_answered_is_asked_about_until_it_expires() {
        let n = negotiation(Role::Consumer, NegotiationStatus::Requested, SENT);
        assert_eq!(recovery_step(&n, 1_059, LIMIT, true), Some(Recovery::Ask));
        match recovery_step(&n, 1_060, LIMIT, true) {
            Some(Recovery::Expire(why)) => {
                assert_eq!(
                    why,
                    "expired: the provider did not answer the request within 1m"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_step_expires_before_this_process_tried_it() {
        // After a downtime longer than the limit, each step is first tried once.
        for (role, state) in [
            (Role::Consumer, NegotiationStatus::Requested),
            (Role::Consumer, NegotiationStatus::Verified),
            (Role::Provider, NegotiationStatus::Agreed),
        ] {
            let n = negotiation(role, state, SENT);
            assert!(
                !matches!(
                    recovery_step(&n, 1_000_000, LIMIT, false),
                    Some(Recovery::Expire(_))
                ),
                "{role:?} {state}"
            );
        }
    }

    #[test]
    fn a_request_waiting_for_a_person_expires_from_when_it_was_made() {
        let mut n = negotiation(
            Role::Consumer,
            NegotiationStatus::Requested,
            "waiting for a person's approval at the provider (important data)",
        );
        // The provider's answer came later; the request's age still counts.
        n.updated_at = 1_050;
        assert_eq!(recovery_step(&n, 1_059, LIMIT, true), Some(Recovery::Ask));
        assert!(matches!(
            recovery_step(&n, 1_060, LIMIT, true),
            Some(Recovery::Expire(why)) if why.contains("did not decide") && why.contains("approval")
        ));
    }

    #[test]
    fn a_countersignature_is_sent_again_until_the_provider_answers() {
        let n = negotiation(Role::Consumer, NegotiationStatus::Verified, "countersigned");
        assert_eq!(
            recovery_step(&n, 1_000, LIMIT, true),
            Some(Recovery::Countersign)
        );
        assert_eq!(
            recovery_step(&n, 1_000_000, LIMIT, true),
            Some(Recovery::Countersign),
            "the provider may hold it FINALIZED: only its answer ends it"
        );
    }

    #[test]
    fn a_provider_waits_for_the_countersignature_until_it_expires() {
        let n = negotiation(Role::Provider, NegotiationStatus::Agreed, "");
        assert_eq!(recovery_step(&n, 1_059, LIMIT, true), Some(Recovery::Wait));
        assert!(matches!(
            recovery_step(&n, 1_060, LIMIT, true),
            Some(Recovery::Expire(why)) if why.contains("did not countersign")
        ));
    }

    #[test]
    fn final_states_and_the_other_side_s_steps_have_nothing_to_retry() {
        for (role, state) in [
            (Role::Consumer, NegotiationStatus::Finalized),
            (Role::Consumer, NegotiationStatus::Terminated),
            (Role::Consumer, NegotiationStatus::Agreed),
            (Role::Provider, NegotiationStatus::Finalized),
            (Role::Provider, NegotiationStatus::Terminated),
            (Role::Provider, NegotiationStatus::Requested),
            (Role::Provider, NegotiationStatus::Verified),
        ] {
            let n = negotiation(role, state, "");
            assert_eq!(
                recovery_step(&n, 1_000_000, LIMIT, true),
                None,
                "{role:?} {state}"
            );
            assert!(
                !n.unfinished(),
                "{role:?} {state} is not in the poller's set"
            );
        }
        for (role, state) in [
            (Role::Consumer, NegotiationStatus::Requested),
            (Role::Consumer, NegotiationStatus::Verified),
            (Role::Provider, NegotiationStatus::Agreed),
        ] {
            assert!(
                negotiation(role, state, "").unfinished(),
                "{role:?} {state}"
            );
        }
    }
}
