//! Which host names and addresses the authority lets a member put in its certificate.
//!
//! A name in a member's certificate lets any standard TLS client take that member for the
//! host: so the authority certifies only names inside the domains and networks its
//! operator allowed, and never one name for two members.
//!
//! A DNS rule is either an exact name (`localhost`, `data.hz.gov.cn`) or, with a leading
//! dot, every name below a domain (`.hz.gov.cn` allows `node.hz.gov.cn`, not `hz.gov.cn`).
//! An IP rule is a network in CIDR notation (`10.20.0.0/16`, `::1/128`); a bare address
//! is the network of that one address.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::identity::request::HostName;

/// The operator's rules, kept in `authority.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameRules {
    pub dns: Vec<String>,
    pub ip: Vec<String>,
}

impl Default for NameRules {
    /// Loopback only: enough for nodes on one machine, nothing anyone could misuse.
    fn default() -> Self {
        Self {
            dns: vec!["localhost".into()],
            ip: vec!["127.0.0.0/8".into(), "::1/128".into()],
        }
    }
}

impl NameRules {
    /// Checks and normalises rules given by the operator.
    pub fn parse(dns: &[String], ip: &[String]) -> Result<Self, String> {
        let mut rules = Self {
            dns: Vec::new(),
            ip: Vec::new(),
        };
        for rule in dns {
            let (dot, name) = match rule.strip_prefix('.') {
                Some(rest) => (".", rest),
                None => ("", rule.as_str()),
            };
            let name = HostName::parse(name).map_err(|e| format!("DNS rule {rule:?}: {e}"))?;
            rules.dns.push(format!("{dot}{name}"));
        }
        for rule in ip {
            Network::parse(rule)?;
            rules.ip.push(rule.trim().to_owned());
        }
        Ok(rules)
    }

    pub fn allows_dns(&self, name: &HostName) -> bool {
        self.dns.iter().any(|rule| match rule.strip_prefix('.') {
            Some(domain) => name
                .as_str()
                .strip_suffix(domain)
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            None => rule == name.as_str(),
        })
    }

    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        self.ip
            .iter()
            .filter_map(|rule| Network::parse(rule).ok())
            .any(|net| net.contains(ip))
    }

    /// One line for messages: what is allowed.
    pub fn describe(&self) -> String {
        let all: Vec<&str> = self
            .dns
            .iter()
            .chain(self.ip.iter())
            .map(String::as_str)
            .collect();
        if all.is_empty() {
            "none".into()
        } else {
            all.join(", ")
        }
    }
}

/// An IP network: an address and a prefix length.
struct Network {
    addr: IpAddr,
    prefix: u32,
}

impl Network {
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let refuse = || {
            format!(
                "IP rule {text:?} is not an address or a network in CIDR notation (e.g. \
                 10.20.0.0/16, ::1/128)"
            )
        };
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| refuse())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u32>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(refuse)?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let bits = |a: IpAddr| -> (u128, u32) {
            match a {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
                IpAddr::V6(v6) => (u128::from(v6), 128),
            }
        };
        let ((net, width), (candidate, other)) = (bits(self.addr), bits(ip));
        if width != other {
            return false;
        }
        if self.prefix == 0 {
            return true;
        }
        let shift = width - self.prefix;
        (net >> shift) == (candidate >> shift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(s: &str) -> HostName {
        HostName::parse(s).unwrap()
    }

    #[test]
    fn domains_and_networks() {
        let rules = NameRules::parse(
            &[".hz.gov.cn".into(), "Data.Example.CN".into()],
            &["10.20.0.0/16".into(), "192.0.2.7".into(), "fd00::/8".into()],
        )
        .unwrap();
        assert!(rules.allows_dns(&host("node.hz.gov.cn")));
        assert!(rules.allows_dns(&host("a.b.hz.gov.cn")));
        assert!(!rules.allows_dns(&host("hz.gov.cn")));
        assert!(!rules.allows_dns(&host("evilhz.gov.cn")));
        assert!(rules.allows_dns(&host("data.example.cn")));
        assert!(!rules.allows_dns(&host("x.data.example.cn")));
        assert!(rules.allows_ip("10.20.255.1".parse().unwrap()));
        assert!(!rules.allows_ip("10.21.0.1".parse().unwrap()));
        assert!(rules.allows_ip("192.0.2.7".parse().unwrap()));
        assert!(!rules.allows_ip("192.0.2.8".parse().unwrap()));
        assert!(rules.allows_ip("fd12::1".parse().unwrap()));
        assert!(!rules.allows_ip("::1".parse().unwrap()));

        let loopback = NameRules::default();
        assert!(loopback.allows_dns(&host("localhost")));
        assert!(loopback.allows_ip("127.0.0.1".parse().unwrap()));
        assert!(loopback.allows_ip("::1".parse().unwrap()));
        assert!(!loopback.allows_ip("10.0.0.1".parse().unwrap()));

        assert!(NameRules::parse(&["*.cn".into()], &[]).is_err());
        assert!(NameRules::parse(&[], &["10.0.0.0/33".into()]).is_err());
        assert!(NameRules::parse(&[], &["ten".into()]).is_err());
    }
}
