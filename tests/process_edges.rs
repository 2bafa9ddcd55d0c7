//! Process isolates at their edges: children that send half a frame, never
//! start or die while idle, tasks that report progress past their deadline,
//! dropped runs, large first messages, and no leaks over many spawns.
#![cfg(target_os = "linux")]

mod common;

use std::time::{Duration, Instant};

use common::wait_until;
use isolates::pool::{Pool, Task, TaskContext, Worker};
use isolates::process::{ProcessOptions, Registry};
use isolates::{
    AskError, Context, ExitReason, Isolate, IsolateBuilder, IsolateHandle, Priority, TaskError,
};
use serde::{Deserialize, Serialize};

const T: Duration = Duration::from_secs(10);

fn children() {
    Registry::new()
        .isolate::<Rp>()
        .worker::<Rw>()
        .function(hang)
        .function(count_words)
        .function(abort_now)
        .test_entry("child_entry")
        .init();
}

#[test]
fn child_entry() {
    children();
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Msg {
    Echo(u64),
    Pid,
    /// Casts `ExitIsolate` to itself, then answers 1.
    SelfExit,
    /// Casts `StopIsolate` to itself, then answers 1.
    SelfStop,
    ExitIsolate,
    StopIsolate,
    /// Writes the child's pid to the file, then sleeps 5 s.
    SleepMarked(String),
    /// Sleeps this many microseconds, then answers the number.
    SlowEcho(u64, u64),
    /// Answers its length.
    Blob(Vec<u8>),
}

/// `Rp` started with this never returns from `start` (30 s).
const HANG_IN_START: u64 = 777;

struct Rp {
    handled: u64,
}

impl Isolate for Rp {
    type Args = u64;
    type Message = Msg;
    type Reply = u64;
    type Error = String;

    fn start(start: u64, _: &mut Context<Self>) -> Result<Self, String> {
        if start == HANG_IN_START {
            std::thread::sleep(Duration::from_secs(30));
        }
        Ok(Rp { handled: start })
    }

    fn handle(&mut self, msg: Msg, ctx: &mut Context<Self>) -> Result<u64, String> {
        self.handled += 1;
        Ok(match msg {
            Msg::Echo(n) => n,
            Msg::Pid => u64::from(std::process::id()),
            Msg::SelfExit => {
                ctx.handle()
                    .cast(Msg::ExitIsolate)
                    .map_err(|_| "cast".to_string())?;
                1
            }
            Msg::SelfStop => {
                ctx.handle()
                    .cast(Msg::StopIsolate)
                    .map_err(|_| "cast".to_string())?;
                1
            }
            Msg::ExitIsolate => ctx.exit(),
            Msg::Blob(bytes) => bytes.len() as u64,
            Msg::SlowEcho(n, micros) => {
                std::thread::sleep(Duration::from_micros(micros));
                n
            }
            Msg::SleepMarked(path) => {
                let _ = std::fs::write(&path, std::process::id().to_string());
                std::thread::sleep(Duration::from_secs(5));
                0
            }
            Msg::StopIsolate => {
                ctx.stop();
                0
            }
        })
    }
}

struct Rw;

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Job {
    Pid,
    Panic,
    /// Writes its pid to the file, then reports progress every
    /// millisecond until cancelled.
    Chatty(String),
}

impl Worker for Rw {
    type Args = ();
    type Input = Job;
    type Output = u64;
    type Progress = u32;
    type Error = String;

    fn start(_: ()) -> Result<Self, String> {
        Ok(Rw)
    }

    fn run(&mut self, job: Job, task: &TaskContext<'_, Self>) -> Result<u64, String> {
        match job {
            Job::Pid => Ok(u64::from(std::process::id())),
            Job::Panic => panic!("rw panicked"),
            Job::Chatty(path) => {
                let _ = std::fs::write(&path, std::process::id().to_string());
                let mut n = 0;
                while !task.is_cancelled() {
                    n += 1;
                    task.progress(n);
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err("cancelled".into())
            }
        }
    }
}

fn scratch(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("isolates-review-{}-{tag}", std::process::id()))
}

/// Reads the pid a hostile `sh` child wrote to `file`.
fn pid_in(file: &std::path::Path) -> Option<i32> {
    let mut pid = None;
    wait_until(
        || {
            pid = std::fs::read_to_string(file)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok());
            pid.is_some()
        },
        T,
    );
    pid
}

