//! The policies of README "Writing policies" live in `policy/examples/`. Each is loaded
//! and evaluated here, and the README must show each file verbatim.

use std::time::Duration;

use liutong_policy::*;
use time::OffsetDateTime;
use time::macros::datetime;

const EXAMPLES: [&str; 13] = [
    "provide-access",
    "restrict-purpose",
    "use-during-interval",
    "use-until",
    "use-n-times",
    "delete-after",
    "log-access",
    "notify",
    "restrict-recipient",
    "mask",
    "aggregate-only",
    "differential-privacy",
    "important-data",
];

fn text(name: &str) -> String {
    let path = format!("{}/examples/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn context(class: Classification) -> CompileContext {
    CompileContext::new(class).with_guardrails(Guardrails {
        important_regions: vec![RegionCode::parse("330000").unwrap()],
        important_requires_approval: true,
    })
}

fn load(name: &str) -> CompiledPolicy {
    let class = if name == "important-data" {
        Classification::Important
    } else {
        Classification::General2
    };
    let policy = Policy::from_toml(&text(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    compile(policy, &context(class)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn partner() -> ParticipantCode {
    ParticipantCode::parse("91330100MA27XY0017").unwrap()
}

fn request() -> Request {
    Request {
        scope: Scope::Use,
        action: Action::Read,
        requester: Requester {
            participant: ParticipantCode::with_check_character("91330106MA2CXY123").unwrap(),
            kind: RecipientKind::Government,
            sector: Some("S92".into()),
            region: Some(RegionCode::parse("330106").unwrap()),
            security_level: Some(3),
            roles: vec![],
        },
        purpose: Some("academicResearch".into()),
    }
}

const NOW: OffsetDateTime = datetime!(2026-03-01 9:00 +08:00);

fn state(elapsed_days: u64, uses: u64) -> State {
    State {
        now: NOW,
        elapsed: Duration::from_secs(elapsed_days * 86_400),
        uses,
    }
}

fn permit(p: &CompiledPolicy, r: &Request, s: &State) -> Decision {
    let d = evaluate(p, r, s);
    assert!(d.is_permit(), "{}", d.explain());
    d
}

fn deny(p: &CompiledPolicy, r: &Request, s: &State) -> Decision {
    let d = evaluate(p, r, s);
    assert!(!d.is_permit(), "expected a deny");
    d
}

#[test]
fn provide_access() {
    let p = load("provide-access");
    permit(&p, &request(), &state(0, 0));
    let mut r = request();
    r.action = Action::Distribute;
    deny(&p, &r, &state(0, 0));
}

#[test]
fn restrict_purpose() {
    let p = load("restrict-purpose");
    permit(&p, &request(), &state(0, 0));
    let mut r = request();
    r.purpose = Some("marketing".into());
    let d = deny(&p, &r, &state(0, 0));
    assert_eq!(d.denial, Some(Denial::Prohibited));
    r.purpose = Some("urbanPlanning".into());
    assert_eq!(
        deny(&p, &r, &state(0, 0)).denial,
        Some(Denial::ConstraintsFailed)
    );
}

#[test]
fn use_during_interval() {
    let p = load("use-during-interval");
    permit(&p, &request(), &state(0, 0));
    let late = State {
        now: datetime!(2027-01-01 0:00 +08:00),
        ..state(0, 0)
    };
    let d = deny(&p, &request(), &late);
    assert!(
        d.explain()
            .contains("the current time is 2026-12-31T16:00:00Z"),
        "{}",
        d.explain()
    );
}

#[test]
fn use_until() {
    let p = load("use-until");
    permit(&p, &request(), &state(89, 0));
    let d = deny(&p, &request(), &state(90, 0));
    assert!(d.explain().contains("90 days"), "{}", d.explain());
}

#[test]
fn use_n_times() {
    let p = load("use-n-times");
    permit(&p, &request(), &state(0, 9));
    deny(&p, &request(), &state(0, 10));
}

#[test]
fn delete_after() {
    let d = permit(&load("delete-after"), &request(), &state(0, 0));
    assert_eq!(
        &*d.duties,
        &[Duty::DeleteAfter {
            when: DeleteAfter::Elapsed(Duration::from_secs(30 * 86_400))
        }]
    );
}

#[test]
fn log_access() {
    let d = permit(&load("log-access"), &request(), &state(0, 0));
    assert_eq!(&*d.duties, &[Duty::Log]);
}

#[test]
fn notify() {
    let d = permit(&load("notify"), &request(), &state(0, 0));
    assert_eq!(&*d.duties, &[Duty::Notify]);
}

#[test]
fn restrict_recipient() {
    let p = load("restrict-recipient");
    let d = permit(&p, &request(), &state(0, 0));
    assert_eq!(d.rule.unwrap().name, "hangzhou-government");
    let mut r = request();
    r.requester.region = Some(RegionCode::parse("330206").unwrap());
    deny(&p, &r, &state(0, 0));
    r.requester.participant = partner();
    r.requester.kind = RecipientKind::Enterprise;
    let d = permit(&p, &r, &state(0, 0));
    assert_eq!(d.rule.unwrap().name, "named-partner");
}

#[test]
fn mask() {
    let d = permit(&load("mask"), &request(), &state(0, 0));
    let Duty::Mask { rules } = &d.duties[0] else {
        panic!("expected a mask duty");
    };
    assert_eq!(rules.len(), 7);
    assert_eq!(rules[0].field, FieldSelector::Type(FieldType::Idcard));
    assert_eq!(rules[0].method, MaskMethod::Keep { first: 6, last: 4 });
    assert_eq!(rules[3].method, MaskMethod::Hash);
    assert_eq!(
        rules[5].method,
        MaskMethod::Generalize {
            to: Generalization::Year
        }
    );
}

#[test]
fn aggregate_only() {
    let p = load("aggregate-only");
    let mut r = request();
    r.action = Action::Aggregate;
    let d = permit(&p, &r, &state(0, 0));
    assert_eq!(&*d.duties, &[Duty::AggregateOnly { k: 20 }]);
    r.action = Action::Read;
    deny(&p, &r, &state(0, 0));
}

#[test]
fn differential_privacy() {
    let p = load("differential-privacy");
    let mut r = request();
    r.action = Action::Aggregate;
    let d = permit(&p, &r, &state(0, 0));
    let [
        Duty::DifferentialPrivacy {
            epsilon,
            budget,
            bounds,
        },
    ] = &*d.duties
    else {
        panic!("one differentialPrivacy duty: {:?}", d.duties);
    };
    assert_eq!((epsilon.value(), budget.value()), (0.5, 10.0));
    assert_eq!(
        (bounds[0].column.as_str(), bounds[0].sensitivity()),
        ("income", 50_000)
    );
    r.action = Action::Read;
    deny(&p, &r, &state(0, 0));
}

#[test]
fn important_data() {
    let p = load("important-data");
    let mut r = request();
    r.scope = Scope::Negotiation;
    let d = permit(&p, &r, &State::initial(NOW));
    assert!(d.approval_required);
    r.scope = Scope::Use;
    let d = permit(&p, &r, &state(10, 99));
    assert_eq!(d.duties.len(), 2);
    deny(&p, &r, &state(10, 100));
    r.requester.region = Some(RegionCode::parse("310104").unwrap());
    deny(&p, &r, &state(10, 0));
    // Not compilable as core data, nor with no permitted region.
    let policy = Policy::from_toml(&text("important-data")).unwrap();
    assert!(compile(policy.clone(), &context(Classification::Core)).is_err());
    assert!(compile(policy, &CompileContext::new(Classification::Important)).is_err());
}

#[test]
fn every_example_round_trips_through_every_form() {
    for name in EXAMPLES {
        let p = Policy::from_toml(&text(name)).unwrap();
        assert_eq!(Policy::from_toml(&p.to_toml()).unwrap(), p, "{name} TOML");
        assert_eq!(Policy::from_json(&p.to_json()).unwrap(), p, "{name} JSON");
        assert_eq!(
            Policy::from_odrl(&p.to_odrl_string()).unwrap(),
            p,
            "{name} ODRL"
        );
    }
}

/// README shows every example verbatim, after a `<!-- example: NAME -->` marker.
#[test]
fn readme_shows_the_example_files_verbatim() {
    let readme_path = format!("{}/README.md", env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    for name in EXAMPLES {
        let marker = format!("<!-- example: {name} -->\n```toml\n");
        let start = readme
            .find(&marker)
            .unwrap_or_else(|| panic!("README lacks the block for examples/{name}.toml"))
            + marker.len();
        let end = start + readme[start..].find("```").expect("closed code block");
        assert_eq!(
            &readme[start..end],
            text(name),
            "README block for {name} differs from examples/{name}.toml; copy the file into README"
        );
    }
}
