//! What the tests that drive real `liutong` processes share: the binary, the members
//! they admit, and running a command with none of the caller's node settings.
#![allow(dead_code)] // each test file uses a different part of this

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};

/// The `liutong` binary this test run built.
pub const BIN: &str = env!("CARGO_BIN_EXE_liutong");

pub const TRANSPORT: &str = "11330100MA2TRA0011";
pub const LOGISTICS: &str = "91330100MA2L0G0013";
pub const ECOLOGY: &str = "11330000MA2ECE0015";

/// A policy that lets every member use the data.
pub const OPEN_POLICY: &str = r#"
uid = "urn:liutong:policy:open"
type = "set"

[[permission]]
action = "use"
"#;

/// A `liutong` command that ignores the environment's node settings and pause point,
/// so a test's command never reaches a node the test did not start, nor pauses.
pub fn command(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("LIUTONG_CONFIG")
        .env_remove("LIUTONG_DATA")
        .env_remove("LIUTONG_PAUSE_AT");
    c
}

/// Runs a `liutong` command to its end.
pub fn liutong(args: &[&str]) -> Output {
    command(args).output().expect("run liutong")
}

/// Standard output, then standard error.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A loopback port free at this moment.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A path as a command-line argument.
pub fn arg(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// Fails if any file under `dir` holds a private key: admission bundles never do.
pub fn assert_no_private_key(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("read bundle") {
        let path = entry.unwrap().path();
        if path.is_dir() {
            assert_no_private_key(&path);
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(11).any(|w| w == b"PRIVATE KEY"),
            "{} holds a private key",
            path.display()
        );
    }
}

/// A child process killed (and reaped) when dropped, so a failing test leaves no
/// process behind.
pub struct Guard(pub std::process::Child);

impl std::ops::Deref for Guard {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Guard {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `liutong authority admit` of the node request `request` as the transport bureau's
/// attributes (government, transport, 330100, provider and consumer), `extra` appended.
pub fn admit_request(
    authority: &Path,
    participant: &str,
    request: &Path,
    out: &Path,
    extra: &[&str],
) -> Output {
    let mut args = vec![
        "authority",
        "admit",
        "--dir",
        arg(authority),
        "--request",
        arg(request),
        "--participant",
        participant,
        "--name",
        "Hangzhou Transport Bureau",
        "--kind",
        "government",
        "--sector",
        "transport",
        "--region",
        "330100",
        "--roles",
        "provider,consumer",
        "--out",
        arg(out),
    ];
    args.extend_from_slice(extra);
    liutong(&args)
}

/// `liutong authority serve` for `dir` on `listen`, its standard output piped (for the
/// "serving its trust list" line) and killed when dropped.
pub fn spawn_authority(dir: &Path, listen: &str) -> Guard {
    Guard(
        command(&["authority", "serve", "--dir", arg(dir), "--listen", listen])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start liutong authority serve"),
    )
}
