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
    pub fn parse(text: &str) -> Result<Self, UnknownNegotiationState> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| UnknownNegotiationState(text.to_owned()))
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
pub struct UnknownNegotiationState(pub String);

/// What moves a negotiation: a message of either party, or a step of this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NegotiationEvent {
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

impl NegotiationEvent {
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
    pub event: NegotiationEvent,
}

/// The state `event` leads to from `from`, or why it cannot follow it.
pub fn next(
    from: NegotiationStatus,
    event: NegotiationEvent,
) -> Result<NegotiationStatus, IllegalTransition> {
    use NegotiationEvent as E;
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
        Ok(S::Requested | S::Offered | S::Accepted) | Err(UnknownNegotiationState(_)) => {
            Answer::Undecided
        }
    }
}

/// Whether a provider's answer to the countersigned agreement names FINALIZED, the
/// only state that confirms it; any other, known or not, is an unexpected answer.
pub(crate) fn confirms_countersignature(state: &str) -> bool {
    NegotiationStatus::parse(state) == Ok(NegotiationStatus::Finalized)
}

#[cfg(test)]
mod tests {
    use super::*;
    use NegotiationStatus as S;

    /// Every legal (state, event, next state), and nothing else.
    const LEGAL: [(S, NegotiationEvent, S); 13] = [
        (S::Requested, NegotiationEvent::RequestSent, S::Requested),
        (S::Requested, NegotiationEvent::Pending, S::Requested),
        (S::Requested, NegotiationEvent::Offered, S::Offered),
        (S::Offered, NegotiationEvent::CounterRequested, S::Requested),
        (S::Requested, NegotiationEvent::Agreed, S::Agreed),
        (S::Requested, NegotiationEvent::Countersigned, S::Verified),
        (
            S::Agreed,
            NegotiationEvent::CountersignatureVerified,
            S::Verified,
        ),
        (S::Verified, NegotiationEvent::Finalized, S::Finalized),
        (S::Requested, NegotiationEvent::Rejected, S::Terminated),
        (S::Requested, NegotiationEvent::Expired, S::Terminated),
        (S::Agreed, NegotiationEvent::Expired, S::Terminated),
        (S::Requested, NegotiationEvent::Terminated, S::Terminated),
        (S::Offered, NegotiationEvent::Terminated, S::Terminated),
    ];

    #[test]
    fn every_legal_transition_leads_where_the_protocol_says() {
        for (from, event, to) in LEGAL {
            assert_eq!(next(from, event), Ok(to), "{from} {event:?}");
        }
        for from in [S::Accepted, S::Agreed, S::Verified] {
            assert_eq!(
                next(from, NegotiationEvent::Terminated),
                Ok(S::Terminated),
                "{from}"
            );
        }
    }

    #[test]
    fn every_other_transition_is_refused() {
        let terminated_from = [S::Accepted, S::Agreed, S::Verified];
        for from in S::ALL {
            for event in NegotiationEvent::ALL {
                let legal = LEGAL.iter().any(|&(f, e, _)| (f, e) == (from, event))
                    || (event == NegotiationEvent::Terminated && terminated_from.contains(&from));
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
            for event in NegotiationEvent::ALL {
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
            (S::Agreed, NegotiationEvent::RequestSent),
            (S::Agreed, NegotiationEvent::Pending),
            (S::Agreed, NegotiationEvent::Agreed),
            (S::Agreed, NegotiationEvent::Finalized),
            (S::Agreed, NegotiationEvent::Countersigned),
            (S::Requested, NegotiationEvent::Finalized),
            (S::Requested, NegotiationEvent::CountersignatureVerified),
            (S::Verified, NegotiationEvent::Expired),
            (S::Verified, NegotiationEvent::Rejected),
            (S::Verified, NegotiationEvent::Agreed),
            (S::Finalized, NegotiationEvent::Terminated),
            (S::Terminated, NegotiationEvent::RequestSent),
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
                Err(UnknownNegotiationState(text.to_owned())),
                "{text:?}"
            );
        }
    }
}
