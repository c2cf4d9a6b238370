//! The compiled form of a policy: what [`crate::compile()`] produces and what the
//! evaluator and the static analysis read. It sits below both so that compiling (which
//! runs the analysis' load-time checks) and the analysis (which reads compiled rules)
//! share these types without importing each other. The guardrails live here because a
//! compiled policy keeps the ones it was checked against.

use std::sync::Arc;

use crate::error::{ConstraintRef, RuleRef};
use crate::model::{Action, Duty, LeftOperand, LogicalOperator, Operator, Policy};
use crate::vocab::{Classification, PurposeVocabulary, RegionCode};

/// Node-wide limits above every product policy (DESIGN.md, "Classification and
/// grading"). The node builds this from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Guardrails {
    /// Regions inside which important data may be used. Every permission on important
    /// data must limit the recipient's region to these (with `region isPartOf`, `eq`
    /// or `isAnyOf`). Empty means no region is permitted, so important data cannot be
    /// offered at all until the node configures one.
    pub important_regions: Vec<RegionCode>,
    /// Whether every agreement on important data waits for a human approval (the
    /// decision at negotiation scope says so in [`crate::Decision::approval_required`]).
    pub important_requires_approval: bool,
}

impl Default for Guardrails {
    /// No permitted region for important data (fail closed) and approval required.
    fn default() -> Self {
        Guardrails {
            important_regions: Vec::new(),
            important_requires_approval: true,
        }
    }
}

/// A policy checked against its context and ready to evaluate. Cheap to share behind
/// an `Arc`; evaluation never changes it.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub(crate) policy: Policy,
    pub(crate) classification: Classification,
    pub(crate) vocabulary: Arc<PurposeVocabulary>,
    pub(crate) guardrails: Guardrails,
    pub(crate) permissions: Vec<CRule>,
    pub(crate) prohibitions: Vec<CRule>,
    /// Duties for a permit under several permissions are the union; when only one
    /// permission matches its list is shared as is.
    pub(crate) no_duties: Arc<[Duty]>,
    /// Whether any constraint reads the purpose (saves the vocabulary look-up).
    pub(crate) reads_purpose: bool,
}

impl CompiledPolicy {
    /// The policy as written.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The classification it was compiled for.
    pub fn classification(&self) -> Classification {
        self.classification
    }

    /// The vocabulary it was compiled with.
    pub fn vocabulary(&self) -> &PurposeVocabulary {
        &self.vocabulary
    }
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub(crate) struct CRule {
    pub(crate) rref: Arc<RuleRef>,
    pub(crate) action: Action,
    pub(crate) constraints: Vec<CConstraint>,
    /// The rule's duties followed by the policy's obligations.
    pub(crate) duties: Arc<[Duty]>,
}

/// A compiled constraint.
#[derive(Debug, Clone)]
pub(crate) enum CConstraint {
    Atom(CAtom),
    Logical(LogicalOperator, Vec<CConstraint>, ConstraintRef),
}

/// A compiled atomic constraint: the right operand resolved to numbers, vocabulary IDs
/// or region codes.
#[derive(Debug, Clone)]
pub(crate) struct CAtom {
    pub(crate) left: LeftOperand,
    pub(crate) op: Operator,
    pub(crate) vals: CVals,
    pub(crate) cref: ConstraintRef,
}

/// Right operands by kind. Ordered and enumerated operands (time, durations, counts,
/// levels, classification, kind) all become `i64`.
#[derive(Debug, Clone)]
pub(crate) enum CVals {
    Num(Box<[i64]>),
    Purpose(Box<[u16]>),
    Region(Box<[RegionCode]>),
    Str(Box<[Box<str>]>),
}
