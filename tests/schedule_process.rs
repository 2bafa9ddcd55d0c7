//! The work manager's handlers in child processes
//! (`WorkManagerBuilder::processes`): a run in a child, its progress, a
//! time limit and a cancel that kill the child, a crash that is a failed
//! run, and handlers the child does not know.
#![cfg(target_os = "linux")]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::wait_until;
use isolates::Backoff;
use isolates::process::{ProcessOptions, Registry};
use isolates::schedule::*;
use serde::{Deserialize, Serialize};

const T: Duration = Duration::from_secs(60);
/// The time limit of runs that time out: it counts from dispatch, a
/// child's start included, which a loaded machine slows.
const LIMIT: Duration = Duration::from_secs(2);

/// Registers the handlers this test binary's children run; a child runs
/// `child_entry` alone and becomes the child there.
fn children() {
    Registry::new()
        .work_handler_fn("pid", |(): (), work: &WorkContext<'_>| {
            WorkResult::Success((std::process::id(), work.in_child()))
        })
        .work_handler_fn("steps", steps)
        .work_handler("spin", Spin)
        .work_handler_fn("abort", |(): (), _: &WorkContext<'_>| -> WorkResult<()> {
            std::process::abort()
        })
        .work_handler_fn("panic", |(): (), _: &WorkContext<'_>| -> WorkResult<()> {
            panic!("the handler gave up")
        })
        .work_handler_fn("hog", |bytes: usize, _: &WorkContext<'_>| {
            let v = vec![1u8; bytes];
            WorkResult::Success(std::hint::black_box(&v).len())
        })
        .test_entry("child_entry")
        .init();
}

#[test]
fn child_entry() {
    children();
}

/// Reports progress 7, then waits for the file `go` in `dir` (or a stop).
fn steps(dir: String, work: &WorkContext<'_>) -> WorkResult<u32> {
    work.set_progress(&7u32);
    let go = Path::new(&dir).join("go");
    while !go.exists() && !work.is_stopped() {
        std::thread::park_timeout(Duration::from_millis(5));
    }
    WorkResult::Success(std::process::id())
}

/// What a [`Spin`] run does.
#[derive(Serialize, Deserialize)]
struct Job {
    /// Where each run writes `run-<attempt>` (its pid) and, once it saw
    /// the stop, `stopped-<attempt>`.
    dir: String,
    /// The attempt that succeeds at once; earlier ones go on until stopped.
    succeed_at: u32,
    /// Whether an earlier attempt returns when told to stop, or ignores it
    /// and runs forever.
    polite: bool,
}

/// Runs until its attempt is `succeed_at`; counts its time-outs (in the
/// parent, where `on_timeout` is called).
struct Spin;

/// Time-outs by the work's last tag (ids repeat across the tests' stores).
static TIMEOUTS: Mutex<Option<HashMap<String, u32>>> = Mutex::new(None);

fn timeouts(tag: &str) -> u32 {
    TIMEOUTS
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|m| m.get(tag).copied())
        .unwrap_or(0)
}

impl Handler for Spin {
    type Input = Job;
    type Output = u32;

    fn run(&self, job: Job, work: &WorkContext<'_>) -> WorkResult<u32> {
        let dir = Path::new(&job.dir);
        let attempt = work.attempt();
        let _ = std::fs::write(
            dir.join(format!("run-{attempt}")),
            std::process::id().to_string(),
        );
        if attempt >= job.succeed_at {
            return WorkResult::Success(attempt);
        }
        loop {
            if job.polite && work.is_stopped() {
                let _ = std::fs::write(dir.join(format!("stopped-{attempt}")), "");
                return WorkResult::Retry;
            }
            // A runaway handler: it never returns by itself.
            std::thread::park_timeout(Duration::from_millis(5));
        }
    }

    fn on_timeout(&self, info: &WorkInfo) {
        *TIMEOUTS
            .lock()
            .unwrap()
            .get_or_insert_with(HashMap::new)
            .entry(info.tags.last().cloned().unwrap_or_default())
            .or_default() += 1;
    }
}

