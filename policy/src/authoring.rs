//! The TOML and JSON authoring forms. Both have the same shape (ODRL's names, one
//! rule per `[[permission]]` / `[[prohibition]]` table):
//!
//! ```toml
//! uid = "urn:liutong:policy:traffic-flow:research"
//! type = "offer"
//! assigner = "91110000600037341L"
//! target = "urn:liutong:product:traffic-flow"
//!
//! [[permission]]
//! action = "use"
//! constraint = [
//!   { leftOperand = "purpose", operator = "isA", rightOperand = "research" },
//!   { leftOperand = "region", operator = "isPartOf", rightOperand = "330000" },
//! ]
//! duty = [{ action = "log" }]
//! ```
//!
//! Parsing turns the text into a typed [`Policy`] and fails on the first problem with a
//! message naming the rule and the constraint. Semantic checks that need the
//! classification and the purpose vocabulary run in [`crate::compile()`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use time::OffsetDateTime;

use crate::error::{ConstraintRef, PolicyError, RuleRef};
use crate::model::{
    Action, Atomic, Constraint, Duty, Epsilon, LeftOperand, LogicalOperator, MaskMethod, Operator,
    Policy, PolicyType, RightOperand, Rule, RuleKind, Value, ValueType, format_datetime,
};
use crate::vocab::{Classification, ParticipantCode, RecipientKind, RegionCode, parse_duration};

impl Policy {
    /// Parses the TOML authoring form.
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        let raw: RawPolicy = toml::from_str(text).map_err(|e| PolicyError::Syntax {
            format: "TOML",
            message: e.to_string(),
        })?;
        Policy::from_raw(raw)
    }

    /// Parses the JSON authoring form.
    pub fn from_json(text: &str) -> Result<Policy, PolicyError> {
        let raw: RawPolicy = serde_json::from_str(text).map_err(|e| PolicyError::Syntax {
            format: "JSON",
            message: e.to_string(),
        })?;
        Policy::from_raw(raw)
    }

    /// Writes the TOML authoring form; [`Policy::from_toml`] reads it back unchanged.
    pub fn to_toml(&self) -> String {
        // A RawPolicy holds only strings, integers below 2^63, arrays and tables, all of
        // which TOML can represent, so serialisation cannot fail.
        toml::to_string(&RawPolicy::from(self)).expect("authoring form is TOML-representable")
    }

    /// Writes the JSON authoring form (pretty); [`Policy::from_json`] reads it back.
    pub fn to_json(&self) -> String {
        // Serialising plain serde_json values to a String cannot fail.
        serde_json::to_string_pretty(&RawPolicy::from(self)).expect("authoring form is JSON")
    }

    pub(crate) fn from_raw(raw: RawPolicy) -> Result<Policy, PolicyError> {
        let field = |field: &str, message: String| PolicyError::Field {
            field: field.to_owned(),
            message,
        };
        if raw.uid.trim().is_empty() {
            return Err(field(
                "uid",
                "is empty; give the policy a unique IRI or URN such as urn:liutong:policy:name"
                    .into(),
            ));
        }
        let policy_type = PolicyType::parse(&raw.policy_type).ok_or_else(|| {
            field(
                "type",
                format!(
                    "`{}` is not a policy type; use set, offer or agreement",
                    raw.policy_type
                ),
            )
        })?;
        let party =
            |name: &str, v: Option<String>| -> Result<Option<ParticipantCode>, PolicyError> {
                v.map(|s| ParticipantCode::parse(&s).map_err(|m| field(name, m)))
                    .transpose()
            };
        let assigner = party("assigner", raw.assigner)?;
        let assignee = party("assignee", raw.assignee)?;
        if let Some(t) = &raw.target
            && t.trim().is_empty()
        {
            return Err(field("target", "is empty; name the data product".into()));
        }
        let needs = |ok: bool, name: &str, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(field(
                    name,
                    format!("an {} needs {what}", policy_type.as_str()),
                ))
            }
        };
        if policy_type != PolicyType::Set {
            needs(
                assigner.is_some(),
                "assigner",
                "an assigner (the provider's participant ID)",
            )?;
            needs(
                raw.target.is_some(),
                "target",
                "a target (the data product)",
            )?;
        }
        if policy_type == PolicyType::Agreement {
            needs(
                assignee.is_some(),
                "assignee",
                "an assignee (the consumer's participant ID)",
            )?;
        }

        let mut names = std::collections::HashSet::new();
        let mut rules = |kind: RuleKind, raws: Vec<RawRule>| -> Result<Vec<Rule>, PolicyError> {
            raws.into_iter()
                .enumerate()
                .map(|(i, r)| {
                    if let Some(uid) = &r.uid
                        && !names.insert(uid.clone())
                    {
                        return Err(field(
                            "uid",
                            format!("two rules are named `{uid}`; rule names must be unique"),
                        ));
                    }
                    rule_from_raw(kind, i, r)
                })
                .collect()
        };
        let permissions = rules(RuleKind::Permission, raw.permission)?;
        let prohibitions = rules(RuleKind::Prohibition, raw.prohibition)?;
        let obligations = raw
            .obligation
            .into_iter()
            .enumerate()
            .map(|(i, d)| duty_from_json("obligation", i, d))
            .collect::<Result<_, _>>()?;
        Ok(Policy {
            uid: raw.uid,
            policy_type,
            assigner,
            assignee,
            target: raw.target,
            permissions,
            prohibitions,
            obligations,
        })
    }
}

