//! Pools where a review found a documented promise broken: a taken handle
//! given to a MainThread, a running task's deadline after stop,
//! `is_executing` across a retry, priorities, a pump's budget with much
//! progress, and a worker's uptime after a restart.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use isolates::TaskError;
use isolates::pool::TaskPriority;
use isolates::pool::{MainThread, Pool, Task, TaskContext, Worker};
use parking_lot::Mutex;

fn wait_until(mut cond: impl FnMut() -> bool, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

// ---- a worker held at gates -------------------------------------------------

const GATES: usize = 16;
static OPEN: [AtomicBool; GATES] = [const { AtomicBool::new(false) }; GATES];
/// Runs started, counted on the first gate of the input.
static STARTED: [AtomicUsize; GATES] = [const { AtomicUsize::new(0) }; GATES];
/// Runs returned, counted on the first gate of the input.
static RETURNED: [AtomicUsize; GATES] = [const { AtomicUsize::new(0) }; GATES];

fn open(gate: usize) {
    OPEN[gate].store(true, Ordering::Release);
}

/// Input `(first, second)`: the first run waits at gate `first`, any later
/// run at gate `second`. Never looks at `is_cancelled` (a native loop).
struct Gated;

impl Worker for Gated {
    type Args = ();
    type Input = (usize, usize);
    type Output = usize;
    type Progress = ();
    type Error = String;

    fn start(_: ()) -> Result<Self, String> {
        Ok(Gated)
    }

    fn run(
        &mut self,
        (first, second): (usize, usize),
        _: &TaskContext<'_, Self>,
    ) -> Result<usize, String> {
        let attempt = STARTED[first].fetch_add(1, Ordering::AcqRel);
        let gate = if attempt == 0 { first } else { second };
        let until = Instant::now() + Duration::from_secs(10);
        while !OPEN[gate].load(Ordering::Acquire) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        RETURNED[first].fetch_add(1, Ordering::AcqRel);
        Ok(attempt + 1)
    }
}

// ---- MainThread ---------------------------------------------------------------

/// A handle whose result was taken (a `wait_timeout` that got it) and is
/// then given to `MainThread::on_done`: its callback must run (with
/// `AlreadyTaken`, as `on_reply` does for a taken `Pending` and `Batch` for
/// a taken handle) and the watch must end, or a frame loop that pumps
/// `while ui.watching() > 0` never ends.
#[test]
fn main_thread_delivers_a_handle_whose_result_was_taken() {
    let pool = Pool::from_fn(|n: u32| n + 1).unwrap();
    let mut handle = pool.submit(1);
    assert_eq!(handle.wait_timeout(Duration::from_secs(5)), Some(Ok(2)));

    let mut ui = MainThread::new();
    let got = Rc::new(RefCell::new(None));
    let sink = Rc::clone(&got);
    ui.on_done(handle, move |r| *sink.borrow_mut() = Some(r));
    let until = Instant::now() + Duration::from_secs(2);
    while ui.watching() > 0 && Instant::now() < until {
        ui.pump(Duration::from_millis(2));
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        (ui.watching(), got.borrow().clone()),
        (0, Some(Err(TaskError::AlreadyTaken))),
        "(watching, delivered) after 2 s of pumping"
    );
}

// ---- deadlines ----------------------------------------------------------------

/// A running task's deadline resolves it `TimedOut` on time for whoever
/// waits without polling (an `on_resolve` observer, an awaiting future),
/// also after `stop()`: stopping lets running tasks finish, it does not
/// switch their deadlines off.
#[test]
fn a_running_tasks_deadline_still_fires_after_stop() {
    const G: usize = 0;
    let pool = Pool::<Gated>::builder().workers(1).spawn(()).unwrap();
    let task = pool.submit_task(Task::new((G, G)).timeout(Duration::from_millis(300)));
    assert!(wait_until(
        || STARTED[G].load(Ordering::Acquire) == 1,
        Duration::from_secs(5)
    ));
    let (tx, rx) = std::sync::mpsc::channel();
    task.on_resolve(move |_| {
        let _ = tx.send(Instant::now());
    });
    pool.stop();
    let resolved = rx.recv_timeout(Duration::from_secs(3));
    open(G); // let the run end either way
    assert!(
        resolved.is_ok(),
        "the 300 ms deadline of a running task did not resolve it within 3 s after stop()"
    );
    let mut task = task;
    assert_eq!(task.try_take(), Some(Err(TaskError::TimedOut)));
}

// ---- kill_worker and retries ---------------------------------------------------

/// After `kill_worker` the task runs again (a retry) while the abandoned
/// run goes on; when the abandoned run returns, the retry is still
/// executing, so `TaskWatch::is_executing` must stay true until it returns.
#[test]
fn is_executing_stays_true_while_the_retry_runs_after_the_old_run_returns() {
    const FIRST: usize = 1;
    const SECOND: usize = 2;
    let pool = Pool::<Gated>::builder().workers(1).spawn(()).unwrap();
    let task = pool.submit_task(Task::new((FIRST, SECOND)).retries(1));
    let watch = task.watch();
    assert!(wait_until(
        || STARTED[FIRST].load(Ordering::Acquire) == 1,
        Duration::from_secs(5)
    ));
    assert!(pool.kill_worker(0));
    // The retry starts on the replacement worker.
    assert!(wait_until(
        || STARTED[FIRST].load(Ordering::Acquire) == 2,
        Duration::from_secs(5)
    ));
    assert!(watch.is_executing());
    // The abandoned first run returns; the retry is still held at SECOND.
    open(FIRST);
    assert!(wait_until(
        || RETURNED[FIRST].load(Ordering::Acquire) == 1,
        Duration::from_secs(5)
    ));
    let went_idle = wait_until(|| !watch.is_executing(), Duration::from_millis(500));
    let still_running = RETURNED[FIRST].load(Ordering::Acquire) == 1;
    open(SECOND);
    let mut task = task;
    assert_eq!(task.wait_timeout(Duration::from_secs(5)), Some(Ok(2)));
    assert!(
        !(went_idle && still_running),
        "is_executing() turned false while the retry was still running"
    );
}

// ---- priorities -------------------------------------------------------------

static ORDER: Mutex<Vec<TaskPriority>> = Mutex::new(Vec::new());
const HOLD: usize = 3;

/// Logs each task's priority (the held first task waits at gate `HOLD`).
struct Logged;

impl Worker for Logged {
    type Args = ();
    type Input = Option<u8>;
    type Output = ();
    type Progress = ();
    type Error = String;

    fn start(_: ()) -> Result<Self, String> {
        Ok(Logged)
    }

    fn run(&mut self, p: Option<u8>, _: &TaskContext<'_, Self>) -> Result<(), String> {
        match p {
            None => {
                STARTED[HOLD].fetch_add(1, Ordering::AcqRel);
                let until = Instant::now() + Duration::from_secs(10);
                while !OPEN[HOLD].load(Ordering::Acquire) && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Some(p) => ORDER.lock().push(
                [TaskPriority::High, TaskPriority::Normal, TaskPriority::Low][usize::from(p)],
            ),
        }
        Ok(())
    }
}

/// The module's promise: "high is served first, but one pick in four goes
/// to normal work and one in eight to low". With all three classes
/// waiting, normal must get about a quarter of the picks.
#[test]
fn with_every_class_waiting_normal_gets_one_pick_in_four() {
    let pool = Pool::<Logged>::builder().workers(1).spawn(()).unwrap();
    let held = pool.submit(None);
    assert!(wait_until(
        || STARTED[HOLD].load(Ordering::Acquire) == 1,
        Duration::from_secs(5)
    ));
    let mut handles = vec![held];
    for p in [TaskPriority::High, TaskPriority::Normal, TaskPriority::Low] {
        for _ in 0..64 {
            handles.push(pool.submit_task(Task::new(Some(p as u8)).priority(p)));
        }
    }
    open(HOLD);
    for h in isolates::pool::join_all(handles) {
        assert_eq!(h, Ok(()));
    }
    let order = ORDER.lock().clone();
    // The first 64 picks: every class still has work waiting.
    let first = &order[..64];
    let count = |p| first.iter().filter(|&&q| q == p).count();
    let (high, normal, low) = (
        count(TaskPriority::High),
        count(TaskPriority::Normal),
        count(TaskPriority::Low),
    );
    assert!(
        normal >= 14,
        "of 64 picks with every class waiting: high {high}, normal {normal}, low {low}; \
         one in four to normal would be 16"
    );
}

// ---- MainThread's budget ----------------------------------------------------

const PROGRESS_GATE: usize = 4;

/// `pump(budget)` checks its budget between callbacks, so a frame runs at
/// most one callback past it: a task that reported 200 progress values
/// must not have all 200 callbacks run in one 2 ms pump.
#[test]
fn pump_keeps_to_its_budget_with_many_progress_values() {
    let pool = Pool::from_task_fn(|n: u32, task: &TaskContext<'_, _>| {
        for i in 0..n {
            task.progress(i);
        }
        STARTED[PROGRESS_GATE].fetch_add(1, Ordering::AcqRel);
        let until = Instant::now() + Duration::from_secs(10);
        while !OPEN[PROGRESS_GATE].load(Ordering::Acquire) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok::<u32, String>(n)
    })
    .unwrap();
    let handle = pool.submit(200);
    assert!(wait_until(
        || STARTED[PROGRESS_GATE].load(Ordering::Acquire) == 1,
        Duration::from_secs(5)
    ));
    let mut ui = MainThread::new();
    let seen = Rc::new(std::cell::Cell::new(0u32));
    let s = Rc::clone(&seen);
    ui.watch(
        handle,
        move |_: u32| {
            // A callback that takes 1 ms (a UI update).
            std::thread::sleep(Duration::from_millis(1));
            s.set(s.get() + 1);
        },
        |_| {},
    );
    let started = Instant::now();
    let ran = ui.pump(Duration::from_millis(2));
    let took = started.elapsed();
    open(PROGRESS_GATE);
    assert!(
        took < Duration::from_millis(50),
        "a 2 ms pump took {took:?}, ran {} progress callbacks and returned {ran}",
        seen.get()
    );
}

// ---- worker stats -------------------------------------------------------------

/// A task's panic restarts its worker with fresh state (counted in
/// `restarts`, as a kill is); `WorkerStats::uptime` is "since the slot's
/// current worker started", so it starts again from the restart, as it
/// does after `kill_worker`.
#[test]
fn uptime_starts_again_when_a_panic_restarts_the_worker() {
    let pool = Pool::builder()
        .workers(1)
        .spawn_fn(|n: u32| {
            assert!(n != 0, "boom");
            n
        })
        .unwrap();
    assert!(wait_until(
        || pool.worker_stats()[0].uptime >= Duration::from_millis(600),
        Duration::from_secs(5)
    ));
    let panicked_at = Instant::now();
    assert!(matches!(pool.submit(0).wait(), Err(TaskError::Panicked(_))));
    assert_eq!(pool.submit(1).wait(), Ok(1)); // the fresh worker runs
    assert_eq!(pool.stats().restarts, 1);
    let uptime = pool.worker_stats()[0].uptime;
    let since = panicked_at.elapsed();
    assert!(
        uptime <= since,
        "uptime {uptime:?} after a restart {since:?} ago (a kill_worker restart resets it)"
    );
}
