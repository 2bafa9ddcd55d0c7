//! Process isolates: the same handle API over a child process, a kill that
//! kills, crashes that are exit reasons, a memory limit the OS enforces, no
//! orphans, and a parent that survives whatever its child sends.
#![cfg(target_os = "linux")]

mod common;

use std::io::BufRead;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::wait_until;
use isolates::pool::{Pool, Task, TaskContext, Worker};
use isolates::process::{ProcessOptions, Registry};
use isolates::supervisor::{ChildSpec, Restart, SupervisionEvent, Supervisor};
use isolates::{
    AskError, Context, Crash, ExitReason, Isolate, IsolateBuilder, IsolateHandle, Priority,
    SpawnError, TaskError, port,
};
use serde::{Deserialize, Serialize};

const T: Duration = Duration::from_secs(30);

/// Registers what the children of this test binary run; a child runs
/// `child_entry` alone and becomes the child there.
fn children() {
    Registry::new()
        .isolate::<Probe>()
        .worker::<Crunch>()
        .function(word_count)
        .function(abort_on)
        .function(bump_global)
        .test_entry("child_entry")
        .init();
}

#[test]
fn child_entry() {
    children();
}

static GLOBAL: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Msg {
    Echo(u64),
    Pid,
    SetGlobal(u64),
    GetGlobal,
    Sum,
    Spin,
    Abort,
    Segfault,
    Overflow(u64),
    Alloc(usize),
    Exit(i32),
    Panic,
    Fail,
    Stop,
    Big(usize),
    Sleep(u64),
    ExitIsolate,
    /// Runs this test binary again as a plain program (as user code may)
    /// and says whether it ran as one: 1 if so.
    RunProgram,
}

struct Probe {
    sum: u64,
}

impl Isolate for Probe {
    type Args = u64;
    type Message = Msg;
    type Reply = u64;
    type Error = String;

    fn start(start: u64, _: &mut Context<Self>) -> Result<Self, String> {
        if start == u64::MAX {
            return Err("refused to start".into());
        }
        Ok(Probe { sum: start })
    }

    fn stopping(&mut self, reason: &ExitReason) {
        // Marked probes leave their stop reason where the parent finds it.
        if (STOP_MARK..STOP_MARK + 1000).contains(&self.sum) {
            let _ = std::fs::write(stopping_file(parent_pid(), self.sum), format!("{reason:?}"));
        }
    }

    fn handle(&mut self, msg: Msg, ctx: &mut Context<Self>) -> Result<u64, String> {
        Ok(match msg {
            Msg::Echo(n) => {
                self.sum += n;
                n
            }
            Msg::Pid => u64::from(std::process::id()),
            Msg::SetGlobal(n) => {
                GLOBAL.store(n, Ordering::SeqCst);
                n
            }
            Msg::GetGlobal => GLOBAL.load(Ordering::SeqCst),
            Msg::Sum => self.sum,
            Msg::Spin => loop {
                std::hint::spin_loop();
            },
            Msg::Abort => std::process::abort(),
            Msg::Segfault => {
                // Rust's own SIGSEGV handler (it watches for stack overflows)
                // lets the first one through when it is not a fault and
                // restores the default: the second one kills.
                let me = rustix::process::getpid();
                loop {
                    let _ = rustix::process::kill_process(me, rustix::process::Signal::SEGV);
                    std::thread::park_timeout(Duration::from_millis(10));
                }
            }
            Msg::Overflow(n) => recurse(n),
            Msg::Alloc(bytes) => {
                let v = vec![1u8; bytes];
                std::hint::black_box(&v);
                v.len() as u64
            }
            Msg::Exit(code) => std::process::exit(code),
            Msg::Panic => panic!("probe panicked"),
            Msg::Fail => return Err("probe failed".into()),
            Msg::Stop => {
                ctx.stop();
                0
            }
            Msg::Big(n) => n as u64,
            Msg::Sleep(ms) => {
                std::thread::sleep(Duration::from_millis(ms));
                ms
            }
            Msg::ExitIsolate => ctx.exit(),
            Msg::RunProgram => {
                let out = std::process::Command::new(std::env::current_exe().unwrap())
                    .args(["program_role", "--exact", "--nocapture", "--test-threads=1"])
                    .env("ISOLATES_TEST_PROGRAM_ROLE", "1")
                    .output()
                    .map_err(|e| e.to_string())?;
                u64::from(String::from_utf8_lossy(&out.stdout).contains("RAN AS A PROGRAM"))
            }
        })
    }
}

/// Probes started from `STOP_MARK` up write their stop reason to
/// [`stopping_file`].
const STOP_MARK: u64 = 7_770_000;

