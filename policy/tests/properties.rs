//! Property tests: adding a constraint to a permission never allows more; `implies`
//! agrees with evaluation; every form round-trips.

use std::time::Duration;

use liutong_policy::*;
use proptest::prelude::*;
use time::OffsetDateTime;

const PROVIDER: &str = "91110000600037341L";
const BASE: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const TERMS: [&str; 8] = [
    "research",
    "scientificResearch",
    "academicResearch",
    "statistics",
    "commercial",
    "marketing",
    "publicService",
    "urbanPlanning",
];
const REGIONS: [&str; 6] = ["330000", "330100", "330106", "330206", "310000", "310104"];

fn consumer(i: usize) -> ParticipantCode {
    let stem = ["91330100MA27XY001", "91310000MA1FL0002"][i % 2];
    ParticipantCode::with_check_character(stem).unwrap()
}

fn region(i: usize) -> RegionCode {
    RegionCode::parse(REGIONS[i % REGIONS.len()]).unwrap()
}

fn at(offset_hours: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(BASE + offset_hours * 3600).unwrap()
}

fn ordered_op() -> impl Strategy<Value = Operator> {
    prop::sample::select(vec![
        Operator::Lt,
        Operator::Lteq,
        Operator::Gt,
        Operator::Gteq,
    ])
}

fn numeric_op() -> impl Strategy<Value = Operator> {
    prop::sample::select(vec![
        Operator::Eq,
        Operator::Neq,
        Operator::Lt,
        Operator::Lteq,
        Operator::Gt,
        Operator::Gteq,
    ])
}

fn set_op() -> impl Strategy<Value = Operator> {
    prop::sample::select(vec![
        Operator::Eq,
        Operator::Neq,
        Operator::IsAnyOf,
        Operator::IsNoneOf,
    ])
}

fn build(left: LeftOperand, op: Operator, vals: Vec<Value>) -> Atomic {
    if op.takes_list() {
        Atomic::list(left, op, vals)
    } else {
        Atomic::new(left, op, vals.into_iter().next().unwrap())
    }
}

fn atom() -> impl Strategy<Value = Atomic> {
    let idx = || prop::collection::vec(0usize..8, 1..3);
    prop_oneof![
        (numeric_op(), 0u64..8).prop_map(|(op, n)| Atomic::new(
            LeftOperand::Count,
            op,
            Value::Integer(n)
        )),
        (
            prop::sample::select(vec![Operator::IsAnyOf, Operator::IsNoneOf]),
            prop::collection::vec(0u64..8, 1..3)
        )
            .prop_map(|(op, ns)| Atomic::list(
                LeftOperand::Count,
                op,
                ns.into_iter().map(Value::Integer).collect()
            )),
        (ordered_op(), 0i64..48).prop_map(|(op, h)| Atomic::new(
            LeftOperand::DateTime,
            op,
            Value::DateTime(at(h))
        )),
        (ordered_op(), 0u64..6).prop_map(|(op, d)| Atomic::new(
            LeftOperand::ElapsedTime,
            op,
            Value::Duration(Duration::from_secs(d * 86_400))
        )),
        (
            prop::sample::select(vec![
                Operator::Eq,
                Operator::Neq,
                Operator::IsA,
                Operator::IsAnyOf,
                Operator::IsNoneOf
            ]),
            idx()
        )
            .prop_map(|(op, is)| build(
                LeftOperand::Purpose,
                op,
                is.iter()
                    .map(|i| Value::Purpose(TERMS[*i].into()))
                    .collect()
            )),
        (
            prop::sample::select(vec![
                Operator::Eq,
                Operator::Neq,
                Operator::IsPartOf,
                Operator::IsAnyOf,
                Operator::IsNoneOf
            ]),
            idx()
        )
            .prop_map(|(op, is)| build(
                LeftOperand::Region,
                op,
                is.iter().map(|i| Value::Region(region(*i))).collect()
            )),
        (set_op(), idx()).prop_map(|(op, is)| build(
            LeftOperand::RecipientKind,
            op,
            is.iter()
                .map(|i| Value::Kind(RecipientKind::ALL[i % 3]))
                .collect()
        )),
        (set_op(), idx()).prop_map(|(op, is)| build(
            LeftOperand::Recipient,
            op,
            is.iter()
                .map(|i| Value::Participant(consumer(*i)))
                .collect()
        )),
        (set_op(), idx()).prop_map(|(op, is)| build(
            LeftOperand::Sector,
            op,
            is.iter()
                .map(|i| Value::Text(["I65", "K70", "S92"][i % 3].into()))
                .collect()
        )),
        (numeric_op(), 1u64..6).prop_map(|(op, n)| Atomic::new(
            LeftOperand::SecurityLevel,
            op,
            Value::Integer(n)
        )),
        (numeric_op(), 0usize..5).prop_map(|(op, i)| Atomic::new(
            LeftOperand::Classification,
            op,
            Value::Classification(Classification::ALL[i])
        )),
        (
            prop::sample::select(vec![
                Operator::IsAnyOf,
                Operator::IsAllOf,
                Operator::IsNoneOf
            ]),
            idx()
        )
            .prop_map(|(op, is)| Atomic::list(
                LeftOperand::Role,
                op,
                is.iter()
                    .map(|i| Value::Text(["a", "b", "c"][i % 3].into()))
                    .collect()
            )),
    ]
}

