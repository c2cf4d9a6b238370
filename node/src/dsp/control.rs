//! The operator's commands on this node's DSP transfers, for the local API: suspend,
//! restart or terminate one, as provider ([`super::transfer`]) or as consumer
//! ([`super::pull`]), told apart by the process ID given, and the listing of both.

use super::transfer::{
    ActionError, DspTransfer, ProviderAction, RECORDS, provider_action, served,
    terminate_for_agreement,
};
use crate::audit::log::AuditLog;
use crate::storage::Storage;

/// The provider's commands, for the local API.
pub struct Control {
    pub storage: std::sync::Arc<dyn Storage>,
    pub contracts: std::sync::Arc<crate::contract::Contracts>,
    pub audit: AuditLog,
}

impl crate::transfer::ProviderControl for Control {
    fn control(
        &self,
        pid: String,
        action: ProviderAction,
        reason: String,
    ) -> crate::base::BoxFuture<'static, Result<crate::transfer::ControlledTransfer, ActionError>>
    {
        let (storage, contracts, log) = (
            self.storage.clone(),
            self.contracts.clone(),
            self.audit.clone(),
        );
        Box::pin(async move {
            // The ID names this node's transfer as provider (its providerPid) or as
            // consumer (its consumerPid); the two are drawn apart, so never both.
            let provides = storage
                .get(RECORDS, pid.as_bytes())
                .map_err(|e| ActionError::Unavailable(e.to_string()))?
                .is_some();
            if !provides {
                let consumed = super::pull::consumer_action(
                    storage.as_ref(),
                    &contracts,
                    &log,
                    &pid,
                    action,
                    &reason,
                )
                .await?;
                let r = consumed
                    .ok_or_else(|| ActionError::Unknown(crate::base::bounded::shown(&pid, 128)))?;
                return Ok(crate::transfer::ControlledTransfer {
                    role: crate::contract::Role::Consumer,
                    provider_pid: r.provider_pid.unwrap_or_default(),
                    consumer_pid: r.consumer_pid,
                    consumer: String::new(),
                    provider: r.provider,
                    agreement_id: r.agreement_id,
                    state: r.state.as_str().to_owned(),
                });
            }
            let r =
                provider_action(storage.as_ref(), &contracts, &log, &pid, action, &reason).await?;
            Ok(crate::transfer::ControlledTransfer {
                role: crate::contract::Role::Provider,
                provider_pid: r.provider_pid,
                consumer_pid: r.consumer_pid,
                consumer: r.consumer,
                provider: String::new(),
                agreement_id: r.agreement_id,
                state: r.state.as_str().to_owned(),
            })
        })
    }

    fn list(
        &self,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<crate::storage::Page<crate::transfer::DspTransferEntry>, ActionError> {
        list(self.storage.as_ref(), after, limit)
    }

    fn end_for_agreement(
        &self,
        agreement_id: String,
        reason: String,
    ) -> crate::base::BoxFuture<'static, Result<usize, ActionError>> {
        let (storage, contracts, log) = (
            self.storage.clone(),
            self.contracts.clone(),
            self.audit.clone(),
        );
        Box::pin(async move {
            terminate_for_agreement(storage.as_ref(), &contracts, &log, &agreement_id, &reason)
                .await
        })
    }
}

/// The listing's position prefixes: this node's transfers as provider, then as
/// consumer.
const PROVIDED: &[u8] = b"p/";
const PULLED: &[u8] = b"c/";

