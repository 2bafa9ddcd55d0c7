//! What a process isolate's body is made of: how it runs in a child (set
//! by the builder) and the running child the run loop drives. The types
//! only: [`remote`](super::remote) drives them, and [`shared`](super::shared)
//! holds them, so neither needs the other.

use std::sync::Arc;

use super::{ExitReason, Isolate};
use crate::backend::CodecWire;
use crate::backend::launch::ProcessOptions;
use crate::backend::process::parent::ChildProcess;
use crate::codec::Codec;
use crate::error::CodecError;

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

/// A running child, as the parent's run loop drives it.
pub(super) struct RemoteBody<I: Isolate> {
    pub(super) child: ChildProcess,
    /// Tells this child's exit notices from those of an earlier incarnation.
    pub(super) id: u64,
    pub(super) wire: Arc<dyn ChildWire<I>>,
    pub(super) stop_timeout: std::time::Duration,
    /// A direct ask ended the isolate: the reason, for its thread.
    pub(super) pending_exit: Option<ExitReason>,
    /// A direct ask timed out: its answer is still to come, and must be
    /// read (and accounted) before the channel is used again.
    pub(super) owed: bool,
    /// The first message went out behind the start frame: the run loop
    /// reads its answer before the channel is used again.
    pub(super) sent_first: bool,
    /// When the child must have started its isolate: set when the start
    /// frame goes out, so that the writes before the start (the start
    /// frame, a first message) count against the start timeout too.
    pub(super) start_deadline: std::time::Instant,
}

/// A child started before its isolate's thread (by `spawn`, so that the
/// thread's start and the child's `exec` overlap), and its id.
pub(crate) struct Launched {
    pub(super) child: ChildProcess,
    pub(super) id: u64,
}
