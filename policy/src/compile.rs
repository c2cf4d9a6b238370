//! Compiling a [`Policy`] against a product's classification, the purpose vocabulary and
//! the node's guardrails. Compilation is where every semantic check runs (fail closed):
//! purposes must be in the vocabulary, a rule's constraints must be able to hold
//! together, no permission may be dead under a prohibition, and the policy may not
//! grant more than the classification guardrails allow. The result, a
//! [`CompiledPolicy`], holds constraints in a form the evaluator reads without
//! allocating.

use std::sync::Arc;

use crate::analysis;
use crate::authoring::rule_ref;
use crate::compiled::{CAtom, CConstraint, CRule, CVals};
pub use crate::compiled::{CompiledPolicy, Guardrails};
use crate::error::{ConstraintRef, PolicyError, RuleRef};
use crate::model::{
    Action, Atomic, Constraint, Duty, LeftOperand, LogicalOperator, Operator, Policy, PolicyType,
    Rule, RuleKind, Value,
};
use crate::vocab::{Classification, PurposeVocabulary, RegionCode};

/// The most permissions (and, separately, prohibitions) one policy may hold. The
/// load-time analysis compares every permission with every prohibition.
pub const MAX_RULES: usize = 4096;

/// What a policy is compiled against.
#[derive(Debug, Clone)]
pub struct CompileContext {
    /// The classification of the product the policy governs.
    pub classification: Classification,
    /// The purpose vocabulary of the data space.
    pub vocabulary: Arc<PurposeVocabulary>,
    /// The node's guardrails.
    pub guardrails: Guardrails,
}

impl CompileContext {
    /// A context with the default vocabulary and guardrails.
    pub fn new(classification: Classification) -> Self {
        CompileContext {
            classification,
            vocabulary: Arc::new(PurposeVocabulary::default()),
            guardrails: Guardrails::default(),
        }
    }

    /// Sets the guardrails (builder style).
    pub fn with_guardrails(mut self, guardrails: Guardrails) -> Self {
        self.guardrails = guardrails;
        self
    }

    /// Sets the vocabulary (builder style).
    pub fn with_vocabulary(mut self, vocabulary: Arc<PurposeVocabulary>) -> Self {
        self.vocabulary = vocabulary;
        self
    }
}

/// Compiles a policy against its context, running every load-time check.
pub fn compile(policy: Policy, context: &CompileContext) -> Result<CompiledPolicy, PolicyError> {
    for (kind, n) in [
        ("permission", policy.permissions.len()),
        ("prohibition", policy.prohibitions.len()),
    ] {
        if n > MAX_RULES {
            return Err(PolicyError::TooManyRules {
                kind,
                count: n,
                max: MAX_RULES,
            });
        }
    }
    let vocab = &context.vocabulary;
    let obligations: Vec<Duty> = policy.obligations.clone();
    let compile_rules = |kind: RuleKind, rules: &[Rule]| -> Result<Vec<CRule>, PolicyError> {
        rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let rref = rule_ref(kind, i, r.uid.as_deref());
                let constraints = r
                    .constraints
                    .iter()
                    .enumerate()
                    .map(|(j, c)| compile_constraint(&rref, &(j + 1).to_string(), c, vocab))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut duties = r.duties.clone();
                if kind == RuleKind::Permission {
                    for o in &obligations {
                        if !duties.contains(o) {
                            duties.push(o.clone());
                        }
                    }
                }
                Ok(CRule {
                    rref: Arc::new(rref),
                    action: r.action,
                    constraints,
                    duties: duties.into(),
                })
            })
            .collect()
    };
    let permissions = compile_rules(RuleKind::Permission, &policy.permissions)?;
    let prohibitions = compile_rules(RuleKind::Prohibition, &policy.prohibitions)?;

    for rule in permissions.iter().chain(&prohibitions) {
        analysis::check_satisfiable(rule, vocab)?;
    }
    for p in &permissions {
        for q in &prohibitions {
            if analysis::always_prohibited(p, q, vocab) {
                return Err(PolicyError::AlwaysProhibited {
                    permission: (*p.rref).clone(),
                    prohibition: (*q.rref).clone(),
                });
            }
        }
    }
    check_guardrails(&policy, &permissions, context)?;

    let reads_purpose = permissions
        .iter()
        .chain(&prohibitions)
        .any(|r| r.constraints.iter().any(|c| reads(c, LeftOperand::Purpose)));
    Ok(CompiledPolicy {
        policy,
        classification: context.classification,
        vocabulary: Arc::clone(&context.vocabulary),
        guardrails: context.guardrails.clone(),
        permissions,
        prohibitions,
        no_duties: Arc::from(Vec::new()),
        reads_purpose,
    })
}

