//! Import and export of ODRL 2.2 JSON-LD, the form embedded in signed agreements.
//!
//! Export writes compact terms under the standard ODRL context plus the Liutong profile
//! prefix `lt:`. Import reads compact terms (`use`), prefixed terms (`odrl:use`,
//! `lt:region`, or a prefix the document's own `@context` defines) and full IRIs
//! (`http://www.w3.org/ns/odrl/2/use`) as the same thing; values may be plain, in
//! `{"@id": …}` or `{"@value": …, "@type": …}`; lists may be plain arrays or
//! `{"@list": […]}`. Anything it does not know is an error, never skipped.
//!
//! Profile mapping: the left operands `recipientKind`, `sector`, `region`,
//! `classification`, `securityLevel` and `role` and the duty `log` are `lt:` terms;
//! `notify` is `odrl:inform`, `mask` is `odrl:anonymize` with `lt:maskRules`,
//! `aggregateOnly` is `odrl:aggregate` with `lt:minimumGroupSize`,
//! `differentialPrivacy` is `lt:differentialPrivacy` with `lt:epsilon`, `lt:budget` and
//! `lt:bounds`, `deleteAfter` is
//! `odrl:delete` with an `elapsedTime` or `dateTime` constraint, `nextPolicy` is
//! `odrl:nextPolicy` with the policy as its target.

use std::collections::HashMap;

use serde_json::{Map, Value as Json, json};

use crate::authoring::{atomic_from_parts, parse_datetime, rule_ref, value_to_json};
use crate::error::{ConstraintRef, PolicyError, RuleRef};
use crate::model::{
    Action, ColumnBounds, Constraint, DeleteAfter, Duty, Epsilon, LeftOperand, LogicalOperator,
    MaskRule, Operator, Policy, PolicyType, RightOperand, Rule, RuleKind, Value, format_datetime,
};
use crate::vocab::{ParticipantCode, format_duration, parse_duration};

/// The ODRL 2.2 namespace.
pub const ODRL_NS: &str = "http://www.w3.org/ns/odrl/2/";
/// The ODRL 2.2 JSON-LD context.
pub const ODRL_CONTEXT: &str = "http://www.w3.org/ns/odrl.jsonld";
/// The Liutong profile namespace (prefix `lt:`), also the policy's `profile`.
pub const PROFILE_NS: &str = "https://liutong.invalid/ns/odrl-profile#";
const XSD_NS: &str = "http://www.w3.org/2001/XMLSchema#";

const PROFILE_OPERANDS: [LeftOperand; 6] = [
    LeftOperand::RecipientKind,
    LeftOperand::Sector,
    LeftOperand::Region,
    LeftOperand::Classification,
    LeftOperand::SecurityLevel,
    LeftOperand::Role,
];

impl Policy {
    /// Exports as ODRL 2.2 JSON-LD (compact form).
    pub fn to_odrl(&self) -> Json {
        let mut m = Map::new();
        m.insert(
            "@context".into(),
            json!([ODRL_CONTEXT, { "lt": PROFILE_NS, "xsd": XSD_NS }]),
        );
        m.insert("@type".into(), self.policy_type.odrl_name().into());
        m.insert("uid".into(), self.uid.clone().into());
        m.insert("profile".into(), PROFILE_NS.into());
        if let Some(a) = &self.assigner {
            m.insert("assigner".into(), a.as_str().into());
        }
        if let Some(a) = &self.assignee {
            m.insert("assignee".into(), a.as_str().into());
        }
        if let Some(t) = &self.target {
            m.insert("target".into(), t.clone().into());
        }
        let rules = |rs: &[Rule]| Json::Array(rs.iter().map(rule_to_odrl).collect());
        if !self.permissions.is_empty() {
            m.insert("permission".into(), rules(&self.permissions));
        }
        if !self.prohibitions.is_empty() {
            m.insert("prohibition".into(), rules(&self.prohibitions));
        }
        if !self.obligations.is_empty() {
            m.insert(
                "obligation".into(),
                Json::Array(self.obligations.iter().map(duty_to_odrl).collect()),
            );
        }
        Json::Object(m)
    }

