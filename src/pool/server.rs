//! A worker's state served across a boundary (a process worker's child,
//! a NATS worker process): its tasks come and go as bytes. Used by the
//! process pool's child side ([`remote`](super::remote)) and by
//! `remote::serve`; the worker thread's loop ([`worker`](super::worker))
//! drives a process worker from the other side.

use super::{TaskContext, Worker};
use crate::invoke::{self, Invoked};

/// A worker's state served across a boundary (in a process worker's
/// child, or a NATS worker process): its tasks come and go as bytes.
pub(crate) struct TaskServer<W: Worker, C> {
    wire: crate::backend::CodecWire<C>,
    /// A task context's codecs: values move (progress leaves by a sink).
    codecs: crate::pool::task::CodecSet<W>,
}

impl<W: Worker, C: crate::codec::Codec> TaskServer<W, C> {
    pub(crate) fn new(codec: &C) -> Self {
        use crate::port::dyn_codec;
        TaskServer {
            wire: crate::backend::CodecWire(codec.clone()),
            codecs: crate::pool::task::CodecSet {
                input: dyn_codec(codec, false),
                output: dyn_codec(codec, false),
                progress: dyn_codec(codec, false),
                error: dyn_codec(codec, false),
            },
        }
    }

    /// Runs one task on `state`: its input decoded, the call under
    /// `catch`, the output or error encoded; progress goes to `sink`.
    pub(crate) fn run(
        &self,
        state: &mut W,
        cell: &crate::pool::task::TaskCell,
        input: &[u8],
        sink: &(dyn Fn(W::Progress) + Sync),
    ) -> Invoked<Vec<u8>, Vec<u8>> {
        let ctx = TaskContext {
            cell,
            codecs: &self.codecs,
            helpers: None,
            sink: Some(sink),
        };
        let wire = &self.wire;
        let input = wire.decode::<W::Input>(input, "input");
        invoke::invoke(input, |input| state.run(input, &ctx)).encode_with(
            |value| wire.encode(&value, "output"),
            |error| wire.encode(&error, "error"),
        )
    }
}
