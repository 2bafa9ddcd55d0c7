//! What a supervisor's handles and its thread share, and the messages its
//! thread serves.

use crossbeam_channel as cb;
use parking_lot::{Condvar, Mutex};

use super::events::{Listeners, SupervisionEvent};
use super::spec::Registry;
use crate::isolate::{ExitReason, Leftover};

/// Tells a parent supervisor that a nested one exited.
pub(super) type ParentHook = Box<dyn Fn(ExitReason) + Send + Sync>;

/// What a supervisor's handles and its thread share.
pub(super) struct SupShared {
    pub(super) name: String,
    pub(super) tx: cb::Sender<SupMsg>,
    pub(super) registry: Registry,
    pub(super) exit: Mutex<Option<ExitReason>>,
    pub(super) exited: Condvar,
    pub(super) listeners: Listeners,
}

impl SupShared {
    /// Tells every listener; see [`Listeners::emit`].
    pub(super) fn emit(&self, event: SupervisionEvent) {
        self.listeners.emit(&self.name, event);
    }

    pub(super) fn finish(&self, reason: ExitReason) {
        *self.exit.lock() = Some(reason);
        self.exited.notify_all();
        self.listeners.clear();
        self.registry.lock().clear();
    }
}

pub(super) enum SupMsg {
    Exited {
        index: usize,
        generation: u64,
        reason: ExitReason,
        leftover: Option<Leftover>,
    },
    Stop,
}
