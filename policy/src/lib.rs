//! # liutong-policy — the usage-policy language of Liutong
//!
//! A pure library (no I/O, no clock, no storage): the node passes text in and gets
//! typed policies, decisions and duties out. It is the brain of usage control, asked at
//! catalog, negotiation, transfer and every use.
//!
//! ## The map
//!
//! | module | what it does |
//! |---|---|
//! | [`model`] | the policy model: [`Policy`], [`Rule`], [`Action`], [`Constraint`], [`Duty`] |
//! | [`vocab`] | typed values: [`Classification`], [`RegionCode`], [`ParticipantCode`], [`PurposeVocabulary`], durations |
//! | [`authoring`] | the TOML and JSON authoring forms ([`Policy::from_toml`], [`Policy::from_json`]) |
//! | [`odrl`] | ODRL 2.2 JSON-LD import and export ([`Policy::from_odrl`], [`Policy::to_odrl`]) |
//! | [`mod@compile`] | load-time checks against a classification and the guardrails: [`compile()`] → [`CompiledPolicy`] |
//! | [`mod@evaluate`] | [`evaluate()`]: request + state → [`Decision`] with failed constraints and duties |
//! | [`analysis`] | [`implies`] (an agreement only narrows its offer) and [`narrowing_gaps`] |
//! | [`error`] | [`PolicyError`]: every load error names the rule and the constraint |
//!
//! ## How the node uses it
//!
//! ```
//! use liutong_policy::*;
//! use time::macros::datetime;
//!
//! let policy = Policy::from_toml(r#"
//! uid = "urn:liutong:policy:example"
//! type = "offer"
//! assigner = "91110000600037341L"
//! target = "urn:liutong:product:traffic-flow"
//!
//! [[permission]]
//! action = "use"
//! constraint = [
//!   { leftOperand = "purpose", operator = "isA", rightOperand = "research" },
//!   { leftOperand = "count", operator = "lt", rightOperand = 10 },
//! ]
//! duty = [{ action = "log" }]
//! "#)?;
//! let compiled = compile(policy, &CompileContext::new(Classification::General2))?;
//!
//! let request = Request {
//!     scope: Scope::Use,
//!     action: Action::Read,
//!     requester: Requester {
//!         participant: ParticipantCode::parse("91110000600037341L").unwrap(),
//!         kind: RecipientKind::Government,
//!         sector: None,
//!         region: Some(RegionCode::parse("330106").unwrap()),
//!         security_level: Some(3),
//!         roles: vec![],
//!     },
//!     purpose: Some("academicResearch".into()),
//! };
//! let state = State { now: datetime!(2025-06-01 0:00 UTC), elapsed: std::time::Duration::ZERO, uses: 3 };
//! let decision = evaluate(&compiled, &request, &state);
//! assert!(decision.is_permit());
//! assert_eq!(&*decision.duties, &[Duty::Log]);
//! # Ok::<(), PolicyError>(())
//! ```
//!
//! ## Semantics in one paragraph
//!
//! Deny by default; a prohibition overrides a permission; the order of rules never
//! matters for the outcome. A permission applies when its action includes the
//! requested one (`use` includes `read`, `aggregate`, `derive`) and all its constraints
//! hold; a prohibition applies when its action overlaps the requested one and its
//! constraints hold. A constraint on an attribute the request does not give fails a
//! permission and lets a prohibition apply (fail closed), except at catalog scope. Core
//! data is never permitted outside scope `use`. Everything that can be checked when a
//! policy is loaded is checked then ([`compile()`]), not discovered at run time.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// PolicyError carries the rule and constraint by value so messages stand alone; it is
// returned only when a policy is loaded, never on the evaluation path, so its size
// does not matter.
#![allow(clippy::result_large_err)]

pub mod analysis;
pub mod authoring;
pub mod compile;
mod compiled;
pub mod error;
pub mod evaluate;
#[doc(hidden)]
pub mod fuzzing;
pub mod model;
pub mod odrl;
pub mod vocab;

pub use analysis::{implies, narrowing_gaps};
pub use compile::{CompileContext, CompiledPolicy, Guardrails, MAX_RULES, compile};
pub use error::{ConstraintRef, PolicyError, RuleRef};
pub use evaluate::{
    Decision, Denial, FailedConstraint, Outcome, Request, Requester, Scope, State, evaluate,
};
pub use model::{
    Action, Atomic, ColumnBounds, Constraint, DeleteAfter, Duty, Epsilon, FieldSelector, FieldType,
    Generalization, LeftOperand, LogicalOperator, MaskMethod, MaskRule, Operator, Policy,
    PolicyType, RightOperand, Rule, RuleKind, Value, ValueType,
};
pub use vocab::{
    Classification, ParticipantCode, PurposeVocabulary, RecipientKind, RegionCode, RegionCodeError,
    UsccError, format_duration, parse_duration,
};