/// A fresh directory for one test, removed when dropped.
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!(
        "isolates-schedule-process-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// The pid a run wrote to `file`, once it is there.
fn pid_in(file: &Path) -> u32 {
    let mut pid = None;
    assert!(
        wait_until(
            || {
                pid = std::fs::read_to_string(file)
                    .ok()
                    .and_then(|s| s.parse().ok());
                pid.is_some()
            },
            T
        ),
        "{} was never written",
        file.display()
    );
    pid.unwrap()
}

/// Whether process `pid` is gone (killed and reaped).
fn gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

fn manager(options: ProcessOptions) -> WorkManager {
    WorkManager::builder(WorkStore::in_memory().unwrap())
        .processes(options)
        .workers(2)
        .min_backoff(Duration::from_millis(10))
        .stop_grace(Duration::from_millis(300))
        .spawn()
        .unwrap()
}

fn enqueue(manager: &WorkManager, request: WorkRequest) -> WorkId {
    manager.enqueue(request).wait().unwrap().ids()[0]
}

/// Runs one work to the end, so that a child is up.
fn warm_up(manager: &WorkManager) {
    let id = enqueue(manager, WorkRequest::once("pid"));
    let info = manager.wait_finished(id, T).unwrap();
    assert_eq!(info.state, WorkState::Succeeded, "{:?}", info.failure);
}

#[test]
fn a_handler_runs_in_a_child_and_its_output_is_stored() {
    children();
    let manager = manager(ProcessOptions::new());
    let id = enqueue(&manager, WorkRequest::once("pid"));
    let info = manager.wait_finished(id, T).unwrap();
    assert_eq!(info.state, WorkState::Succeeded, "{:?}", info.failure);
    let (pid, in_child) = info.output::<(u32, bool)>().unwrap().unwrap();
    assert_ne!(pid, std::process::id());
    assert!(in_child);
    assert_eq!(manager.info(id).unwrap().output, info.output);
    manager.stop();
}

#[test]
fn progress_in_a_child_reaches_a_watcher() {
    children();
    let dir = scratch("progress");
    let manager = manager(ProcessOptions::new());
    let id = enqueue(
        &manager,
        WorkRequest::once("steps").input(dir.to_str().unwrap()),
    );
    let running = manager
        .wait_for(id, T, |i| i.progress::<u32>().is_some())
        .unwrap();
    assert_eq!(running.state, WorkState::Running);
    assert_eq!(running.progress::<u32>(), Some(Ok(7)));
    std::fs::write(dir.join("go"), "").unwrap();
    let done = manager.wait_finished(id, T).unwrap();
    assert_eq!(done.state, WorkState::Succeeded, "{:?}", done.failure);
    assert_ne!(done.output::<u32>(), Some(Ok(std::process::id())));
    assert_eq!(done.progress, None);
    manager.stop();
}

#[test]
fn a_runaway_handler_is_killed_at_its_time_limit_and_retried() {
    children();
    let dir = scratch("runaway");
    let manager = manager(ProcessOptions::new());
    warm_up(&manager);
    let job = Job {
        dir: dir.to_str().unwrap().into(),
        succeed_at: 3,
        polite: false,
    };
    let request = WorkRequest::once("spin")
        .input(&job)
        .tag("runaway")
        .time_limit(LIMIT)
        .backoff(Backoff::linear(Duration::from_millis(10)));
    let id = enqueue(&manager, request);
    let info = manager.wait_finished(id, T).unwrap();
    assert_eq!(info.state, WorkState::Succeeded, "{:?}", info.failure);
    assert_eq!(info.output::<u32>(), Some(Ok(3)));
    assert_eq!(info.run_attempts, 3);
    assert_eq!(timeouts("runaway"), 2, "on_timeout is called in the parent");
    // The two runaway runs' children were killed (and reaped); the third
    // ran in a fresh child.
    let first = pid_in(&dir.join("run-1"));
    let second = pid_in(&dir.join("run-2"));
    let third = pid_in(&dir.join("run-3"));
    assert!(wait_until(|| gone(first) && gone(second), T));
    assert_ne!(first, std::process::id());
    assert!(third != first && third != second);
    assert!(!dir.join("stopped-1").exists());
    manager.stop();
}

#[test]
fn a_handler_that_stops_when_told_keeps_its_child() {
    children();
    let dir = scratch("polite");
    // A grace far longer than the test: a kill would show as a hang.
    let manager = WorkManager::builder(WorkStore::in_memory().unwrap())
        .processes(ProcessOptions::new())
        .workers(1)
        .min_backoff(Duration::from_millis(10))
        .stop_grace(Duration::from_secs(600))
        .spawn()
        .unwrap();
    warm_up(&manager);
    let job = Job {
        dir: dir.to_str().unwrap().into(),
        succeed_at: 2,
        polite: true,
    };
    let request = WorkRequest::once("spin")
        .input(&job)
        .tag("polite")
        .time_limit(LIMIT)
        .backoff(Backoff::linear(Duration::from_millis(10)));
    let id = enqueue(&manager, request);
    let info = manager.wait_finished(id, T).unwrap();
    assert_eq!(info.state, WorkState::Succeeded, "{:?}", info.failure);
    assert_eq!(info.run_attempts, 2);
    assert_eq!(timeouts("polite"), 1);
    // The stop reached the child, which returned: not killed, it ran the
    // retry too.
    assert!(dir.join("stopped-1").exists());
    assert_eq!(pid_in(&dir.join("run-1")), pid_in(&dir.join("run-2")));
    manager.stop();
}

#[test]
fn a_cancel_kills_a_running_child() {
    children();
    let dir = scratch("cancel");
    let manager = manager(ProcessOptions::new());
    let job = Job {
        dir: dir.to_str().unwrap().into(),
        succeed_at: u32::MAX,
        polite: false,
    };
    let id = enqueue(&manager, WorkRequest::once("spin").input(&job));
    let pid = pid_in(&dir.join("run-1"));
    assert!(!gone(pid));
    let cancelled_at = Instant::now();
    assert_eq!(manager.cancel(WorkQuery::Id(id)).wait(), Ok(1));
    assert_eq!(manager.info(id).unwrap().state, WorkState::Cancelled);
    // Killed after the stop grace (300 ms), not at the 10-minute limit.
    assert!(wait_until(|| gone(pid), T), "the child {pid} still runs");
    assert!(cancelled_at.elapsed() < Duration::from_secs(30));
    // The manager goes on, in a fresh child.
    let next = enqueue(&manager, WorkRequest::once("pid"));
    let info = manager.wait_finished(next, T).unwrap();
    assert_eq!(info.state, WorkState::Succeeded, "{:?}", info.failure);
    manager.stop();
}

#[test]
fn an_abort_in_a_child_is_a_failed_run_and_the_next_work_runs() {
    children();
    let manager = manager(ProcessOptions::new());
    let crash = enqueue(&manager, WorkRequest::once("abort"));
    let info = manager.wait_finished(crash, T).unwrap();
    assert_eq!(info.state, WorkState::Failed);
    assert_eq!(info.run_attempts, 1);
    let why = info.failure.unwrap();
    assert!(why.contains("signal 6") && why.contains("SIGABRT"), "{why}");
    let next = enqueue(&manager, WorkRequest::once("pid"));
    let info = manager.wait_finished(next, T).unwrap();
    assert_eq!(info.state, WorkState::Succeeded, "{:?}", info.failure);
    // A panic in a child fails its run as on a thread.
    let panics = enqueue(&manager, WorkRequest::once("panic"));
    let info = manager.wait_finished(panics, T).unwrap();
    assert_eq!(info.state, WorkState::Failed);
    let why = info.failure.unwrap();
    assert!(why.contains("the handler gave up"), "{why}");
    manager.stop();
}

#[test]
fn stopping_the_manager_kills_a_child_that_does_not_stop() {
    children();
    let dir = scratch("shutdown");
    let manager = manager(ProcessOptions::new());
    let job = Job {
        dir: dir.to_str().unwrap().into(),
        succeed_at: u32::MAX,
        polite: false,
    };
    enqueue(&manager, WorkRequest::once("spin").input(&job));
    let pid = pid_in(&dir.join("run-1"));
    manager.stop();
    assert!(manager.join(T));
    assert!(
        wait_until(|| gone(pid), T),
        "the child {pid} outlived its manager"
    );
}

#[test]
fn a_blow_up_past_the_memory_limit_is_a_failed_run() {
    children();
    let limit = 512 << 20;
    let manager = manager(ProcessOptions::new().max_memory(limit));
    let id = enqueue(&manager, WorkRequest::once("hog").input(&(2usize << 30)));
    let info = manager.wait_finished(id, T).unwrap();
    assert_eq!(info.state, WorkState::Failed);
    let why = info.failure.unwrap();
    assert!(why.contains("out of memory"), "{why}");
    let small = enqueue(&manager, WorkRequest::once("hog").input(&(1usize << 20)));
    let info = manager.wait_finished(small, T).unwrap();
    assert_eq!(info.output::<usize>(), Some(Ok(1 << 20)));
    manager.stop();
}

#[test]
fn a_handler_the_child_does_not_register_fails_its_run() {
    children();
    // Registered here only: the child's registration (`children`) lacks
    // it.
    Registry::new()
        .work_handler_fn("parent_only", |(): (), _: &WorkContext<'_>| {
            WorkResult::Success(())
        })
        .init();
    let manager = manager(ProcessOptions::new());
    let id = enqueue(&manager, WorkRequest::once("parent_only"));
    let info = manager.wait_finished(id, T).unwrap();
    assert_eq!(info.state, WorkState::Failed);
    let why = info.failure.unwrap();
    assert!(
        why.contains("parent_only") && why.contains("Registry::work_handler"),
        "{why}"
    );
    manager.stop();
}

#[test]
fn a_name_registered_for_both_a_thread_and_a_child_is_refused() {
    children();
    let err = WorkManager::builder(WorkStore::in_memory().unwrap())
        .handler_fn("pid", |(): (), _: &WorkContext<'_>| {
            WorkResult::Success(0u32)
        })
        .processes(ProcessOptions::new())
        .spawn()
        .unwrap_err();
    assert!(
        matches!(&err, WorkError::Invalid(why) if why.contains("\"pid\"")),
        "{err}"
    );
}

#[test]
fn a_child_that_cannot_start_fails_its_runs_without_a_hang() {
    children();
    // Not this executable: a program that exits at once, as a child whose
    // main lacks the registration would.
    let manager = manager(ProcessOptions::new().program("/bin/sh", ["-c", "exit 3"]));
    for _ in 0..2 {
        let id = enqueue(&manager, WorkRequest::once("pid"));
        let info = manager.wait_finished(id, T).unwrap();
        assert_eq!(info.state, WorkState::Failed);
        let why = info.failure.unwrap();
        assert!(why.contains("could not start"), "{why}");
    }
    manager.stop();
}
