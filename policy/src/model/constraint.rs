//! Constraints and their values: atomic comparisons (`leftOperand operator
//! rightOperand`) and their logical combinations, the operands a policy may constrain
//! with the type of value each takes, the operators, and the typed values.

use std::fmt;
use std::time::Duration;

use time::OffsetDateTime;

use crate::vocab::{Classification, ParticipantCode, RecipientKind, RegionCode, format_duration};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operand_and_operator_names_parse_back() {
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
