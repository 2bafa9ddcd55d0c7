//! The child's side: become the child a parent started, and hand the
//! channel to the entry it asks for.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use rustix::process::{Resource, Rlimit, Signal};

use super::frame::{self, Kind};
use super::{ARG0_CHILD, Channel, ENV_MAX_MEMORY, Entry, encode_reason};
use crate::error::ExitReason;

/// Exit codes of a child that could not become one.
const EXIT_ORPHAN: i32 = 70;
const EXIT_NO_CHANNEL: i32 = 71;

/// If this process was started as a child, runs it and exits; otherwise
/// returns.
pub(crate) fn enter_if_child(start_limit: usize, find: impl Fn(u64) -> Option<Entry>) {
    let Some(parent) = child_of(std::env::args_os().next()) else {
        return;
    };
    let ppid = || rustix::process::getppid();
    if ppid() != Some(parent) {
        // Not started by the parent it names: not ours while that parent
        // lives (a program started by hand with such a name). If that
        // parent is gone, we are an orphaned child, whose parent died
        // before it got here: nobody is left to talk to.
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
    let limit = start_limit.saturating_add(frame::OVERHEAD);
    let code = match frame::read(&mut channel.reader, limit) {
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
                    let _ = frame::write(
                        &mut channel.writer,
                        Kind::Exited,
                        &[&encode_reason(&reason)],
                    );
                    0
                }
            }
        }
        // The parent went away before starting us, or is not ours.
        _ => EXIT_NO_CHANNEL,
    };
    std::process::exit(code);
}

/// The parent a process whose `argv[0]` is `arg0` was started by as its
/// child (see [`ARG0_CHILD`]); `None` for any other process.
fn child_of(arg0: Option<std::ffi::OsString>) -> Option<rustix::process::Pid> {
    let arg0 = arg0?;
    let pid = arg0
        .to_str()?
        .strip_prefix(ARG0_CHILD)?
        .parse::<i32>()
        .ok()?;
    // `Pid::from_raw` takes no negative number.
    rustix::process::Pid::from_raw(pid.max(0))
}

/// The channel is our stdin (a socket); stdin becomes /dev/null so that user
/// code reading it does not eat our frames.
fn take_channel() -> Option<Channel> {
    let fd = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
    let writer = UnixStream::from(fd);
    // A frame's header and body in one system call, usually; and the
    // frames sent behind the start frame with it.
    let reader = std::io::BufReader::with_capacity(64 << 10, writer.try_clone().ok()?);
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = rustix::stdio::dup2_stdin(&null);
    }
    Some(Channel { writer, reader })
}

/// Splits a start frame's body: key, name, arguments.
pub(crate) fn split_start(body: &[u8]) -> Option<(&str, &[u8])> {
    let rest = body.get(8..)?;
    let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let name = std::str::from_utf8(rest.get(4..4 + len)?).ok()?;
    Some((name, rest.get(4 + len..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_marked_argv0_names_a_parent() {
        let named = |arg0: &str| child_of(Some(arg0.into())).map(|p| p.as_raw_nonzero().get());
        assert_eq!(named(&format!("{ARG0_CHILD}4242")), Some(4242));
        assert_eq!(named("/usr/bin/app"), None);
        assert_eq!(named(ARG0_CHILD), None);
        assert_eq!(named(&format!("{ARG0_CHILD}0")), None);
        assert_eq!(named(&format!("{ARG0_CHILD}-3")), None);
        assert_eq!(named(&format!("{ARG0_CHILD}12x")), None);
        assert_eq!(named(&format!("x{ARG0_CHILD}12")), None);
        assert_eq!(child_of(None), None);
    }
}
