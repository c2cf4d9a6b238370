//! The PostgreSQL engine behind [`Storage`]: one database holds the whole node, every
//! tree as rows of `liutong_kv (tree, key, value)` and the payloads as rows of at most
//! 1 MiB in `liutong_blob_chunks` ([`super::blobs::rows`]).
//!
//! Durability: every write commits at once, in a session with `synchronous_commit = on`,
//! so a write call returns only after PostgreSQL has made it durable (on the primary and
//! on whatever synchronous standbys the server is configured to wait for), and
//! [`Storage::flush`] has nothing left to do (it costs no round trip, so `put_durable` is
//! one). A write whose commit is not confirmed (the connection is lost on the way)
//! returns an error: the caller never acknowledges it, although the database may hold
//! it (the next attempt of an idempotent write finds it).
//!
//! One statement per write: a put, a delete, a batch ([`Storage::apply`], and
//! [`Storage::apply_trees`] across trees, as the audit log writes a group of entries
//! with the records they carry) is a single statement that commits by itself, so it
//! costs one round trip and one commit, fenced or not. Each record is written once,
//! with what the batch's last write to it leaves; the deletes and the upserts run as
//! data-modifying `WITH` clauses over `unnest`ed arrays, after the lease check (see
//! below) in the same statement.
//!
//! Read cache: only one engine writes to a database at a time. A single node
//! (`replicas = false`) is the only node on its database, and replicas write only while
//! they hold the lease, fenced. So the engine that writes keeps what it read and wrote
//! in memory (`cache.rs`; 64 MiB by default, the least recently used out first) and
//! answers reads from there without a round trip. It is write-through: a record leaves
//! the cache while a write of it is in flight and comes back with its new value only
//! once the commit is confirmed; a write whose outcome is unknown (any error) leaves it
//! out, so the next read asks the database; keys found absent are kept as absent; a
//! batch and `insert_new` keep it exact record by record. Whole scans by prefix
//! (`scan_prefix`) are kept too, dropped by any write of a key under their prefix;
//! pages (`scan_page`) always ask the database.
//! For an engine that holds the lease, the cache answers only while the lease is surely
//! still its own:
//!
//! - Taking the lease clears the cache, every time: while this engine did not lead,
//!   another replica may have written anything. That covers a deposed leader that takes
//!   the lease back: what it cached before it lost the lease is dropped, and a read or
//!   write that was in flight across the takeover puts nothing in (a new epoch).
//! - The cache answers only until `lease` after the last successful take or renewal was
//!   *sent*, by this machine's monotonic clock. The database sets the expiry `lease`
//!   after it ran the statement, which is later, and no other replica can take the lease
//!   (let alone write) before it expires; so the cache stops answering before anyone
//!   else can write. This assumes only that the two clocks run at the same rate, not
//!   that they agree. Past that instant reads go to the database; a later successful
//!   renewal of the same token proves nobody took the lease in between, so the cache
//!   answers again.
//! - A write refused by the fence, and giving the lease up, stop the cache answering at
//!   once.
//!
//! Sync calls and the async client: the trait's reads and writes are sync and are called
//! both from plain threads and from tasks of the node's runtime (as the sled engine's
//! are), and some tests drive them from a current-thread runtime, where
//! `block_in_place` is not allowed. So the engine owns a small runtime of its own that
//! runs the client and its connections; a sync call hands its work to that runtime and
//! waits for the answer on a plain channel. On a worker of a multi-thread runtime the
//! wait first hands the worker's other tasks to another thread (`block_in_place`), so
//! a round trip does not stall them; elsewhere the waiting thread blocks like a sled
//! call that reads the disk does. The engine's runtime never waits on a caller, so it
//! cannot deadlock against it.
//!
//! SQL used (kept to what PostgreSQL-compatible databases accept, no extensions):
//! `CREATE TABLE IF NOT EXISTS`, `bytea`, `text`, `bigint`, `integer`, composite primary
//! keys, `INSERT … ON CONFLICT … DO NOTHING / DO UPDATE`, `SELECT … FOR UPDATE`,
//! data-modifying `WITH` clauses (`DELETE`/`INSERT … RETURNING`), `unnest` of arrays,
//! `LOCK TABLE … IN ACCESS EXCLUSIVE MODE`, `substr`, `length`, `ORDER BY`, `LIMIT`,
//! transactions at READ COMMITTED and REPEATABLE READ, `SET synchronous_commit = on`,
//! `SELECT … FOR SHARE`, `UPDATE … RETURNING`, `now()`, `timestamptz`, `interval`.
//!
//! Leadership and fencing: replicas sharing one database take turns through the lease
//! row of `liutong_lease` ([`PostgresStorage::acquire_lease`]). Once an engine holds the
//! lease, every write transaction first checks, inside itself (for records, in the
//! writing statement's first `WITH` clause), that the lease row still carries this
//! engine's token and has not expired by the database's clock, and locks the row
//! `FOR SHARE` until it commits: a replica taking the lease over waits for the
//! writes in flight, and a write that starts after the lease was lost is refused. So a
//! deposed leader's write never commits, whatever its own clock says. An engine that
//! never took the lease (a single node, `storage migrate`, tests) writes unfenced.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use tokio_postgres::{Client, NoTls, Statement, Transaction};

