//! The embedded store: one SQLite database (WAL) holding every work as a
//! row, so schedules survive a restart or a `kill -9`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::clock::from_ms;
use super::request::{Alarm, InputMerger, StoredBackoff, WorkId, WorkInfo, WorkQuery, WorkState};
use crate::codec::{Bincode, Codec};

mod check;
mod ids;
mod layout;
mod lock;
mod migrate;

use layout::{LAYOUT, decode_row};

/// `PRAGMA application_id` of our stores: "ISOW".
const APPLICATION_ID: i32 = 0x4953_4F57;
/// The schema version this build reads and writes; older stores are
/// brought to it by [`migrate`] when opened.
const SCHEMA_VERSION: i32 = migrate::LATEST;

/// What went wrong with a work store.
///
/// # Examples
///
/// ```
/// use isolates::schedule::{StoreError, WorkStore};
///
/// let path = std::env::temp_dir().join(format!("isolates-doc-notdb-{}", std::process::id()));
/// std::fs::write(&path, b"certainly not a database, but someone's notes").unwrap();
/// let err = WorkStore::open(&path).unwrap_err();
/// assert!(matches!(err, StoreError::NotADatabase { .. }));
/// // The file is left as it was.
/// assert_eq!(std::fs::read(&path).unwrap(), b"certainly not a database, but someone's notes");
/// std::fs::remove_file(&path).unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The file is not an SQLite database (or its header is corrupted).
    /// Nothing was written to it.
    NotADatabase {
        /// The file.
        path: PathBuf,
    },
    /// The file is an SQLite database of another program. Nothing was
    /// written to it.
    Foreign {
        /// The file.
        path: PathBuf,
        /// Its `PRAGMA application_id` (0 when unset).
        application_id: i32,
    },
    /// The store was written by a newer version of this crate.
    TooNew {
        /// The file.
        path: PathBuf,
        /// The store's schema version.
        version: i32,
        /// The newest this build reads.
        supported: i32,
    },
    /// The store is of an older schema and bringing it to this build's
    /// failed; it was left at its version, as it was (migrations run in
    /// one transaction).
    Migration {
        /// The file.
        path: PathBuf,
        /// The store's schema version.
        from: i32,
        /// The version this build needs.
        to: i32,
        /// What failed.
        detail: String,
    },
    /// SQLite's integrity check found damage. Nothing was written to it.
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the check reported.
        detail: String,
    },
    /// Another open [`WorkStore`] holds the file: a work manager in this
    /// process or another (two would both run every work). Nothing was
    /// read or written. Linux only, for now: elsewhere one opener per
    /// store is the caller's to ensure.
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// Reading or writing failed (disk full, permissions, a lock held
    /// elsewhere...).
    Io(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotADatabase { path } => write!(
                f,
                "{} is not a work store (not an SQLite database, or its header is damaged); \
                 it was left untouched: move it aside or pick another path",
                path.display()
            ),
            Self::Foreign {
                path,
                application_id,
            } => write!(
                f,
                "{} is an SQLite database of another program (application id {application_id:#x}); \
                 it was left untouched: pick another path for the work store",
                path.display()
            ),
            Self::TooNew {
                path,
                version,
                supported,
            } => write!(
                f,
                "{} was written by a newer isolates (schema {version}, this build reads up to \
                 {supported}); upgrade, or pick another path",
                path.display()
            ),
            Self::Migration {
                path,
                from,
                to,
                detail,
            } => write!(
                f,
                "the work store {} could not be upgraded from schema {from} to {to} ({detail}); \
                 it was left as it was: free disk space or fix its permissions and open it again, \
                 or open it with the older build that wrote it",
                path.display()
            ),
            Self::Corrupt { path, detail } => write!(
                f,
                "the work store {} is damaged ({detail}); it was left untouched: restore it from \
                 a backup or run `sqlite3 {} .recover`",
                path.display(),
                path.display()
            ),
            Self::Locked { path } => write!(
                f,
                "the work store {} is in use by another work manager (in this process or \
                 another); a store serves one manager at a time: shut the other down first, or \
                 pick another path",
                path.display()
            ),
            Self::Io(e) => write!(f, "the work store could not be read or written: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// How long [`WorkStore::open_timeout`] sleeps between tries at most.
const OPEN_RETRY_MAX: Duration = Duration::from_millis(50);

fn io(e: rusqlite::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

/// One work as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) id: u64,
    pub(crate) handler: String,
    pub(crate) state: WorkState,
    /// `None` until set: a chained work takes its prerequisite's output.
    pub(crate) input: Option<Vec<u8>>,
    pub(crate) output: Option<Vec<u8>>,
    pub(crate) progress: Option<Vec<u8>>,
    pub(crate) tags: Vec<String>,
    pub(crate) unique: Option<String>,
    /// Interval and flex, in milliseconds.
    pub(crate) periodic: Option<(i64, i64)>,
    /// Start of the current period (periodic work), ms.
    pub(crate) period_start: i64,
    pub(crate) initial_delay: i64,
    /// When it was enqueued (or its prerequisites succeeded), ms.
    pub(crate) enqueued_at: i64,
    pub(crate) backoff: StoredBackoff,
    pub(crate) constraints: Vec<String>,
    pub(crate) time_limit: Option<Duration>,
    pub(crate) attempts: u32,
    pub(crate) retries: u32,
    pub(crate) periods: u64,
    pub(crate) next_run_at: i64,
    pub(crate) finished_at: Option<i64>,
    pub(crate) prerequisites: Vec<u64>,
    pub(crate) failure: Option<String>,
    /// It enqueued its own replacement during a run: cancelled when the
    /// run ends (or at the next start, if the run was interrupted).
    pub(crate) retire: bool,
    /// How its input is made from its prerequisites' outputs. Added in
    /// layout 2.
    pub(crate) input_merger: InputMerger,
    /// Its time and missed policy, if it is an alarm. Added in layout 3.
    pub(crate) alarm: Option<Alarm>,
}

/// What loading does with one stored row's bytes (for `crate::fuzz`): read
/// in each layout, and as an unnumbered row; checked; shown.
pub(crate) fn fuzz_row(bytes: &[u8]) {
    let mut records: Vec<Record> = (1..=LAYOUT)
        .filter_map(|layout| decode_row(Some(layout), bytes).ok())
        .collect();
    records.extend(layout::guess(bytes).ok().map(|(record, _)| record));
    for record in records {
        if record.problem().is_none() {
            let _ = record.info();
        }
    }
}

impl Record {
    /// Whether `query` selects this work (without building its info).
    pub(crate) fn selected_by(&self, query: &WorkQuery) -> bool {
        query.matches_parts(WorkId(self.id), &self.tags, self.unique.as_deref())
    }

    pub(crate) fn info(&self) -> WorkInfo {
        WorkInfo {
            id: WorkId(self.id),
            handler: self.handler.clone(),
            state: self.state,
            tags: self.tags.clone(),
            unique_name: self.unique.clone(),
            periodic: self.periodic.is_some(),
            run_attempts: self.attempts,
            retries: self.retries,
            periods: self.periods,
            next_run_at: (self.state == WorkState::Enqueued).then(|| from_ms(self.next_run_at)),
            output: self.output.clone(),
            progress: self.progress.clone(),
            failure: self.failure.clone(),
            prerequisites: self.prerequisites.iter().map(|&p| WorkId(p)).collect(),
        }
    }
}

/// A stored row that could not be read; it stays in the store untouched.
///
/// # Examples
///
/// See [`WorkStore::unreadable`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnreadableWork {
    /// The row's work id.
    pub id: WorkId,
    /// Why it could not be read.
    pub reason: String,
}

/// Where scheduled work is kept: an SQLite file in WAL mode, or an SQLite
/// database in memory (for tests; gone with the manager).
///
/// # Examples
///
/// ```
/// use isolates::schedule::{WorkManager, WorkRequest, WorkStore};
///
/// let path = std::env::temp_dir().join(format!("isolates-doc-store-{}.db", std::process::id()));
/// # let _ = std::fs::remove_file(&path);
/// {
///     let manager = WorkManager::builder(WorkStore::open(&path).unwrap())
///         .handler_fn("later", |(): (), _: &isolates::schedule::WorkContext<'_>| {
///             isolates::schedule::WorkResult::Success(())
///         })
///         .spawn()
///         .unwrap();
///     let later = WorkRequest::once("later").initial_delay(std::time::Duration::from_secs(3600));
///     manager.enqueue(later).wait().unwrap();
///     manager.stop();
///     // Its thread writes the store and lets it go.
///     assert!(manager.join(std::time::Duration::from_secs(30)));
/// }
/// // Another process (or a later run) finds it there.
/// let works = WorkStore::open(&path).unwrap().works().unwrap();
/// assert_eq!(works.len(), 1);
/// assert_eq!(works[0].handler, "later");
/// # std::fs::remove_file(&path).unwrap();
/// ```
pub struct WorkStore {
    conn: Connection,
    path: Option<PathBuf>,
    /// Where `sqlite_sequence` stands (see [`ids`]).
    ids: ids::IdReserve,
    /// Released after the connection closed (fields drop in order).
    _lock: Option<lock::StoreLock>,
}

impl fmt::Debug for WorkStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkStore")
            .field("path", &self.path)
            .finish()
    }
}