impl Policy {
    /// Compiles this policy; see [`compile`].
    pub fn compile(self, context: &CompileContext) -> Result<CompiledPolicy, PolicyError> {
        compile(self, context)
    }
}

fn reads(c: &CConstraint, left: LeftOperand) -> bool {
    match c {
        CConstraint::Atom(a) => a.left == left,
        CConstraint::Logical(_, cs, _) => cs.iter().any(|c| reads(c, left)),
    }
}

fn compile_constraint(
    rule: &RuleRef,
    path: &str,
    c: &Constraint,
    vocab: &PurposeVocabulary,
) -> Result<CConstraint, PolicyError> {
    match c {
        Constraint::Atomic(a) => compile_atom(rule, path, a, vocab).map(CConstraint::Atom),
        Constraint::Logical(op, cs) => {
            let cref = ConstraintRef {
                path: path.to_owned(),
                text: c.to_string(),
            };
            if cs.len() < 2 {
                return Err(PolicyError::MalformedConstraint {
                    rule: rule.clone(),
                    constraint: cref,
                    message: format!("`{}` needs at least two constraints", op.as_str()),
                });
            }
            let inner = cs
                .iter()
                .enumerate()
                .map(|(i, c)| compile_constraint(rule, &format!("{path}.{}", i + 1), c, vocab))
                .collect::<Result<_, _>>()?;
            Ok(CConstraint::Logical(*op, inner, cref))
        }
    }
}

