//! The transfer state machine of a received copy: which state may follow which,
//! decided by a pure function.
//!
//! A copy is STARTED when its manifest is on record and COMPLETED when every chunk and
//! the whole payload verified; TERMINATED ends it otherwise. A pull that stops before
//! the last chunk (a chunk limit, a cut, a chunk refused) leaves the copy STARTED, to be
//! resumed from its synced chunks: the protocol's SUSPENDED is not a state of its own
//! here, and a transfer is requested by the pull itself, so no REQUESTED is stored.
//!
//! A state string that arrives (the local API's progress, a stored record) is parsed
//! here once, and only the enum goes further.

use serde::{Deserialize, Serialize};

/// The state of a received copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TransferState {
    Started,
    Completed,
    Terminated,
}

impl TransferState {
    /// Every state.
    pub const ALL: [Self; 3] = [Self::Started, Self::Completed, Self::Terminated];

    /// The state's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "STARTED",
            Self::Completed => "COMPLETED",
            Self::Terminated => "TERMINATED",
        }
    }

    /// The state a wire name names: exactly as [`as_str`](Self::as_str) writes it
    /// (lowercase or padded text names none).
    pub fn parse(text: &str) -> Result<Self, UnknownTransferState> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| UnknownTransferState(text.to_owned()))
    }

    /// No step follows a final state.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Terminated)
    }
}

impl std::fmt::Display for TransferState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text that names no transfer state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a transfer state")]
pub struct UnknownTransferState(pub String);

/// What moves a received copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferEvent {
    /// A pull takes up a copy that was started before.
    Resumed,
    /// Chunks are durable on disk, and the record counts them.
    ChunksSynced,
    /// A chunk did not match the manifest and was not kept.
    ChunkRefused,
    /// The pull stopped before the last chunk; a later one resumes it.
    Suspended,
    /// Every chunk and the whole payload verified.
    Completed,
    /// The transfer is given up, with a reason.
    Terminated,
}

impl TransferEvent {
    /// Every event.
    pub const ALL: [Self; 6] = [
        Self::Resumed,
        Self::ChunksSynced,
        Self::ChunkRefused,
        Self::Suspended,
        Self::Completed,
        Self::Terminated,
    ];
}

/// An event that cannot follow a state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the transfer is {from}; {event:?} cannot follow it")]
pub struct IllegalTransition {
    pub from: TransferState,
    pub event: TransferEvent,
}

/// The state `event` leads to from `from`, or why it cannot follow it.
pub fn next(from: TransferState, event: TransferEvent) -> Result<TransferState, IllegalTransition> {
    use TransferEvent as E;
    use TransferState as S;
    match (from, event) {
        (S::Started, E::Resumed | E::ChunksSynced | E::ChunkRefused | E::Suspended) => {
            Ok(S::Started)
        }
        (S::Started, E::Completed) => Ok(S::Completed),
        (S::Started, E::Terminated) => Ok(S::Terminated),
        (from, event) => Err(IllegalTransition { from, event }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TransferState as S;

    const LEGAL: [(S, TransferEvent, S); 6] = [
        (S::Started, TransferEvent::Resumed, S::Started),
        (S::Started, TransferEvent::ChunksSynced, S::Started),
        (S::Started, TransferEvent::ChunkRefused, S::Started),
        (S::Started, TransferEvent::Suspended, S::Started),
        (S::Started, TransferEvent::Completed, S::Completed),
        (S::Started, TransferEvent::Terminated, S::Terminated),
    ];

    #[test]
    fn every_legal_transition_leads_where_the_protocol_says() {
        for (from, event, to) in LEGAL {
            assert_eq!(next(from, event), Ok(to), "{from} {event:?}");
        }
    }

    #[test]
    fn every_other_transition_is_refused() {
        for from in S::ALL {
            for event in TransferEvent::ALL {
                if !LEGAL.iter().any(|&(f, e, _)| (f, e) == (from, event)) {
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
            for event in TransferEvent::ALL {
                assert!(next(from, event).is_err(), "{from} {event:?}");
            }
        }
        assert_eq!(
            S::ALL
                .into_iter()
                .filter(|s| s.is_final())
                .collect::<Vec<_>>(),
            [S::Completed, S::Terminated]
        );
        // A completed copy is not pulled again, nor its chunks counted anew.
        assert!(next(S::Completed, TransferEvent::Resumed).is_err());
        assert!(next(S::Completed, TransferEvent::ChunksSynced).is_err());
    }

    #[test]
    fn each_wire_name_parses_to_its_state() {
        for s in S::ALL {
            assert_eq!(S::parse(s.as_str()), Ok(s));
            assert_eq!(s.to_string(), s.as_str());
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
    }

    #[test]
    fn unknown_lowercase_or_padded_names_are_refused() {
        for text in [
            "",
            "completed",
            "Completed",
            " COMPLETED",
            "COMPLETED ",
            "REQUESTED",
            "SUSPENDED",
        ] {
            assert_eq!(
                S::parse(text),
                Err(UnknownTransferState(text.to_owned())),
                "{text:?}"
            );
        }
    }
}
