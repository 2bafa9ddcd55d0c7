//! Headless runs (`WorkManagerBuilder::run_due`): the command an OS timer
//! starts while the app is closed runs the due work and returns within its
//! budget; work the budget stops is enqueued again, not lost; and beside an
//! app on the same store, each work runs once: in a child process, a
//! headless run and a manager take turns on the store and a log of runs
//! shows every work exactly once.
//!
//! Waits are conditions with generous timeouts (a loaded 2-core machine);
//! bounds on how long a run takes are checked from above with slack, and
//! from below only where the budget must have been waited for.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::wait_until;
use isolates::schedule::*;

const HOUR: Duration = Duration::from_secs(3600);
/// How long a child may take beyond what it is asked to (start-up, a
/// loaded machine).
const SLACK: Duration = Duration::from_secs(8);

/// The child entry's environment variables: the store, the log, and what
/// to do.
const CHILD_STORE: &str = "ISOLATES_TEST_HEADLESS_STORE";
const CHILD_LOG: &str = "ISOLATES_TEST_HEADLESS_LOG";
const CHILD_BUDGET_MS: &str = "ISOLATES_TEST_HEADLESS_BUDGET_MS";

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "isolates-schedule-headless-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Appends one line per run to `log`: the work's id and this process's.
fn note_run(log: &Path, work: WorkId) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    // One write of one short line: O_APPEND keeps lines whole.
    f.write_all(format!("{} {}\n", work.0, std::process::id()).as_bytes())
        .unwrap();
}

/// The works the log says ran, in order of the lines.
fn runs(log: &Path) -> Vec<u64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect()
}

/// The handlers of both sides: `job` logs its run and takes `input` ms;
/// `retry` asks for a retry; `slow` runs until told to stop; `stubborn`
/// ignores the stop for 20 s.
fn handlers(builder: WorkManagerBuilder, log: &Path) -> WorkManagerBuilder {
    let (l1, l2) = (log.to_path_buf(), log.to_path_buf());
    builder
        .handler_fn("job", move |ms: u64, ctx: &WorkContext<'_>| {
            note_run(&l1, ctx.id());
            std::thread::sleep(Duration::from_millis(ms));
            WorkResult::Success(ms)
        })
        .handler_fn("retry", move |(): (), ctx: &WorkContext<'_>| {
            note_run(&l2, ctx.id());
            WorkResult::<()>::Retry
        })
        .handler_fn("slow", |(): (), ctx: &WorkContext<'_>| {
            while !ctx.is_stopped() {
                std::thread::sleep(Duration::from_millis(2));
            }
            WorkResult::Success(())
        })
        .handler_fn("stubborn", |(): (), _: &WorkContext<'_>| {
            std::thread::sleep(Duration::from_secs(20));
            WorkResult::Success(())
        })
}

/// Stores `requests` as an app did an hour ago: each is due `delay` after
/// that, on the real clock now.
fn seed(store: &Path, log: &Path, requests: Vec<WorkRequest>) -> Vec<WorkId> {
    let an_hour_ago = ManualClock::new(SystemTime::now() - HOUR);
    let app = handlers(WorkManager::builder(WorkStore::open(store).unwrap()), log)
        .clock(an_hour_ago)
        .spawn()
        .unwrap();
    let mut ids = Vec::new();
    for r in requests {
        ids.extend_from_slice(app.enqueue(r).wait().unwrap().ids());
    }
    app.stop();
    app.join(Duration::MAX);
    ids
}

/// Due half an hour ago.
fn due(handler: &str) -> WorkRequest {
    WorkRequest::once(handler).initial_delay(HOUR / 2)
}

