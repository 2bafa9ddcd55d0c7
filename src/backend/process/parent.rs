//! The parent's side of a child process: spawn it, talk to it, kill it,
//! and say how it died.
//!
//! The owner reads the child's frames itself, on its own thread: an answer
//! costs no hop through another thread. The [`reaper`](super::reaper)
//! thread (one for all children) passes the child's stderr on and notices
//! its exit at once, so that a child that dies while its owner is idle is
//! noticed. An owner that stops its child waits for the exit itself and
//! reaps the child there (through the pidfd, which names that process
//! only): the reaper finds it reaped, and the stop costs no hop through
//! the reaper. An owner whose child an immediate kill ends (SIGKILL) does
//! not wait: it lets the child die ([`ChildProcess::let_die`]), and
//! whoever needs it gone (a `join`) waits on its pidfd and reaps it
//! ([`Dying::wait`]), else the reaper does.

use std::io::BufReader;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel as cb;
use rustix::process::{Pid, Signal};

use super::frame::{self, Kind, ReadError};
use super::reaper::{self, Reap, reap};
use super::{ARG0_CHILD, ENV_MAX_MEMORY};
use crate::error::Crash;

pub(crate) use super::reaper::{KillSwitch, OnExit};

/// This executable, as the kernel names it to whoever opens it: always
/// the very file that this process runs, whatever has become of its path.
/// Exec'ing it costs a walk through `/proc` on the child's start: it is
/// the fallback for a path that no longer names this file.
const SELF_EXE: &str = "/proc/self/exe";

/// The path this executable was found at, with the file it named then.
struct ThisExe {
    path: PathBuf,
    /// The running file's device and inode: while the path names a file
    /// with these, it names this one (a live inode's number is not reused,
    /// and a running executable cannot be written to).
    file: (u64, u64),
}

impl ThisExe {
    /// Resolved once (a `readlink` of `/proc/self/exe` costs more than the
    /// `stat` that checks it at each spawn).
    fn get() -> Result<&'static ThisExe, Crash> {
        static EXE: OnceLock<ThisExe> = OnceLock::new();
        if let Some(exe) = EXE.get() {
            return Ok(exe);
        }
        let unknown =
            |e: std::io::Error| Crash::Spawn(format!("the current executable is unknown: {e}"));
        let path = std::env::current_exe().map_err(unknown)?;
        let running = std::fs::metadata(SELF_EXE).map_err(unknown)?;
        Ok(EXE.get_or_init(|| ThisExe {
            path,
            file: (running.dev(), running.ino()),
        }))
    }

    /// The command that starts this executable again: by its path while
    /// that still names it (renamed, deleted or replaced by a new build, it
    /// does not), else through [`SELF_EXE`]. (A child's `argv[0]` is its
    /// marker, [`ARG0_CHILD`], either way.)
    fn command(&self) -> Command {
        let same =
            std::fs::metadata(&self.path).is_ok_and(|now| (now.dev(), now.ino()) == self.file);
        Command::new(if same {
            self.path.as_path()
        } else {
            Path::new(SELF_EXE)
        })
    }
}

/// How long the rest of a frame may take to come once the frame has
/// started (its first bytes could be read): a child that sends part of a
/// frame and then nothing has broken the channel, and is killed, rather
/// than holding whoever reads it. A child writes a frame in one go, so a
/// gap this long means it is stuck or hostile.
pub(crate) const FRAME_GRACE: Duration = Duration::from_secs(2);

/// Why a frame could not be had from the child.
pub(crate) enum Broken {
    /// It is gone: how it died.
    Gone(Crash),
    /// It did not answer in time (it was killed).
    Timeout,
}

/// A running child process, as its parent sees it.
pub(crate) struct ChildProcess {
    /// Where frames are written.
    socket: UnixStream,
    /// Where they are read (the same socket): a frame's header and body
    /// usually come in one system call.
    reader: BufReader<UnixStream>,
    /// Frames from the child are at most this long.
    limit: usize,
    kill: Arc<KillSwitch>,
    /// How the child died, from the reaper.
    died: cb::Receiver<Crash>,
    /// What `died` said, once it said it.
    dead: Option<Crash>,
    /// Set when its owner has let it die ([`let_die`](Self::let_die)):
    /// the reaper then reaps it without a word to the owner.
    let_go: Arc<AtomicBool>,
}

/// A child that an immediate kill has sent SIGKILL and whose owner went on
/// without waiting for its exit ([`ChildProcess::let_die`]): whoever must
/// see it gone (a `join`) waits for it with [`wait`](Self::wait), and
/// reaps it there unless the reaper got there first. If nobody waits, the
/// reaper reaps it. Of the two exactly one reaps, under the kill switch's
/// lock, as for an owner that stops its child.
#[derive(Clone)]
pub(crate) struct Dying {
    kill: Arc<KillSwitch>,
    pidfd: Arc<OwnedFd>,
}

