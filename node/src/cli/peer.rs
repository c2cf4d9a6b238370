//! `liutong trust …` and `liutong peer …`: the node's trust list and its view of other
//! members, and the JSON and text forms of a participant and a trust list that
//! `status` shares.

use clap::Subcommand;
use liutong_proto::v1::{
    DescribePeerRequest, DescribeResponse, Participant, RefreshTrustListRequest, TrustListStatus,
};

use super::local_node::LocalArgs;
use super::output::{esc, print_json, status_error};
use crate::base::format::format_unix;

#[derive(Subcommand, Debug)]
pub enum TrustCommand {
    /// Fetch the trust list from the authority now.
    Refresh {
        #[command(flatten)]
        local: LocalArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum PeerCommand {
    /// Ask a peer who it is, and who it sees us as (over mutual TLS, via this node).
    Describe {
        /// The peer's host:port.
        address: String,
        #[command(flatten)]
        local: LocalArgs,
        #[arg(long)]
        json: bool,
    },
}

/// Runs `liutong trust …`.
pub async fn trust(cmd: TrustCommand) -> anyhow::Result<()> {
    let TrustCommand::Refresh { local } = cmd;
    let answer = local
        .admin()
        .await?
        .refresh_trust_list(RefreshTrustListRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    let t = answer.trust_list.unwrap_or_default();
    println!(
        "trust list {} applied: {} members, {} revocations, valid until {}",
        t.sequence,
        t.members,
        t.revocations,
        format_unix(t.expires_at_unix)
    );
    Ok(())
}

/// Runs `liutong peer …`.
pub async fn peer(cmd: PeerCommand) -> anyhow::Result<()> {
    let PeerCommand::Describe {
        address,
        local,
        json,
    } = cmd;
    let answer = local
        .admin()
        .await?
        .describe_peer(DescribePeerRequest { address })
        .await
        .map_err(status_error)?
        .into_inner();
    print_describe(&answer, json)
}

pub(super) fn participant_json(p: &Participant) -> serde_json::Value {
    serde_json::json!({
        "participant_id": p.participant_id,
        "name": p.name,
        "kind": p.kind,
        "sector": p.sector,
        "region": p.region,
        "roles": p.roles,
        "valid_from": p.valid_from_unix,
        "valid_until": p.valid_until_unix,
    })
}

pub(super) fn trust_json(t: &TrustListStatus) -> serde_json::Value {
    serde_json::json!({
        "sequence": t.sequence,
        "issued_at": t.issued_at_unix,
        "expires_at": t.expires_at_unix,
        "applied_at": t.applied_at_unix,
        "members": t.members,
        "revocations": t.revocations,
        "last_error": t.last_error,
        "authority_address": t.authority_address,
    })
}

fn print_describe(d: &DescribeResponse, json: bool) -> anyhow::Result<()> {
    let node = d.node.clone().unwrap_or_default();
    let caller = d.caller.clone().unwrap_or_default();
    if json {
        return print_json(&serde_json::json!({
            "node": participant_json(&node),
            "caller": participant_json(&caller),
            "trust_list_sequence": d.trust_list_sequence,
            "software_version": d.software_version,
        }));
    }
    println!(
        "peer        {} ({})",
        esc(&node.name),
        esc(&node.participant_id)
    );
    println!(
        "            {} · {} · region {} · roles {}",
        esc(&node.kind),
        esc(&node.sector),
        esc(&node.region),
        esc(&node.roles.join(","))
    );
    println!(
        "sees us as  {} ({})",
        esc(&caller.name),
        esc(&caller.participant_id)
    );
    println!(
        "its trust list sequence {} · version {}",
        d.trust_list_sequence,
        esc(&d.software_version)
    );
    Ok(())
}
