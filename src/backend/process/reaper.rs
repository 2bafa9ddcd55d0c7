//! Reaping children and passing their stderr on: one thread for all of
//! them, lazily started, blocked in `epoll_wait` with no timeout on one
//! epoll set that holds every child's pidfd and stderr pipe: it wakes only
//! when a child writes to its stderr or exits. Whoever starts a child adds
//! it to the set itself (registered first, so that the reaper knows every
//! child it hears of): adding one does not wake the reaper.
//!
//! A child's pid is signalled only through its [`KillSwitch`], which
//! forgets the pid under its lock when the child is reaped: a pid that may
//! have been reused is never signalled. The owner of a child may reap it
//! itself (it stopped it and waits for its exit), and so may whoever waits
//! for a child that its owner let die after SIGKILL (a `join`): of them and
//! the reaper exactly one reaps, under that lock.
//!
//! On a kernel without pidfds (before Linux 5.3) a child gets a thread of
//! its own that forwards its stderr to the end and then waits for it.
//!
//! A child's stderr is passed on to ours with a blocking write: a parent
//! whose own stderr blocks (a full pipe that nobody reads) holds the reaper
//! up, and with it the news of every child's exit (an owner that stops its
//! child still reaps it itself).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStderr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use rustix::event::epoll;
use rustix::process::{Pid, Signal};

use crate::error::Crash;

/// Called from the reaper when the child has exited (not when its owner
/// reaped it): how it died.
pub(crate) type OnExit = Box<dyn FnOnce(Crash) + Send>;

/// Kills a child; shared with whoever may kill it (a handle's immediate
/// kill) while the reaper waits for it.
pub(crate) struct KillSwitch {
    /// `None` once reaped: a pid is never signalled after it may have been
    /// reused.
    pid: Mutex<Option<Pid>>,
    grace: Duration,
    /// The child's pidfd, if the kernel has them: whoever killed the
    /// child can wait for its exit ([`await_exit`](Self::await_exit)).
    pidfd: Option<Arc<OwnedFd>>,
}

impl KillSwitch {
    /// The switch for the child `pid` (with its pidfd, if any), killed
    /// with SIGTERM and SIGKILL after `grace` (at once with no grace).
    pub(crate) fn new(
        pid: Option<Pid>,
        pidfd: Option<Arc<OwnedFd>>,
        grace: Duration,
    ) -> KillSwitch {
        KillSwitch {
            pid: Mutex::new(pid),
            grace,
            pidfd,
        }
    }

    /// The child's pidfd, if the kernel has them.
    pub(crate) fn pidfd(&self) -> Option<&Arc<OwnedFd>> {
        self.pidfd.as_ref()
    }

    /// Waits until `deadline` (`None`: as long as it takes) for the child
    /// to exit ([`await_exit_of`] its pidfd), without reaping it; whether
    /// it has exited (or been reaped). `false` at once without a pidfd,
    /// or if `poll` fails.
    pub(crate) fn await_exit(&self, deadline: Option<std::time::Instant>) -> bool {
        self.pidfd
            .as_ref()
            .is_some_and(|pidfd| await_exit_of(pidfd, deadline).unwrap_or(false))
    }

    /// Ends the child: SIGKILL, or SIGTERM and SIGKILL after the grace.
    pub(crate) fn kill(self: &Arc<Self>) {
        if self.grace.is_zero() {
            self.signal(Signal::KILL);
            return;
        }
        self.signal(Signal::TERM);
        let this = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("isolates-kill".into())
            .spawn(move || {
                std::thread::sleep(this.grace);
                this.signal(Signal::KILL);
            });
        if spawned.is_err() {
            self.signal(Signal::KILL);
        }
    }

    /// Whether [`kill`](Self::kill) sends SIGKILL at once (no grace).
    pub(crate) fn kills_at_once(&self) -> bool {
        self.grace.is_zero()
    }

    /// Sends `signal` to the child unless it has been reaped.
    pub(crate) fn signal(&self, signal: Signal) {
        if let Some(pid) = *self.pid.lock() {
            // A child that exited but is not reaped yet is a zombie: the
            // signal does nothing, and its pid cannot have been reused.
            // Its group (the child leads one of its own: what it started
            // goes with it), and the child itself, should it have left it.
            let _ = rustix::process::kill_process_group(pid, signal);
            let _ = rustix::process::kill_process(pid, signal);
        }
    }
}

