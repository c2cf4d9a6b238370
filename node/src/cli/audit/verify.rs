//! `liutong audit verify`: recomputing a node's log against its signed checkpoint,
//! checking an evidence bundle offline, or checking a checkpoint saved earlier.

use std::path::PathBuf;

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::json;

use super::target::Target;
use crate::audit::bundle::{EvidenceBundle, verify_bundle};
use crate::cli::output::print_json;
use crate::identity::PublicKey;
use crate::local::LocalRole;

/// `liutong audit verify [--bundle FILE]`.
pub(super) async fn verify(
    target: Target,
    bundle: Option<PathBuf>,
    authority_key: Option<String>,
) -> anyhow::Result<()> {
    if let Some(path) = bundle {
        let authority_key = match authority_key {
            Some(k) => PublicKey::from_base64(&k)?,
            None => target.load()?.authority.public_key,
        };
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let bundle: EvidenceBundle = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not an evidence bundle", path.display()))?;
        return match verify_bundle(&bundle, &authority_key) {
            Ok(report) => {
                if target.json {
                    print_json(&json!({
                        "ok": true,
                        "logs": report.logs.iter().map(|(origin, size, entries, cosigners)| json!({
                            "origin": origin, "checkpointSize": size, "entries": entries, "cosigners": cosigners,
                        })).collect::<Vec<_>>(),
                    }))
                } else {
                    for (origin, size, entries, cosigners) in &report.logs {
                        println!(
                            "OK  {origin}: {entries} entries proven in the checkpoint of size {size}, cosigned by {}",
                            if cosigners.is_empty() {
                                "no witness".to_owned()
                            } else {
                                cosigners.join(", ")
                            }
                        );
                    }
                    println!("the bundle verifies");
                    Ok(())
                }
            }
            Err(e) => fail(target.json, &e),
        };
    }
    if authority_key.is_some() {
        bail!("--authority-key is for --bundle; a live check uses the key in node.toml");
    }
    let mut client = target.client(LocalRole::Auditor).await?;
    match client.verify().await {
        Ok(r) => {
            let cp = &r.checkpoint;
            if target.json {
                print_json(&json!({
                    "ok": true,
                    "origin": r.origin,
                    "checkpointSize": cp.checkpoint.size,
                    "root": B64.encode(cp.checkpoint.root),
                    "entries": r.entries,
                    "logSize": r.log_size,
                    "headRoot": B64.encode(r.head_root),
                    "unsigned": r.unsigned(),
                    "consistentWith": {
                        "size": cp.checkpoint.size,
                        "root": B64.encode(cp.checkpoint.root),
                    },
                    "cosigners": cp.cosigners,
                    "quorum": cp.quorum,
                    "witnessed": cp.cosigners.len() as u32 >= cp.quorum,
                    "undecodable": r.undecodable,
                }))
            } else {
                println!(
                    "OK  {}: {} entries recomputed; root {} matches the signed checkpoint of size {}",
                    r.origin,
                    r.entries,
                    B64.encode(cp.checkpoint.root),
                    cp.checkpoint.size
                );
                println!(
                    "    cosigned by {} of quorum {}{}",
                    if cp.cosigners.is_empty() {
                        "no witness".to_owned()
                    } else {
                        cp.cosigners.join(", ")
                    },
                    cp.quorum,
                    if cp.cosigners.len() as u32 >= cp.quorum {
                        ""
                    } else {
                        " (NOT witnessed)"
                    }
                );
                if r.unsigned() == 0 {
                    println!(
                        "    head at size {}: the signed checkpoint covers every entry",
                        r.log_size
                    );
                } else {
                    println!(
                        "    head at size {} (root {}): {} entries after the checkpoint, not signed yet, consistent with the checkpoint of size {} ({})",
                        r.log_size,
                        B64.encode(r.head_root),
                        r.unsigned(),
                        cp.checkpoint.size,
                        B64.encode(cp.checkpoint.root)
                    );
                }
                if !r.undecodable.is_empty() {
                    println!(
                        "    entries that are not events of this software: {:?}",
                        r.undecodable
                    );
                }
                Ok(())
            }
        }
        Err(e) => fail(target.json, &e),
    }
}

fn fail(json: bool, e: &crate::audit::auditor::VerifyError) -> anyhow::Result<()> {
    if json {
        print_json(&json!({
            "ok": false,
            "error": e.to_string(),
            "badEntry": e.bad_entry(),
        }))?;
    }
    Err(anyhow!("audit check FAILED: {e}"))
}

/// `liutong audit verify --checkpoint FILE`.
pub(super) async fn verify_saved(target: Target, path: &std::path::Path) -> anyhow::Result<()> {
    let note = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the checkpoint {}", path.display()))?;
    let report = target
        .client(LocalRole::Auditor)
        .await?
        .verify_saved(&note)
        .await
        .map_err(|e| anyhow!("audit check FAILED: {e}"))?;
    let c = &report.checkpoint;
    if target.json {
        return print_json(&json!({
            "ok": true,
            "origin": c.origin,
            "size": c.size,
            "root": B64.encode(c.root),
            "signedBy": report.signed_by.to_string(),
            "byPreviousKey": report.by_previous_key,
            "latestSize": report.latest.checkpoint.size,
        }));
    }
    println!(
        "OK  {}: the checkpoint of size {} is signed by {}{}",
        c.origin,
        c.size,
        report.signed_by,
        if report.by_previous_key {
            " (an earlier key of this node, vouched for by the authority)"
        } else {
            ""
        }
    );
    println!(
        "    the log today (checkpoint of size {}) is consistent with it",
        report.latest.checkpoint.size
    );
    Ok(())
}
