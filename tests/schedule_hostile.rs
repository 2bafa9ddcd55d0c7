//! The work manager against hostile input: chains long enough to overflow
//! any per-link recursion, stored rows with extreme values, files that are
//! not ours, a second opener of one store, and requests that would spin.
//!
//! Schedules run on a [`ManualClock`]; every wait on another thread is a
//! condition with a timeout, never a bare sleep.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use isolates::Backoff;
use isolates::Codec;
use isolates::schedule::*;

/// Generous: the machine running the tests may be loaded.
const T: Duration = Duration::from_secs(30);
const HOUR: Duration = Duration::from_secs(3600);
/// Far longer than any recursion per link could go on a default thread
/// stack (the scheduler's thread has 2 MiB).
const CHAIN: usize = 10_000;

// ---- helpers -------------------------------------------------------------

/// A directory under the system temp dir, unique to this process and test,
/// removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "isolates-schedule-hostile-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
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

/// A manager whose `"fail"` handler fails, whose `"retry"` handler asks
/// for a retry, and whose `"count"` handler counts its runs in `runs`.
fn manager(path: &Path, clock: &ManualClock, runs: &Arc<AtomicUsize>) -> WorkManager {
    let runs = Arc::clone(runs);
    WorkManager::builder(WorkStore::open(path).expect("store opens"))
        .clock(clock.clone())
        .workers(2)
        .handler_fn("fail", |(): (), _: &WorkContext<'_>| {
            WorkResult::<()>::Failure("on purpose".into())
        })
        .handler_fn("retry", |(): (), _: &WorkContext<'_>| {
            WorkResult::<()>::Retry
        })
        .handler_fn("count", move |_: (), _: &WorkContext<'_>| {
            runs.fetch_add(1, Ordering::SeqCst);
            WorkResult::Success(())
        })
        .spawn()
        .expect("manager starts")
}

/// `head`, then `CHAIN - 1` counting works, one after the other.
fn long_chain(head: WorkRequest) -> WorkChain {
    let mut chain = WorkChain::new(head);
    for _ in 1..CHAIN {
        chain = chain.then(WorkRequest::once("count").tag("chain"));
    }
    chain
}

fn new_ids(op: Operation<Enqueued>) -> Vec<WorkId> {
    let mut op = op;
    match op.wait_timeout(T).expect("enqueue answered") {
        Ok(Enqueued::New(ids)) => ids,
        other => panic!("expected new work, got {other:?}"),
    }
}

/// How many of the works are in `state`.
fn count(manager: &WorkManager, state: WorkState) -> usize {
    manager
        .infos(&WorkQuery::All)
        .iter()
        .filter(|i| i.state == state)
        .count()
}

// ---- long chains (issue 11, item 1) --------------------------------------

/// A chain of 10,000 works whose head fails fails to its end, on the
/// scheduler's thread and without overflowing its stack; a restart on the
/// same store finds every link failed and runs none.
#[test]
fn a_long_chain_whose_head_fails_fails_to_its_end() {
    let dir = TempDir::new("chain-fail");
    let path = dir.path("works.db");
    let clock = ManualClock::default();
    let runs = Arc::new(AtomicUsize::new(0));
    let ids = {
        let m = manager(&path, &clock, &runs);
        let ids = new_ids(m.enqueue(long_chain(WorkRequest::once("fail"))));
        assert_eq!(ids.len(), CHAIN);
        let last = m.wait_finished(ids[CHAIN - 1], T).expect("the chain ends");
        assert_eq!(last.state, WorkState::Failed, "{last:?}");
        assert_eq!(count(&m, WorkState::Failed), CHAIN);
        m.stop();
        m.join(Duration::MAX);
        ids
    };
    let m = manager(&path, &clock, &runs);
    let last = m.info(ids[CHAIN - 1]).expect("kept");
    assert_eq!(last.state, WorkState::Failed, "{last:?}");
    assert_eq!(count(&m, WorkState::Failed), CHAIN);
    m.stop();
    m.join(Duration::MAX);
    assert_eq!(runs.load(Ordering::SeqCst), 0, "no link after the head ran");
}