#[test]
fn run_due_runs_what_is_due_and_leaves_the_rest() {
    let dir = TempDir::new("due");
    let (store, log) = (dir.path("works.db"), dir.path("runs.log"));
    let mut requests: Vec<WorkRequest> = (0..3).map(|_| due("job").input(&5u64)).collect();
    requests.push(
        WorkRequest::periodic("job", HOUR)
            .input(&1u64)
            .initial_delay(HOUR / 2),
    );
    requests.push(due("retry"));
    requests.push(
        WorkRequest::once("job")
            .input(&1u64)
            .initial_delay(2 * HOUR),
    );
    let ids = seed(&store, &log, requests);
    assert!(runs(&log).is_empty(), "nothing ran in the app");

    let started = Instant::now();
    let run = handlers(WorkManager::builder(WorkStore::open(&store).unwrap()), &log)
        .run_due(Duration::from_secs(60))
        .unwrap();
    let took = started.elapsed();
    assert!(run.drained, "{run:?}");
    assert!(
        took < Duration::from_secs(60),
        "it returned once done: {took:?}"
    );
    let mut ran = runs(&log);
    ran.sort_unstable();
    assert_eq!(ran, ids[..5].iter().map(|i| i.0).collect::<Vec<_>>());
    assert_eq!(run.stopped, []);
    let states: Vec<(WorkId, WorkState)> = run.ran.iter().map(|i| (i.id, i.state)).collect();
    use WorkState::*;
    assert_eq!(
        states,
        [
            (ids[0], Succeeded),
            (ids[1], Succeeded),
            (ids[2], Succeeded),
            (ids[3], Enqueued), // its next period
            (ids[4], Enqueued), // after its backoff
        ]
    );
    assert_eq!(run.ran[3].periods, 1);
    assert_eq!(run.ran[4].retries, 1);
    // The earliest work left: the retry, 30 s after its run (exponential
    // backoff from 30 s), before the next period and the delayed work.
    let retry_at = run.ran[4].next_run_at.unwrap();
    assert_eq!(run.next_due, Some(retry_at));
    let now = SystemTime::now();
    assert!(retry_at > now - Duration::from_secs(60) && retry_at <= now + Duration::from_secs(30));

    // The store says the same to the next opener.
    let left = WorkStore::open(&store).unwrap().works().unwrap();
    assert_eq!(
        left.iter().find(|i| i.id == ids[5]).unwrap().state,
        Enqueued
    );
    assert_eq!(
        left.iter().find(|i| i.id == ids[0]).unwrap().state,
        Succeeded
    );
}

#[derive(Debug)]
struct Never;

impl Constraint for Never {
    fn holds(&self) -> bool {
        false
    }
}

#[test]
fn run_due_follows_a_chain_and_does_not_wait_for_what_cannot_start() {
    let dir = TempDir::new("chain");
    let (store, log) = (dir.path("works.db"), dir.path("runs.log"));
    let an_hour_ago = ManualClock::new(SystemTime::now() - HOUR);
    let ids = {
        let app = handlers(WorkManager::builder(WorkStore::open(&store).unwrap()), &log)
            .clock(an_hour_ago)
            .constraint("never", Never)
            .handler_fn("elsewhere", |(): (), _: &WorkContext<'_>| {
                WorkResult::Success(())
            })
            .spawn()
            .unwrap();
        // A chain whose second stage becomes due during the run; work on a
        // constraint that does not hold; work for a handler the headless
        // command does not register.
        let chain = WorkChain::new(due("job").input(&1u64)).then(WorkRequest::once("job"));
        let mut ids = app.enqueue(chain).wait().unwrap().ids().to_vec();
        let waits = due("job").input(&1u64).constraint("never");
        ids.extend_from_slice(app.enqueue(waits).wait().unwrap().ids());
        ids.extend_from_slice(app.enqueue(due("elsewhere")).wait().unwrap().ids());
        app.stop();
        app.join(Duration::MAX);
        ids
    };
    let started = Instant::now();
    let run = handlers(WorkManager::builder(WorkStore::open(&store).unwrap()), &log)
        .constraint("never", Never)
        .run_due(Duration::from_secs(60))
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "it did not wait for them"
    );
    assert!(run.drained, "{run:?}");
    let ran: Vec<(WorkId, WorkState)> = run.ran.iter().map(|i| (i.id, i.state)).collect();
    assert_eq!(
        ran,
        [
            (ids[0], WorkState::Succeeded),
            (ids[1], WorkState::Succeeded)
        ],
        "the chain ran through, its second stage on the first's output"
    );
    assert_eq!(run.ran[1].output::<u64>(), Some(Ok(1)));
    // What could not start is still due: the OS timer comes back later.
    assert!(run.next_due.unwrap() <= SystemTime::now());
    let left = WorkStore::open(&store).unwrap().works().unwrap();
    for id in &ids[2..] {
        let info = left.iter().find(|i| i.id == *id).unwrap();
        assert_eq!((info.state, info.run_attempts), (WorkState::Enqueued, 0));
    }
}