    /// Exports as ODRL 2.2 JSON-LD text (pretty).
    pub fn to_odrl_string(&self) -> String {
        // Serialising a serde_json value to a String cannot fail.
        serde_json::to_string_pretty(&self.to_odrl()).expect("JSON value serialises")
    }

    /// Imports ODRL 2.2 JSON-LD text.
    pub fn from_odrl(text: &str) -> Result<Policy, PolicyError> {
        let json: Json = serde_json::from_str(text).map_err(|e| PolicyError::Syntax {
            format: "JSON-LD",
            message: e.to_string(),
        })?;
        Policy::from_odrl_value(&json)
    }

    /// Imports an ODRL 2.2 JSON-LD value.
    pub fn from_odrl_value(json: &Json) -> Result<Policy, PolicyError> {
        let Json::Object(root) = json else {
            return Err(field(
                "@type",
                "the document is not a JSON-LD object".into(),
            ));
        };
        let names = Names::from_context(root.get("@context"));
        let doc = names.normalise(root)?;
        let get_text = |k: &str| -> Result<Option<String>, PolicyError> {
            doc.get(k)
                .map(|v| {
                    names
                        .text(one(v))
                        .ok_or_else(|| field(k, "must be a name or IRI".into()))
                })
                .transpose()
        };
        let ty = get_text("@type")?.unwrap_or_default();
        let policy_type = match names.term(&ty).as_str() {
            "Set" | "Policy" => PolicyType::Set,
            "Offer" => PolicyType::Offer,
            "Agreement" => PolicyType::Agreement,
            _ => {
                return Err(field(
                    "@type",
                    format!("`{ty}` is not an ODRL policy type; use Set, Offer or Agreement"),
                ));
            }
        };
        let uid = match get_text("uid")? {
            Some(u) => Some(u),
            None => get_text("@id")?,
        }
        .ok_or_else(|| field("uid", "is missing".into()))?;
        let party = |k: &str| -> Result<Option<ParticipantCode>, PolicyError> {
            get_text(k)?
                .map(|s| ParticipantCode::parse(&s).map_err(|m| field(k, m)))
                .transpose()
        };
        let assigner = party("assigner")?;
        let assignee = party("assignee")?;
        let target = get_text("target")?;
        if let Some(p) = get_text("profile")?
            && p != PROFILE_NS
        {
            return Err(field(
                "profile",
                format!("`{p}` is not the Liutong profile ({PROFILE_NS})"),
            ));
        }
        let rules = |kind: RuleKind, key: &str| -> Result<Vec<Rule>, PolicyError> {
            list(doc.get(key))
                .iter()
                .enumerate()
                .map(|(i, r)| rule_from_odrl(&names, kind, i, r))
                .collect()
        };
        let permissions = rules(RuleKind::Permission, "permission")?;
        let prohibitions = rules(RuleKind::Prohibition, "prohibition")?;
        let obligations = list(doc.get("obligation"))
            .iter()
            .enumerate()
            .map(|(i, d)| duty_from_odrl(&names, "obligation", i, d))
            .collect::<Result<_, _>>()?;
        let p = Policy {
            uid,
            policy_type,
            assigner,
            assignee,
            target,
            permissions,
            prohibitions,
            obligations,
        };
        // The same policy-level checks as the authoring forms.
        Policy::from_json(&p.to_json())
    }
}

fn field(name: &str, message: String) -> PolicyError {
    PolicyError::Field {
        field: name.to_owned(),
        message,
    }
}

fn rule_to_odrl(r: &Rule) -> Json {
    let mut m = Map::new();
    if let Some(u) = &r.uid {
        m.insert("uid".into(), u.clone().into());
    }
    m.insert("action".into(), r.action.as_str().into());
    if !r.constraints.is_empty() {
        m.insert(
            "constraint".into(),
            Json::Array(r.constraints.iter().map(constraint_to_odrl).collect()),
        );
    }
    if !r.duties.is_empty() {
        m.insert(
            "duty".into(),
            Json::Array(r.duties.iter().map(duty_to_odrl).collect()),
        );
    }
    Json::Object(m)
}

