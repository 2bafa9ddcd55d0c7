//! Watching works change.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel as cb;
use parking_lot::Mutex;

use super::request::WorkInfo;
#[cfg(doc)]
use super::request::WorkQuery;

/// Changes to the works a [`WorkQuery`] selects, as they are stored: first
/// a snapshot of each, then every change. Changes are stored once per
/// scheduler turn, so a state that lasted less than a turn is not seen:
/// a run that starts and ends within one turn goes from enqueued to its
/// end unseen running, and new work is seen enqueued first unless its run
/// starts in the turn that enqueued it (a work whose handler runs in a
/// child process, with a worker free, is then seen running first). Poll it each frame with
/// [`try_next`](Self::try_next) or [`drain`](Self::drain), or iterate it on
/// another thread (the iteration ends when the manager stops). Each
/// turn's changes arrive together, so the watching thread wakes once a
/// turn; one thread taking them sees them in order.
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
/// assert_eq!(states[0], WorkState::Enqueued);
/// ```
#[derive(Debug)]
pub struct WorkWatch {
    /// The changes of each written turn come together, in one message:
    /// the watching thread is woken once a turn, not once a change.
    rx: cb::Receiver<Vec<WorkInfo>>,
    /// The rest of the last turn's changes, not taken yet.
    ready: Mutex<VecDeque<WorkInfo>>,
    /// The scheduler forgets the watch once this is dropped.
    _alive: Arc<()>,
}

impl WorkWatch {
    pub(super) fn new(rx: cb::Receiver<Vec<WorkInfo>>, alive: Arc<()>) -> Self {
        WorkWatch {
            rx,
            ready: Mutex::new(VecDeque::new()),
            _alive: alive,
        }
    }

    /// The next change waiting, if any, without waiting.
    fn take_ready(&self) -> Option<WorkInfo> {
        let mut ready = self.ready.lock();
        while ready.is_empty() {
            // Under the lock: a batch's changes stay in their order.
            ready.extend(self.rx.try_recv().ok()?);
        }
        ready.pop_front()
    }

    /// The next change, waiting until `deadline` at most (`None`: for
    /// ever); `None` if none came or the manager stopped.
    pub(super) fn next_until(&self, deadline: Option<Instant>) -> Option<WorkInfo> {
        loop {
            if let Some(info) = self.take_ready() {
                return Some(info);
            }
            let batch = match deadline {
                Some(d) => self.rx.recv_deadline(d).ok()?,
                None => self.rx.recv().ok()?,
            };
            // Behind what another thread took meanwhile, if any.
            let mut ready = self.ready.lock();
            ready.extend(batch);
            if let Some(info) = ready.pop_front() {
                return Some(info);
            }
        }
    }

    /// As [`next_until`](Self::next_until), telling a quiet wait from
    /// the manager's stop.
    pub(super) fn next_or_quiet(&self, deadline: Option<Instant>) -> Next {
        loop {
            if let Some(info) = self.take_ready() {
                return Next::Change(Box::new(info));
            }
            let got = match deadline {
                Some(d) => self.rx.recv_deadline(d).map_err(|e| e.is_timeout()),
                None => self.rx.recv().map_err(|_| false),
            };
            let batch = match got {
                Ok(batch) => batch,
                Err(true) => return Next::Quiet,
                Err(false) => return Next::Stopped,
            };
            let mut ready = self.ready.lock();
            ready.extend(batch);
            if let Some(info) = ready.pop_front() {
                return Next::Change(Box::new(info));
            }
        }
    }

    /// The next change, if one is waiting; never blocks.
    ///
    /// # Examples
    ///
    /// See [`WorkWatch`].
    pub fn try_next(&self) -> Option<WorkInfo> {
        self.take_ready()
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
        let mut ready = self.ready.lock();
        let mut all: Vec<WorkInfo> = ready.drain(..).collect();
        for batch in self.rx.try_iter() {
            all.extend(batch);
        }
        all
    }

    /// Waits up to `timeout` for the next change.
    ///
    /// # Examples
    ///
    /// See [`WorkWatch`].
    pub fn next_timeout(&self, timeout: Duration) -> Option<WorkInfo> {
        self.next_until(Instant::now().checked_add(timeout))
    }
}

impl Iterator for WorkWatch {
    type Item = WorkInfo;

    fn next(&mut self) -> Option<WorkInfo> {
        self.next_until(None)
    }
}

/// What [`WorkWatch::next_or_quiet`] came to.
pub(super) enum Next {
    /// A change.
    Change(Box<WorkInfo>),
    /// None until the deadline.
    Quiet,
    /// The manager stopped.
    Stopped,
}
