//! Checkpoints of a store file's WAL, on a thread of their own.
//!
//! SQLite copies the WAL back into the database (a checkpoint) from the
//! connection whose commit took the WAL past 1,000 pages: that commit then
//! waits for the copy and an `fsync`, several milliseconds, about once in
//! 500 commits of one work. The store's writes run on its log's fold
//! thread (see [`behind`](super::behind)), or, where it has none, on the
//! scheduler's thread or, for a caller that waits for its enqueue, on the
//! caller's thread (a UI thread among them). So the store hands the checkpoints to
//! a thread with a connection of its own: the writer nudges it every
//! [`NUDGE_EVERY`] works written, and it checkpoints (`PASSIVE`: it never
//! waits for a writer or a reader) when the WAL has grown past
//! [`CHECKPOINT_PAGES`] pages, as SQLite would have. It sleeps in a
//! channel receive otherwise: an idle store wakes nothing.
//!
//! A `PASSIVE` checkpoint beside a writer that never pauses cannot
//! finish (each commit adds pages while it copies), and the WAL starts
//! over only after a checkpoint that finished: so the writer's connection
//! keeps SQLite's checkpoint, at [`WRITER_PAGES`] instead of 1,000 (one
//! in four as often, with most pages already copied); after writes that
//! pause, the checkpointer's finish and the writer never checkpoints.
//!
//! If that thread or its connection cannot be had, SQLite's own
//! checkpoints stay as they were.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel as cb;
use rusqlite::Connection;

/// The writer nudges the checkpointer once this many works have been
/// written (a write of one work counts one; of many, as many).
pub(super) const NUDGE_EVERY: usize = 64;

/// The checkpointer copies the WAL back once it holds this many pages
/// (SQLite's own default threshold).
pub(super) const CHECKPOINT_PAGES: u64 = 1000;

/// The writer's connection still checkpoints after a commit that leaves
/// the WAL this long (SQLite's `wal_autocheckpoint`): under writes that
/// never pause, the checkpointer's copies never catch up with the last
/// commit, and only a checkpoint with no write in progress lets the next
/// write start the WAL over. The checkpointer has copied most of it by
/// then: the writer copies the rest and syncs.
pub(super) const WRITER_PAGES: i64 = 4 * CHECKPOINT_PAGES as i64;

/// A store file's checkpointer thread. Dropped, it finishes what it is
/// doing, closes its connection and ends (before the writer's connection
/// closes: that last close then checkpoints and removes the WAL, as
/// SQLite does).
pub(super) struct Checkpointer {
    nudge: Option<cb::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    /// Works written since the last nudge.
    written: usize,
    /// Checkpoints run so far (read by tests).
    #[cfg_attr(not(test), allow(dead_code))]
    done: Arc<AtomicU64>,
}

impl Checkpointer {
    /// Starts the checkpointer of the store file at `path`, whose pages are
    /// `page_size` bytes; `None` if its connection or thread cannot be had.
    pub(super) fn start(path: &Path, page_size: u64) -> Option<Checkpointer> {
        let conn = Connection::open(path).ok()?;
        conn.busy_timeout(Duration::from_secs(5)).ok()?;
        let wal = wal_path(path);
        let (nudge, nudged) = cb::bounded::<()>(1);
        let done = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&done);
        let thread = std::thread::Builder::new()
            .name("isolates-checkpoint".into())
            .spawn(move || {
                while nudged.recv().is_ok() {
                    let frames = std::fs::metadata(&wal)
                        .map_or(0, |m| m.len() / page_size.saturating_add(24).max(1));
                    if frames < CHECKPOINT_PAGES {
                        continue;
                    }
                    match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        Ok(()) => {
                            counted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => tracing::debug!(target: "isolates", error = %e,
                            "a checkpoint of the work store failed; the next nudge tries again"),
                    }
                }
            })
            .ok()?;
        Some(Checkpointer {
            nudge: Some(nudge),
            thread: Some(thread),
            written: 0,
            done,
        })
    }

    /// After a committed write of `works` works (puts and deletes):
    /// nudges the thread once [`NUDGE_EVERY`] works have been written
    /// since the last nudge (never blocks; a nudge pending is enough).
    pub(super) fn wrote(&mut self, works: usize) {
        self.written = self.written.saturating_add(works.max(1));
        if self.written >= NUDGE_EVERY {
            self.written = 0;
            if let Some(nudge) = &self.nudge {
                let _ = nudge.try_send(());
            }
        }
    }

    /// How many checkpoints the thread has run.
    #[cfg(test)]
    pub(super) fn checkpoints(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // Its receive fails: the thread ends, and its connection with it.
        self.nudge = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The WAL file of the database at `db`.
fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}
