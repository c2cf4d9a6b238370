//! Static analysis of compiled policies: whether a rule's constraints can hold at all,
//! whether a prohibition kills a permission, and whether an agreement only narrows its
//! offer ([`implies`]).
//!
//! The method is exact enumeration over *representative values*. For each left operand,
//! the truth of every constraint that mentions it depends only on how the request's
//! value relates to the values the constraints name (equal, just below, just above,
//! inside the same prefecture, a kind of the same term, …). So it is enough to try one
//! value of each such class: each named number and its neighbours, every term of the
//! purpose vocabulary, each named region and a fresh region inside and beside it, each
//! named text and a fresh one, each subset of the named roles. The evaluator's own
//! `test` decides each candidate, so analysis and evaluation cannot drift apart.
//!
//! Logical `or` / `xone` inside a premise are ignored (that only widens the premise, so
//! a "yes" stays sound); in a conclusion, `or` holds if one branch is implied and `xone`
//! is never assumed implied. The analysis may therefore miss an implication, never
//! invent one.

use std::collections::BTreeSet;

use crate::compiled::{CAtom, CConstraint, CRule, CVals, CompiledPolicy};
use crate::error::{ConstraintRef, PolicyError};
use crate::evaluate::Subject;
use crate::model::{LeftOperand, LogicalOperator};
use crate::vocab::{PurposeVocabulary, RegionCode};

/// Largest number of distinct roles whose subsets are enumerated.
const MAX_ROLES: usize = 10;

/// A candidate value owned by the analysis.
enum Cand {
    Num(i64),
    Purpose(u16),
    Region(RegionCode),
    Str(String),
    Roles(Vec<String>),
}

impl Cand {
    fn subject(&self) -> Subject<'_> {
        match self {
            Cand::Num(n) => Subject::Num(*n),
            Cand::Purpose(p) => Subject::Purpose(*p),
            Cand::Region(r) => Subject::Region(*r),
            Cand::Str(s) => Subject::Str(s),
            Cand::Roles(rs) => Subject::Roles(rs),
        }
    }
}

/// The domain of a numeric operand, as the evaluator sees it.
fn num_domain(left: LeftOperand) -> (i64, i64) {
    match left {
        LeftOperand::DateTime => (i64::MIN, i64::MAX),
        LeftOperand::ElapsedTime | LeftOperand::Count => (0, i64::MAX),
        LeftOperand::SecurityLevel => (0, 255),
        LeftOperand::Classification => (1, 5),
        LeftOperand::RecipientKind => (0, 2),
        _ => (i64::MIN, i64::MAX),
    }
}

/// Representative values for the constraints `atoms`, which all share one operand.
/// `None` when there would be too many to try.
fn candidates(left: LeftOperand, atoms: &[&CAtom], vocab: &PurposeVocabulary) -> Option<Vec<Cand>> {
    match left {
        LeftOperand::Purpose => Some(vocab.ids().map(Cand::Purpose).collect()),
        LeftOperand::Region => {
            let named: BTreeSet<RegionCode> = atoms
                .iter()
                .flat_map(|a| match &a.vals {
                    CVals::Region(rs) => rs.to_vec(),
                    _ => Vec::new(),
                })
                .collect();
            Some(
                region_candidates(&named)
                    .into_iter()
                    .map(Cand::Region)
                    .collect(),
            )
        }
        LeftOperand::Recipient | LeftOperand::Sector => {
            let mut named: BTreeSet<String> = strs(atoms);
            // A value equal to none of the named ones.
            named.insert("\u{1}other".to_owned());
            Some(named.into_iter().map(Cand::Str).collect())
        }
        LeftOperand::Role => {
            let named: Vec<String> = strs(atoms).into_iter().collect();
            if named.len() > MAX_ROLES {
                return None;
            }
            Some(
                (0u32..(1 << named.len()))
                    .map(|mask| {
                        Cand::Roles(
                            named
                                .iter()
                                .enumerate()
                                .filter(|(i, _)| mask & (1 << i) != 0)
                                .map(|(_, r)| r.clone())
                                .collect(),
                        )
                    })
                    .collect(),
            )
        }
        _ => {
            let (lo, hi) = num_domain(left);
            let mut set = BTreeSet::from([lo, hi]);
            for a in atoms {
                if let CVals::Num(vs) = &a.vals {
                    for v in vs.iter() {
                        for c in [v.saturating_sub(1), *v, v.saturating_add(1)] {
                            if (lo..=hi).contains(&c) {
                                set.insert(c);
                            }
                        }
                    }
                }
            }
            Some(set.into_iter().map(Cand::Num).collect())
        }
    }
}

fn strs(atoms: &[&CAtom]) -> BTreeSet<String> {
    atoms
        .iter()
        .flat_map(|a| match &a.vals {
            CVals::Str(vs) => vs.iter().map(|s| s.to_string()).collect(),
            _ => Vec::new(),
        })
        .collect()
}

