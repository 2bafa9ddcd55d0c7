//! Process isolates: an isolate in a child process that is this executable
//! started again, talking frames over a socket pair.
//!
//! - [`frame`]: the wire format, read under a limit;
//! - [`parent`]: spawn, read, kill, reap, and how a child died;
//! - [`child`]: what a child runs;
//! - the isolate's run loop (`isolate::remote`) drives a child as the body
//!   of an isolate.

use std::os::unix::net::UnixStream;
use std::sync::Arc;

use crate::codec::{Bincode, Codec};
use crate::isolate::ExitReason;

pub(crate) use super::{decode, encode};

pub(crate) mod child;
pub(crate) mod frame;
pub(crate) mod parent;

/// Set in a child's environment: the parent's pid.
pub(crate) const ENV_CHILD: &str = "ISOLATES_CHILD_OF";
/// Set in a child's environment: its address-space limit in bytes.
pub(crate) const ENV_MAX_MEMORY: &str = "ISOLATES_MAX_MEMORY";

/// A registered child entry: runs a child on its channel from the start
/// frame, returns the exit code.
#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) run: Arc<dyn Fn(UnixStream, Vec<u8>) -> i32 + Send + Sync>,
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
pub(crate) fn serve_fn<A, R>(f: fn(A) -> R, mut channel: UnixStream, start: Vec<u8>) -> i32
where
    A: serde::de::DeserializeOwned,
    R: serde::Serialize,
{
    let codec = Bincode::new();
    let (kind, body) = match child::split_start(&start) {
        None => (frame::Kind::BadMessage, b"a malformed start frame".to_vec()),
        Some((_, arg)) => match decode::<A, _>(&codec, arg, "argument") {
            Err(e) => (frame::Kind::BadMessage, e.into_bytes()),
            Ok(arg) => match crate::unwind::catch(|| f(arg)) {
                Ok(value) => match encode(&codec, &value, "result") {
                    Ok(bytes) => (frame::Kind::Value, bytes),
                    Err(e) => (frame::Kind::Unencodable, e.into_bytes()),
                },
                Err(caught) => (frame::Kind::Panicked, caught.message.into_bytes()),
            },
        },
    };
    let _ = frame::write(&mut channel, kind, &[&body]);
    0
}

/// The parent's side of [`process::run`](crate::process::run): on a `run`
/// thread, start a child for the function, send the argument, wait for the
/// result.
pub(crate) fn run_fn<A, R>(
    options: crate::process::ProcessOptions,
    test_entry: Option<String>,
    key: u64,
    arg: A,
) -> crate::Pending<R, crate::RunError>
where
    A: serde::Serialize + Send + 'static,
    R: serde::de::DeserializeOwned + Send + 'static,
{
    use crate::RunError;
    use crate::codec::envelope::Envelope;
    use crate::pending::{Pending, Reply};
    let (tx, rx) = crate::oneshot::oneshot();
    let job = Box::new(move || {
        let codec = Bincode::new();
        let reply = (|| {
            let arg = encode(&codec, &arg, "argument")
                .map_err(|e| Reply::BadMessage(crate::CodecError::Encode(e)))?;
            let mut child = parent::ChildProcess::spawn(
                &options,
                test_entry.as_deref(),
                codec.limit(),
                Box::new(|_| {}),
            )
            .map_err(|crash| Reply::Dead(ExitReason::Crashed(crash)))?;
            child.send(
                frame::Kind::Start,
                &[&key.to_le_bytes(), &0u32.to_le_bytes(), &arg],
            );
            let answer = child.read(None);
            let reply = match answer {
                Ok((frame::Kind::Value, body)) => match decode::<R, _>(&codec, &body, "result") {
                    Ok(value) => Reply::Value(Envelope::Moved(value).erase()),
                    Err(e) => Reply::Unencodable(crate::CodecError::Malformed(e)),
                },
                Ok((frame::Kind::Panicked, body)) => {
                    Reply::Panicked(String::from_utf8_lossy(&body).into_owned())
                }
                Ok((frame::Kind::BadMessage, body)) => Reply::BadMessage(
                    crate::CodecError::Malformed(String::from_utf8_lossy(&body).into_owned()),
                ),
                Ok((frame::Kind::Unencodable, body)) => Reply::Unencodable(
                    crate::CodecError::Encode(String::from_utf8_lossy(&body).into_owned()),
                ),
                Ok((frame::Kind::Exited, body)) => Reply::Dead(decode_reason(&body).unwrap_or(
                    ExitReason::Failed("the child could not run the function".into()),
                )),
                Ok((kind, _)) => Reply::Dead(ExitReason::Crashed(crate::Crash::Protocol(format!(
                    "a {kind:?} frame in answer to a run"
                )))),
                Err(parent::Broken::Gone(crash)) => Reply::Dead(ExitReason::Crashed(crash)),
                Err(parent::Broken::Timeout) => Reply::Dead(ExitReason::Crashed(
                    crate::Crash::Protocol("no answer from the child".into()),
                )),
            };
            // The child exits after answering: reaped here.
            child.stop(&encode_reason(&ExitReason::Normal), options.stop_timeout);
            Ok(reply)
        })()
        .unwrap_or_else(|reply| reply);
        tx.send(reply);
    });
    if let Err(e) = crate::run::submit(job) {
        return Pending::ready(Err(RunError::Spawn(e)));
    }
    Pending::waiting(rx, move |reply| match reply {
        Some(Reply::Value(envelope)) => match envelope.typed::<R>("result") {
            Ok(Envelope::Moved(value)) => Ok(value),
            Ok(Envelope::Encoded(_)) => Err(RunError::Codec(crate::CodecError::Malformed(
                "an encoded result where a value was expected".into(),
            ))),
            Err(e) => Err(RunError::Codec(e)),
        },
        Some(Reply::Panicked(message)) => Err(RunError::Panicked(message)),
        Some(Reply::BadMessage(e) | Reply::Unencodable(e)) => Err(RunError::Codec(e)),
        Some(Reply::Dead(ExitReason::Crashed(crash))) => Err(RunError::Crashed(crash)),
        Some(Reply::Dead(reason)) => Err(RunError::NotRegistered(reason.to_string())),
        Some(Reply::Failed(_)) | None => Err(RunError::Panicked(
            "the run thread ended without a result".into(),
        )),
    })
}
