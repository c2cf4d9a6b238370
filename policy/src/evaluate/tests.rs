//! Unit tests of evaluation, one per operand and operator, of each load-time
//! validation error, and of the analysis.

use std::time::Duration;

use time::OffsetDateTime;
use time::macros::datetime;

use crate::*;

pub(crate) const PROVIDER: &str = "91110000600037341L";

pub(crate) fn consumer_id() -> ParticipantCode {
    ParticipantCode::with_check_character("91330100MA27XY001").unwrap()
}

fn offer(rules: &str) -> String {
    format!(
        "uid = \"urn:liutong:policy:test\"\ntype = \"offer\"\nassigner = \"{PROVIDER}\"\ntarget = \"urn:liutong:product:test\"\n{rules}"
    )
}

fn load(rules: &str, class: Classification) -> Result<CompiledPolicy, PolicyError> {
    compile(Policy::from_toml(&offer(rules))?, &ctx(class))
}

fn ctx(class: Classification) -> CompileContext {
    CompileContext::new(class).with_guardrails(Guardrails {
        important_regions: vec![RegionCode::parse("330000").unwrap()],
        important_requires_approval: true,
    })
}

fn permit(constraint: &str) -> CompiledPolicy {
    load(
        &format!("[[permission]]\naction = \"use\"\nconstraint = [{constraint}]"),
        Classification::General2,
    )
    .unwrap_or_else(|e| panic!("{constraint}: {e}"))
}

pub(crate) fn request() -> Request {
    Request {
        scope: Scope::Use,
        action: Action::Read,
        requester: Requester {
            participant: consumer_id(),
            kind: RecipientKind::Enterprise,
            sector: Some("I65".into()),
            region: Some(RegionCode::parse("330106").unwrap()),
            security_level: Some(3),
            roles: vec!["analyst".into()],
        },
        purpose: Some("academicResearch".into()),
    }
}

const NOW: OffsetDateTime = datetime!(2025-06-01 12:00 UTC);

fn state() -> State {
    State {
        now: NOW,
        elapsed: Duration::from_secs(10 * 86_400),
        uses: 4,
    }
}

fn allows(p: &CompiledPolicy, r: &Request, s: &State) -> bool {
    evaluate(p, r, s).is_permit()
}

fn c(left: &str, op: &str, right: &str) -> String {
    format!("{{ leftOperand = \"{left}\", operator = \"{op}\", rightOperand = {right} }}")
}