/// Where a marked probe in a child of `parent` writes its stop reason.
fn stopping_file(parent: u32, mark: u64) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("isolates-probe-stopping-{parent}-{mark}"))
}

/// In a child, its parent's pid (its `argv[0]` says it is a child); in
/// the parent, its own.
fn parent_pid() -> u32 {
    let child = std::env::args_os()
        .next()
        .is_some_and(|arg0| arg0.to_string_lossy().starts_with("isolates-child-of-"));
    if child {
        std::os::unix::process::parent_id()
    } else {
        std::process::id()
    }
}

#[inline(never)]
fn recurse(n: u64) -> u64 {
    let buf = std::hint::black_box([n; 64]);
    if n == 0 {
        buf[3]
    } else {
        recurse(n + 1).wrapping_add(buf[5])
    }
}

fn spawn(options: ProcessOptions) -> IsolateHandle<Probe> {
    children();
    IsolateBuilder::new()
        .process(options)
        .spawn::<Probe>(0)
        .expect("spawn a process isolate")
}

#[test]
fn messages_round_trip_and_globals_are_the_childs_own() {
    let probe = spawn(ProcessOptions::new());
    assert_eq!(probe.ask_timeout(Msg::Echo(7), T), Ok(7));
    let pid = probe.ask_timeout(Msg::Pid, T).unwrap();
    assert_ne!(
        pid,
        u64::from(std::process::id()),
        "it runs in another process"
    );
    assert_eq!(probe.ask_timeout(Msg::SetGlobal(42), T), Ok(42));
    assert_eq!(probe.ask_timeout(Msg::GetGlobal, T), Ok(42));
    assert_eq!(
        GLOBAL.load(Ordering::SeqCst),
        0,
        "the parent's static is untouched"
    );
    // Casts arrive in order, none lost.
    for i in 1..=100 {
        probe.cast(Msg::Echo(i)).unwrap();
    }
    assert_eq!(probe.ask_timeout(Msg::Sum, T), Ok(7 + 5050));
    assert_eq!(probe.stats().messages_handled, 105);
    probe.kill(Priority::AfterCurrent);
    assert_eq!(probe.join(T), Some(ExitReason::Killed));
}

#[test]
fn handler_errors_and_panics_are_typed_as_in_a_thread() {
    let probe = spawn(ProcessOptions::new());
    probe.set_errors_fatal(false);
    assert_eq!(
        probe.ask_timeout(Msg::Fail, T),
        Err(AskError::Failed("probe failed".into()))
    );
    assert_eq!(
        probe.ask_timeout(Msg::Echo(1), T),
        Ok(1),
        "not fatal: it goes on"
    );
    probe.set_errors_fatal(true);
    assert_eq!(
        probe.ask_timeout(Msg::Fail, T),
        Err(AskError::Failed("probe failed".into()))
    );
    assert_eq!(
        probe.join(T),
        Some(ExitReason::Failed("probe failed".into()))
    );
    // A panic ends it even with errors not fatal.
    let probe = spawn(ProcessOptions::new());
    probe.set_errors_fatal(false);
    assert_eq!(
        probe.ask_timeout(Msg::Panic, T),
        Err(AskError::Panicked("probe panicked".into()))
    );
    assert_eq!(
        probe.join(T),
        Some(ExitReason::Panicked("probe panicked".into()))
    );
}

#[test]
fn a_start_error_and_a_stop_in_the_child_are_exit_reasons() {
    children();
    let refused = IsolateBuilder::new()
        .process(ProcessOptions::new())
        .spawn::<Probe>(u64::MAX)
        .unwrap();
    assert_eq!(
        refused.join(T),
        Some(ExitReason::Failed("refused to start".into()))
    );
    assert!(matches!(
        refused.ask_timeout(Msg::Echo(1), T),
        Err(AskError::Dead(ExitReason::Failed(_)))
    ));

    let probe = spawn(ProcessOptions::new());
    assert_eq!(probe.ask_timeout(Msg::Stop, T), Ok(0));
    // The parent learns of the stop without sending anything more.
    assert_eq!(probe.join(T), Some(ExitReason::Normal));
}

