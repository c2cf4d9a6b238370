//! Evaluation: a pure function from a compiled policy, a request and a snapshot of the
//! usage state to a [`Decision`].
//!
//! The rules, in order of precedence:
//! 1. Guardrails: core data is only ever used at its own node (scope `use`).
//! 2. A prohibition whose action overlaps the requested one (either includes the
//!    other) and whose constraints hold denies.
//! 3. A permission whose action includes the requested one (`use` includes `read`) and
//!    whose constraints all hold permits, with its duties.
//! 4. Otherwise deny.
//!
//! A constraint on something the request does not say (no purpose declared, a purpose
//! outside the vocabulary, no region, sector or security level) is *unknown*: it fails
//! a permission and lets a prohibition apply (fail closed). Only at catalog scope, where
//! the question is whether the requester could ever agree to the offer, is an unknown
//! held neither for nor against it.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::compiled::{CAtom, CConstraint, CRule, CVals, CompiledPolicy};
use crate::error::{ConstraintRef, RuleRef};
use crate::model::{Action, Duty, LeftOperand, LogicalOperator, Operator, format_datetime};
use crate::vocab::{
    Classification, ParticipantCode, PurposeVocabulary, RecipientKind, RegionCode,
    describe_duration,
};

/// Where in the data circulation flow a decision is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Scope {
    /// Whether an offer is listed to a requester.
    Catalog,
    /// Whether an agreement may be signed.
    Negotiation,
    /// Whether data may be delivered under an agreement.
    Transfer,
    /// Whether a local application may use received data.
    Use,
}

impl Scope {
    /// The scope's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Catalog => "catalog",
            Scope::Negotiation => "negotiation",
            Scope::Transfer => "transfer",
            Scope::Use => "use",
        }
    }
}

/// Who asks, from its verified membership credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requester {
    /// The participant ID.
    pub participant: ParticipantCode,
    /// The participant's kind.
    pub kind: RecipientKind,
    /// Its sector, if the credential states one.
    pub sector: Option<String>,
    /// Its region, if the credential states one.
    pub region: Option<RegionCode>,
    /// Its security protection level (1 to 5), if known.
    pub security_level: Option<u8>,
    /// Its roles.
    pub roles: Vec<String>,
}

/// What is asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Where in the flow.
    pub scope: Scope,
    /// The action wanted.
    pub action: Action,
    /// Who asks.
    pub requester: Requester,
    /// The declared purpose (a vocabulary term), if any.
    pub purpose: Option<String>,
}

/// The usage state the caller keeps (the policy crate keeps none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The current time (the caller's clock).
    #[serde(with = "time::serde::rfc3339")]
    pub now: OffsetDateTime,
    /// Time since the agreement (zero before there is one).
    pub elapsed: Duration,
    /// Uses so far, not counting the one being decided.
    pub uses: u64,
}

impl State {
    /// The state before any agreement: no time elapsed, no uses.
    pub fn initial(now: OffsetDateTime) -> Self {
        State {
            now,
            elapsed: Duration::ZERO,
            uses: 0,
        }
    }
}

/// Permit or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// The request may proceed, with the duties of the decision.
    Permit,
    /// The request is refused.
    Deny,
}

/// Why a request was denied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Denial {
    /// No permission is about the requested action.
    NoPermission,
    /// Permissions are about the action, but each has a constraint that does not hold
    /// (listed in [`Decision::failed`]).
    ConstraintsFailed,
    /// A prohibition applies (named in [`Decision::rule`]).
    Prohibited,
    /// A node-wide classification guardrail refuses it.
    Guardrail {
        /// What the guardrail says.
        reason: String,
    },
}

/// A constraint that did not hold, in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedConstraint {
    /// The rule it belongs to.
    pub rule: RuleRef,
    /// The constraint.
    pub constraint: ConstraintRef,
    /// Why it does not hold, for a person ("the declared purpose is marketing, which
    /// is not a kind of research").
    pub reason: String,
}

