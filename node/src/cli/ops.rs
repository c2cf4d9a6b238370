//! Operating a node: `liutong status`, `backup`, `restore`, `key rotate`, `health`, and
//! the authority's side of a key rotation (`liutong authority rekey`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use clap::Subcommand;
use liutong_proto::v1::{BackupRequest, StatusRequest};
use tokio::io::AsyncWriteExt as _;

use super::local_node::{LocalArgs, load_config, local_channel};
use super::output::{esc, print_json, status_error};
use super::peer::{participant_json, trust_json};
use crate::authority::Authority;
use crate::backup;
use crate::base::format::format_unix;
use crate::config::NodeConfig;
use crate::identity::{Envelope, ParticipantId, PublicKey};
use crate::local::LocalRole;
use crate::rotation;

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Rotate this node's signing key, in two steps with the authority in between.
    ///
    /// Without --credential: create the new key (identity/signing.key.next, kept until
    /// installed) and print its public key for the authority, which runs `liutong
    /// authority rekey`. With --credential: stop the node first; the authority's new
    /// credential is checked and installed with the new key, and the old credential is
    /// kept in identity/key-history.json so checkpoints signed by the old key still
    /// verify. Then start the node.
    Rotate {
        /// The node's node.toml.
        #[arg(long, env = "LIUTONG_CONFIG")]
        config: Option<PathBuf>,
        /// The credential the authority issued for the new key (`authority rekey --out`).
        #[arg(long)]
        credential: Option<PathBuf>,
    },
}