#[test]
fn messages_sent_while_the_child_starts_are_handled_in_order_or_resolve_with_its_start_error() {
    children();
    // Queued before the child starts (the spawn is paused until they are):
    // the first goes out behind the start frame, the rest follow through
    // the mailbox.
    let (probe, token) = IsolateBuilder::new()
        .process(ProcessOptions::new())
        .spawn_paused::<Probe>(10)
        .unwrap();
    let mut first = probe.ask_pending(Msg::Echo(1));
    for i in 2..=5 {
        probe.cast(Msg::Echo(i)).unwrap();
    }
    probe.resume(&token);
    assert_eq!(probe.ask_timeout(Msg::Sum, T), Ok(10 + 1 + 2 + 3 + 4 + 5));
    assert_eq!(first.wait_timeout(T), Some(Ok(1)));
    assert_eq!(probe.stats().messages_handled, 6);
    probe.kill(Priority::AfterCurrent);
    assert_eq!(probe.join(T), Some(ExitReason::Killed));

    // A child that does not start never handles them: each resolves with
    // the start error, and a cast among them is dropped.
    let (refused, token) = IsolateBuilder::new()
        .process(ProcessOptions::new())
        .spawn_paused::<Probe>(u64::MAX)
        .unwrap();
    let mut first = refused.ask_pending(Msg::Echo(1));
    let _ = refused.cast(Msg::Echo(2));
    let mut second = refused.ask_pending(Msg::Echo(3));
    refused.resume(&token);
    let failed = ExitReason::Failed("refused to start".into());
    assert_eq!(
        first.wait_timeout(T),
        Some(Err(AskError::Dead(failed.clone())))
    );
    assert_eq!(
        second.wait_timeout(T),
        Some(Err(AskError::Dead(failed.clone())))
    );
    assert_eq!(refused.join(T), Some(failed));
    assert_eq!(refused.stats().messages_handled, 0);
}

#[test]
fn a_stopped_or_killed_child_is_reaped_before_join_returns() {
    for priority in [Priority::AfterCurrent, Priority::Immediate] {
        let probe = spawn(ProcessOptions::new());
        let pid = probe.ask_timeout(Msg::Pid, T).unwrap();
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        probe.kill(priority);
        assert_eq!(probe.join(T), Some(ExitReason::Killed));
        // Reaped, not a zombie: the pid is gone from /proc.
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "child {pid} is not reaped after join ({priority:?})"
        );
    }
    let probe = spawn(ProcessOptions::new());
    let pid = probe.ask_timeout(Msg::Pid, T).unwrap();
    probe.stop();
    assert_eq!(probe.join(T), Some(ExitReason::Normal));
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

/// An immediate kill ends the isolate without its thread waiting for the
/// child's exit: each `join` waits for the child and reaps it (or finds it
/// reaped), so every joiner returns with the child gone; with no `join`
/// the reaper reaps it, and a later `join` returns at once.
#[test]
fn an_immediate_kill_is_joined_once_its_child_is_reaped_by_whoever_comes_first() {
    let gone = |pid: u64| !std::path::Path::new(&format!("/proc/{pid}")).exists();
    for round in 0..5 {
        let probe = spawn(ProcessOptions::new());
        let pid = probe.ask_timeout(Msg::Pid, T).unwrap();
        probe.kill(Priority::Immediate);
        let joiners: Vec<_> = (0..3)
            .map(|_| {
                let probe = probe.clone();
                std::thread::spawn(move || (probe.join(T), gone(pid)))
            })
            .collect();
        for joiner in joiners {
            let (reason, child_gone) = joiner.join().unwrap();
            assert_eq!(reason, Some(ExitReason::Killed), "round {round}");
            assert!(child_gone, "round {round}: child {pid} left after join");
        }
    }
    let probe = spawn(ProcessOptions::new());
    let pid = probe.ask_timeout(Msg::Pid, T).unwrap();
    probe.kill(Priority::Immediate);
    assert!(wait_until(|| probe.is_finished(), T));
    assert!(
        wait_until(|| gone(pid), T),
        "child {pid} not reaped without a join: {:?}",
        proc_stat(pid)
    );
    assert_eq!(probe.join(Duration::ZERO), Some(ExitReason::Killed));
}

#[test]
fn an_after_current_kill_of_an_idle_child_stops_it_and_leaves_later_messages_unhandled() {
    children();
    // Idle and parked (the caller may send the stop frame itself), or not
    // yet parked (its thread does): the same end either way.
    for round in 0..20 {
        let mark = STOP_MARK + round;
        let file = stopping_file(std::process::id(), mark);
        let _ = std::fs::remove_file(&file);
        let probe = IsolateBuilder::new()
            .process(ProcessOptions::new())
            .spawn::<Probe>(mark)
            .unwrap();
        // Echo(0) leaves the mark as it is.
        assert_eq!(probe.ask_timeout(Msg::Echo(0), T), Ok(0));
        if round % 2 == 1 {
            // Parked for sure: a second ask has come back the same way.
            assert_eq!(probe.ask_timeout(Msg::Echo(0), T), Ok(0));
        }
        let handled = probe.stats().messages_handled;
        probe.kill(Priority::AfterCurrent);
        let mut late = probe.ask_pending(Msg::Echo(2));
        let late_cast = probe.cast(Msg::Echo(3));
        assert_eq!(
            late.wait_timeout(T),
            Some(Err(AskError::Dead(ExitReason::Killed))),
            "round {round}"
        );
        assert_eq!(probe.join(T), Some(ExitReason::Killed), "round {round}");
        let stats = probe.stats();
        assert_eq!(
            stats.messages_handled, handled,
            "round {round} ({late_cast:?})"
        );
        assert_eq!(stats.errors, 0, "round {round}");
        // Its `stopping` ran in the child, with the kill as the reason.
        assert_eq!(
            std::fs::read_to_string(&file).ok().as_deref(),
            Some("Killed"),
            "round {round}"
        );
        let _ = std::fs::remove_file(&file);
    }
}

