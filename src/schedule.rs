//! Scheduled background work that survives restarts: what Android's
//! WorkManager, Flutter's `workmanager` and `background_fetch` do, for
//! native programs.
//!
//! A [`WorkManager`] runs [`Handler`]s the app registers by name on a pool
//! of worker isolates, when the [`WorkRequest`]s that name them are due:
//!
//! - **one-off, delayed or periodic** work (with a flex window), with
//!   serializable input and output;
//! - **retries** with linear or exponential [`Backoff`](crate::Backoff), and a **time limit**
//!   per run after which the run is told to stop, its worker abandoned, and
//!   the handler's [`on_timeout`](Handler::on_timeout) called;
//! - **constraints** ([`Constraint`]): built-ins read power, load, network
//!   and free space from the real system; work waits until they hold;
//! - **unique names** with an [`ExistingWork`] policy, **tags**, and
//!   **chains** ([`WorkChain`]) passing outputs on as inputs;
//! - **states** as Android's ([`WorkState`]), observed by id, tag or unique
//!   name through snapshots or a [`WorkWatch`], with progress;
//! - an embedded **store** ([`WorkStore`]: SQLite, WAL): after a crash or a
//!   `kill -9`, pending, periodic and interrupted work resumes
//!   (at least once), and succeeded work does not run again;
//! - **alarms** at a wall-clock time ([`WorkRequest::at`]) with a policy
//!   for alarms missed while nothing ran ([`MissedAlarm`]);
//! - **headless runs** ([`WorkManagerBuilder::run_due`]) that run the due
//!   work within a budget and exit, started by an **OS wake-up**
//!   ([`OsWake`]: a systemd user timer, a LaunchAgent, a scheduled task)
//!   that [`WorkManager::wake_with_os`] keeps set for the next due work;
//! - a store **format that survives upgrades**: a schema version with
//!   migrations, and each row's layout ([`WorkStore::open`]);
//! - **handlers in child processes** ([`WorkManagerBuilder::processes`],
//!   with handlers registered by
//!   [`process::Registry::work_handler`](crate::process::Registry::work_handler)):
//!   a crash there fails only that run, and a time limit or a cancel kills
//!   the child;
//! - an injectable [`Clock`], so tests of delays, periods and backoff run
//!   at once ([`ManualClock`]).
//!
//! No call blocks the UI thread: [`WorkManager::enqueue`] and
//! [`WorkManager::cancel`] return an [`Operation`] to poll, snapshots read
//! a shared map, and a [`WorkWatch`] is polled each frame.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use isolates::schedule::*;
//!
//! let clock = ManualClock::default();
//! let manager = WorkManager::builder(WorkStore::in_memory().unwrap())
//!     .clock(clock.clone())
//!     .handler_fn("greet", |name: String, _: &WorkContext<'_>| {
//!         WorkResult::Success(format!("hello, {name}"))
//!     })
//!     .spawn()
//!     .unwrap();
//!
//! let later = WorkRequest::once("greet").input("world").initial_delay(Duration::from_secs(60));
//! let id = manager.enqueue(later).wait().unwrap().ids()[0];
//! assert_eq!(manager.info(id).unwrap().state, WorkState::Enqueued);
//!
//! clock.advance(Duration::from_secs(60)); // a minute passes, at once
//! let info = manager.wait_finished(id, Duration::from_secs(10)).unwrap();
//! assert_eq!(info.output::<String>(), Some(Ok("hello, world".into())));
//! manager.stop();
//! ```

mod builder;
mod child;
mod clock;
mod constraint;
mod core;
mod error;
mod event;
mod handler;
mod headless;
mod manager;
mod operation;
mod outbox;
mod pace;
mod request;
mod runs;
mod store;
mod table;
mod unique;
mod wake;
mod watch;

pub use builder::WorkManagerBuilder;
pub use clock::{Clock, ClockWaker, ManualClock, SystemClock};
pub use constraint::{
    BatteryNotLow, Constraint, NetworkAvailable, OnAcPower, StorageNotLow, SystemIdle,
};
pub use error::WorkError;
pub use handler::{Handler, WorkContext, WorkResult};
pub use headless::DueRun;
pub use manager::WorkManager;
pub use operation::Operation;
pub use request::{
    Enqueued, ExistingWork, InputMerger, MissedAlarm, WorkChain, WorkId, WorkInfo, WorkQuery,
    WorkRequest, WorkState,
};
pub use store::{StoreError, UnreadableWork, WorkStore};
pub use wake::{OsWake, SystemdUnits, WakeError};
pub use watch::WorkWatch;

/// What loading does with one stored row's bytes (for `crate::fuzz`).
pub(crate) use store::{fuzz_log, fuzz_row};
