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
use crate::authority::{self, Admission, Authority, DEFAULT_MEMBERSHIP_DAYS, NameRules};
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
        names: NameRuleArgs,
        #[command(flatten)]
        hsm: HsmArgs,
    },
    /// Admit a member from the admission request its node made (`liutong join`): check
    /// the request's proof of possession and names, issue a certificate for its TLS key
    /// and a membership credential naming its signing key, and write them as an
    /// admission bundle. The bundle holds no private key.
    Admit {
        #[arg(long)]
        dir: PathBuf,
        /// The member node's admission request (identity/admission-request.json).
        #[arg(long)]
        request: PathBuf,
        /// The member's 统一社会信用代码, as checked in its documents; the request must
        /// be for this participant.
        #[arg(long)]
        participant: String,
        /// The member's name (with --renew: kept if not given).
        #[arg(long, required_unless_present = "renew")]
        name: Option<String>,
        /// government, enterprise or institution (with --renew: kept if not given).
        #[arg(long, required_unless_present = "renew")]
        kind: Option<String>,
        /// Sector, e.g. transport, ecology, logistics (with --renew: kept if not given).
        #[arg(long, required_unless_present = "renew")]
        sector: Option<String>,
        /// 6-digit administrative division code, e.g. 330100 (with --renew: kept if not
        /// given).
        #[arg(long, required_unless_present = "renew")]
        region: Option<String>,
        /// Comma-separated: provider, consumer, auditor (with --renew: kept if not given).
        #[arg(long, value_delimiter = ',', required_unless_present = "renew")]
        roles: Vec<String>,
        /// Where to write the admission bundle (a new directory).
        #[arg(long)]
        out: PathBuf,
        /// Validity of the membership and certificate, in days.
        #[arg(long, default_value_t = DEFAULT_MEMBERSHIP_DAYS)]
        days: i64,
        /// Renew an existing member from its renewal request (`liutong join --renew`): a
        /// new certificate and credential; its old certificate stops working.
        #[arg(long)]
        renew: bool,
    },
    /// Show or replace which host names and addresses members may have in their
    /// certificates. Without --allow-dns or --allow-ip, prints the current rules.
    Names {
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        names: NameRuleArgs,
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

/// The names an authority certifies in members' certificates.
#[derive(clap::Args, Debug)]
pub struct NameRuleArgs {
    /// DNS names members may have certified: an exact name, or `.domain` for every name
    /// below it (comma-separated or repeated). Default: localhost.
    #[arg(long, value_delimiter = ',')]
    allow_dns: Vec<String>,
    /// IP networks members may have certified, in CIDR notation (comma-separated or
    /// repeated). Default: 127.0.0.0/8 and ::1/128.
    #[arg(long, value_delimiter = ',')]
    allow_ip: Vec<String>,
}

impl NameRuleArgs {
    fn rules(&self) -> anyhow::Result<Option<NameRules>> {
        if self.allow_dns.is_empty() && self.allow_ip.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            NameRules::parse(&self.allow_dns, &self.allow_ip).map_err(|e| anyhow!(e))?,
        ))
    }
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
        AuthorityCommand::Init {
            dir,
            name,
            names,
            hsm,
        } => {
            let rules = names.rules()?;
            let token = hsm.token()?;
            let mut a = Authority::init_with(&dir, &name, token.as_ref())?;
            if let Some(rules) = rules {
                a.set_name_rules(rules)?;
            }
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
                "names members may have certified: {}",
                a.name_rules().describe()
            );
            println!(
                "next: liutong authority admit --dir {} --request REQUEST ... --out BUNDLE_DIR",
                dir.display()
            );
            Ok(())
        }
        AuthorityCommand::Names { dir, names } => {
            let mut a = Authority::open(&dir)?;
            if let Some(rules) = names.rules()? {
                a.set_name_rules(rules)?;
            }
            println!(
                "names members may have certified: {}",
                a.name_rules().describe()
            );
            Ok(())
        }
        AuthorityCommand::Admit {
            dir,
            request,
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
            if days <= 0 {
                return Err(anyhow!("--days must be at least 1"));
            }
            let text = read_request(&request)?;
            let request = crate::identity::request::open(&text)
                .with_context(|| format!("{} is refused", request.display()))?;
            let mut a = Authority::open(&dir)?;
            let current = a.member(&participant).cloned();
            let kept = |what: &str| {
                anyhow!(
                    "--{what} is needed: {participant} is not a member yet, so there is \
                     nothing to keep"
                )
            };
            let name = match (name, &current) {
                (Some(n), _) => n,
                (None, Some(m)) => m.name.clone(),
                (None, None) => return Err(kept("name")),
            };
            let kind = match (kind, &current) {
                (Some(k), _) => ParticipantKind::from_member_name(&k).map_err(|e| anyhow!(e))?,
                (None, Some(m)) => m.kind,
                (None, None) => return Err(kept("kind")),
            };
            let sector = match (sector, &current) {
                (Some(s), _) => s,
                (None, Some(m)) => m.sector.clone(),
                (None, None) => return Err(kept("sector")),
            };
            let region = match (region, &current) {
                (Some(r), _) => RegionCode::parse(&r).map_err(|e| anyhow!(e))?,
                (None, Some(m)) => m.region.clone(),
                (None, None) => return Err(kept("region")),
            };
            let roles = match (roles.is_empty(), &current) {
                (false, _) => roles
                    .iter()
                    .map(|r| r.trim().parse::<MemberRole>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| anyhow!(e))?,
                (true, Some(m)) => m.roles.clone(),
                (true, None) => return Err(kept("roles")),
            };
            let now = clock::now_utc();
            let bundle = a.admit(
                Admission {
                    participant,
                    name,
                    kind,
                    sector,
                    region,
                    roles,
                    not_before: now - time::Duration::minutes(5),
                    not_after: now + time::Duration::days(days),
                    renew,
                },
                &request,
            )?;
            bundle.write(&out)?;
            println!(
                "{} {} ({}); trust list sequence is now {}",
                if renew { "renewed" } else { "admitted" },
                bundle.membership.name,
                bundle.membership.participant_id,
                a.sequence()
            );
            if !bundle.host_names.is_empty() {
                println!("its certificate names: {}", bundle.host_names.join(", "));
            }
            println!(
                "admission bundle written to {} (no private key in it): give it to the \
                 member, who installs it with `liutong init --bundle`",
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

/// Reads a request file, refusing one larger than any request can be before reading it.
fn read_request(path: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Read as _;
    let limit = crate::identity::request::MAX_REQUEST_BYTES as u64;
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read the admission request {}", path.display()))?;
    let mut text = String::new();
    file.take(limit + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("{} is not a text file", path.display()))?;
    if text.len() as u64 > limit {
        return Err(anyhow!(
            "{} is larger than any admission request ({limit} bytes at most); is it the \
             right file?",
            path.display()
        ));
    }
    Ok(text)
}