/// Waits until `deadline` (`None`: as long as it takes) for the child of
/// `pidfd` to exit, parked in `poll` on the pidfd (the exit wakes this
/// thread itself; an interrupted `poll` is taken up again): whether it
/// has exited (or been reaped), `false` at the deadline.
///
/// # Errors
///
/// The error of a failed `poll` (not retried: no spin).
pub(crate) fn await_exit_of(
    pidfd: &OwnedFd,
    deadline: Option<std::time::Instant>,
) -> rustix::io::Result<bool> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    loop {
        let wait = deadline.map(|deadline| {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            Timespec {
                tv_sec: left.as_secs().min(i64::MAX as u64) as i64,
                tv_nsec: i64::from(left.subsec_nanos()),
            }
        });
        let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
        match poll(&mut fds, wait.as_ref()) {
            Ok(n) => return Ok(n > 0),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// What reaping a child through its pidfd came to.
pub(crate) enum Reap {
    /// Reaped here: how it ended.
    Reaped(rustix::process::WaitIdStatus),
    /// It has not exited.
    Running,
    /// Someone else reaped it.
    Gone,
    /// `waitid` failed.
    Failed(rustix::io::Errno),
}

/// Reaps the child if it has exited, without waiting. Under the kill
/// switch's lock: once reaped, its pid is never signalled (it may be
/// reused), and of the owner and the reaper exactly one reaps.
pub(crate) fn reap(kill: &KillSwitch, pidfd: &OwnedFd) -> Reap {
    use rustix::process::{WaitId, WaitIdOptions, waitid};
    let mut pid = kill.pid.lock();
    if pid.is_none() {
        return Reap::Gone;
    }
    match waitid(
        WaitId::PidFd(pidfd.as_fd()),
        WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
    ) {
        Ok(Some(status)) => {
            *pid = None;
            Reap::Reaped(status)
        }
        Ok(None) => Reap::Running,
        Err(e) => Reap::Failed(e),
    }
}

/// A child to watch until it exits.
pub(crate) struct Watch {
    /// The child, its stderr piped (or not).
    pub(crate) child: Child,
    pub(crate) kill: Arc<KillSwitch>,
    /// Its pidfd (`None` on a kernel without them).
    pub(crate) pidfd: Option<Arc<OwnedFd>>,
    /// Its memory limit: an abort under it that says so is out of memory.
    pub(crate) max_memory: Option<u64>,
    pub(crate) on_exit: OnExit,
}

/// How much of a child's stderr is kept to tell how it died.
const KEEP: usize = 8 << 10;

/// How many reads of what is left in a child's stderr pipe once it has
/// exited (a grandchild may keep writing to it: not waited for).
const DRAIN_READS: usize = 64;

/// The shared reaper.
struct Shared {
    /// Every watched child's pidfd and stderr pipe, each with its token:
    /// the child's number times two, plus one for its stderr.
    epoll: OwnedFd,
    /// Children added and not yet taken by the reaper thread, with their
    /// numbers: a child is put here before it is added to the set.
    incoming: Mutex<Vec<(u64, Watched)>>,
    /// The next child's number.
    next: AtomicU64,
}

/// The reaper, once started.
static REAPER: OnceLock<Shared> = OnceLock::new();

/// Held while the reaper is started.
static STARTING: Mutex<()> = Mutex::new(());

/// Makes sure the reaper runs (before a child is started, so that a child
/// is never left without one).
///
/// # Errors
///
/// Why it could not be started: no epoll set, or no thread.
pub(crate) fn ensure() -> Result<(), Crash> {
    started().map(drop)
}

fn started() -> Result<&'static Shared, Crash> {
    if let Some(shared) = REAPER.get() {
        return Ok(shared);
    }
    let _starting = STARTING.lock();
    if let Some(shared) = REAPER.get() {
        return Ok(shared);
    }
    let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)
        .map_err(|e| Crash::Spawn(format!("no epoll set for the reaper thread: {e}")))?;
    let shared = Shared {
        epoll,
        incoming: Mutex::new(Vec::new()),
        next: AtomicU64::new(0),
    };
    // The thread is started before the set is published: a failed start
    // leaves nothing behind, and is tried again by the next child.
    std::thread::Builder::new()
        .name("isolates-reaper".into())
        .spawn(|| run(REAPER.wait()))
        .map_err(|e| Crash::Spawn(format!("no reaper thread: {e}")))?;
    Ok(REAPER.get_or_init(|| shared))
}

