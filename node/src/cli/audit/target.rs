//! Which node an audit command asks (this one, or another member's over its peer
//! API), and the filter of the commands that search the log.

use std::path::PathBuf;

use anyhow::anyhow;
use clap::Args;

use crate::audit::search::SearchFilter;
use crate::audit_client::AuditorClient;
use crate::cli::local_node::{load_config, local_channel};
use crate::config::NodeConfig;
use crate::local::LocalRole;
use crate::tls::{self, ExpectedServer, TlsIdentity};

/// Which node to ask, and how to print.
#[derive(Args, Debug)]
pub struct Target {
    /// This node's node.toml [default: $LIUTONG_DATA/node/node.toml or
    /// ./liutong-data/node/node.toml, the development node].
    #[arg(long, env = "LIUTONG_CONFIG")]
    pub config: Option<PathBuf>,
    /// Read another member's node (host:port of its peer API) instead of this one.
    #[arg(long)]
    pub node: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct FilterArgs {
    #[arg(long)]
    pub product: Option<String>,
    #[arg(long)]
    pub agreement: Option<String>,
    /// The other participant's 统一社会信用代码.
    #[arg(long)]
    pub participant: Option<String>,
    /// From this time (RFC 3339, e.g. 2026-05-01T00:00:00Z, or Unix seconds).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<i64>,
    /// Until this time (RFC 3339 or Unix seconds).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<i64>,
}

impl FilterArgs {
    pub(super) fn filter(&self) -> anyhow::Result<SearchFilter> {
        let f = SearchFilter {
            product: self.product.clone(),
            agreement: self.agreement.clone(),
            participant: self.participant.clone(),
            since: self.since,
            until: self.until,
        };
        f.check().map_err(|e| anyhow!(e))?;
        Ok(f)
    }
}

fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(secs);
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| {
            format!("{s:?} is neither RFC 3339 (2026-05-01T00:00:00Z) nor Unix seconds: {e}")
        })
}

impl Target {
    pub(super) fn load(&self) -> anyhow::Result<NodeConfig> {
        load_config(self.config.as_deref())
    }

    pub(super) async fn client(&self, role: LocalRole) -> anyhow::Result<AuditorClient> {
        let config = self.load()?;
        let channel = match &self.node {
            None => local_channel(&config, role).await?,
            Some(address) => peer_channel(&config, address).await?,
        };
        Ok(AuditorClient::new(channel, config.authority.public_key))
    }
}

/// A channel to another member's peer API with this node's identity. The server only
/// needs to chain to the data-space CA: everything read is checked against keys the
/// authority signed.
async fn peer_channel(
    config: &NodeConfig,
    address: &str,
) -> anyhow::Result<tonic::transport::Channel> {
    let dir = config.identity_dir();
    let identity = TlsIdentity::load(&dir.join("node.crt"), &dir.join("node.key"))?;
    let roots = tls::load_roots(&dir.join("ca.crt"))?;
    let client = tls::client_config(
        Some(&identity),
        roots,
        ExpectedServer::Member(std::sync::Arc::new(|_, _| Ok(()))),
    )?;
    Ok(tls::connect(address, client).await?)
}
