//! Data-parallel work inside a task, in a pool built with `rayon(true)`:
//! it runs on the pool's idle workers, never on extra threads.

mod common;

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use isolates::pool::{Pool, TaskContext, Worker};
use rayon::prelude::*;

const T: Duration = Duration::from_secs(10);

/// Splits `n` items over rayon; returns the names of the threads that ran
/// them. Item 0 waits until a second thread has joined in (or 10 s pass),
/// so the test shows that an idle worker helped, without relying on timing.
struct Spread;

impl Worker for Spread {
    type Args = ();
    type Input = u32;
    type Output = Vec<String>;
    type Progress = ();
    type Error = String;

    fn start(_: ()) -> Result<Self, String> {
        Ok(Spread)
    }

    fn run(&mut self, n: u32, task: &TaskContext<'_, Self>) -> Result<Vec<String>, String> {
        let seen = Mutex::new(HashSet::new());
        let record = || {
            let name = std::thread::current().name().unwrap_or("?").to_string();
            seen.lock().unwrap().insert(name);
        };
        task.par(|| {
            (0..n).into_par_iter().for_each(|i| {
                record();
                if i == 0 {
                    let until = Instant::now() + T;
                    while seen.lock().unwrap().len() < 2 && Instant::now() < until {
                        std::thread::yield_now();
                    }
                }
            });
        });
        let mut names: Vec<String> = seen.into_inner().unwrap().into_iter().collect();
        names.sort();
        Ok(names)
    }
}

#[test]
fn par_work_runs_on_idle_workers_and_no_other_thread() {
    let pool = Pool::<Spread>::builder()
        .name("spread")
        .workers(2)
        .rayon(true)
        .spawn(())
        .unwrap();
    let names = pool.submit(1000).wait().unwrap();
    assert_eq!(names, ["spread-0", "spread-1"]);
    // The pool goes on serving ordinary tasks, and kills restart a worker
    // on its own thread.
    assert!(pool.kill_worker(1));
    let mut again = pool.submit(100);
    let names = again.wait_timeout(T).unwrap().unwrap();
    assert!(names.iter().all(|n| n.starts_with("spread-")), "{names:?}");
    assert!(common::wait_until(|| pool.stats().workers == 2, T));
}

/// Item counts and a flag shared with [`Waits`]' tasks (one test uses them).
static HELPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static SIGNALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `true`: a par section whose own thread waits for the flag while the
/// other worker does its data-parallel half. `false`: raises the flag.
struct Waits;

impl Worker for Waits {
    type Args = ();
    type Input = bool;
    type Output = bool;
    type Progress = ();
    type Error = String;

    fn start(_: ()) -> Result<Self, String> {
        Ok(Waits)
    }

    fn run(&mut self, wait: bool, task: &TaskContext<'_, Self>) -> Result<bool, String> {
        use std::sync::atomic::Ordering::SeqCst;
        if !wait {
            SIGNALLED.store(true, SeqCst);
            return Ok(true);
        }
        let until = Instant::now() + T;
        let (signalled, ()) = task.par(|| {
            rayon::join(
                // Runs here: only a thief runs the other half.
                || {
                    while !SIGNALLED.load(SeqCst) && Instant::now() < until {
                        std::thread::yield_now();
                    }
                    SIGNALLED.load(SeqCst)
                },
                || {
                    (0..1000).into_par_iter().for_each(|_| {
                        HELPED.fetch_add(1, SeqCst);
                    })
                },
            )
        });
        Ok(signalled)
    }
}

#[test]
fn a_worker_helping_with_par_work_comes_back_for_a_task() {
    use std::sync::atomic::Ordering::SeqCst;
    let pool = Pool::<Waits>::builder()
        .workers(2)
        .rayon(true)
        .spawn(())
        .unwrap();
    let mut waiting = pool.submit(true);
    // The other worker has done the par half: it helps, and then sleeps
    // in rayon, released from the queue.
    assert!(common::wait_until(|| HELPED.load(SeqCst) == 1000, T));
    // The task that raises the flag can only run there: it is called back.
    let mut signal = pool.submit(false);
    assert_eq!(signal.wait_timeout(T), Some(Ok(true)));
    assert_eq!(waiting.wait_timeout(T), Some(Ok(true)));
    // And the pool serves on, par work included.
    SIGNALLED.store(false, SeqCst);
    let mut again = pool.submit(true);
    assert!(common::wait_until(|| HELPED.load(SeqCst) == 2000, T));
    assert_eq!(pool.submit(false).wait_timeout(T), Some(Ok(true)));
    assert_eq!(again.wait_timeout(T), Some(Ok(true)));
}
