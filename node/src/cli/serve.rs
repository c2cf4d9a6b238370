//! `liutong serve`: running a node in the foreground until SIGINT or SIGTERM, with the
//! zero-configuration development set-up when no configuration is named.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::authority;
use crate::config::NodeConfig;
use crate::runtime::RunningNode;
use crate::setup;

/// Runs `liutong serve`.
pub async fn serve(
    config_path: Option<PathBuf>,
    health_listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let config_path = match config_path {
        Some(p) => p,
        None => {
            let root = setup::default_data_root();
            let (path, created) = setup::ensure_dev_setup(&root)?;
            print_dev_banner(&root, &path, created);
            path
        }
    };
    let mut config = NodeConfig::load(&config_path)?;
    if health_listen.is_some() {
        config.node.health_listen = health_listen;
    }
    // Replicas wait as standbys until this one holds the leadership lease.
    let mut leadership = if config.storage.replicas {
        Some(crate::replica::stand_by(&config).await?)
    } else {
        None
    };
    let dev_authority = match config.development_authority_dir() {
        Some(dir) => {
            let listener = TcpListener::bind(&config.authority.address)
                .await
                .with_context(|| {
                    format!(
                        "cannot listen on {} for the development authority; another process \
                         may be using it",
                        config.authority.address
                    )
                })?;
            let running =
                authority::serve(&dir, listener, authority::DEFAULT_TRUST_LIST_VALIDITY).await?;
            println!(
                "DEVELOPMENT authority serving its trust list on {} (from {})",
                running.addr,
                dir.display()
            );
            Some(running)
        }
        None => None,
    };
    let node = match &leadership {
        Some(l) => RunningNode::start_on(config, l.storage.clone()).await?,
        None => RunningNode::start(config).await?,
    };
    let stop = StopSignals::catch()?;
    let m = &node.node.identity.membership;
    let dsp = node
        .dsp_addr()
        .map(|a| format!(" · DSP https://{a}"))
        .unwrap_or_default();
    let console = node
        .console_addr()
        .map(|a| {
            format!(
                " · console {} (sign in: liutong console login)",
                crate::console::origin_of(a)
            )
        })
        .unwrap_or_default();
    println!(
        "liutong node for {} ({}) serving: peer API {} · local API {}{dsp}{console}",
        m.name,
        m.participant_id,
        node.peer_addr(),
        node.admin_addr()
    );
    println!("stop with Ctrl-C (SIGINT) or SIGTERM");
    let lost = async {
        match &mut leadership {
            Some(l) => l.lost().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = stop.wait() => {}
        reason = lost => {
            // Fail-stop: nothing more is answered or written by this process; the
            // database already refuses its writes. Its supervisor starts it again as a
            // standby.
            eprintln!(
                "liutong: this replica lost the leadership ({reason}); it stops serving \
                 now and exits, to be started again as a standby"
            );
            std::process::exit(crate::replica::LOST_LEADERSHIP_EXIT);
        }
    }
    println!("stopping: finishing in-flight calls and flushing storage");
    node.shutdown().await?;
    if let Some(l) = leadership {
        l.release().await?;
    }
    if let Some(a) = dev_authority {
        a.shutdown().await?;
    }
    println!("stopped");
    Ok(())
}

fn print_dev_banner(root: &Path, config: &Path, created: bool) {
    let line = "=".repeat(78);
    println!("{line}");
    println!(" DEVELOPMENT NODE — for trying Liutong out, not for production");
    if created {
        println!(
            " Created a DEVELOPMENT authority and node identity under {}:",
            root.display()
        );
    } else {
        println!(" Using the DEVELOPMENT set-up under {}:", root.display());
    }
    println!(
        "   authority: {} (its private keys are on this disk)",
        root.join("dev-authority").display()
    );
    println!("   node:      {}", config.display());
    println!(
        "   participant {} \"Development node\"",
        setup::DEV_PARTICIPANT
    );
    println!(" For a real data space, see the README: \"Setting up a data space by hand\".");
    println!("{line}");
}

/// SIGINT and SIGTERM, caught from the moment this is made. Make it before announcing
/// that the process serves: whoever waits for that line and then sends SIGTERM (a test,
/// a supervisor script) gets a graceful stop, not the default action that ends the
/// process on the spot.
pub(super) struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub(super) fn catch() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
        })
    }

    /// Waits for either signal.
    pub(super) async fn wait(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