/// The threads of this process whose OS name is `name`.
fn threads_named(name: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            found.extend(
                entry
                    .file_name()
                    .to_str()
                    .and_then(|t| t.parse::<u32>().ok()),
            );
        }
    }
    found
}

#[test]
fn a_process_isolates_thread_serves_the_next_one_under_its_name() {
    children();
    // One after another: each ended isolate's thread is kept, and the
    // next takes it (unless another test's spawn took it first), named
    // for the OS after the isolate it serves.
    let mut tids = Vec::new();
    for i in 0..10 {
        let name = format!("thread-cache-{i}");
        let probe = IsolateBuilder::new()
            .name(name.clone())
            .process(ProcessOptions::new())
            .spawn::<Probe>(0)
            .unwrap();
        assert_eq!(probe.ask_timeout(Msg::Echo(0), T), Ok(0));
        let mut named = Vec::new();
        assert!(
            wait_until(
                || {
                    named = threads_named(&name);
                    !named.is_empty()
                },
                T
            ),
            "no thread is named {name}"
        );
        assert_eq!(named.len(), 1, "{name}: {named:?}");
        tids.push(named[0]);
        probe.kill(Priority::AfterCurrent);
        assert_eq!(probe.join(T), Some(ExitReason::Killed));
    }
    let mut distinct = tids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(distinct.len() < tids.len(), "no thread was kept: {tids:?}");
}

/// This process's children that are zombies (exited, not reaped).
fn zombie_children() -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            proc_stat(pid).is_some_and(|(state, parent)| state == 'Z' && parent == Some(me))
        })
        .collect()
}

/// Process `pid`'s state letter and its parent's pid, from
/// `/proc/PID/stat` (after the name in parentheses: the state, then the
/// parent's pid); `None` once it is gone.
fn proc_stat(pid: impl std::fmt::Display) -> Option<(char, Option<u32>)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit(')').next().unwrap_or("").split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.next().and_then(|p| p.parse().ok())))
}

/// `spawn` starts the child before the isolate's thread: a kill at once
/// (before the thread sends the start frame) ends it too, and it is
/// reaped.
#[test]
fn an_isolate_killed_right_after_spawn_leaves_no_child() {
    for _ in 0..5 {
        let probe = spawn(ProcessOptions::new());
        probe.kill(Priority::Immediate);
        assert_eq!(probe.join(T), Some(ExitReason::Killed));
    }
    // Other tests' children may be between their exit and their reaping;
    // none stays a zombie.
    assert!(
        wait_until(|| zombie_children().is_empty(), T),
        "zombies: {:?}",
        zombie_children()
    );
}

#[test]
fn an_ask_that_times_out_leaves_its_answer_to_the_isolate() {
    let probe = spawn(ProcessOptions::new());
    assert_eq!(probe.ask_timeout(Msg::Echo(1), T), Ok(1));
    assert_eq!(
        probe.ask_timeout(Msg::Sleep(300), Duration::from_millis(20)),
        Err(AskError::Timeout)
    );
    // The late answer is read and counted, and the next ask gets its own.
    assert_eq!(probe.ask_timeout(Msg::Echo(2), T), Ok(2));
    assert!(wait_until(|| probe.stats().messages_handled == 3, T));
    // A fatal error after a timeout still ends the isolate.
    assert_eq!(
        probe.ask_timeout(Msg::Sleep(200), Duration::from_millis(10)),
        Err(AskError::Timeout)
    );
    assert_eq!(
        probe.ask_timeout(Msg::Fail, T),
        Err(AskError::Failed("probe failed".into()))
    );
    assert_eq!(
        probe.join(T),
        Some(ExitReason::Failed("probe failed".into()))
    );
}