use super::blobs::{Blobs, RowBlobs};
use super::durability::Durability;
use super::{Entries, Storage, StorageError, Write};
use crate::base::BoxFuture;

mod cache;
use cache::{Cache, DEFAULT_CACHE_BYTES, Known, Lookup};

/// The schema versions this binary knows, in order: migration `i` takes the database
/// from version `i` to `i + 1`. Only ever append.
const MIGRATIONS: &[&str] = &[
    // 1: the trees and the payloads.
    "CREATE TABLE liutong_kv (
         tree text NOT NULL,
         key bytea NOT NULL,
         value bytea NOT NULL,
         PRIMARY KEY (tree, key)
     );
     CREATE TABLE liutong_blob_files (
         name text PRIMARY KEY,
         len bigint NOT NULL
     );
     CREATE TABLE liutong_blob_chunks (
         name text NOT NULL,
         chunk_index bigint NOT NULL,
         data bytea NOT NULL,
         PRIMARY KEY (name, chunk_index)
     );",
    // 2: the leadership lease of replicas sharing the database; free at first (it
    // expired long ago).
    "CREATE TABLE liutong_lease (
         id integer PRIMARY KEY,
         holder text NOT NULL,
         token bigint NOT NULL,
         expires_at timestamptz NOT NULL
     );
     INSERT INTO liutong_lease (id, holder, token, expires_at)
         VALUES (1, '', 0, timestamptz '2000-01-01 00:00:00+00');",
];

/// Checks, inside a write transaction, that this engine still holds the lease (see the
/// module's documentation); no row: it does not.
const FENCE: &str = "SELECT 1 FROM liutong_lease \
                     WHERE id = 1 AND token = $1 AND expires_at > now() FOR SHARE";

/// An error of the engine's work: the database's, or a write refused because this
/// replica no longer holds the lease.
#[derive(Debug)]
pub(crate) enum PgError {
    Db(tokio_postgres::Error),
    NotLeader,
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e)
    }
}

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Connections open at once, at most.
const POOL_SIZE: usize = 16;

/// How long to wait for a connection to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long sent data may go unacknowledged before the connection counts as lost.
const UNANSWERED_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how to reach the database.
#[derive(Clone)]
pub struct PgTarget {
    config: tokio_postgres::Config,
    /// `host:port/database as user`, for messages (never the password).
    place: String,
}

impl PgTarget {
    /// From a connection URL (`postgresql://user@host:port/database`, or the key=value
    /// form) that holds no password, and the password from elsewhere.
    pub fn new(url: &str, password: Option<&str>) -> Result<Self, String> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("the PostgreSQL URL is not valid: {e}"))?;
        if config.get_password().is_some() {
            return Err(
                "the PostgreSQL URL holds a password: remove it, and give the password in \
                 password_env or password_file instead"
                    .into(),
            );
        }
        if let Some(password) = password {
            config.password(password);
        }
        // A server that stops answering (a partition, a dead machine) must turn into an
        // error within seconds, not hang the node's writes for TCP's default hours;
        // settings the URL gives itself are kept.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(UNANSWERED_TIMEOUT);
        }
        if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
            config.keepalives_idle(Duration::from_secs(10));
            config.keepalives_interval(Duration::from_secs(5));
            config.keepalives_retries(3);
        }
        config.application_name("liutong");
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
            .map(|(h, port)| match h {
                tokio_postgres::config::Host::Tcp(h) => format!("{h}:{port}"),
                tokio_postgres::config::Host::Unix(p) => format!("{}:{port}", p.display()),
            })
            .collect();
        let place = format!(
            "{}/{} as {}",
            if hosts.is_empty() {
                "localhost".to_owned()
            } else {
                hosts.join(",")
            },
            config.get_dbname().unwrap_or("(default database)"),
            config.get_user().unwrap_or("(default user)"),
        );
        Ok(Self { config, place })
    }

    /// Where the database is, for messages.
    pub fn place(&self) -> &str {
        &self.place
    }
}