/// How [`wait_and_reap`] ended.
enum Waited {
    /// Exited, and reaped by this thread.
    Reaped,
    /// Reaped by the reaper, or (a failed `waitid`) not ours to reap.
    Elsewhere,
    /// Still running at the deadline.
    TimedOut,
    /// `poll` failed (not retried: no spin).
    PollFailed,
}

/// Waits until `deadline` (`None`: as long as it takes) for the child of
/// `pidfd` to exit, parked in `poll` on the pidfd (its exit wakes this
/// thread), and reaps it unless the reaper has, under `kill`'s lock.
fn wait_and_reap(kill: &KillSwitch, pidfd: &OwnedFd, deadline: Option<Instant>) -> Waited {
    loop {
        match reap(kill, pidfd) {
            Reap::Reaped(_) => return Waited::Reaped,
            Reap::Gone | Reap::Failed(_) => return Waited::Elsewhere,
            Reap::Running => {}
        }
        match reaper::await_exit_of(pidfd, deadline) {
            // Exited (or about to be found so): reap.
            Ok(true) => {}
            Ok(false) => return Waited::TimedOut,
            Err(_) => return Waited::PollFailed,
        }
    }
}

impl Dying {
    /// Waits until `deadline` (with `None`, for as long as it takes) for
    /// the child to exit, and reaps it unless the reaper has; whether it
    /// is reaped (by either) by then. Parks in `poll` on its pidfd: its
    /// exit wakes this thread itself.
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> bool {
        match wait_and_reap(&self.kill, &self.pidfd, deadline) {
            // Reaped here, by the reaper, or (a failed `waitid`) not ours
            // to reap any more: gone either way.
            Waited::Reaped | Waited::Elsewhere => true,
            // A last look: it may have exited just now.
            Waited::TimedOut | Waited::PollFailed => {
                !matches!(reap(&self.kill, &self.pidfd), Reap::Running)
            }
        }
    }

    /// Whether `other` is this same child.
    pub(crate) fn is(&self, other: &Dying) -> bool {
        Arc::ptr_eq(&self.pidfd, &other.pidfd)
    }
}

/// How to start a child: what of
/// [`ProcessOptions`](crate::process::ProcessOptions) the spawn needs.
pub(crate) struct Launch<'a> {
    /// The program and its arguments; this executable when `None`.
    pub(crate) program: Option<&'a (std::path::PathBuf, Vec<std::ffi::OsString>)>,
    /// The child's address-space limit in bytes.
    pub(crate) max_memory: Option<u64>,
    /// How long a kill waits after SIGTERM before SIGKILL.
    pub(crate) kill_grace: std::time::Duration,
}

