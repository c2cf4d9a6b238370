//! The policy model: what a policy *is*, independent of how it was written (TOML, JSON
//! or ODRL JSON-LD). Every value here is typed; the parsers in [`crate::authoring`] and
//! [`crate::odrl`] are the only ways text becomes a [`Policy`].

use std::fmt;
use std::time::Duration;

use time::OffsetDateTime;

use crate::vocab::{Classification, ParticipantCode, RecipientKind, RegionCode, format_duration};

/// An ODRL policy in the Liutong profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Unique identifier (an IRI or URN), e.g. `urn:liutong:policy:traffic-2025`.
    pub uid: String,
    /// Set (a template or local policy), Offer (published with a product) or Agreement
    /// (signed by both parties).
    pub policy_type: PolicyType,
    /// The party granting the rules; required for offers and agreements.
    pub assigner: Option<ParticipantCode>,
    /// The party receiving the rules; required for agreements.
    pub assignee: Option<ParticipantCode>,
    /// The data product the policy is about; required for offers and agreements.
    pub target: Option<String>,
    /// What may be done (deny by default: nothing else may).
    pub permissions: Vec<Rule>,
    /// What must not be done; overrides any permission.
    pub prohibitions: Vec<Rule>,
    /// Duties that come with every permitted use.
    pub obligations: Vec<Duty>,
}

impl Policy {
    /// Every duty the policy names: those of its permissions, then its obligations.
    pub fn duties(&self) -> impl Iterator<Item = &Duty> {
        self.permissions
            .iter()
            .flat_map(|r| &r.duties)
            .chain(&self.obligations)
    }
}

/// The ODRL policy subclass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyType {
    /// `odrl:Set`.
    Set,
    /// `odrl:Offer`.
    Offer,
    /// `odrl:Agreement`.
    Agreement,
}

impl PolicyType {
    /// The type as written in the authoring forms (`set`, `offer`, `agreement`).
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyType::Set => "set",
            PolicyType::Offer => "offer",
            PolicyType::Agreement => "agreement",
        }
    }

    /// The ODRL class name (`Set`, `Offer`, `Agreement`).
    pub fn odrl_name(self) -> &'static str {
        match self {
            PolicyType::Set => "Set",
            PolicyType::Offer => "Offer",
            PolicyType::Agreement => "Agreement",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "set" | "Set" => Some(PolicyType::Set),
            "offer" | "Offer" => Some(PolicyType::Offer),
            "agreement" | "Agreement" => Some(PolicyType::Agreement),
            _ => None,
        }
    }
}

/// A permission or prohibition: an action, the constraints under which the rule
/// applies (all must hold), and for permissions the duties that come with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Optional name used in messages; rules without one are named by position
    /// (`permission 2`).
    pub uid: Option<String>,
    /// The action the rule is about.
    pub action: Action,
    /// Constraints, all of which must hold (an implicit `and`).
    pub constraints: Vec<Constraint>,
    /// Duties of a permission (ignored on prohibitions, which may not carry any).
    pub duties: Vec<Duty>,
}

impl Rule {
    /// A rule with no constraints and no duties.
    pub fn new(action: Action) -> Self {
        Rule {
            uid: None,
            action,
            constraints: Vec::new(),
            duties: Vec::new(),
        }
    }

    /// Adds a constraint (builder style).
    pub fn with(mut self, c: impl Into<Constraint>) -> Self {
        self.constraints.push(c.into());
        self
    }

    /// Adds a duty (builder style).
    pub fn with_duty(mut self, d: Duty) -> Self {
        self.duties.push(d);
        self
    }

    /// Names the rule (builder style).
    pub fn named(mut self, uid: &str) -> Self {
        self.uid = Some(uid.to_owned());
        self
    }
}

/// Whether a rule permits or prohibits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RuleKind {
    /// A permission.
    Permission,
    /// A prohibition.
    Prohibition,
}

