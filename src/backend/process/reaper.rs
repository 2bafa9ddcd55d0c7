//! Reaping children and passing their stderr on: one thread for all of
//! them, lazily started, blocked in `poll` over every child's pidfd and
//! stderr pipe (and a wake-up for new children), with no timeout: it wakes
//! only when a child writes to its stderr, exits, or is added.
//!
//! A child's pid is signalled only through its [`KillSwitch`], which
//! forgets the pid under its lock when the child is reaped: a pid that may
//! have been reused is never signalled. The owner of a child may reap it
//! itself (it stopped it and waits for its exit): of the owner and the
//! reaper exactly one reaps, under that lock.
//!
//! On a kernel without pidfds (before Linux 5.3) a child gets a thread of
//! its own that forwards its stderr to the end and then waits for it.
//!
//! A child's stderr is passed on to ours with a blocking write: a parent
//! whose own stderr blocks (a full pipe that nobody reads) holds the reaper
//! up, and with it the news of every child's exit (an owner that stops its
//! child still reaps it itself).

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStderr};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rustix::event::{EventfdFlags, PollFd, PollFlags, poll};
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
}

impl KillSwitch {
    /// The switch for the child `pid`, killed with SIGTERM and SIGKILL
    /// after `grace` (at once with no grace).
    pub(crate) fn new(pid: Option<Pid>, grace: Duration) -> KillSwitch {
        KillSwitch {
            pid: Mutex::new(pid),
            grace,
        }
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

    /// Sends `signal` to the child unless it has been reaped.
    pub(crate) fn signal(&self, signal: Signal) {
        if let Some(pid) = *self.pid.lock() {
            // A child that exited but is not reaped yet is a zombie: the
            // signal does nothing, and its pid cannot have been reused.
            let _ = rustix::process::kill_process(pid, signal);
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

/// The shared reaper: children to add, and how to wake it up for them.
struct Shared {
    incoming: Mutex<Vec<Watched>>,
    /// An eventfd: written when a child is added.
    wake: OwnedFd,
}

/// The reaper, once started.
static REAPER: Mutex<Option<Arc<Shared>>> = Mutex::new(None);

/// Makes sure the reaper runs (before a child is started, so that a child
/// is never left without one).
///
/// # Errors
///
/// Why it could not be started: no eventfd, or no thread.
pub(crate) fn ensure() -> Result<(), Crash> {
    started().map(drop)
}

fn started() -> Result<Arc<Shared>, Crash> {
    let mut reaper = REAPER.lock();
    if let Some(shared) = &*reaper {
        return Ok(Arc::clone(shared));
    }
    let wake = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
        .map_err(|e| Crash::Spawn(format!("no eventfd for the reaper thread: {e}")))?;
    let shared = Arc::new(Shared {
        incoming: Mutex::new(Vec::new()),
        wake,
    });
    let on_thread = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("isolates-reaper".into())
        .spawn(move || run(&on_thread))
        .map_err(|e| Crash::Spawn(format!("no reaper thread: {e}")))?;
    *reaper = Some(Arc::clone(&shared));
    Ok(shared)
}

/// Hands a child to the reaper: it passes the child's stderr on, reaps it
/// once it exits, and calls `on_exit` with how it died (unless its owner
/// reaped it).
///
/// # Errors
///
/// The child could not be watched (no thread for it): it has been killed.
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
            watched.kill.signal(Signal::KILL);
            return Err(crash);
        }
    };
    shared.incoming.lock().push(watched);
    let _ = rustix::io::write(&shared.wake, &1u64.to_ne_bytes());
    Ok(())
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
    /// Reads what its stderr has (`reads` times at most), passes it on,
    /// and closes the pipe at its end.
    fn read_stderr(&mut self, reads: usize) {
        let mut buf = [0u8; 4096];
        for _ in 0..reads {
            let Some(stderr) = &mut self.stderr else {
                return;
            };
            match stderr.read(&mut buf) {
                Ok(0) => self.stderr = None,
                Ok(n) => forward(&mut self.tail, &buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => self.stderr = None,
            }
        }
    }

    /// It has exited (its pidfd says so): what is left of its stderr is
    /// passed on, and it is reaped. Whether it is done with (reaped here or
    /// by its owner).
    fn exited(&mut self) -> bool {
        self.read_stderr(DRAIN_READS);
        self.stderr = None;
        let crash = match reap(&self.kill, &self.pidfd) {
            Reap::Reaped(status) => classify(
                status.terminating_signal(),
                status.exit_status(),
                self.max_memory,
                &String::from_utf8_lossy(&self.tail),
            ),
            // Its owner reaped it, and knows why it ended.
            Reap::Gone => return true,
            Reap::Failed(e) => Crash::Protocol(format!("the child could not be reaped: {e}")),
            Reap::Running => return false,
        };
        if let Some(on_exit) = self.on_exit.take() {
            on_exit(crash);
        }
        true
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
    let mut watched: Vec<Watched> = Vec::new();
    // Per child: whether its stderr is readable, whether it has exited.
    let mut ready: Vec<(bool, bool)> = Vec::new();
    loop {
        let woken = {
            let mut fds = Vec::with_capacity(1 + 2 * watched.len());
            fds.push(PollFd::new(&shared.wake, PollFlags::IN));
            for child in &watched {
                if let Some(stderr) = &child.stderr {
                    fds.push(PollFd::new(stderr, PollFlags::IN));
                }
                fds.push(PollFd::new(&*child.pidfd, PollFlags::IN));
            }
            match poll(&mut fds, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => {
                    // Out of memory for the poll set, say: try again
                    // shortly rather than spin.
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
            ready.clear();
            let mut at = 1;
            for child in &watched {
                let readable = child.stderr.is_some() && {
                    at += 1;
                    !fds[at - 1].revents().is_empty()
                };
                let exited = !fds[at].revents().is_empty();
                at += 1;
                ready.push((readable, exited));
            }
            !fds[0].revents().is_empty()
        };
        let mut i = 0;
        watched.retain_mut(|child| {
            let (readable, exited) = ready[i];
            i += 1;
            if readable {
                child.read_stderr(1);
            }
            !(exited && child.exited())
        });
        if woken {
            let mut count = [0u8; 8];
            let _ = rustix::io::read(&shared.wake, &mut count);
            watched.append(&mut shared.incoming.lock());
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
