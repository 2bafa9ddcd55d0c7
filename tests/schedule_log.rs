//! Every enqueue a manager answered survives `kill -9` of its process
//! right after the answer: a child enqueues works one at a time and prints
//! each id once its enqueue was answered; the parent kills it with SIGKILL
//! after some of them (most still in the store's log, not yet folded into
//! SQLite) and opens the store: every printed work is there, enqueued, and
//! new work is numbered after them. Then the same store is killed again
//! while its works change state, and opened once more.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use isolates::schedule::{
    WorkContext, WorkManager, WorkQuery, WorkRequest, WorkResult, WorkState, WorkStore,
};

const DIR_VAR: &str = "ISOLATES_LOG_KILL_DIR";
const MODE_VAR: &str = "ISOLATES_LOG_KILL_MODE";

fn store_path(dir: &Path) -> PathBuf {
    dir.join("works.db")
}

fn manager(dir: &Path) -> WorkManager {
    WorkManager::builder(WorkStore::open(store_path(dir)).expect("store opens after a kill"))
        .workers(1)
        .handler_fn("job", |n: u64, _: &WorkContext<'_>| WorkResult::Success(n))
        .spawn()
        .expect("manager starts")
}

/// The child: enqueues works one at a time, printing each id once its
/// enqueue was answered, until it is killed. Mode "delayed": works due in
/// a day; mode "run": works due now (they run and succeed meanwhile),
/// printing the ids it saw succeed as `done <id>`.
#[test]
#[ignore = "the child process of answered_enqueues_survive_kill_9"]
fn log_kill_child() {
    let (Ok(dir), Ok(mode)) = (std::env::var(DIR_VAR), std::env::var(MODE_VAR)) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let manager = manager(&dir);
    let mut out = std::io::stdout().lock();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut i = 0u64;
    while Instant::now() < deadline {
        let request = WorkRequest::once("job").input(&i).tag("job");
        let request = if mode == "delayed" {
            request.initial_delay(Duration::from_secs(24 * 3600))
        } else {
            request
        };
        let id = manager.enqueue(request).wait().expect("enqueued").ids()[0];
        use std::io::Write;
        writeln!(out, "{}", id.0).unwrap();
        if mode == "run"
            && let Some(info) = manager.wait_finished(id, Duration::from_secs(10))
        {
            writeln!(out, "done {} {:?}", id.0, info.state).unwrap();
        }
        out.flush().unwrap();
        i += 1;
    }
}

/// Runs the child in `mode` until it printed `lines` lines, then kills it
/// with SIGKILL; returns the lines.
fn run_and_kill(dir: &Path, mode: &str, lines: usize) -> Vec<String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "log_kill_child", "--ignored", "--nocapture"])
        .env(DIR_VAR, dir)
        .env(MODE_VAR, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut read = BufReader::new(child.stdout.take().unwrap());
    let mut got = Vec::new();
    let mut line = String::new();
    while got.len() < lines {
        line.clear();
        let n = read.read_line(&mut line).unwrap();
        assert!(n > 0, "the child ended before it was killed: {got:?}");
        let text = line.trim();
        // The test harness's own lines are not the child's.
        if text.starts_with(|c: char| c.is_ascii_digit()) || text.starts_with("done ") {
            got.push(text.to_owned());
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    got
}

#[test]
fn answered_enqueues_survive_kill_9() {
    let dir = std::env::temp_dir().join(format!("isolates-log-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // Delayed works: nothing but enqueues, killed mid-stream.
    let printed: Vec<u64> = run_and_kill(&dir, "delayed", 300)
        .iter()
        .map(|l| l.parse().unwrap())
        .collect();
    let store = WorkStore::open(store_path(&dir)).unwrap();
    let stored = store.works().unwrap();
    let ids: HashSet<u64> = stored.iter().map(|i| i.id.0).collect();
    for id in &printed {
        assert!(ids.contains(id), "work {id} was answered and is lost");
    }
    assert!(stored.iter().all(|i| i.state == WorkState::Enqueued));
    drop(store);

    // Works that run: answered enqueues and the successes seen survive.
    let lines = run_and_kill(&dir, "run", 200);
    let manager = manager(&dir);
    for line in &lines {
        if let Some(rest) = line.strip_prefix("done ") {
            let id: u64 = rest.split(' ').next().unwrap().parse().unwrap();
            let info = manager
                .info(isolates::schedule::WorkId(id))
                .unwrap_or_else(|| panic!("work {id} ran and is lost"));
            assert_eq!(info.state, WorkState::Succeeded, "work {id}");
        } else {
            let id: u64 = line.parse().unwrap();
            assert!(
                manager.info(isolates::schedule::WorkId(id)).is_some(),
                "work {id} was answered and is lost"
            );
        }
    }
    // Numbered after everything stored, never an id used before.
    let max = manager
        .infos(&WorkQuery::All)
        .iter()
        .map(|i| i.id.0)
        .max()
        .unwrap();
    let new = manager
        .enqueue(WorkRequest::once("job").input(&0u64))
        .wait()
        .unwrap()
        .ids()[0];
    assert!(new.0 > max);
    manager.stop();
    assert!(manager.join(Duration::from_secs(30)));
    // A clean close leaves no log.
    assert!(!dir.join("works.db-log").exists());
    assert!(!dir.join("works.db-log2").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
