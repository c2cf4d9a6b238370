//! The security alert rules of `node.toml` (`[alerts]`): which rules are on and
//! their thresholds, each on by default.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Security alert rules (`[alerts]`): 数据安全实时监测预警. Every rule is on by default.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSection {
    /// Where alerts are POSTed as JSON, `http://` or `https://`; none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// PEM file of the CA that issued an `https://` webhook's certificate, relative to
    /// this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_ca: Option<PathBuf>,
    #[serde(default)]
    pub policy_denials: WindowRule<5, 600>,
    #[serde(default)]
    pub failed_authentication: WindowRule<3, 300>,
    #[serde(default)]
    pub transfer_volume: VolumeRule,
    #[serde(default)]
    pub read_outside_window: SwitchRule,
    #[serde(default)]
    pub witness_inconsistency: SwitchRule,
    #[serde(default)]
    pub trust_list_expiry: ExpiryRule,
    #[serde(default)]
    pub storage_failure: SwitchRule,
    #[serde(default)]
    pub member_limits: SwitchRule,
}

/// A rule that fires when `threshold` events from one source fall within `window`.
/// The const parameters are the defaults.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowRule<const THRESHOLD: u32, const WINDOW_SECS: u64> {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "WindowRule::<THRESHOLD, WINDOW_SECS>::default_threshold")]
    pub threshold: u32,
    #[serde(
        with = "humantime_serde",
        default = "WindowRule::<THRESHOLD, WINDOW_SECS>::default_window"
    )]
    pub window: Duration,
}

impl<const T: u32, const W: u64> WindowRule<T, W> {
    fn default_threshold() -> u32 {
        T
    }

    fn default_window() -> Duration {
        Duration::from_secs(W)
    }
}

impl<const T: u32, const W: u64> Default for WindowRule<T, W> {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold: T,
            window: Duration::from_secs(W),
        }
    }
}

/// Transfer volume: fires when the bytes delivered under one agreement exceed
/// `factor` × the size the agreement covers.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeRule {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_volume_factor")]
    pub factor: f64,
}

impl Default for VolumeRule {
    fn default() -> Self {
        Self {
            enabled: true,
            factor: default_volume_factor(),
        }
    }
}

fn default_volume_factor() -> f64 {
    2.0
}

/// A rule with nothing to tune.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchRule {
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for SwitchRule {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// Trust list expiry: fires when the trust list in force expires within `before`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpiryRule {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(with = "humantime_serde", default = "default_expiry_before")]
    pub before: Duration,
}

impl Default for ExpiryRule {
    fn default() -> Self {
        Self {
            enabled: true,
            before: default_expiry_before(),
        }
    }
}

fn default_expiry_before() -> Duration {
    Duration::from_secs(300)
}

fn yes() -> bool {
    true
}
