//! A store file's commits as appends to a log beside it, written into
//! SQLite behind them.
//!
//! A commit of one work to SQLite is a transaction: a B-tree insert in the
//! table and one in the due index, two WAL pages written, the WAL's
//! header and locks. A work manager's caller waits for that. So where the
//! store is locked to one opener (Linux, see [`lock`](super::lock)) a
//! write is one `write(2)` of a checksummed frame to `<store>-log`, and
//! the batches it holds are folded into SQLite by a thread of its own,
//! `isolates-store-log`, many in one transaction: when [`FOLD_AT`]
//! batches or [`FOLD_BYTES`] bytes wait, or [`FOLD_DELAY`] after the first
//! (it sleeps otherwise: an idle store wakes nothing).
//!
//! - **Durability** is SQLite's in WAL mode with `synchronous=NORMAL`, the
//!   store's mode: a commit survives the process being killed (the frame
//!   is in the kernel's cache, as SQLite's WAL page is); a power cut can
//!   lose the last commits, never the store's consistency (a torn or
//!   damaged tail of the log fails its checksum and is ignored, a full
//!   log is synced before appends move to the other one, and removed only
//!   after the commits folded from it are synced).
//! - **Reads** see every commit: each read of the store (the manager's
//!   and its queries' from the app's threads) first folds what waits.
//! - **How far the log is folded** is a row of the database
//!   ([`LogMark`]: a log's generation and an offset in it), written in
//!   the transaction of each fold. At open, the frames after it in the
//!   logs left by a process that did not close the store are folded in
//!   before anything is read; those before it are not written again, so
//!   a write that went to SQLite directly, or a commit that reached the
//!   database while a power cut tore its frame off the log, is never
//!   undone by an older frame.
//! - **Big writes** (over [`DIRECT_BYTES`]) go to SQLite directly, after
//!   what waits, as do writes while [`MAX_WAITING`] batches or
//!   [`MAX_WAITING_BYTES`] wait (the fold has fallen behind: the writer
//!   folds, which bounds the memory held).
//!
//! The log is two files used in turn, `<store>-log` and `<store>-log2`,
//! each starting with [`MAGIC`] and a generation number: when the one in
//! use passes [`ROTATE_BYTES`], a fold moves the appends to the other, and
//! once the fold committed and SQLite's files are synced the full one is
//! removed. A file's frames are `[length u32][crc32 u32][payload]`, all
//! little-endian; the payload is a bincode [`Frame`], decoded under the
//! size limit of [`MAX_FRAME`].
//!
//! [`Frame`]: super::batch

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::batch::{Batch, LogMark};
use super::db::Db;
use super::{Record, StoreError};

/// The first bytes of a log file; a generation number (u64) follows.
pub(super) const MAGIC: &[u8; 8] = b"ISOWLOG1";
/// A log file's header: [`MAGIC`] and the generation.
const HEAD_LEN: u64 = 16;
/// The fold runs once this many batches wait.
pub(super) const FOLD_AT: usize = 256;
/// ... or once their frames hold this many bytes.
pub(super) const FOLD_BYTES: usize = 512 << 10;
/// ... or this long after the first of them came.
pub(super) const FOLD_DELAY: Duration = Duration::from_millis(10);
/// A writer that finds this many batches waiting folds them itself.
pub(super) const MAX_WAITING: usize = 4 * FOLD_AT;
/// ... or batches whose frames hold this many bytes.
pub(super) const MAX_WAITING_BYTES: usize = 8 * FOLD_BYTES;
/// A write whose frame is bigger goes to SQLite directly.
pub(super) const DIRECT_BYTES: usize = 1 << 20;
/// The log in use is changed for the other past this size.
pub(super) const ROTATE_BYTES: u64 = 4 << 20;
/// The largest frame read back (a bigger length is a damaged tail).
pub(super) const MAX_FRAME: usize = 2 * DIRECT_BYTES;
/// After a fold failed, the next try waits this long.
const RETRY: Duration = Duration::from_secs(1);

/// The two files of a store's log.
fn log_paths(db: &Path) -> [PathBuf; 2] {
    ["-log", "-log2"].map(|suffix| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    })
}

