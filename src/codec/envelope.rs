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

/// Encoded bytes plus attachments: what a message is between send and decode.
#[derive(Default)]
pub(crate) struct Envelope {
    pub(crate) bytes: Vec<u8>,
    pub(crate) attachments: Vec<Attachment>,
}

impl Envelope {
    /// The number of bytes the message occupies, attachments included.
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

enum Scope {
    Encode(Vec<Attachment>),
    Decode(Vec<Option<Attachment>>),
}

struct Frame {
    scope: Scope,
    /// An attachment error seen by a `Serialize`/`Deserialize` impl; serde
    /// errors are strings, so the typed error is kept here.
    error: Option<CodecError>,
}

thread_local! {
    static FRAME: RefCell<Option<Frame>> = const { RefCell::new(None) };
}

/// Installs a frame for the current thread and restores the previous one on
/// drop, even when a `Serialize` impl panics.
struct FrameGuard {
    previous: Option<Frame>,
}

impl FrameGuard {
    fn enter(scope: Scope) -> Self {
        let previous = FRAME.with(|f| f.borrow_mut().replace(Frame { scope, error: None }));
        FrameGuard { previous }
    }

    fn leave(mut self) -> Frame {
        let previous = self.previous.take();
        let frame = FRAME.with(|f| std::mem::replace(&mut *f.borrow_mut(), previous));
        std::mem::forget(self);
        frame.expect("frame installed by FrameGuard::enter")
    }
}

impl Drop for FrameGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        FRAME.with(|f| *f.borrow_mut() = previous);
    }
}

/// Encodes `value` into an envelope with `codec`.
pub(crate) fn encode<C: Codec, T: Serialize + ?Sized>(
    codec: &C,
    value: &T,
) -> Result<Envelope, CodecError> {
    let guard = FrameGuard::enter(Scope::Encode(Vec::new()));
    let mut bytes = Vec::new();
    let result = codec.encode(value, &mut bytes);
    let frame = guard.leave();
    result?;
    let Scope::Encode(attachments) = frame.scope else {
        unreachable!("encode installs an encode scope")
    };
    Ok(Envelope { bytes, attachments })
}

/// Decodes an envelope into a `T` with `codec`.
pub(crate) fn decode<C: Codec, T: DeserializeOwned>(
    codec: &C,
    envelope: Envelope,
) -> Result<T, CodecError> {
    let Envelope { bytes, attachments } = envelope;
    let guard = FrameGuard::enter(Scope::Decode(attachments.into_iter().map(Some).collect()));
    let result = codec.decode(&bytes);
    drop(guard.leave());
    result
}

/// Records an attachment error for the codec to report as
/// [`CodecError::Attachment`]; returns the text for serde's error.
fn fail(why: String) -> String {
    FRAME.with(|f| {
        if let Some(frame) = f.borrow_mut().as_mut() {
            frame
                .error
                .get_or_insert(CodecError::Attachment(why.clone()));
        }
    });
    why
}

/// Takes the attachment error recorded during the current encode or decode.
pub(crate) fn take_attachment_error() -> Option<CodecError> {
    FRAME.with(|f| f.borrow_mut().as_mut().and_then(|frame| frame.error.take()))
}

/// Adds an attachment to the envelope being encoded and returns its index,
/// or gives it back when no envelope is being encoded on this thread.
pub(crate) fn attach(attachment: Attachment) -> Result<u32, Attachment> {
    FRAME.with(|f| match f.borrow_mut().as_mut() {
        Some(Frame {
            scope: Scope::Encode(table),
            ..
        }) => match u32::try_from(table.len()) {
            Ok(index) => {
                table.push(attachment);
                Ok(index)
            }
            Err(_) => Err(attachment),
        },
        _ => Err(attachment),
    })
}

/// Takes attachment `index` out of the envelope being decoded.
pub(crate) fn take(index: u32) -> Result<Attachment, String> {
    FRAME
        .with(|f| match f.borrow_mut().as_mut() {
            Some(Frame {
                scope: Scope::Decode(table),
                ..
            }) => match table.get_mut(index as usize).map(Option::take) {
                Some(Some(attachment)) => Ok(attachment),
                Some(None) => Err(format!("attachment {index} is referenced twice")),
                None => Err(format!(
                    "attachment {index} is missing: the envelope has {}",
                    table.len()
                )),
            },
            _ => Err("an attached value can only be decoded from an isolates envelope".to_string()),
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
        assert!(env.bytes.len() < 16, "buffer must not be in the bytes");
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
