//! Pool workers run below the UI thread's OS priority (Linux nice level).

#![cfg(target_os = "linux")]

use isolates::pool::{Pool, TaskContext, Worker};

/// The calling thread's nice value, from `/proc/thread-self/stat` (field 19).
fn nice_of_this_thread() -> Result<i64, String> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").map_err(|e| e.to_string())?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').ok_or("no ')' in stat")?.1;
    let field = after
        .split_whitespace()
        .nth(19 - 3)
        .ok_or("stat too short")?;
    field
        .parse()
        .map_err(|e: std::num::ParseIntError| e.to_string())
}

struct Nice;

impl Worker for Nice {
    type Args = ();
    type Input = ();
    type Output = i64;
    type Progress = ();
    type Error = String;

    fn start(_: ()) -> Result<Self, String> {
        Ok(Nice)
    }

    fn run(&mut self, _: (), _: &TaskContext<'_, Self>) -> Result<i64, String> {
        nice_of_this_thread()
    }
}

#[test]
fn workers_run_at_nice_10_by_default_and_as_spawned_when_asked() {
    let mine = nice_of_this_thread().unwrap();
    let default = Pool::<Nice>::builder().workers(1).spawn(()).unwrap();
    let niced = default.submit(()).wait().unwrap();
    // A pool only ever lowers priority: nice 10, or the thread's own if
    // that is already higher.
    assert_eq!(niced, 10.max(mine), "the test thread has nice {mine}");

    let plain = Pool::<Nice>::builder()
        .workers(1)
        .nice(None)
        .spawn(())
        .unwrap();
    assert_eq!(plain.submit(()).wait(), Ok(mine));
}