/// The answer of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Permit or deny.
    pub outcome: Outcome,
    /// The rule that decided: the permission that permits (the first in written
    /// order when several do) or the prohibition that denies; none for a default deny.
    pub rule: Option<Arc<RuleRef>>,
    /// Why it was denied (none on a permit).
    pub denial: Option<Denial>,
    /// On a default deny: every constraint of every permission about the action that
    /// did not hold.
    pub failed: Vec<FailedConstraint>,
    /// On a permit: the duties to perform (of every permission that permits, and the
    /// policy's obligations).
    pub duties: Arc<[Duty]>,
    /// On a permit at negotiation scope for important data: the agreement waits for a
    /// human approval.
    pub approval_required: bool,
}

impl Decision {
    /// `true` on a permit.
    pub fn is_permit(&self) -> bool {
        self.outcome == Outcome::Permit
    }

    /// A readable explanation, one line per reason.
    pub fn explain(&self) -> String {
        let mut out = String::new();
        match (&self.outcome, &self.denial) {
            (Outcome::Permit, _) => {
                out.push_str("permitted");
                if let Some(r) = &self.rule {
                    out.push_str(&format!(" by {r}"));
                }
                if self.approval_required {
                    out.push_str(", once a person approves the agreement (important data)");
                }
                if !self.duties.is_empty() {
                    out.push_str(", with duties:");
                    for d in self.duties.iter() {
                        out.push_str(&format!("\n  - {d}"));
                    }
                }
            }
            (Outcome::Deny, Some(Denial::Guardrail { reason })) => {
                out.push_str(&format!("denied by the classification guardrail: {reason}"));
            }
            (Outcome::Deny, Some(Denial::Prohibited)) => {
                out.push_str("denied: ");
                match &self.rule {
                    Some(r) => out.push_str(&format!("{r} forbids it")),
                    None => out.push_str("a prohibition forbids it"),
                }
                for f in &self.failed {
                    out.push_str(&format!("\n  - {}: {}", f.constraint, f.reason));
                }
            }
            (Outcome::Deny, Some(Denial::NoPermission)) | (Outcome::Deny, None) => {
                out.push_str("denied: no permission covers this action (deny by default)");
            }
            (Outcome::Deny, Some(Denial::ConstraintsFailed)) => {
                out.push_str("denied: no permission's constraints all hold:");
                for f in &self.failed {
                    out.push_str(&format!("\n  - {}, {}: {}", f.rule, f.constraint, f.reason));
                }
            }
        }
        out
    }
}

/// Three-valued truth: a constraint on an attribute the request does not give is
/// `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Truth {
    True,
    False,
    Unknown,
}

/// The value of a left operand for one request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Subject<'a> {
    Num(i64),
    Purpose(u16),
    Region(RegionCode),
    Str(&'a str),
    Roles(&'a [String]),
}

/// Everything a constraint may read, resolved once per evaluation.
pub(crate) struct Facts<'a> {
    now: i64,
    elapsed: i64,
    uses: i64,
    purpose: Option<u16>,
    request: &'a Request,
    classification: Classification,
}

impl<'a> Facts<'a> {
    fn subject(&self, left: LeftOperand) -> Option<Subject<'a>> {
        let r = &self.request.requester;
        Some(match left {
            LeftOperand::DateTime => Subject::Num(self.now),
            LeftOperand::ElapsedTime => Subject::Num(self.elapsed),
            LeftOperand::Count => Subject::Num(self.uses),
            LeftOperand::Purpose => Subject::Purpose(self.purpose?),
            LeftOperand::Recipient => Subject::Str(r.participant.as_str()),
            LeftOperand::RecipientKind => Subject::Num(r.kind as i64),
            LeftOperand::Sector => Subject::Str(r.sector.as_deref()?),
            LeftOperand::Region => Subject::Region(r.region?),
            LeftOperand::Classification => Subject::Num(i64::from(self.classification.rank())),
            LeftOperand::SecurityLevel => Subject::Num(i64::from(r.security_level?)),
            LeftOperand::Role => Subject::Roles(&r.roles),
        })
    }
}

