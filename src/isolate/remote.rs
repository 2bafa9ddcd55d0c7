//! A process isolate's body in its parent: a child process does the work,
//! and the run loop drives it with frames.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::shared::{Control, Shared};
use super::{Crash, ExitReason, Isolate};
use crate::backend::process::frame::Kind;
use crate::backend::process::parent::{ChildProcess, Incoming};
use crate::codec::Codec;
use crate::error::CodecError;
use crate::process::ProcessOptions;

/// How an isolate runs in a child: set by
/// [`IsolateBuilder::process`](super::IsolateBuilder::process).
pub(crate) struct ProcessSpec<I: Isolate> {
    pub(super) options: ProcessOptions,
    pub(super) wire: Arc<dyn ChildWire<I>>,
    pub(super) key: u64,
    pub(super) test_entry: Option<String>,
}

/// Encodes what goes to the child and decodes what comes back, with the
/// builder's codec.
pub(super) trait ChildWire<I: Isolate>: Send + Sync {
    fn limit(&self) -> usize;
    fn encode_args(&self, args: &I::Args) -> Result<Vec<u8>, CodecError>;
    fn encode_message(&self, msg: &I::Message) -> Result<Vec<u8>, CodecError>;
    fn decode_reply(&self, bytes: &[u8]) -> Result<I::Reply, CodecError>;
    fn decode_error(&self, bytes: &[u8]) -> Result<I::Error, CodecError>;
}

pub(super) struct CodecWire<C>(pub(super) C);

impl<C: Codec> CodecWire<C> {
    fn encode<T: Serialize>(&self, value: &T, what: &str) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::new();
        crate::unwind::catch(|| self.0.encode(value, &mut out)).unwrap_or_else(|caught| {
            Err(CodecError::Encode(format!(
                "the {what}'s Serialize panicked: {}",
                caught.message
            )))
        })?;
        Ok(out)
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8], what: &str) -> Result<T, CodecError> {
        crate::unwind::catch(|| self.0.decode(bytes)).unwrap_or_else(|caught| {
            Err(CodecError::Malformed(format!(
                "the {what}'s Deserialize panicked: {}",
                caught.message
            )))
        })
    }
}

impl<C: Codec, I: Isolate> ChildWire<I> for CodecWire<C> {
    fn limit(&self) -> usize {
        self.0.limit()
    }
    fn encode_args(&self, args: &I::Args) -> Result<Vec<u8>, CodecError> {
        self.encode(args, "start argument")
    }
    fn encode_message(&self, msg: &I::Message) -> Result<Vec<u8>, CodecError> {
        self.encode(msg, "message")
    }
    fn decode_reply(&self, bytes: &[u8]) -> Result<I::Reply, CodecError> {
        self.decode(bytes, "reply")
    }
    fn decode_error(&self, bytes: &[u8]) -> Result<I::Error, CodecError> {
        self.decode(bytes, "error")
    }
}

/// What became of one message sent to the child.
pub(super) enum Outcome<I: Isolate> {
    Value(I::Reply),
    /// A cast was handled.
    Done,
    Failed(I::Error),
    Panicked(String),
    /// The message could not reach the isolate (encoding here, decoding there).
    BadMessage(CodecError),
    /// The reply or error could not come back.
    BadReply(CodecError),
    /// Not handled: the isolate had exited with this reason.
    Dead(ExitReason),
    /// The child died handling it.
    Gone(ExitReason),
}

/// A running child, as the body of one incarnation.
pub(super) struct RemoteBody<I: Isolate> {
    child: ChildProcess,
    /// Tells this child's exit notices from those of an earlier incarnation.
    pub(super) id: u64,
    wire: Arc<dyn ChildWire<I>>,
    stop_timeout: std::time::Duration,
}

static NEXT_CHILD: AtomicU64 = AtomicU64::new(1);