/// One connection and its prepared statements.
pub(crate) struct Conn {
    pub(crate) client: Client,
    statements: HashMap<String, Statement>,
}

impl Conn {
    /// The prepared statement for `sql` on this connection.
    pub(crate) async fn statement(
        &mut self,
        sql: &str,
    ) -> Result<Statement, tokio_postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).await?;
        self.statements.insert(sql.to_owned(), s.clone());
        Ok(s)
    }
}

/// A connection taken from the pool, given back when dropped (unless it broke).
pub(crate) struct Pooled {
    conn: Option<Conn>,
    pool: Arc<Pool>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl std::ops::Deref for Pooled {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("present until dropped")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && !conn.client.is_closed()
        {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
        }
    }
}

/// The connections, opened on demand up to [`POOL_SIZE`].
pub(crate) struct Pool {
    target: PgTarget,
    idle: Mutex<Vec<Conn>>,
    permits: Arc<Semaphore>,
    /// The lease token every write is fenced with, once this engine took the lease.
    token: Mutex<Option<i64>>,
    /// `Some(reason)` once a write was refused because the lease was lost.
    lost: watch::Sender<Option<String>>,
    /// The records read and written, so that reads need no round trip (see the
    /// module's documentation for when it may answer).
    cache: Cache,
}

impl Pool {
    fn token(&self) -> Option<i64> {
        *self.token.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a write transaction on `conn`, fenced by the lease when this engine
    /// holds one: refused with [`PgError::NotLeader`] when the lease is no longer ours.
    pub(crate) async fn begin_write<'a>(
        &self,
        conn: &'a mut Conn,
    ) -> Result<Transaction<'a>, PgError> {
        let Some(token) = self.token() else {
            return Ok(conn.client.transaction().await?);
        };
        let fence = conn.statement(FENCE).await?;
        let tx = conn.client.transaction().await?;
        if tx.query_opt(&fence, &[&token]).await?.is_none() {
            drop(tx);
            return Err(self.refused(token));
        }
        Ok(tx)
    }

    /// Runs one statement that writes and commits it: on its own when unfenced, else in
    /// a fenced transaction. Returns the rows it changed.
    ///
    /// The fenced transaction takes two round trips, not four: BEGIN, the fence and the
    /// write are sent together (the client pipelines requests in the order they are
    /// first polled, and the server runs them in that order), then COMMIT only when
    /// the fence found the lease ours, else ROLLBACK. The write runs after the fence
    /// inside the same transaction, so it is never committed without the lease.
    pub(crate) async fn write_one(
        &self,
        conn: &mut Conn,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, PgError> {
        let statement = conn.statement(sql).await?;
        let Some(token) = self.token() else {
            return Ok(conn.client.execute(&statement, params).await?);
        };
        let fence = conn.statement(FENCE).await?;
        let client = &conn.client;
        let fence_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&token];
        let (begun, fenced, written) = tokio::join!(
            client.batch_execute("BEGIN"),
            client.query_opt(&fence, &fence_params),
            client.execute(&statement, params),
        );
        let outcome = begun
            .and(fenced)
            .and_then(|f| written.map(|n| (f.is_some(), n)));
        match outcome {
            Ok((true, n)) => {
                client.batch_execute("COMMIT").await?;
                Ok(n)
            }
            Ok((false, _)) => {
                client.batch_execute("ROLLBACK").await?;
                Err(self.refused(token))
            }
            Err(e) => {
                // The transaction is aborted (or the connection gone): end it before
                // the connection goes back to the pool.
                let _ = client.batch_execute("ROLLBACK").await;
                Err(e.into())
            }
        }
    }

    /// Records that a write was refused because the lease is no longer this engine's.
    fn refused(&self, token: i64) -> PgError {
        self.cache.suspend();
        self.lost.send_replace(Some(format!(
            "a write was refused: the lease (token {token}) expired or another replica \
             took it"
        )));
        PgError::NotLeader
    }

    pub(crate) async fn get(self: &Arc<Self>) -> Result<Pooled, tokio_postgres::Error> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the pool's semaphore is never closed");
        let idle = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.retain(|c| !c.client.is_closed());
            idle.pop()
        };
        let conn = match idle {
            Some(conn) => conn,
            None => {
                let (client, connection) = self.target.config.connect(NoTls).await?;
                tokio::spawn(async move {
                    // Its end is seen by the client as closed; the error, if any, is
                    // returned to the call that was using it.
                    let _ = connection.await;
                });
                client.batch_execute("SET synchronous_commit = on").await?;
                Conn {
                    client,
                    statements: HashMap::new(),
                }
            }
        };
        Ok(Pooled {
            conn: Some(conn),
            pool: self.clone(),
            _permit: permit,
        })
    }
}

