//! The same decisions made by liutong-policy and by Cedar, for the comparison
//! benchmark in `benches/evaluate.rs`. A workspace member of its own, outside the
//! default members, so normal builds and tests never compile Cedar.
//!
//! Two scenarios:
//! - (a) [`realistic`]: the README's important-data offer — purpose (a hierarchy),
//!   recipient region (a hierarchy), a time window, a use count and the product's
//!   classification, plus a prohibition.
//! - (b) [`fifty_rules`]: 45 permissions over different prefectures and 5
//!   prohibitions; the request matches only the last permission.
//!
//! Cedar gets the hierarchies as entity parents (`Purpose::"academicResearch" in
//! Purpose::"scientificResearch"`, `Region::"330106" in Region::"330100"`), times as
//! Unix seconds in the context, and the actions `read`/`aggregate`/`derive` as
//! members of `use`. Requests, entities and policies are built once, outside the
//! measured loop, for both engines.
#![forbid(unsafe_code)]

use std::time::Duration;

use cedar_policy::{Authorizer, Context, Entities, EntityUid, PolicySet};
use liutong_policy::{
    Action, Classification, CompileContext, CompiledPolicy, Guardrails, ParticipantCode, Policy,
    PurposeVocabulary, RecipientKind, RegionCode, Request, Requester, Scope, State, compile,
    evaluate,
};
use serde_json::{Value, json};
use time::macros::datetime;

/// One decision, ready for both engines.
pub struct Scenario {
    /// What the bench prints.
    pub name: &'static str,
    /// The liutong policy.
    pub liutong: CompiledPolicy,
    /// The liutong request.
    pub request: Request,
    /// The liutong state.
    pub state: State,
    /// The same decision for Cedar.
    pub cedar: CedarCase,
}

/// A Cedar policy set, entity store and request.
pub struct CedarCase {
    /// The policies.
    pub policies: PolicySet,
    /// Entities (purpose and region hierarchies, actions, the product).
    pub entities: Entities,
    /// The request.
    pub request: cedar_policy::Request,
    /// The authorizer.
    pub authorizer: Authorizer,
}

impl Scenario {
    /// liutong's answer.
    pub fn liutong_permits(&self) -> bool {
        evaluate(&self.liutong, &self.request, &self.state).is_permit()
    }

    /// Cedar's answer.
    pub fn cedar_permits(&self) -> bool {
        let c = &self.cedar;
        c.authorizer
            .is_authorized(&c.request, &c.policies, &c.entities)
            .decision()
            == cedar_policy::Decision::Allow
    }
}

const PROVIDER: &str = "91110000600037341L";
const CONSUMER_STEM: &str = "91330100MA27XY001";
/// 2026-03-01T09:00:00+08:00.
const NOW: time::OffsetDateTime = datetime!(2026-03-01 9:00 +08:00);

fn requester(region: &str) -> Requester {
    Requester {
        participant: ParticipantCode::with_check_character(CONSUMER_STEM)
            .expect("stem is 17 valid characters"),
        kind: RecipientKind::Government,
        sector: Some("I65".into()),
        region: Some(RegionCode::parse(region).expect("literal region code")),
        security_level: Some(3),
        roles: vec![],
    }
}

fn state(uses: u64) -> State {
    State {
        now: NOW,
        elapsed: Duration::from_secs(10 * 86_400),
        uses,
    }
}

/// Entities shared by both scenarios: the purpose vocabulary, the actions, one
/// region chain and the product.
fn entities(region_chain: &[&str], classification_rank: i64) -> Entities {
    let vocab = PurposeVocabulary::default();
    let mut list: Vec<Value> = Vec::new();
    // Cedar gets the same vocabulary: its terms become entities with their parents.
    for (term, parent) in vocab.pairs() {
        let parents: Vec<Value> = parent
            .map(|p| vec![json!({"type": "Purpose", "id": p})])
            .unwrap_or_default();
        list.push(json!({"uid": {"type": "Purpose", "id": term}, "attrs": {}, "parents": parents}));
    }
    for w in region_chain.windows(2) {
        list.push(json!({"uid": {"type": "Region", "id": w[0]}, "attrs": {}, "parents": [{"type": "Region", "id": w[1]}]}));
    }
    if let Some(top) = region_chain.last() {
        list.push(json!({"uid": {"type": "Region", "id": top}, "attrs": {}, "parents": []}));
    }
    for a in ["read", "aggregate", "derive"] {
        list.push(json!({"uid": {"type": "Action", "id": a}, "attrs": {}, "parents": [{"type": "Action", "id": "use"}]}));
    }
    for a in ["use", "transfer", "distribute", "delete"] {
        list.push(json!({"uid": {"type": "Action", "id": a}, "attrs": {}, "parents": []}));
    }
    list.push(json!({"uid": {"type": "Product", "id": "p"}, "attrs": {"classification": classification_rank}, "parents": []}));
    Entities::from_json_value(Value::Array(list), None).expect("entities are well formed")
}