/// (operand, operator, right operand, expected for the default request and state)
#[test]
fn each_operand_and_operator() {
    let cases: &[(&str, &str, &str, bool)] = &[
        ("dateTime", "lt", "\"2025-07-01T00:00:00Z\"", true),
        ("dateTime", "lt", "\"2025-06-01T12:00:00Z\"", false),
        ("dateTime", "lteq", "\"2025-06-01T12:00:00Z\"", true),
        ("dateTime", "gt", "\"2025-06-01T12:00:00Z\"", false),
        ("dateTime", "gteq", "\"2025-06-01T20:00:00+08:00\"", true),
        ("dateTime", "gteq", "2025-01-01T00:00:00Z", true),
        ("elapsedTime", "lt", "\"P30D\"", true),
        ("elapsedTime", "lt", "\"P10D\"", false),
        ("elapsedTime", "lteq", "\"P10D\"", true),
        ("elapsedTime", "gt", "\"PT1H\"", true),
        ("elapsedTime", "gteq", "\"P11D\"", false),
        ("count", "lt", "5", true),
        ("count", "lt", "4", false),
        ("count", "lteq", "4", true),
        ("count", "gt", "4", false),
        ("count", "gteq", "4", true),
        ("count", "eq", "4", true),
        ("count", "neq", "4", false),
        ("count", "isAnyOf", "[1, 4]", true),
        ("count", "isNoneOf", "[1, 4]", false),
        ("purpose", "isA", "\"research\"", true),
        ("purpose", "isA", "\"scientificResearch\"", true),
        ("purpose", "isA", "\"commercial\"", false),
        ("purpose", "eq", "\"academicResearch\"", true),
        ("purpose", "eq", "\"research\"", false),
        ("purpose", "neq", "\"research\"", true),
        ("purpose", "isAnyOf", "[\"marketing\", \"research\"]", true),
        ("purpose", "isNoneOf", "[\"research\"]", false),
        ("purpose", "isNoneOf", "[\"commercial\"]", true),
        ("recipient", "eq", "\"91110000600037341L\"", false),
        ("recipientKind", "eq", "\"enterprise\"", true),
        ("recipientKind", "neq", "\"enterprise\"", false),
        (
            "recipientKind",
            "isAnyOf",
            "[\"government\", \"publicInstitution\"]",
            false,
        ),
        ("recipientKind", "isNoneOf", "[\"government\"]", true),
        ("sector", "eq", "\"I65\"", true),
        ("sector", "isAnyOf", "[\"I64\", \"I65\"]", true),
        ("sector", "isNoneOf", "[\"I65\"]", false),
        ("region", "isPartOf", "\"330100\"", true),
        ("region", "isPartOf", "\"330000\"", true),
        ("region", "isPartOf", "\"310000\"", false),
        ("region", "isPartOf", "330000", true),
        ("region", "eq", "\"330106\"", true),
        ("region", "eq", "\"330100\"", false),
        ("region", "neq", "\"330106\"", false),
        ("region", "isAnyOf", "[\"110000\", \"330100\"]", true),
        ("region", "isNoneOf", "[\"330000\"]", false),
        ("classification", "lteq", "\"general-2\"", true),
        ("classification", "lt", "\"general-2\"", false),
        ("classification", "eq", "\"general-2\"", true),
        ("classification", "gteq", "\"general-3\"", false),
        (
            "classification",
            "isAnyOf",
            "[\"general-1\", \"general-2\"]",
            true,
        ),
        ("securityLevel", "gteq", "3", true),
        ("securityLevel", "gt", "3", false),
        ("securityLevel", "eq", "3", true),
        ("securityLevel", "isNoneOf", "[3]", false),
        ("role", "isAnyOf", "[\"analyst\", \"admin\"]", true),
        ("role", "isAllOf", "[\"analyst\", \"admin\"]", false),
        ("role", "isAllOf", "[\"analyst\"]", true),
        ("role", "isNoneOf", "[\"analyst\"]", false),
    ];
    for (left, op, right, expected) in cases {
        let p = permit(&c(left, op, right));
        assert_eq!(
            allows(&p, &request(), &state()),
            *expected,
            "{left} {op} {right}"
        );
    }
    // The recipient operand with the requester's own ID.
    let me = format!("\"{}\"", consumer_id());
    assert!(allows(
        &permit(&c("recipient", "eq", &me)),
        &request(),
        &state()
    ));
    let list = format!("[{me}]");
    assert!(!allows(
        &permit(&c("recipient", "isNoneOf", &list)),
        &request(),
        &state()
    ));
}

#[test]
fn logical_operators() {
    let lt5 = c("count", "lt", "5");
    let gt9 = c("count", "gt", "9");
    let res = c("purpose", "isA", "\"research\"");
    assert!(allows(
        &permit(&format!("{{ or = [{lt5}, {gt9}] }}")),
        &request(),
        &state()
    ));
    assert!(allows(
        &permit(&format!("{{ and = [{lt5}, {res}] }}")),
        &request(),
        &state()
    ));
    assert!(allows(
        &permit(&format!("{{ xone = [{lt5}, {gt9}] }}")),
        &request(),
        &state()
    ));
    assert!(!allows(
        &permit(&format!("{{ xone = [{lt5}, {res}] }}")),
        &request(),
        &state()
    ));
    let lt3 = c("count", "lt", "3");
    assert!(!allows(
        &permit(&format!("{{ or = [{lt3}, {gt9}] }}")),
        &request(),
        &state()
    ));
}

