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
        .build(())
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