fn kill_pid(pid: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

fn thread_state(name: &str) -> Option<char> {
    for entry in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            return stat.rsplit_once(')')?.1.trim_start().chars().next();
        }
    }
    None
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A hostile child: it says `Started` at once, then the first two bytes
/// of a frame header, and nothing more. An `ask_timeout` must still come
/// back by its timeout (the module promises never a hang of the parent
/// on what a child sends).
#[test]
fn a_partial_frame_from_a_child_does_not_hang_an_ask_timeout() {
    children();
    let file = scratch("partial-ask");
    let _ = std::fs::remove_file(&file);
    let script = format!(
        "echo $$ > {}; printf '\\000\\000\\000\\000\\012\\007\\000' >&0; exec sleep 30",
        file.display()
    );
    let name = format!("rvp-{}", std::process::id() % 100000);
    let probe: IsolateHandle<Rp> = IsolateBuilder::new()
        .name(name.clone())
        .process(ProcessOptions::new().program("/bin/sh", ["-c", script.as_str()]))
        .spawn::<Rp>(0)
        .unwrap();
    let pid = pid_in(&file).expect("the child wrote its pid");
    // Started, and its thread parked with an empty mailbox.
    assert!(wait_until(
        || probe.state() == isolates::IsolateState::Running && thread_state(&name) == Some('S'),
        T
    ));
    let asker = {
        let probe = probe.clone();
        std::thread::spawn(move || {
            let from = Instant::now();
            let result = probe.ask_timeout(Msg::Echo(1), Duration::from_millis(300));
            (result, from.elapsed())
        })
    };
    let returned = wait_until(|| asker.is_finished(), Duration::from_secs(5));
    // Clean up either way: the kill ends the blocked read.
    kill_pid(pid);
    probe.kill(Priority::Immediate);
    let _ = probe.join(T);
    let _ = std::fs::remove_file(&file);
    let (result, took) = asker.join().unwrap();
    assert!(
        returned,
        "ask_timeout(300 ms) had not returned after 5 s (returned {result:?} after {took:?}, once the child was killed)"
    );
}

/// The same partial frame from a pool worker's child: a task deadline
/// still ends the task.
#[test]
fn a_partial_frame_from_a_workers_child_does_not_stop_its_task_deadline() {
    children();
    let file = scratch("partial-pool");
    let _ = std::fs::remove_file(&file);
    let script = format!(
        "echo $$ > {}; printf '\\000\\000\\000\\000\\012\\007\\000' >&0; exec sleep 30",
        file.display()
    );
    let pool = Pool::<Rw>::builder()
        .workers(1)
        .process(ProcessOptions::new().program("/bin/sh", ["-c", script.as_str()]))
        .spawn(())
        .unwrap();
    let mut task = pool.submit_task(Task::new(Job::Pid).timeout(Duration::from_millis(300)));
    let pid = pid_in(&file).expect("the child wrote its pid");
    let result = task.wait_timeout(T);
    // "A deadline on a process worker ends its child: the work really
    // stops" (src/pool/remote.rs), as for a child that spins.
    let alive =
        || rustix::process::test_kill_process(rustix::process::Pid::from_raw(pid).unwrap()).is_ok();
    let killed = wait_until(|| !alive(), Duration::from_secs(5));
    let stats = pool.worker_stats();
    kill_pid(pid);
    pool.stop();
    let _ = pool.join(T);
    let _ = std::fs::remove_file(&file);
    assert_eq!(result, Some(Err(TaskError::TimedOut)));
    assert!(
        killed,
        "the worker's child {pid} still runs 5 s after its task's deadline; workers: {stats:?}"
    );
}