impl Serialize for Policy {
    /// Serialises as the JSON/TOML authoring form.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        RawPolicy::from(self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Policy {
    /// Deserialises the authoring form, with all of its checks.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawPolicy::deserialize(d)?;
        Policy::from_raw(raw).map_err(serde::de::Error::custom)
    }
}

/// The authoring form as serde sees it: names are still strings, constraints and duties
/// still untyped JSON values, so that errors can name the rule and the constraint.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    uid: String,
    #[serde(rename = "type")]
    policy_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    assigner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    assignee: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    obligation: Vec<Json>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    permission: Vec<RawRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    prohibition: Vec<RawRule>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uid: Option<String>,
    action: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    constraint: Vec<Json>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    duty: Vec<Json>,
}

impl From<&Policy> for RawPolicy {
    fn from(p: &Policy) -> Self {
        let rule = |r: &Rule| RawRule {
            uid: r.uid.clone(),
            action: r.action.as_str().to_owned(),
            constraint: r.constraints.iter().map(constraint_to_json).collect(),
            duty: r.duties.iter().map(duty_to_json).collect(),
        };
        RawPolicy {
            uid: p.uid.clone(),
            policy_type: p.policy_type.as_str().to_owned(),
            assigner: p.assigner.as_ref().map(ToString::to_string),
            assignee: p.assignee.as_ref().map(ToString::to_string),
            target: p.target.clone(),
            obligation: p.obligations.iter().map(duty_to_json).collect(),
            permission: p.permissions.iter().map(rule).collect(),
            prohibition: p.prohibitions.iter().map(rule).collect(),
        }
    }
}

pub(crate) fn rule_ref(kind: RuleKind, index: usize, uid: Option<&str>) -> RuleRef {
    RuleRef {
        kind,
        name: uid.map_or_else(|| (index + 1).to_string(), str::to_owned),
    }
}

fn rule_from_raw(kind: RuleKind, index: usize, raw: RawRule) -> Result<Rule, PolicyError> {
    let rref = rule_ref(kind, index, raw.uid.as_deref());
    let action = Action::parse(&raw.action).ok_or_else(|| PolicyError::UnknownAction {
        rule: rref.clone(),
        name: raw.action.clone(),
    })?;
    let constraints = raw
        .constraint
        .iter()
        .enumerate()
        .map(|(i, c)| constraint_from_json(&rref, &(i + 1).to_string(), c))
        .collect::<Result<Vec<_>, _>>()?;
    if kind == RuleKind::Prohibition && !raw.duty.is_empty() {
        return Err(PolicyError::InvalidDuty {
            rule: rref.to_string(),
            index: 1,
            message:
                "a prohibition cannot carry duties; put them on a permission or in `obligation`"
                    .into(),
        });
    }
    let duties = raw
        .duty
        .into_iter()
        .enumerate()
        .map(|(i, d)| duty_from_json(&rref.to_string(), i, d))
        .collect::<Result<_, _>>()?;
    Ok(Rule {
        uid: raw.uid,
        action,
        constraints,
        duties,
    })
}

