//! Policies and their rules: the [`Policy`] with its type and parties, each [`Rule`]
//! (permission, prohibition or obligation) with its constraints and duties, and the
//! [`Action`]s a rule is about.

use std::fmt;

use super::constraint::Constraint;
use super::duty::Duty;
use crate::vocab::ParticipantCode;

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
    fn action_names_parse_back() {
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(a));
        }
    }
}
