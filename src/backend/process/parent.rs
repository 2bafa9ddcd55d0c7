//! The parent's side of a child process: spawn it, read its frames on a
//! thread of their own, kill it, reap it, and say how it died.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel as cb;
use parking_lot::Mutex;
use rustix::process::{Pid, Signal};

use super::frame::{self, Kind, ReadError};
use super::{ENV_CHILD, ENV_MAX_MEMORY};
use crate::isolate::{Crash, ExitReason};
use crate::process::ProcessOptions;

/// What the reader thread passes on.
pub(crate) enum Incoming {
    /// A frame other than `Exited`.
    Frame(Kind, Vec<u8>),
    /// The child's isolate exited (it stopped itself, or `start` failed).
    Exited(ExitReason),
    /// The child is gone (reaped): how it died.
    Gone(Crash),
}

/// Called from the reader thread when the child says its isolate exited, or
/// when the child is gone: the owner wakes up even while idle.
pub(crate) type OnExit = Box<dyn Fn(ExitReason) + Send + Sync>;

/// Kills a child; shared with whoever may kill it (a handle's immediate
/// kill) while the reader thread reaps it.
pub(crate) struct KillSwitch {
    /// `None` once reaped: a pid is never signalled after it may have been
    /// reused.
    pid: Mutex<Option<Pid>>,
    grace: Duration,
}

impl KillSwitch {
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

    fn signal(&self, signal: Signal) {
        if let Some(pid) = *self.pid.lock() {
            // A child that exited but is not reaped yet is a zombie: the
            // signal does nothing, and its pid cannot have been reused.
            let _ = rustix::process::kill_process(pid, signal);
        }
    }
}

/// A running child process, as its parent sees it.
pub(crate) struct ChildProcess {
    writer: UnixStream,
    incoming: cb::Receiver<Incoming>,
    kill: Arc<KillSwitch>,
}

impl ChildProcess {
    /// Starts the current executable again as a child, with `test_entry`
    /// arguments when it is a test binary.
    pub(crate) fn spawn(
        options: &ProcessOptions,
        test_entry: Option<&str>,
        limit: usize,
        on_exit: OnExit,
    ) -> Result<ChildProcess, Crash> {
        let (ours, theirs) = UnixStream::pair()
            .map_err(|e| Crash::Spawn(format!("no socket pair for the child: {e}")))?;
        let mut command = match &options.program {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args);
                command
            }
            None => {
                let exe = std::env::current_exe()
                    .map_err(|e| Crash::Spawn(format!("the current executable is unknown: {e}")))?;
                let mut command = Command::new(exe);
                if let Some(test) = test_entry {
                    command.args([
                        test,
                        "--exact",
                        "--nocapture",
                        "--quiet",
                        "--test-threads=1",
                    ]);
                }
                command
            }
        };
        command
            .env(ENV_CHILD, std::process::id().to_string())
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stderr(Stdio::piped());
        if let Some(bytes) = options.max_memory {
            command.env(ENV_MAX_MEMORY, bytes.to_string());
            // glibc reserves 64 MiB of address space per thread arena: under
            // an address-space limit that would be most of a small one.
            if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
                command.env("MALLOC_ARENA_MAX", "2");
            }
        }
        let mut child = command.spawn().map_err(|e| Crash::Spawn(format!("{e}")))?;
        let pid = Pid::from_raw(child.id() as i32);
        let kill = Arc::new(KillSwitch {
            pid: Mutex::new(pid),
            grace: options.kill_grace,
        });
        let stderr = child.stderr.take().map(forward_stderr);
        let reader = ours
            .try_clone()
            .map_err(|e| Crash::Spawn(format!("the socket could not be shared: {e}")));
        let reader = match reader {
            Ok(reader) => reader,
            Err(e) => {
                kill.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let (tx, incoming) = cb::unbounded();
        let reaper = Reaper {
            child,
            kill: Arc::clone(&kill),
            stderr,
            max_memory: options.max_memory,
        };
        let frame_limit = limit.saturating_add(frame::OVERHEAD);
        let spawned = std::thread::Builder::new()
            .name("isolates-child-reader".into())
            .spawn(move || read_loop(reader, frame_limit, tx, reaper, on_exit));
        if let Err(e) = spawned {
            // The reaper went with the closure: kill by pid, the child
            // exits and is reaped by init when we exit.
            kill.kill();
            return Err(Crash::Spawn(format!("no reader thread: {e}")));
        }
        Ok(ChildProcess {
            writer: ours,
            incoming,
            kill,
        })
    }

    /// The switch that kills this child.
    pub(crate) fn kill_switch(&self) -> Arc<KillSwitch> {
        Arc::clone(&self.kill)
    }

    /// Sends a frame; a failed write means the child is going away (its
    /// reader reports how).
    pub(crate) fn send(&mut self, kind: Kind, parts: &[&[u8]]) -> bool {
        frame::write(&mut self.writer, kind, parts).is_ok()
    }

    /// The next frame or the child's end, waiting at most until `deadline`.
    pub(crate) fn next(&self, deadline: Option<Instant>) -> Option<Incoming> {
        match deadline {
            None => self.incoming.recv().ok(),
            Some(deadline) => self.incoming.recv_deadline(deadline).ok(),
        }
    }

    /// Asks the child to stop, waits up to the grace for it to go, then
    /// kills it; returns once it is reaped (or `wait` passed).
    pub(crate) fn stop(mut self, grace: Duration) {
        let _ = frame::write(&mut self.writer, Kind::Stop, &[]);
        let deadline = Instant::now() + grace;
        loop {
            match self.incoming.recv_deadline(deadline) {
                Ok(Incoming::Gone(_)) | Err(cb::RecvTimeoutError::Disconnected) => return,
                Ok(Incoming::Frame(..) | Incoming::Exited(_)) => {}
                Err(cb::RecvTimeoutError::Timeout) => break,
            }
        }
        self.kill.signal(Signal::KILL);
        let _ = self.incoming.recv_timeout(Duration::from_secs(5));
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // Closing our end tells the child to go; the reader reaps it.
        let _ = self.writer.shutdown(std::net::Shutdown::Both);
    }
}