impl WorkStore {
    /// Opens the store at `path`, creating it if missing. A file that is
    /// not a work store is never written to: it gives a [`StoreError`].
    ///
    /// An open store is locked (on Linux): a second `open` of the same
    /// file, in this process or another, is refused with
    /// [`StoreError::Locked`] until the first store is dropped (its work
    /// manager shut down). The lock is a file beside the store,
    /// `<path>-lock`, removed when the store closes.
    ///
    /// A store written by an earlier version of this crate is upgraded to
    /// this version's schema in place, in one transaction, and its works
    /// keep their meaning (each row is read in the layout it was written
    /// in; `tests/schedule_upgrade.rs` checks a store of the first
    /// schema). Earlier versions then refuse it with
    /// [`StoreError::TooNew`]: keep a copy to downgrade.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotADatabase`], [`StoreError::Foreign`],
    /// [`StoreError::TooNew`], [`StoreError::Migration`], [`StoreError::Corrupt`],
    /// [`StoreError::Locked`] or [`StoreError::Io`].
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::schedule::{StoreError, WorkStore};
    ///
    /// let path = std::env::temp_dir().join(format!("isolates-doc-lock-{}.db", std::process::id()));
    /// # let _ = std::fs::remove_file(&path);
    /// let first = WorkStore::open(&path).unwrap();
    /// # #[cfg(target_os = "linux")]
    /// assert!(matches!(WorkStore::open(&path), Err(StoreError::Locked { .. })));
    /// drop(first);
    /// let again = WorkStore::open(&path).unwrap();
    /// # drop(again);
    /// # std::fs::remove_file(&path).unwrap();
    /// ```
    ///
    /// See also [`WorkStore`] and [`StoreError`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        lock::check_header(&path)?;
        let held = lock::StoreLock::acquire(&path)?;
        let conn = Connection::open(&path).map_err(io)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(io)?;
        let mut store = WorkStore {
            conn,
            path: Some(path),
            ids: ids::IdReserve::default(),
            _lock: Some(held),
        };
        store.check_and_init()?;
        Ok(store)
    }

    /// Opens the store at `path` as [`open`](Self::open) does, waiting up
    /// to `timeout` while another opener holds it: an app that starts
    /// while a headless run ([`WorkManagerBuilder::run_due`]) holds its
    /// store waits for that run to end (its budget plus its stop grace).
    ///
    /// [`WorkManagerBuilder::run_due`]: super::WorkManagerBuilder::run_due
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open); [`StoreError::Locked`] if the store is
    /// still held when `timeout` passes.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use isolates::schedule::{StoreError, WorkStore};
    ///
    /// let path = std::env::temp_dir().join(format!("isolates-doc-wait-{}.db", std::process::id()));
    /// # let _ = std::fs::remove_file(&path);
    /// let held = WorkStore::open(&path).unwrap();
    /// let other = std::thread::spawn({
    ///     let path = path.clone();
    ///     move || WorkStore::open_timeout(&path, Duration::from_secs(30))
    /// });
    /// drop(held); // the headless run ends
    /// assert!(other.join().unwrap().is_ok());
    /// # #[cfg(target_os = "linux")]
    /// # {
    /// let held = WorkStore::open(&path).unwrap();
    /// let err = WorkStore::open_timeout(&path, Duration::from_millis(20)).unwrap_err();
    /// assert!(matches!(err, StoreError::Locked { .. }));
    /// # }
    /// # std::fs::remove_file(&path).unwrap();
    /// ```
    pub fn open_timeout(path: impl AsRef<Path>, timeout: Duration) -> Result<Self, StoreError> {
        let deadline = crate::time::deadline_after(timeout);
        let mut pause = Duration::from_millis(1);
        loop {
            match Self::open(path.as_ref()) {
                Err(StoreError::Locked { path }) => {
                    let left = match deadline {
                        Some(d) => d.saturating_duration_since(std::time::Instant::now()),
                        None => Duration::MAX,
                    };
                    if left.is_zero() {
                        return Err(StoreError::Locked { path });
                    }
                    // The holder gives no signal when it closes: look again
                    // after growing pauses (a lock held for seconds costs a
                    // few dozen looks).
                    std::thread::sleep(pause.min(left));
                    pause = (pause * 2).min(OPEN_RETRY_MAX);
                }
                other => return other,
            }
        }
    }

    /// A store in memory: nothing survives the manager.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] if SQLite cannot allocate it.
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::schedule::WorkStore;
    /// assert!(WorkStore::in_memory().unwrap().works().unwrap().is_empty());
    /// ```
    pub fn in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().map_err(io)?;
        let mut store = WorkStore {
            conn,
            path: None,
            ids: ids::IdReserve::default(),
            _lock: None,
        };
        store.check_and_init()?;
        Ok(store)
    }

    fn shown_path(&self) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(|| PathBuf::from(":memory:"))
    }

    /// Refuses what is not ours before writing anything; sets up a new
    /// store, or brings an older one to this build's schema.
    fn check_and_init(&mut self) -> Result<(), StoreError> {
        let path = self.shown_path();
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
                     CREATE TABLE works (id INTEGER PRIMARY KEY AUTOINCREMENT, record BLOB NOT NULL,
                                         layout INTEGER);
                     PRAGMA application_id = {APPLICATION_ID};
                     PRAGMA user_version = {SCHEMA_VERSION};
                     COMMIT;"
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
            if self.path.is_some() {
                self.conn
                    .pragma_update(None, "journal_mode", "WAL")
                    .map_err(io)?;
            }
            migrate::run(&mut self.conn, version, &path)?;
        }
        // WAL with NORMAL sync: a commit survives the process being
        // killed; only a power cut can lose the last commits.
        self.conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(io)?;
        Ok(())
    }

    /// Every work the store holds that can be read, by id.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] if the store cannot be read.
    ///
    /// # Examples
    ///
    /// See [`WorkStore`].
    pub fn works(&self) -> Result<Vec<WorkInfo>, StoreError> {
        Ok(self.load()?.0.iter().map(Record::info).collect())
    }

    /// The rows that could not be read (damaged or from elsewhere); they
    /// are kept as they are, and the rest of the store works.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] if the store cannot be read.
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::schedule::WorkStore;
    /// assert!(WorkStore::in_memory().unwrap().unreadable().unwrap().is_empty());
    /// ```
    pub fn unreadable(&self) -> Result<Vec<UnreadableWork>, StoreError> {
        Ok(self.load()?.1)
    }

    /// Reads every row.
    pub(crate) fn load(&self) -> Result<(Vec<Record>, Vec<UnreadableWork>), StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, layout, record FROM works ORDER BY id")
            .map_err(io)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<i64>>(1),
                    r.get::<_, Vec<u8>>(2),
                ))
            })
            .map_err(io)?;
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        for row in rows {
            let (id, layout, bytes) = row.map_err(io)?;
            let (layout, bytes) = match (layout, bytes) {
                (Ok(layout), Ok(bytes)) => (layout, bytes),
                // Not a blob or a number (written by something else):
                // report, keep.
                (Err(e), _) | (_, Err(e)) => {
                    bad.push(UnreadableWork {
                        id: WorkId(id.unsigned_abs()),
                        reason: e.to_string(),
                    });
                    continue;
                }
            };
            match decode_row(layout, &bytes) {
                Ok(rec) if i64::try_from(rec.id).ok() == Some(id) => match rec.problem() {
                    None => good.push(rec),
                    Some(reason) => bad.push(UnreadableWork {
                        id: WorkId(rec.id),
                        reason,
                    }),
                },
                Ok(rec) => bad.push(UnreadableWork {
                    id: WorkId(id.unsigned_abs()),
                    reason: format!("the row holds work {} instead", rec.id),
                }),
                Err(reason) => bad.push(UnreadableWork {
                    id: WorkId(id.unsigned_abs()),
                    reason,
                }),
            }
        }
        Ok((good, bad))
    }

    /// The highest id the store ever held, readable or not, deleted or
    /// not: ids are never reused.
    pub(crate) fn max_id(&self) -> Result<u64, StoreError> {
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
                path: self.shown_path(),
                detail: format!("a row has the id {}, the last there is", i64::MAX),
            }),
            m => Ok(m.map_or(0, |m| m.max(0).unsigned_abs())),
        }
    }

    /// Writes `puts` and deletes `deletes` in one transaction.
    pub(crate) fn write<'a>(
        &mut self,
        puts: impl IntoIterator<Item = &'a Record>,
        deletes: &[u64],
    ) -> Result<(), StoreError> {
        let codec = Bincode::new();
        let puts: Vec<&Record> = puts.into_iter().collect();
        let tx = self.conn.transaction().map_err(io)?;
        let max = puts.iter().filter_map(|r| i64::try_from(r.id).ok()).max();
        let covered = self.ids.cover(&tx, max).map_err(io)?;
        {
            let mut put = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO works (id, record, layout) VALUES (?1, ?2, ?3)",
                )
                .map_err(io)?;
            let mut bytes = Vec::new();
            for rec in puts {
                bytes.clear();
                codec.encode(rec, &mut bytes).map_err(|e| {
                    StoreError::Io(format!("work {} could not be encoded: {e}", rec.id))
                })?;
                let id = i64::try_from(rec.id).map_err(|_| StoreError::Io("id overflow".into()))?;
                put.execute(params![id, bytes, LAYOUT]).map_err(io)?;
            }
            if !deletes.is_empty() {
                let mut del = tx
                    .prepare_cached("DELETE FROM works WHERE id = ?1")
                    .map_err(io)?;
                for &id in deletes {
                    let id = i64::try_from(id).map_err(|_| StoreError::Io("id overflow".into()))?;
                    del.execute(params![id]).map_err(io)?;
                }
            }
        }
        tx.commit().map_err(io)?;
        self.ids.committed(covered);
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
    pub(crate) fn release_ids(&mut self) -> Result<(), StoreError> {
        self.ids.release(&self.conn).map_err(io)
    }
}
