//! Payloads as rows of the PostgreSQL database: `liutong_blob_files (name, len)` and
//! `liutong_blob_chunks (name, chunk_index, data)` with chunks of at most [`CHUNK`]
//! bytes, so one database holds the whole node. Every write commits at once
//! (`synchronous_commit = on`), so [`RowBlobWriter::sync`] has nothing left to do. A
//! payload's row is locked (`FOR UPDATE`) by every change, so two writers of one
//! payload (a copy and its entries) never lose each other's bytes in a shared chunk.

use std::io;
use std::sync::Arc;

use tokio_postgres::IsolationLevel;

use crate::storage::durability::Durability;
use crate::storage::postgres::{Pg, PgError, Pool};

/// The largest chunk row.
pub const CHUNK: u64 = 1 << 20;

/// The payloads of a node on PostgreSQL.
pub struct RowBlobs {
    pg: Arc<Pg>,
    durability: Arc<Durability>,
}

fn other(reason: String) -> io::Error {
    io::Error::other(reason)
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("there is no payload {name:?}"),
    )
}

impl RowBlobs {
    pub(crate) fn new(pg: Arc<Pg>, durability: Arc<Durability>) -> Self {
        Self { pg, durability }
    }

    pub(crate) fn durability(&self) -> &Arc<Durability> {
        &self.durability
    }

