//! Collecting a node's part of an evidence bundle over `liutong.v1.Audit`; the bundle
//! itself and its offline check are [`crate::audit::bundle`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use liutong_proto::v1::ProveInclusionRequest;

use super::{AuditorClient, rpc};
use crate::audit::auditor::VerifyError;
use crate::audit::bundle::{LogEvidence, ProvenEntry};
use crate::audit::search::SearchFilter;

impl AuditorClient {
    /// This node's evidence for `filter`: every matching entry, proven against one
    /// checkpoint.
    pub async fn collect_evidence(
        &mut self,
        filter: &SearchFilter,
    ) -> Result<LogEvidence, VerifyError> {
        let log = self.trusted_log().await?;
        let mut from = 0;
        let mut matches = Vec::new();
        let checkpoint = loop {
            let answer = self
                .raw()
                .search(filter.to_request(from))
                .await
                .map_err(rpc("searching"))?
                .into_inner();
            matches.extend(answer.matches);
            if answer.next_from == 0 {
                break answer.checkpoint;
            }
            // Each page must move forward, or a node could keep the auditor asking.
            if answer.next_from <= from {
                return Err(VerifyError::Proof {
                    what: "search answer".into(),
                    reason: format!(
                        "asked from entry {from}, it names the next page at {}, which is \
                         not after it",
                        answer.next_from
                    ),
                });
            }
            from = answer.next_from;
        };
        let checkpoint = checkpoint.ok_or_else(|| {
            VerifyError::RootMismatch("the search answer carried no checkpoint".into())
        })?;
        let mut entries = Vec::with_capacity(matches.len());
        for m in matches {
            // Pages searched before the log grew prove against an older size.
            let proof = if m.tree_size == checkpoint.size {
                m.proof
            } else {
                self.raw()
                    .prove_inclusion(ProveInclusionRequest {
                        index: m.leaf_index,
                        size: checkpoint.size,
                    })
                    .await
                    .map_err(rpc("proving inclusion"))?
                    .into_inner()
                    .proof
            };
            entries.push(ProvenEntry {
                index: m.leaf_index,
                event: serde_json::from_slice(&m.data).ok(),
                data: B64.encode(&m.data),
                proof: proof.iter().map(|h| B64.encode(h)).collect(),
            });
        }
        Ok(LogEvidence {
            origin: log.origin,
            log_key: log.log_key.to_string(),
            credential: log.credential,
            checkpoint: checkpoint.note,
            witness_credentials: checkpoint
                .witness_credentials
                .into_iter()
                .map(Into::into)
                .collect(),
            entries,
        })
    }
}
