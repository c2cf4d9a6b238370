//! What an alert is: the [`Rule`] that raised it, its [`Severity`], and the [`Alert`]
//! itself as the webhook receives it. The names here are those of node.toml, the
//! `liutong.alerts` metric and the webhook JSON.

use serde::Serialize;

/// What an alert is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Rule {
    PolicyDenials,
    FailedAuthentication,
    TransferVolume,
    ReadOutsideWindow,
    WitnessInconsistency,
    TrustListExpiry,
    StorageFailure,
    MemberLimits,
}

impl Rule {
    /// Every rule, in the order of the README.
    pub const ALL: [Rule; 8] = [
        Rule::PolicyDenials,
        Rule::FailedAuthentication,
        Rule::TransferVolume,
        Rule::ReadOutsideWindow,
        Rule::WitnessInconsistency,
        Rule::TrustListExpiry,
        Rule::StorageFailure,
        Rule::MemberLimits,
    ];

    /// The rule's name, as in node.toml, the metric and the webhook JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::PolicyDenials => "policy_denials",
            Self::FailedAuthentication => "failed_authentication",
            Self::TransferVolume => "transfer_volume",
            Self::ReadOutsideWindow => "read_outside_window",
            Self::WitnessInconsistency => "witness_inconsistency",
            Self::TrustListExpiry => "trust_list_expiry",
            Self::StorageFailure => "storage_failure",
            Self::MemberLimits => "member_limits",
        }
    }

    /// How urgent: a forked log, data leaving beyond its agreement or a node that can
    /// no longer write is critical.
    pub fn severity(self) -> Severity {
        match self {
            Self::WitnessInconsistency | Self::TransferVolume | Self::StorageFailure => {
                Severity::Critical
            }
            _ => Severity::Warning,
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An alert's urgency: warnings log at WARN, critical alerts at ERROR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// One alert, as the webhook receives it (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Alert {
    pub rule: Rule,
    pub severity: Severity,
    /// The participant ID of the node that raised it.
    pub node: String,
    /// The other side: a participant ID, or `address <ip>` for a caller that did not
    /// authenticate. Absent when no one else is involved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    pub detail: String,
    /// RFC 3339, UTC.
    pub time: String,
    pub time_unix: i64,
    /// Index of the alert's entry in the node's audit log, when it was logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_index: Option<u64>,
}