/// The actions of the profile. `read`, `aggregate` and `derive` are kinds of `use`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// Any use of the data at the consumer (includes read, aggregate, derive).
    Use,
    /// Read the data.
    Read,
    /// Deliver the data to the consumer's node.
    Transfer,
    /// Pass the data on to a third party.
    Distribute,
    /// Make new data from it.
    Derive,
    /// Compute aggregates over it.
    Aggregate,
    /// Delete it.
    Delete,
}

impl Action {
    /// All actions.
    pub const ALL: [Action; 7] = [
        Action::Use,
        Action::Read,
        Action::Transfer,
        Action::Distribute,
        Action::Derive,
        Action::Aggregate,
        Action::Delete,
    ];

    /// The action's name (`use`, `read`, …), also its ODRL term.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Use => "use",
            Action::Read => "read",
            Action::Transfer => "transfer",
            Action::Distribute => "distribute",
            Action::Derive => "derive",
            Action::Aggregate => "aggregate",
            Action::Delete => "delete",
        }
    }

    /// Parses an action name.
    pub fn parse(s: &str) -> Option<Self> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// `true` when doing `other` is a case of doing `self` (`use` includes `read`).
    pub fn includes(self, other: Action) -> bool {
        self == other
            || (self == Action::Use
                && matches!(other, Action::Read | Action::Aggregate | Action::Derive))
    }

    /// `true` when one of the two includes the other.
    pub fn overlaps(self, other: Action) -> bool {
        self.includes(other) || other.includes(self)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A constraint: an atomic comparison or a logical combination of constraints.
#[derive(Debug, Clone, PartialEq)]
pub enum Constraint {
    /// `leftOperand operator rightOperand`.
    Atomic(Atomic),
    /// Logical `and`, `or` or `xone` (exactly one) over constraints.
    Logical(LogicalOperator, Vec<Constraint>),
}

impl From<Atomic> for Constraint {
    fn from(a: Atomic) -> Self {
        Constraint::Atomic(a)
    }
}

/// An atomic constraint. Build one with [`Atomic::new`], which checks nothing; the
/// checks run when a policy is compiled or parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Atomic {
    /// What is compared.
    pub left: LeftOperand,
    /// How.
    pub operator: Operator,
    /// With what.
    pub right: RightOperand,
}

impl Atomic {
    /// A constraint with one right-hand value.
    pub fn new(left: LeftOperand, operator: Operator, right: Value) -> Self {
        Atomic {
            left,
            operator,
            right: RightOperand::One(right),
        }
    }

    /// A constraint with a list of right-hand values (`isAnyOf`, `isAllOf`, `isNoneOf`).
    pub fn list(left: LeftOperand, operator: Operator, right: Vec<Value>) -> Self {
        Atomic {
            left,
            operator,
            right: RightOperand::List(right),
        }
    }
}

impl fmt::Display for Atomic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.left, self.operator, self.right)
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Constraint::Atomic(a) => a.fmt(f),
            Constraint::Logical(op, cs) => {
                write!(f, "{}(", op.as_str())?;
                for (i, c) in cs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    c.fmt(f)?;
                }
                f.write_str(")")
            }
        }
    }
}

/// The logical operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogicalOperator {
    /// All must hold.
    And,
    /// At least one must hold.
    Or,
    /// Exactly one must hold.
    Xone,
}

impl LogicalOperator {
    /// `and`, `or` or `xone`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogicalOperator::And => "and",
            LogicalOperator::Or => "or",
            LogicalOperator::Xone => "xone",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "and" => Some(LogicalOperator::And),
            "or" => Some(LogicalOperator::Or),
            "xone" => Some(LogicalOperator::Xone),
            _ => None,
        }
    }
}

/// What a constraint is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LeftOperand {
    /// The current time (`now` in the state).
    DateTime,
    /// Time elapsed since the agreement.
    ElapsedTime,
    /// Uses so far (before the one being decided).
    Count,
    /// The declared purpose; a term of the purpose vocabulary.
    Purpose,
    /// The recipient's participant ID.
    Recipient,
    /// The recipient's kind (government, enterprise, publicInstitution).
    RecipientKind,
    /// The recipient's sector (industry code or name, as in its credential).
    Sector,
    /// The recipient's region (6-digit administrative code).
    Region,
    /// The product's classification level.
    Classification,
    /// The recipient's security protection level (等级保护, 1 to 5).
    SecurityLevel,
    /// The recipient's roles (a set).
    Role,
}