/// `liutong status`.
pub async fn status(local: &LocalArgs, json: bool) -> anyhow::Result<()> {
    let s = local
        .admin()
        .await?
        .status(StatusRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    let node = s.node.clone().unwrap_or_default();
    let trust = s.trust_list.clone().unwrap_or_default();
    let witness = s.witness.unwrap_or_default();
    if json {
        let peers: Vec<_> = s
            .peers
            .iter()
            .map(|p| {
                serde_json::json!({
                    "participant_id": p.participant_id,
                    "name": p.name,
                    "negotiations": p.negotiations,
                    "witness": p.witness,
                })
            })
            .collect();
        let value = serde_json::json!({
            "health": s.health,
            "node": participant_json(&node),
            "caller_role": s.caller_role,
            "peer_listen": s.peer_listen,
            "admin_listen": s.admin_listen,
            "software_version": s.software_version,
            "uptime_seconds": s.uptime_seconds,
            "trust_list": trust_json(&trust),
            "trust_list_age_seconds": s.trust_list_age_seconds,
            "peers": peers,
            "audit_log_size": s.audit_log_size,
            "witness": {
                "checkpoint_size": witness.checkpoint_size,
                "cosignatures": witness.cosignatures,
                "quorum": witness.quorum,
                "witnessed": witness.witnessed,
                "lag": witness.lag,
                "logs_witnessed": witness.logs_witnessed,
                "conflicts": witness.conflicts,
            },
            "pending_approvals": s.pending_approvals,
            "database_bytes": s.database_bytes,
            "previous_signing_keys": s.previous_signing_keys,
        });
        return print_json(&value);
    }
    println!("health      {}", s.health);
    println!("node        {} ({})", node.name, node.participant_id);
    println!(
        "            {} · {} · region {} · roles {}",
        node.kind,
        node.sector,
        node.region,
        node.roles.join(",")
    );
    println!("peer API    {}", s.peer_listen);
    println!("local API   {} (you: {})", s.admin_listen, s.caller_role);
    if trust.sequence == 0 {
        println!(
            "trust list  NONE — the node refuses every peer until it reaches {}",
            trust.authority_address
        );
    } else {
        println!(
            "trust list  sequence {}, {} members, {} revocations, issued {} ago, valid until {}",
            trust.sequence,
            trust.members,
            trust.revocations,
            humantime::format_duration(Duration::from_secs(s.trust_list_age_seconds.max(0) as u64)),
            format_unix(trust.expires_at_unix)
        );
    }
    if !trust.last_error.is_empty() {
        println!(
            "            last refresh failed: {}",
            esc(&trust.last_error)
        );
    }
    println!("peers       {}", s.peers.len());
    for p in &s.peers {
        println!(
            "            {}  {}  {} negotiations{}",
            esc(&p.participant_id),
            esc(&p.name),
            p.negotiations,
            if p.witness { "  (cosigned)" } else { "" }
        );
    }
    println!(
        "audit log   {} entries; checkpoint at {} ({} behind), {} of quorum {} cosignatures{}",
        s.audit_log_size,
        witness.checkpoint_size,
        witness.lag,
        witness.cosignatures,
        witness.quorum,
        if witness.witnessed {
            ""
        } else {
            " — NOT witnessed"
        }
    );
    println!(
        "witness     of {} other logs; {} conflicts kept as evidence",
        witness.logs_witnessed, witness.conflicts
    );
    println!("approvals   {} waiting", s.pending_approvals);
    println!("database    {} bytes on disk", s.database_bytes);
    if !s.previous_signing_keys.is_empty() {
        println!(
            "old keys    {} (checkpoints they signed still verify)",
            s.previous_signing_keys.join(", ")
        );
    }
    println!(
        "version     {} · up {}",
        s.software_version,
        humantime::format_duration(Duration::from_secs(s.uptime_seconds.max(0) as u64))
    );
    Ok(())
}

/// `liutong backup --out FILE`: from the running node over the local API, or from the
/// stopped node's directory.
pub async fn backup(local: &LocalArgs, out: &Path) -> anyhow::Result<()> {
    let config = local.load()?;
    let partial = partial_path(out);
    let online = local_channel(&config, LocalRole::Admin).await;
    match online {
        Ok(channel) => {
            let mut stream = liutong_proto::v1::admin_client::AdminClient::new(channel)
                .backup(BackupRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            let file = backup::create_private(&partial)?;
            let mut file = tokio::fs::File::from_std(file);
            let received = async {
                while let Some(chunk) = stream.message().await.map_err(status_error)? {
                    file.write_all(&chunk.data)
                        .await
                        .with_context(|| format!("cannot write {}", partial.display()))?;
                }
                file.sync_all()
                    .await
                    .with_context(|| format!("cannot write {}", partial.display()))?;
                anyhow::Ok(())
            }
            .await;
            if let Err(e) = received {
                let _ = std::fs::remove_file(&partial);
                return Err(e);
            }
        }
        Err(_) => {
            // Not running (or not reachable): read its directory, if no node holds it.
            backup::backup_offline(&config, &partial)
                .await
                .map_err(|e| {
                    let _ = std::fs::remove_file(&partial);
                    anyhow!(
                        "the node does not answer on {} and its directory cannot be read \
                         directly: {e}",
                        config.node.admin_listen
                    )
                })?;
        }
    }
    // Check what arrived before it takes the place of an older backup.
    let check = partial.clone();
    let verified = tokio::task::spawn_blocking(move || backup::verify(&check))
        .await?
        .map_err(|e| {
            let _ = std::fs::remove_file(&partial);
            anyhow!("the backup received does not check out: {e}")
        })?;
    // Durable before the backup is reported written: a power cut must not leave the
    // operator with a name that points at nothing.
    crate::base::files::rename(&partial, out)
        .with_context(|| format!("cannot write {}", out.display()))?;
    let h = &verified.header;
    println!(
        "backup of {} ({}) written to {}: {} bytes, {} database entries in {} trees, {} \
         files, audit log of {} entries, taken {}",
        verified.name,
        h.participant,
        out.display(),
        verified.bytes,
        verified.summary.entries,
        verified.summary.trees,
        verified.summary.files,
        h.audit_log_size,
        format_unix(h.created_at)
    );
    println!("it holds the node's private keys: keep it as a secret");
    Ok(())
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".partial");
    out.with_file_name(name)
}

/// `liutong restore FILE --dir DIR`.
pub async fn restore(file: PathBuf, dir: PathBuf, force: bool) -> anyhow::Result<()> {
    let target = dir.clone();
    let report =
        tokio::task::spawn_blocking(move || backup::restore(&file, &target, force)).await??;
    let h = &report.backup.header;
    println!(
        "restored {} ({}) into {}: {} database entries, {} files, audit log of {} entries \
         as of {}",
        report.backup.name,
        h.participant,
        dir.display(),
        report.backup.summary.entries,
        report.backup.summary.files,
        h.audit_log_size,
        format_unix(h.created_at)
    );
    if let Some(aside) = &report.replaced {
        println!(
            "the directory's earlier contents are in {}",
            aside.display()
        );
    }
    println!(
        "start the node with: liutong serve --config {}",
        report.config.display()
    );
    println!(
        "events logged after the backup was taken are not in it; witnesses that cosigned \
         later checkpoints will report the difference"
    );
    Ok(())
}

/// `liutong key rotate`.
pub fn key(cmd: KeyCommand) -> anyhow::Result<()> {
    let KeyCommand::Rotate { config, credential } = cmd;
    let config = load_config(config.as_deref())?;
    rotation::refuse_token(&config)?;
    match credential {
        None => {
            let (key, created) = rotation::prepare(&config.identity_dir())?;
            let path = config.identity_dir().join(rotation::NEXT_KEY);
            if created {
                println!("new signing key created in {}", path.display());
            } else {
                println!("the new signing key prepared earlier is {}", path.display());
            }
            println!("public key: {key}");
            println!("next:");
            println!(
                "  1. the authority runs: liutong authority rekey --dir AUTHORITY_DIR \
                 --participant {} --signing-key {key} --out credential.json",
                config.node.participant
            );
            println!(
                "  2. stop this node, then: liutong key rotate --config CONFIG --credential \
                 credential.json"
            );
            println!("  3. start the node again");
            Ok(())
        }
        Some(path) => {
            let text = std::fs::read(&path)
                .with_context(|| format!("cannot read the credential {}", path.display()))?;
            let credential: Envelope = serde_json::from_slice(&text).with_context(|| {
                format!(
                    "{} is not a signed credential (JSON envelope)",
                    path.display()
                )
            })?;
            let installed = rotation::install(&config, &credential)?;
            println!(
                "signing key rotated: {} → {}",
                installed.previous.key_id(),
                installed.current.key_id()
            );
            println!(
                "{} earlier key(s) kept in identity/{}; checkpoints they signed still verify",
                installed.history,
                rotation::KEY_HISTORY
            );
            println!("start the node again; it logs the rotation and signs with the new key");
            Ok(())
        }
    }
}

/// `liutong authority rekey`.
pub fn authority_rekey(
    dir: &Path,
    participant: &str,
    signing_key: &str,
    out: &Path,
) -> anyhow::Result<()> {
    let participant = ParticipantId::parse(participant)?;
    let key = PublicKey::from_base64(signing_key)
        .map_err(|e| anyhow!("--signing-key: {e}; paste the key `liutong key rotate` printed"))?;
    let mut a = Authority::open(dir)?;
    let credential = a.rekey(&participant, key)?;
    crate::base::files::write_public(out, credential.to_json().as_bytes())
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "credential for {participant} with signing key {} written to {}; trust list \
         sequence is now {}",
        key.key_id(),
        out.display(),
        a.sequence()
    );
    println!("hand it to the member's IT staff: it is signed, not secret");
    Ok(())
}

