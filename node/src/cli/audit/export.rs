//! `liutong audit export`: an evidence bundle gathered from this node and from the
//! other nodes involved, for an auditor to check offline.

use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::json;

use super::target::{FilterArgs, Target};
use crate::audit::bundle::{BUNDLE_VERSION, EvidenceBundle};
use crate::base::clock;
use crate::cli::output::print_json;
use crate::local::LocalRole;

/// Writes the evidence bundle of `filter` from this node and each of `peer` to `out`.
pub(super) async fn export(
    target: Target,
    filter: FilterArgs,
    peer: Vec<String>,
    out: PathBuf,
) -> anyhow::Result<()> {
    let filter = filter.filter()?;
    let mut logs = vec![
        target
            .client(LocalRole::Auditor)
            .await?
            .collect_evidence(&filter)
            .await?,
    ];
    for address in &peer {
        let peer_target = Target {
            config: target.config.clone(),
            node: Some(address.clone()),
            json: target.json,
        };
        let evidence = peer_target
            .client(LocalRole::Auditor)
            .await?
            .collect_evidence(&filter)
            .await
            .with_context(|| format!("collecting evidence from {address}"))?;
        logs.push(evidence);
    }
    let bundle = EvidenceBundle {
        version: BUNDLE_VERSION,
        created: clock::now(),
        filter,
        logs,
    };
    crate::base::files::write_public(&out, &serde_json::to_vec_pretty(&bundle)?)
        .with_context(|| format!("cannot write {}", out.display()))?;
    let entries: usize = bundle.logs.iter().map(|l| l.entries.len()).sum();
    if target.json {
        print_json(&json!({
            "out": out.display().to_string(),
            "logs": bundle.logs.iter().map(|l| &l.origin).collect::<Vec<_>>(),
            "entries": entries,
        }))
    } else {
        println!(
            "wrote {}: {} entries from {} logs; check it with: liutong audit verify --bundle {}",
            out.display(),
            entries,
            bundle.logs.len(),
            out.display()
        );
        Ok(())
    }
}
