//! Envelopes: a message between send and receive. In-process it is the
//! value itself, moved; encoded, it is a frame of bytes plus the attachments
//! that travel beside them instead of through the bytes.
//!
//! A [`Transfer`](crate::Transfer) or [`SendPort`](crate::SendPort) inside a
//! message cannot be turned into bytes (a buffer should not be copied; a
//! channel end cannot be). While a message is encoded, a thread-local scope
//! collects such values into the envelope's attachment table and the bytes
//! hold only their index; while it is decoded, a scope hands them back by
//! index. Scopes nest, so a `Serialize` impl may itself encode a message.

use std::any::Any;
use std::cell::{Cell, RefCell};
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

/// The largest scratch buffer a thread keeps between encodes.
const SCRATCH_KEEP: usize = 4 << 10;

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

/// A moved value whose type only its receiver knows.
pub(crate) type Erased = Box<dyn Any + Send>;

/// What a message is between send and receive.
///
/// Between threads of one process a message moves as the value itself
/// (ownership already keeps the sender from touching it again, so there is
/// nothing to copy); where it crosses a boundary, or the user asked for
/// Dart's copy semantics, it travels as a [`Frame`] of encoded bytes.
///
/// Typed channels (ports, an isolate's mailbox) carry `Envelope<T>`: a
/// moved value costs no allocation. Where one channel carries values of
/// several types (replies, pool tasks), the value is boxed: `Envelope`.
pub(crate) enum Envelope<T = Erased> {
    /// The value itself: O(1) whatever its size.
    Moved(T),
    /// The value encoded; boxed, so a channel of small moved values keeps
    /// small slots (crossbeam zeroes and copies whole slots).
    Encoded(Box<Frame>),
}

impl Envelope {
    /// An envelope that carries nothing of interest (a ping's answer).
    pub(crate) fn unit() -> Envelope {
        // A zero-sized value: boxing it allocates nothing.
        Envelope::Moved(Box::new(()))
    }

    /// The typed form of an erased envelope.
    ///
    /// # Errors
    ///
    /// A moved value of another type than `T` (a bug in the crate, reported
    /// rather than hidden).
    pub(crate) fn typed<T: 'static>(self, what: &str) -> Result<Envelope<T>, CodecError> {
        match self {
            Envelope::Moved(value) => value
                .downcast::<T>()
                .map(|value| Envelope::Moved(*value))
                .map_err(|_| {
                    CodecError::Malformed(format!(
                        "the {what} arrived as a value of another type than {}",
                        std::any::type_name::<T>()
                    ))
                }),
            Envelope::Encoded(frame) => Ok(Envelope::Encoded(frame)),
        }
    }
}

impl<T: Send + 'static> Envelope<T> {
    /// The envelope with its value boxed, for a channel of mixed types.
    pub(crate) fn erase(self) -> Envelope {
        match self {
            Envelope::Moved(value) => Envelope::Moved(Box::new(value)),
            Envelope::Encoded(frame) => Envelope::Encoded(frame),
        }
    }
}

impl<T> Envelope<T> {
    /// Whether values travel beside the bytes (a `Transfer`'s buffer, a
    /// port): those are shared with the original, so this is no copy.
    pub(crate) fn has_attachments(&self) -> bool {
        matches!(self, Envelope::Encoded(frame) if !frame.attachments.is_empty())
    }

    /// A copy of the envelope, if it is encoded and has no attachments
    /// (those move, and cannot be copied; a moved value has no copy).
    pub(crate) fn try_clone(&self) -> Option<Envelope<T>> {
        match self {
            Envelope::Encoded(frame) => frame
                .try_clone()
                .map(|frame| Envelope::Encoded(Box::new(frame))),
            Envelope::Moved(_) => None,
        }
    }
}

/// Encoded bytes plus attachments: what an encoded message is between send
/// and decode.
#[derive(Default)]
pub(crate) struct Frame {
    pub(crate) payload: Payload,
    pub(crate) attachments: Box<[Attachment]>,
}