/// The type of value a left operand is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// An RFC 3339 date-time.
    DateTime,
    /// An ISO 8601 duration.
    Duration,
    /// A non-negative integer.
    Integer,
    /// A purpose term.
    Purpose,
    /// A participant ID.
    Participant,
    /// A recipient kind.
    Kind,
    /// Free text without spaces (sector, role).
    Text,
    /// A region code.
    Region,
    /// A classification level.
    Classification,
}

impl ValueType {
    /// Words for messages.
    pub fn describe(self) -> &'static str {
        match self {
            ValueType::DateTime => "a date-time such as 2026-01-01T00:00:00+08:00",
            ValueType::Duration => "a duration such as P30D",
            ValueType::Integer => "a whole number",
            ValueType::Purpose => "a purpose term",
            ValueType::Participant => "a participant ID (18-character USCC)",
            ValueType::Kind => "a recipient kind (government, enterprise, publicInstitution)",
            ValueType::Text => "a word",
            ValueType::Region => "a 6-digit region code",
            ValueType::Classification => "a classification level (core … general-1)",
        }
    }
}

impl LeftOperand {
    /// All operands.
    pub const ALL: [LeftOperand; 11] = [
        LeftOperand::DateTime,
        LeftOperand::ElapsedTime,
        LeftOperand::Count,
        LeftOperand::Purpose,
        LeftOperand::Recipient,
        LeftOperand::RecipientKind,
        LeftOperand::Sector,
        LeftOperand::Region,
        LeftOperand::Classification,
        LeftOperand::SecurityLevel,
        LeftOperand::Role,
    ];

    /// The operand's name in policies.
    pub fn as_str(self) -> &'static str {
        match self {
            LeftOperand::DateTime => "dateTime",
            LeftOperand::ElapsedTime => "elapsedTime",
            LeftOperand::Count => "count",
            LeftOperand::Purpose => "purpose",
            LeftOperand::Recipient => "recipient",
            LeftOperand::RecipientKind => "recipientKind",
            LeftOperand::Sector => "sector",
            LeftOperand::Region => "region",
            LeftOperand::Classification => "classification",
            LeftOperand::SecurityLevel => "securityLevel",
            LeftOperand::Role => "role",
        }
    }

    /// Parses an operand name.
    pub fn parse(s: &str) -> Option<Self> {
        LeftOperand::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// The type its right operand must have.
    pub fn value_type(self) -> ValueType {
        match self {
            LeftOperand::DateTime => ValueType::DateTime,
            LeftOperand::ElapsedTime => ValueType::Duration,
            LeftOperand::Count | LeftOperand::SecurityLevel => ValueType::Integer,
            LeftOperand::Purpose => ValueType::Purpose,
            LeftOperand::Recipient => ValueType::Participant,
            LeftOperand::RecipientKind => ValueType::Kind,
            LeftOperand::Sector | LeftOperand::Role => ValueType::Text,
            LeftOperand::Region => ValueType::Region,
            LeftOperand::Classification => ValueType::Classification,
        }
    }

    /// The operators allowed with this operand.
    pub fn allowed_operators(self) -> &'static [Operator] {
        use Operator::*;
        match self {
            LeftOperand::DateTime | LeftOperand::ElapsedTime => &[Lt, Lteq, Gt, Gteq],
            LeftOperand::Count | LeftOperand::SecurityLevel | LeftOperand::Classification => {
                &[Eq, Neq, Lt, Lteq, Gt, Gteq, IsAnyOf, IsNoneOf]
            }
            LeftOperand::Purpose => &[Eq, Neq, IsA, IsAnyOf, IsNoneOf],
            LeftOperand::Region => &[Eq, Neq, IsPartOf, IsAnyOf, IsNoneOf],
            LeftOperand::Recipient | LeftOperand::RecipientKind | LeftOperand::Sector => {
                &[Eq, Neq, IsAnyOf, IsNoneOf]
            }
            LeftOperand::Role => &[IsAnyOf, IsAllOf, IsNoneOf],
        }
    }

    /// The subject in words, for messages ("the declared purpose").
    pub fn describe(self) -> &'static str {
        match self {
            LeftOperand::DateTime => "the current time",
            LeftOperand::ElapsedTime => "the time since the agreement",
            LeftOperand::Count => "the number of uses so far",
            LeftOperand::Purpose => "the declared purpose",
            LeftOperand::Recipient => "the recipient",
            LeftOperand::RecipientKind => "the recipient's kind",
            LeftOperand::Sector => "the recipient's sector",
            LeftOperand::Region => "the recipient's region",
            LeftOperand::Classification => "the product's classification",
            LeftOperand::SecurityLevel => "the recipient's security level",
            LeftOperand::Role => "the recipient's roles",
        }
    }
}

