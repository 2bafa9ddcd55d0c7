//! Envelopes: encoded message bytes plus the attachments that travel beside
//! them instead of through the bytes.
//!
//! A [`Transfer`](crate::Transfer) or [`SendPort`](crate::SendPort) inside a
//! message cannot be turned into bytes (a buffer should not be copied; a
//! channel end cannot be). While a message is encoded, a thread-local scope
//! collects such values into the envelope's attachment table and the bytes
//! hold only their index; while it is decoded, a scope hands them back by
//! index. Scopes nest, so a `Serialize` impl may itself encode a message.

use std::any::Any;
use std::cell::RefCell;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Codec;
use crate::error::CodecError;

/// A buffer shared by a [`Transfer`](crate::Transfer) and the envelope that
/// carries it until the receiver takes it.
pub(crate) type SharedBuffer = Arc<Mutex<Option<Vec<u8>>>>;

/// A value that travels beside the bytes of a message.
pub(crate) enum Attachment {
    /// The buffer of a `Transfer`: moved, never copied.
    Buffer(SharedBuffer),
    /// A boxed `SendPort<T>`; the decoder checks `T`.
    Port(Box<dyn Any + Send>),
}

/// How many encoded bytes an envelope carries without a heap allocation.
///
/// Most messages are small; keeping them inline saves an allocation and,
/// more importantly, a cache miss on the receiving core (measured: a heap
/// buffer per message adds about 250 ns to a cross-thread round trip here).
const INLINE: usize = 30;

/// Encoded bytes: inline when small, on the heap otherwise.
pub(crate) enum Payload {
    Inline { len: u8, data: [u8; INLINE] },
    Heap(Vec<u8>),
}

impl Payload {
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Payload::Inline { len, data } => &data[..*len as usize],
            Payload::Heap(bytes) => bytes,
        }
    }
}

impl Default for Payload {
    fn default() -> Self {
        Payload::Inline {
            len: 0,
            data: [0; INLINE],
        }
    }
}

/// Encoded bytes plus attachments: what a message is between send and decode.
#[derive(Default)]
pub(crate) struct Envelope {
    pub(crate) payload: Payload,
    pub(crate) attachments: Box<[Attachment]>,
}

impl Envelope {
    /// The number of bytes moved beside the payload.
    #[cfg(test)]
    pub(crate) fn transferred_len(&self) -> usize {
        self.attachments
            .iter()
            .map(|a| match a {
                Attachment::Buffer(b) => b.lock().as_ref().map_or(0, Vec::len),
                Attachment::Port(_) => 0,
            })
            .sum()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Idle,
    Encode,
    Decode,
    /// Counting a message's decode claim inside an encode: attachments are
    /// given an index but not kept (the real encode already kept them).
    Count,
}

/// Per-thread state of the encodes and decodes in progress.
///
/// Scopes nest (a `Serialize` impl may itself encode a message), so each
/// scope owns the tail of `table` from `start` on and keeps the outer scope's
/// `mode` and `start` on the stack while it runs. This is on every send and
/// receive, so a scope costs one `RefCell` borrow to open and one to close,
/// and nothing is allocated unless the message has attachments.
struct State {
    mode: Mode,
    start: usize,
    table: Vec<Option<Attachment>>,
    /// An attachment error seen by a `Serialize`/`Deserialize` impl; serde
    /// errors are strings, so the typed error is kept here.
    error: Option<CodecError>,
    /// A reusable buffer for small encodings.
    scratch: Vec<u8>,
}

thread_local! {
    static LOCAL: RefCell<State> = const {
        RefCell::new(State {
            mode: Mode::Idle,
            start: 0,
            table: Vec::new(),
            error: None,
            scratch: Vec::new(),
        })
    };
}

/// The outer scope's position, restored when this scope ends, even when a
/// `Serialize` impl panics.
struct Scope {
    mode: Mode,
    start: usize,
    open: bool,
}

impl Scope {
    /// Opens a scope; returns it with the scratch buffer.
    fn enter(mode: Mode, attachments: Box<[Attachment]>) -> (Self, Vec<u8>) {
        LOCAL.with(|l| {
            let mut state = l.borrow_mut();
            let start = state.table.len();
            let scope = Scope {
                mode: std::mem::replace(&mut state.mode, mode),
                start: std::mem::replace(&mut state.start, start),
                open: true,
            };
            if !attachments.is_empty() {
                state
                    .table
                    .extend(attachments.into_vec().into_iter().map(Some));
            }
            (scope, std::mem::take(&mut state.scratch))
        })
    }

    /// Closes the scope: returns its attachments, takes the scratch buffer
    /// back.
    fn leave(mut self, scratch: Vec<u8>) -> Vec<Attachment> {
        self.open = false;
        LOCAL.with(|l| {
            let mut state = l.borrow_mut();
            if scratch.capacity() > state.scratch.capacity() {
                state.scratch = scratch;
            }
            self.restore(&mut state)
        })
    }