/// Checks an atomic constraint built in code (the parsers check the same) and resolves
/// its values.
fn compile_atom(
    rule: &RuleRef,
    path: &str,
    a: &Atomic,
    vocab: &PurposeVocabulary,
) -> Result<CAtom, PolicyError> {
    let cref = ConstraintRef {
        path: path.to_owned(),
        text: a.to_string(),
    };
    let allowed = a.left.allowed_operators();
    if !allowed.contains(&a.operator) {
        return Err(PolicyError::OperatorNotAllowed {
            rule: rule.clone(),
            constraint: cref,
            operand: a.left.as_str().to_owned(),
            operator: a.operator.as_str().to_owned(),
            allowed: allowed
                .iter()
                .map(|o| o.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let invalid = |message: String| PolicyError::InvalidValue {
        rule: rule.clone(),
        constraint: cref.clone(),
        message,
    };
    let values = a.right.values();
    if values.is_empty() {
        return Err(invalid(format!(
            "`{}` needs at least one value",
            a.operator
        )));
    }
    if a.operator.takes_list() != matches!(a.right, crate::model::RightOperand::List(_)) {
        return Err(invalid(format!(
            "`{}` takes {}",
            a.operator,
            if a.operator.takes_list() {
                "a list of values"
            } else {
                "one value"
            }
        )));
    }
    let expected = a.left.value_type();
    if let Some(v) = values.iter().find(|v| v.value_type() != expected) {
        return Err(PolicyError::TypeMismatch {
            rule: rule.clone(),
            constraint: cref.clone(),
            operand: a.left.as_str().to_owned(),
            expected: expected.describe().to_owned(),
            found: format!("`{v}` ({})", v.value_type().describe()),
        });
    }
    let vals = match a.left {
        LeftOperand::Purpose => CVals::Purpose(
            values
                .iter()
                .map(|v| match v {
                    Value::Purpose(p) => vocab.id(p).ok_or_else(|| {
                        invalid(format!(
                            "purpose `{p}` is not in the purpose vocabulary; use a defined term or add it to the vocabulary"
                        ))
                    }),
                    _ => unreachable!("type checked above"),
                })
                .collect::<Result<_, _>>()?,
        ),
        LeftOperand::Region => CVals::Region(
            values
                .iter()
                .map(|v| match v {
                    Value::Region(r) => *r,
                    _ => unreachable!("type checked above"),
                })
                .collect(),
        ),
        LeftOperand::Recipient | LeftOperand::Sector | LeftOperand::Role => CVals::Str(
            values
                .iter()
                .map(|v| match v {
                    Value::Participant(p) => Box::from(p.as_str()),
                    Value::Text(s) => Box::from(s.as_str()),
                    _ => unreachable!("type checked above"),
                })
                .collect(),
        ),
        _ => CVals::Num(
            values
                .iter()
                .map(|v| numeric(v).ok_or_else(|| invalid(format!("`{v}` is out of range"))))
                .collect::<Result<_, _>>()?,
        ),
    };
    if a.left == LeftOperand::SecurityLevel
        && let CVals::Num(ns) = &vals
        && ns.iter().any(|n| !(1..=5).contains(n))
    {
        return Err(invalid("security levels run from 1 to 5".into()));
    }
    Ok(CAtom {
        left: a.left,
        op: a.operator,
        vals,
        cref,
    })
}

/// The number an ordered or enumerated value compares as.
fn numeric(v: &Value) -> Option<i64> {
    match v {
        Value::DateTime(t) => Some(t.unix_timestamp()),
        Value::Duration(d) => i64::try_from(d.as_secs()).ok(),
        Value::Integer(n) => i64::try_from(*n).ok(),
        Value::Classification(c) => Some(i64::from(c.rank())),
        Value::Kind(k) => Some(*k as i64),
        _ => None,
    }
}

fn check_guardrails(
    policy: &Policy,
    permissions: &[CRule],
    ctx: &CompileContext,
) -> Result<(), PolicyError> {
    let class = ctx.classification;
    let err = |rule: RuleRef, reason: String| PolicyError::Guardrail {
        rule,
        classification: class.to_string(),
        reason,
    };
    match class {
        Classification::Core => {
            if policy.policy_type != PolicyType::Set {
                return Err(err(
                    RuleRef {
                        kind: RuleKind::Permission,
                        name: "policy".into(),
                    },
                    format!(
                        "core data never leaves the node, so it cannot have an {}; write a local `set` policy",
                        policy.policy_type.as_str()
                    ),
                ));
            }
            for p in permissions {
                if matches!(p.action, Action::Transfer | Action::Distribute) {
                    return Err(err(
                        (*p.rref).clone(),
                        format!(
                            "core data never leaves the node, so `{}` cannot be permitted",
                            p.action
                        ),
                    ));
                }
            }
        }
        Classification::Important => {
            let permitted = &ctx.guardrails.important_regions;
            for p in permissions {
                let bounds: Vec<Vec<RegionCode>> =
                    p.constraints.iter().filter_map(region_bound).collect();
                if bounds.is_empty() {
                    return Err(err(
                        (*p.rref).clone(),
                        "a permission on important data must limit the recipient's region (region isPartOf, eq or isAnyOf)".into(),
                    ));
                }
                if permitted.is_empty() {
                    return Err(err(
                        (*p.rref).clone(),
                        "no region is permitted for important data on this node; configure the guardrails' important_regions".into(),
                    ));
                }
                let inside = |r: &RegionCode| permitted.iter().any(|w| r.is_part_of(*w));
                if !bounds.iter().any(|b| b.iter().all(inside)) {
                    let outside: Vec<String> = bounds
                        .iter()
                        .flatten()
                        .filter(|r| !inside(r))
                        .map(ToString::to_string)
                        .collect();
                    let allowed: Vec<String> = permitted.iter().map(ToString::to_string).collect();
                    return Err(err(
                        (*p.rref).clone(),
                        format!(
                            "region {} is outside the regions permitted for important data ({})",
                            outside.join(", "),
                            allowed.join(", ")
                        ),
                    ));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// The regions a constraint keeps the recipient inside, if it does.
fn region_bound(c: &CConstraint) -> Option<Vec<RegionCode>> {
    match c {
        CConstraint::Atom(CAtom {
            left: LeftOperand::Region,
            op: Operator::Eq | Operator::IsPartOf | Operator::IsAnyOf,
            vals: CVals::Region(rs),
            ..
        }) => Some(rs.to_vec()),
        CConstraint::Atom(_) => None,
        CConstraint::Logical(LogicalOperator::And, cs, _) => cs.iter().find_map(region_bound),
        CConstraint::Logical(_, cs, _) => {
            let mut all = Vec::new();
            for c in cs {
                all.extend(region_bound(c)?);
            }
            Some(all)
        }
    }
}
