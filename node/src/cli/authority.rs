//! `liutong authority …`: the data-space operator's commands. They work on the
//! authority's directory (`--dir`) directly, except `serve`, which runs its trust-list
//! service until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use clap::Subcommand;
use tokio::net::TcpListener;

use super::ops;
use super::output::print_json;
use super::serve::StopSignals;
use crate::authority::{self, Admission, Authority, DEFAULT_MEMBERSHIP_DAYS};
use crate::base::clock;
use crate::base::format::format_unix;
use crate::config;
use crate::identity::{MemberRole, ParticipantId, ParticipantKind, RegionCode};

#[derive(Subcommand, Debug)]
pub enum AuthorityCommand {
    /// Create an authority: its CA certificate and key, and its signing key.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// The authority's name, e.g. "Zhejiang Public Data Space".
        #[arg(long)]
        name: String,
        #[command(flatten)]
        hsm: HsmArgs,
    },
    /// Admit a member: issue its TLS certificate, membership credential and keys, and
    /// write them as an admission bundle (a secret: hand it over securely).
    Admit {
        #[arg(long)]
        dir: PathBuf,
        /// The member's 统一社会信用代码 (18 characters, GB 32100-2015).
        #[arg(long)]
        participant: String,
        /// The member's name.
        #[arg(long)]
        name: String,
        /// government, enterprise or institution.
        #[arg(long)]
        kind: String,
        /// Sector, e.g. transport, ecology, logistics.
        #[arg(long)]
        sector: String,
        /// 6-digit administrative division code, e.g. 330100.
        #[arg(long)]
        region: String,
        /// Comma-separated: provider, consumer, auditor.
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// Where to write the admission bundle (a new directory).
        #[arg(long)]
        out: PathBuf,
        /// Validity of the membership and certificate, in days.
        #[arg(long, default_value_t = DEFAULT_MEMBERSHIP_DAYS)]
        days: i64,
        /// Re-admit an existing member with new keys (its old certificate stops working).
        #[arg(long)]
        renew: bool,
    },
    /// Revoke a member. Nodes refuse it from their next trust-list refresh on.
    Revoke {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        participant: String,
        /// Why; members and auditors read it.
        #[arg(long)]
        reason: String,
    },
    /// List members and revocations.
    Members {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Serve the signed trust list to members over mutual TLS.
    Serve {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = config::DEFAULT_AUTHORITY)]
        listen: SocketAddr,
        /// How long each signed trust list stays valid.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        validity: Duration,
    },
    /// Issue a member a credential naming the new signing key its node prepared
    /// (`liutong key rotate`); its other attributes and certificate stay. Nodes see the
    /// new key from their next trust-list refresh.
    Rekey {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        participant: String,
        /// The new public key (base64), as `liutong key rotate` printed it.
        #[arg(long)]
        signing_key: String,
        /// Where to write the new credential (signed, not secret).
        #[arg(long)]
        out: PathBuf,
    },
}

/// The authority's keys in a PKCS#11 token instead of `ca.key` and `signing.key`.
#[derive(clap::Args, Debug)]
pub struct HsmArgs {
    /// The token's PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so.
    #[arg(long, requires_all = ["hsm_token", "hsm_ca_key", "hsm_signing_key"])]
    hsm_module: Option<PathBuf>,
    /// The token's label.
    #[arg(long, requires = "hsm_module")]
    hsm_token: Option<String>,
    /// Label of the ECDSA P-256 key pair in the token that signs TLS certificates.
    #[arg(long, requires = "hsm_module")]
    hsm_ca_key: Option<String>,
    /// Label of the Ed25519 key pair in the token that signs credentials and trust lists.
    #[arg(long, requires = "hsm_module")]
    hsm_signing_key: Option<String>,
    /// The environment variable holding the token's PIN (also when the authority runs).
    #[arg(long, requires = "hsm_module", conflicts_with = "hsm_pin_file")]
    hsm_pin_env: Option<String>,
    /// A file, readable by its owner only, holding the token's PIN.
    #[arg(long, requires = "hsm_module")]
    hsm_pin_file: Option<PathBuf>,
}

impl HsmArgs {
    fn token(self) -> anyhow::Result<Option<authority::AuthorityToken>> {
        let (Some(module), Some(token), Some(ca_key), Some(signing_key)) = (
            self.hsm_module,
            self.hsm_token,
            self.hsm_ca_key,
            self.hsm_signing_key,
        ) else {
            return Ok(None);
        };
        // Recorded in hsm.toml and used by later commands run from anywhere.
        let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
        let pin = crate::hsm::PinSource::from_pair(
            self.hsm_pin_env.as_deref(),
            self.hsm_pin_file.as_deref(),
            "--hsm-module",
        )
        .map_err(|_| anyhow!("--hsm-module needs the token's PIN: pass --hsm-pin-env VARIABLE or --hsm-pin-file FILE"))?;
        let pin = match pin {
            crate::hsm::PinSource::File(p) => crate::hsm::PinSource::File(absolute(p)),
            env => env,
        };
        Ok(Some(authority::AuthorityToken {
            token: crate::hsm::TokenSpec {
                module: absolute(module),
                token,
                pin,
            },
            ca_key,
            signing_key,
        }))
    }
}

