//! Active/standby replicas on one PostgreSQL database (`[storage] replicas = true`).
//!
//! Leadership is fail-stop. A replica starts as a standby: it opens the database,
//! answers health checks with NOT_SERVING (so a load balancer or a Kubernetes Service
//! sends it nothing) and polls for the leadership lease. Once it holds the lease it
//! starts the node exactly as a single node starts, so everything the node keeps in
//! memory (caches, the audit log's head, waiting requests, locks) is built from the
//! database as the previous leader left it. The leader renews its lease; when the
//! lease is lost (a renewal refused or not confirmed before the lease runs out, or a
//! write fenced off by the database) it stops serving at once and the process exits
//! non-zero: its supervisor starts it again, as a standby. The database's fencing
//! ([`crate::storage::postgres`]) makes sure a deposed leader's late writes are
//! refused whatever this process believes about time.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::NodeConfig;
use crate::health::NodeHealth;
use crate::runtime::NodeError;
use crate::storage::{PgTarget, PostgresStorage, StorageError};

/// The exit status of a replica that lost the leadership.
pub const LOST_LEADERSHIP_EXIT: i32 = 75;

/// This process's leadership: the storage fenced by the lease, and the task keeping
/// the lease.
pub struct Leadership {
    pub storage: Arc<PostgresStorage>,
    keeper: JoinHandle<String>,
}

/// A name for this process in the lease row, for operators reading it: host, process
/// ID and a random part (a restarted process is another holder).
fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown-host".into());
    let random = crate::base::random::random_bytes::<4>()
        .map(hex::encode)
        .unwrap_or_default();
    format!("{host}/{}/{random}", std::process::id())
}

/// Runs as a standby until this process takes the leadership lease: opens the
/// database, answers health checks on `node.health_listen` with NOT_SERVING, and tries
/// the lease every renew interval. Returns once the lease is held, with the health
/// endpoint closed again (the node opens its own).
pub async fn stand_by(config: &NodeConfig) -> Result<Leadership, NodeError> {
    let db = config
        .storage
        .postgres(&config.base_dir)
        .map_err(NodeError::Config)?
        .ok_or_else(|| {
            NodeError::Config("[storage]: replicas = true needs engine = \"postgres\"".into())
        })?;
    let target = PgTarget::new(&db.url, db.password.as_deref())
        .map_err(|e| NodeError::Config(format!("[storage] url: {e}")))?;
    let place = target.place().to_owned();
    let storage = tokio::task::spawn_blocking(move || PostgresStorage::open(target))
        .await
        .map_err(|e| NodeError::Config(format!("cannot open the database: {e}")))??;
    let (lease, every) = (config.storage.lease(), config.storage.renew_interval());

    let health = NodeHealth::serving().await;
    health.set(tonic_health::ServingStatus::NotServing).await;
    let (stop_health, signal) = crate::base::shutdown::channel();
    let server = match config.node.health_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| NodeError::Listen {
                    addr,
                    what: "health endpoint",
                    key: "node.health_listen",
                    source,
                })?;
            Some(crate::health::serve(listener, &health, signal))
        }
        None => None,
    };
    let me = holder();
    println!(
        "liutong: standby ({me}): health NOT_SERVING; waiting for the leadership lease on {place}"
    );
    let mut complained = false;
    let taken = loop {
        let started = Instant::now();
        let (s, h) = (storage.clone(), me.clone());
        match tokio::task::spawn_blocking(move || s.acquire_lease(&h, lease)).await {
            Ok(Ok(Some(token))) => break (token, started),
            Ok(Ok(None)) => {}
            Ok(Err(e)) if !complained => {
                complained = true;
                tracing::warn!(error = %e, "cannot reach the database for the lease; retrying");
            }
            Ok(Err(_)) => {}
            Err(e) => return Err(NodeError::Config(format!("the lease task failed: {e}"))),
        }
        tokio::time::sleep(every).await;
    };
    stop_health.fire();
    if let Some(server) = server {
        let _ = server.await;
    }
    let (token, started) = taken;
    println!("liutong: took the leadership lease (token {token}); starting the node");
    let keeper = tokio::spawn(keep(storage.clone(), lease, every, started));
    Ok(Leadership { storage, keeper })
}

/// Renews the lease every `every` until it is lost; answers why. `held_since` is when
/// the last successful take or renewal was sent: the lease lasts at least `lease` from
/// then, by the database's clock, so past that without a confirmed renewal it is
/// counted lost.
async fn keep(
    storage: Arc<PostgresStorage>,
    lease: Duration,
    every: Duration,
    mut held_since: Instant,
) -> String {
    loop {
        tokio::time::sleep(every).await;
        let started = Instant::now();
        let s = storage.clone();
        let renewal = tokio::task::spawn_blocking(move || s.renew_lease(lease));
        match tokio::time::timeout_at(held_since + lease, renewal).await {
            Ok(Ok(Ok(true))) => held_since = started,
            Ok(Ok(Ok(false))) => {
                return "the leadership lease expired before it was renewed, or another \
                        replica took it"
                    .into();
            }
            Ok(Ok(Err(e))) if Instant::now() + every >= held_since + lease => {
                return format!("the leadership lease could not be renewed in time: {e}");
            }
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %e, "cannot renew the leadership lease; retrying")
            }
            Ok(Err(e)) => return format!("the lease task failed: {e}"),
            Err(_) => {
                return "the database did not confirm a renewal of the leadership lease \
                        before it ran out"
                    .into();
            }
        }
    }
}

impl Leadership {
    /// Waits until the leadership is lost, and answers why.
    pub async fn lost(&mut self) -> String {
        let mut refused = self.storage.lease_lost();
        tokio::select! {
            reason = &mut self.keeper => reason.unwrap_or_else(|e| format!("the lease task failed: {e}")),
            seen = refused.wait_for(Option::is_some) => match seen {
                Ok(reason) => reason.clone().unwrap_or_default(),
                Err(_) => "the database engine stopped".into(),
            },
        }
    }

    /// Gives the lease up after a graceful stop, so a standby takes over at once.
    pub async fn release(self) -> Result<(), StorageError> {
        self.keeper.abort();
        let s = self.storage;
        tokio::task::spawn_blocking(move || s.release_lease())
            .await
            .unwrap_or(Ok(()))
    }
}