fn operand_name(l: LeftOperand) -> String {
    if PROFILE_OPERANDS.contains(&l) {
        format!("lt:{}", l.as_str())
    } else {
        l.as_str().to_owned()
    }
}

fn typed(v: &Value) -> Json {
    match v {
        Value::DateTime(t) => json!({ "@value": format_datetime(*t), "@type": "xsd:dateTime" }),
        Value::Duration(d) => json!({ "@value": format_duration(*d), "@type": "xsd:duration" }),
        other => value_to_json(other),
    }
}

fn constraint_to_odrl(c: &Constraint) -> Json {
    match c {
        Constraint::Atomic(a) => {
            let right = match &a.right {
                RightOperand::One(v) => typed(v),
                RightOperand::List(vs) => {
                    json!({ "@list": vs.iter().map(typed).collect::<Vec<_>>() })
                }
            };
            json!({
                "leftOperand": operand_name(a.left),
                "operator": a.operator.as_str(),
                "rightOperand": right,
            })
        }
        Constraint::Logical(op, cs) => {
            json!({ op.as_str(): { "@list": cs.iter().map(constraint_to_odrl).collect::<Vec<_>>() } })
        }
    }
}

fn duty_to_odrl(d: &Duty) -> Json {
    match d {
        Duty::Log => json!({ "action": "lt:log" }),
        Duty::Notify => json!({ "action": "inform" }),
        Duty::DeleteAfter { when } => {
            let (left, right) = match when {
                DeleteAfter::Elapsed(d) => ("elapsedTime", typed(&Value::Duration(*d))),
                DeleteAfter::At(t) => ("dateTime", typed(&Value::DateTime(*t))),
            };
            json!({
                "action": "delete",
                "constraint": [{ "leftOperand": left, "operator": "eq", "rightOperand": right }],
            })
        }
        Duty::Mask { rules } => json!({
            "action": "anonymize",
            // MaskRule serialises to plain JSON maps and strings.
            "lt:maskRules": serde_json::to_value(rules).expect("mask rules serialise"),
        }),
        Duty::AggregateOnly { k } => json!({ "action": "aggregate", "lt:minimumGroupSize": k }),
        Duty::KAnonymity { k } => json!({ "action": "lt:kAnonymity", "lt:minimumGroupSize": k }),
        Duty::DifferentialPrivacy {
            epsilon,
            budget,
            bounds,
        } => json!({
            "action": "lt:differentialPrivacy",
            "lt:epsilon": epsilon.value(),
            "lt:budget": budget.value(),
            // ColumnBounds serialises to plain JSON maps.
            "lt:bounds": serde_json::to_value(bounds).expect("bounds serialise"),
        }),
        Duty::NextPolicy { policy } => json!({ "action": "nextPolicy", "target": policy }),
    }
}

/// Prefixes known while reading one document: ODRL's, the profile's, XSD's and any
/// string-valued prefix in the document's `@context`.
struct Names {
    prefixes: HashMap<String, String>,
}

impl Names {
    fn from_context(ctx: Option<&Json>) -> Self {
        let mut prefixes = HashMap::from([
            ("odrl".to_owned(), ODRL_NS.to_owned()),
            ("lt".to_owned(), PROFILE_NS.to_owned()),
            ("xsd".to_owned(), XSD_NS.to_owned()),
        ]);
        for c in list(ctx) {
            if let Json::Object(m) = c {
                for (k, v) in m {
                    if let Json::String(iri) = v
                        && !k.starts_with('@')
                    {
                        prefixes.insert(k.clone(), iri.clone());
                    }
                }
            }
        }
        Names { prefixes }
    }

    /// Expands `prefix:term` to a full IRI when the prefix is known.
    fn expand(&self, s: &str) -> String {
        if let Some((p, rest)) = s.split_once(':')
            && !rest.starts_with("//")
            && let Some(ns) = self.prefixes.get(p)
        {
            return format!("{ns}{rest}");
        }
        s.to_owned()
    }

    /// The local term of an ODRL, profile or XSD name, however written; other strings
    /// are returned as they are.
    fn term(&self, s: &str) -> String {
        let full = self.expand(s);
        for ns in [ODRL_NS, PROFILE_NS, XSD_NS] {
            if let Some(t) = full.strip_prefix(ns) {
                return t.to_owned();
            }
        }
        s.to_owned()
    }