/// A child of a pool whose worker is idle is killed from outside: the
/// next task never ran anywhere, and must not be lost for it.
#[test]
fn a_task_after_an_idle_workers_child_died_is_not_lost() {
    children();
    let pool = Pool::<Rw>::builder()
        .workers(1)
        .process(ProcessOptions::new())
        .spawn(())
        .unwrap();
    let first = pool.submit(Job::Pid).wait().unwrap();
    kill_pid(first as i32);
    assert!(wait_until(
        || !std::path::Path::new(&format!("/proc/{first}")).exists(),
        T
    ));
    let mut next = pool.submit(Job::Pid);
    let result = next.wait_timeout(T);
    pool.stop();
    assert!(pool.join(T));
    match result {
        Some(Ok(second)) => assert_ne!(second, first),
        other => panic!("a task submitted after the idle child died: {other:?}"),
    }
}

/// `Context::exit` in a message the child's isolate sent itself ends the
/// isolate, as it does in a thread.
#[test]
fn context_exit_in_a_self_sent_message_ends_a_process_isolate() {
    // In a thread, for reference.
    let local = IsolateBuilder::new().spawn::<Rp>(0).unwrap();
    assert_eq!(local.ask_timeout(Msg::SelfExit, T), Ok(1));
    assert_eq!(local.join(T), Some(ExitReason::Normal));

    children();
    let probe = IsolateBuilder::new()
        .process(ProcessOptions::new())
        .spawn::<Rp>(0)
        .unwrap();
    assert_eq!(probe.ask_timeout(Msg::SelfExit, T), Ok(1));
    let joined = probe.join(Duration::from_secs(3));
    let after = probe.ask_timeout(Msg::Echo(5), T);
    probe.kill(Priority::Immediate);
    let _ = probe.join(T);
    assert_eq!(
        joined,
        Some(ExitReason::Normal),
        "the isolate did not exit; a later ask gave {after:?}"
    );
}

/// `Context::stop` in a self-sent message ends it too.
#[test]
fn context_stop_in_a_self_sent_message_ends_a_process_isolate() {
    children();
    let probe = IsolateBuilder::new()
        .process(ProcessOptions::new())
        .spawn::<Rp>(0)
        .unwrap();
    assert_eq!(probe.ask_timeout(Msg::SelfStop, T), Ok(1));
    let joined = probe.join(Duration::from_secs(3));
    probe.kill(Priority::Immediate);
    let _ = probe.join(T);
    assert_eq!(joined, Some(ExitReason::Normal));
}

/// Many spawns and kills leave no descriptor behind.
#[test]
fn spawns_and_kills_leak_no_descriptors() {
    children();
    let cycle = |i: usize| {
        let probe = IsolateBuilder::new()
            .process(ProcessOptions::new())
            .spawn::<Rp>(0)
            .unwrap();
        assert_eq!(probe.ask_timeout(Msg::Echo(1), T), Ok(1));
        let priority = if i.is_multiple_of(2) {
            Priority::Immediate
        } else {
            Priority::AfterCurrent
        };
        probe.kill(priority);
        assert_eq!(probe.join(T), Some(ExitReason::Killed));
    };
    // Warm up: the reaper's epoll set, the thread cache.
    for i in 0..4 {
        cycle(i);
    }
    let before = open_fds();
    for i in 0..40 {
        cycle(i);
    }
    let mut after = open_fds();
    // Other tests' descriptors come and go: a leak grows with the count.
    wait_until(
        || {
            after = open_fds();
            after < before + 10
        },
        Duration::from_secs(3),
    );
    assert!(
        after < before + 10,
        "{before} descriptors before, {after} after 40 cycles"
    );
}

/// A pool whose process worker panics again and again gets a fresh child
/// each time, and leaks no descriptor.
#[test]
fn a_process_worker_replaced_after_panics_leaks_no_descriptors() {
    children();
    let pool = Pool::<Rw>::builder()
        .workers(1)
        .process(ProcessOptions::new())
        .spawn(())
        .unwrap();
    for _ in 0..3 {
        assert_eq!(
            pool.submit(Job::Panic).wait(),
            Err(TaskError::Panicked("rw panicked".into()))
        );
    }
    let before = open_fds();
    for _ in 0..30 {
        assert_eq!(
            pool.submit(Job::Panic).wait(),
            Err(TaskError::Panicked("rw panicked".into()))
        );
        assert!(pool.submit(Job::Pid).wait().is_ok());
    }
    let mut after = open_fds();
    wait_until(
        || {
            after = open_fds();
            after < before + 10
        },
        Duration::from_secs(3),
    );
    pool.stop();
    assert!(pool.join(T));
    assert!(
        after < before + 10,
        "{before} descriptors before, {after} after 30 panics"
    );
}

