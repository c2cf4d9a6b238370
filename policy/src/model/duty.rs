//! Duties and masking: what a permit obliges the node to do (delete, log, notify, mask
//! fields, carry a policy onward), and the masking rules with the field selectors,
//! field types, masking methods and generalization levels they use.

use std::fmt;
use std::time::Duration;

use time::OffsetDateTime;

use super::constraint::format_datetime;

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
    /// Deliver records only where their released quasi-identifiers are shared by at
    /// least `k` records: a masked delivery withholds the records of smaller groups.
    KAnonymity {
        /// Minimum group size (at least 2).
        k: u32,
    },
    /// Answer aggregate queries only with differentially private noise: each query
    /// spends `epsilon` of the agreement's total `budget`, and is refused once the
    /// budget is spent.
    DifferentialPrivacy {
        /// The privacy loss ε of one query.
        epsilon: Epsilon,
        /// The total ε the agreement may spend over all its queries.
        budget: Epsilon,
        /// The range each summed or averaged column is clamped to: one person can move
        /// a sum by at most the larger magnitude of its bounds. A column without bounds
        /// cannot be summed or averaged.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        bounds: Vec<ColumnBounds>,
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
            Duty::KAnonymity { .. } => "kAnonymity",
            Duty::DifferentialPrivacy { .. } => "differentialPrivacy",
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
            Duty::KAnonymity { k } => write!(
                f,
                "deliver only records whose quasi-identifiers at least {k} records share"
            ),
            Duty::DifferentialPrivacy {
                epsilon, budget, ..
            } => write!(
                f,
                "answer aggregates with differential privacy, ε = {epsilon} a query, {budget} in all"
            ),
            Duty::NextPolicy { policy } => write!(f, "onward sharing must carry policy {policy}"),
        }
    }
}

/// A privacy loss ε, held in thousandths so that budgets add up exactly (no rounding
/// drift over many queries) and duties stay comparable. Written as a number (`0.5`);
/// finer than 0.001 is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epsilon(u32);

impl Epsilon {
    /// The smallest ε a duty may name.
    pub const STEP: Epsilon = Epsilon(1);

    /// ε from thousandths.
    pub const fn from_millis(millis: u32) -> Self {
        Epsilon(millis)
    }

    /// ε in thousandths.
    pub const fn millis(self) -> u32 {
        self.0
    }

    /// ε as a number.
    pub fn value(self) -> f64 {
        f64::from(self.0) / 1000.0
    }

    /// Reads ε from a number: finite, not negative, in steps of 0.001.
    pub fn from_value(x: f64) -> Result<Self, String> {
        if !x.is_finite() || x < 0.0 {
            return Err(format!("ε must be a positive number, not {x}"));
        }
        let millis = (x * 1000.0).round();
        if (x * 1000.0 - millis).abs() > 1e-6 || millis > f64::from(u32::MAX) {
            return Err(format!("ε is written in steps of 0.001, not {x}"));
        }
        // In range and integral: checked just above.
        Ok(Epsilon(millis as u32))
    }
}

impl fmt::Display for Epsilon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.value())
    }
}

impl serde::Serialize for Epsilon {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.value())
    }
}

impl<'de> serde::Deserialize<'de> for Epsilon {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let x = f64::deserialize(d)?;
        Epsilon::from_value(x).map_err(serde::de::Error::custom)
    }
}

/// The range a column's values are clamped to before they are summed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ColumnBounds {
    /// The column (CSV header or JSON key).
    pub column: String,
    /// The lowest value counted; smaller values count as this.
    pub lower: i64,
    /// The highest value counted; larger values count as this.
    pub upper: i64,
}

impl ColumnBounds {
    /// How far one row can move a sum: the larger magnitude of the two bounds.
    pub fn sensitivity(&self) -> u64 {
        self.lower.unsigned_abs().max(self.upper.unsigned_abs())
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
    /// keep their first character only (its region's first digit), mobile numbers
    /// keep 3 and 4, names their first character, and e-mail addresses become a keyed
    /// hash (pseudonymous, so they can still be joined within one agreement).
    ///
    /// An ID number shows no more by default because its hidden digits are mostly
    /// known elsewhere: with the district and the birth date in other columns, only
    /// the 3-digit sequence number is unknown, and a visible tail gives its last digit
    /// and the check character (a function of all 17 digits), which leaves about 9
    /// valid candidates. Keeping the first character leaves every sequence number of
    /// the person's sex: 500 candidates. Write `keep = { first = 6, last = 4 }` to
    /// show more, knowingly.
    pub fn default_method(self) -> MaskMethod {
        match self {
            FieldType::Idcard => MaskMethod::Keep { first: 1, last: 0 },
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