impl fmt::Display for LeftOperand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    /// Equal.
    Eq,
    /// Not equal.
    Neq,
    /// Less than.
    Lt,
    /// Less than or equal.
    Lteq,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Gteq,
    /// Is the term or a narrower one (purpose).
    IsA,
    /// Is the region or inside it.
    IsPartOf,
    /// Is (a kind or part of) one of the listed values; for roles: has one of them.
    IsAnyOf,
    /// Has all the listed roles.
    IsAllOf,
    /// Is (a kind or part of) none of the listed values; for roles: has none of them.
    IsNoneOf,
}

impl Operator {
    /// All operators.
    pub const ALL: [Operator; 11] = [
        Operator::Eq,
        Operator::Neq,
        Operator::Lt,
        Operator::Lteq,
        Operator::Gt,
        Operator::Gteq,
        Operator::IsA,
        Operator::IsPartOf,
        Operator::IsAnyOf,
        Operator::IsAllOf,
        Operator::IsNoneOf,
    ];

    /// The operator's name in policies.
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Eq => "eq",
            Operator::Neq => "neq",
            Operator::Lt => "lt",
            Operator::Lteq => "lteq",
            Operator::Gt => "gt",
            Operator::Gteq => "gteq",
            Operator::IsA => "isA",
            Operator::IsPartOf => "isPartOf",
            Operator::IsAnyOf => "isAnyOf",
            Operator::IsAllOf => "isAllOf",
            Operator::IsNoneOf => "isNoneOf",
        }
    }

    /// Parses an operator name.
    pub fn parse(s: &str) -> Option<Self> {
        Operator::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// `true` for the operators whose right operand is a list.
    pub fn takes_list(self) -> bool {
        matches!(
            self,
            Operator::IsAnyOf | Operator::IsAllOf | Operator::IsNoneOf
        )
    }

    /// Words for messages, after "must" ("be less than").
    pub fn describe(self) -> &'static str {
        match self {
            Operator::Eq => "be",
            Operator::Neq => "not be",
            Operator::Lt => "be less than",
            Operator::Lteq => "be at most",
            Operator::Gt => "be more than",
            Operator::Gteq => "be at least",
            Operator::IsA => "be a kind of",
            Operator::IsPartOf => "be part of",
            Operator::IsAnyOf => "be (a kind or part of) one of",
            Operator::IsAllOf => "include all of",
            Operator::IsNoneOf => "be (a kind or part of) none of",
        }
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A right-hand value, typed by its left operand.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// For `dateTime`.
    DateTime(OffsetDateTime),
    /// For `elapsedTime` (whole seconds).
    Duration(Duration),
    /// For `count` and `securityLevel`.
    Integer(u64),
    /// For `purpose`: a vocabulary term.
    Purpose(String),
    /// For `recipient`.
    Participant(ParticipantCode),
    /// For `recipientKind`.
    Kind(RecipientKind),
    /// For `sector` and `role`.
    Text(String),
    /// For `region`.
    Region(RegionCode),
    /// For `classification`.
    Classification(Classification),
}

