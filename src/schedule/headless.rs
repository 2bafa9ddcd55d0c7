//! Headless runs: the command the OS starts while the app is closed runs
//! the work that is due and exits, as `background_fetch`'s headless task
//! and Android's JobScheduler waking an app in the background.
//!
//! One of the app and a headless run holds a store at a time (the store's
//! lock, see [`WorkStore::open`]): a headless run started while the app
//! runs cannot open the store ([`StoreError::Locked`]) and has nothing to
//! do, since the app's own manager runs due work; an app started while a
//! headless run holds the store waits for it with
//! [`WorkStore::open_timeout`]. Either way one of them runs a given work,
//! never both.
//!
//! [`StoreError::Locked`]: super::StoreError::Locked

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::core::RunLog;
use super::event::Event;
use super::request::{WorkId, WorkInfo};
#[cfg(doc)]
use super::{StoreError, WorkStore};
use super::{WorkError, WorkManagerBuilder};
use crate::oneshot;

/// What a headless run ([`WorkManagerBuilder::run_due`]) did.
///
/// # Examples
///
/// See [`WorkManagerBuilder::run_due`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DueRun {
    /// The works that started in this run, by id, as they stood when it
    /// ended: succeeded, failed, enqueued again (a retry, the next period,
    /// or stopped by the budget).
    pub ran: Vec<WorkInfo>,
    /// The runs the budget stopped. They are enqueued again, due at once:
    /// the next start (headless or the app) runs them.
    pub stopped: Vec<WorkId>,
    /// Whether every work due was done before the budget ended (work whose
    /// constraints do not hold, or whose handler this program does not
    /// register, is not waited for).
    pub drained: bool,
    /// When the earliest work still enqueued is due: when to wake the
    /// program next ([`OsWake::arm`](super::OsWake::arm)). `None` when no
    /// work is enqueued. It may be past: work that waits on a constraint.
    pub next_due: Option<SystemTime>,
}

impl WorkManagerBuilder {
    /// Runs the work that is due now, and returns once none is left or
    /// `budget` has passed: the body of the command an OS timer starts
    /// while the app is closed (see [`OsWake`](super::OsWake)).
    ///
    /// The manager starts as [`spawn`](Self::spawn) starts it (work a crash
    /// interrupted is due again), runs what is due, including work that
    /// becomes due meanwhile (a chain's next stage), and stops when nothing
    /// runs and nothing due can start: work retrying after a backoff, or
    /// waiting on a constraint that does not hold, waits for a later run.
    /// When `budget` passes first, runs in progress are told to stop
    /// ([`WorkContext::is_stopped`](super::WorkContext::is_stopped)) and are
    /// enqueued again in the store, due at once: they are rescheduled, not
    /// lost, and do not count as failures. They have the stop grace
    /// ([`stop_grace`](Self::stop_grace), default 5 s) to return: the call
    /// returns within `budget` plus the grace (plus the time to open the
    /// store). A handler that ignores the stop past the grace is left
    /// running; end the process then (a headless command exits).
    ///
    /// Open the store with [`WorkStore::open`]: if the app runs, it holds
    /// the store and the open fails with [`StoreError::Locked`]; the app
    /// runs its due work itself, and the headless command has nothing to
    /// do. (Stores are locked on Linux only, for now: elsewhere, keep the
    /// app from running its manager while a headless run holds the store,
    /// or a work may run in both.)
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use isolates::schedule::*;
    ///
    /// let path = std::env::temp_dir().join(format!("isolates-doc-due-{}.db", std::process::id()));
    /// # let _ = std::fs::remove_file(&path);
    /// let hello = |name: String, _: &WorkContext<'_>| WorkResult::Success(format!("hello, {name}"));
    /// // The app, an hour ago, scheduled a greeting for half an hour later,
    /// // and closed.
    /// let an_hour_ago = ManualClock::new(SystemTime::now() - Duration::from_secs(3600));
    /// let app = WorkManager::builder(WorkStore::open(&path).unwrap())
    ///     .clock(an_hour_ago)
    ///     .handler_fn("greet", hello)
    ///     .spawn()
    ///     .unwrap();
    /// let later = WorkRequest::once("greet").input("world").initial_delay(Duration::from_secs(1800));
    /// app.enqueue(later).wait().unwrap();
    /// app.stop();
    /// assert!(app.join(Duration::from_secs(30)));
    /// drop(app);
    ///
    /// // Now the OS starts the headless command: the greeting is due.
    /// let run = WorkManager::builder(WorkStore::open(&path).unwrap())
    ///     .handler_fn("greet", hello)
    ///     .run_due(Duration::from_secs(30))
    ///     .unwrap();
    /// assert!(run.drained);
    /// assert_eq!(run.ran.len(), 1);
    /// assert_eq!(run.ran[0].state, WorkState::Succeeded);
    /// assert_eq!(run.ran[0].output::<String>(), Some(Ok("hello, world".into())));
    /// assert_eq!(run.next_due, None); // nothing left: the OS timer can go
    /// # std::fs::remove_file(&path).unwrap();
    /// ```
    pub fn run_due(mut self, budget: Duration) -> Result<DueRun, WorkError> {
        let deadline = crate::time::deadline_after(budget);
        let log = Arc::new(RunLog::default());
        self.log = Some(Arc::clone(&log));
        let manager = self.spawn()?;
        let (idle, when_idle) = oneshot::oneshot();
        let drained = manager.shared.events.send(Event::WhenIdle(idle)).is_ok()
            && when_idle.recv_until(deadline).is_ok();
        manager.stop();
        manager.join(Duration::MAX);
        let mut started = std::mem::take(&mut *log.started.lock());
        started.sort_unstable();
        started.dedup();
        let mut stopped = std::mem::take(&mut *log.interrupted.lock());
        stopped.sort_unstable();
        let ran = started
            .iter()
            .filter_map(|&id| manager.info(WorkId(id)))
            .collect();
        let next_due = manager
            .shared
            .reader
            .next_due()
            .map_err(WorkError::from)?
            .map(super::clock::from_ms);
        Ok(DueRun {
            ran,
            stopped: stopped.into_iter().map(WorkId).collect(),
            drained,
            next_due,
        })
    }
}