/// A child's token in the epoll set: its pidfd's (even) or its stderr's
/// (odd).
fn token(number: u64, stderr: bool) -> epoll::EventData {
    epoll::EventData::new_u64(number << 1 | u64::from(stderr))
}

/// Hands a child to the reaper: it passes the child's stderr on, reaps it
/// once it exits, and calls `on_exit` with how it died (unless its owner
/// reaped it).
///
/// With a pidfd the child is added to the reaper's epoll set here, on the
/// caller's thread: the reaper is not woken for it.
///
/// # Errors
///
/// The child could not be watched (no reaper, no room in its epoll set, or
/// no thread for it): it has been killed (and reaped, with a pidfd).
pub(crate) fn watch(mut watch: Watch) -> Result<(), Crash> {
    let stderr = watch.child.stderr.take();
    let Some(pidfd) = watch.pidfd.take() else {
        return watch_alone(watch, stderr);
    };
    if let Some(stderr) = &stderr {
        // Read only as far as it has been written: one child's pipe never
        // holds up the others.
        let _ = rustix::io::ioctl_fionbio(stderr, true);
    }
    let watched = Watched {
        stderr,
        pidfd,
        kill: watch.kill,
        max_memory: watch.max_memory,
        tail: Vec::new(),
        on_exit: Some(watch.on_exit),
    };
    let shared = match started() {
        Ok(shared) => shared,
        Err(crash) => {
            watched.kill_and_reap();
            return Err(crash);
        }
    };
    let number = shared.next.fetch_add(1, Ordering::Relaxed);
    let mut incoming = shared.incoming.lock();
    // Registered first, then added to the set: the reaper finds every child
    // that it hears of. Under the lock, so that a child that cannot be
    // added is taken back before the reaper can take it.
    incoming.push((number, watched));
    let added = incoming.last().map_or(Ok(()), |(_, child)| {
        if let Some(stderr) = &child.stderr {
            epoll::add(
                &shared.epoll,
                stderr,
                token(number, true),
                epoll::EventFlags::IN,
            )?;
        }
        epoll::add(
            &shared.epoll,
            &*child.pidfd,
            token(number, false),
            epoll::EventFlags::IN,
        )
    });
    let Err(e) = added else {
        return Ok(());
    };
    if let Some((_, mut child)) = incoming.pop() {
        drop(incoming);
        child.close_stderr(&shared.epoll);
        child.kill_and_reap();
    }
    Err(Crash::Spawn(format!("the child could not be watched: {e}")))
}

/// A child the reaper watches.
struct Watched {
    /// `None` once closed (the child closed it, or exited).
    stderr: Option<ChildStderr>,
    pidfd: Arc<OwnedFd>,
    kill: Arc<KillSwitch>,
    max_memory: Option<u64>,
    /// The end of its stderr.
    tail: Vec<u8>,
    on_exit: Option<OnExit>,
}