fn constraint() -> impl Strategy<Value = Constraint> {
    prop_oneof![
        4 => atom().prop_map(Constraint::Atomic),
        1 => (
            prop::sample::select(vec![LogicalOperator::And, LogicalOperator::Or, LogicalOperator::Xone]),
            prop::collection::vec(atom().prop_map(Constraint::Atomic), 2..4)
        )
            .prop_map(|(op, cs)| Constraint::Logical(op, cs)),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop::sample::select(Action::ALL.to_vec())
}

fn rule() -> impl Strategy<Value = Rule> {
    (action(), prop::collection::vec(constraint(), 0..4)).prop_map(|(action, constraints)| Rule {
        uid: None,
        action,
        constraints,
        duties: Vec::new(),
    })
}

fn duty() -> impl Strategy<Value = Duty> {
    prop_oneof![
        Just(Duty::Log),
        Just(Duty::Notify),
        (1u64..100).prop_map(|d| Duty::DeleteAfter {
            when: DeleteAfter::Elapsed(Duration::from_secs(d * 3600))
        }),
        (0i64..100).prop_map(|h| Duty::DeleteAfter {
            when: DeleteAfter::At(at(h))
        }),
        (2u32..50).prop_map(|k| Duty::AggregateOnly { k }),
        (2u32..50).prop_map(|k| Duty::KAnonymity { k }),
        Just(Duty::NextPolicy {
            policy: "urn:liutong:policy:next".into()
        }),
        Just(Duty::Mask {
            rules: vec![MaskRule {
                field: FieldSelector::Type(FieldType::Mobile),
                method: MaskMethod::Keep { first: 3, last: 4 },
            }]
        }),
    ]
}

fn policy(kind: PolicyType, permissions: Vec<Rule>, prohibitions: Vec<Rule>) -> Policy {
    Policy {
        uid: "urn:liutong:policy:prop".into(),
        policy_type: kind,
        assigner: Some(ParticipantCode::parse(PROVIDER).unwrap()),
        assignee: (kind == PolicyType::Agreement).then(|| consumer(0)),
        target: Some("urn:liutong:product:prop".into()),
        permissions,
        prohibitions,
        obligations: Vec::new(),
    }
}

fn context() -> CompileContext {
    CompileContext::new(Classification::General2)
}

fn request() -> impl Strategy<Value = Request> {
    (
        prop::sample::select(vec![
            Scope::Catalog,
            Scope::Negotiation,
            Scope::Transfer,
            Scope::Use,
        ]),
        action(),
        (
            0usize..2,
            0usize..3,
            prop::option::of(0usize..3),
            prop::option::of(0usize..6),
            prop::option::of(0u8..7),
        ),
        prop::collection::vec(0usize..3, 0..3),
        prop::option::of(0usize..9),
    )
        .prop_map(
            |(scope, action, (who, kind, sector, reg, level), roles, purpose)| Request {
                scope,
                action,
                requester: Requester {
                    participant: consumer(who),
                    kind: RecipientKind::ALL[kind],
                    sector: sector.map(|s| ["I65", "K70", "S92"][s].to_owned()),
                    region: reg.map(region),
                    security_level: level,
                    roles: roles
                        .iter()
                        .map(|r| ["a", "b", "c"][*r].to_owned())
                        .collect(),
                },
                purpose: purpose.map(|p| TERMS.get(p).copied().unwrap_or("notAPurpose").to_owned()),
            },
        )
}

fn state() -> impl Strategy<Value = State> {
    (-2i64..50, 0u64..7, 0u64..10).prop_map(|(h, d, uses)| State {
        now: at(h),
        elapsed: Duration::from_secs(d * 86_400),
        uses,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Adding a constraint to a permission never allows more.
    #[test]
    fn adding_a_constraint_never_allows_more(
        base in rule(),
        extra in constraint(),
        prohibitions in prop::collection::vec(rule(), 0..2),
        requests in prop::collection::vec((request(), state()), 16),
    ) {
        let mut narrower = base.clone();
        narrower.constraints.push(extra);
        let wide = compile(policy(PolicyType::Offer, vec![base], prohibitions.clone()), &context());
        let narrow = compile(policy(PolicyType::Offer, vec![narrower], prohibitions), &context());
        let (Ok(wide), Ok(narrow)) = (wide, narrow) else {
            return Ok(()); // one of them is rejected at load (contradiction, dead rule)
        };
        for (r, s) in &requests {
            if evaluate(&narrow, r, s).is_permit() {
                prop_assert!(evaluate(&wide, r, s).is_permit(), "{r:?} {s:?}");
            }
        }
    }

    /// When `implies(agreement, offer)` holds, every request the agreement permits the
    /// offer permits too.
    #[test]
    fn implies_agrees_with_evaluation(
        offer_perms in prop::collection::vec(rule(), 1..3),
        offer_prohibs in prop::collection::vec(rule(), 0..2),
        narrowing in prop::collection::vec((0usize..3, prop::collection::vec(constraint(), 0..3), prop::option::of(action())), 1..3),
        agreement_prohibs in prop::collection::vec(rule(), 0..2),
        carry_prohibitions in any::<bool>(),
        requests in prop::collection::vec((request(), state()), 24),
    ) {
        let Ok(offer) = compile(policy(PolicyType::Offer, offer_perms.clone(), offer_prohibs.clone()), &context()) else {
            return Ok(());
        };
        // Agreement permissions: an offer permission with constraints added and maybe
        // another action (which implies must then judge).
        let perms: Vec<Rule> = narrowing
            .into_iter()
            .map(|(i, extra, act)| {
                let mut r = offer_perms[i % offer_perms.len()].clone();
                r.constraints.extend(extra);
                if let Some(a) = act {
                    r.action = a;
                }
                r
            })
            .collect();
        let mut prohibs = agreement_prohibs;
        if carry_prohibitions {
            prohibs.extend(offer_prohibs);
        }
        let Ok(agreement) = compile(policy(PolicyType::Agreement, perms, prohibs), &context()) else {
            return Ok(());
        };
        if implies(&agreement, &offer) {
            for (r, s) in &requests {
                if evaluate(&agreement, r, s).is_permit() {
                    prop_assert!(evaluate(&offer, r, s).is_permit(), "{r:?} {s:?}");
                }
            }
        }
    }

    /// `import(export(p)) == p` for TOML, JSON and ODRL JSON-LD.
    #[test]
    fn every_form_round_trips(
        perms in prop::collection::vec((rule(), prop::collection::vec(duty(), 0..3)), 0..3),
        prohibs in prop::collection::vec(rule(), 0..2),
        obligations in prop::collection::vec(duty(), 0..2),
        named in any::<bool>(),
    ) {
        let permissions = perms
            .into_iter()
            .enumerate()
            .map(|(i, (mut r, duties))| {
                r.duties = duties;
                if named {
                    r.uid = Some(format!("p{i}"));
                }
                r
            })
            .collect();
        let mut p = policy(PolicyType::Agreement, permissions, prohibs);
        p.obligations = obligations;
        prop_assert_eq!(&Policy::from_toml(&p.to_toml()).unwrap(), &p);
        prop_assert_eq!(&Policy::from_json(&p.to_json()).unwrap(), &p);
        prop_assert_eq!(&Policy::from_odrl(&p.to_odrl_string()).unwrap(), &p);
    }
}

/// The narrowing generator above must produce real implications, or the property
/// would be vacuous.
#[test]
fn implies_holds_for_plain_narrowing() {
    let offer = policy(
        PolicyType::Offer,
        vec![Rule::new(Action::Use).with(Atomic::new(
            LeftOperand::Count,
            Operator::Lt,
            Value::Integer(5),
        ))],
        vec![Rule::new(Action::Distribute)],
    );
    let agreement = policy(
        PolicyType::Agreement,
        vec![
            Rule::new(Action::Read)
                .with(Atomic::new(
                    LeftOperand::Count,
                    Operator::Lt,
                    Value::Integer(3),
                ))
                .with(Atomic::new(
                    LeftOperand::Purpose,
                    Operator::IsA,
                    Value::Purpose("research".into()),
                )),
        ],
        vec![],
    );
    let (o, a) = (
        compile(offer, &context()).unwrap(),
        compile(agreement, &context()).unwrap(),
    );
    assert!(implies(&a, &o), "{:?}", narrowing_gaps(&a, &o));
    assert!(!implies(&o, &a));
}