#[test]
fn a_run_past_the_budget_is_stopped_and_enqueued_again() {
    let dir = TempDir::new("budget");
    let (store, log) = (dir.path("works.db"), dir.path("runs.log"));
    let ids = seed(&store, &log, vec![due("slow")]);
    let budget = Duration::from_millis(300);

    let started = Instant::now();
    let run = handlers(WorkManager::builder(WorkStore::open(&store).unwrap()), &log)
        .stop_grace(Duration::from_secs(5))
        .run_due(budget)
        .unwrap();
    let took = started.elapsed();
    assert!(took >= budget, "it ran to its budget: {took:?}");
    assert!(took < budget + SLACK, "the run stopped when told: {took:?}");
    assert!(!run.drained);
    assert_eq!(run.stopped, ids);
    assert_eq!(run.ran[0].state, WorkState::Enqueued);
    assert_eq!(run.ran[0].failure, None, "a stop is not a failure");
    assert!(
        run.next_due.unwrap() <= SystemTime::now(),
        "due again at once"
    );

    // Not lost: the next run finishes it (this time it is quick).
    let run = WorkManager::builder(WorkStore::open(&store).unwrap())
        .handler_fn(
            "slow",
            |(): (), _: &WorkContext<'_>| WorkResult::Success(()),
        )
        .run_due(Duration::from_secs(60))
        .unwrap();
    assert!(run.drained);
    assert_eq!(run.ran[0].id, ids[0]);
    assert_eq!(run.ran[0].state, WorkState::Succeeded);
    assert_eq!(run.ran[0].run_attempts, 2);
}

// ---- in a child process --------------------------------------------------

