//! `liutong audit …`: what an auditor (or an operator) does with a node's audit log.
//!
//! Each command talks to the local node named by `--config` (local API, client
//! certificate of the role `auditor`; `checkpoint --new` uses `admin`), or with
//! `--node ADDR` to another member's node over the peer API, presenting this node's
//! identity. Keys are never taken on the node's word: the log key comes from the node's
//! credential, checked against the authority key pinned in node.toml.

mod export;
mod target;
mod verify;

use std::path::PathBuf;

use anyhow::bail;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use clap::Subcommand;
use liutong_proto::v1::{
    GetCheckpointRequest, GetEntriesRequest, GetVerifierKeyRequest, NewCheckpointRequest,
    ProveConsistencyRequest, ProveInclusionRequest,
};
use serde_json::json;

use super::output::{print_json, status_error};
use crate::audit::auditor::decode;
use crate::local::LocalRole;
use target::{FilterArgs, Target};

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Print the log's verifier key: name+hex(key_id)+base64(0x01 ‖ public key).
    Vkey {
        #[command(flatten)]
        target: Target,
    },
    /// Print the latest signed checkpoint exactly, cosignatures included.
    Checkpoint {
        #[command(flatten)]
        target: Target,
        /// Sign a new checkpoint now and ask the witnesses to cosign it (local admin).
        #[arg(long, conflicts_with = "node")]
        new: bool,
    },
    /// Print entries FROM to TO (both included): index, base64 of the exact bytes, and
    /// the decoded event.
    Entries {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        from: u64,
        #[arg(long)]
        to: u64,
    },
    /// Print the RFC 9162 inclusion proof of one entry.
    Prove {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        index: u64,
        /// Tree size to prove against [default: the latest checkpoint's].
        #[arg(long)]
        size: Option<u64>,
    },
    /// Print the RFC 9162 consistency proof between two tree sizes.
    Consistency {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        from: u64,
        /// [default: the latest checkpoint's size]
        #[arg(long)]
        to: Option<u64>,
    },
    /// Print the entries about a product, an agreement or a participant, with proofs.
    Search {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Fetch the whole log, up to its head, and recompute it: tree, checkpoint
    /// signature, cosignatures, proofs. The latest signed checkpoint must match the tree
    /// at its size, and the entries after it (not signed yet) must extend it: the head
    /// is proven consistent with that checkpoint. Exits non-zero on any mismatch and
    /// names the first bad entry. With --bundle, check an evidence bundle offline
    /// instead.
    Verify {
        #[command(flatten)]
        target: Target,
        /// An evidence bundle written by `liutong audit export`.
        #[arg(long)]
        bundle: Option<PathBuf>,
        /// The authority's Ed25519 public key (base64) [default: from node.toml].
        #[arg(long)]
        authority_key: Option<String>,
        /// Instead, check a checkpoint saved earlier (a signed note, e.g. the output of
        /// `liutong audit checkpoint`): signed by the node's current key or an earlier one
        /// (key rotation), and consistent with the node's log today.
        #[arg(long, conflicts_with = "bundle")]
        checkpoint: Option<PathBuf>,
    },
    /// Write an evidence bundle: matching entries, proofs, checkpoints, cosignatures and
    /// credentials from this node and from each --peer.
    Export {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        filter: FilterArgs,
        /// Another node involved (host:port of its peer API); repeat for more.
        #[arg(long)]
        peer: Vec<String>,
        #[arg(long)]
        out: PathBuf,
    },
}

fn b64s(hashes: &[Vec<u8>]) -> Vec<String> {
    hashes.iter().map(|h| B64.encode(h)).collect()
}

fn event_json(data: &[u8]) -> serde_json::Value {
    decode(data)
        .and_then(|e| serde_json::to_value(e).ok())
        .unwrap_or(serde_json::Value::Null)
}