    fn restore(&self, state: &mut State) -> Vec<Attachment> {
        let attachments = if state.table.len() > state.start {
            let start = state.start;
            state.table.drain(start..).flatten().collect()
        } else {
            Vec::new()
        };
        state.mode = self.mode;
        state.start = self.start;
        if self.mode == Mode::Idle && state.error.is_some() {
            state.error = None;
        }
        attachments
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        if self.open {
            let _ = LOCAL.try_with(|l| drop(self.restore(&mut l.borrow_mut())));
        }
    }
}

/// Encodes `value` into an envelope with `codec`.
pub(crate) fn encode<C: Codec, T: Serialize + ?Sized>(
    codec: &C,
    value: &T,
) -> Result<Envelope, CodecError> {
    let (scope, mut buf) = Scope::enter(Mode::Encode, Box::default());
    buf.clear();
    let result = codec.encode(value, &mut buf);
    let payload = if buf.len() <= INLINE {
        let mut data = [0; INLINE];
        data[..buf.len()].copy_from_slice(&buf);
        Payload::Inline {
            len: buf.len() as u8,
            data,
        }
    } else {
        Payload::Heap(std::mem::take(&mut buf))
    };
    let attachments = scope.leave(buf);
    result?;
    Ok(Envelope {
        payload,
        attachments: attachments.into_boxed_slice(),
    })
}

/// Decodes an envelope into a `T` with `codec`.
pub(crate) fn decode<C: Codec, T: DeserializeOwned>(
    codec: &C,
    envelope: Envelope,
) -> Result<T, CodecError> {
    let Envelope {
        payload,
        attachments,
    } = envelope;
    let (scope, scratch) = Scope::enter(Mode::Decode, attachments);
    let result = codec.decode(payload.as_slice());
    // Attachments the message did not claim are dropped here.
    drop(scope.leave(scratch));
    result
}

/// Records an attachment error for the codec to report as
/// [`CodecError::Attachment`]; returns the text for serde's error.
///
/// Inside a scope the first error wins (later ones are its consequences);
/// outside any scope the latest one does.
fn fail(why: String) -> String {
    LOCAL.with(|l| {
        let mut state = l.borrow_mut();
        if state.mode == Mode::Idle || state.error.is_none() {
            state.error = Some(CodecError::Attachment(why.clone()));
        }
    });
    why
}

/// Takes the attachment error recorded by the `Serialize`/`Deserialize` impl
/// that made the codec fail with `serde_error`.
///
/// The recorded text must appear in `serde_error`: a stale record (left by
/// another serde format outside any scope) is discarded, not misreported.
pub(crate) fn take_attachment_error(serde_error: &str) -> Option<CodecError> {
    LOCAL.with(|l| match l.borrow_mut().error.take() {
        Some(CodecError::Attachment(why)) if serde_error.contains(why.as_str()) => {
            Some(CodecError::Attachment(why))
        }
        _ => None,
    })
}

/// Adds an attachment to the envelope being encoded and returns its index,
/// or gives it back when no envelope is being encoded on this thread.
pub(crate) fn attach(attachment: Attachment) -> Result<u32, Attachment> {
    LOCAL.with(|l| {
        let mut state = l.borrow_mut();
        match state.mode {
            Mode::Encode => {}
            Mode::Count => return Ok(0),
            Mode::Idle | Mode::Decode => return Err(attachment),
        }
        match u32::try_from(state.table.len() - state.start) {
            Ok(index) => {
                state.table.push(Some(attachment));
                Ok(index)
            }
            Err(_) => Err(attachment),
        }
    })
}

/// Runs `count` (a second serialization of the message being encoded) so
/// that attachments serialize as they did in the encode, without being
/// attached twice.
pub(crate) fn counting<R>(count: impl FnOnce() -> R) -> R {
    let encoding = LOCAL.with(|l| l.borrow().mode == Mode::Encode);
    if !encoding {
        return count();
    }
    let (scope, scratch) = Scope::enter(Mode::Count, Box::default());
    let result = count();
    drop(scope.leave(scratch));
    result
}

/// Takes attachment `index` out of the envelope being decoded.
pub(crate) fn take(index: u32) -> Result<Attachment, String> {
    LOCAL
        .with(|l| {
            let mut state = l.borrow_mut();
            if state.mode != Mode::Decode {
                return Err(
                    "an attached value can only be decoded from an isolates envelope".to_string(),
                );
            }
            let start = state.start;
            let own = &mut state.table[start..];
            match own.get_mut(index as usize).map(Option::take) {
                Some(Some(attachment)) => Ok(attachment),
                Some(None) => Err(format!("attachment {index} is referenced twice")),
                None => Err(format!(
                    "attachment {index} is missing: the envelope has {}",
                    own.len()
                )),
            }
        })
        .map_err(fail)
}

/// Records and returns an attachment error raised outside [`take`].
pub(crate) fn error(why: impl Into<String>) -> String {
    fail(why.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Bincode, Transfer};

    #[test]
    fn transfer_moves_without_copy_into_attachments() {
        let buf = vec![7u8; 1 << 20];
        let ptr = buf.as_ptr();
        let env = encode(&Bincode::<1024>::limited(), &(1u8, Transfer::new(buf))).unwrap();
        assert!(
            env.payload.as_slice().len() < 16,
            "buffer must not be in the bytes"
        );
        assert_eq!(env.transferred_len(), 1 << 20);
        let (_, t): (u8, Transfer) = decode(&Bincode::<1024>::limited(), env).unwrap();
        let back = t.into_vec();
        assert_eq!(back.as_ptr(), ptr, "the same allocation arrives");
    }

    #[test]
    fn scope_ends_with_the_encode() {
        let inner = encode(&Bincode::<1024>::limited(), &Transfer::new(vec![1, 2])).unwrap();
        assert_eq!(inner.attachments.len(), 1);
        // After the scope ends, encoding directly inlines again.
        let mut out = Vec::new();
        Bincode::<1024>::limited()
            .encode(&Transfer::new(vec![1, 2, 3]), &mut out)
            .unwrap();
        assert!(out.len() > 3);
    }
}