impl CAtom {
    /// Whether the constraint holds for a known value.
    pub(crate) fn test(&self, s: Subject<'_>, vocab: &PurposeVocabulary) -> bool {
        use Operator::*;
        match (&self.vals, s) {
            (CVals::Num(vs), Subject::Num(x)) => match self.op {
                Eq => x == vs[0],
                Neq => x != vs[0],
                Lt => x < vs[0],
                Lteq => x <= vs[0],
                Gt => x > vs[0],
                Gteq => x >= vs[0],
                IsAnyOf => vs.contains(&x),
                IsNoneOf => !vs.contains(&x),
                IsA | IsPartOf | IsAllOf => false,
            },
            (CVals::Purpose(vs), Subject::Purpose(p)) => match self.op {
                Eq => p == vs[0],
                Neq => p != vs[0],
                IsA => vocab.is_a(p, vs[0]),
                IsAnyOf => vs.iter().any(|v| vocab.is_a(p, *v)),
                IsNoneOf => !vs.iter().any(|v| vocab.is_a(p, *v)),
                _ => false,
            },
            (CVals::Region(vs), Subject::Region(r)) => match self.op {
                Eq => r == vs[0],
                Neq => r != vs[0],
                IsPartOf => r.is_part_of(vs[0]),
                IsAnyOf => vs.iter().any(|v| r.is_part_of(*v)),
                IsNoneOf => !vs.iter().any(|v| r.is_part_of(*v)),
                _ => false,
            },
            (CVals::Str(vs), Subject::Str(x)) => match self.op {
                Eq => x == &*vs[0],
                Neq => x != &*vs[0],
                IsAnyOf => vs.iter().any(|v| x == &**v),
                IsNoneOf => !vs.iter().any(|v| x == &**v),
                _ => false,
            },
            (CVals::Str(vs), Subject::Roles(roles)) => {
                let has = |v: &str| roles.iter().any(|r| r == v);
                match self.op {
                    IsAnyOf => vs.iter().any(|v| has(v)),
                    IsAllOf => vs.iter().all(|v| has(v)),
                    IsNoneOf => !vs.iter().any(|v| has(v)),
                    _ => false,
                }
            }
            // Compilation pairs each operand with its kind of values; a mismatch cannot
            // occur, and if it did it must not permit.
            _ => false,
        }
    }
}

pub(crate) fn eval_constraint(c: &CConstraint, f: &Facts<'_>, vocab: &PurposeVocabulary) -> Truth {
    match c {
        CConstraint::Atom(a) => match f.subject(a.left) {
            None => Truth::Unknown,
            Some(s) if a.test(s, vocab) => Truth::True,
            Some(_) => Truth::False,
        },
        CConstraint::Logical(op, cs, _) => {
            let mut trues = 0usize;
            let mut unknown = false;
            for c in cs {
                match eval_constraint(c, f, vocab) {
                    Truth::True => {
                        trues += 1;
                        if *op == LogicalOperator::Or {
                            return Truth::True;
                        }
                    }
                    Truth::False => {
                        if *op == LogicalOperator::And {
                            return Truth::False;
                        }
                    }
                    Truth::Unknown => unknown = true,
                }
            }
            match op {
                LogicalOperator::And if unknown => Truth::Unknown,
                LogicalOperator::And => Truth::True,
                LogicalOperator::Or if unknown => Truth::Unknown,
                LogicalOperator::Or => Truth::False,
                LogicalOperator::Xone if trues > 1 => Truth::False,
                LogicalOperator::Xone if unknown => Truth::Unknown,
                LogicalOperator::Xone if trues == 1 => Truth::True,
                LogicalOperator::Xone => Truth::False,
            }
        }
    }
}

/// The conjunction of a rule's constraints.
fn eval_rule(rule: &CRule, f: &Facts<'_>, vocab: &PurposeVocabulary) -> Truth {
    let mut unknown = false;
    for c in &rule.constraints {
        match eval_constraint(c, f, vocab) {
            Truth::False => return Truth::False,
            Truth::Unknown => unknown = true,
            Truth::True => {}
        }
    }
    if unknown { Truth::Unknown } else { Truth::True }
}