impl Watched {
    /// Reads what its stderr has (`reads` times at most) and passes it on;
    /// the pipe is taken out of the set and closed at its end.
    fn read_stderr(&mut self, epoll: &OwnedFd, reads: usize) {
        let mut buf = [0u8; 4096];
        for _ in 0..reads {
            let Some(stderr) = &mut self.stderr else {
                return;
            };
            match stderr.read(&mut buf) {
                Ok(0) => self.close_stderr(epoll),
                Ok(n) => forward(&mut self.tail, &buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => self.close_stderr(epoll),
            }
        }
    }

    /// Takes its stderr out of the set and closes it. Taken out first: a
    /// closed descriptor stays in the set while a copy of it lives (in a
    /// child forked meanwhile that has not yet exec'd).
    fn close_stderr(&mut self, epoll: &OwnedFd) {
        if let Some(stderr) = self.stderr.take() {
            let _ = epoll::delete(epoll, &stderr);
        }
    }

    /// It has exited (its pidfd says so): what is left of its stderr is
    /// passed on, and it is reaped. Whether it is done with (reaped here or
    /// by its owner): then its pidfd is out of the set (its owner may keep
    /// it open, and an exited child's pidfd stays readable).
    fn exited(&mut self, epoll: &OwnedFd) -> bool {
        self.read_stderr(epoll, DRAIN_READS);
        self.close_stderr(epoll);
        let crash = match reap(&self.kill, &self.pidfd) {
            Reap::Reaped(status) => Some(classify(
                status.terminating_signal(),
                status.exit_status(),
                self.max_memory,
                &String::from_utf8_lossy(&self.tail),
            )),
            // Its owner reaped it, and knows why it ended.
            Reap::Gone => None,
            Reap::Failed(e) => Some(Crash::Protocol(format!(
                "the child could not be reaped: {e}"
            ))),
            Reap::Running => return false,
        };
        let _ = epoll::delete(epoll, &*self.pidfd);
        if let (Some(crash), Some(on_exit)) = (crash, self.on_exit.take()) {
            on_exit(crash);
        }
        true
    }

    /// Kills a child that could not be watched, and reaps it.
    fn kill_and_reap(&self) {
        use rustix::process::{WaitId, WaitIdOptions, waitid};
        let mut pid = self.kill.pid.lock();
        let Some(alive) = *pid else {
            return;
        };
        let _ = rustix::process::kill_process(alive, Signal::KILL);
        loop {
            match waitid(WaitId::PidFd(self.pidfd.as_fd()), WaitIdOptions::EXITED) {
                Err(rustix::io::Errno::INTR) => {}
                Ok(_) => {
                    *pid = None;
                    return;
                }
                Err(_) => return,
            }
        }
    }
}

/// Passes bytes of a child's stderr on to ours, and keeps its end.
fn forward(tail: &mut Vec<u8>, bytes: &[u8]) {
    let _ = std::io::stderr().write_all(bytes);
    tail.extend_from_slice(bytes);
    if tail.len() > 2 * KEEP {
        tail.drain(..tail.len() - KEEP);
    }
}

/// The reaper's loop: never ends.
fn run(shared: &Shared) {
    // The children it has taken, by number.
    let mut watched: HashMap<u64, Watched> = HashMap::new();
    let mut events: Vec<epoll::Event> = Vec::with_capacity(64);
    loop {
        events.clear();
        match epoll::wait(
            &shared.epoll,
            rustix::buffer::spare_capacity(&mut events),
            None,
        ) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => {
                // Out of memory, say: try again shortly rather than spin.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        }
        for event in &events {
            let data = event.data;
            let (number, stderr) = (data.u64() >> 1, data.u64() & 1 == 1);
            if !watched.contains_key(&number) {
                watched.extend(shared.incoming.lock().drain(..));
            }
            // None: done with earlier in this batch.
            let Some(child) = watched.get_mut(&number) else {
                continue;
            };
            if stderr {
                child.read_stderr(&shared.epoll, 1);
            } else if child.exited(&shared.epoll) {
                watched.remove(&number);
            }
        }
        if watched.capacity() > 64 && watched.len() < watched.capacity() / 4 {
            watched.shrink_to_fit();
        }
    }
}

/// A child on a kernel without pidfds: a thread of its own forwards its
/// stderr to the end, then waits for it.
fn watch_alone(watch: Watch, stderr: Option<ChildStderr>) -> Result<(), Crash> {
    let Watch {
        mut child,
        kill,
        max_memory,
        on_exit,
        ..
    } = watch;
    let on_thread = Arc::clone(&kill);
    let spawned = std::thread::Builder::new()
        .name("isolates-reaper".into())
        .spawn(move || {
            let mut tail = Vec::new();
            if let Some(mut stderr) = stderr {
                let mut buf = [0u8; 4096];
                loop {
                    match stderr.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => forward(&mut tail, &buf[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            }
            let status = child.wait();
            *on_thread.pid.lock() = None;
            on_exit(match status {
                Ok(status) => classify(
                    status.signal(),
                    status.code(),
                    max_memory,
                    &String::from_utf8_lossy(&tail),
                ),
                Err(e) => Crash::Protocol(format!("the child could not be reaped: {e}")),
            });
        });
    spawned.map(drop).map_err(|e| {
        // The child went with the closure: it is killed, and reaped by
        // init once we exit.
        kill.signal(Signal::KILL);
        Crash::Spawn(format!("no reaper thread: {e}"))
    })
}

const SIGABRT: i32 = 6;

/// How a child that ended with `signal` or exit `code` died (`tail`: the
/// end of its stderr; `max_memory`: its limit).
fn classify(signal: Option<i32>, code: Option<i32>, max_memory: Option<u64>, tail: &str) -> Crash {
    match (signal, code) {
        (Some(SIGABRT), _) => {
            // Rust aborts on a failed allocation and on a stack overflow,
            // after saying which on stderr.
            match max_memory {
                Some(limit) if tail.contains("memory allocation of") => {
                    Crash::OutOfMemory { limit }
                }
                _ if tail.contains("has overflowed its stack") => Crash::StackOverflow,
                _ => Crash::Signal(SIGABRT),
            }
        }
        (Some(signal), _) => Crash::Signal(signal),
        (None, Some(code)) => Crash::Exit(code),
        (None, None) => {
            Crash::Protocol("an exit status that is neither a code nor a signal".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};
    use std::time::Instant;

    use crossbeam_channel as cb;

    use super::*;

    const T: Duration = Duration::from_secs(10);

    /// The reaper is one per process: its tests take turns.
    static TURN: Mutex<()> = Mutex::new(());

    fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + T;
        while !cond() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// A started child, watched by the reaper.
    struct Started {
        pid: u32,
        kill: Arc<KillSwitch>,
        pidfd: Arc<OwnedFd>,
    }

    /// Starts `sh -c script`, its stderr piped, and hands it to the reaper,
    /// which sends its pid and how it died on `tx`.
    fn start(script: &str, max_memory: Option<u64>, tx: &cb::Sender<(u32, Crash)>) -> Started {
        let child = Command::new("/bin/sh")
            .args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sh");
        let pid = child.id();
        let raw = Pid::from_raw(pid as i32);
        let pidfd = Arc::new(
            rustix::process::pidfd_open(raw.expect("a pid"), rustix::process::PidfdFlags::empty())
                .expect("pidfds (Linux 5.3)"),
        );
        let kill = Arc::new(KillSwitch::new(
            raw,
            Some(Arc::clone(&pidfd)),
            Duration::ZERO,
        ));
        let tx = tx.clone();
        watch(Watch {
            child,
            kill: Arc::clone(&kill),
            pidfd: Some(Arc::clone(&pidfd)),
            max_memory,
            on_exit: Box::new(move |crash| {
                let _ = tx.send((pid, crash));
            }),
        })
        .expect("watched");
        Started { pid, kill, pidfd }
    }

    /// The reaper thread's id.
    fn reaper_thread() -> u32 {
        std::fs::read_dir("/proc/self/task")
            .expect("/proc")
            .flatten()
            .find(|task| {
                std::fs::read_to_string(task.path().join("comm"))
                    .is_ok_and(|comm| comm.trim_end() == "isolates-reaper")
            })
            .and_then(|task| task.file_name().to_str()?.parse().ok())
            .expect("a reaper thread")
    }

    /// The reaper thread's context switches, and whether it is asleep.
    fn reaper_switches(tid: u32) -> (u64, bool) {
        let task = format!("/proc/self/task/{tid}");
        let status = std::fs::read_to_string(format!("{task}/status")).expect("status");
        let switches = status
            .lines()
            .filter(|line| line.contains("ctxt_switches:"))
            .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        let stat = std::fs::read_to_string(format!("{task}/stat")).expect("stat");
        let asleep = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('S'));
        (switches, asleep)
    }

    /// Whether `pid` is gone, or is no longer our child (reused).
    fn gone(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    != Some(std::process::id())
            }
        }
    }

    /// Collects how `n` children died, by pid.
    fn deaths(rx: &cb::Receiver<(u32, Crash)>, n: usize) -> HashMap<u32, Crash> {
        (0..n)
            .map(|_| rx.recv_timeout(T).expect("every child's exit reported"))
            .collect()
    }

    #[test]
    fn children_added_while_the_reaper_waits_do_not_wake_it_and_are_all_reaped() {
        let _turn = TURN.lock();
        let (tx, rx) = cb::unbounded();
        // The reaper runs, has seen a child out, and is back asleep.
        let first = start("exit 0", None, &tx);
        assert_eq!(deaths(&rx, 1)[&first.pid], Crash::Exit(0));
        let tid = reaper_thread();
        assert!(wait_until(|| reaper_switches(tid).1), "the reaper sleeps");
        let (before, _) = reaper_switches(tid);
        let sleepers: Vec<Started> = (0..16).map(|_| start("exec sleep 30", None, &tx)).collect();
        let (after, asleep) = reaper_switches(tid);
        assert!(
            after - before <= 1 && asleep,
            "adding 16 children woke the reaper {} times",
            after - before
        );
        // All of them are its: each one's death is seen, and each is reaped.
        for sleeper in &sleepers {
            sleeper.kill.kill();
        }
        let died = deaths(&rx, sleepers.len());
        for sleeper in &sleepers {
            assert_eq!(died[&sleeper.pid], Crash::Signal(9));
            assert!(wait_until(|| gone(sleeper.pid)), "{} reaped", sleeper.pid);
            // Reaped: its pid is never signalled again.
            assert!(sleeper.kill.pid.lock().is_none());
        }
        // Children that exit at once, each its own way.
        let quick: Vec<(i32, Started)> = (1..=16)
            .map(|code| (code, start(&format!("exit {code}"), None, &tx)))
            .collect();
        let died = deaths(&rx, quick.len());
        for (code, child) in &quick {
            assert_eq!(died[&child.pid], Crash::Exit(*code));
            assert!(wait_until(|| gone(child.pid)), "{} reaped", child.pid);
        }
    }

    #[test]
    fn the_end_of_a_childs_stderr_tells_how_it_died() {
        let _turn = TURN.lock();
        let (tx, rx) = cb::unbounded();
        let abort = "kill -ABRT $$";
        let oom = start(
            &format!("echo 'memory allocation of 64 bytes failed' >&2; {abort}"),
            Some(1 << 30),
            &tx,
        );
        let overflow = start(
            &format!("echo 'thread has overflowed its stack' >&2; {abort}"),
            None,
            &tx,
        );
        let plain = start(abort, None, &tx);
        let died = deaths(&rx, 3);
        assert_eq!(died[&oom.pid], Crash::OutOfMemory { limit: 1 << 30 });
        assert_eq!(died[&overflow.pid], Crash::StackOverflow);
        assert_eq!(died[&plain.pid], Crash::Signal(6));
    }

    #[test]
    fn a_kill_switch_waits_for_its_childs_exit_and_leaves_the_reaping() {
        let _turn = TURN.lock();
        let (tx, rx) = cb::unbounded();
        let child = start("exec sleep 30", None, &tx);
        // Running: the wait ends at its deadline, saying so.
        let short = Duration::from_millis(50);
        let from = Instant::now();
        assert!(!child.kill.await_exit(Some(from + short)));
        assert!(from.elapsed() >= short);
        assert!(!gone(child.pid));
        child.kill.kill();
        assert!(
            child.kill.await_exit(Some(Instant::now() + T)),
            "its exit ends the wait"
        );
        // It reaped nothing: the reaper did, and says how the child died.
        assert_eq!(deaths(&rx, 1)[&child.pid], Crash::Signal(9));
        assert!(wait_until(|| gone(child.pid)));
        // Reaped, it still reads as exited; without a pidfd, never.
        assert!(child.kill.await_exit(Some(Instant::now())));
        let blind = KillSwitch::new(None, None, Duration::ZERO);
        assert!(!blind.await_exit(None));
    }

    #[test]
    fn of_the_owner_and_the_reaper_one_reaps_and_the_reaper_lets_go() {
        let _turn = TURN.lock();
        let (tx, rx) = cb::unbounded();
        let child = start("exec sleep 30", None, &tx);
        child.kill.signal(Signal::KILL);
        let mut reaped_here = false;
        assert!(wait_until(|| match reap(&child.kill, &child.pidfd) {
            Reap::Reaped(_) => {
                reaped_here = true;
                true
            }
            Reap::Gone => true,
            Reap::Running => false,
            Reap::Failed(e) => panic!("waitid failed: {e}"),
        }));
        // The reaper is done with it: it holds its pidfd no longer (the
        // test and the kill switch do), nor the switch.
        assert!(wait_until(
            || Arc::strong_count(&child.pidfd) == 2 && Arc::strong_count(&child.kill) == 1
        ));
        let reported = rx.try_recv().ok();
        assert_eq!(
            reported.is_some(),
            !reaped_here,
            "the reaper reports the exit exactly when it reaped"
        );
        assert!(gone(child.pid));
        // The owner's pidfd of the reaped child stays readable: the reaper,
        // which has taken it out of its set, is not woken by it.
        let tid = reaper_thread();
        assert!(wait_until(|| reaper_switches(tid).1), "the reaper sleeps");
        let (before, _) = reaper_switches(tid);
        // A window to count its wake-ups in (as tests/idle.rs does).
        std::thread::sleep(Duration::from_millis(200));
        let (after, _) = reaper_switches(tid);
        assert!(
            after - before <= 1,
            "the reaper woke {} times",
            after - before
        );
    }
}