/// The engine's own runtime and connection pool, shared by the trees and the payloads.
pub(crate) struct Pg {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    pub(crate) pool: Arc<Pool>,
}

impl Drop for Pg {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another runtime's task;
        // shutting it down in the background does not.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Pg {
    /// Runs `work` on the engine's runtime and waits for its answer. Errors are
    /// described with where the database is and, for a lost connection, that a write
    /// in flight is not acknowledged.
    pub(crate) fn block<T, F>(&self, work: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, PgError>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(work.await);
        });
        match wait_for(rx) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.describe(&e)),
            Err(_) => Err(format!(
                "the PostgreSQL engine for {} has stopped",
                self.pool.target.place
            )),
        }
    }

    pub(crate) fn describe(&self, e: &PgError) -> String {
        let place = &self.pool.target.place;
        let e = match e {
            PgError::Db(e) => e,
            PgError::NotLeader => {
                return format!(
                    "this replica is no longer the leader: its lease on the database at \
                     {place} expired or another replica took it over, so it may not write \
                     any more; it stops, and its supervisor starts it again as a standby"
                );
            }
        };
        if let Some(db) = e.as_db_error() {
            format!(
                "PostgreSQL at {place} refused: {} (SQLSTATE {})",
                db.message(),
                db.code().code()
            )
        } else if e.is_closed() || e.code().is_none() {
            format!(
                "lost the connection to PostgreSQL at {place} ({e}); a write in flight was \
                 not acknowledged and may or may not have been committed"
            )
        } else {
            format!("PostgreSQL at {place}: {e}")
        }
    }
}

/// Waits for the engine's answer. On a worker of a multi-thread runtime the wait hands
/// the worker's other tasks to another thread first (`block_in_place`), so a round
/// trip to the database does not stall them; elsewhere (a plain thread, a blocking
/// task, a current-thread runtime, where that is not allowed) it simply blocks.
fn wait_for<T>(rx: std::sync::mpsc::Receiver<T>) -> Result<T, std::sync::mpsc::RecvError> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| rx.recv())
        }
        _ => rx.recv(),
    }
}

/// [`Storage`] on a PostgreSQL database.
pub struct PostgresStorage {
    pg: Arc<Pg>,
    blobs: Blobs,
}

impl PostgresStorage {
    /// Connects to the database, creates or migrates its schema, and checks that the
    /// schema is not newer than this binary knows.
    pub fn open(target: PgTarget) -> Result<Arc<Self>, StorageError> {
        let open_err = |reason: String| StorageError::Database {
            place: target.place.clone(),
            reason,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("liutong-postgres")
            .enable_all()
            .build()
            .map_err(|e| open_err(format!("cannot start the engine's threads: {e}")))?;
        let pool = Arc::new(Pool {
            target: target.clone(),
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(POOL_SIZE)),
            token: Mutex::new(None),
            lost: watch::channel(None).0,
            cache: Cache::new(DEFAULT_CACHE_BYTES),
        });
        let pg = Arc::new(Pg {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            pool,
        });
        let p = pg.pool.clone();
        let found = pg
            .block(async move { Ok(migrate(&p).await?) })
            .map_err(open_err)?;
        if found > SCHEMA_VERSION {
            return Err(open_err(format!(
                "its liutong schema is version {found}, newer than this liutong knows \
                 ({SCHEMA_VERSION}): run the newer liutong that wrote it, or point [storage] \
                 url at another database"
            )));
        }
        let durability = Durability::new(None);
        Ok(Arc::new(Self {
            blobs: Blobs::Rows(RowBlobs::new(pg.clone(), durability)),
            pg,
        }))
    }

