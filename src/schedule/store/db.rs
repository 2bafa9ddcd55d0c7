//! The writer's connection to a store file and what it knows of the
//! store: its schema set up or brought up to date, its reads, and its
//! writes ([`Db::apply`]), made by the store's log (see [`behind`]) or,
//! where there is none, directly.
//!
//! [`behind`]: super::behind

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OptionalExtension, params};

use super::batch::{Batch, LogMark};
use super::query::{self, DueKey, DuePage};
use super::{
    APPLICATION_ID, Opening, Record, SCHEMA_VERSION, StoreError, UnreadableWork, checkpoint, ids,
    io, migrate,
};
use crate::schedule::request::WorkQuery;

/// The writer's connection and what it knows of the store.
pub(super) struct Db {
    /// Checkpoints the WAL off the writer's thread (see [`checkpoint`]);
    /// dropped first, so the writer's connection closes last.
    checkpointer: Option<checkpoint::Checkpointer>,
    conn: Connection,
    path: PathBuf,
    /// Where `sqlite_sequence` stands (see [`ids`]).
    ids: ids::IdReserve,
    /// Handler names known to be in `work_handlers` (see [`query`]).
    handlers: HashSet<String>,
}

impl Db {
    /// Opens the store file at `path` (locked by the caller), refusing
    /// what is not ours, setting up a new store or bringing an older one
    /// to this build's schema.
    pub(super) fn open(path: &Path) -> Result<Db, StoreError> {
        let conn = Connection::open(path).map_err(io)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(io)?;
        let mut db = Db {
            checkpointer: None,
            conn,
            path: path.to_path_buf(),
            ids: ids::IdReserve::default(),
            handlers: HashSet::new(),
        };
        db.check_and_init()?;
        db.start_checkpointer();
        Ok(db)
    }

    /// How many checkpoints the store's checkpointer has run (`None`:
    /// SQLite's own checkpoints are on).
    #[cfg(test)]
    pub(super) fn checkpoints(&self) -> Option<u64> {
        self.checkpointer.as_ref().map(|c| c.checkpoints())
    }

    /// SQLite's `wal_autocheckpoint` on the writer's connection.
    #[cfg(test)]
    pub(super) fn autocheckpoint(&self) -> i64 {
        self.conn
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap_or(-1)
    }

