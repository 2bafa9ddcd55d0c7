//! Per-worker figures: workload, max workload, handled, errors, uptime,
//! idle time.

mod common;

use std::time::Duration;

use isolates::pool::{Pool, Routing, TaskContext, Worker};

const T: Duration = Duration::from_secs(10);

struct Check;

impl Worker for Check {
    type Args = ();
    type Input = i32;
    type Output = i32;
    type Progress = ();
    type Error = String;

    fn start(_: ()) -> Result<Self, String> {
        Ok(Check)
    }

    fn run(&mut self, n: i32, _: &TaskContext<'_, Self>) -> Result<i32, String> {
        if n < 0 {
            Err(format!("{n} is negative"))
        } else {
            Ok(n)
        }
    }
}

#[test]
fn per_worker_figures_add_up() {
    let pool = Pool::<Check>::builder()
        .workers(2)
        .routing(Routing::RoundRobin)
        .spawn(())
        .unwrap();
    let handles: Vec<_> = (0..10)
        .map(|i| pool.submit(if i == 4 { -1 } else { i }))
        .collect();
    for h in handles {
        let _ = h.wait();
    }
    let stats = pool.worker_stats();
    assert_eq!(stats.len(), 2);
    // Round robin: five tasks each; the failing one counts as an error.
    assert_eq!(stats.iter().map(|w| w.handled).collect::<Vec<_>>(), [5, 5]);
    assert_eq!(stats.iter().map(|w| w.errors).sum::<u64>(), 1);
    for w in &stats {
        assert!(w.alive);
        assert!(w.max_workload >= 1);
        assert!(w.uptime >= w.idle);
    }
    // Once done, nothing is in flight and the workers sit idle.
    assert!(common::wait_until(
        || pool
            .worker_stats()
            .iter()
            .all(|w| w.workload == 0 && w.idle > Duration::ZERO),
        T
    ));
}
