//! The child's side: become the child a parent started, run the isolate it
//! asks for, answer its frames, and exit.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use parking_lot::Mutex;
use rustix::process::{Resource, Rlimit, Signal};

use super::frame::{self, Kind, ReadError};
use super::{ENV_CHILD, ENV_MAX_MEMORY, Entry, encode_reason};
use crate::isolate::{ExitReason, Isolate, IsolateBuilder, Priority};
use crate::{AskError, Codec};

/// Exit codes of a child that could not become one.
const EXIT_ORPHAN: i32 = 70;
const EXIT_NO_CHANNEL: i32 = 71;

/// If this process was started as a child, runs it and exits; otherwise
/// returns.
pub(crate) fn enter_if_child(start_limit: usize, find: impl Fn(u64) -> Option<Entry>) {
    let Some(parent) = std::env::var_os(ENV_CHILD) else {
        return;
    };
    // Die with the parent, and make sure it has not died already (then
    // the death signal would never come).
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    let parent = parent.to_str().and_then(|p| p.parse::<i32>().ok());
    let ppid = rustix::process::getppid().map(|p| p.as_raw_nonzero().get());
    if parent.is_none() || parent != ppid {
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
            let key = u64::from_le_bytes(body[..8].try_into().unwrap_or_default());
            match find(key) {
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
fn split_start(body: &[u8]) -> Option<(&str, &[u8])> {
    let rest = body.get(8..)?;
    let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let name = std::str::from_utf8(rest.get(4..4 + len)?).ok()?;
    Some((name, rest.get(4 + len..)?))
}

/// Runs isolate `I` for the parent on `channel`: returns the exit code.
pub(crate) fn run_isolate<I: Isolate, C: Codec>(
    codec: &C,
    channel: UnixStream,
    start: Vec<u8>,
) -> i32 {
    let writer = match channel.try_clone() {
        Ok(writer) => Mutex::new(writer),
        Err(_) => return EXIT_NO_CHANNEL,
    };
    let send = |kind: Kind, body: &[u8]| {
        let mut writer = writer.lock();
        frame::write(&mut *writer, kind, &[body]).is_ok()
    };
    let exited = |reason: ExitReason| {
        send(Kind::Exited, &encode_reason(&reason));
        0
    };
    let Some((name, args)) = split_start(&start) else {
        return exited(ExitReason::Failed("a malformed start frame".into()));
    };
    let args = match decode::<I::Args, C>(codec, args, "start argument") {
        Ok(args) => args,
        Err(e) => {
            return exited(ExitReason::Failed(format!(
                "start arguments could not be decoded: {e}"
            )));
        }
    };
    // The parent decides what an error means: here every error is
    // reported, and the isolate goes on unless the parent stops it.
    let spawned = IsolateBuilder::new()
        .name(name)
        .errors_are_fatal(false)
        .spawn::<I>(args);
    let local = match spawned {
        Ok(local) => local,
        Err(e) => return exited(ExitReason::Failed(e.to_string())),
    };
    match local.ping(Priority::AfterCurrent).wait() {
        Ok(()) => {
            send(Kind::Started, &[]);
        }
        Err(_) => {
            let reason = local
                .join(Duration::from_secs(5))
                .unwrap_or(ExitReason::Killed);
            return exited(reason);
        }
    }
    // Tell the parent when the isolate exits by itself (it stopped
    // itself): the parent may be idle, not waiting for any reply.
    let (exit_tx, exit_rx) = crate::port::bounded(1);
    local.add_exit_listener(exit_tx);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            if let Ok(reason) = exit_rx.recv() {
                send(Kind::Exited, &encode_reason(&reason));
            }
        });
        let code = serve(codec, &local, channel, &send);
        local.kill(Priority::AfterCurrent);
        let _ = local.join(Duration::from_secs(10));
        // The exit listener has its reason (or the isolate is stuck): the
        // process exits either way.
        std::process::exit(code);
    })
}

/// Answers the parent's frames until it says stop or goes.
fn serve<I: Isolate, C: Codec>(
    codec: &C,
    local: &crate::IsolateHandle<I>,
    mut channel: UnixStream,
    send: &impl Fn(Kind, &[u8]) -> bool,
) -> i32 {
    let limit = codec.limit().saturating_add(frame::OVERHEAD);
    loop {
        let (kind, body) = match frame::read(&mut channel, limit) {
            Ok(frame) => frame,
            Err(ReadError::Closed) => return 0,
            Err(_) => return EXIT_NO_CHANNEL,
        };
        let cast = match kind {
            Kind::Ask => false,
            Kind::Cast => true,
            Kind::Stop => return 0,
            _ => return EXIT_NO_CHANNEL,
        };
        let msg = match decode::<I::Message, C>(codec, &body, "message") {
            Ok(msg) => msg,
            Err(e) => {
                send(Kind::BadMessage, e.to_string().as_bytes());
                continue;
            }
        };
        let (kind, body) = match local.ask_pending(msg).wait() {
            Ok(_) if cast => (Kind::Done, Vec::new()),
            Ok(value) => match encode(codec, &value, "reply") {
                Ok(bytes) => (Kind::Value, bytes),
                Err(e) => (Kind::Unencodable, e.into_bytes()),
            },
            Err(AskError::Failed(error)) => match encode(codec, &error, "error") {
                Ok(bytes) => (Kind::Failed, bytes),
                Err(e) => (Kind::Unencodable, e.into_bytes()),
            },
            Err(AskError::Panicked(message)) => (Kind::Panicked, message.into_bytes()),
            Err(AskError::Dead(reason)) => (Kind::Dead, encode_reason(&reason)),
            Err(other) => (
                Kind::Dead,
                encode_reason(&ExitReason::Failed(other.to_string())),
            ),
        };
        if !send(kind, &body) {
            return 0;
        }
    }
}

fn decode<T: serde::de::DeserializeOwned, C: Codec>(
    codec: &C,
    bytes: &[u8],
    what: &str,
) -> Result<T, String> {
    match crate::unwind::catch(|| codec.decode::<T>(bytes)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(caught) => Err(format!(
            "the {what}'s Deserialize panicked: {}",
            caught.message
        )),
    }
}

fn encode<T: serde::Serialize, C: Codec>(
    codec: &C,
    value: &T,
    what: &str,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    match crate::unwind::catch(|| codec.encode(value, &mut out)) {
        Ok(Ok(())) => Ok(out),
        Ok(Err(e)) => Err(format!("the {what} could not be encoded: {e}")),
        Err(caught) => Err(format!(
            "the {what}'s Serialize panicked: {}",
            caught.message
        )),
    }
}