/// `liutong health`: exit 0 when the node's plain health endpoint answers SERVING.
pub async fn health(
    addr: Option<SocketAddr>,
    config: Option<PathBuf>,
    wait: Option<Duration>,
    every: Option<Duration>,
) -> anyhow::Result<()> {
    let addr = match addr {
        Some(a) => a,
        None => health_addr(&load_config(config.as_deref())?)?,
    };
    let start = Instant::now();
    let deadline = start + wait.unwrap_or_default();
    let mut pauses: Box<dyn Iterator<Item = Duration> + Send> = match every {
        Some(every) => Box::new(std::iter::repeat(every.max(Duration::from_millis(1)))),
        None => Box::new(health_poll_pauses()),
    };
    loop {
        let answer = crate::health::check(addr, Duration::from_secs(2)).await;
        match answer {
            Ok(tonic_health::ServingStatus::Serving) => {
                println!("SERVING ({addr}, after {} ms)", start.elapsed().as_millis());
                return Ok(());
            }
            Ok(other) if Instant::now() >= deadline => bail!("{addr} answers {other}"),
            Err(e) if Instant::now() >= deadline => bail!("no health answer: {e}"),
            _ => {
                // Never past the deadline: the last question is asked at it.
                let pause = pauses.next().unwrap_or(LONGEST_HEALTH_POLL);
                tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now())))
                    .await;
            }
        }
    }
}

/// The first pause of `liutong health --wait` between two questions.
const FIRST_HEALTH_POLL: Duration = Duration::from_millis(50);
/// The longest: a node that takes a while to start is asked twice a second.
const LONGEST_HEALTH_POLL: Duration = Duration::from_millis(500);

/// The pauses between health questions: from 50 ms, doubling, up to 500 ms.
fn health_poll_pauses() -> impl Iterator<Item = Duration> {
    std::iter::successors(Some(FIRST_HEALTH_POLL), |d| {
        Some((*d * 2).min(LONGEST_HEALTH_POLL))
    })
}

fn health_addr(config: &NodeConfig) -> anyhow::Result<SocketAddr> {
    let mut addr = config.node.health_listen.ok_or_else(|| {
        anyhow!("node.health_listen is not set in node.toml; set it, or pass --addr")
    })?;
    // A node listening on every address is asked on loopback.
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_wait_polls_from_50_ms_growing_to_500_ms() {
        let pauses: Vec<u64> = health_poll_pauses()
            .take(7)
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(pauses, [50, 100, 200, 400, 500, 500, 500]);
    }
}
