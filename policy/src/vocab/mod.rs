//! The typed values a policy talks about: classification levels, recipient kinds,
//! administrative region codes, participant IDs (USCC), durations, and the purpose
//! vocabulary with its `isA` hierarchy.
//!
//! Every type here can only hold a valid value ("parse, don't validate"): the
//! parsers reject bad input with a message that says what is wrong.

mod classification;
mod duration;
mod participant;
mod purpose;
mod region;

pub use classification::Classification;
pub(crate) use duration::describe_duration;
pub use duration::{format_duration, parse_duration};
pub use participant::{ParticipantCode, RecipientKind, UsccError};
pub use purpose::PurposeVocabulary;
pub use region::{RegionCode, RegionCodeError};
