//! What reaches the scheduler thread: from the manager's callers, from the
//! workers running handlers, and from the clock. The manager, the
//! handlers' side and the scheduler all depend on this small module, and
//! it on none of them.

use std::sync::Weak;
use std::time::Instant;

use crossbeam_channel as cb;

use super::error::WorkError;
use super::request::{Enqueued, ExistingWork, Spec, WorkInfo, WorkQuery};
use crate::oneshot;

/// What reaches the scheduler thread.
pub(crate) enum Event {
    Enqueue {
        stages: Vec<Vec<Spec>>,
        unique: Option<(String, ExistingWork)>,
        caller: Option<u64>,
        reply: oneshot::Sender<Result<Enqueued, WorkError>>,
    },
    Cancel {
        query: WorkQuery,
        reply: oneshot::Sender<Result<usize, WorkError>>,
    },
    Watch {
        query: WorkQuery,
        /// Each written turn's changes go in one message.
        to: cb::Sender<Vec<WorkInfo>>,
        /// Dead once the watch is dropped.
        alive: Weak<()>,
        /// `None`: the watch starts with a snapshot of each work it
        /// selects. `Some`: with no snapshot (the watcher reads the store
        /// itself); this is told once the watch is registered.
        registered: Option<crate::oneshot::Sender<()>>,
    },
    /// A run handed to the thread pool entered its handler at `at`: its
    /// work is running from now, and its time limit counts from `at`.
    Started {
        work: u64,
        task: u64,
        at: Instant,
    },
    Done {
        work: u64,
        task: u64,
    },
    Progress {
        work: u64,
        task: u64,
        bytes: Vec<u8>,
    },
    /// A run in a child process reported progress: the scheduler reads
    /// the latest from its task.
    ChildProgress {
        work: u64,
        task: u64,
    },
    /// The handler of a run told to stop returned.
    Returned {
        work: u64,
        task: u64,
    },
    Tick,
    /// A turn run by a caller left the scheduler's thread something to do
    /// sooner than it planned to wake: it runs a turn.
    Wake,
    /// Answered once nothing runs and no work can start now: what a
    /// headless run waits for.
    WhenIdle(oneshot::Sender<()>),
    Shutdown,
}