fn alive(pid: i32) -> bool {
    rustix::process::test_kill_process(rustix::process::Pid::from_raw(pid).unwrap()).is_ok()
}

/// A task that reports progress often, past its deadline: its child is
/// killed, as one that spins silently is.
#[test]
fn a_deadline_kills_a_chatty_task_in_its_child() {
    children();
    let file = scratch("chatty-deadline");
    let _ = std::fs::remove_file(&file);
    let pool = Pool::<Rw>::builder()
        .workers(1)
        .process(ProcessOptions::new())
        .spawn(())
        .unwrap();
    let mut task = pool.submit_task(
        Task::new(Job::Chatty(file.display().to_string())).timeout(Duration::from_millis(300)),
    );
    let pid = pid_in(&file).expect("the child wrote its pid");
    let result = task.wait_timeout(T);
    let killed = wait_until(|| !alive(pid), Duration::from_secs(5));
    let stats = pool.worker_stats();
    kill_pid(pid);
    pool.stop();
    let _ = pool.join(T);
    let _ = std::fs::remove_file(&file);
    assert_eq!(result, Some(Err(TaskError::TimedOut)));
    assert!(
        killed,
        "child {pid} still runs its task 5 s after the deadline; workers: {stats:?}"
    );
}

/// Cancelling a running task that reports progress often reaches its
/// child: the task returns and the worker takes the next one.
#[test]
fn cancelling_a_chatty_task_reaches_its_child() {
    children();
    let file = scratch("chatty-cancel");
    let _ = std::fs::remove_file(&file);
    let pool = Pool::<Rw>::builder()
        .workers(1)
        .process(ProcessOptions::new())
        .spawn(())
        .unwrap();
    let running = pool.submit(Job::Chatty(file.display().to_string()));
    let pid = pid_in(&file).expect("the child wrote its pid");
    assert!(running.cancel());
    let mut next = pool.submit(Job::Pid);
    let result = next.wait_timeout(Duration::from_secs(5));
    kill_pid(pid);
    pool.stop();
    let _ = pool.join(T);
    let _ = std::fs::remove_file(&file);
    assert_eq!(
        result,
        Some(Ok(pid as u64)),
        "the next task on the same worker, 5 s after the cancel"
    );
}