/// The log file appended to.
struct LogFile {
    file: File,
    /// Which of [`log_paths`].
    which: usize,
    generation: u64,
    len: u64,
}

impl LogFile {
    /// Creates (or empties) log file `which` for `generation`.
    fn create(paths: &[PathBuf; 2], which: usize, generation: u64) -> Result<LogFile, StoreError> {
        let path = &paths[which];
        let io = |e: std::io::Error| StoreError::Io(format!("{}: {e}", path.display()));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)
            .map_err(io)?;
        let mut head = MAGIC.to_vec();
        head.extend_from_slice(&generation.to_le_bytes());
        file.write_all(&head).map_err(io)?;
        Ok(LogFile {
            file,
            which,
            generation,
            len: head.len() as u64,
        })
    }

    /// Appends one frame in one write; on failure the file is cut back to
    /// where it was, so no torn frame stays before later ones.
    fn append(&mut self, frame: &[u8], path: &Path) -> Result<(), StoreError> {
        match self.file.write_all(frame) {
            Ok(()) => {
                self.len += frame.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.len);
                Err(StoreError::Io(format!("{}: {e}", path.display())))
            }
        }
    }
}

/// A frame's bytes as they go in a log: length, checksum, payload.
fn framed(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// What waits to be folded, and the log it is in.
struct Queue {
    log: LogFile,
    /// The previous log file, while what it holds is not yet folded and
    /// synced.
    full: Option<usize>,
    waiting: Vec<Batch>,
    bytes: usize,
    closing: bool,
    /// Tests: the fold thread folds nothing (reads still fold).
    held: bool,
    /// Tests: the fold thread ends as a killed process would, without
    /// the last fold.
    abandoned: bool,
}

/// What a store's writer, its fold thread and its readers share.
pub(crate) struct Shared {
    /// The writer's connection; locked before `queue` where both are.
    db: Arc<Mutex<Db>>,
    queue: Mutex<Queue>,
    /// Wakes the fold thread.
    wake: Condvar,
    paths: [PathBuf; 2],
    db_path: PathBuf,
}

/// A store's log and its fold thread; dropped, it folds what waits, syncs
/// and removes the log, and ends its thread.
pub(super) struct Behind {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Behind {
    /// Folds into `db` what logs a store left (see the module docs), then
    /// starts a new log and its thread.
    pub(super) fn open(db: Arc<Mutex<Db>>, db_path: &Path) -> Result<Behind, StoreError> {
        let paths = log_paths(db_path);
        let generation = replay(&mut db.lock(), db_path, &paths)?;
        let log = LogFile::create(&paths, 0, generation)?;
        let shared = Arc::new(Shared {
            db,
            queue: Mutex::new(Queue {
                log,
                full: None,
                waiting: Vec::new(),
                bytes: 0,
                closing: false,
                held: false,
                abandoned: false,
            }),
            wake: Condvar::new(),
            paths,
            db_path: db_path.to_path_buf(),
        });
        let thread = std::thread::Builder::new()
            .name("isolates-store-log".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || fold_thread(&shared)
            })
            .map_err(|e| StoreError::Io(format!("the store's log thread did not start: {e}")))?;
        Ok(Behind {
            shared,
            thread: Some(thread),
        })
    }

    /// Commits a write: one append to the log (see the module docs).
    pub(super) fn write(
        &self,
        puts: &[&Record],
        deletes: &[u64],
        retag: &HashMap<u64, bool>,
    ) -> Result<(), StoreError> {
        let (batch, payload) = Batch::encode(puts, deletes, retag)?;
        if payload.len() > DIRECT_BYTES {
            return self.shared.fold_with(Some(batch));
        }
        let frame = framed(&payload);
        let mut queue = self.shared.queue.lock();
        let q = &mut *queue;
        q.log.append(&frame, &self.shared.paths[q.log.which])?;
        q.waiting.push(batch);
        q.bytes += frame.len();
        let n = q.waiting.len();
        if n == 1 || n == FOLD_AT || (q.bytes >= FOLD_BYTES && q.bytes - frame.len() < FOLD_BYTES) {
            self.shared.wake.notify_one();
        }
        let held = q.bytes;
        drop(queue);
        if (n >= MAX_WAITING || held >= MAX_WAITING_BYTES)
            && let Err(e) = self.shared.fold()
        {
            // The commit is in the log all the same: the fold thread
            // tries again.
            tracing::warn!(target: "isolates", error = %e,
                "the store's log could not be folded into SQLite; it keeps growing until it can");
        }
        Ok(())
    }

    /// Tests: whether the fold thread folds (reads fold regardless).
    #[cfg(test)]
    pub(super) fn hold(&self, held: bool) {
        self.shared.queue.lock().held = held;
        self.shared.wake.notify_one();
    }

    /// Tests: ends as a killed process does: no last fold, the log left
    /// as it is.
    #[cfg(test)]
    pub(super) fn abandon(&self) {
        let mut queue = self.shared.queue.lock();
        queue.abandoned = true;
        queue.closing = true;
        drop(queue);
        self.shared.wake.notify_one();
    }

    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// A handle for readers that does not keep the store open.
    pub(super) fn weak(&self) -> Weak<Shared> {
        Arc::downgrade(&self.shared)
    }
}

impl Drop for Behind {
    fn drop(&mut self) {
        self.shared.queue.lock().closing = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Shared {
    /// Folds what waits into SQLite.
    pub(super) fn fold(&self) -> Result<(), StoreError> {
        self.fold_with(None)
    }

    /// Folds what waits into SQLite and, with the database locked, runs
    /// `read` on it: it sees every commit made before.
    pub(super) fn read<R>(&self, read: impl FnOnce(&Db) -> R) -> Result<R, StoreError> {
        let mut db = self.db.lock();
        self.fold_locked(&mut db, None)?;
        Ok(read(&db))
    }

    /// Folds what waits, then `extra` (a write that goes to SQLite
    /// directly), in one transaction.
    fn fold_with(&self, extra: Option<Batch>) -> Result<(), StoreError> {
        let mut db = self.db.lock();
        self.fold_locked(&mut db, extra)
    }

    fn fold_locked(&self, db: &mut Db, extra: Option<Batch>) -> Result<(), StoreError> {
        let taken = {
            let mut queue = self.queue.lock();
            let q = &mut *queue;
            if q.waiting.is_empty() && extra.is_none() && q.full.is_none() {
                return Ok(());
            }
            if q.full.is_none() && q.log.len > ROTATE_BYTES {
                // Appends go to the other file from here; this one is
                // removed once what it holds is folded and synced.
                let next = 1 - q.log.which;
                // Synced first: no frame of the next log survives a power
                // cut that a frame of this one before it did not.
                let synced = q.log.file.sync_data().map_err(|e| {
                    StoreError::Io(format!("{}: {e}", self.paths[q.log.which].display()))
                });
                match synced.and_then(|()| LogFile::create(&self.paths, next, q.log.generation + 1))
                {
                    Ok(log) => {
                        q.full = Some(q.log.which);
                        q.log = log;
                    }
                    Err(e) => tracing::warn!(target: "isolates", error = %e,
                        "the store's log could not be changed for its other file; the one in \
                         use grows until it can"),
                }
            }
            // Every frame before the end of the log is taken now or was
            // folded before: once these are in, the log is folded to here.
            let mark = LogMark {
                generation: q.log.generation,
                offset: q.log.len,
            };
            let bytes = std::mem::take(&mut q.bytes);
            (
                std::mem::take(&mut q.waiting),
                q.full.is_some(),
                mark,
                bytes,
            )
        };
        let (mut batches, rotated, mark, bytes) = taken;
        let taken = batches.len();
        if let Some(extra) = extra {
            batches.push(extra);
        }
        if let Err(e) = db.apply(&batches, Some(mark)) {
            // Back in front of what came since, to be folded first.
            batches.truncate(taken);
            let mut queue = self.queue.lock();
            let later = std::mem::take(&mut queue.waiting);
            batches.extend(later);
            queue.waiting = batches;
            queue.bytes += bytes;
            return Err(e);
        }
        if rotated {
            // What the full log holds is in SQLite: synced, the log goes
            // (if the sync fails, it stays for the next fold to try).
            match sync_sql(&self.db_path) {
                Ok(()) => {
                    let mut queue = self.queue.lock();
                    if let Some(full) = queue.full.take() {
                        let _ = std::fs::remove_file(&self.paths[full]);
                    }
                }
                Err(e) => tracing::warn!(target: "isolates", error = %e,
                    "the store could not be synced; its full log is kept until it is"),
            }
        }
        Ok(())
    }

    /// At close, after the last fold: SQLite synced, the logs removed.
    fn close(&self) {
        let result = self.fold().and_then(|()| sync_sql(&self.db_path));
        match result {
            Ok(()) => {
                for path in &self.paths {
                    let _ = std::fs::remove_file(path);
                }
            }
            Err(e) => {
                tracing::warn!(target: "isolates", error = %e,
                    "the store's log could not be folded at close; it is kept and folded at the \
                     next open");
            }
        }
    }
}

/// The fold thread: sleeps until batches wait, lets more come for up to
/// [`FOLD_DELAY`], folds them; at close folds the rest.
fn fold_thread(shared: &Shared) {
    loop {
        let mut queue = shared.queue.lock();
        while (queue.waiting.is_empty() || queue.held) && !queue.closing {
            shared.wake.wait(&mut queue);
        }
        if queue.closing {
            if queue.abandoned {
                return;
            }
            break;
        }
        let until = Instant::now() + FOLD_DELAY;
        while !queue.closing && queue.waiting.len() < FOLD_AT && queue.bytes < FOLD_BYTES {
            if shared.wake.wait_until(&mut queue, until).timed_out() {
                break;
            }
        }
        drop(queue);
        if let Err(e) = shared.fold() {
            tracing::warn!(target: "isolates", error = %e,
                "the store's log could not be folded into SQLite; trying again in a second");
            let mut queue = shared.queue.lock();
            if !queue.closing {
                shared.wake.wait_for(&mut queue, RETRY);
            }
        }
    }
    shared.close();
}

/// Makes what SQLite committed survive a power cut: its WAL and database
/// file synced.
fn sync_sql(db: &Path) -> Result<(), StoreError> {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    for path in [PathBuf::from(wal), db.to_path_buf()] {
        match File::open(&path) {
            Ok(file) => file
                .sync_data()
                .map_err(|e| StoreError::Io(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::Io(format!("{}: {e}", path.display()))),
        }
    }
    Ok(())
}

/// Folds the frames of the logs found beside the store that it does not
/// hold yet (after its [`LogMark`]) into it, oldest first, then syncs and
/// removes the logs; returns the generation for the next log.
fn replay(db: &mut Db, db_path: &Path, paths: &[PathBuf; 2]) -> Result<u64, StoreError> {
    let folded = db.log_mark()?;
    let mut logs = Vec::new();
    for path in paths {
        let mut bytes = Vec::new();
        match File::open(path) {
            Ok(mut file) => file
                .read_to_end(&mut bytes)
                .map_err(|e| StoreError::Io(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StoreError::Io(format!("{}: {e}", path.display()))),
        };
        match read_log(&bytes, path) {
            Some(log) => logs.push(log),
            None => tracing::warn!(target: "isolates", log = %path.display(),
                "a file where the store's log goes is not one; it is replaced"),
        }
    }
    let last = logs
        .iter()
        .flat_map(|(generation, frames)| {
            let head = LogMark {
                generation: *generation,
                offset: HEAD_LEN,
            };
            frames
                .iter()
                .map(move |(end, _)| LogMark {
                    generation: *generation,
                    offset: *end,
                })
                .chain(std::iter::once(head))
        })
        .chain(folded)
        .max();
    let Some(last) = last else {
        return Ok(0);
    };
    logs.sort_by_key(|(generation, _)| *generation);
    // What the store holds already is not written again: a write made
    // since (one that went to SQLite directly, or a checkpointed commit
    // whose frame a power cut tore off the log) must not be undone.
    let batches: Vec<Batch> = logs
        .into_iter()
        .flat_map(|(generation, frames)| {
            frames.into_iter().filter_map(move |(end, batch)| {
                let at = LogMark {
                    generation,
                    offset: end,
                };
                folded.is_none_or(|f| at > f).then_some(batch)
            })
        })
        .collect();
    let works: usize = batches.iter().map(Batch::works).sum();
    if !batches.is_empty() || folded != Some(last) {
        db.apply(&batches, Some(last))?;
    }
    sync_sql(db_path)?;
    for path in paths {
        if let Err(e) = std::fs::remove_file(path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            // Left, its frames are behind the mark: never folded again.
            tracing::warn!(target: "isolates", log = %path.display(), error = %e,
                "a folded log of the store could not be removed");
        }
    }
    if works > 0 {
        tracing::info!(target: "isolates", store = %db_path.display(), writes = batches.len(),
            works, "the store's log from a process that did not close it was folded in");
    }
    Ok(last.generation.saturating_add(1))
}

/// A log file's generation and frames (each with the offset after it);
/// the frames after the first that is cut short or fails its checksum are
/// a tail a power cut tore, and ignored. `None`: not a log file.
pub(super) fn read_log(bytes: &[u8], path: &Path) -> Option<(u64, Vec<(u64, Batch)>)> {
    let head = bytes.get(..HEAD_LEN as usize)?;
    if &head[..8] != MAGIC {
        return None;
    }
    let generation = u64::from_le_bytes(head[8..16].try_into().ok()?);
    // Generations count changes of logs from 0: a larger one is damage.
    if generation > i64::MAX.unsigned_abs() / 2 {
        return None;
    }
    let mut at = HEAD_LEN as usize;
    let mut frames = Vec::new();
    while at < bytes.len() {
        let Some(batch) = next_frame(bytes, &mut at) else {
            tracing::warn!(target: "isolates", log = %path.display(), ignored = bytes.len() - at,
                "the store's log ends in a frame cut short or damaged (a power cut?); the bytes \
                 from there are ignored");
            break;
        };
        frames.push((at as u64, batch));
    }
    Some((generation, frames))
}

/// The frame at `*at`, moving `at` past it.
fn next_frame(bytes: &[u8], at: &mut usize) -> Option<Batch> {
    let head = bytes.get(*at..*at + 8)?;
    let len = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(head[4..8].try_into().ok()?);
    if len > MAX_FRAME {
        return None;
    }
    let payload = bytes.get(*at + 8..*at + 8 + len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let batch = Batch::decode::<MAX_FRAME>(payload).ok()?;
    *at += 8 + len;
    Some(batch)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::schedule::request::{WorkId, WorkQuery, WorkState};
    use crate::schedule::store::WorkStore;
    use crate::schedule::store::tests::TempStore;
    use crate::schedule::table::tests::{spec, table};

    /// `n` new works, ids from 1, tagged `"t"` as well as by handler.
    fn works(n: u64) -> Vec<Record> {
        let mut t = table();
        let first = t.add_chain(vec![vec![spec("a")]], None, Vec::new(), 0)[0].0;
        let (mut puts, _, _) = t.pending();
        let work = puts.next().cloned().expect("the new work");
        (0..n)
            .map(|k| {
                let mut rec = work.clone();
                rec.id = first + k;
                rec.tags.push("t".into());
                rec
            })
            .collect()
    }

    fn fresh(recs: &[Record]) -> HashMap<u64, bool> {
        recs.iter().map(|r| (r.id, false)).collect()
    }

    /// The ids SQLite itself holds (not what waits in the log).
    fn in_sqlite(path: &Path) -> Vec<u64> {
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut stmt = conn.prepare("SELECT id FROM works ORDER BY id").unwrap();
        stmt.query_map([], |r| r.get::<_, i64>(0))
            .unwrap()
            .map(|id| id.unwrap().unsigned_abs())
            .collect()
    }

    /// What a `kill -9` of the process leaves: no last fold.
    fn crash(store: WorkStore) {
        store.log().expect("a file store has a log").abandon();
        drop(store);
    }

    /// (id, state, tags) of every work, by id.
    fn summary(store: &WorkStore) -> Vec<(u64, WorkState, Vec<String>)> {
        store
            .load()
            .unwrap()
            .0
            .into_iter()
            .map(|r| (r.id, r.state, r.tags))
            .collect()
    }

    fn log_len(temp: &TempStore) -> u64 {
        std::fs::metadata(format!("{}-log", temp.0.display())).map_or(0, |m| m.len())
    }

    #[test]
    fn commits_left_in_the_log_by_a_crash_are_folded_in_at_the_next_open() {
        let temp = TempStore::new();
        let mut store = WorkStore::open(&temp.0).unwrap();
        store.log().unwrap().hold(true);
        let recs = works(10);
        for rec in &recs {
            store
                .write([rec], &[], &HashMap::from([(rec.id, false)]))
                .unwrap();
        }
        // One changes (state and tags), one goes.
        let mut changed = recs[3].clone();
        changed.state = WorkState::Running;
        changed.tags = vec!["a".into(), "u".into()];
        store
            .write(
                [&changed],
                &[recs[7].id],
                &HashMap::from([(changed.id, true)]),
            )
            .unwrap();
        assert!(in_sqlite(&temp.0).is_empty(), "all of it waits in the log");
        assert!(log_len(&temp) > 16);
        crash(store);

        let store = WorkStore::open(&temp.0).unwrap();
        let found = summary(&store);
        assert_eq!(found.len(), 9);
        assert!(!found.iter().any(|(id, ..)| *id == recs[7].id));
        let (_, state, tags) = found.iter().find(|(id, ..)| *id == changed.id).unwrap();
        assert_eq!(*state, WorkState::Running);
        assert_eq!(tags, &["a", "u"]);
        // The tag rows were rewritten too.
        let by_t: Vec<u64> = store
            .select(&WorkQuery::Tag("t".into()))
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(by_t.len(), 8);
        assert!(!by_t.contains(&changed.id));
        assert_eq!(store.select(&WorkQuery::Tag("u".into())).unwrap().len(), 1);
        // Folded at the open: SQLite holds them, the old log is gone.
        assert_eq!(in_sqlite(&temp.0).len(), 9);
        assert_eq!(log_len(&temp), 16, "a new log, its header alone");
        assert!(store.max_id().unwrap() >= recs[9].id);
    }

    #[test]
    fn reads_see_every_commit_and_the_fold_thread_folds_on_its_own() {
        let temp = TempStore::new();
        let mut store = WorkStore::open(&temp.0).unwrap();
        let reader = store.reader().unwrap();
        store.log().unwrap().hold(true);
        let recs = works(3);
        store.write(&recs, &[], &fresh(&recs)).unwrap();
        assert!(in_sqlite(&temp.0).is_empty());
        // A query from the app's threads folds first.
        assert_eq!(reader.infos(&WorkQuery::Tag("t".into())).unwrap().len(), 3);
        assert_eq!(in_sqlite(&temp.0), [1, 2, 3]);
        let more = works(5).split_off(3);
        store.write(&more, &[], &fresh(&more)).unwrap();
        store.log().unwrap().hold(false);
        let deadline = Instant::now() + Duration::from_secs(30);
        while in_sqlite(&temp.0).len() < 5 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(in_sqlite(&temp.0), [1, 2, 3, 4, 5], "folded by its thread");
        drop(store);
        // A clean close leaves no log; the reader still reads.
        assert_eq!(log_len(&temp), 0);
        assert_eq!(reader.infos(&WorkQuery::All).unwrap().len(), 5);
    }

    #[test]
    fn a_log_folded_twice_leaves_the_store_as_it_was() {
        let temp = TempStore::new();
        let mut store = WorkStore::open(&temp.0).unwrap();
        let recs = works(4);
        store.write(&recs, &[], &fresh(&recs)).unwrap();
        let mut changed = recs[0].clone();
        changed.tags = vec!["a".into(), "v".into()];
        changed.state = WorkState::Succeeded;
        store
            .write(
                [&changed],
                &[recs[1].id],
                &HashMap::from([(changed.id, true)]),
            )
            .unwrap();
        let before = summary(&store); // folds: SQLite holds it all
        assert_eq!(in_sqlite(&temp.0), [1, 3, 4]);
        // Killed after the fold, before the log went: the next open folds
        // the same frames again.
        crash(store);
        assert!(log_len(&temp) > 16);
        let store = WorkStore::open(&temp.0).unwrap();
        assert_eq!(summary(&store), before);
        assert_eq!(store.select(&WorkQuery::Tag("t".into())).unwrap().len(), 2);
        assert_eq!(store.select(&WorkQuery::Tag("v".into())).unwrap().len(), 1);
    }

    #[test]
    fn a_torn_or_damaged_tail_is_ignored_and_the_frames_before_it_kept() {
        for damage in ["cut", "flip", "garbage", "huge length"] {
            let temp = TempStore::new();
            let mut store = WorkStore::open(&temp.0).unwrap();
            store.log().unwrap().hold(true);
            let recs = works(5);
            for rec in &recs {
                store
                    .write([rec], &[], &HashMap::from([(rec.id, false)]))
                    .unwrap();
            }
            crash(store);
            let log = format!("{}-log", temp.0.display());
            let mut bytes = std::fs::read(&log).unwrap();
            let kept = match damage {
                "cut" => {
                    bytes.truncate(bytes.len() - 3);
                    4
                }
                "flip" => {
                    let last = bytes.len() - 2;
                    bytes[last] ^= 0x55;
                    4
                }
                "garbage" => {
                    bytes.extend_from_slice(b"\x07\x00\x00\x00not a frame at all");
                    5
                }
                _ => {
                    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
                    bytes.extend_from_slice(&[0; 12]);
                    5
                }
            };
            std::fs::write(&log, &bytes).unwrap();
            let store = WorkStore::open(&temp.0).unwrap();
            assert_eq!(store.works().unwrap().len(), kept, "{damage}");
        }
    }

    #[test]
    fn a_file_where_the_log_goes_that_is_not_one_is_replaced() {
        let temp = TempStore::new();
        drop(WorkStore::open(&temp.0).unwrap());
        std::fs::write(format!("{}-log", temp.0.display()), b"someone's notes").unwrap();
        let mut store = WorkStore::open(&temp.0).unwrap();
        let recs = works(1);
        store.write(&recs, &[], &fresh(&recs)).unwrap();
        assert_eq!(store.works().unwrap().len(), 1);
    }

    #[test]
    fn a_big_write_goes_to_sqlite_directly() {
        let temp = TempStore::new();
        let mut store = WorkStore::open(&temp.0).unwrap();
        store.log().unwrap().hold(true);
        let mut recs = works(3);
        recs[2].input = Some(vec![9; DIRECT_BYTES]);
        store.write(&recs[..2], &[], &fresh(&recs[..2])).unwrap();
        store.write(&recs[2..], &[], &fresh(&recs[2..])).unwrap();
        // What waited went first, in the same transaction.
        assert_eq!(in_sqlite(&temp.0), [1, 2, 3]);
        assert!(log_len(&temp) < 4096, "the big work is not in the log");
    }

    #[test]
    fn a_full_log_is_changed_for_the_other_and_removed_once_folded() {
        let temp = TempStore::new();
        let mut store = WorkStore::open(&temp.0).unwrap();
        store.log().unwrap().hold(true);
        let mut rec = works(1).pop().unwrap();
        rec.input = Some(vec![1; 64 << 10]);
        // Past the size at which a fold changes logs.
        let n = ROTATE_BYTES / (64 << 10) + 2;
        for k in 0..n {
            rec.id = k + 1;
            store
                .write([&rec], &[], &HashMap::from([(rec.id, false)]))
                .unwrap();
            if k % 16 == 0 {
                store.max_id().unwrap(); // a fold, as the thread would
            }
        }
        let second = PathBuf::from(format!("{}-log2", temp.0.display()));
        assert!(second.exists(), "appends moved to the other log");
        assert_eq!(log_len(&temp), 0, "the full one was removed once folded");
        rec.id = n + 1;
        store
            .write([&rec], &[], &HashMap::from([(rec.id, false)]))
            .unwrap();
        crash(store);
        let store = WorkStore::open(&temp.0).unwrap();
        assert_eq!(store.works().unwrap().len() as u64, n + 1);
        // Ids set aside are skipped after a crash (see `ids`), never reused.
        assert!(store.max_id().unwrap() > n);
    }

    #[test]
    fn generations_replay_in_order() {
        // Two logs left (a crash between a change of logs and the removal
        // of the full one): the older generation first, whichever file.
        let temp = TempStore::new();
        drop(WorkStore::open(&temp.0).unwrap());
        let paths = log_paths(&temp.0);
        let recs = works(1);
        let mut first = recs[0].clone();
        first.state = WorkState::Enqueued;
        let mut second = recs[0].clone();
        second.state = WorkState::Failed;
        let write = |path: &Path, generation: u64, rec: &Record| {
            let (_, payload) = Batch::encode(&[rec], &[], &fresh(&recs)).unwrap();
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&generation.to_le_bytes());
            bytes.extend_from_slice(&framed(&payload));
            std::fs::write(path, bytes).unwrap();
        };
        write(&paths[0], 8, &second);
        write(&paths[1], 7, &first);
        let store = WorkStore::open(&temp.0).unwrap();
        assert_eq!(
            store.select(&WorkQuery::Id(WorkId(recs[0].id))).unwrap()[0].state,
            WorkState::Failed
        );
        assert!(!paths[1].exists());
    }

    #[test]
    fn a_frame_with_an_id_sqlite_cannot_hold_ends_the_log_and_the_store_opens() {
        let temp = TempStore::new();
        drop(WorkStore::open(&temp.0).unwrap());
        let mut recs = works(2);
        recs[1].id = u64::MAX;
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&0u64.to_le_bytes());
        for rec in &recs {
            let (_, payload) = Batch::encode(&[rec], &[], &fresh(&recs)).unwrap();
            bytes.extend_from_slice(&framed(&payload));
        }
        std::fs::write(format!("{}-log", temp.0.display()), bytes).unwrap();
        let store = WorkStore::open(&temp.0).unwrap();
        assert_eq!(store.works().unwrap().len(), 1, "the frame before it kept");
    }

    #[test]
    fn a_stale_log_behind_the_mark_is_not_folded_again() {
        let temp = TempStore::new();
        let mut store = WorkStore::open(&temp.0).unwrap();
        let recs = works(1);
        store.write(&recs, &[], &fresh(&recs)).unwrap();
        let stale = std::fs::read(format!("{}-log", temp.0.display())).unwrap();
        let mut done = recs[0].clone();
        done.state = WorkState::Succeeded;
        store.write([&done], &[], &HashMap::new()).unwrap();
        drop(store);
        // A log whose removal failed at the last open or close: its frame
        // (the work enqueued) is behind the store's mark.
        std::fs::write(format!("{}-log", temp.0.display()), stale).unwrap();
        let store = WorkStore::open(&temp.0).unwrap();
        assert_eq!(store.load().unwrap().0[0].state, WorkState::Succeeded);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Whatever bytes a log file holds, reading it never panics and
        /// keeps the frames before the first bad one.
        #[test]
        fn any_bytes_read_as_a_log_never_panic(
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            cut in 0usize..64,
        ) {
            let recs = works(2);
            let (_, payload) = Batch::encode(&[&recs[0]], &[], &fresh(&recs)).unwrap();
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&3u64.to_le_bytes());
            bytes.extend_from_slice(&framed(&payload));
            let whole = bytes.len();
            bytes.extend_from_slice(&tail);
            let (generation, batches) = read_log(&bytes, Path::new("log")).unwrap();
            proptest::prop_assert_eq!(generation, 3);
            proptest::prop_assert!(!batches.is_empty());
            bytes.truncate(whole.saturating_sub(cut).max(16));
            let (_, batches) = read_log(&bytes, Path::new("log")).unwrap();
            proptest::prop_assert_eq!(batches.len(), usize::from(cut == 0));
        }
    }
}