/// Reads one constraint (atomic or logical) from its JSON shape.
pub(crate) fn constraint_from_json(
    rule: &RuleRef,
    path: &str,
    json: &Json,
) -> Result<Constraint, PolicyError> {
    let cref = |text: String| ConstraintRef {
        path: path.to_owned(),
        text,
    };
    let malformed = |message: String| PolicyError::MalformedConstraint {
        rule: rule.clone(),
        constraint: cref(short(json)),
        message,
    };
    let Json::Object(map) = json else {
        return Err(malformed(
            "a constraint is a table with leftOperand, operator and rightOperand, or one of and / or / xone".into(),
        ));
    };
    if map.len() == 1 {
        let (key, inner) = map.iter().next().expect("map has one entry");
        if let Some(op) = LogicalOperator::parse(key) {
            let Json::Array(items) = inner else {
                return Err(malformed(format!("`{key}` needs a list of constraints")));
            };
            if items.len() < 2 {
                return Err(malformed(format!(
                    "`{key}` needs at least two constraints; write a single constraint directly"
                )));
            }
            let cs = items
                .iter()
                .enumerate()
                .map(|(i, c)| constraint_from_json(rule, &format!("{path}.{}", i + 1), c))
                .collect::<Result<_, _>>()?;
            return Ok(Constraint::Logical(op, cs));
        }
    }
    for key in map.keys() {
        if !matches!(key.as_str(), "leftOperand" | "operator" | "rightOperand") {
            return Err(malformed(format!(
                "unexpected key `{key}`; an atomic constraint has leftOperand, operator and rightOperand, a logical one a single key and / or / xone"
            )));
        }
    }
    let text_of = |k: &str| -> Result<&str, PolicyError> {
        match map.get(k) {
            Some(Json::String(s)) => Ok(s),
            Some(_) => Err(malformed(format!("`{k}` must be a name"))),
            None => Err(malformed(format!("`{k}` is missing"))),
        }
    };
    let left_name = text_of("leftOperand")?;
    let op_name = text_of("operator")?;
    let right = map
        .get("rightOperand")
        .ok_or_else(|| malformed("`rightOperand` is missing".into()))?;
    let left = LeftOperand::parse(left_name).ok_or_else(|| PolicyError::UnknownLeftOperand {
        rule: rule.clone(),
        constraint: cref(short(json)),
        name: left_name.to_owned(),
    })?;
    let operator = Operator::parse(op_name).ok_or_else(|| PolicyError::UnknownOperator {
        rule: rule.clone(),
        constraint: cref(short(json)),
        name: op_name.to_owned(),
    })?;
    atomic_from_parts(rule, path, left, operator, right, &short(json)).map(Constraint::Atomic)
}