impl Value {
    /// The type of this value.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::DateTime(_) => ValueType::DateTime,
            Value::Duration(_) => ValueType::Duration,
            Value::Integer(_) => ValueType::Integer,
            Value::Purpose(_) => ValueType::Purpose,
            Value::Participant(_) => ValueType::Participant,
            Value::Kind(_) => ValueType::Kind,
            Value::Text(_) => ValueType::Text,
            Value::Region(_) => ValueType::Region,
            Value::Classification(_) => ValueType::Classification,
        }
    }

    /// The value as written in the authoring forms.
    pub fn to_text(&self) -> String {
        match self {
            Value::DateTime(t) => format_datetime(*t),
            Value::Duration(d) => format_duration(*d),
            Value::Integer(n) => n.to_string(),
            Value::Purpose(s) | Value::Text(s) => s.clone(),
            Value::Participant(p) => p.to_string(),
            Value::Kind(k) => k.to_string(),
            Value::Region(r) => r.to_string(),
            Value::Classification(c) => c.to_string(),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

/// RFC 3339 text of a date-time.
pub(crate) fn format_datetime(t: OffsetDateTime) -> String {
    // Every OffsetDateTime with a four-digit year formats as RFC 3339; the parsers only
    // accept such years, so this cannot fail for values from a parsed policy.
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// The right operand: one value or a list.
#[derive(Debug, Clone, PartialEq)]
pub enum RightOperand {
    /// A single value.
    One(Value),
    /// A list of values.
    List(Vec<Value>),
}

impl RightOperand {
    /// The values, one or many.
    pub fn values(&self) -> &[Value] {
        match self {
            RightOperand::One(v) => std::slice::from_ref(v),
            RightOperand::List(vs) => vs,
        }
    }
}

impl fmt::Display for RightOperand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RightOperand::One(v) => v.fmt(f),
            RightOperand::List(vs) => {
                f.write_str("[")?;
                for (i, v) in vs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    v.fmt(f)?;
                }
                f.write_str("]")
            }
        }
    }
}

/// A duty the evaluator returns with a permit. The policy crate only describes
/// duties; the node performs them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum Duty {
    /// Delete the received copy after a time since the agreement, or at a date.
    DeleteAfter {
        /// When.
        #[serde(flatten)]
        when: DeleteAfter,
    },
    /// Record each use in the audit log.
    Log,
    /// Notify the provider (the assigner) of each use.
    Notify,
    /// Mask fields before delivery or use.
    Mask {
        /// The field rules, applied in order.
        rules: Vec<MaskRule>,
    },
    /// Release only aggregates over groups of at least `k` records.
    AggregateOnly {
        /// Minimum group size (at least 2).
        k: u32,
    },
    /// Onward sharing must carry the named policy.
    NextPolicy {
        /// The UID of the policy to carry.
        policy: String,
    },
}

impl Duty {
    /// The duty's action name (`deleteAfter`, `log`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Duty::DeleteAfter { .. } => "deleteAfter",
            Duty::Log => "log",
            Duty::Notify => "notify",
            Duty::Mask { .. } => "mask",
            Duty::AggregateOnly { .. } => "aggregateOnly",
            Duty::NextPolicy { .. } => "nextPolicy",
        }
    }
}

impl fmt::Display for Duty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Duty::DeleteAfter {
                when: DeleteAfter::Elapsed(d),
            } => write!(
                f,
                "delete the copy {} after the agreement",
                crate::vocab::describe_duration(d.as_secs())
            ),
            Duty::DeleteAfter {
                when: DeleteAfter::At(t),
            } => write!(f, "delete the copy at {}", format_datetime(*t)),
            Duty::Log => f.write_str("log each use"),
            Duty::Notify => f.write_str("notify the provider of each use"),
            Duty::Mask { rules } => write!(f, "mask {} field rule(s)", rules.len()),
            Duty::AggregateOnly { k } => {
                write!(f, "release only aggregates over groups of at least {k}")
            }
            Duty::NextPolicy { policy } => write!(f, "onward sharing must carry policy {policy}"),
        }
    }
}

