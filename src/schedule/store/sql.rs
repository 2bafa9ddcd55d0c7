//! The store in an SQLite file ([`WorkStore::open`]): WAL mode, one
//! row a work (its record's bytes and the columns of `query.rs`), locked
//! to one opener at a time (`lock.rs`), brought to this build's schema by
//! `migrate.rs`, its WAL checkpointed on a thread of its own
//! (`checkpoint.rs`), its commits appended to a log that a thread of its
//! own folds into it (`behind.rs`) where it is locked.
//!
//! [`WorkStore::open`]: super::WorkStore::open

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::Connection;

use super::batch::Batch;
use super::db::Db;
use super::query::{DueKey, DuePage};
use super::reader::StoreReader;
use super::{Opening, Record, StoreError, UnreadableWork, behind, io, lock};
use crate::schedule::request::WorkQuery;

/// An open store file.
pub(super) struct SqlStore {
    /// Where the store is locked to one opener: its log, whose appends
    /// are the commits (see [`behind`]); dropped first, folding what
    /// waits.
    behind: Option<behind::Behind>,
    db: Arc<Mutex<Db>>,
    path: PathBuf,
    /// Released after the connection closed (fields drop in order).
    _lock: lock::StoreLock,
}

impl SqlStore {
    /// Opens (and if need be creates or upgrades) the store at `path`;
    /// see [`WorkStore::open`](super::WorkStore::open).
    pub(super) fn open(path: &Path) -> Result<Self, StoreError> {
        let path = path.to_path_buf();
        lock::check_header(&path)?;
        let held = lock::StoreLock::acquire(&path)?;
        let db = Db::open(&path)?;
        let db = Arc::new(Mutex::new(db));
        let behind = if held.is_exclusive() {
            Some(behind::Behind::open(Arc::clone(&db), &path)?)
        } else {
            None
        };
        Ok(SqlStore {
            behind,
            db,
            path,
            _lock: held,
        })
    }

    /// Runs `read` on the database once every commit is in it.
    fn read<R>(&self, read: impl FnOnce(&Db) -> R) -> Result<R, StoreError> {
        match &self.behind {
            Some(behind) => behind.shared().read(read),
            None => Ok(read(&self.db.lock())),
        }
    }

    /// How many checkpoints the store's checkpointer has run (`None`:
    /// SQLite's own checkpoints are on).
    #[cfg(test)]
    pub(super) fn checkpoints(&self) -> Option<u64> {
        self.db.lock().checkpoints()
    }

    /// SQLite's `wal_autocheckpoint` on the writer's connection.
    #[cfg(test)]
    pub(super) fn autocheckpoint(&self) -> i64 {
        self.db.lock().autocheckpoint()
    }

    /// Tests: the log (where there is one).
    #[cfg(test)]
    pub(super) fn behind(&self) -> Option<&behind::Behind> {
        self.behind.as_ref()
    }

    /// The store's file.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Reads every row.
    pub(super) fn load(&self) -> Result<(Vec<Record>, Vec<UnreadableWork>), StoreError> {
        self.read(Db::load)?
    }

    /// What a manager loads when it starts; see [`Opening`].
    pub(super) fn opening(&self, page: usize) -> Result<Opening, StoreError> {
        self.read(|db| db.opening(page))?
    }

    /// The next `n` enqueued works after `after` in (due, id) order.
    pub(super) fn due_after(&self, after: DueKey, n: usize) -> Result<DuePage, StoreError> {
        self.read(|db| db.due_after(after, n))?
    }

    /// The readable works `query` selects, by id.
    pub(super) fn select(&self, query: &WorkQuery) -> Result<Vec<Record>, StoreError> {
        self.read(|db| db.select(query))?
    }

    /// The readable enqueued works `query` selects, in no order.
    pub(super) fn enqueued(&self, query: &WorkQuery) -> Result<Vec<Record>, StoreError> {
        self.read(|db| db.enqueued(query))?
    }

    /// A second connection for the manager's queries; its reads first
    /// fold what the log holds.
    pub(super) fn reader(&self) -> Result<StoreReader, StoreError> {
        let conn = Connection::open(&self.path).map_err(io)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(io)?;
        conn.pragma_update(None, "query_only", true).map_err(io)?;
        Ok(StoreReader::new(
            conn,
            self.behind.as_ref().map(behind::Behind::weak),
        ))
    }

    /// The highest id the store ever held; see [`Db::max_id`].
    pub(super) fn max_id(&self) -> Result<u64, StoreError> {
        self.read(Db::max_id)?
    }

    /// Writes `puts` and deletes `deletes`; see [`Db::apply`]. With a
    /// log, an append to it.
    pub(super) fn write(
        &mut self,
        puts: &[&Record],
        deletes: &[u64],
        retag: &std::collections::HashMap<u64, bool>,
    ) -> Result<(), StoreError> {
        match &self.behind {
            Some(behind) => behind.write(puts, deletes, retag),
            None => {
                let (batch, _) = Batch::encode(puts, deletes, retag)?;
                self.db.lock().apply(std::slice::from_ref(&batch), None)
            }
        }
    }

    /// At a clean stop, after the last write: gives back the ids set aside
    /// ahead of those written (see [`ids`]).
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] if the store cannot be written; ids after the
    /// next start then skip the ones set aside, and stay unique.
    pub(super) fn release_ids(&mut self) -> Result<(), StoreError> {
        if let Some(behind) = &self.behind {
            behind.shared().fold()?;
        }
        self.db.lock().release_ids()
    }
}