fn event_text(data: &[u8]) -> String {
    match decode(data) {
        Some(e) => {
            let mut s = format!(
                "{} {}",
                crate::base::format::format_unix(e.time),
                serde_json::to_value(e.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            );
            for (label, value) in [
                ("participant", &e.participant),
                ("product", &e.product),
                ("agreement", &e.agreement),
            ] {
                if let Some(v) = value {
                    s.push_str(&format!(" {label}={v}"));
                }
            }
            s.push_str(&format!(": {}", e.detail));
            // One line, whatever a peer put into the fields it quotes.
            crate::base::bounded::escape(&s).into_owned()
        }
        None => "(not an event of this software)".into(),
    }
}

/// Runs `liutong audit …`.
pub async fn run(cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Vkey { target } => {
            let mut client = target.client(LocalRole::Auditor).await?;
            let log = client.trusted_log().await?;
            let answer = client
                .raw()
                .get_verifier_key(GetVerifierKeyRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            let previous = client.previous_log_keys(&log).await?;
            if target.json {
                print_json(&json!({
                    "origin": log.origin,
                    "logKey": log.log_key.to_string(),
                    "witnessKey": answer.witness_key,
                    "participant": log.membership.participant_id.to_string(),
                    "previousLogKeys": previous.iter().map(ToString::to_string).collect::<Vec<_>>(),
                }))
            } else {
                println!("{}", log.log_key);
                // Earlier keys (key rotations) on further lines, oldest first.
                for key in previous {
                    println!("previous {key}");
                }
                Ok(())
            }
        }
        AuditCommand::Checkpoint { target, new } => {
            let role = if new {
                LocalRole::Admin
            } else {
                LocalRole::Auditor
            };
            let mut client = target.client(role).await?;
            let answer = if new {
                client.raw().new_checkpoint(NewCheckpointRequest {}).await
            } else {
                client.raw().get_checkpoint(GetCheckpointRequest {}).await
            }
            .map_err(status_error)?
            .into_inner();
            if target.json {
                print_json(&json!({
                    "note": answer.note,
                    "size": answer.size,
                    "root": B64.encode(&answer.root),
                    "cosignatures": answer.cosignatures,
                    "quorum": answer.quorum,
                    "witnessed": answer.witnessed,
                    "logSize": answer.log_size,
                }))
            } else {
                print!("{}", answer.note);
                Ok(())
            }
        }
        AuditCommand::Entries { target, from, to } => {
            if to < from {
                bail!("--to {to} is before --from {from}");
            }
            let mut client = target.client(LocalRole::Auditor).await?;
            let mut next = from;
            let mut all = Vec::new();
            while next <= to {
                let answer = client
                    .raw()
                    .get_entries(GetEntriesRequest { from: next, to })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                let Some(last) = answer.entries.last().map(|e| e.index) else {
                    break;
                };
                for e in answer.entries {
                    if target.json {
                        all.push(json!({
                            "index": e.index,
                            "data": B64.encode(&e.data),
                            "event": event_json(&e.data),
                        }));
                    } else {
                        println!("{}\t{}", e.index, B64.encode(&e.data));
                        println!("\t{}", event_text(&e.data));
                    }
                }
                if last >= to || last + 1 >= answer.log_size {
                    break;
                }
                next = last + 1;
            }
            if target.json {
                print_json(&serde_json::Value::Array(all))?;
            }
            Ok(())
        }
        AuditCommand::Prove {
            target,
            index,
            size,
        } => {
            let mut client = target.client(LocalRole::Auditor).await?;
            let p = client
                .raw()
                .prove_inclusion(ProveInclusionRequest {
                    index,
                    size: size.unwrap_or(0),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let value = json!({
                "leafIdx": p.leaf_index,
                "treeSize": p.tree_size,
                "root": B64.encode(&p.root),
                "leafHash": B64.encode(&p.leaf_hash),
                "proof": b64s(&p.proof),
            });
            if target.json {
                print_json(&value)
            } else {
                println!(
                    "entry {} in the tree of {} entries",
                    p.leaf_index, p.tree_size
                );
                println!("root      {}", B64.encode(&p.root));
                println!("leaf hash {}", B64.encode(&p.leaf_hash));
                for h in b64s(&p.proof) {
                    println!("proof     {h}");
                }
                Ok(())
            }
        }
        AuditCommand::Consistency { target, from, to } => {
            let mut client = target.client(LocalRole::Auditor).await?;
            let p = client
                .raw()
                .prove_consistency(ProveConsistencyRequest {
                    size1: from,
                    size2: to.unwrap_or(0),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if target.json {
                print_json(&json!({
                    "size1": p.size1,
                    "size2": p.size2,
                    "root1": B64.encode(&p.root1),
                    "root2": B64.encode(&p.root2),
                    "proof": b64s(&p.proof),
                }))
            } else {
                println!("from size {} ({})", p.size1, B64.encode(&p.root1));
                println!("to size   {} ({})", p.size2, B64.encode(&p.root2));
                for h in b64s(&p.proof) {
                    println!("proof     {h}");
                }
                Ok(())
            }
        }
        AuditCommand::Search { target, filter } => {
            let filter = filter.filter()?;
            let mut client = target.client(LocalRole::Auditor).await?;
            let evidence = client.collect_evidence(&filter).await?;
            if target.json {
                return print_json(&serde_json::to_value(&evidence)?);
            }
            print!("{}", evidence.checkpoint);
            println!();
            println!("{} matching entries", evidence.entries.len());
            for e in &evidence.entries {
                let data = B64.decode(&e.data).unwrap_or_default();
                println!("{}\t{}", e.index, e.data);
                println!("\t{}", event_text(&data));
                println!("\tproof {}", e.proof.join(" "));
            }
            Ok(())
        }
        AuditCommand::Verify {
            target,
            checkpoint: Some(path),
            ..
        } => verify::verify_saved(target, &path).await,
        AuditCommand::Verify {
            target,
            bundle,
            authority_key,
            checkpoint: None,
        } => verify::verify(target, bundle, authority_key).await,
        AuditCommand::Export {
            target,
            filter,
            peer,
            out,
        } => export::export(target, filter, peer, out).await,
    }
}
