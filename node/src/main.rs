//! The `liutong` binary: sets up logging and the TLS provider, then runs the command.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser;
use liutong_node::cli::{self, Cli};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

fn main() -> ExitCode {
    // ring is the crypto provider, chosen explicitly before anything uses TLS.
    liutong_node::tls::install_default_provider();
    // Whatever a command creates (a node directory, a database, keys) is owner-only;
    // files meant for others (bundles, exports) set their modes explicitly.
    liutong_node::base::files::owner_only_from_now_on();
    let cli = Cli::parse();
    // Log lines go to stderr, filtered by LIUTONG_LOG; spans also go to OpenTelemetry
    // when the node is configured to export (see `telemetry`), whatever LIUTONG_LOG says.
    let filter = tracing_subscriber::EnvFilter::try_from_env("LIUTONG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(colour_on_stderr())
                .with_filter(filter),
        )
        .with(liutong_node::telemetry::tracing_layer())
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Colour codes only for a person at a terminal: a log file, a pipe or a journal would
/// get them as literal bytes. A non-empty `NO_COLOR` turns colour off even there
/// (<https://no-color.org>).
fn colour_on_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