impl<I: Isolate> RemoteBody<I> {
    /// Starts a child and the isolate in it.
    pub(super) fn start(
        shared: &Arc<Shared<I>>,
        spec: &ProcessSpec<I>,
        args: I::Args,
    ) -> Result<Self, ExitReason> {
        let args = spec.wire.encode_args(&args).map_err(|e| {
            ExitReason::Failed(format!("start arguments could not be encoded: {e}"))
        })?;
        let id = NEXT_CHILD.fetch_add(1, Ordering::Relaxed);
        let weak = Arc::downgrade(shared);
        let on_exit = Box::new(move |reason: ExitReason| {
            if let Some(shared) = weak.upgrade() {
                shared.control(Control::ChildExited { child: id, reason }, true);
            }
        });
        let mut child = ChildProcess::spawn(
            &spec.options,
            spec.test_entry.as_deref(),
            spec.wire.limit(),
            on_exit,
        )
        .map_err(ExitReason::Crashed)?;
        let kill = child.kill_switch();
        shared.set_child_kill(Some(Arc::clone(&kill)));
        // A kill that came before the switch was there.
        if shared.kill_requested.load(Ordering::SeqCst) {
            kill.kill();
        }
        // The name fits the start frame's overhead.
        let mut end = shared.name.len().min(1024);
        while !shared.name.is_char_boundary(end) {
            end -= 1;
        }
        let name = &shared.name.as_bytes()[..end];
        let name_len = (name.len() as u32).to_le_bytes();
        child.send(
            Kind::Start,
            &[&spec.key.to_le_bytes(), &name_len, name, &args],
        );
        let deadline = Instant::now() + spec.options.start_timeout;
        let body = RemoteBody {
            child,
            id,
            wire: Arc::clone(&spec.wire),
            stop_timeout: spec.options.stop_timeout,
        };
        match body.child.next(Some(deadline)) {
            Some(Incoming::Frame(Kind::Started, _)) => Ok(body),
            Some(Incoming::Exited(reason)) => {
                body.stop();
                Err(reason)
            }
            Some(Incoming::Gone(crash)) => Err(body.gone(shared, crash)),
            Some(Incoming::Frame(kind, _)) => {
                kill.kill();
                body.stop();
                Err(ExitReason::Crashed(Crash::Protocol(format!(
                    "a {kind:?} frame before the isolate started"
                ))))
            }
            None => {
                let timeout = spec.options.start_timeout;
                kill.kill();
                body.stop();
                if shared.kill_requested.load(Ordering::SeqCst) {
                    return Err(ExitReason::Killed);
                }
                Err(ExitReason::Crashed(Crash::Protocol(format!(
                    "the child did not start its isolate within {timeout:?} \
                     (is isolates::process::Registry::init the first call in main?)"
                ))))
            }
        }
    }

    /// The reason for a child that died: a kill we were asked for is
    /// `Killed`, anything else is how it crashed.
    fn gone(&self, shared: &Shared<I>, crash: Crash) -> ExitReason {
        if shared.kill_requested.load(Ordering::SeqCst) {
            ExitReason::Killed
        } else {
            ExitReason::Crashed(crash)
        }
    }

    /// Has the child handle one message, and waits for what became of it.
    pub(super) fn call(&mut self, shared: &Shared<I>, msg: &I::Message, cast: bool) -> Outcome<I> {
        let bytes = match self.wire.encode_message(msg) {
            Ok(bytes) => bytes,
            Err(e) => return Outcome::BadMessage(e),
        };
        if bytes.len() > self.wire.limit() {
            return Outcome::BadMessage(CodecError::TooLarge {
                size: bytes.len(),
                limit: self.wire.limit(),
            });
        }
        let kind = if cast { Kind::Cast } else { Kind::Ask };
        // A failed write means the child is going: its reader says how.
        self.child.send(kind, &[&bytes]);
        loop {
            let Some(incoming) = self.child.next(None) else {
                return Outcome::Gone(ExitReason::Crashed(Crash::Protocol(
                    "the child's reader stopped".into(),
                )));
            };
            let (kind, body) = match incoming {
                Incoming::Frame(kind, body) => (kind, body),
                // It exited by itself (it stopped itself): the answer to
                // this message still comes.
                Incoming::Exited(_) => continue,
                Incoming::Gone(crash) => return Outcome::Gone(self.gone(shared, crash)),
            };
            let text = || String::from_utf8_lossy(&body).into_owned();
            return match kind {
                Kind::Value => match self.wire.decode_reply(&body) {
                    Ok(value) => Outcome::Value(value),
                    Err(e) => Outcome::BadReply(e),
                },
                Kind::Done => Outcome::Done,
                Kind::Failed => match self.wire.decode_error(&body) {
                    Ok(error) => Outcome::Failed(error),
                    Err(e) => Outcome::BadReply(e),
                },
                Kind::Panicked => Outcome::Panicked(text()),
                Kind::BadMessage => Outcome::BadMessage(CodecError::Malformed(text())),
                Kind::Unencodable => Outcome::BadReply(CodecError::Encode(text())),
                Kind::Dead => match crate::backend::process::decode_reason(&body) {
                    Some(reason) => Outcome::Dead(reason),
                    None => self.broken("a Dead frame that does not decode"),
                },
                other => self.broken(&format!("a {other:?} frame in answer to a message")),
            };
        }
    }

    fn broken(&self, why: &str) -> Outcome<I> {
        self.child.kill_switch().kill();
        Outcome::Gone(ExitReason::Crashed(Crash::Protocol(why.to_string())))
    }

    /// Asks the child to finish and exit; kills it if it takes longer than
    /// the stop timeout. Returns once it is reaped.
    pub(super) fn stop(self) {
        self.child.stop(self.stop_timeout);
    }
}
