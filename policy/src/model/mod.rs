//! The policy model: what a policy *is*, independent of how it was written (TOML, JSON
//! or ODRL JSON-LD). Every value here is typed; the parsers in [`crate::authoring`] and
//! [`crate::odrl`] are the only ways text becomes a [`Policy`].
//!
//! - `policy.rs`: the policy, its rules and the actions they are about;
//! - `constraint.rs`: constraints, operands, operators and values;
//! - `duty.rs`: duties and the masking rules they carry.

mod constraint;
mod duty;
mod policy;

pub(crate) use constraint::format_datetime;
pub use constraint::{
    Atomic, Constraint, LeftOperand, LogicalOperator, Operator, RightOperand, Value, ValueType,
};
pub use duty::{
    ColumnBounds, DeleteAfter, Duty, Epsilon, FieldSelector, FieldType, Generalization, MaskMethod,
    MaskRule,
};
pub use policy::{Action, Policy, PolicyType, Rule, RuleKind};
