//! Work runs and OS wake-ups where a review found them wrong: a `%` in a
//! crontab line, the wake-up while a work runs, due times past systemd's
//! calendar, and a tool a child run started surviving its kill; and what
//! was checked right (awaited operations at a stop, child progress order,
//! no overlapping retries).
#![cfg(target_os = "linux")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use common::wait_until;
use isolates::process::{ProcessOptions, Registry};
use isolates::schedule::*;

const T: Duration = Duration::from_secs(10);

fn children() {
    Registry::new()
        .work_handler_fn("c_pid", |(): (), _: &WorkContext<'_>| {
            WorkResult::Success(std::process::id())
        })
        .work_handler_fn("c_progress", |n: u32, work: &WorkContext<'_>| {
            for i in 1..=n {
                work.set_progress(&i);
            }
            WorkResult::Success(n)
        })
        .work_handler_fn("c_stubborn", stubborn)
        .work_handler_fn(
            "c_tool",
            |dir: String, _: &WorkContext<'_>| -> WorkResult<()> {
                // An external tool doing the work (ffmpeg, rsync...).
                // Never waited for: the run is killed with it.
                #[allow(clippy::zombie_processes)]
                let tool = Command::new("sleep").arg("30").spawn().unwrap();
                let _ = std::fs::write(
                    Path::new(&dir).join("child"),
                    std::process::id().to_string(),
                );
                let _ = std::fs::write(Path::new(&dir).join("tool"), tool.id().to_string());
                loop {
                    std::thread::sleep(Duration::from_millis(5));
                }
            },
        )
        .test_entry("child_entry")
        .init();
}

/// Marks itself running in `dir` (a file created exclusively: a second
/// run at once finds it), ignores a stop for `hold_ms` on its first
/// attempt, and succeeds on later ones.
fn stubborn((dir, hold_ms): (String, u64), work: &WorkContext<'_>) -> WorkResult<u32> {
    let dir = Path::new(&dir);
    let mark = dir.join("running");
    if std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&mark)
        .is_err()
    {
        let _ = std::fs::write(dir.join(format!("overlap-{}", work.attempt())), "");
    }
    let _ = std::fs::write(
        dir.join(format!("run-{}", work.attempt())),
        std::process::id().to_string(),
    );
    if work.attempt() == 1 {
        std::thread::sleep(Duration::from_millis(hold_ms));
    }
    let _ = std::fs::remove_file(&mark);
    WorkResult::Success(work.attempt())
}

#[test]
fn child_entry() {
    children();
}