#[test]
fn unknown_attributes_fail_closed_except_at_catalog() {
    let p = permit(&c("purpose", "isA", "\"research\""));
    let mut r = request();
    r.purpose = None;
    let d = evaluate(&p, &r, &state());
    assert!(!d.is_permit());
    assert!(
        d.explain().contains("no purpose was declared"),
        "{}",
        d.explain()
    );
    r.purpose = Some("fishing".into());
    let d = evaluate(&p, &r, &state());
    assert!(
        d.explain().contains("not in the purpose vocabulary"),
        "{}",
        d.explain()
    );
    r.scope = Scope::Catalog;
    assert!(allows(&p, &r, &state()));

    // A prohibition on an unknown attribute applies, except at catalog scope.
    let q = load(
        &format!(
            "[[permission]]\naction = \"use\"\n[[prohibition]]\naction = \"use\"\nconstraint = [{}]",
            c("sector", "eq", "\"K70\"")
        ),
        Classification::General1,
    )
    .unwrap();
    let mut r = request();
    r.requester.sector = None;
    assert!(!allows(&q, &r, &state()));
    r.scope = Scope::Catalog;
    assert!(allows(&q, &r, &state()));
}

#[test]
fn deny_by_default_and_prohibition_overrides() {
    let p = load(
        "[[permission]]\naction = \"read\"",
        Classification::General1,
    )
    .unwrap();
    let mut r = request();
    r.action = Action::Transfer;
    let d = evaluate(&p, &r, &state());
    assert_eq!(d.denial, Some(Denial::NoPermission));
    // `read` does not include `use`.
    r.action = Action::Use;
    assert!(!allows(&p, &r, &state()));

    let rules = format!(
        "[[permission]]\naction = \"use\"\n[[prohibition]]\nuid = \"no-marketing\"\naction = \"use\"\nconstraint = [{}]",
        c("purpose", "isA", "\"commercial\"")
    );
    let p = load(&rules, Classification::General1).unwrap();
    let mut r = request();
    assert!(allows(&p, &r, &state()));
    r.purpose = Some("marketing".into());
    let d = evaluate(&p, &r, &state());
    assert_eq!(d.denial, Some(Denial::Prohibited));
    assert_eq!(d.rule.as_ref().unwrap().name, "no-marketing");
    assert!(
        d.explain()
            .contains("prohibition \"no-marketing\" forbids it"),
        "{}",
        d.explain()
    );
    // A prohibition on `read` also stops a request for `use` (they overlap).
    let p = load(
        "[[permission]]\naction = \"use\"\nconstraint = [{ leftOperand = \"count\", operator = \"lt\", rightOperand = 9 }]\n[[prohibition]]\naction = \"read\"",
        Classification::General1,
    )
    .unwrap();
    let mut r = request();
    r.action = Action::Use;
    assert!(!allows(&p, &r, &state()));
    r.action = Action::Derive;
    assert!(allows(&p, &r, &state()));
}

#[test]
fn order_of_rules_does_not_matter() {
    let a = format!(
        "[[permission]]\naction = \"use\"\nconstraint = [{}]\nduty = [{{ action = \"log\" }}]",
        c("count", "lt", "5")
    );
    let b = format!(
        "[[permission]]\naction = \"read\"\nconstraint = [{}]\nduty = [{{ action = \"notify\" }}]",
        c("purpose", "isA", "\"research\"")
    );
    let q = format!(
        "[[prohibition]]\naction = \"use\"\nconstraint = [{}]",
        c("region", "isPartOf", "\"110000\"")
    );
    let one = load(&format!("{a}\n{b}\n{q}"), Classification::General1).unwrap();
    let two = load(&format!("{q}\n{b}\n{a}"), Classification::General1).unwrap();
    for uses in [0, 4, 5, 9] {
        for purpose in ["academicResearch", "marketing"] {
            let mut r = request();
            r.purpose = Some(purpose.into());
            let s = State { uses, ..state() };
            let (d1, d2) = (evaluate(&one, &r, &s), evaluate(&two, &r, &s));
            assert_eq!(d1.outcome, d2.outcome);
            let mut x: Vec<_> = d1.duties.to_vec();
            let mut y: Vec<_> = d2.duties.to_vec();
            x.sort_by_key(|d| d.name());
            y.sort_by_key(|d| d.name());
            assert_eq!(x, y, "uses {uses}, {purpose}");
        }
    }
    // Both permit: the duties are the union.
    let d = evaluate(&one, &request(), &state());
    assert_eq!(d.duties.len(), 2);
}

