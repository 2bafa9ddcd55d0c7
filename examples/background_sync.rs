//! A background sync, as an app would run it with `workmanager` or
//! `background_fetch`: a periodic "fetch" that sometimes fails and retries
//! with backoff, only while a constraint holds, with its schedule kept in
//! an SQLite store. Run it twice: the second run finds the schedule in the
//! store and carries on (same work, period count and history).
//!
//! ```text
//! cargo run --release --example background_sync            # first run: schedules
//! cargo run --release --example background_sync            # second run: resumes
//! cargo run --release --example background_sync -- --fresh --store /tmp/x.db --periods 2
//! ```

use std::time::{Duration, SystemTime};

use isolates::schedule::{
    Backoff, Constraint, ExistingWork, StorageNotLow, WorkContext, WorkManager, WorkQuery,
    WorkRequest, WorkResult, WorkState, WorkStore,
};
use serde::{Deserialize, Serialize};

/// What a fetch brings back.
#[derive(Debug, Serialize, Deserialize)]
struct Fetched {
    feed: String,
    items: u32,
    attempt: u32,
}

/// A stand-in for a network fetch: every third attempt the "server" is
/// busy and the work asks to be retried.
fn fetch(feed: String, work: &WorkContext<'_>) -> WorkResult<Fetched> {
    let attempt = work.attempt();
    for step in 1..=4u32 {
        if work.is_stopped() {
            return WorkResult::Retry;
        }
        std::thread::sleep(Duration::from_millis(20));
        work.set_progress(&(step * 25));
    }
    if attempt % 3 == 2 {
        return WorkResult::Retry;
    }
    WorkResult::Success(Fetched {
        items: 10 + attempt % 7,
        feed,
        attempt,
    })
}

fn ago(t: SystemTime) -> String {
    match t.duration_since(SystemTime::now()) {
        Ok(d) => format!("in {:.1} s", d.as_secs_f64()),
        Err(e) => format!("{:.1} s ago", e.duration().as_secs_f64()),
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut store_path = std::env::temp_dir().join("isolates-background-sync.db");
    let mut periods = 3u64;
    let mut fresh = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--store" => store_path = args.next().expect("--store PATH").into(),
            "--periods" => {
                periods = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--periods N")
            }
            "--fresh" => fresh = true,
            other => panic!("unknown argument {other:?} (--store PATH, --periods N, --fresh)"),
        }
    }
    if fresh {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = store_path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }

    let store = match WorkStore::open(&store_path) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("background_sync: {e}");
            std::process::exit(1);
        }
    };
    // The constraint: enough free space for what the sync downloads.
    let space = StorageNotLow::new(std::env::temp_dir(), 16 << 20);
    println!(
        "store {} | constraint storage_not_low holds: {}",
        store_path.display(),
        space.holds()
    );
    let manager = WorkManager::builder(store)
        .handler_fn("fetch", fetch)
        .constraint("storage_not_low", space)
        .min_interval(Duration::from_millis(500))
        .min_backoff(Duration::from_millis(200))
        .build()
        .expect("the work manager starts");

    let existing = manager.infos(&WorkQuery::UniqueName("sync".into()));
    match existing.first() {
        Some(w) => println!(
            "resumed from the store: {} ({:?}), {} periods done, {} runs in this period, next run {}",
            w.id,
            w.state,
            w.periods,
            w.run_attempts,
            w.next_run_at.map_or("now".into(), ago)
        ),
        None => println!("first start: nothing in the store, scheduling the sync"),
    }
    let sync = WorkRequest::periodic("fetch", Duration::from_secs(1))
        .input("https://example.com/feed.xml")
        .tag("sync")
        .constraint("storage_not_low")
        .backoff(Backoff::linear(Duration::from_millis(200)))
        .time_limit(Duration::from_secs(30));
    // Keep: a schedule found in the store stays as it is.
    let id = manager
        .enqueue_unique("sync", ExistingWork::Keep, sync)
        .wait()
        .expect("the sync is scheduled")
        .ids()[0];
    let start = manager.info(id).map_or(0, |w| w.periods);
    let target = start + periods;
    println!("running until {id} has done {target} periods (ctrl-c stops; the store keeps it)");

    let watch = manager.watch(WorkQuery::Id(id));
    let mut last = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let Some(w) = watch.next_timeout(Duration::from_millis(100)) else {
            continue;
        };
        let shown = (w.state, w.periods, w.retries);
        if last != Some(shown) {
            last = Some(shown);
            let out = w.output::<Fetched>().and_then(Result::ok);
            match w.state {
                WorkState::Running => println!("  run {} started", w.run_attempts),
                WorkState::Enqueued if w.retries > 0 => println!(
                    "  run {} asked to retry ({} in a row): next {}",
                    w.run_attempts,
                    w.retries,
                    w.next_run_at.map_or("now".into(), ago)
                ),
                WorkState::Enqueued if w.periods == 0 => println!(
                    "  waiting for the first run: {}",
                    w.next_run_at.map_or("now".into(), ago)
                ),
                WorkState::Enqueued => println!(
                    "  period {} done{}: next {}",
                    w.periods,
                    out.map_or(String::new(), |f| format!(
                        " ({} items from {} on attempt {})",
                        f.items, f.feed, f.attempt
                    )),
                    w.next_run_at.map_or("now".into(), ago)
                ),
                other => println!("  {other:?}"),
            }
        }
        if w.periods >= target && w.state == WorkState::Enqueued {
            break;
        }
    }
    let w = manager.info(id).expect("the sync is stored");
    manager.shutdown();
    assert!(
        w.periods >= target,
        "the sync did not reach {target} periods in time"
    );
    println!(
        "stopped with {} periods and {} runs stored; run again to resume from {}",
        w.periods,
        w.run_attempts,
        store_path.display()
    );
}
