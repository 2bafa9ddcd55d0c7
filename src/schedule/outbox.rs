//! The one place the table's changes leave the scheduler: written to the
//! store in one transaction, then published to the watches, and only then
//! are the callers whose change that write made durable answered. The
//! manager's queries read the store itself (no copy of every work is
//! kept here).

use std::sync::{Arc, Weak};

use crossbeam_channel as cb;
use parking_lot::Mutex;

use super::request::{WorkInfo, WorkQuery};
use super::store::{StoreError, WorkStore};
use super::table::Table;

/// A reply sent once the change it reports is in the store.
pub(super) type Reply = Box<dyn FnOnce() + Send>;

/// A [`WorkWatch`](super::WorkWatch)'s end.
struct Watcher {
    query: WorkQuery,
    /// Each written turn's changes go in one message.
    to: cb::Sender<Vec<WorkInfo>>,
    alive: Weak<()>,
    /// See [`Event::Watch`](super::event::Event::Watch): taken when the
    /// watch is registered.
    registered: Option<crate::oneshot::Sender<()>>,
}

/// The store, the watches, and the answers waiting for the next write.
pub(super) struct Outbox {
    store: WorkStore,
    store_error: Arc<StoreErrorSlot>,
    replies: Vec<Reply>,
    watchers: Vec<Watcher>,
    /// Watches to register once this turn is written.
    new_watchers: Vec<Watcher>,
}

impl Outbox {
    pub(super) fn new(store: WorkStore, store_error: Arc<StoreErrorSlot>) -> Self {
        Outbox {
            store,
            store_error,
            replies: Vec::new(),
            watchers: Vec::new(),
            new_watchers: Vec::new(),
        }
    }

    /// The store, to read works the table does not hold.
    pub(super) fn store(&self) -> &WorkStore {
        &self.store
    }

    /// Sends `reply` once this turn is written.
    pub(super) fn reply(&mut self, reply: Reply) {
        self.replies.push(reply);
    }

    /// Registers a watch once this turn is written, so its snapshot is
    /// what the store holds; a watch with `registered` takes no snapshot,
    /// and is told when it is registered.
    pub(super) fn watch(
        &mut self,
        query: WorkQuery,
        to: cb::Sender<Vec<WorkInfo>>,
        alive: Weak<()>,
        registered: Option<crate::oneshot::Sender<()>>,
    ) {
        self.new_watchers.push(Watcher {
            query,
            to,
            alive,
            registered,
        });
    }

    /// Writes what changed in `table`; on success publishes it and sends
    /// the replies it makes true. Returns whether everything is written.
    pub(super) fn flush(&mut self, table: &mut Table) -> bool {
        if table.is_clean() {
            self.send_replies();
            return true;
        }
        let (puts, deleted, retag) = table.pending();
        if let Err(e) = self.store.write(puts, deleted, retag) {
            tracing::error!(target: "isolates", error = %e,
                "the work store could not be written; retrying");
            self.store_error.set(Some(e));
            return false;
        }
        self.store_error.set(None);
        let written = table.written_for(!self.watchers.is_empty());
        let mut changed = written.changed;
        if !self.watchers.is_empty() {
            // Deleted works' last changes reach their watchers only.
            changed.extend(written.gone);
            changed.sort_by_key(|i| i.id);
            // Dropped watches leave here, whether or not a change is theirs.
            // One message a watcher and turn: its thread wakes once.
            let last = self.watchers.len() - 1;
            let mut index = 0;
            self.watchers.retain(|w| {
                let only = index == last;
                index += 1;
                if w.alive.strong_count() == 0 {
                    return false;
                }
                let theirs: Vec<WorkInfo> = if only && changed.iter().all(|i| w.query.matches(i)) {
                    // The last watcher takes what all match whole.
                    std::mem::take(&mut changed)
                } else {
                    changed
                        .iter()
                        .filter(|i| w.query.matches(i))
                        .cloned()
                        .collect()
                };
                theirs.is_empty() || w.to.send(theirs).is_ok()
            });
        }
        self.send_replies();
        true
    }

    /// Answers the callers and registers the watches of a written turn.
    fn send_replies(&mut self) {
        for reply in self.replies.drain(..) {
            reply();
        }
        for mut w in std::mem::take(&mut self.new_watchers) {
            if let Some(registered) = w.registered.take() {
                registered.send(());
                self.watchers.push(w);
                continue;
            }
            // Everything is written: the store holds every work as it is.
            let matching = match self.store.select(&w.query) {
                Ok(found) => found,
                Err(e) => {
                    // Dropped: the watch ends, as when the manager stops.
                    tracing::error!(target: "isolates", error = %e,
                        "the work store could not be read for a new watch; it ends");
                    continue;
                }
            };
            let snapshot: Vec<WorkInfo> = matching.iter().map(|r| r.info()).collect();
            if snapshot.is_empty() || w.to.send(snapshot).is_ok() {
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