#[test]
fn duties_and_obligations_come_with_a_permit() {
    let text = format!(
        r#"obligation = [{{ action = "notify" }}]
[[permission]]
action = "use"
constraint = [{}]
duty = [
  {{ action = "deleteAfter", elapsed = "P30D" }},
  {{ action = "log" }},
  {{ action = "mask", rules = [
      {{ field = {{ type = "idcard" }}, method = {{ keep = {{ first = 6, last = 4 }} }} }},
      {{ field = {{ name = "phone" }}, method = "maskAll" }},
      {{ field = {{ name = "birth" }}, method = {{ generalize = {{ to = "year" }} }} }},
  ] }},
  {{ action = "aggregateOnly", k = 10 }},
  {{ action = "nextPolicy", policy = "urn:liutong:policy:onward" }},
]"#,
        c("count", "lt", "100")
    );
    let p = load(&text, Classification::General2).unwrap();
    let d = evaluate(&p, &request(), &state());
    assert!(d.is_permit());
    let names: Vec<_> = d.duties.iter().map(Duty::name).collect();
    assert_eq!(
        names,
        [
            "deleteAfter",
            "log",
            "mask",
            "aggregateOnly",
            "nextPolicy",
            "notify"
        ]
    );
    assert!(
        d.explain()
            .contains("delete the copy 30 days after the agreement")
    );
    // Nothing on a deny.
    let d = evaluate(
        &p,
        &request(),
        &State {
            uses: 100,
            ..state()
        },
    );
    assert!(d.duties.is_empty());
    assert!(
        d.explain()
            .contains("the number of uses so far is 100, but it must be less than 100"),
        "{}",
        d.explain()
    );
}

#[test]
fn failed_constraints_are_listed_in_words() {
    let p = permit(&format!(
        "{}, {}, {}",
        c("purpose", "isA", "\"commercial\""),
        c("dateTime", "lt", "\"2025-01-01T00:00:00Z\""),
        c("region", "isPartOf", "\"110000\"")
    ));
    let d = evaluate(&p, &request(), &state());
    assert_eq!(d.denial, Some(Denial::ConstraintsFailed));
    assert_eq!(d.failed.len(), 3);
    let text = d.explain();
    assert!(
        text.contains(
            "the declared purpose is academicResearch, but it must be a kind of commercial"
        ),
        "{text}"
    );
    assert!(text.contains("the current time is 2025-06-01T12:00:00Z, but it must be less than 2025-01-01T00:00:00Z"), "{text}");
    assert!(
        text.contains("the recipient's region is 330106, but it must be part of 110000"),
        "{text}"
    );
    assert!(text.contains("permission 1, constraint 3"), "{text}");
}

#[test]
fn guardrails_at_evaluation() {
    // Core data: only local use.
    let core = compile(
        Policy::from_toml("uid = \"urn:p\"\ntype = \"set\"\n[[permission]]\naction = \"use\"")
            .unwrap(),
        &ctx(Classification::Core),
    )
    .unwrap();
    let mut r = request();
    assert!(allows(&core, &r, &state()));
    r.scope = Scope::Transfer;
    let d = evaluate(&core, &r, &state());
    assert!(matches!(d.denial, Some(Denial::Guardrail { .. })));
    assert!(d.explain().contains("core data never leaves the node"));

    // Important data: approval at negotiation.
    let imp = load(
        &format!(
            "[[permission]]\naction = \"use\"\nconstraint = [{}]",
            c("region", "isPartOf", "\"330100\"")
        ),
        Classification::Important,
    )
    .unwrap();
    let mut r = request();
    r.scope = Scope::Negotiation;
    let d = evaluate(&imp, &r, &State::initial(NOW));
    assert!(d.is_permit() && d.approval_required);
    r.scope = Scope::Use;
    assert!(!evaluate(&imp, &r, &state()).approval_required);
}

// ---- one test per validation error ----

fn load_err(rules: &str, class: Classification) -> PolicyError {
    match load(rules, class) {
        Ok(_) => panic!("expected an error for:\n{rules}"),
        Err(e) => e,
    }
}