#[test]
fn context_exit_in_the_child_ends_the_isolate_normally() {
    let probe = spawn(ProcessOptions::new());
    assert_eq!(
        probe.ask_timeout(Msg::ExitIsolate, T),
        Err(AskError::Dead(ExitReason::Normal))
    );
    assert_eq!(probe.join(T), Some(ExitReason::Normal));
}

#[test]
fn an_infinite_loop_is_killed_immediately() {
    let probe = spawn(ProcessOptions::new());
    assert_eq!(probe.ask_timeout(Msg::Echo(1), T), Ok(1));
    let mut stuck = probe.ask_pending(Msg::Spin);
    // The run loop has taken the message: the child is spinning in it.
    assert!(wait_until(|| probe.stats().queue_len == 0, T));
    let mut queued = probe.ask_pending(Msg::Echo(2));
    probe.kill(Priority::Immediate);
    assert_eq!(
        stuck.wait_timeout(T),
        Some(Err(AskError::Dead(ExitReason::Killed)))
    );
    assert_eq!(
        queued.wait_timeout(T),
        Some(Err(AskError::Dead(ExitReason::Killed)))
    );
    assert_eq!(probe.join(T), Some(ExitReason::Killed));
}

#[test]
fn an_immediate_kill_with_a_grace_ends_the_child_too() {
    let probe = spawn(ProcessOptions::new().kill_grace(Duration::from_millis(50)));
    let pid = probe.ask_timeout(Msg::Pid, T).unwrap();
    let mut stuck = probe.ask_pending(Msg::Spin);
    assert!(wait_until(|| probe.stats().queue_len == 0, T));
    probe.kill(Priority::Immediate);
    assert_eq!(
        stuck.wait_timeout(T),
        Some(Err(AskError::Dead(ExitReason::Killed)))
    );
    assert_eq!(probe.join(T), Some(ExitReason::Killed));
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    assert!(wait_until(
        || rustix::process::test_kill_process(pid).is_err(),
        T
    ));
}

fn crash_with(msg: Msg, options: ProcessOptions) -> ExitReason {
    let probe = spawn(options);
    let err = probe.ask_timeout(msg, T).unwrap_err();
    let AskError::Dead(reason) = err else {
        panic!("expected the child to die, got {err:?}");
    };
    assert_eq!(probe.join(T), Some(reason.clone()));
    reason
}

#[test]
fn an_abort_is_sigabrt() {
    assert_eq!(
        crash_with(Msg::Abort, ProcessOptions::new()),
        ExitReason::Crashed(Crash::Signal(6))
    );
}

#[test]
fn a_segfault_is_sigsegv() {
    assert_eq!(
        crash_with(Msg::Segfault, ProcessOptions::new()),
        ExitReason::Crashed(Crash::Signal(11))
    );
}

#[test]
fn a_stack_overflow_is_its_own_reason() {
    assert_eq!(
        crash_with(Msg::Overflow(1), ProcessOptions::new()),
        ExitReason::Crashed(Crash::StackOverflow)
    );
}

#[test]
fn an_allocation_past_the_memory_limit_is_out_of_memory() {
    let limit = 512 << 20;
    assert_eq!(
        crash_with(Msg::Alloc(2 << 30), ProcessOptions::new().max_memory(limit)),
        ExitReason::Crashed(Crash::OutOfMemory { limit })
    );
    // Under the limit, the same child allocates fine.
    let probe = spawn(ProcessOptions::new().max_memory(limit));
    assert_eq!(probe.ask_timeout(Msg::Alloc(64 << 20), T), Ok(64 << 20));
}

#[test]
fn an_exit_of_its_own_and_a_kill_from_outside_are_exit_reasons() {
    assert_eq!(
        crash_with(Msg::Exit(3), ProcessOptions::new()),
        ExitReason::Crashed(Crash::Exit(3))
    );
    // Killed from outside while idle: the parent notices without a message.
    let probe = spawn(ProcessOptions::new());
    let pid = probe.ask_timeout(Msg::Pid, T).unwrap();
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    assert_eq!(probe.join(T), Some(ExitReason::Crashed(Crash::Signal(9))));
}