/// Cancelling the head of a chain of 10,000 works cancels all of them,
/// and the cancel is stored: a restart on the same store runs none.
#[test]
fn cancelling_the_head_of_a_long_chain_cancels_it_all_and_is_stored() {
    let dir = TempDir::new("chain-cancel");
    let path = dir.path("works.db");
    let clock = ManualClock::default();
    let runs = Arc::new(AtomicUsize::new(0));
    {
        let m = manager(&path, &clock, &runs);
        let head = WorkRequest::once("count").initial_delay(HOUR);
        let ids = new_ids(m.enqueue(long_chain(head)));
        let mut cancel = m.cancel(WorkQuery::Id(ids[0]));
        assert_eq!(cancel.wait_timeout(T), Some(Ok(CHAIN)));
        m.stop();
        m.join(Duration::MAX);
    }
    // Its time comes: nothing of it may run.
    clock.advance(HOUR * 2);
    let m = manager(&path, &clock, &runs);
    assert_eq!(count(&m, WorkState::Cancelled), CHAIN);
    // A work enqueued after the restart runs; the chain still does not.
    let probe = new_ids(m.enqueue(WorkRequest::once("count")))[0];
    let done = m.wait_finished(probe, T).expect("the probe runs");
    assert_eq!(done.state, WorkState::Succeeded);
    m.stop();
    m.join(Duration::MAX);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "only the probe ran");
}

// ---- hostile stored rows (issue 11, item 6) -------------------------------

/// The bytes `value` is stored as inside a work's record.
fn encoded<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    isolates::Bincode::new().encode(value, &mut out).unwrap();
    out
}

/// Replaces, in work `id`'s stored record, the bytes of its period and
/// period start (`from`, stored one after the other) with `to`'s.
fn patch_period(
    path: &Path,
    id: WorkId,
    from: (Option<(i64, i64)>, i64),
    to: (Option<(i64, i64)>, i64),
) {
    patch(path, id, &from, &to);
}

/// A backoff as stored rows hold it.
#[derive(serde::Serialize)]
struct StoredBackoff {
    exponential: bool,
    delay: Duration,
    max: Duration,
}

/// Replaces, in work `id`'s stored record, the bytes of `from` with
/// those of `to`.
fn patch<T: serde::Serialize>(path: &Path, id: WorkId, from: &T, to: &T) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let row: Vec<u8> = conn
        .query_row(
            "SELECT record FROM works WHERE id = ?1",
            [id.0 as i64],
            |r| r.get(0),
        )
        .unwrap();
    let (from, to) = (encoded(from), encoded(to));
    let at = row
        .windows(from.len())
        .position(|w| w == from.as_slice())
        .expect("the value is stored as it encodes");
    let mut patched = row[..at].to_vec();
    patched.extend_from_slice(&to);
    patched.extend_from_slice(&row[at + from.len()..]);
    conn.execute(
        "UPDATE works SET record = ?1 WHERE id = ?2",
        rusqlite::params![patched, id.0 as i64],
    )
    .unwrap();
}