/// Writes its pid to `path`, then never returns.
fn hang(path: String) -> u32 {
    let _ = std::fs::write(&path, std::process::id().to_string());
    loop {
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

/// A `process::run` whose caller gives up (drops its `Pending`) leaves
/// no child running.
#[test]
fn a_dropped_process_run_leaves_no_child() {
    children();
    let file = scratch("hang");
    let _ = std::fs::remove_file(&file);
    let pending = isolates::process::run(hang, file.display().to_string());
    let pid = pid_in(&file).expect("the child wrote its pid");
    drop(pending);
    let alive =
        || rustix::process::test_kill_process(rustix::process::Pid::from_raw(pid).unwrap()).is_ok();
    let gone = wait_until(|| !alive(), Duration::from_secs(5));
    kill_pid(pid);
    let _ = std::fs::remove_file(&file);
    assert!(
        gone,
        "child {pid} of a dropped process::run still runs after 5 s"
    );
}

fn count_words(text: String) -> usize {
    text.split_whitespace().count()
}

fn abort_now(_: u8) -> u8 {
    std::process::abort()
}

/// Many `process::run`s, some crashing, leave no descriptor and no
/// child behind.
#[test]
fn process_runs_leak_no_descriptors() {
    children();
    for _ in 0..3 {
        assert_eq!(
            isolates::process::run(count_words, "a b".into()).wait(),
            Ok(2)
        );
    }
    let before = open_fds();
    for i in 0..30 {
        if i % 3 == 0 {
            assert_eq!(
                isolates::process::run(abort_now, 0).wait(),
                Err(isolates::RunError::Crashed(isolates::Crash::Signal(6)))
            );
        } else {
            assert_eq!(
                isolates::process::run(count_words, "a b c".into()).wait(),
                Ok(3)
            );
        }
    }
    let mut after = open_fds();
    wait_until(
        || {
            after = open_fds();
            after < before + 10
        },
        Duration::from_secs(3),
    );
    assert!(
        after < before + 10,
        "{before} descriptors before, {after} after 30 runs"
    );
}

/// A child killed from outside in the middle of a handler: the ask and
/// the exit say SIGKILL, not a protocol error or `Killed`.
#[test]
fn a_kill_from_outside_mid_handler_is_signal_9() {
    children();
    let file = scratch("mid-handler");
    let _ = std::fs::remove_file(&file);
    let probe = IsolateBuilder::new()
        .process(ProcessOptions::new())
        .spawn::<Rp>(0)
        .unwrap();
    assert_eq!(probe.ask_timeout(Msg::Echo(1), T), Ok(1));
    let asker = {
        let probe = probe.clone();
        let path = file.display().to_string();
        std::thread::spawn(move || probe.ask_timeout(Msg::SleepMarked(path), T))
    };
    let pid = pid_in(&file).expect("the child wrote its pid");
    kill_pid(pid);
    let crashed = ExitReason::Crashed(isolates::Crash::Signal(9));
    assert_eq!(asker.join().unwrap(), Err(AskError::Dead(crashed.clone())));
    assert_eq!(probe.join(T), Some(crashed));
    let _ = std::fs::remove_file(&file);
}

/// A supervisor restarts a permanent process child killed from outside
/// while idle (noticed without a message), and leaves a transient one
/// that exited normally.
#[test]
fn a_supervisor_restarts_a_process_child_killed_while_idle() {
    use isolates::supervisor::{ChildSpec, Restart, Supervisor};
    children();
    let spec = |name: &str, restart| {
        ChildSpec::worker_with::<Rp, _>(
            name,
            IsolateBuilder::new().process(ProcessOptions::new()),
            0,
        )
        .restart(restart)
    };
    let sup = Supervisor::builder()
        .child(spec("perm", Restart::Permanent))
        .child(spec("trans", Restart::Transient))
        .spawn()
        .unwrap();
    let perm = sup.worker::<Rp>("perm").unwrap();
    let first = perm.ask_timeout(Msg::Pid, T).unwrap();
    kill_pid(first as i32);
    let mut second = None;
    assert!(wait_until(
        || {
            second = perm.ask_timeout(Msg::Pid, Duration::from_secs(1)).ok();
            second.is_some_and(|s| s != first)
        },
        T
    ));
    let trans = sup.worker::<Rp>("trans").unwrap();
    assert_eq!(
        trans.ask_timeout(Msg::ExitIsolate, T),
        Err(AskError::Dead(ExitReason::Normal))
    );
    assert_eq!(trans.join(T), Some(ExitReason::Normal));
    // Not restarted: the handle reaches no new child.
    assert!(matches!(
        trans.ask_timeout(Msg::Pid, Duration::from_millis(500)),
        Err(AskError::Dead(_))
    ));
    sup.stop();
    assert!(sup.join(T).is_some());
}

/// `run_with`'s options include the start timeout (its docs say so): a
/// child that never starts the function is a typed error by then, as it
/// is for an isolate or a pool worker, not a wait without end.
#[test]
fn run_with_a_child_that_never_starts_ends_at_the_start_timeout() {
    children();
    let file = scratch("run-silent");
    let _ = std::fs::remove_file(&file);
    let script = format!("echo $$ > {}; exec sleep 30", file.display());
    let options = ProcessOptions::new()
        .program("/bin/sh", ["-c", script.as_str()])
        .start_timeout(Duration::from_millis(500));
    let mut pending = isolates::process::run_with(options, count_words, "a b".to_string());
    let pid = pid_in(&file).expect("the child wrote its pid");
    let result = pending.wait_timeout(Duration::from_secs(5));
    kill_pid(pid);
    let _ = std::fs::remove_file(&file);
    assert!(
        matches!(
            &result,
            Some(Err(isolates::RunError::Crashed(isolates::Crash::Protocol(
                _
            ))))
        ),
        "a 500 ms start timeout, 5 s on: {result:?}"
    );
}

/// Asks from several threads, some timing out while their answer is on
/// its way, mixed with casts: every answer that comes back is its own
/// ask's, and every message is handled once.
#[test]
fn concurrent_asks_with_timeouts_never_get_another_asks_answer() {
    children();
    let probe = IsolateBuilder::new()
        .process(ProcessOptions::new())
        .spawn::<Rp>(0)
        .unwrap();
    let threads: Vec<_> = (0..3u64)
        .map(|t| {
            let probe = probe.clone();
            std::thread::spawn(move || {
                let mut sent = 0u64;
                for i in 0..150u64 {
                    let n = t * 1_000_000 + i;
                    match i % 5 {
                        0 => {
                            probe.cast(Msg::Echo(n)).unwrap();
                        }
                        1 => {
                            // Times out, answer still coming.
                            let r = probe
                                .ask_timeout(Msg::SlowEcho(n, 2_000), Duration::from_micros(200));
                            assert!(
                                matches!(r, Ok(v) if v == n) || r == Err(AskError::Timeout),
                                "{r:?} for {n}"
                            );
                        }
                        _ => {
                            let r = probe.ask_timeout(Msg::SlowEcho(n, 50), T);
                            assert_eq!(r, Ok(n), "thread {t} ask {i}");
                        }
                    }
                    sent += 1;
                }
                sent
            })
        })
        .collect();
    let sent: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(
        wait_until(|| probe.stats().messages_handled == sent, T),
        "{} of {sent} handled",
        probe.stats().messages_handled
    );
    probe.kill(Priority::AfterCurrent);
    assert_eq!(probe.join(T), Some(ExitReason::Killed));
}

/// Dropping every handle of a process isolate ends its child.
#[test]
fn dropping_the_last_handle_ends_the_child() {
    children();
    let probe = IsolateBuilder::new()
        .process(ProcessOptions::new())
        .spawn::<Rp>(0)
        .unwrap();
    let pid = probe.ask_timeout(Msg::Pid, T).unwrap() as i32;
    drop(probe);
    assert!(
        wait_until(|| !alive(pid), T),
        "child {pid} outlived its isolate's handles"
    );
}

/// A child whose `start` never returns is killed at the start timeout,
/// whatever the first message queued for it: a large one too.
#[test]
fn the_start_timeout_holds_with_a_large_first_message() {
    children();
    // A small first message: the timeout holds.
    let (probe, token) = IsolateBuilder::new()
        .process(ProcessOptions::new().start_timeout(Duration::from_millis(500)))
        .spawn_paused::<Rp>(HANG_IN_START)
        .unwrap();
    let _small = probe.ask_pending(Msg::Blob(vec![1; 16]));
    probe.resume(&token);
    let reason = probe.join(Duration::from_secs(5));
    assert!(
        matches!(&reason, Some(ExitReason::Crashed(isolates::Crash::Protocol(why))) if why.contains("did not start")),
        "{reason:?}"
    );
    // A large one (more than the socket holds).
    let (probe, token) = IsolateBuilder::new()
        .process(ProcessOptions::new().start_timeout(Duration::from_millis(500)))
        .spawn_paused::<Rp>(HANG_IN_START)
        .unwrap();
    let mut large = probe.ask_pending(Msg::Blob(vec![1; 8 << 20]));
    probe.resume(&token);
    let reason = probe.join(Duration::from_secs(5));
    let state = probe.state();
    probe.kill(Priority::Immediate);
    let after_kill = probe.join(T);
    let answer = large.wait_timeout(T);
    assert!(
        matches!(&reason, Some(ExitReason::Crashed(isolates::Crash::Protocol(why))) if why.contains("did not start")),
        "a 500 ms start timeout, 5 s on: {reason:?} (state {state:?}; after a kill: {after_kill:?}, the ask: {answer:?})"
    );
}
