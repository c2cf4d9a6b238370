//! `liutong transfer …`: pulling the product of an agreement, verifying every chunk.

use std::io::IsTerminal;

use clap::Subcommand;
use liutong_proto::v1::{ListTransfersRequest, PullTransferRequest, TransferProgress};
use tokio_stream::StreamExt as _;

use super::local_node::LocalArgs;
use super::output::{esc, pages_from, print_json, print_pages, status_error};
use crate::transfer::TransferState;

#[derive(Subcommand, Debug)]
pub enum TransferCommand {
    /// Pull (or resume) the product of a finalized agreement from its provider. Every
    /// chunk is checked against the provider's signed manifest as it arrives.
    Pull {
        #[arg(long)]
        agreement: String,
        /// Pull at most this many chunks now (0: all); pull again to resume.
        #[arg(long, default_value_t = 0)]
        max_chunks: u32,
        /// Pull from the provider's Dataspace Protocol endpoint at this https:// base
        /// URL (this node's DSP listener must be on); without it, over the Liutong
        /// peer API at the agreement's peer address.
        #[arg(long)]
        peer: Option<String>,
        #[command(flatten)]
        local: LocalArgs,
        #[arg(long)]
        json: bool,
    },
    /// Suspend a Dataspace Protocol transfer, as provider (its data endpoint stops
    /// serving at once) or as consumer (its pull stops; pull again to restart it); the
    /// other side is told, with the reason.
    Suspend {
        /// The transfer's process ID here: its providerPid on the provider's node, its
        /// consumerPid on the consumer's (see `liutong transfer list --dsp`).
        #[arg(long)]
        id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        local: LocalArgs,
        #[arg(long)]
        json: bool,
    },
    /// As provider, restart a suspended Dataspace Protocol transfer: the consumer is
    /// sent a start message with a new token (the old one opens nothing).
    Restart {
        #[arg(long)]
        id: String,
        #[command(flatten)]
        local: LocalArgs,
        #[arg(long)]
        json: bool,
    },
    /// End a Dataspace Protocol transfer for good, as provider (its data endpoint
    /// stops serving at once) or as consumer (its pull stops and is not made again);
    /// the other side is told, with the reason.
    Terminate {
        /// The transfer's providerPid on the provider's node, its consumerPid on the
        /// consumer's.
        #[arg(long)]
        id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        local: LocalArgs,
        #[arg(long)]
        json: bool,
    },
    /// List received and partly received copies; with --dsp, the Dataspace Protocol
    /// transfers this node provides and pulls.
    List {
        /// List the Dataspace Protocol transfers instead: role, process IDs, the other
        /// side, agreement, state, bytes served and last change.
        #[arg(long)]
        dsp: bool,
        #[command(flatten)]
        local: LocalArgs,
        #[arg(long)]
        json: bool,
    },
}