/// Decides a request. Pure: the same policy, request and state always give the same
/// decision. The common permit path does not allocate.
pub fn evaluate(policy: &CompiledPolicy, request: &Request, state: &State) -> Decision {
    let catalog = request.scope == Scope::Catalog;
    if policy.classification == Classification::Core && request.scope != Scope::Use {
        return deny(
            policy,
            None,
            Denial::Guardrail {
                reason: format!(
                    "core data never leaves the node, so nothing is allowed at {} scope",
                    request.scope.as_str()
                ),
            },
            Vec::new(),
        );
    }
    let vocab = &*policy.vocabulary;
    let facts = Facts {
        now: state.now.unix_timestamp(),
        elapsed: i64::try_from(state.elapsed.as_secs()).unwrap_or(i64::MAX),
        uses: i64::try_from(state.uses).unwrap_or(i64::MAX),
        purpose: if policy.reads_purpose {
            request.purpose.as_deref().and_then(|p| vocab.id(p))
        } else {
            None
        },
        request,
        classification: policy.classification,
    };

    for q in &policy.prohibitions {
        if !q.action.overlaps(request.action) {
            continue;
        }
        let applies = match eval_rule(q, &facts, vocab) {
            Truth::True => true,
            Truth::Unknown => !catalog,
            Truth::False => false,
        };
        if applies {
            let held = explain_rule(q, &facts, vocab, true);
            return deny(policy, Some(Arc::clone(&q.rref)), Denial::Prohibited, held);
        }
    }

    let mut first: Option<&CRule> = None;
    let mut extra: Vec<&CRule> = Vec::new();
    let mut any_about_action = false;
    for p in &policy.permissions {
        if !p.action.includes(request.action) {
            continue;
        }
        any_about_action = true;
        let holds = match eval_rule(p, &facts, vocab) {
            Truth::True => true,
            Truth::Unknown => catalog,
            Truth::False => false,
        };
        if holds {
            if first.is_none() {
                first = Some(p);
            } else {
                extra.push(p);
            }
        }
    }

    let Some(first) = first else {
        if !any_about_action {
            return deny(policy, None, Denial::NoPermission, Vec::new());
        }
        let failed = policy
            .permissions
            .iter()
            .filter(|p| p.action.includes(request.action))
            .flat_map(|p| explain_rule(p, &facts, vocab, false))
            .collect();
        return deny(policy, None, Denial::ConstraintsFailed, failed);
    };
    let duties = if extra
        .iter()
        .all(|p| p.duties.is_empty() || Arc::ptr_eq(&p.duties, &first.duties))
    {
        Arc::clone(&first.duties)
    } else {
        let mut all: Vec<Duty> = first.duties.to_vec();
        for p in extra {
            for d in p.duties.iter() {
                if !all.contains(d) {
                    all.push(d.clone());
                }
            }
        }
        all.into()
    };
    Decision {
        outcome: Outcome::Permit,
        rule: Some(Arc::clone(&first.rref)),
        denial: None,
        failed: Vec::new(),
        duties,
        approval_required: request.scope == Scope::Negotiation
            && policy.classification == Classification::Important
            && policy.guardrails.important_requires_approval,
    }
}

fn deny(
    policy: &CompiledPolicy,
    rule: Option<Arc<RuleRef>>,
    denial: Denial,
    failed: Vec<FailedConstraint>,
) -> Decision {
    Decision {
        outcome: Outcome::Deny,
        rule,
        denial: Some(denial),
        failed,
        duties: Arc::clone(&policy.no_duties),
        approval_required: false,
    }
}

/// The atomic constraints of a rule that failed (or, for a prohibition, that held),
/// with reasons. Only on the deny path, so it may allocate.
fn explain_rule(
    rule: &CRule,
    f: &Facts<'_>,
    vocab: &PurposeVocabulary,
    held: bool,
) -> Vec<FailedConstraint> {
    let mut out = Vec::new();
    for c in &rule.constraints {
        explain_constraint(rule, c, f, vocab, held, &mut out);
    }
    out
}