    /// Whether the database holds no record and no payload.
    pub fn is_empty(&self) -> Result<bool, StorageError> {
        self.run("*", |pool| async move {
            let conn = pool.get().await?;
            let row = conn
                .client
                .query_one(
                    "SELECT (SELECT count(*) FROM liutong_kv) + \
                            (SELECT count(*) FROM liutong_blob_files)",
                    &[],
                )
                .await?;
            Ok(row.get::<_, i64>(0) == 0)
        })
    }

    /// The number of records in every tree.
    pub fn count_records(&self) -> Result<u64, StorageError> {
        self.run("*", |pool| async move {
            let conn = pool.get().await?;
            let row = conn
                .client
                .query_one("SELECT count(*) FROM liutong_kv", &[])
                .await?;
            Ok(row.get::<_, i64>(0) as u64)
        })
    }

    /// Takes the leadership lease for `lease` when it is free or expired (by the
    /// database's clock), in one statement, and from then on fences every write with it.
    /// Returns the lease's new token, or `None` when another replica holds it.
    pub fn acquire_lease(
        &self,
        holder: &str,
        lease: Duration,
    ) -> Result<Option<i64>, StorageError> {
        let (h, ms) = (holder.to_owned(), millis(lease));
        // Held until `lease` after the request left, by any clock: the database's
        // expiry is `lease` after it ran the update, which is later.
        let sent = Instant::now();
        let token = self.run("liutong_lease", |pool| async move {
            let conn = pool.get().await?;
            let row = conn
                .client
                .query_opt(
                    "UPDATE liutong_lease \
                     SET token = token + 1, holder = $1, \
                         expires_at = now() + $2::bigint * interval '1 millisecond' \
                     WHERE id = 1 AND expires_at <= now() RETURNING token",
                    &[&h, &ms],
                )
                .await?;
            Ok(row.map(|r| r.get::<_, i64>(0)))
        })?;
        if let Some(token) = token {
            // Another replica may have written while this one did not lead.
            self.pg.pool.cache.clear();
            self.pg.pool.cache.valid_until(sent + lease);
            *self.pg.pool.token.lock().unwrap_or_else(|p| p.into_inner()) = Some(token);
        }
        Ok(token)
    }

    /// Extends the lease this engine holds by `lease` from now (the database's clock);
    /// `false` when it is no longer held (expired, or taken by another replica).
    pub fn renew_lease(&self, lease: Duration) -> Result<bool, StorageError> {
        let Some(token) = self.pg.pool.token() else {
            return Ok(false);
        };
        let ms = millis(lease);
        let sent = Instant::now();
        let renewed = self.run("liutong_lease", |pool| async move {
            let conn = pool.get().await?;
            let n = conn
                .client
                .execute(
                    "UPDATE liutong_lease \
                     SET expires_at = now() + $2::bigint * interval '1 millisecond' \
                     WHERE id = 1 AND token = $1 AND expires_at > now()",
                    &[&token, &ms],
                )
                .await?;
            Ok(n == 1)
        })?;
        if renewed {
            self.pg.pool.cache.valid_until(sent + lease);
        }
        Ok(renewed)
    }

    /// Gives the lease up (after a graceful stop), so a standby need not wait for it to
    /// expire. Writes refused from here on.
    pub fn release_lease(&self) -> Result<(), StorageError> {
        let Some(token) = self.pg.pool.token() else {
            return Ok(());
        };
        self.pg.pool.cache.suspend();
        self.run("liutong_lease", |pool| async move {
            let conn = pool.get().await?;
            conn.client
                .execute(
                    "UPDATE liutong_lease SET expires_at = now() WHERE id = 1 AND token = $1",
                    &[&token],
                )
                .await?;
            Ok(())
        })
    }

    /// A receiver that holds `Some(reason)` once a write was refused because this
    /// engine's lease was lost.
    pub fn lease_lost(&self) -> watch::Receiver<Option<String>> {
        self.pg.pool.lost.subscribe()
    }

