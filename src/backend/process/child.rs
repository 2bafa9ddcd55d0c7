//! The child's side: become the child a parent started, and hand the
//! channel to the entry it asks for.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use rustix::process::{Resource, Rlimit, Signal};

use super::frame::{self, Kind};
use super::{ENV_CHILD, ENV_MAX_MEMORY, Entry, encode_reason};
use crate::error::ExitReason;

/// Exit codes of a child that could not become one.
const EXIT_ORPHAN: i32 = 70;
const EXIT_NO_CHANNEL: i32 = 71;

/// If this process was started as a child, runs it and exits; otherwise
/// returns.
pub(crate) fn enter_if_child(start_limit: usize, find: impl Fn(u64) -> Option<Entry>) {
    let Some(parent) = std::env::var_os(ENV_CHILD) else {
        return;
    };
    let parent = parent
        .to_str()
        .and_then(|p| p.parse::<i32>().ok())
        .and_then(rustix::process::Pid::from_raw);
    let ppid = || rustix::process::getppid();
    let Some(parent) = parent else {
        return;
    };
    if ppid() != Some(parent) {
        // A process that a child started (user code running a program of
        // its own) inherits the variable: it is not ours while the parent
        // named in it lives. If that parent is gone, we are an orphaned
        // child: nobody is left to talk to.
        if rustix::process::test_kill_process(parent).is_ok() {
            return;
        }
        std::process::exit(EXIT_ORPHAN);
    }
    // Die with the parent, and make sure it has not died meanwhile (then
    // the death signal would never come).
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    if ppid() != Some(parent) {
        std::process::exit(EXIT_ORPHAN);
    }
    if let Some(bytes) = std::env::var(ENV_MAX_MEMORY)
        .ok()
        .and_then(|m| m.parse::<u64>().ok())
    {
        let limit = Rlimit {
            current: Some(bytes),
            maximum: Some(bytes),
        };
        let _ = rustix::process::setrlimit(Resource::As, limit);
    }
    let Some(mut channel) = take_channel() else {
        std::process::exit(EXIT_NO_CHANNEL);
    };
    let code = match frame::read(&mut channel, start_limit.saturating_add(frame::OVERHEAD)) {
        Ok((Kind::Start, body)) if body.len() >= 8 => {
            let mut key = [0u8; 8];
            key.copy_from_slice(&body[..8]);
            match find(u64::from_le_bytes(key)) {
                Some(entry) => (entry.run)(channel, body),
                None => {
                    let reason = ExitReason::Failed(
                        "the child process has no such isolate type registered: call \
                         isolates::process::Registry::init with the same registrations \
                         first thing in main, in parent and child alike"
                            .into(),
                    );
                    let _ = frame::write(&mut channel, Kind::Exited, &[&encode_reason(&reason)]);
                    0
                }
            }
        }
        // The parent went away before starting us, or is not ours.
        _ => EXIT_NO_CHANNEL,
    };
    std::process::exit(code);
}

/// The channel is our stdin (a socket); stdin becomes /dev/null so that user
/// code reading it does not eat our frames.
fn take_channel() -> Option<UnixStream> {
    let fd = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
    let channel = UnixStream::from(fd);
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = rustix::stdio::dup2_stdin(&null);
    }
    Some(channel)
}

/// Splits a start frame's body: key, name, arguments.
pub(crate) fn split_start(body: &[u8]) -> Option<(&str, &[u8])> {
    let rest = body.get(8..)?;
    let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let name = std::str::from_utf8(rest.get(4..4 + len)?).ok()?;
    Some((name, rest.get(4 + len..)?))
}