/// Sends a provider's command on a DSP transfer and prints the state it left.
async fn control(
    local: LocalArgs,
    id: String,
    action: &str,
    reason: String,
    json: bool,
) -> anyhow::Result<()> {
    let state = local
        .admin()
        .await?
        .control_dsp_transfer(liutong_proto::v1::ControlDspTransferRequest {
            provider_pid: id,
            action: action.to_owned(),
            reason,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if json {
        print_json(&serde_json::json!({
            "role": state.role,
            "provider_pid": state.provider_pid,
            "consumer_pid": state.consumer_pid,
            "consumer": state.consumer,
            "provider": state.provider,
            "agreement_id": state.agreement_id,
            "state": state.state,
        }))?;
    } else if state.role == "consumer" {
        println!(
            "{}: DSP transfer {} from {} (agreement {}); the provider is told",
            esc(&state.state),
            esc(&state.consumer_pid),
            esc(&state.provider),
            esc(&state.agreement_id)
        );
    } else {
        println!(
            "{}: DSP transfer {} of {} (agreement {}); the consumer is told",
            esc(&state.state),
            esc(&state.provider_pid),
            esc(&state.consumer),
            esc(&state.agreement_id)
        );
    }
    Ok(())
}

pub async fn run(cmd: TransferCommand) -> anyhow::Result<()> {
    match cmd {
        TransferCommand::Suspend {
            id,
            reason,
            local,
            json,
        } => control(local, id, "suspend", reason, json).await,
        TransferCommand::Restart { id, local, json } => {
            control(local, id, "restart", String::new(), json).await
        }
        TransferCommand::Terminate {
            id,
            reason,
            local,
            json,
        } => control(local, id, "terminate", reason, json).await,
        TransferCommand::Pull {
            agreement,
            max_chunks,
            peer,
            local,
            json,
        } => {
            let mut stream = local
                .admin()
                .await?
                .pull_transfer(PullTransferRequest {
                    agreement_id: agreement,
                    max_chunks,
                    peer: peer.unwrap_or_default(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            // A bar only for a person at a terminal; scripts get the final line.
            let bar = (!json && std::io::stderr().is_terminal()).then(|| {
                let bar = indicatif::ProgressBar::new(0);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
                    )
                    .expect("the template is valid")
                    .progress_chars("=> "),
                );
                bar
            });
            let mut last: Option<TransferProgress> = None;
            while let Some(item) = stream.next().await {
                let p = match item {
                    Ok(p) => p,
                    Err(status) => {
                        if let Some(bar) = &bar {
                            bar.abandon();
                        }
                        return Err(status_error(status));
                    }
                };
                if let Some(bar) = &bar {
                    bar.set_length(p.bytes_total);
                    bar.set_position(p.bytes_received);
                    bar.set_message(format!("chunk {}/{}", p.chunks_received, p.chunks_total));
                }
                last = Some(p);
            }
            if let Some(bar) = &bar {
                bar.finish();
            }
            let p = last.ok_or_else(|| anyhow::anyhow!("the node reported no progress"))?;
            if json {
                print_json(&progress_json(&p))?;
            } else if TransferState::parse(&p.state) == Ok(TransferState::Completed)
                && p.reason.starts_with(crate::transfer::UNVERIFIED)
            {
                // A plain provider's copy: no chunk list to verify against.
                println!(
                    "COMPLETED: {} v{}, {} bytes in {} chunks, {}",
                    esc(&p.product_id),
                    p.version,
                    p.bytes_total,
                    p.chunks_total,
                    esc(&p.reason)
                );
            } else if TransferState::parse(&p.state) == Ok(TransferState::Completed) {
                println!(
                    "COMPLETED: {} v{}, {} bytes in {} chunks, every chunk verified, sha256 {}",
                    esc(&p.product_id),
                    p.version,
                    p.bytes_total,
                    p.chunks_total,
                    esc(&p.sha256)
                );
            } else {
                println!(
                    "{}: {} of {} chunks received; run the same command to resume",
                    esc(&p.state),
                    p.chunks_received,
                    p.chunks_total
                );
            }
            Ok(())
        }
        TransferCommand::List {
            dsp: true,
            local,
            json,
        } => list_dsp(local, json).await,
        TransferCommand::List { local, json, .. } => {
            let admin = local.admin().await?;
            let fetch = pages_from(
                &admin,
                |mut admin, page_token| async move {
                    admin
                        .list_transfers(ListTransfersRequest {
                            page_size: 0,
                            page_token,
                        })
                        .await
                },
                |page| (page.transfers, page.next_page_token),
            );
            print_pages(
                json,
                "no transfers yet",
                progress_json,
                |p: &TransferProgress| {
                    println!(
                        "{}  {:<10} {} v{}  {}/{} chunks  {} bytes{}",
                        esc(&p.agreement_id),
                        esc(&p.state),
                        esc(&p.product_id),
                        p.version,
                        p.chunks_received,
                        p.chunks_total,
                        p.bytes_total,
                        if p.reason.is_empty() {
                            String::new()
                        } else {
                            format!("  ({})", esc(&p.reason))
                        }
                    );
                },
                fetch,
            )
            .await
        }
    }
}

/// `liutong transfer list --dsp`: the DSP transfers, page by page.
async fn list_dsp(local: LocalArgs, json: bool) -> anyhow::Result<()> {
    use liutong_proto::v1::{DspTransferEntry, ListDspTransfersRequest};
    let admin = local.admin().await?;
    let fetch = pages_from(
        &admin,
        |mut admin, page_token| async move {
            admin
                .list_dsp_transfers(ListDspTransfersRequest {
                    page_size: 0,
                    page_token,
                })
                .await
        },
        |page| (page.transfers, page.next_page_token),
    );
    print_pages(
        json,
        "no Dataspace Protocol transfers yet",
        |t: &DspTransferEntry| {
            serde_json::json!({
                "role": t.role,
                "provider_pid": t.provider_pid,
                "consumer_pid": t.consumer_pid,
                "peer": t.peer,
                "agreement_id": t.agreement_id,
                "state": t.state,
                "bytes_served": t.bytes_served,
                "updated_at": t.updated_at,
                "reason": t.reason,
            })
        },
        |t: &DspTransferEntry| {
            let changed = time::OffsetDateTime::from_unix_timestamp(t.updated_at)
                .ok()
                .filter(|_| t.updated_at > 0)
                .and_then(|at| {
                    at.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_else(|| "-".to_owned());
            // The process ID this node names the transfer by comes first.
            let (id, other) = if t.role == "provider" {
                (&t.provider_pid, format!("consumer {}", esc(&t.peer)))
            } else {
                (&t.consumer_pid, format!("provider {}", esc(&t.peer)))
            };
            println!(
                "{}  {:<8} {:<10} {}  agreement {}  {} bytes served  changed {}{}",
                esc(id),
                esc(&t.role),
                esc(&t.state),
                other,
                esc(&t.agreement_id),
                t.bytes_served,
                changed,
                if t.reason.is_empty() {
                    String::new()
                } else {
                    format!("  ({})", esc(&t.reason))
                }
            );
        },
        fetch,
    )
    .await
}

fn progress_json(p: &TransferProgress) -> serde_json::Value {
    serde_json::json!({
        "agreement_id": p.agreement_id,
        "state": p.state,
        "chunks_received": p.chunks_received,
        "chunks_total": p.chunks_total,
        "bytes_received": p.bytes_received,
        "bytes_total": p.bytes_total,
        "product_id": p.product_id,
        "version": p.version,
        "sha256": p.sha256,
        "reason": p.reason,
    })
}
