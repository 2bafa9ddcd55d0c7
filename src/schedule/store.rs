//! The embedded store: one SQLite database (WAL) holding every work as a
//! row, so schedules survive a restart or a `kill -9`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::clock::from_ms;
use super::request::{Alarm, InputMerger, StoredBackoff, WorkId, WorkInfo, WorkQuery, WorkState};

mod batch;
mod behind;
mod check;
mod checkpoint;
mod db;
mod ids;
mod layout;
mod lock;
mod memory;
mod migrate;
mod query;
mod reader;
mod sql;

use layout::{LAYOUT, decode_row};
pub(crate) use query::{DueKey, DuePage};
pub(crate) use reader::StoreReader;

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

/// What opening a store does with the bytes of a log file left beside it
/// (for `crate::fuzz`): its frames read up to the first bad one.
pub(crate) fn fuzz_log(bytes: &[u8]) {
    let _ = behind::read_log(bytes, Path::new("fuzz"));
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

/// What a manager loads from its store when it starts
/// ([`WorkStore::opening`]).
#[derive(Default)]
pub(crate) struct Opening {
    /// Every readable work that is not enqueued, and the first enqueued
    /// ones by (due, id).
    pub(crate) records: Vec<Record>,
    /// The rows that could not be read among those looked at.
    pub(crate) unreadable: Vec<UnreadableWork>,
    /// Works whose rows have no columns yet (written by something else):
    /// written again, so that queries find them.
    pub(crate) unindexed: Vec<u64>,
    /// The (due, id) of the last enqueued work loaded, if more may be
    /// stored after it; `None` when every enqueued work was loaded.
    pub(crate) horizon: Option<DueKey>,
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

/// Where scheduled work is kept: an SQLite file in WAL mode, or memory
/// (for tests and for work that need not outlive the program; gone with
/// the manager).
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
    backend: Backend,
}

/// Where a [`WorkStore`] keeps its works.
enum Backend {
    File(Box<sql::SqlStore>),
    Memory(memory::Shared),
}

impl fmt::Debug for WorkStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.backend {
            Backend::File(sql) => f
                .debug_struct("WorkStore")
                .field("path", &sql.path())
                .finish(),
            Backend::Memory(_) => f
                .debug_struct("WorkStore")
                .field("path", &":memory:")
                .finish(),
        }
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
    /// An open store keeps one thread, `isolates-checkpoint`, that copies
    /// its write-ahead log back into the database file from time to time
    /// (asleep otherwise), so that a commit seldom waits for that copy and
    /// its `fsync` (only when writes never pause: then one commit in about
    /// 2,000 does).
    ///
    /// Where the store is locked (Linux), a commit is one append to a log
    /// beside it, `<path>-log` (and `<path>-log2` in turn), which a
    /// second thread, `isolates-store-log`, folds into the database many
    /// commits at a time, a few milliseconds later (asleep otherwise).
    /// Durability is the database's own (WAL, `synchronous=NORMAL`): a
    /// commit survives the process being killed, a power cut may lose the
    /// last ones but never breaks the store. Every read of the store
    /// folds first, so it sees every commit. A clean close folds the rest
    /// and removes the log; after a crash the next open folds it in. Keep
    /// the `-log` files with the database when you copy a store that is
    /// open, as you would its `-wal`.
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
        Ok(WorkStore {
            backend: Backend::File(Box::new(sql::SqlStore::open(path.as_ref())?)),
        })
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

    /// A store in memory: nothing survives the manager. Its works are
    /// kept as they are, beside indexes by due time, unique name and tag
    /// (no encoding and no SQL), so a write costs a copy of each changed
    /// work; queries answer as a file store's do.
    ///
    /// # Errors
    ///
    /// None today: a store in memory always opens. The `Result` matches
    /// [`open`](Self::open), so that a program switches between the two
    /// without other changes.
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::schedule::WorkStore;
    /// assert!(WorkStore::in_memory().unwrap().works().unwrap().is_empty());
    /// ```
    pub fn in_memory() -> Result<Self, StoreError> {
        Ok(WorkStore {
            backend: Backend::Memory(memory::Shared::default()),
        })
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
        match &self.backend {
            Backend::File(sql) => sql.load(),
            Backend::Memory(mem) => Ok((mem.read().load(), Vec::new())),
        }
    }

    /// What a manager loads when it starts: every work that is not
    /// enqueued, and the first `page` enqueued works by (due, id); see
    /// [`Opening`].
    pub(crate) fn opening(&self, page: usize) -> Result<Opening, StoreError> {
        match &self.backend {
            Backend::File(sql) => sql.opening(page),
            Backend::Memory(mem) => Ok(mem.read().opening(page)),
        }
    }

    /// The next `n` enqueued works after `after` in (due, id) order, and
    /// the key of the last, if more may follow.
    pub(crate) fn due_after(&self, after: DueKey, n: usize) -> Result<DuePage, StoreError> {
        match &self.backend {
            Backend::File(sql) => sql.due_after(after, n),
            Backend::Memory(mem) => Ok(mem.read().due_after(Some(after), n)),
        }
    }

    /// The readable works `query` selects, by id.
    pub(crate) fn select(&self, query: &WorkQuery) -> Result<Vec<Record>, StoreError> {
        match &self.backend {
            Backend::File(sql) => sql.select(query),
            Backend::Memory(mem) => Ok(mem.read().select(query)),
        }
    }

    /// The readable enqueued works `query` selects, in no order.
    pub(crate) fn enqueued(&self, query: &WorkQuery) -> Result<Vec<Record>, StoreError> {
        match &self.backend {
            Backend::File(sql) => sql.enqueued(query),
            Backend::Memory(mem) => Ok(mem.read().enqueued(query)),
        }
    }

    /// A reader for the manager's queries from the app's threads.
    pub(crate) fn reader(&self) -> Result<StoreReader, StoreError> {
        match &self.backend {
            Backend::File(sql) => sql.reader(),
            Backend::Memory(mem) => Ok(StoreReader::memory(std::sync::Arc::clone(mem))),
        }
    }

    /// The highest id the store ever held, readable or not, deleted or
    /// not: ids are never reused.
    pub(crate) fn max_id(&self) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::File(sql) => sql.max_id(),
            Backend::Memory(mem) => Ok(mem.read().max_id()),
        }
    }

    /// Writes `puts` and deletes `deletes` in one transaction; the works
    /// `retag` names (new, or their tags changed) have their tags written,
    /// their old tag rows deleted first where the flag says there may be
    /// some.
    pub(crate) fn write<'a>(
        &mut self,
        puts: impl IntoIterator<Item = &'a Record>,
        deletes: &[u64],
        retag: &std::collections::HashMap<u64, bool>,
    ) -> Result<(), StoreError> {
        let puts: Vec<&Record> = puts.into_iter().collect();
        match &mut self.backend {
            Backend::File(sql) => sql.write(&puts, deletes, retag),
            Backend::Memory(mem) => mem.write().write(&puts, deletes),
        }
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
        match &mut self.backend {
            Backend::File(sql) => sql.release_ids(),
            Backend::Memory(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::schedule::table::tests::{spec, table};

    impl WorkStore {
        /// The file store's log, where it has one.
        pub(super) fn log(&self) -> Option<&behind::Behind> {
            match &self.backend {
                Backend::File(sql) => sql.behind(),
                Backend::Memory(_) => None,
            }
        }
    }

    /// A file for a store, removed (with its WAL and lock files) on drop.
    pub(super) struct TempStore(pub(super) PathBuf);

    impl TempStore {
        pub(super) fn new() -> Self {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = std::env::temp_dir()
                .join(format!("isolates-store-test-{}-{n}.db", std::process::id()));
            let temp = TempStore(path);
            temp.remove();
            temp
        }

        fn remove(&self) {
            for suffix in ["", "-wal", "-shm", "-lock", "-log", "-log2"] {
                let mut p = self.0.as_os_str().to_owned();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
        }
    }

    impl Drop for TempStore {
        fn drop(&mut self) {
            self.remove();
        }
    }

    #[test]
    fn a_file_stores_checkpoints_run_on_a_thread_of_their_own_its_wal_bounded_and_nothing_lost() {
        let temp = TempStore::new();
        let mut store = WorkStore::open(&temp.0).unwrap();
        let mut t = table();
        let id = t.add_chain(vec![vec![spec("a")]], None, Vec::new(), 0)[0].0;
        let (mut puts, _, _) = t.pending();
        let work = puts.next().cloned().expect("the new work");
        // One work a commit, without a pause: about two WAL pages each,
        // the WAL past the writer's own threshold three times over. (A
        // read after each write folds it from the log on its own.)
        let n = 6000;
        for k in 0..n {
            let mut rec = work.clone();
            rec.id = id + k;
            store
                .write([&rec], &[], &HashMap::from([(rec.id, false)]))
                .unwrap();
            store.max_id().unwrap();
        }
        let Backend::File(sql) = &store.backend else {
            panic!("a file store");
        };
        assert_eq!(
            sql.autocheckpoint(),
            checkpoint::WRITER_PAGES,
            "the writer's own checkpoints are rarer"
        );
        // Yet the WAL stays bounded: without a pause no checkpoint beside
        // the writer finishes, and without the writer's own it would hold
        // every page written (about 50 MB here).
        let wal = std::fs::metadata(format!("{}-wal", temp.0.display())).map_or(0, |m| m.len());
        assert!(wal < 24 << 20, "a WAL of {wal} bytes");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while sql.checkpoints() == Some(0) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            sql.checkpoints().is_some_and(|n| n > 0),
            "the checkpointer ran"
        );
        drop(store);
        // Its thread ended with the store: the file reopens, every work in it.
        let store = WorkStore::open(&temp.0).unwrap();
        assert_eq!(store.works().unwrap().len() as u64, n);
    }

    #[test]
    fn new_works_are_inserted_and_stored_ones_changed_in_place() {
        let temp = TempStore::new();
        let mut store = WorkStore::open(&temp.0).unwrap();
        let mut t = table();
        let id = t.add_chain(vec![vec![spec("a")]], None, Vec::new(), 0)[0].0;
        let (puts, _, retag) = t.pending();
        let (puts, retag): (Vec<Record>, HashMap<u64, bool>) =
            (puts.cloned().collect(), retag.clone());
        assert_eq!(retag.get(&id), Some(&false), "a new work");
        store.write(&puts, &[], &retag).unwrap();
        // Written again as new (a write retried after it committed): the
        // row is replaced, not doubled.
        store.write(&puts, &[], &retag).unwrap();
        let mut running = puts[0].clone();
        running.state = WorkState::Running;
        store.write([&running], &[], &HashMap::new()).unwrap();
        let found = store.select(&WorkQuery::Id(WorkId(id))).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].state, WorkState::Running);
        assert_eq!(store.works().unwrap().len(), 1);
        // A changed work the store lost is put back whole.
        store.write([], &[id], &HashMap::new()).unwrap();
        store.write([&running], &[], &HashMap::new()).unwrap();
        assert_eq!(store.works().unwrap()[0].state, WorkState::Running);
    }
}