    fn block<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T, PgError>> + Send + 'static,
    ) -> io::Result<T> {
        self.pg.block(work).map_err(other)
    }

    fn pool(&self) -> Arc<Pool> {
        self.pg.pool.clone()
    }

    pub fn writer(&self, name: &str) -> io::Result<RowBlobWriter> {
        self.durability.check().map_err(io::Error::other)?;
        super::FileBlobs::check_name(name)?;
        let (pool, n) = (self.pool(), name.to_owned());
        self.block(async move {
            let mut conn = pool.get().await?;
            let sql = "INSERT INTO liutong_blob_files (name, len) VALUES ($1, 0) \
                       ON CONFLICT (name) DO NOTHING";
            pool.write_one(&mut conn, sql, &[&n]).await.map(drop)
        })?;
        Ok(RowBlobWriter {
            pg: self.pg.clone(),
            name: name.to_owned(),
            staged: Vec::new(),
        })
    }

    pub fn read_at(&self, name: &str, offset: u64, max: usize) -> io::Result<Option<Vec<u8>>> {
        super::FileBlobs::check_name(name)?;
        let (pool, n) = (self.pool(), name.to_owned());
        self.block(async move {
            let mut conn = pool.get().await?;
            // One snapshot for the length and the chunks.
            let tx = conn
                .client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let Some(row) = tx
                .query_opt("SELECT len FROM liutong_blob_files WHERE name = $1", &[&n])
                .await?
            else {
                return Ok(None);
            };
            let len = row.get::<_, i64>(0) as u64;
            let end = len.min(offset.saturating_add(max as u64));
            if offset >= end {
                return Ok(Some(Vec::new()));
            }
            let (first, last) = ((offset / CHUNK) as i64, ((end - 1) / CHUNK) as i64);
            let rows = tx
                .query(
                    "SELECT chunk_index, data FROM liutong_blob_chunks \
                     WHERE name = $1 AND chunk_index >= $2 AND chunk_index <= $3 \
                     ORDER BY chunk_index",
                    &[&n, &first, &last],
                )
                .await?;
            tx.commit().await?;
            // Bytes never written (a hole, or past a chunk's end) read as zeros.
            let mut out = vec![0u8; (end - offset) as usize];
            for row in rows {
                let index = row.get::<_, i64>(0) as u64;
                let data: &[u8] = row.get(1);
                let start = index * CHUNK;
                let from = offset.max(start);
                let to = end.min(start + data.len() as u64);
                if from < to {
                    out[(from - offset) as usize..(to - offset) as usize]
                        .copy_from_slice(&data[(from - start) as usize..(to - start) as usize]);
                }
            }
            Ok(Some(out))
        })
    }

    pub fn len(&self, name: &str) -> io::Result<Option<u64>> {
        super::FileBlobs::check_name(name)?;
        let (pool, n) = (self.pool(), name.to_owned());
        self.block(async move {
            let conn = pool.get().await?;
            Ok(conn
                .client
                .query_opt("SELECT len FROM liutong_blob_files WHERE name = $1", &[&n])
                .await?
                .map(|r| r.get::<_, i64>(0) as u64))
        })
    }

    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.durability.check().map_err(io::Error::other)?;
        super::FileBlobs::check_name(from)?;
        super::FileBlobs::check_name(to)?;
        let (pool, f, t) = (self.pool(), from.to_owned(), to.to_owned());
        let found = self.block(async move {
            let mut conn = pool.get().await?;
            let tx = pool.begin_write(&mut conn).await?;
            let found = tx
                .query_opt(
                    "SELECT len FROM liutong_blob_files WHERE name = $1 FOR UPDATE",
                    &[&f],
                )
                .await?
                .is_some();
            if !found || f == t {
                tx.rollback().await?;
                return Ok(found);
            }
            for sql in [
                "DELETE FROM liutong_blob_chunks WHERE name = $1",
                "DELETE FROM liutong_blob_files WHERE name = $1",
            ] {
                tx.execute(sql, &[&t]).await?;
            }
            for sql in [
                "UPDATE liutong_blob_files SET name = $2 WHERE name = $1",
                "UPDATE liutong_blob_chunks SET name = $2 WHERE name = $1",
            ] {
                tx.execute(sql, &[&f, &t]).await?;
            }
            tx.commit().await?;
            Ok(true)
        })?;
        if found { Ok(()) } else { Err(not_found(from)) }
    }

    pub fn remove(&self, name: &str) -> io::Result<()> {
        self.durability.check().map_err(io::Error::other)?;
        super::FileBlobs::check_name(name)?;
        let (pool, n) = (self.pool(), name.to_owned());
        self.block(async move {
            let mut conn = pool.get().await?;
            let tx = pool.begin_write(&mut conn).await?;
            tx.execute("DELETE FROM liutong_blob_chunks WHERE name = $1", &[&n])
                .await?;
            tx.execute("DELETE FROM liutong_blob_files WHERE name = $1", &[&n])
                .await?;
            Ok(tx.commit().await?)
        })
    }

    pub fn all(&self) -> io::Result<Vec<String>> {
        let pool = self.pool();
        let mut names = self.block(async move {
            let conn = pool.get().await?;
            let rows = conn
                .client
                .query("SELECT name FROM liutong_blob_files", &[])
                .await?;
            Ok(rows
                .into_iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>())
        })?;
        // Sorted bytewise here, whatever the database's collation.
        names.sort();
        Ok(names)
    }

    pub fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        super::FileBlobs::check_name(dir)?;
        let (pool, prefix) = (self.pool(), format!("{dir}/"));
        let names = self.block(async move {
            let conn = pool.get().await?;
            let rows = conn
                .client
                .query(
                    "SELECT name FROM liutong_blob_files \
                     WHERE substr(name, 1, length($1)) = $1",
                    &[&prefix],
                )
                .await?;
            Ok(rows
                .into_iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>())
        })?;
        let mut entries: Vec<String> = names
            .iter()
            .filter_map(|n| n.get(dir.len() + 1..))
            .map(|rest| rest.split('/').next().unwrap_or(rest).to_owned())
            .collect();
        entries.sort();
        entries.dedup();
        Ok(entries)
    }
}

/// Writes one payload's rows; every call commits.
pub struct RowBlobWriter {
    pg: Arc<Pg>,
    name: String,
    /// The [`staging`](Self::staging) buffer.
    staged: Vec<u8>,
}

impl RowBlobWriter {
    /// A buffer of `len` bytes to fill and then write with
    /// [`write_staged_at`](Self::write_staged_at), kept between writes.
    pub fn staging(&mut self, len: usize) -> &mut [u8] {
        self.staged.resize(len, 0);
        &mut self.staged[..len]
    }

