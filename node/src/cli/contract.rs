//! `liutong contract …`: negotiating agreements with providers, and approving the
//! requests that wait for a person.

use clap::Subcommand;
use liutong_proto::v1::{
    ApproveContractRequest, Contract, GetContractRequest, ListContractsRequest,
    ListRevocationsRequest, RejectContractRequest, RequestContractRequest, RevocationStatus,
    RevokeRequest,
};

use super::local_node::LocalArgs;
use super::output::{esc, pages_from, print_json, print_pages, status_error};
use crate::base::format::format_unix;
use crate::contract::NegotiationStatus;

#[derive(Subcommand, Debug)]
pub enum ContractCommand {
    /// Ask a provider for an agreement on one of its offers, for a declared purpose.
    Request {
        /// The provider: its peer API's host:port, or its Dataspace Protocol endpoint
        /// (https://host:port), which needs this node's own [dsp] listener on (the
        /// provider answers there).
        #[arg(long)]
        peer: String,
        /// The offer ID from `liutong catalog --peer`.
        #[arg(long)]
        offer: String,
        /// The purpose, a term of the purpose vocabulary (e.g. urbanPlanning,
        /// scientificResearch, statistics).
        #[arg(long)]
        purpose: String,
        #[command(flatten)]
        local: LocalArgs,
        #[arg(long)]
        json: bool,
    },
    /// List the negotiations this node takes part in.
    List {
        #[command(flatten)]
        local: LocalArgs,
        #[arg(long)]
        json: bool,
    },
    /// Show one negotiation (by negotiation or agreement ID), with its agreement.
    Show {
        id: String,
        #[command(flatten)]
        local: LocalArgs,
        #[arg(long)]
        json: bool,
    },
    /// Approve a request that waits for a person (important data). Provider side.
    Approve {
        id: String,
        #[command(flatten)]
        local: LocalArgs,
    },
    /// Reject a request that waits for a person. Provider side.
    Reject {
        id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        local: LocalArgs,
    },
    /// End a negotiation with a Dataspace Protocol provider in any state that is not
    /// final, and tell the provider. Consumer side.
    ///
    /// Only negotiations requested with `--peer https://…`: the Liutong peer API has no
    /// termination message (a provider ends a request there with `reject`).
    Terminate {
        id: String,
        /// Why; the provider records it.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        local: LocalArgs,
    },
    /// Revoke an agreement (by agreement or negotiation ID). Provider side.
    ///
    /// Transfers under it are refused at once. The consumer's node learns of it when it
    /// next asks (at once after it starts, then every usage.check_interval), deletes its
    /// copy, refuses further reads and returns a signed deletion receipt;
    /// `liutong contract revocations` shows when it arrived.
    Revoke {
        id: String,
        /// Why; the consumer's node records it and shows it to its applications.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        local: LocalArgs,
        #[arg(long)]
        json: bool,
    },
    /// List the agreements this node revoked, with the consumers' deletion receipts.
    Revocations {
        #[command(flatten)]
        local: LocalArgs,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: ContractCommand) -> anyhow::Result<()> {
    match cmd {
        ContractCommand::Request {
            peer,
            offer,
            purpose,
            local,
            json,
        } => {
            let c = local
                .admin()
                .await?
                .request_contract(RequestContractRequest {
                    peer,
                    offer_id: offer,
                    purpose,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print_contract(&c, json, false)?;
            if NegotiationStatus::parse(&c.state) == Ok(NegotiationStatus::Requested) && !json {
                println!(
                    "the provider must approve this request; this node finalizes it on its \
                     own once approved (see `liutong contract show {}`)",
                    esc(&c.negotiation_id)
                );
            }
            Ok(())
        }
        ContractCommand::List { local, json } => {
            let admin = local.admin().await?;
            let fetch = pages_from(
                &admin,
                |mut admin, page_token| async move {
                    admin
                        .list_contracts(ListContractsRequest {
                            page_size: 0,
                            page_token,
                        })
                        .await
                },
                |page| (page.contracts, page.next_page_token),
            );
            print_pages(
                json,
                "no negotiations yet",
                contract_json,
                |c: &Contract| {
                    println!(
                        "{}  {:<10} {:<8} peer {}  offer {}  purpose {}{}",
                        esc(&c.negotiation_id),
                        esc(&c.state),
                        esc(&c.role),
                        esc(&c.peer),
                        esc(&c.offer_id),
                        esc(&c.purpose),
                        if c.agreement_id.is_empty() {
                            String::new()
                        } else {
                            format!("  agreement {}", esc(&c.agreement_id))
                        }
                    );
                },
                fetch,
            )
            .await
        }
        ContractCommand::Show { id, local, json } => {
            let c = local
                .admin()
                .await?
                .get_contract(GetContractRequest { negotiation_id: id })
                .await
                .map_err(status_error)?
                .into_inner();
            print_contract(&c, json, true)
        }
        ContractCommand::Approve { id, local } => {
            let c = local
                .admin()
                .await?
                .approve_contract(ApproveContractRequest { negotiation_id: id })
                .await
                .map_err(status_error)?
                .into_inner();
            print_contract(&c, false, false)
        }
        ContractCommand::Reject { id, reason, local } => {
            let c = local
                .admin()
                .await?
                .reject_contract(RejectContractRequest {
                    negotiation_id: id,
                    reason,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print_contract(&c, false, false)
        }
        ContractCommand::Terminate { id, reason, local } => {
            let c = local
                .admin()
                .await?
                .terminate_contract(liutong_proto::v1::TerminateContractRequest {
                    negotiation_id: id,
                    reason,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print_contract(&c, false, false)
        }
        ContractCommand::Revoke {
            id,
            reason,
            local,
            json,
        } => {
            let r = super::data::usage_client(&local)
                .await?
                .revoke(RevokeRequest {
                    agreement_id: id,
                    reason,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                print_json(&revocation_json(&r))?;
            } else {
                println!(
                    "agreement {} REVOKED: {}\n  transfers are refused; consumer {}'s node \
                     deletes its copy and returns a signed deletion receipt when it next \
                     asks (see `liutong contract revocations`)",
                    esc(&r.agreement_id),
                    esc(&r.reason),
                    esc(&r.consumer)
                );
            }
            Ok(())
        }
        ContractCommand::Revocations { local, json } => {
            let usage = super::data::usage_client(&local).await?;
            let fetch = pages_from(
                &usage,
                |mut usage, page_token| async move {
                    usage
                        .list_revocations(ListRevocationsRequest {
                            page_size: 0,
                            page_token,
                        })
                        .await
                },
                |page| (page.revocations, page.next_page_token),
            );
            let line = |r: &RevocationStatus| {
                println!(
                    "{}  consumer {}  revoked {}: {}\n    {}",
                    esc(&r.agreement_id),
                    esc(&r.consumer),
                    format_unix(r.revoked_at_unix),
                    esc(&r.reason),
                    if r.deletion_receipt_json.is_empty() {
                        "waiting for the consumer's deletion receipt".to_owned()
                    } else {
                        format!(
                            "signed deletion receipt: copy deleted at {}",
                            format_unix(r.deleted_at_unix)
                        )
                    }
                );
            };
            print_pages(json, "no revoked agreements", revocation_json, line, fetch).await
        }
    }
}

fn revocation_json(r: &RevocationStatus) -> serde_json::Value {
    let envelope =
        |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "agreement_id": r.agreement_id,
        "consumer": r.consumer,
        "reason": r.reason,
        "revoked_at": r.revoked_at_unix,
        "revocation": envelope(&r.revocation_json),
        "deletion_receipt": envelope(&r.deletion_receipt_json),
        "deleted_at": r.deleted_at_unix,
    })
}

fn print_contract(c: &Contract, json: bool, with_agreement: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&contract_json(c));
    }
    println!(
        "negotiation {}  {}  ({} side)",
        esc(&c.negotiation_id),
        esc(&c.state),
        esc(&c.role)
    );
    println!(
        "  peer {}  offer {}  purpose {}",
        esc(&c.peer),
        esc(&c.offer_id),
        esc(&c.purpose)
    );
    if !c.reason.is_empty() {
        println!("  {}", esc(&c.reason));
    }
    for f in &c.failed_constraints {
        println!("  failed: {}", esc(f));
    }
    if !c.agreement_id.is_empty() {
        println!("  agreement {}", esc(&c.agreement_id));
    }
    if with_agreement
        && !c.agreement_json.is_empty()
        && let Ok(env) = serde_json::from_str::<crate::identity::Envelope>(&c.agreement_json)
        && let Ok(content) = env.peek_json::<serde_json::Value>()
    {
        println!("  signatures: {}", env.signatures.len());
        print_json(&content)?;
    }
    Ok(())
}

fn contract_json(c: &Contract) -> serde_json::Value {
    serde_json::json!({
        "negotiation_id": c.negotiation_id,
        "role": c.role,
        "peer": c.peer,
        "peer_address": c.peer_address,
        "offer_id": c.offer_id,
        "purpose": c.purpose,
        "state": c.state,
        "reason": c.reason,
        "failed_constraints": c.failed_constraints,
        "agreement_id": c.agreement_id,
        "agreement": serde_json::from_str::<serde_json::Value>(&c.agreement_json).unwrap_or(serde_json::Value::Null),
        "created_at": c.created_at_unix,
        "updated_at": c.updated_at_unix,
    })
}