fn ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Rows that decode but hold extreme values do not kill the scheduler: a
/// period start of `i64::MIN` (its next period is computed without
/// overflow, and is the next one after its run, not one in 1970), a
/// period start of `i64::MAX` with the longest interval (never due); a
/// period that is no period (negative flex) is reported as unreadable and
/// kept. Work enqueued after them runs.
#[test]
fn stored_rows_with_extreme_values_do_not_kill_the_scheduler() {
    let dir = TempDir::new("extreme-rows");
    let path = dir.path("works.db");
    let clock = ManualClock::default();
    let runs = Arc::new(AtomicUsize::new(0));
    // Distinct intervals and delays, so each row's bytes are found.
    let (i1, i2, i3) = (HOUR, HOUR * 2, HOUR * 3);
    let d = Duration::from_millis(1_234);
    let start = ms(clock.now() + d);
    let ids = {
        let m = manager(&path, &clock, &runs);
        let ids: Vec<WorkId> = [i1, i2, i3]
            .into_iter()
            .map(|i| {
                new_ids(m.enqueue(WorkRequest::periodic("count", i).flex(i).initial_delay(d)))[0]
            })
            .collect();
        m.stop();
        m.join(Duration::MAX);
        ids
    };
    let period = |i: Duration| Some((i.as_millis() as i64, i.as_millis() as i64));
    patch_period(&path, ids[0], (period(i1), start), (period(i1), i64::MIN));
    patch_period(
        &path,
        ids[1],
        (period(i2), start),
        (Some((i64::MAX, i64::MAX)), i64::MAX),
    );
    let no_period = Some((i3.as_millis() as i64, -5));
    patch_period(&path, ids[2], (period(i3), start), (no_period, start));

    // Their first runs are due.
    clock.advance(d);
    let m = manager(&path, &clock, &runs);
    let unreadable = m.unreadable();
    assert_eq!(unreadable.len(), 1, "{unreadable:?}");
    assert_eq!(unreadable[0].id, ids[2]);
    assert!(unreadable[0].reason.contains("period"), "{unreadable:?}");
    let ran = m
        .wait_for(ids[0], T, |i| i.periods == 1)
        .expect("the work with a period start of i64::MIN ran once and moved on");
    assert_eq!(ran.state, WorkState::Enqueued, "{ran:?}");
    let next = ran.next_run_at.expect("enqueued");
    assert!(next > clock.now() && next <= clock.now() + i1, "{ran:?}");
    let probe = new_ids(m.enqueue(WorkRequest::once("count")))[0];
    let done = m
        .wait_finished(probe, T)
        .expect("work enqueued after them runs");
    assert_eq!(done.state, WorkState::Succeeded);
    // Due once (its stored next run was not patched), then never again.
    let never = m
        .wait_for(ids[1], T, |i| i.periods == 1)
        .expect("the work with a period start of i64::MAX ran once");
    assert_eq!(never.state, WorkState::Enqueued, "{never:?}");
    assert!(never.next_run_at.expect("enqueued") > clock.now() + HOUR * 24 * 365 * 1000);
    m.stop();
    m.join(Duration::MAX);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        3,
        "i64::MIN, i64::MAX and the probe ran once each"
    );
}

// ---- files that are not ours, second openers (issue 11, item 7) ------------