/// One page of this node's DSP transfers, provided ones first (by providerPid), then
/// pulled ones (by consumerPid), after position `after` (a page's `next`).
pub fn list(
    storage: &dyn Storage,
    after: Option<Vec<u8>>,
    limit: usize,
) -> Result<crate::storage::Page<crate::transfer::DspTransferEntry>, ActionError> {
    use crate::contract::Role;
    use crate::storage::{Page, page_where};
    let limit = limit.max(1);
    let failed = |e: crate::storage::StorageError| ActionError::Unavailable(e.to_string());
    let pulled_after = match after.as_deref() {
        Some(a) if a.starts_with(PULLED) => Some(a[PULLED.len()..].to_vec()),
        _ => None,
    };
    let mut items = Vec::new();
    if !after.as_deref().is_some_and(|a| a.starts_with(PULLED)) {
        let from = after
            .as_deref()
            .and_then(|a| a.strip_prefix(PROVIDED))
            .map(<[u8]>::to_vec);
        let page = page_where(storage, RECORDS, b"", from.as_deref(), limit, |k, v| {
            let Ok(r) = serde_json::from_slice::<DspTransfer>(v) else {
                return Ok::<_, crate::storage::StorageError>(None);
            };
            Ok(Some(crate::transfer::DspTransferEntry {
                role: Role::Provider,
                bytes_served: served(storage, &String::from_utf8_lossy(k)),
                reason: r.notice.clone().unwrap_or_default(),
                provider_pid: r.provider_pid,
                consumer_pid: r.consumer_pid,
                peer: r.consumer,
                agreement_id: r.agreement_id,
                state: r.state.as_str().to_owned(),
                updated_at: r.updated_at,
            }))
        })
        .map_err(failed)?;
        items = page.items;
        if let Some(next) = page.next {
            return Ok(Page {
                items,
                next: Some([PROVIDED, &next].concat()),
            });
        }
    }
    let room = limit - items.len();
    if room == 0 {
        // Full with the last provided one: the next page is the pulled ones, if any.
        let any = !storage
            .scan_page(super::pull::RECORDS, b"", None, 1)
            .map_err(failed)?
            .is_empty();
        return Ok(Page {
            items,
            next: any.then(|| PULLED.to_vec()),
        });
    }
    let page = page_where(
        storage,
        super::pull::RECORDS,
        b"",
        pulled_after.as_deref().filter(|a| !a.is_empty()),
        room,
        |_, v| {
            let Ok(r) = serde_json::from_slice::<super::pull::ConsumerTransfer>(v) else {
                return Ok::<_, crate::storage::StorageError>(None);
            };
            Ok(Some(crate::transfer::DspTransferEntry {
                role: Role::Consumer,
                provider_pid: r.provider_pid.unwrap_or_default(),
                consumer_pid: r.consumer_pid,
                peer: r.provider,
                agreement_id: r.agreement_id,
                state: r.state.as_str().to_owned(),
                bytes_served: 0,
                updated_at: r.updated_at,
                reason: r.reason,
            }))
        },
    )
    .map_err(failed)?;
    items.extend(page.items);
    Ok(Page {
        items,
        next: page.next.map(|n| [PULLED, &n].concat()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_listing_pages_through_both_roles_once_each() {
        let storage = crate::storage::SledStorage::temporary().unwrap();
        for pid in ["tp-a", "tp-b", "tp-c"] {
            let record = json!({
                "provider_pid": pid, "consumer_pid": format!("urn:c:{pid}"),
                "consumer": "11330000MA2ECE0015", "agreement_id": "agr-1",
                "callback": "https://c.example/callback", "state": "STARTED",
                "token_sha256": null, "token_expires": 0, "attempts": 0, "next_attempt": 0,
            });
            storage
                .put(RECORDS, pid.as_bytes(), record.to_string().as_bytes())
                .unwrap();
        }
        super::super::transfer::count_served(storage.as_ref(), "tp-b", 10);
        super::super::transfer::count_served(storage.as_ref(), "tp-b", 5);
        for pid in ["urn:x:1", "urn:x:2"] {
            let record = json!({
                "consumer_pid": pid, "provider_pid": "tp-z", "provider": "11330100MA2TRA0011",
                "agreement_id": "agr-2", "peer_url": "https://p.example", "state": "SUSPENDED",
                "endpoint": null, "token": null, "token_expires": 0, "reason": "",
            });
            storage
                .put(
                    super::super::pull::RECORDS,
                    pid.as_bytes(),
                    record.to_string().as_bytes(),
                )
                .unwrap();
        }
        let expected = ["tp-a", "tp-b", "tp-c", "urn:x:1", "urn:x:2"];
        for limit in 1..=6 {
            let mut seen = Vec::new();
            let mut after = None;
            for _ in 0..10 {
                let page = list(storage.as_ref(), after.take(), limit).unwrap();
                assert!(page.items.len() <= limit);
                for t in &page.items {
                    let id = match t.role {
                        crate::contract::Role::Provider => t.provider_pid.clone(),
                        crate::contract::Role::Consumer => t.consumer_pid.clone(),
                    };
                    if id == "tp-b" {
                        assert_eq!(t.bytes_served, 15);
                    }
                    seen.push(id);
                }
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            assert_eq!(seen, expected, "pages of {limit}");
        }
    }
}