/// Reaps the child and works out how it died.
struct Reaper {
    child: Child,
    kill: Arc<KillSwitch>,
    stderr: Option<cb::Receiver<String>>,
    max_memory: Option<u64>,
}

impl Reaper {
    /// Kills the child if it still runs (it closed or broke its channel, or
    /// we did), and reaps it.
    fn reap(&mut self, force: bool) -> Option<ExitStatus> {
        if force {
            self.kill.signal(Signal::KILL);
        }
        // A child that closed its channel without exiting would keep us
        // waiting: give it a moment, then kill it.
        let deadline = Instant::now() + Duration::from_secs(2);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Ok(None) => {
                    self.kill.signal(Signal::KILL);
                    break self.child.wait().ok();
                }
                Err(_) => break None,
            }
        };
        *self.kill.pid.lock() = None;
        status
    }

    fn classify(mut self, broken: Option<String>) -> Crash {
        let status = self.reap(broken.is_some());
        if let Some(why) = broken {
            return Crash::Protocol(why);
        }
        let Some(status) = status else {
            return Crash::Protocol("the child could not be reaped".into());
        };
        match (status.signal(), status.code()) {
            (Some(SIGABRT), _) => {
                // Rust aborts on a failed allocation and on a stack overflow,
                // after saying which on stderr: read what it said (the pipe
                // closes as the child exits; a grandchild holding it open
                // costs at most the timeout).
                let tail = self
                    .stderr
                    .take()
                    .and_then(|rx| rx.recv_timeout(Duration::from_secs(2)).ok())
                    .unwrap_or_default();
                match self.max_memory {
                    Some(limit) if tail.contains("memory allocation of") => {
                        Crash::OutOfMemory { limit }
                    }
                    _ if tail.contains("has overflowed its stack") => Crash::StackOverflow,
                    _ => Crash::Signal(SIGABRT),
                }
            }
            (Some(signal), _) => Crash::Signal(signal),
            (None, Some(code)) => Crash::Exit(code),
            (None, None) => Crash::Protocol(format!("unknown exit status {status}")),
        }
    }
}

const SIGABRT: i32 = 6;

/// Reads frames until the child goes; then reaps it and says how it died.
fn read_loop(
    mut socket: UnixStream,
    limit: usize,
    tx: cb::Sender<Incoming>,
    reaper: Reaper,
    on_exit: OnExit,
) {
    let broken = loop {
        match frame::read(&mut socket, limit) {
            Ok((Kind::Exited, body)) => match super::decode_reason(&body) {
                Some(reason) => {
                    let _ = tx.send(Incoming::Exited(reason.clone()));
                    on_exit(reason);
                }
                None => break Some("an exit frame that does not decode".to_string()),
            },
            Ok((kind @ (Kind::Start | Kind::Ask | Kind::Cast | Kind::Stop), _)) => {
                break Some(format!("a {kind:?} frame, which only a parent sends"));
            }
            Ok((kind, body)) => {
                let _ = tx.send(Incoming::Frame(kind, body));
            }
            Err(ReadError::Closed) => break None,
            Err(e @ (ReadError::Malformed(_) | ReadError::TooLarge { .. })) => {
                break Some(e.to_string());
            }
            Err(ReadError::Io(e)) => break Some(format!("the channel failed: {e}")),
        }
    };
    let crash = reaper.classify(broken);
    let _ = tx.send(Incoming::Gone(crash.clone()));
    on_exit(ExitReason::Crashed(crash));
}

/// Copies the child's stderr to ours and keeps its last few KiB, sent on
/// the returned channel when the child closes it.
fn forward_stderr(mut stderr: impl Read + Send + 'static) -> cb::Receiver<String> {
    const KEEP: usize = 8 << 10;
    let (tx, rx) = cb::bounded(1);
    let spawned = std::thread::Builder::new()
        .name("isolates-child-stderr".into())
        .spawn(move || {
            let mut tail: Vec<u8> = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match stderr.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let _ = std::io::stderr().write_all(&buf[..n]);
                        tail.extend_from_slice(&buf[..n]);
                        if tail.len() > 2 * KEEP {
                            tail.drain(..tail.len() - KEEP);
                        }
                    }
                }
            }
            let _ = tx.send(String::from_utf8_lossy(&tail).into_owned());
        });
    drop(spawned);
    rx
}