/// Runs `liutong authority …`.
pub async fn run(cmd: AuthorityCommand) -> anyhow::Result<()> {
    match cmd {
        AuthorityCommand::Init { dir, name, hsm } => {
            let token = hsm.token()?;
            let a = Authority::init_with(&dir, &name, token.as_ref())?;
            println!("authority {:?} created in {}", a.name(), dir.display());
            if let Some(t) = &token {
                println!(
                    "keys in token {:?}: CA key {:?}, signing key {:?} (recorded in {})",
                    t.token.token,
                    t.ca_key,
                    t.signing_key,
                    dir.join(authority::HSM_FILE).display()
                );
            }
            println!("signing key: {}", a.public_key());
            println!(
                "next: liutong authority admit --dir {} ... --out BUNDLE_DIR",
                dir.display()
            );
            Ok(())
        }
        AuthorityCommand::Admit {
            dir,
            participant,
            name,
            kind,
            sector,
            region,
            roles,
            out,
            days,
            renew,
        } => {
            let participant = ParticipantId::parse(&participant)?;
            let kind = ParticipantKind::from_member_name(&kind).map_err(|e| anyhow!(e))?;
            let region = RegionCode::parse(&region).map_err(|e| anyhow!(e))?;
            let roles = roles
                .iter()
                .map(|r| r.trim().parse::<MemberRole>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow!(e))?;
            if days <= 0 {
                return Err(anyhow!("--days must be at least 1"));
            }
            let mut a = Authority::open(&dir)?;
            let now = clock::now_utc();
            let bundle = a.admit(Admission {
                participant,
                name,
                kind,
                sector,
                region,
                roles,
                not_before: now - time::Duration::minutes(5),
                not_after: now + time::Duration::days(days),
                renew,
            })?;
            bundle.write(&out)?;
            println!(
                "admitted {} ({}); trust list sequence is now {}",
                bundle.membership.name,
                bundle.membership.participant_id,
                a.sequence()
            );
            println!(
                "admission bundle written to {} — it holds private keys: hand it over securely",
                out.display()
            );
            Ok(())
        }
        AuthorityCommand::Revoke {
            dir,
            participant,
            reason,
        } => {
            let participant = ParticipantId::parse(&participant)?;
            let mut a = Authority::open(&dir)?;
            let now = clock::now();
            a.revoke(&participant, &reason, now)?;
            println!(
                "revoked {participant}; trust list sequence is now {}; nodes apply it at their \
                 next refresh",
                a.sequence()
            );
            Ok(())
        }
        AuthorityCommand::Members { dir, json } => {
            let a = Authority::open(&dir)?;
            if json {
                let value = serde_json::json!({
                    "authority": a.name(),
                    "sequence": a.sequence(),
                    "members": a.members(),
                    "revocations": a.revocations(),
                });
                print_json(&value)?;
            } else {
                println!(
                    "authority {:?}, trust list sequence {}",
                    a.name(),
                    a.sequence()
                );
                for m in a.members() {
                    let roles: Vec<_> = m.roles.iter().map(ToString::to_string).collect();
                    println!(
                        "  member   {}  {}  {} {} {}  roles {}  until {}",
                        m.participant_id,
                        m.name,
                        m.kind.member_name(),
                        m.sector,
                        m.region,
                        roles.join(","),
                        format_unix(m.valid_until)
                    );
                }
                for r in a.revocations() {
                    println!(
                        "  revoked  {}  at {}: {}",
                        r.participant_id,
                        format_unix(r.revoked_at),
                        r.reason
                    );
                }
            }
            Ok(())
        }
        AuthorityCommand::Serve {
            dir,
            listen,
            validity,
        } => {
            let listener = TcpListener::bind(listen).await.with_context(|| {
                format!("cannot listen on {listen}; another process may be using it")
            })?;
            let running = authority::serve(&dir, listener, validity).await?;
            let stop = StopSignals::catch()?;
            println!("authority serving its trust list on {}", running.addr);
            stop.wait().await;
            running.shutdown().await?;
            Ok(())
        }
        AuthorityCommand::Rekey {
            dir,
            participant,
            signing_key,
            out,
        } => ops::authority_rekey(&dir, &participant, &signing_key, &out),
    }
}