/// Twenty children die at once, each its own way, while one reaper thread
/// watches them all: each isolate gets its own exit reason (those told by
/// stderr included), and every child is reaped.
#[test]
fn many_children_crashing_at_once_each_get_their_own_reason_and_are_all_reaped() {
    let limit = 512 << 20;
    let kinds: Vec<(Option<Msg>, ProcessOptions, ExitReason)> = (0..20)
        .map(|i| match i % 7 {
            0 => (
                Some(Msg::Abort),
                ProcessOptions::new(),
                ExitReason::Crashed(Crash::Signal(6)),
            ),
            1 => (
                Some(Msg::Segfault),
                ProcessOptions::new(),
                ExitReason::Crashed(Crash::Signal(11)),
            ),
            2 => (
                Some(Msg::Overflow(1)),
                ProcessOptions::new(),
                ExitReason::Crashed(Crash::StackOverflow),
            ),
            3 => (
                Some(Msg::Alloc(2 << 30)),
                ProcessOptions::new().max_memory(limit),
                ExitReason::Crashed(Crash::OutOfMemory { limit }),
            ),
            4 => (
                Some(Msg::Exit(10 + i)),
                ProcessOptions::new(),
                ExitReason::Crashed(Crash::Exit(10 + i)),
            ),
            5 => (Some(Msg::Stop), ProcessOptions::new(), ExitReason::Normal),
            // Killed from outside while idle: noticed without a message.
            _ => (
                None,
                ProcessOptions::new(),
                ExitReason::Crashed(Crash::Signal(9)),
            ),
        })
        .collect();
    let children: Vec<_> = kinds
        .into_iter()
        .map(|(msg, options, expected)| {
            let probe = spawn(options);
            let pid = probe.ask_timeout(Msg::Pid, T).unwrap();
            (probe, pid, msg, expected)
        })
        .collect();
    // All at once: no child's end waits for another's.
    for (probe, pid, msg, _) in &children {
        match msg {
            Some(msg) => probe.cast(msg.clone()).unwrap(),
            None => {
                let pid = rustix::process::Pid::from_raw(*pid as i32).unwrap();
                rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
            }
        }
    }
    for (probe, pid, msg, expected) in &children {
        assert_eq!(probe.join(T).as_ref(), Some(expected), "{msg:?}");
        // Reaped, not a zombie: the pid is gone from /proc.
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "child {pid} ({msg:?}) is not reaped after join"
        );
    }
}

#[test]
fn a_supervisor_restarts_a_crashed_child_process() {
    children();
    let (events_tx, events) = port::unbounded();
    let spec = ChildSpec::worker_with::<Probe, _>(
        "probe",
        IsolateBuilder::new().process(ProcessOptions::new()),
        0,
    )
    .restart(Restart::Permanent);
    let sup = Supervisor::builder().child(spec).spawn().unwrap();
    sup.add_event_listener(events_tx);
    let probe = sup.worker::<Probe>("probe").unwrap();
    let first = probe.ask_timeout(Msg::Pid, T).unwrap();
    assert!(matches!(
        probe.ask_timeout(Msg::Segfault, T),
        Err(AskError::Dead(ExitReason::Crashed(Crash::Signal(11))))
    ));
    // The same handle reaches the restarted isolate, in a new child.
    let mut second = None;
    assert!(wait_until(
        || {
            second = probe.ask_timeout(Msg::Pid, T).ok();
            second.is_some()
        },
        T
    ));
    assert_ne!(second, Some(first));
    // The event may come after the restarted isolate's first answer.
    let mut restarts = 0;
    assert!(wait_until(
        || {
            while let Ok(event) = events.try_recv() {
                if matches!(event, SupervisionEvent::Restarted { .. }) {
                    restarts += 1;
                }
            }
            restarts >= 1
        },
        T
    ));
    assert_eq!(restarts, 1);
    sup.stop();
    assert!(sup.join(T).is_some());
}

fn hostile(script: &str) -> ExitReason {
    spawn(
        ProcessOptions::new()
            .program("/bin/sh", ["-c", script])
            .start_timeout(Duration::from_secs(2)),
    )
    .join(T)
    .expect("the isolate exits")
}

#[test]
fn garbage_oversized_frames_and_silence_from_a_child_are_typed_errors() {
    // Bytes that are not a frame (an unknown kind).
    let reason = hostile("printf 'garbage!' >&0; exec sleep 30");
    assert!(
        matches!(&reason, ExitReason::Crashed(Crash::Protocol(why)) if why.contains("unknown frame kind")),
        "{reason:?}"
    );
    // A frame header announcing 4 GiB: refused before anything is allocated.
    let reason = hostile("printf '\\377\\377\\377\\377\\013' >&0; exec sleep 30");
    assert!(
        matches!(&reason, ExitReason::Crashed(Crash::Protocol(why)) if why.contains("over the limit")),
        "{reason:?}"
    );
    // Nothing at all: the start times out and the child is killed.
    let reason = hostile("exec sleep 30");
    assert!(
        matches!(&reason, ExitReason::Crashed(Crash::Protocol(why)) if why.contains("did not start")),
        "{reason:?}"
    );
    // A child that exits at once.
    assert_eq!(hostile("exit 4"), ExitReason::Crashed(Crash::Exit(4)));
}

