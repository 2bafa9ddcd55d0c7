//! Watching works change.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel as cb;

use super::request::WorkInfo;
#[cfg(doc)]
use super::request::WorkQuery;

/// Changes to the works a [`WorkQuery`] selects, as they are stored: first
/// a snapshot of each, then every change. Changes are stored once per
/// scheduler turn, so a state that lasted less than a turn is not seen
/// (work enqueued when it can start at once is first seen running). Poll it each frame with
/// [`try_next`](Self::try_next) or [`drain`](Self::drain), or iterate it on
/// another thread (the iteration ends when the manager stops).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::schedule::*;
///
/// let manager = WorkManager::builder(WorkStore::in_memory().unwrap())
///     .handler_fn("noop", |(): (), _: &WorkContext<'_>| WorkResult::Success(()))
///     .spawn()
///     .unwrap();
/// let watch = manager.watch(WorkQuery::Tag("ui".into()));
/// manager.enqueue(WorkRequest::once("noop").tag("ui")).wait().unwrap();
/// let mut states = Vec::new();
/// while states.last() != Some(&WorkState::Succeeded) {
///     let info = watch.next_timeout(Duration::from_secs(10)).expect("a change");
///     states.push(info.state);
/// }
/// assert!(states.contains(&WorkState::Running));
/// ```
#[derive(Debug)]
pub struct WorkWatch {
    pub(super) rx: cb::Receiver<WorkInfo>,
    /// The scheduler forgets the watch once this is dropped.
    pub(super) _alive: Arc<()>,
}

impl WorkWatch {
    /// The next change, if one is waiting; never blocks.
    ///
    /// # Examples
    ///
    /// See [`WorkWatch`].
    pub fn try_next(&self) -> Option<WorkInfo> {
        self.rx.try_recv().ok()
    }

    /// Every change waiting now; never blocks.
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::schedule::*;
    /// # let manager = WorkManager::builder(WorkStore::in_memory().unwrap()).spawn().unwrap();
    /// let watch = manager.watch(WorkQuery::All);
    /// for info in watch.drain() {
    ///     println!("{} is {:?}", info.id, info.state);
    /// }
    /// ```
    pub fn drain(&self) -> Vec<WorkInfo> {
        self.rx.try_iter().collect()
    }

    /// Waits up to `timeout` for the next change.
    ///
    /// # Examples
    ///
    /// See [`WorkWatch`].
    pub fn next_timeout(&self, timeout: Duration) -> Option<WorkInfo> {
        self.rx.recv_timeout(timeout).ok()
    }
}

impl Iterator for WorkWatch {
    type Item = WorkInfo;

    fn next(&mut self) -> Option<WorkInfo> {
        self.rx.recv().ok()
    }
}