    /// A string, `{"@id": …}` or `{"@value": …}` as text.
    fn text(&self, v: &Json) -> Option<String> {
        match v {
            Json::String(s) => Some(s.clone()),
            Json::Object(m) => m
                .get("@id")
                .or_else(|| m.get("@value"))
                .or_else(|| m.get("uid"))
                .and_then(|x| self.text(x)),
            _ => None,
        }
    }

    /// The object with its keys reduced to local terms.
    fn normalise(&self, m: &Map<String, Json>) -> Result<Map<String, Json>, PolicyError> {
        let mut out = Map::new();
        for (k, v) in m {
            let key = if k.starts_with('@') {
                k.clone()
            } else {
                self.term(k)
            };
            if out.insert(key.clone(), v.clone()).is_some() {
                return Err(field(
                    &key,
                    "is given twice (in different spellings)".into(),
                ));
            }
        }
        Ok(out)
    }
}

/// A value that may be a single item or an array of one.
fn one(v: &Json) -> &Json {
    match v {
        Json::Array(a) if a.len() == 1 => &a[0],
        other => other,
    }
}

/// A value that may be absent, one item, an array or `{"@list": […]}`.
fn list(v: Option<&Json>) -> Vec<Json> {
    match v {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(a)) => a.clone(),
        Some(Json::Object(m)) if m.contains_key("@list") => list(m.get("@list")),
        Some(other) => vec![other.clone()],
    }
}

fn rule_from_odrl(
    names: &Names,
    kind: RuleKind,
    index: usize,
    json: &Json,
) -> Result<Rule, PolicyError> {
    let provisional = rule_ref(kind, index, None);
    let Json::Object(m) = json else {
        return Err(field(&provisional.to_string(), "is not an object".into()));
    };
    let m = names.normalise(m)?;
    let uid = m
        .get("uid")
        .or_else(|| m.get("@id"))
        .and_then(|v| names.text(v));
    let rref = rule_ref(kind, index, uid.as_deref());
    for k in m.keys() {
        if !matches!(
            k.as_str(),
            "uid"
                | "@id"
                | "@type"
                | "action"
                | "constraint"
                | "duty"
                | "target"
                | "assigner"
                | "assignee"
        ) {
            return Err(field(&rref.to_string(), format!("unexpected key `{k}`")));
        }
    }
    let action_text = m
        .get("action")
        .and_then(|a| names.text(one(a)))
        .ok_or_else(|| field(&rref.to_string(), "has no action".into()))?;
    let action_name = names.term(&action_text);
    let action = Action::parse(&action_name).ok_or_else(|| PolicyError::UnknownAction {
        rule: rref.clone(),
        name: action_text.clone(),
    })?;
    let constraints = list(m.get("constraint"))
        .iter()
        .enumerate()
        .map(|(i, c)| constraint_from_odrl(names, &rref, &(i + 1).to_string(), c))
        .collect::<Result<_, _>>()?;
    let duties = list(m.get("duty"))
        .iter()
        .enumerate()
        .map(|(i, d)| duty_from_odrl(names, &rref.to_string(), i, d))
        .collect::<Result<_, _>>()?;
    Ok(Rule {
        uid,
        action,
        constraints,
        duties,
    })
}