#[test]
fn an_unregistered_type_is_a_spawn_error() {
    struct Other;
    impl Isolate for Other {
        type Args = ();
        type Message = ();
        type Reply = ();
        type Error = String;
        fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> {
            Ok(Other)
        }
        fn handle(&mut self, _: (), _: &mut Context<Self>) -> Result<(), String> {
            Ok(())
        }
    }
    children();
    let err = IsolateBuilder::new()
        .process(ProcessOptions::new())
        .spawn::<Other>(())
        .unwrap_err();
    assert!(matches!(&err, SpawnError::NotRegistered(why) if why.contains("Other")));
}

#[test]
fn an_oversized_reply_is_a_typed_error() {
    children();
    let probe = IsolateBuilder::new()
        .codec(isolates::Bincode::<64>::limited())
        .process(ProcessOptions::new())
        .spawn::<Probe>(0);
    // Not registered with that codec: said so.
    assert!(matches!(probe, Err(SpawnError::NotRegistered(_))));
}

/// Run by `a_program_a_child_starts_is_not_taken_for_a_child`: the
/// registration returns (this is not a child), and the program goes on.
#[test]
fn program_role() {
    if std::env::var_os("ISOLATES_TEST_PROGRAM_ROLE").is_none() {
        return;
    }
    children();
    println!("RAN AS A PROGRAM");
}

#[test]
fn a_program_a_child_starts_is_not_taken_for_a_child() {
    // It inherits the child's environment, marker included.
    let probe = spawn(ProcessOptions::new());
    assert_eq!(probe.ask_timeout(Msg::RunProgram, T), Ok(1));
}

/// Run by `a_parent_killed_with_sigkill_leaves_no_child`: spawns a child,
/// prints its pid, then waits to be killed.
#[test]
fn parent_role() {
    if std::env::var_os("ISOLATES_TEST_PARENT_ROLE").is_none() {
        return;
    }
    let probe = spawn(ProcessOptions::new());
    let pid = probe.ask_timeout(Msg::Pid, T).unwrap();
    println!("CHILD {pid}");
    let _ = probe.join(Duration::from_secs(120));
}

#[test]
fn a_parent_killed_with_sigkill_leaves_no_child() {
    let mut parent = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["parent_role", "--exact", "--nocapture", "--test-threads=1"])
        .env("ISOLATES_TEST_PARENT_ROLE", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(parent.stdout.take().unwrap());
    let child = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("CHILD ").map(|p| p.trim().to_string()))
        .expect("the parent prints its child's pid");
    let alive = |pid: &str| proc_stat(pid).is_some_and(|(state, _)| state != 'Z');
    assert!(alive(&child), "the child runs while its parent does");
    parent.kill().unwrap();
    parent.wait().unwrap();
    assert!(
        wait_until(|| !alive(&child), T),
        "child {child} outlived its parent"
    );
}

/// A pool worker for the process-pool tests.
struct Crunch;

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Job {
    /// Reports 1..=n as progress, returns the pid.
    Steps(u32),
    Panic,
    Abort,
    /// Runs until cancelled; returns how it ended.
    UntilCancelled,
    Forever,
}

impl Worker for Crunch {
    type Args = ();
    type Input = Job;
    type Output = u64;
    type Progress = u32;
    type Error = String;

    fn start(_: ()) -> Result<Self, String> {
        Ok(Crunch)
    }

    fn run(&mut self, job: Job, task: &TaskContext<'_, Self>) -> Result<u64, String> {
        match job {
            Job::Steps(n) => {
                for i in 1..=n {
                    task.progress(i);
                }
                Ok(u64::from(std::process::id()))
            }
            Job::Panic => panic!("crunch panicked"),
            Job::Abort => std::process::abort(),
            Job::UntilCancelled => {
                while !task.is_cancelled() {
                    std::thread::park_timeout(Duration::from_millis(1));
                }
                Err("cancelled".into())
            }
            Job::Forever => loop {
                std::hint::spin_loop();
            },
        }
    }
}

fn process_pool(workers: usize) -> Pool<Crunch> {
    children();
    Pool::<Crunch>::builder()
        .workers(workers)
        .process(ProcessOptions::new())
        .spawn(())
        .expect("a process pool")
}

#[test]
fn a_process_pool_runs_tasks_in_children_with_progress() {
    let pool = process_pool(2);
    let mut task = pool.submit(Job::Steps(5));
    let pid = task.wait_timeout(T).expect("resolves").expect("runs");
    assert_ne!(pid, u64::from(std::process::id()));
    assert_eq!(task.progress(), vec![1, 2, 3, 4, 5]);
}