/// Every named region, a fresh county in each named prefecture, a fresh prefecture in
/// each named province, and a fresh province: one value per class of `eq` / `isPartOf`
/// answers.
fn region_candidates(named: &BTreeSet<RegionCode>) -> Vec<RegionCode> {
    let mut out: BTreeSet<RegionCode> = named.clone();
    let prefectures: BTreeSet<u32> = named.iter().map(|r| r.prefecture()).collect();
    let provinces: BTreeSet<u32> = named.iter().map(|r| r.province()).collect();
    for &pref in &prefectures {
        if let Some(r) = (1..100)
            .filter_map(|c| RegionCode::from_u32(pref * 100 + c).ok())
            .find(|r| !named.contains(r))
        {
            out.insert(r);
        }
    }
    for &prov in &provinces {
        if let Some(r) = (1..100)
            .filter(|p| !prefectures.contains(&(prov * 100 + p)))
            .filter_map(|p| RegionCode::from_u32(prov * 10_000 + p * 100 + 1).ok())
            .next()
        {
            out.insert(r);
        }
    }
    if let Some(r) = RegionCode::all_provinces()
        .iter()
        .find(|p| !provinces.contains(p))
        .and_then(|p| RegionCode::from_u32(p * 10_000 + 101).ok())
    {
        out.insert(r);
    }
    out.into_iter().collect()
}

/// Whether some value satisfies all of `atoms` (which share one operand).
fn satisfiable(atoms: &[&CAtom], vocab: &PurposeVocabulary) -> bool {
    let Some(first) = atoms.first() else {
        return true;
    };
    match candidates(first.left, atoms, vocab) {
        Some(cands) => cands
            .iter()
            .any(|c| atoms.iter().all(|a| a.test(c.subject(), vocab))),
        None => true,
    }
}

/// Operands a request may leave unknown.
fn optional(left: LeftOperand) -> bool {
    matches!(
        left,
        LeftOperand::Purpose
            | LeftOperand::Region
            | LeftOperand::Sector
            | LeftOperand::SecurityLevel
    )
}

/// Whether every value satisfying `premise` (constraints on `concl`'s operand)
/// satisfies `concl`.
fn atoms_imply(premise: &[&CAtom], concl: &CAtom, vocab: &PurposeVocabulary) -> bool {
    let same: Vec<&CAtom> = premise
        .iter()
        .copied()
        .filter(|a| a.left == concl.left)
        .collect();
    if same.is_empty() && optional(concl.left) {
        return false;
    }
    let mut all = same.clone();
    all.push(concl);
    let Some(cands) = candidates(concl.left, &all, vocab) else {
        return false;
    };
    cands.iter().all(|c| {
        let s = c.subject();
        !same.iter().all(|a| a.test(s, vocab)) || concl.test(s, vocab)
    })
}

/// The atoms a list of constraints requires together (top level and inside `and`).
fn conjunction<'a>(cs: &'a [CConstraint], out: &mut Vec<&'a CAtom>) {
    for c in cs {
        match c {
            CConstraint::Atom(a) => out.push(a),
            CConstraint::Logical(LogicalOperator::And, inner, _) => conjunction(inner, out),
            CConstraint::Logical(..) => {}
        }
    }
}

/// The `or` / `xone` constraints a list requires (top level and inside `and`).
fn alternatives<'a>(cs: &'a [CConstraint], out: &mut Vec<&'a CConstraint>) {
    for c in cs {
        match c {
            CConstraint::Logical(LogicalOperator::And, inner, _) => alternatives(inner, out),
            CConstraint::Logical(..) => out.push(c),
            CConstraint::Atom(_) => {}
        }
    }
}

/// Whether `premise` implies the constraint `concl`.
fn implies_constraint(premise: &[&CAtom], concl: &CConstraint, vocab: &PurposeVocabulary) -> bool {
    match concl {
        CConstraint::Atom(a) => atoms_imply(premise, a, vocab),
        CConstraint::Logical(LogicalOperator::And, cs, _) => {
            cs.iter().all(|c| implies_constraint(premise, c, vocab))
        }
        CConstraint::Logical(LogicalOperator::Or, cs, _) => {
            cs.iter().any(|c| implies_constraint(premise, c, vocab))
        }
        CConstraint::Logical(LogicalOperator::Xone, ..) => false,
    }
}

/// Whether the atoms can all hold together, operand by operand; on failure, the
/// operand's atoms.
fn unsatisfiable_group<'a>(
    atoms: &[&'a CAtom],
    vocab: &PurposeVocabulary,
) -> Option<Vec<&'a CAtom>> {
    let operands: BTreeSet<LeftOperand> = atoms.iter().map(|a| a.left).collect();
    for left in operands {
        let group: Vec<&CAtom> = atoms.iter().copied().filter(|a| a.left == left).collect();
        if !satisfiable(&group, vocab) {
            return Some(group);
        }
    }
    None
}

