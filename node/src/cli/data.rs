//! `liutong data …`: reading received copies through usage control, and listing them.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use liutong_proto::v1::read_response::Part;
use liutong_proto::v1::usage_client::UsageClient;
use liutong_proto::v1::{CopyStatus, ListCopiesRequest, ReadRequest};
use std::io::Write as _;
use tokio_stream::StreamExt as _;

use super::local_node::LocalArgs;
use super::output::{esc, pages_from, print_pages, status_error};
use crate::base::format::format_unix;
use crate::local::LocalRole;

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Read a received copy for a declared purpose; the data goes to standard output.
    ///
    /// The node decides the read by the copy's policy (purpose, time window, use count,
    /// recipient), counts and logs it, and carries out its duties (a usage notice to
    /// the provider if the policy asks for one). A refused read names the failed
    /// constraints and exits 1. Uses the local `app` certificate: only applications
    /// read received copies, administrators do not.
    Read {
        /// The agreement under which the copy was received (`liutong data list`).
        agreement: String,
        /// The purpose of this use: the agreement's purpose or a narrower one (e.g.
        /// urbanPlanning, scientificResearch).
        #[arg(long)]
        purpose: String,
        /// Write the data to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        app: AppArgs,
    },
    /// List received copies: state, uses so far, when deleteAfter deletes them, and the
    /// copies already deleted (deadline passed or agreement revoked).
    List {
        #[command(flatten)]
        local: LocalArgs,
        #[arg(long)]
        json: bool,
    },
}

/// How a local application reaches its node.
#[derive(Args, Debug)]
pub struct AppArgs {
    /// The node's node.toml [default: $LIUTONG_DATA/node/node.toml or
    /// ./liutong-data/node/node.toml, the development node].
    #[arg(long, env = "LIUTONG_CONFIG")]
    pub config: Option<PathBuf>,
    /// Which local client certificate to use; reading needs the role app.
    #[arg(long, default_value = "app")]
    pub role: LocalRole,
}

pub(super) async fn usage_client(
    local: &LocalArgs,
) -> anyhow::Result<UsageClient<tonic::transport::Channel>> {
    Ok(UsageClient::new(local.channel().await?))
}

pub async fn run(cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Read {
            agreement,
            purpose,
            out,
            app,
        } => {
            let local = LocalArgs {
                config: app.config,
                role: app.role,
            };
            let mut stream = usage_client(&local)
                .await?
                .read(ReadRequest {
                    agreement_id: agreement,
                    purpose,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            // A CLI with one stream to copy: plain blocking writes are fine here.
            let mut sink: Box<dyn std::io::Write> = match &out {
                Some(path) => Box::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("cannot create {}", path.display()))?,
                ),
                None => Box::new(std::io::stdout().lock()),
            };
            let mut written = 0u64;
            while let Some(item) = stream.next().await {
                match item.map_err(status_error)?.part {
                    Some(Part::Header(h)) => {
                        // Standard error, so standard output carries only the data.
                        eprintln!(
                            "reading {} v{} ({} bytes, {}) under agreement {}: use {}",
                            esc(&h.product_id),
                            h.version,
                            h.size,
                            esc(&h.format),
                            esc(&h.agreement_id),
                            h.use_number
                        );
                        for d in &h.duties {
                            eprintln!("  duty {}", esc(d));
                        }
                    }
                    Some(Part::Data(data)) => {
                        sink.write_all(&data)?;
                        written += data.len() as u64;
                    }
                    None => {}
                }
            }
            sink.flush()?;
            if let Some(path) = out {
                eprintln!("wrote {written} bytes to {}", path.display());
            }
            Ok(())
        }
        DataCommand::List { local, json } => {
            let usage = usage_client(&local).await?;
            let fetch = pages_from(
                &usage,
                |mut usage, page_token| async move {
                    usage
                        .list_copies(ListCopiesRequest {
                            page_size: 0,
                            page_token,
                        })
                        .await
                },
                |page| (page.copies, page.next_page_token),
            );
            print_pages(
                json,
                "no received copies",
                copy_json,
                |c: &CopyStatus| {
                    println!(
                        "{}  {:<9} {} v{}  from {}  purpose {}  uses {}{}",
                        esc(&c.agreement_id),
                        esc(&c.state),
                        esc(&c.product_id),
                        c.version,
                        esc(&c.provider),
                        esc(&c.purpose),
                        c.uses,
                        if c.deleted_at_unix > 0 {
                            format!("\n    {}", esc(&c.reason))
                        } else if c.delete_at_unix > 0 {
                            format!("  deleted at {}", format_unix(c.delete_at_unix))
                        } else {
                            String::new()
                        }
                    );
                },
                fetch,
            )
            .await
        }
    }
}

fn copy_json(c: &CopyStatus) -> serde_json::Value {
    serde_json::json!({
        "agreement_id": c.agreement_id,
        "provider": c.provider,
        "product_id": c.product_id,
        "version": c.version,
        "purpose": c.purpose,
        "state": c.state,
        "uses": c.uses,
        "last_used_at": c.last_used_unix,
        "delete_at": c.delete_at_unix,
        "deleted_at": c.deleted_at_unix,
        "reason": c.reason,
        "size": c.size,
    })
}
