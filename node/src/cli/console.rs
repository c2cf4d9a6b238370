//! `liutong console login`: a one-time link that signs a browser in to the web console.

use clap::{Args, Subcommand};
use liutong_proto::v1::CreateConsoleLinkRequest;

use super::local_node::LocalArgs;
use super::output::{print_json, status_error};

#[derive(Subcommand, Debug)]
pub enum ConsoleCommand {
    /// Print a one-time link that signs a browser in to the web console with the role of
    /// --role (admin or auditor).
    ///
    /// The link works once, within 10 minutes; the session it opens lasts
    /// `console.session_lifetime` (8 hours by default). The console's certificate comes
    /// from this node's local CA: trust DIR/local/ca.crt in the browser, or accept the
    /// certificate once. Every sign-in is on the audit log.
    Login(LoginArgs),
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    #[command(flatten)]
    pub local: LocalArgs,
    /// Print JSON ({"url", "role", "expires_in_seconds"}).
    #[arg(long)]
    pub json: bool,
}

pub async fn run(command: ConsoleCommand) -> anyhow::Result<()> {
    match command {
        ConsoleCommand::Login(args) => {
            let link = args
                .local
                .admin()
                .await?
                .create_console_link(CreateConsoleLinkRequest {
                    role: args.local.role.to_string(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if args.json {
                return print_json(&serde_json::json!({
                    "url": link.url,
                    "role": link.role,
                    "expires_in_seconds": link.expires_in_seconds,
                }));
            }
            println!("{}", link.url);
            eprintln!(
                "open it within {} (once, as {}); the browser must trust the node's local CA \
                 (local/ca.crt in the node's directory)",
                humantime::format_duration(std::time::Duration::from_secs(link.expires_in_seconds)),
                link.role
            );
            Ok(())
        }
    }
}