fn constraint_from_odrl(
    names: &Names,
    rule: &RuleRef,
    path: &str,
    json: &Json,
) -> Result<Constraint, PolicyError> {
    let malformed = |message: String| PolicyError::MalformedConstraint {
        rule: rule.clone(),
        constraint: ConstraintRef {
            path: path.to_owned(),
            text: json.to_string(),
        },
        message,
    };
    let Json::Object(m) = json else {
        return Err(malformed("a constraint must be an object".into()));
    };
    let m = names.normalise(m)?;
    for op in [
        LogicalOperator::And,
        LogicalOperator::Or,
        LogicalOperator::Xone,
    ] {
        if let Some(inner) = m.get(op.as_str()) {
            let items = list(Some(inner));
            if items
                .iter()
                .any(|i| i.get("@id").is_some() && i.get("leftOperand").is_none())
            {
                return Err(malformed(
                    "constraints referenced by @id are not supported; write them inline".into(),
                ));
            }
            let cs = items
                .iter()
                .enumerate()
                .map(|(i, c)| constraint_from_odrl(names, rule, &format!("{path}.{}", i + 1), c))
                .collect::<Result<_, _>>()?;
            return Ok(Constraint::Logical(op, cs));
        }
    }
    let name = |k: &str| -> Result<String, PolicyError> {
        m.get(k)
            .and_then(|v| names.text(one(v)))
            .map(|s| names.term(&s))
            .ok_or_else(|| malformed(format!("`{k}` is missing")))
    };
    let left_name = name("leftOperand")?;
    let op_name = name("operator")?;
    let text = format!("{left_name} {op_name} …");
    let cref = ConstraintRef {
        path: path.to_owned(),
        text: text.clone(),
    };
    let left = LeftOperand::parse(&left_name).ok_or_else(|| PolicyError::UnknownLeftOperand {
        rule: rule.clone(),
        constraint: cref.clone(),
        name: left_name.clone(),
    })?;
    let operator = Operator::parse(&op_name).ok_or_else(|| PolicyError::UnknownOperator {
        rule: rule.clone(),
        constraint: cref.clone(),
        name: op_name.clone(),
    })?;
    let right = m
        .get("rightOperand")
        .ok_or_else(|| malformed("`rightOperand` is missing".into()))?;
    // Strip JSON-LD wrappers so the authoring-form reader can type the value.
    let plain = |v: &Json| -> Json {
        match v {
            Json::Object(o) if o.contains_key("@value") => {
                let val = &o["@value"];
                let ty = o.get("@type").and_then(Json::as_str).map(|t| names.term(t));
                match (val, ty.as_deref()) {
                    (Json::String(s), Some("integer" | "nonNegativeInteger")) => {
                        s.parse::<u64>().map_or_else(|_| val.clone(), Json::from)
                    }
                    _ => val.clone(),
                }
            }
            Json::Object(o) if o.contains_key("@id") => o["@id"].clone(),
            other => other.clone(),
        }
    };
    let right = if operator.takes_list() {
        Json::Array(list(Some(right)).iter().map(plain).collect())
    } else {
        plain(one(right))
    };
    atomic_from_parts(rule, path, left, operator, &right, &text).map(Constraint::Atomic)
}

