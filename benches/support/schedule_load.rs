//! Work-manager workloads shared by `benches/schedule.rs` and the
//! `isolates-bench` harness (included by path), with their baselines: the
//! same no-op jobs on rayon, and the same rows written to SQLite directly.

#![allow(dead_code)] // each includer uses a part

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use isolates::schedule::{
    WorkChain, WorkContext, WorkManager, WorkQuery, WorkRequest, WorkResult, WorkState, WorkStore,
};

/// A manager with a no-op handler `"noop"` over `store`, on `workers`.
pub(crate) fn noop_manager(store: WorkStore, workers: usize) -> WorkManager {
    WorkManager::builder(store)
        .workers(workers)
        .handler_fn("noop", |n: u64, _: &WorkContext<'_>| WorkResult::Success(n))
        .spawn()
        .expect("manager starts")
}

/// Enqueues `n` no-op works in one batch and waits until all succeeded;
/// the time from enqueue to the last success.
pub(crate) fn run_batch(manager: &WorkManager, n: u64, batch: u64) -> Duration {
    let tag = format!("batch-{batch}");
    let watch = manager.watch(WorkQuery::Tag(tag.clone()));
    let start = Instant::now();
    let works = WorkChain::all((0..n).map(|i| WorkRequest::once("noop").input(&i).tag(&tag)));
    manager.enqueue(works).wait().expect("enqueued");
    let mut done = 0;
    while done < n {
        let info = watch
            .next_timeout(Duration::from_secs(60))
            .expect("works finish");
        if info.state == WorkState::Succeeded {
            done += 1;
        }
    }
    start.elapsed()
}

/// The baseline of `run_batch`: `n` no-op jobs on a rayon pool of the same
/// size, waited for together.
pub(crate) fn rayon_batch(pool: &rayon::ThreadPool, n: u64) -> Duration {
    let start = Instant::now();
    pool.scope(|s| {
        for i in 0..n {
            s.spawn(move |_| {
                std::hint::black_box(i);
            });
        }
    });
    start.elapsed()
}

/// A fresh file path for a store under the temp directory.
pub(crate) fn temp_store_path(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("isolates-{name}-{}.db", std::process::id()));
    remove_store(&path);
    path
}

/// Removes a store file and its WAL files.
pub(crate) fn remove_store(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

/// Commits `n` delayed works (so none runs), `per_tx` per transaction;
/// the time it took.
pub(crate) fn commit_works(manager: &WorkManager, n: u64, per_tx: u64) -> Duration {
    let later = Duration::from_secs(24 * 3600);
    let start = Instant::now();
    let mut left = n;
    while left > 0 {
        let k = per_tx.min(left);
        let works = WorkChain::all(
            (0..k).map(|i| WorkRequest::once("noop").input(&i).initial_delay(later)),
        );
        manager.enqueue(works).wait().expect("committed");
        left -= k;
    }
    start.elapsed()
}

/// The baseline of `commit_works`: the same number of rows of the same
/// size written to an SQLite file directly, in the same mode (WAL,
/// synchronous NORMAL), `per_tx` per transaction.
pub(crate) fn raw_sqlite_commits(path: &Path, n: u64, per_tx: u64, row_bytes: usize) -> Duration {
    let conn = rusqlite::Connection::open(path).expect("sqlite opens");
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, record BLOB NOT NULL)",
    )
    .unwrap();
    let row = vec![7u8; row_bytes];
    let mut conn = conn;
    let start = Instant::now();
    let mut left = n;
    let mut id: i64 = 0;
    while left > 0 {
        let k = per_tx.min(left);
        let tx = conn.transaction().unwrap();
        {
            let mut put = tx
                .prepare_cached("INSERT OR REPLACE INTO t (id, record) VALUES (?1, ?2)")
                .unwrap();
            for _ in 0..k {
                id += 1;
                put.execute(rusqlite::params![id, row]).unwrap();
            }
        }
        tx.commit().unwrap();
        left -= k;
    }
    start.elapsed()
}

/// About how many bytes one stored no-op work takes (the baseline writes
/// rows this size).
pub(crate) const WORK_ROW_BYTES: usize = 80;