/// Checks operator and right operand against the left operand and builds the atomic
/// constraint. Shared with the JSON-LD reader.
pub(crate) fn atomic_from_parts(
    rule: &RuleRef,
    path: &str,
    left: LeftOperand,
    operator: Operator,
    right: &Json,
    text: &str,
) -> Result<Atomic, PolicyError> {
    let cref = || ConstraintRef {
        path: path.to_owned(),
        text: text.to_owned(),
    };
    let allowed = left.allowed_operators();
    if !allowed.contains(&operator) {
        return Err(PolicyError::OperatorNotAllowed {
            rule: rule.clone(),
            constraint: cref(),
            operand: left.as_str().to_owned(),
            operator: operator.as_str().to_owned(),
            allowed: allowed
                .iter()
                .map(|o| o.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let expected = left.value_type();
    let mismatch = |expected: String, found: &Json| PolicyError::TypeMismatch {
        rule: rule.clone(),
        constraint: cref(),
        operand: left.as_str().to_owned(),
        expected,
        found: describe_json(found),
    };
    let one = |v: &Json| -> Result<Value, PolicyError> {
        value_from_json(expected, v).map_err(|e| match e {
            ValueError::Type => mismatch(expected.describe().to_owned(), v),
            ValueError::Invalid(message) => PolicyError::InvalidValue {
                rule: rule.clone(),
                constraint: cref(),
                message,
            },
        })
    };
    let right = if operator.takes_list() {
        let Json::Array(items) = right else {
            return Err(mismatch(
                format!("a list of {} for `{operator}`", expected.describe()),
                right,
            ));
        };
        if items.is_empty() {
            return Err(PolicyError::InvalidValue {
                rule: rule.clone(),
                constraint: cref(),
                message: format!("`{operator}` needs at least one value"),
            });
        }
        RightOperand::List(items.iter().map(one).collect::<Result<_, _>>()?)
    } else {
        if right.is_array() {
            return Err(mismatch(
                format!(
                    "one value ({}) for `{operator}`; lists go with isAnyOf or isNoneOf",
                    expected.describe()
                ),
                right,
            ));
        }
        RightOperand::One(one(right)?)
    };
    if left == LeftOperand::SecurityLevel {
        for v in right.values() {
            if let Value::Integer(n) = v
                && !(1..=5).contains(n)
            {
                return Err(PolicyError::InvalidValue {
                    rule: rule.clone(),
                    constraint: cref(),
                    message: format!("security level {n} does not exist; levels run from 1 to 5"),
                });
            }
        }
    }
    Ok(Atomic {
        left,
        operator,
        right,
    })
}

enum ValueError {
    Type,
    Invalid(String),
}

/// The TOML reader hands native date-times to serde as this one-key table.
const TOML_DATETIME_KEY: &str = "$__toml_private_datetime";

fn as_text(v: &Json) -> Option<&str> {
    match v {
        Json::String(s) => Some(s),
        Json::Object(m) if m.len() == 1 => m.get(TOML_DATETIME_KEY).and_then(Json::as_str),
        _ => None,
    }
}

pub(crate) fn parse_datetime(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

fn value_from_json(ty: ValueType, v: &Json) -> Result<Value, ValueError> {
    let text = as_text(v);
    let invalid = ValueError::Invalid;
    Ok(match ty {
        ValueType::DateTime => {
            let s = text.ok_or(ValueError::Type)?;
            Value::DateTime(parse_datetime(s).ok_or(ValueError::Type)?)
        }
        ValueType::Duration => {
            let s = text.ok_or(ValueError::Type)?;
            if parse_datetime(s).is_some() || !s.starts_with('P') {
                return Err(ValueError::Type);
            }
            Value::Duration(parse_duration(s).map_err(invalid)?)
        }
        ValueType::Integer => Value::Integer(v.as_u64().ok_or(ValueError::Type)?),
        ValueType::Purpose | ValueType::Text => {
            let s = text.ok_or(ValueError::Type)?;
            if parse_datetime(s).is_some() {
                return Err(ValueError::Type);
            }
            if s.trim().is_empty() {
                return Err(invalid("the value is empty".into()));
            }
            if ty == ValueType::Purpose {
                Value::Purpose(s.to_owned())
            } else {
                Value::Text(s.to_owned())
            }
        }
        ValueType::Participant => {
            let s = text.ok_or(ValueError::Type)?;
            Value::Participant(ParticipantCode::parse(s).map_err(invalid)?)
        }
        ValueType::Kind => {
            let s = text.ok_or(ValueError::Type)?;
            Value::Kind(s.parse::<RecipientKind>().map_err(invalid)?)
        }
        ValueType::Region => match v {
            Json::Number(n) => {
                let n = n.as_u64().ok_or(ValueError::Type)?;
                let n = u32::try_from(n)
                    .map_err(|_| invalid(format!("region `{n}` is not 6 digits")))?;
                Value::Region(RegionCode::from_u32(n).map_err(invalid)?)
            }
            _ => {
                let s = text.ok_or(ValueError::Type)?;
                if parse_datetime(s).is_some() {
                    return Err(ValueError::Type);
                }
                Value::Region(RegionCode::parse(s).map_err(invalid)?)
            }
        },
        ValueType::Classification => {
            let s = text.ok_or(ValueError::Type)?;
            Value::Classification(s.parse::<Classification>().map_err(invalid)?)
        }
    })
}

fn describe_json(v: &Json) -> String {
    if let Some(s) = as_text(v) {
        if parse_datetime(s).is_some() {
            return format!("a date-time (`{s}`)");
        }
        if s.starts_with('P') && parse_duration(s).is_ok() {
            return format!("a duration (`{s}`)");
        }
        return format!("the text `{s}`");
    }
    match v {
        Json::Null => "nothing".into(),
        Json::Bool(b) => format!("the boolean {b}"),
        Json::Number(n) => format!("the number {n}"),
        Json::Array(_) => "a list".into(),
        _ => "a table".into(),
    }
}

fn short(v: &Json) -> String {
    let (l, o, r) = (
        v.get("leftOperand"),
        v.get("operator"),
        v.get("rightOperand"),
    );
    if let (Some(Json::String(l)), Some(Json::String(o)), Some(r)) = (l, o, r) {
        let r = as_text(r).map_or_else(|| r.to_string(), str::to_owned);
        return format!("{l} {o} {r}");
    }
    let s = v.to_string();
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s
    }
}

pub(crate) fn value_to_json(v: &Value) -> Json {
    match v {
        Value::Integer(n) => Json::from(*n),
        Value::DateTime(t) => Json::String(format_datetime(*t)),
        other => Json::String(other.to_text()),
    }
}

fn constraint_to_json(c: &Constraint) -> Json {
    match c {
        Constraint::Atomic(a) => {
            let mut m = Map::new();
            m.insert("leftOperand".into(), a.left.as_str().into());
            m.insert("operator".into(), a.operator.as_str().into());
            let right = match &a.right {
                RightOperand::One(v) => value_to_json(v),
                RightOperand::List(vs) => Json::Array(vs.iter().map(value_to_json).collect()),
            };
            m.insert("rightOperand".into(), right);
            Json::Object(m)
        }
        Constraint::Logical(op, cs) => {
            let mut m = Map::new();
            m.insert(
                op.as_str().into(),
                Json::Array(cs.iter().map(constraint_to_json).collect()),
            );
            Json::Object(m)
        }
    }
}

fn duty_to_json(d: &Duty) -> Json {
    // Duty's derived Serialize emits only strings, numbers and maps.
    serde_json::to_value(d).expect("duty serialises to JSON")
}

/// Replaces TOML's private date-time tables by their text, anywhere in a value.
fn untoml(v: Json) -> Json {
    match v {
        Json::Object(m) => {
            if m.len() == 1
                && let Some(Json::String(s)) = m.get(TOML_DATETIME_KEY)
            {
                return Json::String(s.clone());
            }
            Json::Object(m.into_iter().map(|(k, v)| (k, untoml(v))).collect())
        }
        Json::Array(a) => Json::Array(a.into_iter().map(untoml).collect()),
        other => other,
    }
}

/// A mask rule on a built-in field type may leave out its method: it gets the type's
/// default ([`crate::model::FieldType::default_method`]). Rules on named fields must
/// name one (serde then reports the missing `method`).
fn with_default_mask_methods(mut json: Json) -> Json {
    if json.get("action").and_then(Json::as_str) != Some("mask") {
        return json;
    }
    let Some(rules) = json.get_mut("rules").and_then(Json::as_array_mut) else {
        return json;
    };
    for rule in rules.iter_mut().filter_map(Json::as_object_mut) {
        if rule.contains_key("method") {
            continue;
        }
        let field_type = rule
            .get("field")
            .and_then(|f| f.get("type"))
            .and_then(|t| serde_json::from_value::<crate::model::FieldType>(t.clone()).ok());
        if let Some(t) = field_type {
            // MaskMethod serialises to plain strings and maps.
            let method = serde_json::to_value(t.default_method()).expect("methods serialise");
            rule.insert("method".into(), method);
        }
    }
    json
}

pub(crate) fn duty_from_json(rule: &str, index: usize, json: Json) -> Result<Duty, PolicyError> {
    let err = |message: String| PolicyError::InvalidDuty {
        rule: rule.to_owned(),
        index: index + 1,
        message,
    };
    let duty: Duty = serde_json::from_value(with_default_mask_methods(untoml(json))).map_err(|e| {
        err(format!(
            "{e}; a duty is one of deleteAfter (elapsed or at), log, notify, mask (rules), aggregateOnly (k), kAnonymity (k), differentialPrivacy (epsilon, budget, bounds), nextPolicy (policy)"
        ))
    })?;
    match &duty {
        Duty::AggregateOnly { k } if *k < 2 => Err(err(format!(
            "aggregateOnly needs a group size k of at least 2, not {k}"
        ))),
        Duty::KAnonymity { k } if *k < 2 => Err(err(format!(
            "kAnonymity needs a group size k of at least 2, not {k}"
        ))),
        Duty::Mask { rules } if rules.is_empty() => {
            Err(err("mask needs at least one field rule".into()))
        }
        Duty::Mask { rules } => {
            for r in rules {
                if let crate::model::FieldSelector::Name(n) = &r.field
                    && n.trim().is_empty()
                {
                    return Err(err("a mask rule names an empty field".into()));
                }
                if let MaskMethod::Keep { first: 0, last: 0 } = r.method {
                    return Err(err(
                        "keep with first = 0 and last = 0 masks everything; write maskAll".into(),
                    ));
                }
            }
            Ok(duty)
        }
        Duty::NextPolicy { policy } if policy.trim().is_empty() => {
            Err(err("nextPolicy needs the UID of the policy to carry".into()))
        }
        Duty::DifferentialPrivacy {
            epsilon,
            budget,
            bounds,
        } => {
            check_differential_privacy(*epsilon, *budget, bounds).map_err(err)?;
            Ok(duty)
        }
        _ => Ok(duty),
    }
}

/// The largest ε one query may spend: beyond it the noise hides little (e^10 ≈ 22 000
/// times more likely either way).
pub const MAX_QUERY_EPSILON: Epsilon = Epsilon::from_millis(10_000);
/// The largest total ε an agreement may spend.
pub const MAX_EPSILON_BUDGET: Epsilon = Epsilon::from_millis(100_000);
/// The largest magnitude of a clamping bound: sums stay exact in a double up to 2^53,
/// and a bound this large would drown any answer in noise anyway.
pub const MAX_BOUND: i64 = 1 << 40;

/// Checks a differentialPrivacy duty: ε per query from 0.001 to
/// [`MAX_QUERY_EPSILON`], a budget of at least one query's ε and at most
/// [`MAX_EPSILON_BUDGET`], and bounds with lower < upper, within ±[`MAX_BOUND`], one
/// per column.
pub(crate) fn check_differential_privacy(
    epsilon: Epsilon,
    budget: Epsilon,
    bounds: &[crate::model::ColumnBounds],
) -> Result<(), String> {
    if epsilon < Epsilon::STEP || epsilon > MAX_QUERY_EPSILON {
        return Err(format!(
            "differentialPrivacy needs an epsilon per query from {} to {MAX_QUERY_EPSILON}, not {epsilon}",
            Epsilon::STEP
        ));
    }
    if budget < epsilon || budget > MAX_EPSILON_BUDGET {
        return Err(format!(
            "differentialPrivacy needs a budget of at least one query's epsilon ({epsilon}) \
             and at most {MAX_EPSILON_BUDGET}, not {budget}"
        ));
    }
    for (i, b) in bounds.iter().enumerate() {
        if b.column.trim().is_empty() {
            return Err(format!(
                "differentialPrivacy bounds[{}] names no column",
                i + 1
            ));
        }
        if bounds[..i].iter().any(|o| o.column == b.column) {
            return Err(format!(
                "differentialPrivacy bounds column {:?} twice",
                b.column
            ));
        }
        if b.lower >= b.upper {
            return Err(format!(
                "differentialPrivacy bounds of {:?}: lower ({}) must be below upper ({})",
                b.column, b.lower, b.upper
            ));
        }
        if b.lower < -MAX_BOUND || b.upper > MAX_BOUND {
            return Err(format!(
                "differentialPrivacy bounds of {:?} must lie within ±{MAX_BOUND}",
                b.column
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROVIDER: &str = "91110000600037341L";

    fn policy_with(rule: &str) -> String {
        format!(
            "uid = \"urn:p\"\ntype = \"offer\"\nassigner = \"{PROVIDER}\"\ntarget = \"urn:product\"\n{rule}"
        )
    }

    #[test]
    fn toml_and_json_read_the_same_policy() {
        let toml = policy_with(
            r#"
[[permission]]
uid = "research"
action = "use"
constraint = [
  { leftOperand = "purpose", operator = "isA", rightOperand = "research" },
  { leftOperand = "dateTime", operator = "lt", rightOperand = 2026-01-01T00:00:00Z },
  { or = [
      { leftOperand = "region", operator = "isPartOf", rightOperand = "330000" },
      { leftOperand = "recipientKind", operator = "eq", rightOperand = "government" },
  ] },
]
duty = [{ action = "log" }, { action = "deleteAfter", elapsed = "P30D" }]
"#,
        );
        let p = Policy::from_toml(&toml).unwrap();
        assert_eq!(p.permissions[0].constraints.len(), 3);
        let json = p.to_json();
        assert_eq!(Policy::from_json(&json).unwrap(), p);
        assert_eq!(Policy::from_toml(&p.to_toml()).unwrap(), p);
        let via_serde: Policy = serde_json::from_str(&json).unwrap();
        assert_eq!(via_serde, p);
    }

    #[test]
    fn unknown_names_fail_closed() {
        let e = Policy::from_toml(&policy_with("[[permission]]\naction = \"print\"")).unwrap_err();
        assert!(matches!(e, PolicyError::UnknownAction { .. }), "{e}");
        let e = Policy::from_toml(&policy_with(
            "[[permission]]\naction = \"use\"\nconstraint = [{ leftOperand = \"colour\", operator = \"eq\", rightOperand = \"red\" }]",
        ))
        .unwrap_err();
        assert!(matches!(e, PolicyError::UnknownLeftOperand { .. }), "{e}");
        assert!(e.to_string().contains("permission 1, constraint 1"), "{e}");
        let e = Policy::from_toml(&policy_with("[[permision]]\naction = \"use\"")).unwrap_err();
        assert!(matches!(e, PolicyError::Syntax { .. }), "{e}");
    }

    #[test]
    fn offers_need_parties() {
        let e = Policy::from_toml("uid = \"u\"\ntype = \"offer\"\ntarget = \"t\"").unwrap_err();
        assert!(e.to_string().contains("assigner"), "{e}");
        let e = Policy::from_toml(&format!(
            "uid = \"u\"\ntype = \"agreement\"\ntarget = \"t\"\nassigner = \"{PROVIDER}\""
        ))
        .unwrap_err();
        assert!(e.to_string().contains("assignee"), "{e}");
        let e = Policy::from_toml("uid = \"u\"\ntype = \"set\"\nassigner = \"91110000600037341M\"")
            .unwrap_err();
        assert!(e.to_string().contains("check character"), "{e}");
    }

    #[test]
    fn mask_rules_on_types_default_their_method() {
        use crate::model::{FieldSelector, FieldType, MaskRule};
        let p = Policy::from_toml(&policy_with(
            r#"[[permission]]
action = "use"
duty = [{ action = "mask", rules = [
  { field = { type = "idcard" } },
  { field = { type = "mobile" } },
  { field = { type = "name" } },
  { field = { type = "email" } },
  { field = { type = "idcard" }, method = { keep = { first = 6, last = 4 } } },
] }]"#,
        ))
        .unwrap();
        let Duty::Mask { rules } = &p.permissions[0].duties[0] else {
            panic!("a mask duty");
        };
        let methods: Vec<MaskMethod> = rules.iter().map(|r| r.method).collect();
        assert_eq!(
            methods,
            vec![
                MaskMethod::Keep { first: 1, last: 0 },
                MaskMethod::Keep { first: 3, last: 4 },
                MaskMethod::Keep { first: 1, last: 0 },
                MaskMethod::Hash,
                MaskMethod::Keep { first: 6, last: 4 },
            ]
        );
        assert_eq!(
            rules[0],
            MaskRule {
                field: FieldSelector::Type(FieldType::Idcard),
                method: FieldType::Idcard.default_method(),
            }
        );
        // The defaults are written out, so every other form reads the same policy.
        assert_eq!(Policy::from_toml(&p.to_toml()).unwrap(), p);
        assert_eq!(Policy::from_odrl(&p.to_odrl().to_string()).unwrap(), p);
        // A named field has no default: its method must be given.
        let e = Policy::from_toml(&policy_with(
            "[[permission]]\naction = \"use\"\nduty = [{ action = \"mask\", rules = [{ field = { name = \"address\" } }] }]",
        ))
        .unwrap_err();
        assert!(e.to_string().contains("method"), "{e}");
    }

    #[test]
    fn duties_are_checked() {
        let e = Policy::from_toml(&policy_with(
            "[[permission]]\naction = \"use\"\nduty = [{ action = \"aggregateOnly\", k = 1 }]",
        ))
        .unwrap_err();
        assert!(e.to_string().contains("at least 2"), "{e}");
        let e = Policy::from_toml(&policy_with(
            "[[permission]]\naction = \"use\"\nduty = [{ action = \"kAnonymity\", k = 1 }]",
        ))
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("kAnonymity needs a group size k of at least 2"),
            "{e}"
        );
        let e = Policy::from_toml(&policy_with(
            "[[prohibition]]\naction = \"use\"\nduty = [{ action = \"log\" }]",
        ))
        .unwrap_err();
        assert!(e.to_string().contains("cannot carry duties"), "{e}");
        let e = Policy::from_toml(&policy_with(
            "[[permission]]\naction = \"use\"\nduty = [{ action = \"shred\" }]",
        ))
        .unwrap_err();
        assert!(matches!(e, PolicyError::InvalidDuty { .. }), "{e}");
    }

    #[test]
    fn differential_privacy_duties_are_read_and_bounded() {
        use crate::model::ColumnBounds;
        let p = Policy::from_toml(&policy_with(
            r#"[[permission]]
action = "aggregate"
duty = [{ action = "differentialPrivacy", epsilon = 0.1, budget = 2, bounds = [
  { column = "income", lower = 0, upper = 500000 },
  { column = "age", lower = 0, upper = 120 },
] }]"#,
        ))
        .unwrap();
        let Duty::DifferentialPrivacy {
            epsilon,
            budget,
            bounds,
        } = &p.permissions[0].duties[0]
        else {
            panic!("a differentialPrivacy duty");
        };
        assert_eq!((epsilon.millis(), budget.millis()), (100, 2000));
        assert_eq!(
            bounds[0],
            ColumnBounds {
                column: "income".into(),
                lower: 0,
                upper: 500_000
            }
        );
        assert_eq!(bounds[0].sensitivity(), 500_000);
        assert_eq!(
            p.permissions[0].duties[0].to_string(),
            "answer aggregates with differential privacy, ε = 0.1 a query, 2 in all"
        );
        assert_eq!(Policy::from_toml(&p.to_toml()).unwrap(), p);
        assert_eq!(Policy::from_json(&p.to_json()).unwrap(), p);
        assert_eq!(Policy::from_odrl(&p.to_odrl().to_string()).unwrap(), p);

        let refused = |duty: &str| {
            Policy::from_toml(&policy_with(&format!(
                "[[permission]]\naction = \"aggregate\"\nduty = [{duty}]"
            )))
            .unwrap_err()
            .to_string()
        };
        for (duty, says) in [
            (
                r#"{ action = "differentialPrivacy", epsilon = 0, budget = 1 }"#,
                "epsilon per query from 0.001 to 10, not 0",
            ),
            (
                r#"{ action = "differentialPrivacy", epsilon = 11, budget = 20 }"#,
                "not 11",
            ),
            (
                r#"{ action = "differentialPrivacy", epsilon = -1, budget = 1 }"#,
                "positive number",
            ),
            (
                r#"{ action = "differentialPrivacy", epsilon = 0.0001, budget = 1 }"#,
                "steps of 0.001",
            ),
            (
                r#"{ action = "differentialPrivacy", epsilon = 1, budget = 0.5 }"#,
                "budget of at least one query's epsilon (1) and at most 100, not 0.5",
            ),
            (
                r#"{ action = "differentialPrivacy", epsilon = 1, budget = 101 }"#,
                "not 101",
            ),
            (
                r#"{ action = "differentialPrivacy", budget = 1 }"#,
                "epsilon",
            ),
            (
                r#"{ action = "differentialPrivacy", epsilon = 1 }"#,
                "budget",
            ),
            (
                r#"{ action = "differentialPrivacy", epsilon = 1, budget = 1, bounds = [{ column = "x", lower = 5, upper = 5 }] }"#,
                "lower (5) must be below upper (5)",
            ),
            (
                r#"{ action = "differentialPrivacy", epsilon = 1, budget = 1, bounds = [{ column = "x", lower = 0, upper = 2 }, { column = "x", lower = 0, upper = 3 }] }"#,
                "column \"x\" twice",
            ),
            (
                r#"{ action = "differentialPrivacy", epsilon = 1, budget = 1, bounds = [{ column = " ", lower = 0, upper = 2 }] }"#,
                "names no column",
            ),
            (
                r#"{ action = "differentialPrivacy", epsilon = 1, budget = 1, bounds = [{ column = "x", lower = 0, upper = 9999999999999 }] }"#,
                "within ±",
            ),
            (
                r#"{ action = "differentialPrivacy", epsilon = 1, budget = 1, bounds = [{ column = "x", min = 0, upper = 2 }] }"#,
                "min",
            ),
        ] {
            let e = refused(duty);
            assert!(e.contains(says), "{duty}: {e}");
        }
        // The ODRL reader applies the same checks.
        let mut odrl = p.to_odrl();
        odrl["permission"][0]["duty"][0]["lt:budget"] = serde_json::json!(0.01);
        let e = Policy::from_odrl(&odrl.to_string())
            .unwrap_err()
            .to_string();
        assert!(e.contains("budget of at least one query's epsilon"), "{e}");
    }
}