fn duty_from_odrl(
    names: &Names,
    rule: &str,
    index: usize,
    json: &Json,
) -> Result<Duty, PolicyError> {
    let err = |message: String| PolicyError::InvalidDuty {
        rule: rule.to_owned(),
        index: index + 1,
        message,
    };
    let Json::Object(m) = json else {
        return Err(err("a duty must be an object".into()));
    };
    let m = names.normalise(m)?;
    let action = m
        .get("action")
        .and_then(|a| names.text(one(a)))
        .map(|a| names.term(&a))
        .ok_or_else(|| err("has no action".into()))?;
    let duty = match action.as_str() {
        "log" => Duty::Log,
        "inform" => Duty::Notify,
        "nextPolicy" => Duty::NextPolicy {
            policy: m
                .get("target")
                .and_then(|t| names.text(one(t)))
                .ok_or_else(|| err("nextPolicy needs the policy as its target".into()))?,
        },
        "aggregate" => {
            let k = m
                .get("minimumGroupSize")
                .and_then(|k| {
                    k.as_u64()
                        .or_else(|| names.text(k).and_then(|s| s.parse().ok()))
                })
                .and_then(|k| u32::try_from(k).ok())
                .ok_or_else(|| err("aggregate needs lt:minimumGroupSize".into()))?;
            Duty::AggregateOnly { k }
        }
        "kAnonymity" => {
            let k = m
                .get("minimumGroupSize")
                .and_then(|k| {
                    k.as_u64()
                        .or_else(|| names.text(k).and_then(|s| s.parse().ok()))
                })
                .and_then(|k| u32::try_from(k).ok())
                .ok_or_else(|| err("lt:kAnonymity needs lt:minimumGroupSize".into()))?;
            Duty::KAnonymity { k }
        }
        "differentialPrivacy" => {
            let epsilon = |name: &str| {
                let v = m
                    .get(name)
                    .ok_or_else(|| err(format!("differentialPrivacy needs lt:{name}")))?;
                let x = v
                    .as_f64()
                    .or_else(|| names.text(v).and_then(|s| s.parse().ok()))
                    .ok_or_else(|| err(format!("lt:{name} must be a number")))?;
                Epsilon::from_value(x).map_err(|e| err(format!("lt:{name}: {e}")))
            };
            let (epsilon, budget) = (epsilon("epsilon")?, epsilon("budget")?);
            let bounds: Vec<ColumnBounds> = m
                .get("bounds")
                .cloned()
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| err(format!("lt:bounds: {e}")))?
                .unwrap_or_default();
            crate::authoring::check_differential_privacy(epsilon, budget, &bounds).map_err(err)?;
            Duty::DifferentialPrivacy {
                epsilon,
                budget,
                bounds,
            }
        }
        "anonymize" => {
            let rules: Vec<MaskRule> = m
                .get("maskRules")
                .cloned()
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| err(format!("lt:maskRules: {e}")))?
                .ok_or_else(|| err("anonymize needs lt:maskRules".into()))?;
            Duty::Mask { rules }
        }
        "delete" => {
            let cs = list(m.get("constraint"));
            let [c] = cs.as_slice() else {
                return Err(err(
                    "delete needs exactly one elapsedTime or dateTime constraint".into(),
                ));
            };
            let c = c
                .as_object()
                .map(|o| names.normalise(o))
                .transpose()?
                .ok_or_else(|| err("the delete constraint must be an object".into()))?;
            let left = c
                .get("leftOperand")
                .and_then(|v| names.text(one(v)))
                .map(|s| names.term(&s))
                .unwrap_or_default();
            let right = c
                .get("rightOperand")
                .and_then(|v| names.text(one(v)))
                .ok_or_else(|| err("the delete constraint needs a rightOperand".into()))?;
            let when = match left.as_str() {
                "elapsedTime" => DeleteAfter::Elapsed(parse_duration(&right).map_err(err)?),
                "dateTime" => DeleteAfter::At(
                    parse_datetime(&right)
                        .ok_or_else(|| err(format!("`{right}` is not an RFC 3339 date-time")))?,
                ),
                other => {
                    return Err(err(format!(
                        "delete is constrained by `{other}`; use elapsedTime or dateTime"
                    )));
                }
            };
            Duty::DeleteAfter { when }
        }
        other => return Err(err(format!("unknown duty action `{other}`"))),
    };
    // Re-check through the authoring reader (k ≥ 2, non-empty mask rules, …).
    crate::authoring::duty_from_json(
        rule,
        index,
        serde_json::to_value(&duty).map_err(|e| err(e.to_string()))?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPACT: &str = r#"{
      "@context": "http://www.w3.org/ns/odrl.jsonld",
      "@type": "Offer",
      "uid": "urn:liutong:policy:x",
      "assigner": "91110000600037341L",
      "target": "urn:liutong:product:x",
      "permission": [{
        "action": "use",
        "constraint": [
          { "leftOperand": "purpose", "operator": "isA", "rightOperand": "research" },
          { "leftOperand": "lt:region", "operator": "isPartOf", "rightOperand": "330000" },
          { "leftOperand": "count", "operator": "lt", "rightOperand": { "@value": "5", "@type": "xsd:integer" } },
          { "or": [
            { "leftOperand": "dateTime", "operator": "lt", "rightOperand": { "@value": "2026-01-01T00:00:00Z", "@type": "xsd:dateTime" } },
            { "leftOperand": "lt:recipientKind", "operator": "isAnyOf", "rightOperand": ["government"] }
          ] }
        ],
        "duty": [{ "action": "lt:log" }, { "action": "inform" }]
      }]
    }"#;

    const FULL: &str = r#"{
      "@context": { "ex": "http://www.w3.org/ns/odrl/2/" },
      "@type": ["http://www.w3.org/ns/odrl/2/Offer"],
      "@id": "urn:liutong:policy:x",
      "http://www.w3.org/ns/odrl/2/assigner": { "@id": "91110000600037341L" },
      "odrl:target": { "@id": "urn:liutong:product:x" },
      "http://www.w3.org/ns/odrl/2/permission": [{
        "ex:action": { "@id": "http://www.w3.org/ns/odrl/2/use" },
        "odrl:constraint": [
          { "odrl:leftOperand": { "@id": "odrl:purpose" }, "odrl:operator": { "@id": "odrl:isA" }, "odrl:rightOperand": "research" },
          { "leftOperand": "https://liutong.invalid/ns/odrl-profile#region", "operator": "http://www.w3.org/ns/odrl/2/isPartOf", "rightOperand": 330000 },
          { "leftOperand": "odrl:count", "operator": "odrl:lt", "rightOperand": 5 },
          { "odrl:or": { "@list": [
            { "leftOperand": "dateTime", "operator": "lt", "rightOperand": "2026-01-01T00:00:00Z" },
            { "leftOperand": "lt:recipientKind", "operator": "odrl:isAnyOf", "rightOperand": { "@list": ["government"] } }
          ] } }
        ],
        "duty": [{ "action": "https://liutong.invalid/ns/odrl-profile#log" }, { "action": { "@id": "odrl:inform" } }]
      }]
    }"#;

    #[test]
    fn compact_and_full_iris_mean_the_same() {
        let a = Policy::from_odrl(COMPACT).unwrap();
        let b = Policy::from_odrl(FULL).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.permissions[0].constraints.len(), 4);
        assert_eq!(a.permissions[0].duties, vec![Duty::Log, Duty::Notify]);
        assert_eq!(Policy::from_odrl(&a.to_odrl_string()).unwrap(), a);
    }

    #[test]
    fn unknown_terms_are_errors() {
        let bad = COMPACT.replace("\"action\": \"use\"", "\"action\": \"odrl:play\"");
        assert!(matches!(
            Policy::from_odrl(&bad),
            Err(PolicyError::UnknownAction { .. })
        ));
        let bad = COMPACT.replace("\"lt:region\"", "\"ex:spatial\"");
        assert!(matches!(
            Policy::from_odrl(&bad),
            Err(PolicyError::UnknownLeftOperand { .. })
        ));
        let bad = COMPACT.replace("\"isPartOf\"", "\"odrl:hasPart\"");
        assert!(matches!(
            Policy::from_odrl(&bad),
            Err(PolicyError::UnknownOperator { .. })
        ));
        let bad = COMPACT.replace("\"inform\"", "\"compensate\"");
        assert!(matches!(
            Policy::from_odrl(&bad),
            Err(PolicyError::InvalidDuty { .. })
        ));
        let bad = COMPACT.replace("\"Offer\"", "\"Ticket\"");
        assert!(matches!(
            Policy::from_odrl(&bad),
            Err(PolicyError::Field { .. })
        ));
        assert!(matches!(
            Policy::from_odrl("[1"),
            Err(PolicyError::Syntax { .. })
        ));
    }

    #[test]
    fn every_duty_round_trips() {
        let text = r#"
uid = "urn:p"
type = "set"
obligation = [{ action = "notify" }]
[[permission]]
action = "use"
duty = [
  { action = "deleteAfter", elapsed = "P1DT2H" },
  { action = "deleteAfter", at = "2026-05-01T00:00:00+08:00" },
  { action = "mask", rules = [{ field = { type = "idcard" }, method = { generalize = { to = "prefecture" } } }] },
  { action = "aggregateOnly", k = 5 },
  { action = "kAnonymity", k = 5 },
  { action = "differentialPrivacy", epsilon = 0.25, budget = 3, bounds = [{ column = "income", lower = 0, upper = 200000 }] },
  { action = "differentialPrivacy", epsilon = 1, budget = 1 },
  { action = "nextPolicy", policy = "urn:next" },
  { action = "log" },
]
"#;
        let p = Policy::from_toml(text).unwrap();
        let json = p.to_odrl();
        assert_eq!(json["permission"][0]["duty"][0]["action"], "delete");
        assert_eq!(Policy::from_odrl_value(&json).unwrap(), p);
    }
}