fn explain_constraint(
    rule: &CRule,
    c: &CConstraint,
    f: &Facts<'_>,
    vocab: &PurposeVocabulary,
    held: bool,
    out: &mut Vec<FailedConstraint>,
) {
    let truth = eval_constraint(c, f, vocab);
    let wanted = if held { Truth::False } else { Truth::True };
    if truth == wanted {
        return;
    }
    match c {
        CConstraint::Atom(a) => out.push(FailedConstraint {
            rule: (*rule.rref).clone(),
            constraint: a.cref.clone(),
            reason: describe_atom(a, f, vocab, truth),
        }),
        CConstraint::Logical(op, cs, cref) => {
            let reason = match (op, held) {
                (LogicalOperator::Xone, false) => {
                    let n = cs
                        .iter()
                        .filter(|c| eval_constraint(c, f, vocab) == Truth::True)
                        .count();
                    format!(
                        "exactly one of its {} constraints must hold, but {n} do",
                        cs.len()
                    )
                }
                (LogicalOperator::Or, false) => "none of its alternatives holds".to_owned(),
                (LogicalOperator::And, false) => "not all of its constraints hold".to_owned(),
                (_, true) => format!("its `{}` holds", op.as_str()),
            };
            out.push(FailedConstraint {
                rule: (*rule.rref).clone(),
                constraint: cref.clone(),
                reason,
            });
            if *op == LogicalOperator::And || (*op == LogicalOperator::Or && !held) {
                for c in cs {
                    explain_constraint(rule, c, f, vocab, held, out);
                }
            }
        }
    }
}

/// "the declared purpose is marketing, but it must be a kind of research".
fn describe_atom(a: &CAtom, f: &Facts<'_>, vocab: &PurposeVocabulary, truth: Truth) -> String {
    let subject = a.left.describe();
    let required = format!("{} {}", a.op.describe(), describe_vals(a, vocab));
    let Some(s) = f.subject(a.left) else {
        let missing = match a.left {
            LeftOperand::Purpose => match &f.request.purpose {
                Some(p) => format!("the declared purpose `{p}` is not in the purpose vocabulary"),
                None => "no purpose was declared".to_owned(),
            },
            other => format!("{} is not known", other.describe()),
        };
        return format!("{missing}; it must {required}");
    };
    let actual = describe_subject(a.left, s, vocab);
    match truth {
        Truth::True => format!(
            "{subject} is {actual}, which meets the prohibition's condition `{}`",
            a.cref.text
        ),
        _ => format!("{subject} is {actual}, but it must {required}"),
    }
}

fn describe_subject(left: LeftOperand, s: Subject<'_>, vocab: &PurposeVocabulary) -> String {
    match s {
        Subject::Num(n) => describe_num(left, n),
        Subject::Purpose(p) => vocab.term(p).to_owned(),
        Subject::Region(r) => r.to_string(),
        Subject::Str(x) => x.to_owned(),
        Subject::Roles([]) => "no role".to_owned(),
        Subject::Roles(rs) => rs.join(", "),
    }
}

fn describe_num(left: LeftOperand, n: i64) -> String {
    match left {
        LeftOperand::DateTime => OffsetDateTime::from_unix_timestamp(n)
            .map(format_datetime)
            .unwrap_or_else(|_| n.to_string()),
        LeftOperand::ElapsedTime => describe_duration(n.max(0) as u64),
        LeftOperand::Classification => Classification::ALL
            .into_iter()
            .find(|c| i64::from(c.rank()) == n)
            .map_or_else(|| n.to_string(), |c| c.to_string()),
        LeftOperand::RecipientKind => RecipientKind::ALL
            .into_iter()
            .find(|k| *k as i64 == n)
            .map_or_else(|| n.to_string(), |k| k.to_string()),
        _ => n.to_string(),
    }
}

fn describe_vals(a: &CAtom, vocab: &PurposeVocabulary) -> String {
    let items: Vec<String> = match &a.vals {
        CVals::Num(vs) => vs.iter().map(|n| describe_num(a.left, *n)).collect(),
        CVals::Purpose(vs) => vs.iter().map(|p| vocab.term(*p).to_owned()).collect(),
        CVals::Region(vs) => vs.iter().map(ToString::to_string).collect(),
        CVals::Str(vs) => vs.iter().map(|s| s.to_string()).collect(),
    };
    if a.op.takes_list() {
        format!("[{}]", items.join(", "))
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
pub(crate) mod tests;
