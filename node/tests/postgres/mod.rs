//! A throwaway PostgreSQL cluster for tests: `initdb` in a temporary directory, a
//! server on a loopback port chosen by the OS, password (SCRAM) authentication, and a
//! fresh database per test. One shared cluster per test binary ([`shared`]); a test
//! that stops its server starts a private one ([`Cluster::start`]).
//!
//! The server runs under a small shell that holds a pipe from this process: when the
//! test process ends, however it ends (a panic, `kill -9`), the pipe closes and the shell
//! stops the server and removes its directory, so no cluster outlives its tests. As root (CI), the cluster runs
//! as the `postgres` user, since PostgreSQL refuses to run as root.
#![allow(dead_code)] // each test file uses a different part of this harness

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use liutong_node::storage::PgTarget;

/// The superuser the clusters are made with.
pub const USER: &str = "liutong";

/// How long a server may take to start or stop on a loaded machine.
const WAIT: Duration = Duration::from_secs(60);

pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    pub password: String,
    server: Mutex<Option<(Child, ChildStdin)>>,
    databases: AtomicU32,
}

/// The cluster shared by the tests of this binary, started on first use.
pub fn shared() -> &'static Cluster {
    static SHARED: OnceLock<Cluster> = OnceLock::new();
    SHARED.get_or_init(Cluster::start)
}

/// A database of a cluster, made for one test.
#[derive(Clone)]
pub struct Database {
    pub name: String,
    pub url: String,
    pub password: String,
}

impl Database {
    pub fn target(&self) -> PgTarget {
        PgTarget::new(&self.url, Some(&self.password)).expect("a valid URL")
    }
}

fn postgres_ids() -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}

/// The directory of PostgreSQL's programs: the newest `/usr/lib/postgresql/N/bin`
/// (Debian), else whatever `initdb` on the PATH is next to.
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return bin;
    }
    let out = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        .expect("sh");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        !path.is_empty(),
        "PostgreSQL is not installed (no initdb): apt-get install postgresql"
    );
    Path::new(&path).parent().unwrap().to_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    /// Makes and starts a new cluster (panics with the server's log if it cannot).
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("liutong-pg-")
            .tempdir()
            .unwrap();
        let root = is_root();
        if root {
            let (uid, gid) = postgres_ids().expect("a postgres user (apt-get install postgresql)");
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let password = format!("pw-{}", std::process::id());
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, &password).unwrap();
        if root {
            let (uid, gid) = postgres_ids().unwrap();
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).unwrap();
        }
        let data = dir.path().join("data");
        let out = as_owner(root, &bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                USER,
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-instructions",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut cluster = Self {
            dir,
            bin,
            port: 0,
            password,
            server: Mutex::new(None),
            databases: AtomicU32::new(0),
        };
        // A port the OS just gave out can be taken again before the server binds it.
        for attempt in 0..3 {
            cluster.port = free_port();
            match cluster.launch() {
                Ok(()) => return cluster,
                Err(e) if attempt == 2 => panic!("{e}"),
                Err(_) => {}
            }
        }
        unreachable!()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Starts the server (again) on this cluster's port and waits until it answers.
    pub fn launch(&self) -> Result<(), String> {
        let root = is_root();
        let script = "\"$0\" -D \"$1\" -p \"$2\" -k \"$3\" -c listen_addresses=127.0.0.1 \
                      </dev/null >>\"$3/server.log\" 2>&1 & pid=$!; \
                      read how; kill -INT $pid; wait $pid; \
                      [ \"$how\" = keep ] || rm -rf \"$3\"";
        let mut child = as_owner(root, Path::new("sh"))
            .args(["-c", script])
            .arg(self.bin.join("postgres"))
            .arg(self.dir.path().join("data"))
            .arg(self.port.to_string())
            .arg(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start postgres: {e}"))?;
        let stdin = child.stdin.take().unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("postgres exited ({status}): {}", self.log()));
            }
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!(
                    "postgres did not start within {WAIT:?}: {}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        *self.server.lock().unwrap() = Some((child, stdin));
        Ok(())
    }

    /// Stops the server: `immediate` as a crash would (no checkpoint, connections cut),
    /// else a fast shutdown.
    pub fn stop(&self, immediate: bool) {
        let Some((mut child, stdin)) = self.server.lock().unwrap().take() else {
            return;
        };
        if immediate {
            let out = as_owner(is_root(), &self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["stop", "-m", "immediate", "-w", "-t", "60"])
                .output()
                .expect("pg_ctl");
            assert!(
                out.status.success(),
                "pg_ctl stop failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // Keep the directory: the server may be started again, and the owner removes it.
        let mut stdin = stdin;
        let _ = writeln!(stdin, "keep");
        drop(stdin);
        let deadline = Instant::now() + WAIT;
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `sql` in database `db` with psql, as the superuser.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
            .args(["-d", db, "-c", sql])
            .env("PGPASSWORD", &self.password)
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A new, empty database for one test.
    pub fn database(&self) -> Database {
        let n = self.databases.fetch_add(1, Ordering::SeqCst);
        let name = format!("t{}_{n}", std::process::id());
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        Database {
            url: format!("postgresql://{USER}@127.0.0.1:{}/{name}", self.port),
            name,
            password: self.password.clone(),
        }
    }

    /// Writes the password to an owner-only file in `dir` and returns its path, for a
    /// node's `password_file`.
    pub fn password_file(&self, dir: &Path) -> PathBuf {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join("db-password");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        writeln!(f, "{}", self.password).unwrap();
        path
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop(false);
    }
}

/// `program` run as the cluster's owner: the `postgres` user when we are root.
fn as_owner(root: bool, program: &Path) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}