/// Load-time check: the rule's constraints can hold together.
pub(crate) fn check_satisfiable(
    rule: &CRule,
    vocab: &PurposeVocabulary,
) -> Result<(), PolicyError> {
    let contradiction = |cs: Vec<ConstraintRef>| PolicyError::Contradiction {
        rule: (*rule.rref).clone(),
        constraints: cs,
    };
    let mut conj = Vec::new();
    conjunction(&rule.constraints, &mut conj);
    if let Some(group) = unsatisfiable_group(&conj, vocab) {
        return Err(contradiction(
            group.iter().map(|a| a.cref.clone()).collect(),
        ));
    }
    let mut alts = Vec::new();
    alternatives(&rule.constraints, &mut alts);
    for alt in alts {
        let CConstraint::Logical(_, branches, cref) = alt else {
            continue;
        };
        let any_branch = branches.iter().any(|b| {
            let mut with = conj.clone();
            conjunction(std::slice::from_ref(b), &mut with);
            unsatisfiable_group(&with, vocab).is_none()
        });
        if !any_branch {
            let mut refs = vec![cref.clone()];
            refs.extend(conj.iter().map(|a| a.cref.clone()));
            return Err(contradiction(refs));
        }
    }
    Ok(())
}

/// Load-time check: whenever permission `p` would permit, prohibition `q` applies.
pub(crate) fn always_prohibited(p: &CRule, q: &CRule, vocab: &PurposeVocabulary) -> bool {
    if !q.action.includes(p.action) {
        return false;
    }
    let mut premise = Vec::new();
    conjunction(&p.constraints, &mut premise);
    q.constraints
        .iter()
        .all(|c| implies_constraint(&premise, c, vocab))
}

/// Whether an agreement only narrows its offer: every request the agreement permits,
/// the offer permits too, and the agreement carries the offer's duties. Both must be
/// compiled with the same classification and vocabulary.
pub fn implies(agreement: &CompiledPolicy, offer: &CompiledPolicy) -> bool {
    narrowing_gaps(agreement, offer).is_empty()
}

/// What keeps an agreement from being a narrowing of its offer, in words; empty when
/// [`implies`] holds.
pub fn narrowing_gaps(agreement: &CompiledPolicy, offer: &CompiledPolicy) -> Vec<String> {
    let mut gaps = Vec::new();
    let (a, o) = (&agreement.policy, &offer.policy);
    if a.target != o.target {
        gaps.push(format!(
            "the agreement's target {:?} is not the offer's {:?}",
            a.target, o.target
        ));
    }
    if a.assigner != o.assigner {
        gaps.push("the agreement's assigner is not the offer's".to_owned());
    }
    if o.assignee.is_some() && a.assignee != o.assignee {
        gaps.push("the offer names an assignee the agreement does not".to_owned());
    }
    if agreement.classification != offer.classification {
        gaps.push(format!(
            "the agreement was compiled for {} data, the offer for {}",
            agreement.classification, offer.classification
        ));
    }
    if agreement.vocabulary != offer.vocabulary {
        gaps.push("the agreement and the offer use different purpose vocabularies".to_owned());
        return gaps;
    }
    let vocab = &*offer.vocabulary;
    for o_dut in &o.obligations {
        if !a.obligations.contains(o_dut) {
            gaps.push(format!(
                "the agreement drops the offer's obligation to {o_dut}"
            ));
        }
    }
    for ap in &agreement.permissions {
        let mut premise = Vec::new();
        conjunction(&ap.constraints, &mut premise);
        let covering = offer.permissions.iter().find(|op| {
            op.action.includes(ap.action)
                && op
                    .constraints
                    .iter()
                    .all(|c| implies_constraint(&premise, c, vocab))
                && op.duties.iter().all(|d| ap.duties.contains(d))
        });
        if covering.is_none() {
            gaps.push(format!(
                "agreement {} permits more than any offer permission allows (or drops its duties)",
                ap.rref
            ));
        }
    }
    for oq in &offer.prohibitions {
        let mut premise = Vec::new();
        conjunction(&oq.constraints, &mut premise);
        let carried = agreement.prohibitions.iter().any(|aq| {
            aq.action.includes(oq.action)
                && aq
                    .constraints
                    .iter()
                    .all(|c| implies_constraint(&premise, c, vocab))
        });
        let unreachable = agreement.permissions.iter().all(|ap| {
            if !ap.action.overlaps(oq.action) {
                return true;
            }
            let mut both = Vec::new();
            conjunction(&ap.constraints, &mut both);
            both.extend(premise.iter().copied());
            unsatisfiable_group(&both, vocab).is_some()
        });
        if !carried && !unreachable {
            gaps.push(format!(
                "the agreement does not carry offer {} and permits what it forbids",
                oq.rref
            ));
        }
    }
    gaps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_candidates_cover_each_class() {
        let named: BTreeSet<RegionCode> = ["330106", "330000"]
            .iter()
            .map(|s| RegionCode::parse(s).unwrap())
            .collect();
        let c = region_candidates(&named);
        let p = RegionCode::parse("330100").unwrap();
        // a fresh county in 3301, a fresh prefecture in 33, a fresh province
        assert!(c.iter().any(|r| r.is_part_of(p) && r.as_u32() != 330106));
        assert!(
            c.iter()
                .any(|r| r.province() == 33 && r.prefecture() != 3301)
        );
        assert!(c.iter().any(|r| r.province() != 33));
    }
}