fn cedar_case(policies: &str, entities: Entities, region: &str, uses: u64) -> CedarCase {
    let uid = |s: &str| -> EntityUid { s.parse().expect("literal entity UID") };
    let context = Context::from_json_value(
        json!({
            "purpose": {"__entity": {"type": "Purpose", "id": "academicResearch"}},
            "region": {"__entity": {"type": "Region", "id": region}},
            "now": NOW.unix_timestamp(),
            "uses": uses,
            "sector": "I65",
            "security_level": 3,
            "kind": "government",
        }),
        None,
    )
    .expect("context is well formed");
    let principal = format!(
        "Participant::\"{}\"",
        ParticipantCode::with_check_character(CONSUMER_STEM).expect("valid stem")
    );
    CedarCase {
        policies: policies.parse().expect("Cedar policies parse"),
        entities,
        request: cedar_policy::Request::new(
            uid(&principal),
            uid("Action::\"read\""),
            uid("Product::\"p\""),
            context,
            None,
        )
        .expect("request is well formed"),
        authorizer: Authorizer::new(),
    }
}

fn request(region: &str) -> Request {
    Request {
        scope: Scope::Use,
        action: Action::Read,
        requester: requester(region),
        purpose: Some("academicResearch".into()),
    }
}

/// (a) The README's important-data offer (`policy/examples/important-data.toml`).
pub fn realistic(uses: u64) -> Scenario {
    let text = include_str!("../../examples/important-data.toml");
    let context = CompileContext::new(Classification::Important).with_guardrails(Guardrails {
        important_regions: vec![RegionCode::parse("330000").expect("literal")],
        important_requires_approval: true,
    });
    let liutong = compile(Policy::from_toml(text).expect("example parses"), &context)
        .expect("example compiles");
    // 2026-01-01T00:00:00+08:00 = 1767196800; 2027-01-01T00:00:00+08:00 = 1798732800.
    let cedar = r#"
permit(principal, action in Action::"use", resource == Product::"p")
when {
  context.purpose in Purpose::"scientificResearch" &&
  context.region in Region::"330000" &&
  context.now >= 1767196800 && context.now < 1798732800 &&
  context.uses < 100 &&
  resource.classification <= 4
};
forbid(principal, action == Action::"distribute", resource);
"#;
    let region = "330106";
    Scenario {
        name: "(a) realistic data-space policy",
        liutong,
        request: request(region),
        state: state(uses),
        cedar: cedar_case(
            cedar,
            entities(&["330106", "330100", "330000"], 4),
            region,
            uses,
        ),
    }
}

/// (b) 45 permissions over prefectures 3301..3345 and 5 prohibitions on sectors; the
/// request (region 334506) matches only permission 45.
pub fn fifty_rules(uses: u64) -> Scenario {
    let mut toml = format!(
        "uid = \"urn:liutong:policy:fifty\"\ntype = \"offer\"\nassigner = \"{PROVIDER}\"\ntarget = \"urn:liutong:product:p\"\n"
    );
    let mut cedar = String::new();
    for i in 1..=45 {
        let limit = 10 + i;
        toml.push_str(&format!(
            r#"
[[permission]]
action = "use"
constraint = [
  {{ leftOperand = "region", operator = "isPartOf", rightOperand = "33{i:02}00" }},
  {{ leftOperand = "purpose", operator = "isA", rightOperand = "research" }},
  {{ leftOperand = "count", operator = "lt", rightOperand = {limit} }},
  {{ leftOperand = "securityLevel", operator = "gteq", rightOperand = 2 }},
]
duty = [{{ action = "log" }}]
"#
        ));
        cedar.push_str(&format!(
            "permit(principal, action in Action::\"use\", resource) when {{ context.region in Region::\"33{i:02}00\" && context.purpose in Purpose::\"research\" && context.uses < {limit} && context.security_level >= 2 }};\n"
        ));
    }
    for j in 0..5 {
        toml.push_str(&format!(
            "\n[[prohibition]]\naction = \"use\"\nconstraint = [{{ leftOperand = \"sector\", operator = \"eq\", rightOperand = \"K7{j}\" }}]\n"
        ));
        cedar.push_str(&format!(
            "forbid(principal, action in Action::\"use\", resource) when {{ context.sector == \"K7{j}\" }};\n"
        ));
    }
    let liutong = compile(
        Policy::from_toml(&toml).expect("generated policy parses"),
        &CompileContext::new(Classification::General2),
    )
    .expect("generated policy compiles");
    let region = "334506";
    Scenario {
        name: "(b) 50-rule policy",
        liutong,
        request: request(region),
        state: state(uses),
        cedar: cedar_case(
            &cedar,
            entities(&["334506", "334500", "330000"], 2),
            region,
            uses,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_engines_agree() {
        for uses in [0, 5, 54, 55, 99, 100] {
            for s in [realistic(uses), fifty_rules(uses)] {
                assert_eq!(
                    s.liutong_permits(),
                    s.cedar_permits(),
                    "{} uses {uses}",
                    s.name
                );
            }
        }
        assert!(realistic(5).liutong_permits());
        assert!(!realistic(100).liutong_permits());
        assert!(fifty_rules(54).liutong_permits());
        assert!(!fifty_rules(55).liutong_permits());
    }
}
