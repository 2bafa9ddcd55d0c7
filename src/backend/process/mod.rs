//! Process isolates: an isolate in a child process that is this executable
//! started again, talking frames over a socket pair.
//!
//! - [`frame`]: the wire format, read under a limit;
//! - [`parent`]: spawn, read, kill, and how a child died;
//! - [`reaper`]: one thread that reaps all children and passes their
//!   stderr on;
//! - [`child`]: what a child runs;
//! - the isolate's run loop (`isolate::remote`) drives a child as the body
//!   of an isolate.

use std::convert::Infallible;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use crate::codec::{Bincode, Codec};
use crate::error::{CodecError, ExitReason};
use crate::invoke;

pub(crate) use super::{decode, encode};

pub(crate) mod child;
pub(crate) mod frame;
pub(crate) mod parent;
pub(crate) mod reaper;

/// A child's `argv[0]`: this prefix, then the parent's pid. Not in its
/// environment: a variable there would make `Command` copy the whole
/// environment at every spawn (about 20 µs), and the programs a child
/// starts would inherit it.
pub(crate) const ARG0_CHILD: &str = "isolates-child-of-";
/// Set in a child's environment: its address-space limit in bytes.
pub(crate) const ENV_MAX_MEMORY: &str = "ISOLATES_MAX_MEMORY";

/// A child's channel to its parent: the socket it writes frames to, and a
/// buffered reader of the same socket.
///
/// The start frame was read through the reader, so what the parent sent
/// behind it (a first message, pipelined while the child started) is most
/// likely in its buffer already: one `recv` brought both.
pub(crate) struct Channel {
    pub(crate) writer: UnixStream,
    pub(crate) reader: std::io::BufReader<UnixStream>,
}

impl Channel {
    /// Whether a frame from the parent is waiting: in the reader's buffer,
    /// or in the socket.
    /// A failed `poll` says no: `Started` then goes out on its own.
    pub(crate) fn message_waiting(&self) -> bool {
        frame::readable(&self.reader, std::time::Duration::ZERO).unwrap_or(false)
    }
}

/// A registered child entry: runs a child on its channel from the start
/// frame, returns the exit code.
#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) run: Arc<dyn Fn(Channel, Vec<u8>) -> i32 + Send + Sync>,
    /// The codec's limit: a start frame may be this long.
    pub(crate) limit: usize,
}

/// Exit reasons in control frames: small, so a small limit.
type ReasonCodec = Bincode<{ 1 << 20 }>;

pub(crate) fn encode_reason(reason: &ExitReason) -> Vec<u8> {
    let mut out = Vec::new();
    if ReasonCodec::limited().encode(reason, &mut out).is_err() {
        out.clear();
        let _ = ReasonCodec::limited().encode(
            &ExitReason::Failed("an exit reason too large to carry".into()),
            &mut out,
        );
    }
    out
}

pub(crate) fn decode_reason(bytes: &[u8]) -> Option<ExitReason> {
    ReasonCodec::limited().decode(bytes).ok()
}

/// Runs `f` for the parent, in a child: the argument from the start frame,
/// the result (or the panic) back; returns the exit code.
pub(crate) fn serve_fn<A, R>(f: fn(A) -> R, mut channel: Channel, start: Vec<u8>) -> i32
where
    A: serde::de::DeserializeOwned,
    R: serde::Serialize,
{
    let wire = super::CodecWire(Bincode::new());
    let arg = match child::split_start(&start) {
        None => Err(CodecError::Malformed("a malformed start frame".into())),
        Some((_, arg)) => wire.decode::<A>(arg, "argument"),
    };
    if arg.is_ok() {
        // The parent's start timeout ends here.
        let _ = frame::write(&mut channel.writer, frame::Kind::Started, &[]);
    }
    let invoked = invoke::invoke(arg, |arg| Ok::<_, Infallible>(f(arg)));
    let (answer, body) = invoked
        .encode_with(
            |value| wire.encode(&value, "result"),
            |never| match never {},
        )
        .into_frame();
    let kind = frame::Kind::from(answer);
    let _ = frame::write(&mut channel.writer, kind, &[&body]);
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_sees_a_message_in_its_readers_buffer_and_in_its_socket() {
        let (parent, child) = UnixStream::pair().unwrap();
        let reader = std::io::BufReader::with_capacity(64 << 10, child.try_clone().unwrap());
        let mut channel = Channel {
            writer: child,
            reader,
        };
        assert!(!channel.message_waiting(), "nothing sent yet");
        let mut parent = parent;
        // A start frame and a message behind it, as a parent pipelines
        // them: one read brings both.
        frame::write(&mut parent, frame::Kind::Start, &[b"start"]).unwrap();
        frame::write(&mut parent, frame::Kind::Ask, &[b"first"]).unwrap();
        assert!(channel.message_waiting(), "in the socket");
        let start = frame::read(&mut channel.reader, 64).unwrap();
        assert_eq!(start, (frame::Kind::Start, b"start".to_vec()));
        assert!(
            channel.message_waiting(),
            "the message behind the start frame is in the buffer"
        );
        let first = frame::read(&mut channel.reader, 64).unwrap();
        assert_eq!(first, (frame::Kind::Ask, b"first".to_vec()));
        assert!(!channel.message_waiting(), "all read");
        frame::write(&mut parent, frame::Kind::Cast, &[b"later"]).unwrap();
        assert!(channel.message_waiting(), "a later one in the socket");
    }
}