    fn engine_err(tree: &str) -> impl Fn(String) -> StorageError + '_ {
        move |reason| StorageError::Engine {
            tree: tree.to_owned(),
            reason,
        }
    }

    fn run<T, F, Fut>(&self, tree: &str, work: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Pool>) -> Fut,
        Fut: Future<Output = Result<T, PgError>> + Send + 'static,
    {
        self.pg
            .block(work(self.pg.pool.clone()))
            .map_err(Self::engine_err(tree))
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Creates the schema's version table if needed, then, holding an exclusive lock on it
/// (so replicas starting together migrate once), applies the migrations the database
/// lacks. Returns the version found before, which may be newer than this binary's (then
/// nothing is changed).
async fn migrate(pool: &Arc<Pool>) -> Result<i32, tokio_postgres::Error> {
    let mut conn = pool.get().await?;
    let create = "CREATE TABLE IF NOT EXISTS liutong_schema (version integer PRIMARY KEY)";
    if let Err(e) = conn.client.batch_execute(create).await {
        // Two first starts racing on CREATE TABLE IF NOT EXISTS: one of them fails on
        // the catalog's unique index; the table is there now.
        if e.code() != Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
            return Err(e);
        }
    }
    let tx = conn.client.transaction().await?;
    tx.batch_execute("LOCK TABLE liutong_schema IN ACCESS EXCLUSIVE MODE")
        .await?;
    let found: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM liutong_schema", &[])
        .await?
        .get(0);
    if found >= SCHEMA_VERSION {
        tx.rollback().await?;
        return Ok(found);
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO liutong_schema (version) VALUES ($1)",
            &[&(i as i32 + 1)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(found)
}

/// One statement that writes a batch, each record once (its last write), and commits
/// by itself: one round trip. `fence` yields a row only while this engine may write;
/// without one, nothing is written and the answer's first column is 0. Deletes and
/// puts name different records, so their order inside the statement does not matter.
macro_rules! batch_sql {
    ($($fence:tt)*) => {
        concat!(
            "WITH fence AS (",
            $($fence)*,
            "), gone AS (DELETE FROM liutong_kv WHERE EXISTS (SELECT 1 FROM fence) \
               AND (tree, key) IN (SELECT * FROM unnest($2::text[], $3::bytea[])) RETURNING 1), \
             put AS (INSERT INTO liutong_kv (tree, key, value) \
               SELECT * FROM unnest($4::text[], $5::bytea[], $6::bytea[]) \
               WHERE EXISTS (SELECT 1 FROM fence) \
               ON CONFLICT (tree, key) DO UPDATE SET value = EXCLUDED.value RETURNING 1) \
             SELECT (SELECT count(*) FROM fence), (SELECT count(*) FROM gone)"
        )
    };
}

/// Inserts one record only if its key is absent, in one statement (see [`batch_sql`]);
/// the answer's second column counts the rows inserted.
macro_rules! insert_new_sql {
    ($($fence:tt)*) => {
        concat!(
            "WITH fence AS (",
            $($fence)*,
            "), put AS (INSERT INTO liutong_kv (tree, key, value) \
               SELECT $2::text, $3::bytea, $4::bytea WHERE EXISTS (SELECT 1 FROM fence) \
               ON CONFLICT (tree, key) DO NOTHING RETURNING 1) \
             SELECT (SELECT count(*) FROM fence), (SELECT count(*) FROM put)"
        )
    };
}

/// The fence of an engine that holds the lease, inside the writing statement: the
/// lease row, locked `FOR SHARE` until the statement commits (see the module's
/// documentation).
macro_rules! fenced {
    () => {
        "SELECT 1 FROM liutong_lease WHERE id = 1 AND token = $1 AND expires_at > now() FOR SHARE"
    };
}

const BATCH: &str = batch_sql!("SELECT $1::bigint");
const BATCH_FENCED: &str = batch_sql!(fenced!());
const INSERT_NEW: &str = insert_new_sql!("SELECT $1::bigint");
const INSERT_NEW_FENCED: &str = insert_new_sql!(fenced!());

/// A record a batch writes: its tree, its key, and what the batch leaves in it
/// (`None`: deleted).
type Outcome = (String, Vec<u8>, Option<Vec<u8>>);

/// Each record `writes` touch, once, with what the last write to it leaves, in the order
/// each was first written.
fn outcomes(writes: Vec<(String, Write)>) -> Vec<Outcome> {
    use std::collections::hash_map::Entry;
    let mut at: HashMap<(String, Vec<u8>), usize> = HashMap::new();
    let mut out: Vec<Outcome> = Vec::with_capacity(writes.len());
    for (tree, write) in writes {
        let (key, value) = match write {
            Write::Put(k, v) => (k, Some(v)),
            Write::Delete(k) => (k, None),
        };
        match at.entry((tree.clone(), key.clone())) {
            Entry::Occupied(e) => out[*e.get()].2 = value,
            Entry::Vacant(e) => {
                e.insert(out.len());
                out.push((tree, key, value));
            }
        }
    }
    out
}

impl Pool {
    /// Writes `records` in one statement, fenced when this engine holds the lease.
    async fn write_batch(self: Arc<Self>, records: Vec<Outcome>) -> Result<(), PgError> {
        let (mut gone_trees, mut gone_keys) = (Vec::new(), Vec::new());
        let (mut put_trees, mut put_keys, mut put_values) = (Vec::new(), Vec::new(), Vec::new());
        for (tree, key, value) in records {
            match value {
                Some(value) => {
                    put_trees.push(tree);
                    put_keys.push(key);
                    put_values.push(value);
                }
                None => {
                    gone_trees.push(tree);
                    gone_keys.push(key);
                }
            }
        }
        let token = self.token();
        let mut conn = self.get().await?;
        let statement = conn
            .statement(if token.is_some() { BATCH_FENCED } else { BATCH })
            .await?;
        let row = conn
            .client
            .query_one(
                &statement,
                &[
                    &token.unwrap_or(0),
                    &gone_trees,
                    &gone_keys,
                    &put_trees,
                    &put_keys,
                    &put_values,
                ],
            )
            .await?;
        match token {
            Some(token) if row.get::<_, i64>(0) == 0 => Err(self.refused(token)),
            _ => Ok(()),
        }
    }

    /// Inserts `tree`/`key` = `value` in one statement if the key is absent; whether it
    /// did.
    async fn insert_new(
        self: Arc<Self>,
        tree: String,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<bool, PgError> {
        let token = self.token();
        let mut conn = self.get().await?;
        let statement = conn
            .statement(if token.is_some() {
                INSERT_NEW_FENCED
            } else {
                INSERT_NEW
            })
            .await?;
        let row = conn
            .client
            .query_one(&statement, &[&token.unwrap_or(0), &tree, &key, &value])
            .await?;
        match token {
            Some(token) if row.get::<_, i64>(0) == 0 => Err(self.refused(token)),
            _ => Ok(row.get::<_, i64>(1) == 1),
        }
    }
}

/// The first key after every key that starts with `prefix`; `None` when there is none
/// (the prefix is empty or all 0xff).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Keys and values of `tree` that start with `prefix`, after `after`, at most `limit`.
async fn scan(
    pool: Arc<Pool>,
    tree: String,
    prefix: Vec<u8>,
    after: Option<Vec<u8>>,
    limit: Option<i64>,
) -> Result<Entries, PgError> {
    let end = prefix_end(&prefix);
    let mut sql = String::from("SELECT key, value FROM liutong_kv WHERE tree = $1 AND key >= $2");
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&tree, &prefix];
    if let Some(after) = &after {
        params.push(after);
        sql.push_str(&format!(" AND key > ${}", params.len()));
    }
    if let Some(end) = &end {
        params.push(end);
        sql.push_str(&format!(" AND key < ${}", params.len()));
    }
    sql.push_str(" ORDER BY key");
    if let Some(limit) = &limit {
        params.push(limit);
        sql.push_str(&format!(" LIMIT ${}", params.len()));
    }
    let mut conn = pool.get().await?;
    let statement = conn.statement(&sql).await?;
    let rows = conn.client.query(&statement, &params).await?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

impl PostgresStorage {
    /// Writes `writes` in one statement (one transaction), keeping the cache exact: the
    /// records leave it while the statement is in flight and come back with their new
    /// values only once the commit is confirmed.
    fn write(&self, tree: &str, writes: Vec<(String, Write)>) -> Result<(), StorageError> {
        let records = outcomes(writes);
        let flight = self
            .pg
            .pool
            .cache
            .writing(records.iter().map(|(t, k, _)| cache::slot(t, k)).collect());
        let values = records.iter().map(|(_, _, v)| v.clone()).collect();
        self.run(tree, |pool| pool.write_batch(records))?;
        flight.committed(values);
        Ok(())
    }
}

impl Storage for PostgresStorage {
    /// From the cache when it knows the record, else from the database.
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let fill = match self.pg.pool.cache.lookup(tree, key) {
            Lookup::Hit(Known::Record(value)) => return Ok(value),
            Lookup::Hit(Known::Scan(_)) => unreachable!("a record's place holds a record"),
            Lookup::Miss(fill) => fill,
        };
        let (t, k) = (tree.to_owned(), key.to_vec());
        let value = self.run(tree, |pool| async move {
            let mut conn = pool.get().await?;
            let s = conn
                .statement("SELECT value FROM liutong_kv WHERE tree = $1 AND key = $2")
                .await?;
            Ok(conn
                .client
                .query_opt(&s, &[&t, &k])
                .await?
                .map(|r| r.get(0)))
        })?;
        fill.complete(Known::Record(value.clone()));
        Ok(value)
    }

    fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        let write = Write::Put(key.to_vec(), value.to_vec());
        self.write(tree, vec![(tree.to_owned(), write)])
    }

    fn delete(&self, tree: &str, key: &[u8]) -> Result<(), StorageError> {
        self.write(tree, vec![(tree.to_owned(), Write::Delete(key.to_vec()))])
    }

    fn insert_new(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<bool, StorageError> {
        let flight = self.pg.pool.cache.writing(vec![cache::slot(tree, key)]);
        let (t, k, v) = (tree.to_owned(), key.to_vec(), value.to_vec());
        let inserted = self.run(tree, |pool| pool.insert_new(t, k, v))?;
        if inserted {
            flight.committed(vec![Some(value.to_vec())]);
        }
        // Not inserted: the key holds a value this call did not read; the next read
        // asks the database.
        Ok(inserted)
    }

    /// Here the whole batch is one statement: all of it or none.
    fn apply(&self, tree: &str, writes: Vec<Write>) -> Result<(), StorageError> {
        let writes = writes.into_iter().map(|w| (tree.to_owned(), w)).collect();
        self.write(tree, writes)
    }

    /// Here the whole batch is one statement: all of it or none.
    fn apply_trees(&self, writes: Vec<(&str, Write)>) -> Result<(), StorageError> {
        let writes = writes.into_iter().map(|(t, w)| (t.to_owned(), w)).collect();
        self.write("*", writes)
    }

    /// From the cache when it holds this scan, else from the database.
    fn scan_prefix(&self, tree: &str, prefix: &[u8]) -> Result<Entries, StorageError> {
        let fill = match self.pg.pool.cache.lookup_scan(tree, prefix) {
            Lookup::Hit(Known::Scan(entries)) => return Ok(entries),
            Lookup::Hit(Known::Record(_)) => unreachable!("a scan's place holds a scan"),
            Lookup::Miss(fill) => fill,
        };
        let (t, p) = (tree.to_owned(), prefix.to_vec());
        let entries = self.run(tree, |pool| scan(pool, t, p, None, None))?;
        fill.complete(Known::Scan(entries.clone()));
        Ok(entries)
    }

    fn scan_page(
        &self,
        tree: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StorageError> {
        let (t, p, a) = (tree.to_owned(), prefix.to_vec(), after.map(<[u8]>::to_vec));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(tree, |pool| scan(pool, t, p, a, Some(limit)))
    }

    fn blobs(&self) -> &Blobs {
        &self.blobs
    }

    /// Every write committed durably before it returned: nothing is left to flush.
    fn flush(&self) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move { self.blobs.durability().check() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_a_prefix_is_the_first_key_after_it() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[b'a', 0xff]), Some(b"b".to_vec()));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn a_password_in_the_url_is_refused_and_never_shown() {
        let err = PgTarget::new("postgresql://liutong:s3cret@db:5433/node", None)
            .err()
            .unwrap();
        assert!(err.contains("holds a password"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        let target = PgTarget::new("postgresql://liutong@db:5433/node", Some("s3cret")).unwrap();
        assert_eq!(target.place(), "db:5433/node as liutong");
    }
}