#[test]
fn rejects_unknown_left_operand() {
    let e = load_err(
        &format!(
            "[[permission]]\naction = \"use\"\nconstraint = [{}]",
            c("temperature", "lt", "3")
        ),
        Classification::General1,
    );
    assert!(matches!(e, PolicyError::UnknownLeftOperand { .. }));
    assert!(
        e.to_string()
            .starts_with("permission 1, constraint 1 (temperature lt 3)"),
        "{e}"
    );
}

#[test]
fn rejects_unknown_operator() {
    let e = load_err(
        &format!(
            "[[permission]]\nuid = \"r\"\naction = \"use\"\nconstraint = [{}]",
            c("count", "below", "3")
        ),
        Classification::General1,
    );
    assert!(matches!(e, PolicyError::UnknownOperator { .. }));
    assert!(
        e.to_string().contains("permission \"r\", constraint 1"),
        "{e}"
    );
}

#[test]
fn rejects_unknown_action() {
    let e = load_err(
        "[[prohibition]]\naction = \"sell\"",
        Classification::General1,
    );
    assert!(matches!(e, PolicyError::UnknownAction { .. }));
    assert!(e.to_string().contains("prohibition 1"), "{e}");
}

#[test]
fn rejects_type_mismatch() {
    let e = load_err(
        &format!(
            "[[permission]]\naction = \"use\"\nconstraint = [{}]",
            c("count", "lt", "\"2026-01-01T00:00:00Z\"")
        ),
        Classification::General1,
    );
    assert!(matches!(e, PolicyError::TypeMismatch { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("`count` is compared with a date-time"),
        "{e}"
    );
    let e = load_err(
        &format!(
            "[[permission]]\naction = \"use\"\nconstraint = [{}]",
            c("dateTime", "lt", "3")
        ),
        Classification::General1,
    );
    assert!(matches!(e, PolicyError::TypeMismatch { .. }), "{e}");
    let e = load_err(
        &format!(
            "[[permission]]\naction = \"use\"\nconstraint = [{}]",
            c("elapsedTime", "lt", "\"2026-01-01T00:00:00Z\"")
        ),
        Classification::General1,
    );
    assert!(matches!(e, PolicyError::TypeMismatch { .. }), "{e}");
    let e = load_err(
        &format!(
            "[[permission]]\naction = \"use\"\nconstraint = [{}]",
            c("purpose", "isAnyOf", "\"research\"")
        ),
        Classification::General1,
    );
    assert!(matches!(e, PolicyError::TypeMismatch { .. }), "{e}");
}

#[test]
fn rejects_operator_not_allowed_for_operand() {
    for (left, op, right) in [
        ("count", "isA", "3"),
        ("dateTime", "eq", "\"2026-01-01T00:00:00Z\""),
        ("region", "isA", "\"330000\""),
        ("purpose", "isPartOf", "\"research\""),
        ("role", "eq", "\"analyst\""),
        ("sector", "lt", "\"I65\""),
    ] {
        let e = load_err(
            &format!(
                "[[permission]]\naction = \"use\"\nconstraint = [{}]",
                c(left, op, right)
            ),
            Classification::General1,
        );
        assert!(
            matches!(e, PolicyError::OperatorNotAllowed { .. }),
            "{left} {op}: {e}"
        );
    }
}

#[test]
fn rejects_invalid_values() {
    for (left, op, right, needle) in [
        (
            "purpose",
            "isA",
            "\"fishing\"",
            "not in the purpose vocabulary",
        ),
        ("region", "isPartOf", "\"990000\"", "province code"),
        (
            "recipient",
            "eq",
            "\"91110000600037341M\"",
            "check character",
        ),
        ("securityLevel", "gteq", "7", "1 to 5"),
        ("elapsedTime", "lt", "\"P1M\"", "months"),
    ] {
        let e = load_err(
            &format!(
                "[[permission]]\naction = \"use\"\nconstraint = [{}]",
                c(left, op, right)
            ),
            Classification::General1,
        );
        assert!(matches!(e, PolicyError::InvalidValue { .. }), "{left}: {e}");
        assert!(e.to_string().contains(needle), "{e}");
    }
}

#[test]
fn rejects_contradictory_counts() {
    let e = load_err(
        &format!(
            "[[permission]]\nuid = \"few\"\naction = \"use\"\nconstraint = [{}, {}]",
            c("count", "lt", "3"),
            c("count", "gt", "5")
        ),
        Classification::General1,
    );
    assert!(matches!(e, PolicyError::Contradiction { .. }), "{e}");
    let s = e.to_string();
    assert!(
        s.contains("permission \"few\"")
            && s.contains("constraint 1 (count lt 3)")
            && s.contains("constraint 2 (count gt 5)"),
        "{s}"
    );
}

#[test]
fn rejects_empty_time_window() {
    let e = load_err(
        &format!(
            "[[permission]]\naction = \"use\"\nconstraint = [{}, {}]",
            c("dateTime", "gteq", "\"2026-01-01T00:00:00Z\""),
            c("dateTime", "lt", "\"2025-01-01T00:00:00Z\"")
        ),
        Classification::General1,
    );
    assert!(matches!(e, PolicyError::Contradiction { .. }), "{e}");
}

#[test]
fn rejects_other_contradictions() {
    for cs in [
        format!(
            "{}, {}",
            c("purpose", "isA", "\"research\""),
            c("purpose", "isA", "\"commercial\"")
        ),
        format!(
            "{}, {}",
            c("region", "isPartOf", "\"330100\""),
            c("region", "isNoneOf", "[\"330000\"]")
        ),
        format!(
            "{}, {}",
            c("recipientKind", "eq", "\"government\""),
            c("recipientKind", "neq", "\"government\"")
        ),
        format!(
            "{}, {}",
            c("role", "isAllOf", "[\"a\", \"b\"]"),
            c("role", "isNoneOf", "[\"b\"]")
        ),
        format!(
            "{}, {{ or = [{}, {}] }}",
            c("count", "lt", "3"),
            c("count", "gt", "5"),
            c("count", "eq", "7")
        ),
    ] {
        let e = load_err(
            &format!("[[permission]]\naction = \"use\"\nconstraint = [{cs}]"),
            Classification::General1,
        );
        assert!(matches!(e, PolicyError::Contradiction { .. }), "{cs}: {e}");
    }
}

#[test]
fn rejects_a_permission_a_prohibition_always_overrides() {
    let e = load_err(
        &format!(
            "[[permission]]\nuid = \"read-research\"\naction = \"read\"\nconstraint = [{}]\n[[prohibition]]\nuid = \"no-research\"\naction = \"use\"\nconstraint = [{}]",
            c("purpose", "isA", "\"scientificResearch\""),
            c("purpose", "isA", "\"research\"")
        ),
        Classification::General1,
    );
    assert!(matches!(e, PolicyError::AlwaysProhibited { .. }), "{e}");
    assert!(
        e.to_string().contains(
            "permission \"read-research\" can never be used: prohibition \"no-research\""
        ),
        "{e}"
    );
    // Unconditional prohibition of the same action.
    let e = load_err(
        "[[permission]]\naction = \"transfer\"\n[[prohibition]]\naction = \"transfer\"",
        Classification::General1,
    );
    assert!(matches!(e, PolicyError::AlwaysProhibited { .. }), "{e}");
    // A prohibition that only sometimes applies is fine.
    load(
        &format!(
            "[[permission]]\naction = \"read\"\nconstraint = [{}]\n[[prohibition]]\naction = \"use\"\nconstraint = [{}]",
            c("purpose", "isA", "\"research\""),
            c("purpose", "isA", "\"statistics\"")
        ),
        Classification::General1,
    )
    .unwrap();
}

#[test]
fn rejects_what_the_guardrails_forbid() {
    // Core data: no offer at all, no transfer or distribute.
    let e = load_err("[[permission]]\naction = \"use\"", Classification::Core);
    assert!(matches!(e, PolicyError::Guardrail { .. }), "{e}");
    assert!(
        e.to_string().contains("core data never leaves the node"),
        "{e}"
    );
    let set =
        Policy::from_toml("uid = \"urn:p\"\ntype = \"set\"\n[[permission]]\naction = \"transfer\"")
            .unwrap();
    let e = compile(set, &ctx(Classification::Core)).unwrap_err();
    assert!(
        e.to_string().contains("`transfer` cannot be permitted"),
        "{e}"
    );
    // Important data: a region constraint inside the permitted regions.
    let e = load_err(
        &format!(
            "[[permission]]\naction = \"use\"\nconstraint = [{}]",
            c("count", "lt", "3")
        ),
        Classification::Important,
    );
    assert!(
        e.to_string().contains("must limit the recipient's region"),
        "{e}"
    );
    let e = load_err(
        &format!(
            "[[permission]]\naction = \"use\"\nconstraint = [{}]",
            c("region", "isPartOf", "\"110000\"")
        ),
        Classification::Important,
    );
    assert!(
        e.to_string().contains("outside the regions permitted"),
        "{e}"
    );
    let e = load_err(
        &format!(
            "[[permission]]\naction = \"use\"\nconstraint = [{}]",
            c("region", "neq", "\"110000\"")
        ),
        Classification::Important,
    );
    assert!(matches!(e, PolicyError::Guardrail { .. }), "{e}");
    // With no regions configured, important data cannot be offered.
    let p = Policy::from_toml(&offer(&format!(
        "[[permission]]\naction = \"use\"\nconstraint = [{}]",
        c("region", "isPartOf", "\"330100\"")
    )))
    .unwrap();
    let e = compile(p.clone(), &CompileContext::new(Classification::Important)).unwrap_err();
    assert!(e.to_string().contains("configure"), "{e}");
    compile(p, &ctx(Classification::Important)).unwrap();
    // An `or` over regions inside the permitted ones is fine.
    load(
        &format!(
            "[[permission]]\naction = \"use\"\nconstraint = [{{ or = [{}, {}] }}]",
            c("region", "isPartOf", "\"330100\""),
            c("region", "eq", "\"330206\"")
        ),
        Classification::Important,
    )
    .unwrap();
}

// ---- analysis ----

fn agreement(rules: &str) -> CompiledPolicy {
    let text = format!(
        "uid = \"urn:liutong:agreement:1\"\ntype = \"agreement\"\nassigner = \"{PROVIDER}\"\nassignee = \"{}\"\ntarget = \"urn:liutong:product:test\"\n{rules}",
        consumer_id()
    );
    compile(
        Policy::from_toml(&text).unwrap(),
        &ctx(Classification::General2),
    )
    .unwrap()
}

#[test]
fn implies_accepts_narrowing_and_rejects_widening() {
    let o = load(
        &format!(
            "[[permission]]\naction = \"use\"\nconstraint = [{}, {}]\nduty = [{{ action = \"log\" }}]\n[[prohibition]]\naction = \"distribute\"",
            c("purpose", "isA", "\"research\""),
            c("count", "lt", "10")
        ),
        Classification::General2,
    )
    .unwrap();
    let narrower = agreement(&format!(
        "[[permission]]\naction = \"read\"\nconstraint = [{}, {}, {}]\nduty = [{{ action = \"log\" }}]",
        c("purpose", "isA", "\"academicResearch\""),
        c("count", "lt", "5"),
        c("region", "isPartOf", "\"330000\"")
    ));
    assert!(
        implies(&narrower, &o),
        "{:?}",
        narrowing_gaps(&narrower, &o)
    );
    let wider = agreement(&format!(
        "[[permission]]\naction = \"use\"\nconstraint = [{}]\nduty = [{{ action = \"log\" }}]",
        c("count", "lt", "20")
    ));
    assert!(!implies(&wider, &o));
    let no_duty = agreement(&format!(
        "[[permission]]\naction = \"read\"\nconstraint = [{}, {}]",
        c("purpose", "isA", "\"academicResearch\""),
        c("count", "lt", "5")
    ));
    let gaps = narrowing_gaps(&no_duty, &o);
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let distribute = agreement("[[permission]]\naction = \"distribute\"");
    assert!(!implies(&distribute, &o));
}

#[test]
fn decision_round_trips_through_serde() {
    let p = permit(&c("count", "lt", "3"));
    let d = evaluate(&p, &request(), &state());
    let json = serde_json::to_string(&d).unwrap();
    let back: Decision = serde_json::from_str(&json).unwrap();
    assert_eq!(back, d);
    let r: Request = serde_json::from_str(&serde_json::to_string(&request()).unwrap()).unwrap();
    assert_eq!(r, request());
}
