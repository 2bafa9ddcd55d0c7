//! How a pool's tasks cross a boundary from the pool's side: inputs out,
//! outputs, progress and errors back, with the pool's codec.

use super::Worker;
use crate::backend::CodecWire;
use crate::codec::Codec;
use crate::error::CodecError;

/// Encodes a task's input and decodes what comes back with the pool's
/// codec: for a worker in a child process and a slot over NATS.
pub(super) trait WorkerWire<W: Worker>: Send + Sync {
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    fn limit(&self) -> usize;
    fn encode_input(&self, input: &W::Input) -> Result<Vec<u8>, CodecError>;
    fn decode_output(&self, bytes: &[u8]) -> Result<W::Output, CodecError>;
    fn decode_progress(&self, bytes: &[u8]) -> Result<W::Progress, CodecError>;
    fn decode_error(&self, bytes: &[u8]) -> Result<W::Error, CodecError>;
}

impl<C: Codec, W: Worker> WorkerWire<W> for CodecWire<C> {
    fn limit(&self) -> usize {
        self.0.limit()
    }
    fn encode_input(&self, input: &W::Input) -> Result<Vec<u8>, CodecError> {
        self.encode(input, "input")
    }
    fn decode_output(&self, bytes: &[u8]) -> Result<W::Output, CodecError> {
        self.decode(bytes, "output")
    }
    fn decode_progress(&self, bytes: &[u8]) -> Result<W::Progress, CodecError> {
        self.decode(bytes, "progress")
    }
    fn decode_error(&self, bytes: &[u8]) -> Result<W::Error, CodecError> {
        self.decode(bytes, "error")
    }
}