impl Frame {
    /// A copy of the frame, if it has no attachments (those move, and
    /// cannot be copied).
    pub(crate) fn try_clone(&self) -> Option<Frame> {
        if !self.attachments.is_empty() {
            return None;
        }
        let payload = match &self.payload {
            Payload::Inline { len, data } => Payload::Inline {
                len: *len,
                data: *data,
            },
            Payload::Heap(bytes) => Payload::Heap(bytes.clone()),
        };
        Some(Frame {
            payload,
            attachments: Box::default(),
        })
    }

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

// Per-thread state of the encodes and decodes in progress.
//
// Scopes nest (a `Serialize` impl may itself encode a message), so each scope
// owns the tail of `TABLE` from `START` on and keeps the outer scope's mode
// and start on the stack while it runs. This is on every send and receive,
// so the common case (no attachments, no error) touches only `Cell`s of
// plain values, which cost a few instructions each: the table, the error
// and the scratch buffer are looked at only when their flags say so.
// (A single `RefCell` of all of it cost about 280 instructions a message.)
thread_local! {
    static MODE: Cell<Mode> = const { Cell::new(Mode::Idle) };
    /// Where the innermost scope's attachments start in `TABLE`.
    static START: Cell<usize> = const { Cell::new(0) };
    /// `TABLE`'s length, readable without borrowing it.
    static LEN: Cell<usize> = const { Cell::new(0) };
    static TABLE: RefCell<Vec<Option<Attachment>>> = const { RefCell::new(Vec::new()) };
    /// Whether `ERROR` holds something.
    static HAS_ERROR: Cell<bool> = const { Cell::new(false) };
    /// An attachment error seen by a `Serialize`/`Deserialize` impl; serde
    /// errors are strings, so the typed error is kept here.
    static ERROR: RefCell<Option<CodecError>> = const { RefCell::new(None) };
    /// A reusable buffer for small encodings.
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// The outer scope's position, restored when this scope ends, even when a
/// `Serialize` impl panics.
struct Scope {
    mode: Mode,
    start: usize,
}

impl Scope {
    /// Opens a scope, putting `attachments` at its start in the table.
    fn enter(mode: Mode, attachments: Box<[Attachment]>) -> Self {
        let len = LEN.get();
        let scope = Scope {
            mode: MODE.replace(mode),
            start: START.replace(len),
        };
        if !attachments.is_empty() {
            TABLE.with_borrow_mut(|table| {
                table.extend(attachments.into_vec().into_iter().map(Some));
                LEN.set(table.len());
            });
        }
        scope
    }

    /// Closes the scope and returns its attachments.
    fn leave(self) -> Vec<Attachment> {
        let attachments = self.restore();
        std::mem::forget(self);
        attachments
    }

    fn restore(&self) -> Vec<Attachment> {
        let start = START.get();
        let attachments = if LEN.get() > start {
            TABLE.with_borrow_mut(|table| {
                let own = table.drain(start..).flatten().collect();
                LEN.set(table.len());
                own
            })
        } else {
            Vec::new()
        };
        MODE.set(self.mode);
        START.set(self.start);
        if self.mode == Mode::Idle && HAS_ERROR.get() {
            clear_error();
        }
        attachments
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        // Only reached on unwind: `leave` forgets the scope.
        drop(self.restore());
    }
}

fn clear_error() {
    HAS_ERROR.set(false);
    ERROR.with_borrow_mut(|e| *e = None);
}

/// Encodes `value` into a frame with `codec`.
pub(crate) fn encode<C: Codec, T: Serialize + ?Sized>(
    codec: &C,
    value: &T,
) -> Result<Frame, CodecError> {
    let scope = Scope::enter(Mode::Encode, Box::default());
    let mut buf = SCRATCH.take();
    buf.clear();
    let result = codec.encode(value, &mut buf);
    let payload = if buf.len() <= INLINE {
        let mut data = [0; INLINE];
        data[..buf.len()].copy_from_slice(&buf);
        let len = buf.len() as u8;
        // A refused large encode leaves a large, empty buffer: keep only a
        // small one for the next message, not megabytes for the thread's life.
        if buf.capacity() <= SCRATCH_KEEP {
            SCRATCH.set(buf);
        }
        Payload::Inline { len, data }
    } else {
        Payload::Heap(buf)
    };
    let attachments = scope.leave();
    result?;
    Ok(Frame {
        payload,
        attachments: attachments.into_boxed_slice(),
    })
}

/// Decodes a frame into a `T` with `codec`.
pub(crate) fn decode<C: Codec, T: DeserializeOwned>(
    codec: &C,
    frame: Frame,
) -> Result<T, CodecError> {
    let Frame {
        payload,
        attachments,
    } = frame;
    let scope = Scope::enter(Mode::Decode, attachments);
    let result = codec.decode(payload.as_slice());
    // Attachments the message did not claim are dropped here.
    drop(scope.leave());
    result
}

/// Records an attachment error for the codec to report as
/// [`CodecError::Attachment`]; returns the text for serde's error.
///
/// Inside a scope the first error wins (later ones are its consequences);
/// outside any scope the latest one does.
fn fail(why: String) -> String {
    if MODE.get() == Mode::Idle || !HAS_ERROR.get() {
        ERROR.with_borrow_mut(|e| *e = Some(CodecError::Attachment(why.clone())));
        HAS_ERROR.set(true);
    }
    why
}

/// Takes the attachment error recorded by the `Serialize`/`Deserialize` impl
/// that made the codec fail with `serde_error`.
///
/// The recorded text must appear in `serde_error`: a stale record (left by
/// another serde format outside any scope) is discarded, not misreported.
pub(crate) fn take_attachment_error(serde_error: &str) -> Option<CodecError> {
    if !HAS_ERROR.replace(false) {
        return None;
    }
    match ERROR.with_borrow_mut(Option::take) {
        Some(CodecError::Attachment(why)) if serde_error.contains(why.as_str()) => {
            Some(CodecError::Attachment(why))
        }
        _ => None,
    }
}

/// Adds an attachment to the envelope being encoded and returns its index,
/// or gives it back when no envelope is being encoded on this thread.
pub(crate) fn attach(attachment: Attachment) -> Result<u32, Attachment> {
    match MODE.get() {
        Mode::Encode => {}
        Mode::Count => return Ok(0),
        Mode::Idle | Mode::Decode => return Err(attachment),
    }
    let Ok(index) = u32::try_from(LEN.get() - START.get()) else {
        return Err(attachment);
    };
    TABLE.with_borrow_mut(|table| {
        table.push(Some(attachment));
        LEN.set(table.len());
    });
    Ok(index)
}

/// Runs `count` (a second serialization of the message being encoded) so
/// that attachments serialize as they did in the encode, without being
/// attached twice.
pub(crate) fn counting<R>(count: impl FnOnce() -> R) -> R {
    if MODE.get() != Mode::Encode {
        return count();
    }
    let scope = Scope::enter(Mode::Count, Box::default());
    let result = count();
    drop(scope.leave());
    result
}

/// Takes attachment `index` out of the envelope being decoded.
pub(crate) fn take(index: u32) -> Result<Attachment, String> {
    if MODE.get() != Mode::Decode {
        return Err(fail(
            "an attached value can only be decoded from an isolates envelope".to_string(),
        ));
    }
    let start = START.get();
    TABLE
        .with_borrow_mut(|table| {
            let own = &mut table[start..];
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
    fn a_refused_large_encode_keeps_no_large_scratch_buffer() {
        let big = vec![1u8; 1 << 20];
        let err = encode(&Bincode::<1024>::limited(), &big).err();
        assert!(matches!(err, Some(CodecError::TooLarge { .. })));
        let kept = SCRATCH.take();
        assert!(
            kept.capacity() <= SCRATCH_KEEP,
            "{} bytes kept",
            kept.capacity()
        );
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