struct Scratch(PathBuf);
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
fn scratch(name: &str) -> Scratch {
    let dir =
        std::env::temp_dir().join(format!("isolates-review-wr-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// What cron (Vixie/cronie) runs for a crontab line: the command field,
/// with `\%` turned into `%` and everything from the first other `%` on
/// sent as stdin (and so cut from the command), run by `/bin/sh -c`.
fn run_as_cron(line: &str) -> (String, String, bool) {
    let command = line.splitn(6, ' ').nth(5).unwrap();
    let mut cmd = String::new();
    let mut stdin = None;
    let mut chars = command.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'%') => {
                cmd.push('%');
                chars.next();
            }
            '%' => {
                stdin = Some(chars.collect::<String>());
                break;
            }
            c => cmd.push(c),
        }
    }
    let _ = stdin; // cron feeds it to the command's stdin
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(&cmd)
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

#[test]
fn crontab_line_survives_a_percent_sign() {
    let wake = OsWake::new("org.example.a", ["/bin/echo", "100% done", "it's"]).unwrap();
    let line = wake.crontab_line();
    let (out, err, ok) = run_as_cron(&line);
    assert!(
        ok && out == "100% done it's\n",
        "crontab line {line:?}: cron runs it as stdout {out:?}, stderr {err:?}"
    );
}

// ---- OS wake-up kept by a running manager ---------------------------------

const WAKE_CHILD: &str = "ISOLATES_REVIEW_WAKE_CHILD";
const APP: &str = "org.example.review";

/// A `systemctl` that logs its arguments and succeeds.
fn fake_systemctl(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = format!(
        "#!/bin/sh\necho \"$*\" >> '{}'\nexit 0\n",
        dir.join("calls.log").display()
    );
    let path = bin.join("systemctl");
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

fn run_wake_child(dir: &Path, what: &str) -> String {
    let bin = fake_systemctl(dir);
    let path = std::env::join_paths(
        std::iter::once(bin).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "wake_child", "--nocapture", "--test-threads=1"])
        .env(WAKE_CHILD, format!("{what}|{}", dir.display()))
        .env("PATH", path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child {what}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn wake_child() {
    let Ok(what) = std::env::var(WAKE_CHILD) else {
        return;
    };
    let (what, dir) = what.split_once('|').unwrap();
    let dir = PathBuf::from(dir);
    match what {
        "killed-mid-run" => {
            let go = dir.join("go");
            let manager = WorkManager::builder(WorkStore::open(dir.join("store.db")).unwrap())
                .handler_fn("block", move |(): (), work: &WorkContext<'_>| {
                    while !go.exists() && !work.is_stopped() {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    WorkResult::Success(())
                })
                .spawn()
                .unwrap();
            let wake = OsWake::new(APP, ["/usr/local/bin/review", "run-due"])
                .unwrap()
                .dir(dir.join("units"));
            manager.wake_with_os(wake).unwrap();
            let id = manager
                .enqueue(WorkRequest::once("block"))
                .wait()
                .unwrap()
                .ids()[0];
            let running = manager.wait_for(id, T, |i| i.state == WorkState::Running);
            assert!(running.is_some(), "never ran");
            // Let the wake thread catch up with the change.
            std::thread::sleep(Duration::from_millis(1000));
            println!("ID {}", id);
            // The app is killed (OOM, kill -9, power loss) mid-run.
            std::process::exit(0);
        }
        other => panic!("unknown {other}"),
    }
}

/// The app is killed while its only work runs: the work is interrupted
/// and waits in the store (it resumes at the next start), but the OS
/// wake-up that `wake_with_os` keeps was removed when the run started,
/// so the headless command is never started for it.
#[test]
fn a_work_interrupted_by_a_kill_keeps_an_os_wake_up() {
    let dir = scratch("killed-mid-run");
    let out = run_wake_child(&dir.0, "killed-mid-run");
    assert!(out.contains("ID work#"), "{out}");
    // The store holds work to run: the interrupted run, due again.
    let manager = WorkManager::builder(WorkStore::open(dir.0.join("store.db")).unwrap())
        .spawn()
        .unwrap();
    let enqueued = manager.infos(&WorkQuery::All);
    manager.stop();
    assert!(
        enqueued.iter().any(|i| i.state == WorkState::Enqueued),
        "{enqueued:?}"
    );
    let timer = dir.0.join("units").join(format!("{APP}-work.timer"));
    let calls = std::fs::read_to_string(dir.0.join("calls.log")).unwrap_or_default();
    assert!(
        timer.exists(),
        "interrupted work waits in the store but no OS wake-up is left for it; systemctl calls: {calls:?}"
    );
}

// ---- Operation ---------------------------------------------------------

/// Operations in flight while the manager stops each resolve once, when
/// awaited (not only when waited on): stored, or `Stopped`.
#[test]
fn awaited_operations_in_flight_at_a_stop_resolve() {
    for round in 0..20 {
        let manager = WorkManager::builder(WorkStore::in_memory().unwrap())
            .handler_fn(
                "noop",
                |(): (), _: &WorkContext<'_>| WorkResult::Success(()),
            )
            .workers(1)
            .spawn()
            .unwrap();
        let mut ops: Vec<Operation<Enqueued>> = (0..50)
            .map(|_| manager.enqueue(WorkRequest::once("noop")))
            .collect();
        let stopper = {
            let m = manager.clone();
            std::thread::spawn(move || m.stop())
        };
        ops.extend((0..50).map(|_| manager.enqueue(WorkRequest::once("noop"))));
        let cancel = manager.cancel(WorkQuery::All);
        stopper.join().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            for op in ops {
                got.push(futures::executor::block_on(op).map(|_| ()));
            }
            got.push(futures::executor::block_on(cancel).map(|_| ()));
            let _ = tx.send(got);
        });
        let got = rx
            .recv_timeout(T)
            .unwrap_or_else(|_| panic!("round {round}: an awaited operation never resolved"));
        for r in got {
            assert!(matches!(r, Ok(()) | Err(WorkError::Stopped)), "{r:?}");
        }
        assert!(manager.join(T));
        // Awaiting after the stop: Stopped at once.
        assert_eq!(
            futures::executor::block_on(manager.enqueue(WorkRequest::once("noop"))).map(|_| ()),
            Err(WorkError::Stopped)
        );
    }
}

// ---- runs in child processes ----------------------------------------------

fn child_manager(grace: Duration) -> WorkManager {
    WorkManager::builder(WorkStore::in_memory().unwrap())
        .processes(ProcessOptions::new())
        .workers(2)
        .min_backoff(Duration::from_millis(10))
        .stop_grace(grace)
        .spawn()
        .unwrap()
}

/// Progress a child reports right before its result never shows after
/// the result, nor on a work that is not running.
#[test]
fn child_progress_never_follows_the_result() {
    children();
    let manager = child_manager(Duration::from_secs(1));
    for _ in 0..5 {
        let watch = manager.watch(WorkQuery::Tag("p".into()));
        let id = manager
            .enqueue(WorkRequest::once("c_progress").input(&200u32).tag("p"))
            .wait()
            .unwrap()
            .ids()[0];
        let mut seen = Vec::new();
        while let Some(info) = watch.next_timeout(T) {
            let done = info.state.is_finished();
            seen.push(info);
            if done {
                break;
            }
        }
        // Anything later is a bug: wait a little for it.
        while let Some(info) = watch.next_timeout(Duration::from_millis(200)) {
            seen.push(info);
        }
        let last = seen.last().expect("changes");
        assert_eq!(last.state, WorkState::Succeeded, "{seen:?}");
        assert_eq!(last.progress, None);
        for i in &seen {
            assert!(
                i.progress.is_none() || i.state == WorkState::Running,
                "progress on a {:?} work",
                i.state
            );
        }
        assert_eq!(manager.info(id).unwrap().progress, None);
    }
    manager.stop();
}

/// A run past its time limit that keeps going (within the grace) is not
/// joined by its retry: runs of one work never overlap in children.
#[test]
fn a_child_run_told_to_stop_is_not_overlapped_by_its_retry() {
    children();
    let dir = scratch("stubborn");
    let manager = child_manager(Duration::from_secs(5));
    let id = manager
        .enqueue(
            WorkRequest::once("c_stubborn")
                .input(&(dir.0.to_str().unwrap().to_owned(), 2000u64))
                .time_limit(Duration::from_millis(500))
                .backoff(isolates::Backoff::linear(Duration::from_millis(10))),
        )
        .wait()
        .unwrap()
        .ids()[0];
    let info = manager.wait_finished(id, T).unwrap();
    assert_eq!(info.state, WorkState::Succeeded, "{:?}", info.failure);
    assert_eq!(info.output::<u32>(), Some(Ok(2)));
    let overlaps: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("overlap"))
        .collect();
    assert!(overlaps.is_empty(), "{overlaps:?}");
    manager.stop();
}