#[test]
fn a_panic_or_an_abort_in_a_process_worker_costs_only_its_task() {
    let pool = process_pool(1);
    let first = pool.submit(Job::Steps(0)).wait().unwrap();
    assert_eq!(
        pool.submit(Job::Panic).wait(),
        Err(TaskError::Panicked("crunch panicked".into()))
    );
    let second = pool.submit(Job::Steps(0)).wait().unwrap();
    assert_ne!(first, second, "a fresh child after a panic");
    assert!(matches!(
        pool.submit(Job::Abort).wait(),
        Err(TaskError::WorkerLost(why)) if why.contains("signal 6")
    ));
    // With a retry, the task runs again on a fresh child.
    let retried = pool.submit_task(Task::new(Job::Steps(1)).retries(1));
    assert!(retried.wait().is_ok());
    assert_eq!(pool.stats().workers, 1);
}

#[test]
fn cancelling_a_running_task_reaches_the_child() {
    let pool = process_pool(1);
    let running = pool.submit(Job::UntilCancelled);
    assert!(wait_until(
        || running.state() == isolates::pool::TaskState::Running,
        T
    ));
    assert!(running.cancel());
    assert_eq!(running.wait(), Err(TaskError::Cancelled));
    // The child saw it and returned: the worker is free for the next task.
    let mut next = pool.submit(Job::Steps(1));
    assert!(matches!(next.wait_timeout(T), Some(Ok(_))));
}

#[test]
fn a_deadline_kills_a_runaway_task_in_its_child() {
    let pool = process_pool(1);
    let before = pool.submit(Job::Steps(0)).wait().unwrap();
    let runaway = pool.submit_task(Task::new(Job::Forever).timeout(Duration::from_millis(200)));
    assert_eq!(runaway.wait(), Err(TaskError::TimedOut));
    // The child that spun is gone, killed; a new one serves.
    let pid = rustix::process::Pid::from_raw(before as i32).unwrap();
    assert!(wait_until(
        || rustix::process::test_kill_process(pid).is_err(),
        T
    ));
    let after = pool.submit(Job::Steps(0)).wait().unwrap();
    assert_ne!(before, after);
}

#[test]
fn a_process_pool_needs_registration_and_no_rayon() {
    struct Unregistered;
    impl Worker for Unregistered {
        type Args = ();
        type Input = ();
        type Output = ();
        type Progress = ();
        type Error = String;
        fn start(_: ()) -> Result<Self, String> {
            Ok(Unregistered)
        }
        fn run(&mut self, _: (), _: &TaskContext<'_, Self>) -> Result<(), String> {
            Ok(())
        }
    }
    children();
    let err = Pool::<Unregistered>::builder()
        .process(ProcessOptions::new())
        .spawn(())
        .unwrap_err();
    assert!(matches!(&err, SpawnError::NotRegistered(why) if why.contains("Unregistered")));
    let err = Pool::<Crunch>::builder()
        .rayon(true)
        .process(ProcessOptions::new())
        .spawn(())
        .unwrap_err();
    assert!(matches!(err, SpawnError::Unsupported(_)));
}

fn word_count(text: String) -> usize {
    if text == "panic" {
        panic!("asked to panic");
    }
    text.split_whitespace().count()
}

fn abort_on(n: u32) -> u32 {
    if n == 0 {
        std::process::abort();
    }
    n
}

fn bump_global(n: u64) -> u64 {
    GLOBAL.fetch_add(n, Ordering::SeqCst) + n
}

fn not_registered(n: u8) -> u8 {
    n
}

#[test]
fn run_in_a_child_process_returns_its_result_and_contains_its_crash() {
    children();
    assert_eq!(
        isolates::process::run(word_count, "a b c".to_string()).wait(),
        Ok(3)
    );
    assert_eq!(
        isolates::process::run(word_count, "panic".to_string()).wait(),
        Err(isolates::RunError::Panicked("asked to panic".into()))
    );
    assert_eq!(
        isolates::process::run(abort_on, 0).wait(),
        Err(isolates::RunError::Crashed(Crash::Signal(6)))
    );
    assert_eq!(isolates::process::run(abort_on, 7).wait(), Ok(7));
    // Its statics are its own: each run starts from a fresh process.
    assert_eq!(isolates::process::run(bump_global, 5).wait(), Ok(5));
    assert_eq!(isolates::process::run(bump_global, 5).wait(), Ok(5));
    assert_eq!(GLOBAL.load(Ordering::SeqCst), 0);
    assert!(matches!(
        isolates::process::run(not_registered, 1).wait(),
        Err(isolates::RunError::NotRegistered(why)) if why.contains("not registered")
    ));
}
