//! Crash safety of the work store: a child process works through 1,000
//! scheduled works and is killed with SIGKILL at random moments; each
//! restart resumes from the store. Every work must end succeeded, none
//! lost, and no work that the store had as succeeded may run again.

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use isolates::schedule::{
    ExistingWork, WorkChain, WorkContext, WorkManager, WorkQuery, WorkRequest, WorkResult,
    WorkState, WorkStore,
};

const WORKS: u32 = 1_000;
const KILLS: usize = 6;
const DIR_VAR: &str = "ISOLATES_CRASH_DIR";
const RUN_VAR: &str = "ISOLATES_CRASH_RUN";

fn store_path(dir: &Path) -> PathBuf {
    dir.join("works.db")
}

fn log_path(dir: &Path, run: usize) -> PathBuf {
    dir.join(format!("runs-{run}.log"))
}

/// The child: works through the store until every one-off work succeeded.
#[test]
#[ignore = "the child process of kill9_resumes_every_work_exactly_once"]
fn crash_child() {
    let (Ok(dir), Ok(run)) = (std::env::var(DIR_VAR), std::env::var(RUN_VAR)) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let log = log_path(&dir, run.parse().expect("run number"));
    let store = WorkStore::open(store_path(&dir)).expect("store opens after a kill");
    let manager = WorkManager::builder(store)
        .workers(2)
        .min_interval(Duration::from_millis(50))
        .handler_fn("job", move |n: u64, work: &WorkContext<'_>| {
            // Record the run before finishing it: one write, O_APPEND.
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .expect("log opens");
            f.write_all(format!("{}\n", work.id().0).as_bytes())
                .expect("log written");
            std::thread::sleep(Duration::from_millis(5));
            WorkResult::Success(n * 2)
        })
        .handler_fn(
            "tick",
            |(): (), _: &WorkContext<'_>| WorkResult::Success(()),
        )
        .spawn()
        .expect("manager starts");
    let one_offs = |m: &WorkManager| {
        m.infos(&WorkQuery::Tag("job".into()))
            .into_iter()
            .filter(|i| !i.periodic)
            .collect::<Vec<_>>()
    };
    if one_offs(&manager).is_empty() {
        // One transaction: all of them are stored, or none.
        let batch = WorkChain::all(
            (0..WORKS).map(|i| WorkRequest::once("job").input(&u64::from(i)).tag("job")),
        );
        manager.enqueue(batch).wait().expect("seeded");
    }
    let tick = WorkRequest::periodic("tick", Duration::from_millis(50));
    let tick = manager
        .enqueue_unique("tick", ExistingWork::Keep, tick)
        .wait()
        .expect("periodic enqueued")
        .ids()[0];
    let deadline = Instant::now() + Duration::from_secs(120);
    // Done when every one-off work succeeded and the periodic one (due
    // after the batch, so it runs after it) has run at least once.
    while one_offs(&manager)
        .iter()
        .any(|i| i.state != WorkState::Succeeded)
        || manager.info(tick).is_none_or(|i| i.periods == 0)
    {
        assert!(Instant::now() < deadline, "the child made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    manager.stop();
    manager.join(Duration::MAX);
}

/// Ids of the works the store has as succeeded.
fn succeeded(dir: &Path) -> HashSet<u64> {
    if !store_path(dir).exists() {
        return HashSet::new();
    }
    let store = WorkStore::open(store_path(dir)).expect("store opens after a kill");
    store
        .works()
        .expect("store reads")
        .into_iter()
        .filter(|i| i.state == WorkState::Succeeded)
        .map(|i| i.id.0)
        .collect()
}

fn runs_logged(dir: &Path, run: usize) -> Vec<u64> {
    std::fs::read_to_string(log_path(dir, run))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok()) // a line cut by the kill is not a run's record
        .collect()
}

/// A small xorshift, seeded from the clock (printed, to replay a failure).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn kill9_resumes_every_work_exactly_once() {
    let dir = std::env::temp_dir().join(format!("isolates-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed:#x}");
    let mut rng = Rng(seed);
    let exe = std::env::current_exe().unwrap();
    let mut kills = 0;
    let mut run = 0;
    loop {
        let before = succeeded(&dir);
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_VAR, &dir)
            .env(RUN_VAR, run.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("child starts");
        let finish = kills >= KILLS;
        let limit = if finish {
            Duration::from_secs(120)
        } else {
            Duration::from_millis(60 + rng.below(200))
        };
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if started.elapsed() >= limit {
                break None;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        match status {
            Some(status) => assert!(status.success(), "run {run}: the child failed: {status}"),
            None if finish => {
                let _ = child.kill();
                panic!("run {run}: the last child did not finish in {limit:?}");
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
            }
        }
        let again: Vec<u64> = runs_logged(&dir, run)
            .into_iter()
            .filter(|id| before.contains(id))
            .collect();
        assert!(
            again.is_empty(),
            "run {run} ran works the store had as succeeded: {again:?}"
        );
        run += 1;
        if status.is_some() {
            break;
        }
    }
    assert!(kills >= KILLS, "only {kills} kills happened");

    let works = WorkStore::open(store_path(&dir)).unwrap().works().unwrap();
    let jobs: Vec<_> = works.iter().filter(|i| i.handler == "job").collect();
    assert_eq!(jobs.len(), WORKS as usize, "works were lost or doubled");
    let mut ran: HashMap<u64, usize> = HashMap::new();
    for r in 0..run {
        for id in runs_logged(&dir, r) {
            *ran.entry(id).or_default() += 1;
        }
    }
    let mut inputs = HashSet::new();
    for info in &jobs {
        assert_eq!(
            info.state,
            WorkState::Succeeded,
            "{} did not succeed",
            info.id
        );
        let out: u64 = info.output().expect("an output").expect("decodes");
        assert_eq!(out % 2, 0);
        assert!(
            inputs.insert(out / 2),
            "two works had the input {}",
            out / 2
        );
        assert!(
            ran.get(&info.id.0).is_some_and(|&n| n >= 1),
            "{} never ran",
            info.id
        );
        assert!(info.run_attempts >= 1);
    }
    assert_eq!(inputs.len(), WORKS as usize);
    let tick = works
        .iter()
        .find(|i| i.handler == "tick")
        .expect("the periodic work is kept");
    assert_eq!(
        tick.state,
        WorkState::Enqueued,
        "periodic work never finishes"
    );
    assert!(tick.periods >= 1, "the periodic work never ran");
    let reruns: usize = ran.values().map(|n| n - 1).sum();
    eprintln!(
        "{run} runs, {kills} kills, {} works succeeded once each, {reruns} runs repeated after a kill \
         (at least once)",
        jobs.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
