//! Errors of loading and compiling a policy. Every variant that concerns a rule names
//! the rule (`permission "research"` or `permission 2`) and, where one is at fault, the
//! constraint (by its position, `constraint 1.2` for the second inside the first, and
//! its text).

use std::fmt;

use crate::model::RuleKind;

/// Names a rule in messages and decisions: its kind and its UID or position.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct RuleRef {
    /// Permission or prohibition.
    pub kind: RuleKind,
    /// The rule's UID, or its 1-based position when it has none (`"2"`).
    pub name: String,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            RuleKind::Permission => "permission",
            RuleKind::Prohibition => "prohibition",
        };
        if self.name.bytes().all(|b| b.is_ascii_digit()) {
            write!(f, "{kind} {}", self.name)
        } else {
            write!(f, "{kind} \"{}\"", self.name)
        }
    }
}

/// Names a constraint inside a rule: its path (`1`, `2.1`) and its text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ConstraintRef {
    /// 1-based path: `2` is the rule's second constraint, `2.1` the first inside it.
    pub path: String,
    /// The constraint as text (`count lt 3`), or what could be read of it.
    pub text: String,
}

impl fmt::Display for ConstraintRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "constraint {} ({})", self.path, self.text)
    }
}

/// Why a policy could not be loaded or compiled. Loading fails closed: nothing in a
/// policy is ever skipped or guessed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The text is not well-formed TOML, JSON or JSON-LD.
    #[error("{format} syntax: {message}")]
    Syntax {
        /// `TOML`, `JSON` or `JSON-LD`.
        format: &'static str,
        /// The parser's message.
        message: String,
    },
    /// A policy-level field is missing or wrong.
    #[error("policy field `{field}`: {message}")]
    Field {
        /// The field.
        field: String,
        /// What is wrong and what to write instead.
        message: String,
    },
    /// The action is not one of the profile's.
    #[error(
        "{rule}: unknown action `{name}`; use one of use, read, transfer, distribute, derive, aggregate, delete"
    )]
    UnknownAction {
        /// The rule.
        rule: RuleRef,
        /// The unknown name.
        name: String,
    },
    /// The left operand is not one of the profile's.
    #[error(
        "{rule}, {constraint}: unknown left operand `{name}`; use one of dateTime, elapsedTime, count, purpose, recipient, recipientKind, sector, region, classification, securityLevel, role"
    )]
    UnknownLeftOperand {
        /// The rule.
        rule: RuleRef,
        /// The constraint.
        constraint: ConstraintRef,
        /// The unknown name.
        name: String,
    },
    /// The operator is not one of the profile's.
    #[error(
        "{rule}, {constraint}: unknown operator `{name}`; use one of eq, neq, lt, lteq, gt, gteq, isA, isPartOf, isAnyOf, isAllOf, isNoneOf"
    )]
    UnknownOperator {
        /// The rule.
        rule: RuleRef,
        /// The constraint.
        constraint: ConstraintRef,
        /// The unknown name.
        name: String,
    },
    /// The operator is known but not allowed with this operand.
    #[error(
        "{rule}, {constraint}: operator `{operator}` cannot be used with `{operand}`; use one of {allowed}"
    )]
    OperatorNotAllowed {
        /// The rule.
        rule: RuleRef,
        /// The constraint.
        constraint: ConstraintRef,
        /// The operand.
        operand: String,
        /// The operator.
        operator: String,
        /// The operators that are allowed, comma separated.
        allowed: String,
    },
    /// The right operand has the wrong type (a count compared with a date).
    #[error("{rule}, {constraint}: `{operand}` is compared with {found}, but it needs {expected}")]
    TypeMismatch {
        /// The rule.
        rule: RuleRef,
        /// The constraint.
        constraint: ConstraintRef,
        /// The operand.
        operand: String,
        /// What it needs.
        expected: String,
        /// What was written.
        found: String,
    },
    /// The right operand has the right type but a bad value (a region code that does
    /// not exist, a purpose missing from the vocabulary, a check character).
    #[error("{rule}, {constraint}: {message}")]
    InvalidValue {
        /// The rule.
        rule: RuleRef,
        /// The constraint.
        constraint: ConstraintRef,
        /// What is wrong.
        message: String,
    },
    /// A constraint is not shaped as an atomic or logical constraint.
    #[error("{rule}, {constraint}: {message}")]
    MalformedConstraint {
        /// The rule.
        rule: RuleRef,
        /// The constraint.
        constraint: ConstraintRef,
        /// What is wrong.
        message: String,
    },
    /// No request can ever satisfy the rule's constraints together.
    #[error(
        "{rule}: constraints can never hold together: {}; remove or widen one of them",
        list(constraints)
    )]
    Contradiction {
        /// The rule.
        rule: RuleRef,
        /// The constraints that conflict.
        constraints: Vec<ConstraintRef>,
    },
    /// A prohibition applies whenever the permission would, so the permission can
    /// never be used.
    #[error(
        "{permission} can never be used: {prohibition} always applies when it would; remove one or narrow the prohibition"
    )]
    AlwaysProhibited {
        /// The dead permission.
        permission: RuleRef,
        /// The prohibition that overrides it.
        prohibition: RuleRef,
    },
    /// The policy grants more than the node's classification guardrails allow.
    #[error("{rule}: not allowed for {classification} data: {reason}")]
    Guardrail {
        /// The rule (or the policy as a whole, named `policy`).
        rule: RuleRef,
        /// The product's classification.
        classification: String,
        /// What the guardrail requires.
        reason: String,
    },
    /// A duty is malformed.
    #[error("{rule}: duty {index}: {message}")]
    InvalidDuty {
        /// The rule the duty belongs to (for policy obligations: `obligation`).
        rule: String,
        /// 1-based position of the duty.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// A policy may hold at most [`crate::MAX_RULES`] permissions and as many
    /// prohibitions.
    #[error(
        "the policy has {count} {kind}s; at most {max} are allowed: split it into several products' policies"
    )]
    TooManyRules {
        /// `permission` or `prohibition`.
        kind: &'static str,
        /// How many it has.
        count: usize,
        /// The limit.
        max: usize,
    },
}

fn list(cs: &[ConstraintRef]) -> String {
    cs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" and ")
}
