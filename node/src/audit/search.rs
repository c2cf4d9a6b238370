//! Finding the entries about one data product, agreement or participant.
//!
//! The log is scanned in index order (it has no secondary index); one call looks at a
//! bounded number of entries and says where to go on.

use serde::{Deserialize, Serialize};

use super::log::{AuditError, AuditLog, Event};

/// Most entries one scan looks at.
const MAX_SCANNED: u64 = 100_000;
/// Most matches one scan returns.
const MAX_MATCHES: usize = 500;

/// What to look for. Every field given must match; `since` and `until` bound the event
/// time (Unix seconds, both included).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<i64>,
}

impl SearchFilter {
    /// From the gRPC request; empty strings and zero times mean "not given".
    pub fn from_request(r: &liutong_proto::v1::SearchRequest) -> Result<Self, String> {
        let text = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
        let filter = Self {
            product: text(&r.product),
            agreement: text(&r.agreement),
            participant: text(&r.participant),
            since: (r.since != 0).then_some(r.since),
            until: (r.until != 0).then_some(r.until),
        };
        filter.check()?;
        Ok(filter)
    }

    /// The gRPC request scanning from entry `from`.
    pub fn to_request(&self, from: u64) -> liutong_proto::v1::SearchRequest {
        liutong_proto::v1::SearchRequest {
            product: self.product.clone().unwrap_or_default(),
            agreement: self.agreement.clone().unwrap_or_default(),
            participant: self.participant.clone().unwrap_or_default(),
            since: self.since.unwrap_or(0),
            until: self.until.unwrap_or(0),
            from,
        }
    }

    /// At least one of product, agreement, participant; times in order.
    pub fn check(&self) -> Result<(), String> {
        if self.product.is_none() && self.agreement.is_none() && self.participant.is_none() {
            return Err("give a product, an agreement or a participant to search for".into());
        }
        if let (Some(s), Some(u)) = (self.since, self.until)
            && u < s
        {
            return Err(format!("until: {u} is before since: {s}"));
        }
        Ok(())
    }

    pub fn matches(&self, event: &Event) -> bool {
        let field = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
        };
        field(&self.product, &event.product)
            && field(&self.agreement, &event.agreement)
            && field(&self.participant, &event.participant)
            && self.since.is_none_or(|s| event.time >= s)
            && self.until.is_none_or(|u| event.time <= u)
    }
}

/// What one scan found.
#[derive(Debug, Default)]
pub struct Found {
    pub indices: Vec<u64>,
    /// Where to scan on, if the scan stopped before `size`.
    pub next_from: Option<u64>,
}

/// Scans entries `from..size` for events matching `filter`. Entries that are not
/// events of this software (or missing) are skipped.
pub fn scan(
    log: &AuditLog,
    filter: &SearchFilter,
    from: u64,
    size: u64,
) -> Result<Found, AuditError> {
    let mut found = Found::default();
    let end = size.min(from.saturating_add(MAX_SCANNED));
    let mut index = from;
    while index < end {
        let page = log.entries(index, end - 1, 1000, 4 * 1024 * 1024)?;
        let Some(&(last, _)) = page.last() else {
            break;
        };
        for (i, data) in page {
            if serde_json::from_slice::<Event>(&data).is_ok_and(|e| filter.matches(&e)) {
                found.indices.push(i);
                if found.indices.len() >= MAX_MATCHES {
                    found.next_from = (i + 1 < size).then_some(i + 1);
                    return Ok(found);
                }
            }
        }
        index = last + 1;
    }
    if end < size {
        found.next_from = Some(end);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::log::EventKind;

    #[test]
    fn every_given_field_must_match() {
        let mut e = Event::new(EventKind::Alert, 100, "x");
        e.participant = Some("91330100MA2L0G0013".into());
        e.product = Some("p1".into());
        let f = |p: Option<&str>, pr: Option<&str>, since, until| SearchFilter {
            participant: p.map(Into::into),
            product: pr.map(Into::into),
            since,
            until,
            ..SearchFilter::default()
        };
        assert!(f(Some("91330100MA2L0G0013"), None, None, None).matches(&e));
        assert!(f(Some("91330100MA2L0G0013"), Some("p1"), Some(100), Some(100)).matches(&e));
        assert!(!f(Some("91330100MA2L0G0013"), Some("p2"), None, None).matches(&e));
        assert!(!f(None, Some("p1"), Some(101), None).matches(&e));
        assert!(!f(None, Some("p1"), None, Some(99)).matches(&e));
        assert!(SearchFilter::default().check().is_err());
        assert!(f(None, Some("p1"), Some(5), Some(4)).check().is_err());
    }
}