/// Runs `run_due` in this test binary as a child process: the test named
/// `child_entry` does the headless run when the environment says so.
fn headless_child(store: &Path, log: &Path, budget: Duration) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD_STORE, store)
        .env(CHILD_LOG, log)
        .env(CHILD_BUDGET_MS, budget.as_millis().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// The headless command: exit 0 after a run (printing its report), 3 when
/// the app holds the store.
#[test]
fn child_entry() {
    let (Some(store), Some(log), Some(budget)) = (
        std::env::var_os(CHILD_STORE),
        std::env::var_os(CHILD_LOG),
        std::env::var(CHILD_BUDGET_MS).ok(),
    ) else {
        return; // run as a test of its own: nothing to do
    };
    let budget = Duration::from_millis(budget.parse().unwrap());
    let store = match WorkStore::open(&store) {
        Ok(store) => store,
        Err(StoreError::Locked { .. }) => {
            println!("locked");
            std::process::exit(3);
        }
        Err(e) => panic!("{e}"),
    };
    let run = handlers(WorkManager::builder(store), Path::new(&log))
        .stop_grace(Duration::from_millis(200))
        .run_due(budget)
        .unwrap();
    println!(
        "ran {} stopped {} drained {}",
        run.ran.len(),
        run.stopped.len(),
        run.drained
    );
    // Leave at once: a stubborn run's thread is left behind with the
    // process, as a headless command does.
    std::process::exit(0);
}

fn wait_child(child: &mut std::process::Child, within: Duration) -> (i32, String) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
            return (status.code().unwrap_or(-1), out);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the headless child did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The app's side: opens the store (waiting for a headless run to end),
/// runs everything that is due, and shuts down.
fn app_drains(store: &Path, log: &Path, ids: &[WorkId]) {
    let app = handlers(
        WorkManager::builder(WorkStore::open_timeout(store, Duration::from_secs(60)).unwrap()),
        log,
    )
    .spawn()
    .unwrap();
    for &id in ids {
        let info = app.wait_finished(id, Duration::from_secs(60)).unwrap();
        assert_eq!(info.state, WorkState::Succeeded, "{info:?}");
    }
    app.stop();
    app.join(Duration::MAX);
}

#[test]
fn a_headless_child_and_the_app_never_run_a_work_twice() {
    let dir = TempDir::new("turns");
    let (store, log) = (dir.path("works.db"), dir.path("runs.log"));
    // 40 works of 20 ms: more than a 300 ms budget on the child's workers,
    // so the app finishes what the child's budget stopped or left.
    let ids = seed(
        &store,
        &log,
        (0..40).map(|_| due("job").input(&20u64)).collect(),
    );
    let budget = Duration::from_millis(300);
    let started = Instant::now();
    let mut child = headless_child(&store, &log, budget);
    // The app starts while the child runs works: it waits for the store.
    assert!(
        wait_until(|| !runs(&log).is_empty(), Duration::from_secs(30)),
        "the child ran nothing"
    );
    app_drains(&store, &log, &ids);
    let (code, out) = wait_child(&mut child, Duration::from_secs(30));
    assert_eq!(code, 0, "{out}");
    assert!(
        started.elapsed() < budget + Duration::from_millis(200) + SLACK + Duration::from_secs(5),
        "the child kept its budget"
    );
    // Every work ran, and each once to completion: a run the child's
    // budget stopped ran again in the app (that run is logged twice, once
    // per process, and only those stopped ones).
    let lines = std::fs::read_to_string(&log).unwrap();
    let mut by_work: std::collections::BTreeMap<u64, Vec<&str>> = Default::default();
    for line in lines.lines() {
        let (work, pid) = line.split_once(' ').unwrap();
        by_work.entry(work.parse().unwrap()).or_default().push(pid);
    }
    assert_eq!(by_work.len(), ids.len(), "every work ran");
    let stopped: usize = out
        .split_whitespace()
        .skip_while(|w| *w != "stopped")
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let (child_pid, app_pid) = (child.id().to_string(), std::process::id().to_string());
    for (work, pids) in &by_work {
        match pids.as_slice() {
            [_] => {}
            // Stopped by the child's budget mid-run, then run by the app.
            [first, second] => assert!(
                *first == child_pid && *second == app_pid,
                "work {work} ran twice: {pids:?}"
            ),
            _ => panic!("work {work} ran {} times: {pids:?}", pids.len()),
        }
    }
    // A stopped run may not have reached its handler yet: at most the
    // stopped ones ran again.
    let twice = by_work.values().filter(|pids| pids.len() == 2).count();
    assert!(
        twice <= stopped,
        "only runs the budget stopped ran again: {out}"
    );
}

#[test]
fn a_headless_child_leaves_the_store_to_a_running_app() {
    let dir = TempDir::new("app-first");
    let (store, log) = (dir.path("works.db"), dir.path("runs.log"));
    let ids = seed(
        &store,
        &log,
        (0..5).map(|_| due("job").input(&1u64)).collect(),
    );
    // The app runs (and holds the store); the OS timer fires meanwhile.
    let app = handlers(WorkManager::builder(WorkStore::open(&store).unwrap()), &log)
        .spawn()
        .unwrap();
    let mut child = headless_child(&store, &log, Duration::from_secs(10));
    let (code, out) = wait_child(&mut child, Duration::from_secs(30));
    assert_eq!(code, 3, "{out}");
    assert!(out.trim_end().ends_with("locked"), "{out}");
    for &id in &ids {
        assert_eq!(
            app.wait_finished(id, Duration::from_secs(60))
                .unwrap()
                .state,
            WorkState::Succeeded
        );
    }
    app.stop();
    app.join(Duration::MAX);
    let mut ran = runs(&log);
    ran.sort_unstable();
    assert_eq!(
        ran,
        ids.iter().map(|i| i.0).collect::<Vec<_>>(),
        "each once"
    );
}

#[test]
fn a_headless_child_exits_within_its_budget_past_a_stubborn_run() {
    let dir = TempDir::new("stubborn");
    let (store, log) = (dir.path("works.db"), dir.path("runs.log"));
    let ids = seed(&store, &log, vec![due("stubborn")]);
    let budget = Duration::from_millis(300);
    let started = Instant::now();
    let mut child = headless_child(&store, &log, budget);
    let (code, out) = wait_child(&mut child, budget + SLACK);
    let took = started.elapsed();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("stopped 1"), "{out}");
    // The handler would take 20 s; the child left after its budget and
    // grace, well before.
    assert!(took < Duration::from_secs(15), "{took:?}");
    let left = WorkStore::open(&store).unwrap().works().unwrap();
    assert_eq!(left[0].id, ids[0]);
    assert_eq!(left[0].state, WorkState::Enqueued, "rescheduled, not lost");
    assert_eq!(left[0].run_attempts, 1);
}