/// Files too short to be an SQLite database, which SQLite itself would take
/// for a new database and overwrite, are refused and left as they were.
#[test]
fn short_files_that_are_not_ours_are_refused_untouched() {
    let dir = TempDir::new("short-files");
    for (name, bytes) in [
        ("one", &b"x"[..]),
        ("notes", b"buy milk\n"),
        ("zero", &[0u8; 15]),
    ] {
        let path = dir.path(name);
        std::fs::write(&path, bytes).unwrap();
        let err = WorkStore::open(&path).unwrap_err();
        assert_eq!(
            err,
            StoreError::NotADatabase { path: path.clone() },
            "{name}"
        );
        assert!(err.to_string().contains("another path"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name} was changed");
    }
    // An empty file is a new store.
    let empty = dir.path("empty");
    std::fs::write(&empty, b"").unwrap();
    assert!(WorkStore::open(&empty).unwrap().works().unwrap().is_empty());
}

/// A store file serves one manager at a time: a second open, through
/// another path to the same file too, is refused with a typed error that
/// says what to do, so no work runs twice; once the first manager is shut
/// down the store opens again. A lock file left by a killed process does
/// not block it.
#[cfg(target_os = "linux")]
#[test]
fn a_second_opener_of_a_store_is_refused() {
    let dir = TempDir::new("second-opener");
    let path = dir.path("works.db");
    let clock = ManualClock::default();
    let runs = Arc::new(AtomicUsize::new(0));
    let m = manager(&path, &clock, &runs);
    let ids: Vec<WorkId> = (0..20)
        .map(|_| new_ids(m.enqueue(WorkRequest::once("count").initial_delay(HOUR)))[0])
        .collect();
    let other_path = dir.0.join(".").join("works.db");
    for p in [&path, &other_path] {
        let err = WorkStore::open(p).unwrap_err();
        assert_eq!(err, StoreError::Locked { path: p.clone() });
        let text = err.to_string();
        assert!(
            text.contains("another work manager") && text.contains("shut"),
            "{text}"
        );
    }
    clock.advance(HOUR);
    for id in &ids {
        let done = m.wait_finished(*id, T).expect("runs");
        assert_eq!(done.state, WorkState::Succeeded);
    }
    m.stop();
    m.join(Duration::MAX);
    assert_eq!(runs.load(Ordering::SeqCst), 20, "each work ran once");

    // A lock file no process holds (its owner was killed) is no lock.
    let mut lock = path.as_os_str().to_owned();
    lock.push("-lock");
    std::fs::write(PathBuf::from(lock), b"").unwrap();
    let m = manager(&path, &clock, &runs);
    assert_eq!(m.infos(&WorkQuery::All).len(), 20);
    m.stop();
    m.join(Duration::MAX);
}

// ---- requests that would spin (issue 11, item 8) --------------------------

fn invalid(m: &WorkManager, request: WorkRequest) -> String {
    let mut op = m.enqueue(request);
    match op.wait_timeout(T).expect("answered") {
        Err(WorkError::Invalid(why)) => why,
        other => panic!("expected the request refused, got {other:?}"),
    }
}

/// A zero time limit, a backoff under the manager's minimum (a zero delay,
/// or a zero cap) and a periodic interval under a minimum set to zero
/// (raised to 10 ms) are refused, each saying what to change; the
/// minimum itself goes.
#[test]
fn requests_that_would_spin_are_refused() {
    let m = WorkManager::builder(WorkStore::in_memory().unwrap())
        .handler_fn("n", |(): (), _: &WorkContext<'_>| WorkResult::Success(()))
        .min_interval(Duration::ZERO)
        .spawn()
        .unwrap();
    let why = invalid(&m, WorkRequest::once("n").time_limit(Duration::ZERO));
    assert!(why.contains("time limit of zero"), "{why}");
    let second = Duration::from_secs(1);
    for backoff in [
        Backoff::linear(Duration::ZERO),
        Backoff::exponential(Duration::from_millis(999)),
        Backoff::exponential(second).max(Duration::ZERO),
    ] {
        let why = invalid(&m, WorkRequest::once("n").backoff(backoff));
        assert!(why.contains("WorkManagerBuilder::min_backoff"), "{why}");
    }
    // The store keeps no jitter: refused, not dropped silently.
    let jittered = Backoff::constant(second * 2).jitter();
    let why = invalid(&m, WorkRequest::once("n").backoff(jittered));
    assert!(why.contains("jitter"), "{why}");
    let why = invalid(&m, WorkRequest::periodic("n", Duration::from_millis(1)));
    assert!(
        why.contains("min_interval") && why.contains("10ms"),
        "{why}"
    );
    for fine in [
        WorkRequest::once("n").backoff(Backoff::linear(second)),
        WorkRequest::periodic("n", Duration::from_millis(10)),
    ] {
        let mut op = m.enqueue(fine);
        assert!(matches!(op.wait_timeout(T), Some(Ok(_))));
    }
    m.stop();
    m.join(Duration::MAX);
}

/// A stored work whose backoff is zero (from an older build, or an edit)
/// waits the manager's minimum backoff before each retry: it cannot spin.
#[test]
fn a_stored_zero_backoff_waits_the_minimum() {
    let dir = TempDir::new("zero-backoff");
    let path = dir.path("works.db");
    let clock = ManualClock::default();
    let runs = Arc::new(AtomicUsize::new(0));
    let odd = Backoff::linear(Duration::from_millis(1_234_567)).max(Duration::from_secs(7_777));
    let stored = |delay, max| StoredBackoff {
        exponential: false,
        delay,
        max,
    };
    let id = {
        let m = manager(&path, &clock, &runs);
        let request = WorkRequest::once("retry").backoff(odd).initial_delay(HOUR);
        let id = new_ids(m.enqueue(request))[0];
        m.stop();
        m.join(Duration::MAX);
        id
    };
    patch(
        &path,
        id,
        &stored(Duration::from_millis(1_234_567), Duration::from_secs(7_777)),
        &stored(Duration::ZERO, Backoff::DEFAULT_MAX),
    );
    clock.advance(HOUR);
    let m = manager(&path, &clock, &runs);
    let retried = m
        .wait_for(id, T, |i| i.retries == 1)
        .expect("ran and asked for a retry");
    assert_eq!(retried.state, WorkState::Enqueued, "{retried:?}");
    assert_eq!(retried.run_attempts, 1, "{retried:?}");
    let next = retried.next_run_at.expect("enqueued");
    assert!(
        next >= clock.now() + Duration::from_secs(1),
        "retries at once: {retried:?}"
    );
    m.stop();
    m.join(Duration::MAX);
}
