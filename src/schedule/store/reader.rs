//! The manager's reads from the app's threads (see [`StoreReader`]).

use std::sync::Weak;

use parking_lot::Mutex;
use rusqlite::Connection;

use super::{Record, StoreError, behind, memory, query};
use crate::schedule::request::{WorkInfo, WorkQuery};

/// What the manager's queries from the app's threads read: a second
/// connection to a file store, or a store in memory itself. It reads what
/// the scheduler last wrote, and keeps reading after the manager stopped
/// and its store was let go. A file store's commits that its log holds
/// are folded into the file before each read (see [`behind`]).
pub(crate) enum StoreReader {
    File(Mutex<Connection>, Option<Weak<behind::Shared>>),
    Memory(memory::Shared),
}

impl StoreReader {
    pub(super) fn new(conn: Connection, log: Option<Weak<behind::Shared>>) -> Self {
        StoreReader::File(Mutex::new(conn), log)
    }

    /// Folds what the store's log holds, while the store is open.
    fn fold(log: Option<&Weak<behind::Shared>>) -> Result<(), StoreError> {
        match log.and_then(Weak::upgrade) {
            Some(shared) => shared.fold(),
            None => Ok(()),
        }
    }

    pub(super) fn memory(shared: memory::Shared) -> Self {
        StoreReader::Memory(shared)
    }

    /// The readable works `query` selects, by id, as last stored.
    pub(crate) fn infos(&self, query: &WorkQuery) -> Result<Vec<WorkInfo>, StoreError> {
        let found = match self {
            StoreReader::File(conn, log) => {
                Self::fold(log.as_ref())?;
                query::select(&conn.lock(), query)?
            }
            StoreReader::Memory(mem) => mem.read().select(query),
        };
        Ok(found.iter().map(Record::info).collect())
    }

    /// When the earliest enqueued work is due, on the work clock.
    pub(crate) fn next_due(&self) -> Result<Option<i64>, StoreError> {
        match self {
            StoreReader::File(conn, log) => {
                Self::fold(log.as_ref())?;
                query::next_due(&conn.lock())
            }
            StoreReader::Memory(mem) => Ok(mem.read().next_due()),
        }
    }
}