/// systemd's calendar specifications stop at the year 2199: a due time
/// after it (work with a long delay, the only one enqueued) is written
/// as a timer systemd refuses.
#[test]
fn a_far_due_time_still_makes_a_timer_systemd_accepts() {
    let dir = scratch("far-timer");
    let wake = OsWake::new(APP, ["/bin/true"]).unwrap();
    // 2200-01-01T00:00:00Z
    let at = UNIX_EPOCH + Duration::from_secs(7_258_118_400);
    let units = wake.systemd_units(at);
    let timer = dir.0.join(&units.timer_name);
    let service = dir.0.join(&units.service_name);
    std::fs::write(&timer, &units.timer).unwrap();
    std::fs::write(&service, &units.service).unwrap();
    let Ok(out) = Command::new("systemd-analyze")
        .arg("verify")
        .args([&timer, &service])
        .output()
    else {
        println!("SKIPPED: no systemd-analyze");
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("Failed to initialize manager") {
        println!("SKIPPED: {stderr}");
        return;
    }
    assert!(
        out.status.success(),
        "{}\nsystemd-analyze verify: {stderr}",
        units.timer
    );
}

/// A handler in a child that runs an external tool and ignores the stop:
/// at the time limit the child is killed ("the work really stops"), but
/// the tool it started goes on.
#[test]
fn a_child_killed_at_its_time_limit_takes_its_tool_with_it() {
    children();
    let dir = scratch("tool");
    let manager = child_manager(Duration::from_millis(200));
    let id = manager
        .enqueue(
            WorkRequest::once("c_tool")
                .input(dir.0.to_str().unwrap())
                .time_limit(Duration::from_millis(500)),
        )
        .wait()
        .unwrap()
        .ids()[0];
    let file = dir.0.join("tool");
    assert!(wait_until(
        || std::fs::read_to_string(&file).is_ok_and(|s| !s.is_empty()),
        T
    ));
    let tool: u32 = std::fs::read_to_string(&file).unwrap().parse().unwrap();
    // Timed out and retried: the first run's child was killed.
    let timed_out = manager.wait_for(id, T, |i| i.failure.is_some()).unwrap();
    assert!(timed_out.failure.unwrap().contains("time limit"));
    let child_pid: u32 = std::fs::read_to_string(dir.0.join("child"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        wait_until(|| !Path::new(&format!("/proc/{child_pid}")).exists(), T),
        "the run's child {child_pid} was not killed"
    );
    let alive = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.split(' ').nth(2).is_none_or(|st| st != "Z"))
    };
    let gone = wait_until(|| !alive(tool), Duration::from_secs(3));
    if !gone {
        let _ = Command::new("kill").arg(tool.to_string()).status();
    }
    manager.stop();
    assert!(
        gone,
        "the child {child_pid} was killed, but the tool {tool} its run started still runs"
    );
}
