//! How a command reaches its own node: its node.toml and its local API.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use tonic::transport::Channel;

use crate::config::NodeConfig;
use crate::local::{self, LocalRole};
use crate::setup;
use liutong_proto::v1::admin_client::AdminClient;

/// How a command reaches its own node.
#[derive(Args, Debug)]
pub struct LocalArgs {
    /// The node's node.toml [default: $LIUTONG_DATA/node/node.toml or
    /// ./liutong-data/node/node.toml, the development node].
    #[arg(long, env = "LIUTONG_CONFIG")]
    pub config: Option<PathBuf>,
    /// Which local client certificate to use: admin, app or auditor.
    #[arg(long, default_value = "admin")]
    pub role: LocalRole,
}

impl LocalArgs {
    pub(super) fn load(&self) -> anyhow::Result<NodeConfig> {
        load_config(self.config.as_deref())
    }

    /// The local API of the node in `--config`, with the certificate of `--role`.
    pub(super) async fn channel(&self) -> anyhow::Result<Channel> {
        local_channel(&self.load()?, self.role).await
    }

    pub(super) async fn admin(&self) -> anyhow::Result<AdminClient<Channel>> {
        Ok(AdminClient::new(self.channel().await?))
    }
}

/// The node's configuration from `path`, or the development node's
/// ($LIUTONG_DATA/node/node.toml or ./liutong-data/node/node.toml).
pub(super) fn load_config(path: Option<&Path>) -> anyhow::Result<NodeConfig> {
    let path = path.map_or_else(
        || setup::dev_config_path(&setup::default_data_root()),
        Path::to_path_buf,
    );
    Ok(NodeConfig::load(&path)?)
}

/// A channel to the node's local API with the client certificate of `role`.
pub(super) async fn local_channel(config: &NodeConfig, role: LocalRole) -> anyhow::Result<Channel> {
    local::connect(config, role)
        .await
        .context("is the node running? start it with `liutong serve`")
}
