//! The one place the table's changes leave the scheduler: written to the
//! store in one transaction, then published to the snapshots and the
//! watches, and only then are the callers whose change that write made
//! durable answered.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use crossbeam_channel as cb;
use parking_lot::{Mutex, RwLock};

use super::request::{WorkInfo, WorkQuery};
use super::store::{Record, StoreError, WorkStore};
use super::table::Table;

/// A reply sent once the change it reports is in the store.
pub(super) type Reply = Box<dyn FnOnce() + Send>;

/// A [`WorkWatch`](super::WorkWatch)'s end.
struct Watcher {
    query: WorkQuery,
    to: cb::Sender<WorkInfo>,
    alive: Weak<()>,
}

/// The store, the snapshots the manager reads, the watches, and the
/// answers waiting for the next write.
pub(super) struct Outbox {
    store: WorkStore,
    infos: Arc<RwLock<HashMap<u64, WorkInfo>>>,
    store_error: Arc<StoreErrorSlot>,
    replies: Vec<Reply>,
    watchers: Vec<Watcher>,
    /// Watches to register once this turn is written.
    new_watchers: Vec<Watcher>,
}

impl Outbox {
    pub(super) fn new(
        store: WorkStore,
        infos: Arc<RwLock<HashMap<u64, WorkInfo>>>,
        store_error: Arc<StoreErrorSlot>,
    ) -> Self {
        Outbox {
            store,
            infos,
            store_error,
            replies: Vec::new(),
            watchers: Vec::new(),
            new_watchers: Vec::new(),
        }
    }

    /// Publishes every work of `table` as loaded, before its first write.
    pub(super) fn publish_loaded(&self, table: &Table) {
        self.infos
            .write()
            .extend(table.records().map(|r| (r.id, r.info())));
    }

    /// Sends `reply` once this turn is written.
    pub(super) fn reply(&mut self, reply: Reply) {
        self.replies.push(reply);
    }

    /// Registers a watch once this turn is written, so its snapshot is
    /// what the store (and the snapshots) hold.
    pub(super) fn watch(&mut self, query: WorkQuery, to: cb::Sender<WorkInfo>, alive: Weak<()>) {
        self.new_watchers.push(Watcher { query, to, alive });
    }

    /// Writes what changed in `table`; on success publishes it and sends
    /// the replies it makes true. Returns whether everything is written.
    pub(super) fn flush(&mut self, table: &mut Table) -> bool {
        if table.is_clean() {
            self.send_replies(table);
            return true;
        }
        let (puts, deleted) = table.pending();
        if let Err(e) = self.store.write(puts, deleted) {
            tracing::error!(target: "isolates", error = %e,
                "the work store could not be written; retrying");
            self.store_error.set(Some(e));
            return false;
        }
        self.store_error.set(None);
        let written = table.written();
        let mut changed = written.changed;
        // The snapshots take the infos themselves unless a watch needs
        // them too.
        let watched = !self.watchers.is_empty();
        {
            let mut infos = self.infos.write();
            for id in &written.deleted {
                infos.remove(id);
            }
            if watched {
                for info in &changed {
                    infos.insert(info.id.0, info.clone());
                }
            } else {
                for info in changed.drain(..) {
                    infos.insert(info.id.0, info);
                }
            }
        }
        if watched {
            // Deleted works' last changes reach their watchers only.
            changed.extend(written.gone);
            changed.sort_by_key(|i| i.id);
            // Dropped watches leave here, whether or not a change is theirs.
            self.watchers.retain(|w| {
                w.alive.strong_count() > 0
                    && changed
                        .iter()
                        .filter(|i| w.query.matches(i))
                        .all(|i| w.to.send(i.clone()).is_ok())
            });
        }
        self.send_replies(table);
        true
    }

    /// Answers the callers and registers the watches of a written turn.
    fn send_replies(&mut self, table: &Table) {
        for reply in self.replies.drain(..) {
            reply();
        }
        for w in std::mem::take(&mut self.new_watchers) {
            let mut matching: Vec<_> = table
                .records()
                .filter(|r| r.selected_by(&w.query))
                .map(Record::info)
                .collect();
            matching.sort_by_key(|i| i.id);
            if matching.into_iter().all(|i| w.to.send(i).is_ok()) {
                self.watchers.push(w);
            }
        }
    }

    /// At a clean stop, after the last flush: see
    /// [`WorkStore::release_ids`].
    pub(super) fn release_ids(&mut self) {
        if let Err(e) = self.store.release_ids() {
            tracing::warn!(target: "isolates", error = %e,
                "the ids set aside in the work store could not be given back; new work after \
                 the next start skips them");
        }
    }

    /// Drops the replies and watches of a turn that could not be written
    /// (at shutdown): their callers learn the manager stopped (dropped
    /// replies answer `Stopped`), never `Ok`.
    pub(super) fn drop_unwritten(&mut self) {
        self.replies.clear();
        self.new_watchers.clear();
    }
}

/// The last store write error, for the app to read; cleared by a write
/// that works.
#[derive(Default)]
pub(crate) struct StoreErrorSlot(Mutex<Option<StoreError>>);

impl StoreErrorSlot {
    fn set(&self, e: Option<StoreError>) {
        *self.0.lock() = e;
    }

    pub(crate) fn get(&self) -> Option<StoreError> {
        self.0.lock().clone()
    }
}