/// When a `deleteAfter` duty falls due.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeleteAfter {
    /// A time after the agreement.
    #[serde(with = "duration_text")]
    Elapsed(Duration),
    /// A date.
    #[serde(with = "time::serde::rfc3339")]
    At(OffsetDateTime),
}

/// One field rule of a mask duty.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MaskRule {
    /// Which fields.
    pub field: FieldSelector,
    /// What to do with them.
    pub method: MaskMethod,
}

/// Selects fields by name or by built-in type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FieldSelector {
    /// The column or JSON key with this name.
    Name(String),
    /// Every field the node recognises as this type.
    Type(FieldType),
}

/// Built-in field types the node can recognise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FieldType {
    /// Mainland ID card number (GB 11643).
    Idcard,
    /// Mobile phone number.
    Mobile,
    /// A person's name.
    Name,
    /// An e-mail address.
    Email,
}

impl FieldType {
    /// The type's name in policies.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::Idcard => "idcard",
            FieldType::Mobile => "mobile",
            FieldType::Name => "name",
            FieldType::Email => "email",
        }
    }

    /// The method a mask rule on this type gets when it names none: ID card numbers
    /// keep their first character and last two (GB/T 35273 style; write
    /// `keep = { first = 6, last = 4 }` to keep the region and the tail), mobile numbers
    /// keep 3 and 4, names their first character, and e-mail addresses become a keyed
    /// hash (pseudonymous, so they can still be joined within one agreement).
    pub fn default_method(self) -> MaskMethod {
        match self {
            FieldType::Idcard => MaskMethod::Keep { first: 1, last: 2 },
            FieldType::Mobile => MaskMethod::Keep { first: 3, last: 4 },
            FieldType::Name => MaskMethod::Keep { first: 1, last: 0 },
            FieldType::Email => MaskMethod::Hash,
        }
    }

    /// All built-in types.
    pub const ALL: [FieldType; 4] = [
        FieldType::Idcard,
        FieldType::Mobile,
        FieldType::Name,
        FieldType::Email,
    ];
}

/// How a field is masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MaskMethod {
    /// Keep the first `first` and last `last` characters, mask the rest.
    Keep {
        /// Characters kept at the start.
        first: u32,
        /// Characters kept at the end.
        last: u32,
    },
    /// Mask every character.
    MaskAll,
    /// Replace with a keyed hash (pseudonymisation; the node holds the key).
    Hash,
    /// Remove the field.
    Drop,
    /// Generalise the value.
    Generalize {
        /// To what.
        to: Generalization,
    },
}

/// Targets of generalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Generalization {
    /// A date to its year.
    Year,
    /// An administrative code to its prefecture.
    Prefecture,
}

mod duration_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::vocab::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        crate::vocab::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_includes_its_kinds() {
        assert!(Action::Use.includes(Action::Read));
        assert!(Action::Use.includes(Action::Aggregate));
        assert!(Action::Use.includes(Action::Derive));
        assert!(!Action::Use.includes(Action::Transfer));
        assert!(!Action::Use.includes(Action::Distribute));
        assert!(!Action::Read.includes(Action::Use));
        assert!(Action::Read.overlaps(Action::Use));
        assert!(!Action::Read.overlaps(Action::Derive));
    }

    #[test]
    fn names_parse_back() {
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(a));
        }
        for o in LeftOperand::ALL {
            assert_eq!(LeftOperand::parse(o.as_str()), Some(o));
        }
        for o in Operator::ALL {
            assert_eq!(Operator::parse(o.as_str()), Some(o));
        }
    }

    #[test]
    fn constraints_render() {
        let a = Atomic::new(LeftOperand::Count, Operator::Lt, Value::Integer(3));
        assert_eq!(a.to_string(), "count lt 3");
        let c = Constraint::Logical(LogicalOperator::Or, vec![a.clone().into(), a.into()]);
        assert_eq!(c.to_string(), "or(count lt 3, count lt 3)");
    }
}
