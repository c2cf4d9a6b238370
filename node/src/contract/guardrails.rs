//! The classification guardrails (GB/T 43697-2024), checked once more when the provider
//! signs an agreement, independently of the product's policy: core data gets no
//! agreement at all; important data only with a person's approval and a consumer whose
//! region (from its authority-signed membership) lies inside the node's
//! `guardrails.important_regions`. Publishing already refuses a policy that grants more
//! than this (see `liutong_policy::compile`); this check also covers guardrails that
//! were narrowed after a product was published.

use liutong_policy::Classification;

use super::contracts::Contracts;
use crate::base::clock::now;
use crate::identity::ParticipantId;

/// Whether the provider may sign an agreement on data of `classification` with
/// `consumer`; the error says which guardrail refuses it.
impl Contracts {
    pub fn check_guardrails(
        &self,
        consumer: &ParticipantId,
        classification: Classification,
        approved_by: Option<&str>,
    ) -> Result<(), String> {
        match classification {
            Classification::Core => {
                Err("core data never leaves the node, so no agreement can be made for it".into())
            }
            Classification::Important => {
                if approved_by.is_none_or(|a| a.trim().is_empty()) {
                    return Err(
                        "important data needs a person's approval for every agreement \
                     (liutong contract approve)"
                            .into(),
                    );
                }
                let member = self
                    .trust
                    .member(consumer, now())
                    .map_err(|e| format!("the consumer: {e}"))?;
                let permitted = self.guardrails.to_policy().important_regions;
                let region = member.region.code();
                if permitted.iter().any(|w| region.is_part_of(*w)) {
                    Ok(())
                } else {
                    let allowed: Vec<String> = permitted.iter().map(ToString::to_string).collect();
                    Err(format!(
                        "the consumer's region {} is outside the regions permitted for important \
                     data ({})",
                        member.region,
                        if allowed.is_empty() {
                            "none configured".to_owned()
                        } else {
                            allowed.join(", ")
                        }
                    ))
                }
            }
            _ => Ok(()),
        }
    }
}