impl ChildProcess {
    /// Starts the child: this executable again (with `test_entry`'s
    /// arguments in a test binary) or the options' program.
    pub(crate) fn spawn(
        options: &Launch<'_>,
        test_entry: Option<&str>,
        limit: usize,
        on_exit: OnExit,
    ) -> Result<ChildProcess, Crash> {
        // Never a child without a reaper.
        reaper::ensure()?;
        let (ours, theirs) = UnixStream::pair()
            .map_err(|e| Crash::Spawn(format!("no socket pair for the child: {e}")))?;
        let mut command = match options.program {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args);
                command
            }
            None => {
                let mut command = ThisExe::get()?.command();
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
            .arg0(format!("{ARG0_CHILD}{}", std::process::id()))
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stderr(Stdio::piped())
            // A process group of its own: a kill ends what the child started
            // too (a tool it runs), not only the child (see `KillSwitch`).
            .process_group(0);
        if let Some(bytes) = options.max_memory {
            command.env(ENV_MAX_MEMORY, bytes.to_string());
            // glibc reserves 64 MiB of address space per thread arena: under
            // an address-space limit that would be most of a small one.
            if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
                command.env("MALLOC_ARENA_MAX", "2");
            }
        }
        let reader = ours
            .try_clone()
            .map_err(|e| Crash::Spawn(format!("the socket could not be shared: {e}")))?;
        // A frame that has started must end: see `read`.
        let _ = ours.set_read_timeout(Some(FRAME_GRACE));
        let child = command.spawn().map_err(|e| Crash::Spawn(e.to_string()))?;
        let pidfd = Pid::from_raw(child.id() as i32)
            .and_then(|pid| {
                rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
            })
            .map(Arc::new);
        let kill = Arc::new(KillSwitch::new(
            Pid::from_raw(child.id() as i32),
            pidfd.clone(),
            options.kill_grace,
        ));
        let (died_tx, died) = cb::bounded(1);
        let let_go = Arc::new(AtomicBool::new(false));
        let quiet = Arc::clone(&let_go);
        reaper::watch(reaper::Watch {
            child,
            kill: Arc::clone(&kill),
            pidfd: pidfd.clone(),
            max_memory: options.max_memory,
            on_exit: Box::new(move |crash: Crash| {
                let _ = died_tx.send(crash.clone());
                // Let die: its owner has ended, knowing why.
                if !quiet.load(Ordering::SeqCst) {
                    on_exit(crash);
                }
            }),
        })?;
        Ok(ChildProcess {
            socket: ours,
            reader: BufReader::with_capacity(64 << 10, reader),
            limit: limit.saturating_add(frame::OVERHEAD),
            kill,
            died,
            dead: None,
            let_go,
        })
    }

    /// The switch that kills this child.
    pub(crate) fn kill_switch(&self) -> Arc<KillSwitch> {
        Arc::clone(&self.kill)
    }

    /// Bounds each write to the child (`None`: a write waits as long as the
    /// child takes to read); a write that times out fails, as one to a
    /// child going away does.
    pub(crate) fn write_timeout(&self, timeout: Option<Duration>) {
        let _ = self
            .socket
            .set_write_timeout(timeout.map(|t| t.max(Duration::from_millis(1))));
    }

    /// Sends a frame; a failed write means the child is going away (the
    /// next read says how).
    pub(crate) fn send(&mut self, kind: Kind, parts: &[&[u8]]) {
        let _ = frame::write(&mut self.socket, kind, parts);
    }

    /// The child's next frame, waiting at most until `deadline` (`None`:
    /// for a frame to start, as long as it takes; once it has started, the
    /// rest of it within [`FRAME_GRACE`]); a child that breaks the channel
    /// (garbage, an oversized frame, a frame cut short) is killed.
    pub(crate) fn read(&mut self, deadline: Option<Instant>) -> Result<(Kind, Vec<u8>), Broken> {
        let Some(deadline) = deadline else {
            // A failed poll: the read says how the channel failed.
            let _ = frame::await_readable(&self.reader);
            return self.read_started();
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = self
            .socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))));
        let read = frame::read(&mut self.reader, self.limit);
        let _ = self.socket.set_read_timeout(Some(FRAME_GRACE));
        self.judge(read, false)
    }

    /// The frame that can be read now (a caller saw the channel readable):
    /// the rest of it must come within [`FRAME_GRACE`].
    pub(crate) fn read_started(&mut self) -> Result<(Kind, Vec<u8>), Broken> {
        let read = frame::read(&mut self.reader, self.limit);
        self.judge(read, true)
    }

    /// What a read came to; `started`: a frame could be read when it began
    /// (a read that timed out then was cut short, not late).
    fn judge(
        &mut self,
        read: Result<(Kind, Vec<u8>), ReadError>,
        started: bool,
    ) -> Result<(Kind, Vec<u8>), Broken> {
        match read {
            Ok((
                kind @ (Kind::Start
                | Kind::Ask
                | Kind::Cast
                | Kind::Stop
                | Kind::Task
                | Kind::Cancel),
                _,
            )) => Err(self.broken(format!("a {kind:?} frame, which only a parent sends"))),
            Ok(frame) => Ok(frame),
            Err(ReadError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if started {
                    return Err(self.broken(format!(
                        "a frame cut short: the rest of it did not come within {FRAME_GRACE:?}"
                    )));
                }
                self.kill.kill();
                Err(Broken::Timeout)
            }
            Err(ReadError::Closed) => Err(Broken::Gone(self.died())),
            Err(ReadError::Malformed(_)) if self.reaped(Duration::ZERO).is_some() => {
                // Cut off mid-frame by its death: how it died is the news.
                Err(Broken::Gone(self.died()))
            }
            Err(e @ (ReadError::Malformed(_) | ReadError::TooLarge { .. })) => {
                Err(self.broken(e.to_string()))
            }
            Err(ReadError::Io(e)) => Err(self.broken(format!("the channel failed: {e}"))),
        }
    }

    /// The child's next frame if one starts within `wait`, else `None`;
    /// a frame that has started is read whole.
    pub(crate) fn poll_read(&mut self, wait: Duration) -> Result<Option<(Kind, Vec<u8>)>, Broken> {
        match self.wait_readable(wait) {
            Ok(true) => self.read_started().map(Some),
            Ok(false) => Ok(None),
            Err(broken) => Err(broken),
        }
    }

    /// Whether something (a frame, or the end) can be read within `wait`.
    pub(crate) fn wait_readable(&mut self, wait: Duration) -> Result<bool, Broken> {
        // Readable, or closed (a read says which), or a failed poll (a read
        // says how).
        Ok(frame::readable(&self.reader, wait).unwrap_or(true))
    }

    /// Whether the reaper has seen the child exit.
    pub(crate) fn has_died(&mut self) -> bool {
        self.reaped(Duration::ZERO).is_some()
    }

    /// How the child died, waiting up to `timeout` for the reaper.
    fn reaped(&mut self, timeout: Duration) -> Option<Crash> {
        if self.dead.is_none() {
            // Zero: a plain look (crossbeam's timed receive spins and yields
            // before it gives up, even for no time).
            self.dead = if timeout.is_zero() {
                self.died.try_recv().ok()
            } else {
                self.died.recv_timeout(timeout).ok()
            };
        }
        self.dead.clone()
    }

    /// Kills a child that broke the channel; the crash says why.
    fn broken(&mut self, why: String) -> Broken {
        self.kill.signal(Signal::KILL);
        // Reaped, so that no zombie is left.
        self.reaped(Duration::from_secs(5));
        Broken::Gone(Crash::Protocol(why))
    }

    /// How the child died: it closed the channel, so it exits (or is made
    /// to).
    fn died(&mut self) -> Crash {
        if let Some(crash) = self.reaped(Duration::from_secs(2)) {
            return crash;
        }
        // Closed its end yet lives on: a broken channel.
        self.kill.signal(Signal::KILL);
        self.reaped(Duration::from_secs(5));
        Crash::Protocol("the child closed its channel".into())
    }

    /// Asks the child to finish and exit (with `reason` for its `stopping`);
    /// kills it if it takes longer than `timeout`. Returns once it is reaped.
    pub(crate) fn stop(mut self, reason: &[u8], timeout: Duration) {
        if self.dead.is_some() {
            return;
        }
        let _ = frame::write(&mut self.socket, Kind::Stop, &[reason]);
        if !self.await_exit(timeout) {
            self.kill.signal(Signal::KILL);
            self.await_exit(Duration::from_secs(5));
        }
    }

    /// Whether [`let_die`](Self::let_die) may end this child: with a
    /// pidfd (to wait for it later) and a kill without a grace to wait out.
    pub(crate) fn can_let_die(&self) -> bool {
        self.kill.pidfd().is_some() && self.kill.kills_at_once()
    }

    /// Lets go of a child that an immediate kill ends with SIGKILL (sent
    /// here too: the kill may still be on its way from the handle), without
    /// waiting for its exit: the owner goes on at once, and [`Dying::wait`]
    /// waits for it where that is needed (a `join`). `None` if it has been
    /// reaped already (or, against [`can_let_die`](Self::can_let_die), it
    /// has no pidfd: then the reaper's thread for it reaps it).
    pub(crate) fn let_die(self) -> Option<Dying> {
        if self.dead.is_some() {
            return None;
        }
        self.let_go.store(true, Ordering::SeqCst);
        self.kill.signal(Signal::KILL);
        Some(Dying {
            kill: Arc::clone(&self.kill),
            pidfd: Arc::clone(self.kill.pidfd()?),
        })
    }

    /// Waits up to `timeout` for the child to exit and be reaped; whether
    /// it was. With a pidfd this thread waits for the exit itself and reaps
    /// the child here, unless the reaper got there first (then its word
    /// follows at once).
    fn await_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        if let Some(pidfd) = self.kill.pidfd() {
            match wait_and_reap(&self.kill, pidfd, Some(deadline)) {
                Waited::Reaped => return true,
                Waited::TimedOut => return false,
                // The reaper reaped it: its word is on the way (or, poll
                // failing, the reaper's word is waited for instead).
                Waited::Elsewhere | Waited::PollFailed => {}
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        self.reaped(left).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_executable_is_started_by_its_path_while_that_names_it_else_through_proc() {
        let exe = ThisExe::get().expect("this executable");
        assert_eq!(exe.command().get_program(), exe.path.as_os_str());
        // A path that names another file now (a new build put there).
        let replaced = ThisExe {
            path: exe.path.clone(),
            file: (0, 0),
        };
        assert_eq!(replaced.command().get_program(), SELF_EXE);
        // Which starts this very file: it lists this test.
        let listed = replaced
            .command()
            .args(["--list", "this_executable_is_started_by_its_path"])
            .stderr(Stdio::inherit())
            .output()
            .expect("this executable started again");
        assert!(
            String::from_utf8_lossy(&listed.stdout)
                .contains("this_executable_is_started_by_its_path_while_that_names_it"),
            "{listed:?}"
        );
    }
}