    /// Writes the first `len` bytes of the [`staging`](Self::staging) buffer at `offset`.
    pub fn write_staged_at(&mut self, offset: u64, len: usize) -> io::Result<()> {
        if len > self.staged.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "write_staged_at: more bytes than the staging buffer was asked for",
            ));
        }
        let staged = std::mem::take(&mut self.staged);
        let written = self.write_at(offset, &staged[..len]);
        self.staged = staged;
        written
    }

    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let (pool, n, data) = (self.pg.pool.clone(), self.name.clone(), data.to_vec());
        let found = self.pg.block(async move {
            let mut conn = pool.get().await?;
            let upsert = conn
                .statement(
                    "INSERT INTO liutong_blob_chunks (name, chunk_index, data) \
                     VALUES ($1, $2, $3) \
                     ON CONFLICT (name, chunk_index) DO UPDATE SET data = EXCLUDED.data",
                )
                .await?;
            let tx = pool.begin_write(&mut conn).await?;
            let Some(row) = tx
                .query_opt(
                    "SELECT len FROM liutong_blob_files WHERE name = $1 FOR UPDATE",
                    &[&n],
                )
                .await?
            else {
                tx.rollback().await?;
                return Ok(false);
            };
            let len = row.get::<_, i64>(0) as u64;
            let end = offset + data.len() as u64;
            let mut at = offset;
            while at < end {
                let index = at / CHUNK;
                let start = index * CHUNK;
                let piece_end = end.min(start + CHUNK);
                let piece = &data[(at - offset) as usize..(piece_end - offset) as usize];
                // A chunk's rows never reach past the payload's length, so a piece that
                // starts the chunk and reaches the length (or the chunk's end) replaces
                // it; any other piece goes into what the chunk holds.
                let chunk = if at == start && (piece_end == start + CHUNK || piece_end >= len) {
                    piece.to_vec()
                } else {
                    let old: Vec<u8> = tx
                        .query_opt(
                            "SELECT data FROM liutong_blob_chunks \
                             WHERE name = $1 AND chunk_index = $2",
                            &[&n, &(index as i64)],
                        )
                        .await?
                        .map(|r| r.get(0))
                        .unwrap_or_default();
                    let mut chunk = old;
                    let (from, to) = ((at - start) as usize, (piece_end - start) as usize);
                    if chunk.len() < to {
                        chunk.resize(to, 0);
                    }
                    chunk[from..to].copy_from_slice(piece);
                    chunk
                };
                tx.execute(&upsert, &[&n, &(index as i64), &chunk]).await?;
                at = piece_end;
            }
            if end > len {
                tx.execute(
                    "UPDATE liutong_blob_files SET len = $2 WHERE name = $1",
                    &[&n, &(end as i64)],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(true)
        });
        match found.map_err(other)? {
            true => Ok(()),
            false => Err(not_found(&self.name)),
        }
    }

    pub fn set_len(&self, len: u64) -> io::Result<()> {
        let (pool, n) = (self.pg.pool.clone(), self.name.clone());
        let found = self.pg.block(async move {
            let mut conn = pool.get().await?;
            let tx = pool.begin_write(&mut conn).await?;
            if tx
                .query_opt(
                    "SELECT len FROM liutong_blob_files WHERE name = $1 FOR UPDATE",
                    &[&n],
                )
                .await?
                .is_none()
            {
                tx.rollback().await?;
                return Ok(false);
            }
            let whole = len.div_ceil(CHUNK) as i64;
            tx.execute(
                "DELETE FROM liutong_blob_chunks WHERE name = $1 AND chunk_index >= $2",
                &[&n, &whole],
            )
            .await?;
            let rest = (len % CHUNK) as i32;
            if rest != 0 {
                tx.execute(
                    "UPDATE liutong_blob_chunks SET data = substr(data, 1, $3) \
                     WHERE name = $1 AND chunk_index = $2 AND length(data) > $3",
                    &[&n, &((len / CHUNK) as i64), &rest],
                )
                .await?;
            }
            tx.execute(
                "UPDATE liutong_blob_files SET len = $2 WHERE name = $1",
                &[&n, &(len as i64)],
            )
            .await?;
            tx.commit().await?;
            Ok(true)
        });
        match found.map_err(other)? {
            true => Ok(()),
            false => Err(not_found(&self.name)),
        }
    }

    /// Every write committed durably before it returned.
    pub fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}