    /// How far the store's log is folded in (`None`: never yet).
    pub(super) fn log_mark(&self) -> Result<Option<LogMark>, StoreError> {
        let row: Option<(i64, i64)> = self
            .conn
            .query_row(
                "SELECT generation, end_offset FROM store_log WHERE id = 0",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(io)?;
        Ok(row.map(|(g, o)| LogMark {
            generation: g.max(0).unsigned_abs(),
            offset: o.max(0).unsigned_abs(),
        }))
    }

    /// The readable works `query` selects, by id.
    pub(super) fn select(&self, query: &WorkQuery) -> Result<Vec<Record>, StoreError> {
        query::select(&self.conn, query)
    }

    /// The readable enqueued works `query` selects, in no order.
    pub(super) fn enqueued(&self, query: &WorkQuery) -> Result<Vec<Record>, StoreError> {
        query::enqueued(&self.conn, query)
    }

    /// Hands the WAL's checkpoints to a thread of their own, leaving the
    /// writer's connection SQLite's own at [`checkpoint::WRITER_PAGES`]
    /// pages instead of 1,000 (see [`checkpoint`]); leaves them as they
    /// were if that thread cannot be had.
    fn start_checkpointer(&mut self) {
        let Ok(page_size) = self
            .conn
            .query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))
        else {
            return;
        };
        let Some(checkpointer) =
            checkpoint::Checkpointer::start(&self.path, page_size.unsigned_abs())
        else {
            return;
        };
        if self
            .conn
            .pragma_update(None, "wal_autocheckpoint", checkpoint::WRITER_PAGES)
            .is_ok()
        {
            self.checkpointer = Some(checkpointer);
        }
    }

    /// Refuses what is not ours before writing anything; sets up a new
    /// store, or brings an older one to this build's schema.
    fn check_and_init(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        let not_db = |e: rusqlite::Error| match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => StoreError::NotADatabase { path: path.clone() },
            Some(ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
                path: path.clone(),
                detail: e.to_string(),
            },
            _ => io(e),
        };
        let app: i32 = self
            .conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(not_db)?;
        let version: i32 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(not_db)?;
        let tables: i64 = self
            .conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(not_db)?;
        if app == 0 && tables == 0 {
            // A new (empty) database: make it ours.
            self.conn
                .pragma_update(None, "journal_mode", "WAL")
                .map_err(io)?;
            self.conn
                .execute_batch(&format!(
                    "BEGIN;
                     -- AUTOINCREMENT: sqlite_sequence keeps the highest id ever
                     -- stored, so ids of deleted (pruned) works are not reused.
                     -- layout: the row layout `record` was written in (see layout.rs).
                     -- handler, state, due, uniq: see store/query.rs.
                     CREATE TABLE works (id INTEGER PRIMARY KEY AUTOINCREMENT, record BLOB NOT NULL,
                                         layout INTEGER, handler TEXT, state INTEGER,
                                         due INTEGER, uniq TEXT);
                     {}
                     {}
                     PRAGMA application_id = {APPLICATION_ID};
                     PRAGMA user_version = {SCHEMA_VERSION};
                     COMMIT;",
                    migrate::INDEXES,
                    migrate::LOG_TABLE
                ))
                .map_err(io)?;
        } else if app != APPLICATION_ID {
            return Err(StoreError::Foreign {
                path,
                application_id: app,
            });
        } else if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path,
                version,
                supported: SCHEMA_VERSION,
            });
        } else {
            let check: String = self
                .conn
                .query_row("PRAGMA quick_check", [], |r| r.get(0))
                .map_err(not_db)?;
            if check != "ok" {
                return Err(StoreError::Corrupt {
                    path,
                    detail: check,
                });
            }
            self.conn
                .pragma_update(None, "journal_mode", "WAL")
                .map_err(io)?;
            migrate::run(&mut self.conn, version, &path)?;
        }
        // WAL with NORMAL sync: a commit survives the process being
        // killed; only a power cut can lose the last commits.
        self.conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(io)?;
        Ok(())
    }

    /// Reads every row.
    pub(super) fn load(&self) -> Result<(Vec<Record>, Vec<UnreadableWork>), StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, layout, record FROM works ORDER BY id")
            .map_err(io)?;
        let mut rows = stmt.query([]).map_err(io)?;
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        while let Some(row) = rows.next().map_err(io)? {
            match query::read_row(row).map_err(io)? {
                Ok(rec) => good.push(rec),
                Err(why) => bad.push(why),
            }
        }
        Ok((good, bad))
    }

    /// What a manager loads when it starts: every work that is not
    /// enqueued, and the first `page` enqueued works by (due, id); see
    /// [`Opening`].
    pub(super) fn opening(&self, page: usize) -> Result<Opening, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, layout, record, state IS NULL FROM works INDEXED BY works_held
                 WHERE state IS NOT 0 ORDER BY id",
            )
            .map_err(io)?;
        let mut rows = stmt.query([]).map_err(io)?;
        let mut opening = Opening::default();
        while let Some(row) = rows.next().map_err(io)? {
            let unindexed: bool = row.get(3).map_err(io)?;
            match query::read_row(row).map_err(io)? {
                Ok(rec) => {
                    if unindexed {
                        opening.unindexed.push(rec.id);
                    }
                    opening.records.push(query::with_implicit_tag(rec));
                }
                Err(why) => opening.unreadable.push(why),
            }
        }
        let (due, horizon) = query::due_after(&self.conn, None, page, &mut opening.unreadable)?;
        query::foreign_dues(&self.conn, &mut opening.unreadable)?;
        opening.records.extend(due);
        opening.unreadable.sort_by_key(|u| u.id);
        opening.horizon = horizon;
        Ok(opening)
    }

    /// The next `n` enqueued works after `after` in (due, id) order, and
    /// the key of the last, if more may follow. Rows that cannot be read
    /// are logged and left in the store as they are.
    pub(super) fn due_after(&self, after: DueKey, n: usize) -> Result<DuePage, StoreError> {
        let mut unreadable = Vec::new();
        let page = query::due_after(&self.conn, Some(after), n, &mut unreadable)?;
        for bad in unreadable {
            tracing::warn!(target: "isolates", work = %bad.id, reason = %bad.reason,
                "a stored work could not be read; it is left in the store untouched");
        }
        Ok(page)
    }

    /// The highest id the store ever held, readable or not, deleted or
    /// not: ids are never reused.
    pub(super) fn max_id(&self) -> Result<u64, StoreError> {
        let max: Option<i64> = self
            .conn
            .query_row("SELECT max(id) FROM works", [], |r| r.get(0))
            .optional()
            .map_err(io)?
            .flatten();
        let sequence: bool = self
            .conn
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'sqlite_sequence'",
                [],
                |r| r.get(0),
            )
            .map_err(io)?;
        let ever: Option<i64> = if sequence {
            self.conn
                .query_row(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'works'",
                    [],
                    |r| r.get(0),
                )
                .optional()
                .map_err(io)?
        } else {
            None
        };
        match max.max(ever) {
            // A row from elsewhere took the last ids: new work could not be
            // stored.
            Some(i64::MAX) => Err(StoreError::Corrupt {
                path: self.path.clone(),
                detail: format!("a row has the id {}, the last there is", i64::MAX),
            }),
            m => Ok(m.map_or(0, |m| m.max(0).unsigned_abs())),
        }
    }

    /// Writes `batches` in order in one transaction: each one's works put
    /// and deleted; the works its `retag` names (new, or their tags
    /// changed) have their tags written, their old tag rows deleted first
    /// where the flag says there may be some. Every put writes a whole
    /// row and every delete removes one, so writing a batch again leaves
    /// the store as it was. `folded`, with a log: how far it is folded
    /// once these are (see [`behind`]), written in the same transaction.
    pub(super) fn apply(
        &mut self,
        batches: &[Batch],
        folded: Option<LogMark>,
    ) -> Result<(), StoreError> {
        if batches.is_empty() && folded.is_none() {
            return Ok(());
        }
        let guard = WriteTx::begin(&self.conn).map_err(io)?;
        let tx = guard.conn;
        // Deleted ids count: a work pruned in the turn that made it was
        // never put, and its id must not be handed out again either.
        let max = batches
            .iter()
            .flat_map(|b| b.puts.iter().map(|p| p.id).chain(b.deletes.iter().copied()))
            .filter_map(|id| i64::try_from(id).ok())
            .max();
        let covered = self.ids.cover(tx, max).map_err(io)?;
        // Handler names written in this transaction.
        let mut fresh: Vec<&str> = Vec::new();
        let mut works = 0;
        {
            let mut put = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO works (id, record, layout, handler, state, due, uniq)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(io)?;
            // A new work's id is fresh: a plain insert (no REPLACE, which
            // looks for a row to delete and keeps a statement journal).
            let mut add = tx
                .prepare_cached(
                    "INSERT INTO works (id, record, layout, handler, state, due, uniq)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(io)?;
            // A stored work changes in place: cheaper than a REPLACE,
            // which deletes the row and inserts it again.
            let mut change = tx
                .prepare_cached(
                    "UPDATE works SET record = ?2, layout = ?3, handler = ?4, state = ?5,
                     due = ?6, uniq = ?7 WHERE id = ?1",
                )
                .map_err(io)?;
            let mut tag = tx
                .prepare_cached("INSERT OR IGNORE INTO work_tags (tag, id) VALUES (?1, ?2)")
                .map_err(io)?;
            for batch in batches {
                works += batch.puts.len() + batch.deletes.len();
                for p in &batch.puts {
                    let id =
                        i64::try_from(p.id).map_err(|_| StoreError::Io("id overflow".into()))?;
                    let Some(rec) = &p.rec else {
                        // Read back from a log in a layout this build does
                        // not read: stored as it is, reported unreadable.
                        query::untag(tx, id)?;
                        let none: Option<i64> = None;
                        put.execute(params![id, p.bytes, p.layout, none, none, none, none])
                            .map_err(io)?;
                        continue;
                    };
                    let (handler, state, due, uniq) = query::columns(rec);
                    let tags = batch.retag.get(&p.id).copied();
                    if tags == Some(true) {
                        query::untag(tx, id)?;
                    }
                    let row = params![id, p.bytes, p.layout, handler, state, due, uniq];
                    // A new work (tags to put, none to delete) is not stored
                    // yet; another most likely is.
                    let done = if tags == Some(false) {
                        match add.execute(row) {
                            Ok(_) => true,
                            // Stored after all: replaced below.
                            Err(rusqlite::Error::SqliteFailure(e, _))
                                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                            {
                                false
                            }
                            Err(e) => return Err(io(e)),
                        }
                    } else {
                        change.execute(row).map_err(io)? == 1
                    };
                    if !done {
                        put.execute(row).map_err(io)?;
                    }
                    if tags.is_some() {
                        for t in query::explicit_tags(rec) {
                            tag.execute(params![t, id]).map_err(io)?;
                        }
                    }
                    if !self.handlers.contains(&rec.handler)
                        && !fresh.contains(&rec.handler.as_str())
                    {
                        tx.prepare_cached("INSERT OR IGNORE INTO work_handlers (name) VALUES (?1)")
                            .map_err(io)?
                            .execute([&rec.handler])
                            .map_err(io)?;
                        fresh.push(&rec.handler);
                    }
                }
                if !batch.deletes.is_empty() {
                    let mut del = tx
                        .prepare_cached("DELETE FROM works WHERE id = ?1")
                        .map_err(io)?;
                    for &id in &batch.deletes {
                        let id =
                            i64::try_from(id).map_err(|_| StoreError::Io("id overflow".into()))?;
                        query::untag(tx, id)?;
                        del.execute(params![id]).map_err(io)?;
                    }
                }
            }
        }
        if let Some(mark) = folded {
            let at =
                |n: u64| i64::try_from(n).map_err(|_| StoreError::Io("log mark overflow".into()));
            tx.prepare_cached(
                "INSERT OR REPLACE INTO store_log (id, generation, end_offset) VALUES (0, ?1, ?2)",
            )
            .map_err(io)?
            .execute(params![at(mark.generation)?, at(mark.offset)?])
            .map_err(io)?;
        }
        guard.commit().map_err(io)?;
        if let Some(checkpointer) = &mut self.checkpointer {
            checkpointer.wrote(works);
        }
        self.ids.committed(covered);
        self.handlers.extend(fresh.into_iter().map(str::to_owned));
        Ok(())
    }

    /// At a clean stop, after the last write: gives back the ids set aside
    /// ahead of those written (see [`ids`]), so the next start numbers on
    /// from the highest id stored.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] if the store cannot be written; ids after the
    /// next start then skip the ones set aside, and stay unique.
    pub(super) fn release_ids(&mut self) -> Result<(), StoreError> {
        self.ids.release(&self.conn).map_err(io)
    }
}

/// A write's transaction, its `BEGIN` and `COMMIT` prepared once for the
/// connection (rusqlite's `Transaction` parses them at every write); rolled
/// back if dropped uncommitted, as rusqlite's is.
struct WriteTx<'c> {
    conn: &'c Connection,
}

impl<'c> WriteTx<'c> {
    fn begin(conn: &'c Connection) -> rusqlite::Result<Self> {
        conn.prepare_cached("BEGIN")?.execute([])?;
        Ok(WriteTx { conn })
    }

    /// Commits; on failure the transaction is rolled back (when dropped).
    fn commit(self) -> rusqlite::Result<()> {
        self.conn.prepare_cached("COMMIT")?.execute([]).map(drop)
    }
}

impl Drop for WriteTx<'_> {
    fn drop(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}
