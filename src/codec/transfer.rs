//! [`Transfer`]: an owned buffer that moves between isolates without a copy.

use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::envelope::{self, Attachment, SharedBuffer};

/// An owned byte buffer that moves inside a message without being copied:
/// the Rust answer to Dart's `TransferableTypedData` and `Isolate.exit`.
///
/// Creating one is O(1) (the `Vec` is not touched), sending it is O(1)
/// whatever its size, and the receiver gets the very same allocation back
/// with [`into_vec`](Transfer::into_vec). Ownership makes this safe: the
/// sender gave the buffer up when it sent the message.
///
/// Sent through the crate's ports and isolates, a `Transfer` travels beside
/// the message bytes and does not count against the codec's size limit.
/// Serialized any other way (say with `serde_json`), it is written inline as
/// bytes, so a message type stays serializable everywhere.
///
/// # Examples
///
/// ```
/// use isolates::{port, Transfer};
///
/// let (tx, rx) = port::unbounded::<(String, Transfer)>();
/// let frame = vec![0u8; 64 << 20];
/// let addr = frame.as_ptr();
/// tx.send(("frame 1".into(), Transfer::new(frame))).unwrap();
///
/// let (name, frame) = rx.recv().unwrap();
/// let frame = frame.into_vec();
/// assert_eq!(name, "frame 1");
/// assert_eq!(frame.as_ptr(), addr, "same allocation, no copy");
/// ```
pub struct Transfer {
    inner: SharedBuffer,
}

impl Transfer {
    /// Wraps `buffer` for a zero-copy move.
    ///
    /// # Examples
    ///
    /// ```
    /// let t = isolates::Transfer::new(vec![1, 2, 3]);
    /// assert_eq!(t.len(), 3);
    /// ```
    pub fn new(buffer: Vec<u8>) -> Self {
        Transfer {
            inner: Arc::new(Mutex::new(Some(buffer))),
        }
    }

    /// The buffer's length in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(isolates::Transfer::new(vec![0; 10]).len(), 10);
    /// ```
    pub fn len(&self) -> usize {
        self.inner.lock().as_ref().map_or(0, Vec::len)
    }

    /// Whether the buffer is empty.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(isolates::Transfer::new(Vec::new()).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the buffer out: the materialization, which happens once.
    ///
    /// A `Transfer` received through the crate's ports always holds its
    /// buffer. The buffer can only be missing from a `Transfer` whose encoded
    /// envelope was decoded elsewhere while it was kept, which the crate's
    /// own send paths never do; the result is then empty.
    ///
    /// # Examples
    ///
    /// ```
    /// let t = isolates::Transfer::new(vec![1, 2, 3]);
    /// assert_eq!(t.into_vec(), vec![1, 2, 3]);
    /// ```
    pub fn into_vec(self) -> Vec<u8> {
        self.inner.lock().take().unwrap_or_default()
    }
}

impl From<Vec<u8>> for Transfer {
    fn from(buffer: Vec<u8>) -> Self {
        Transfer::new(buffer)
    }
}

impl fmt::Debug for Transfer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transfer")
            .field("len", &self.len())
            .finish()
    }
}

/// The wire form: an index into the envelope, or the bytes themselves when
/// no envelope is being encoded.
#[derive(Serialize)]
#[serde(rename = "Transfer")]
enum ReprRef<'a> {
    Attached(u32),
    Inline(#[serde(with = "super::bytes")] &'a [u8]),
}

#[derive(Deserialize)]
#[serde(rename = "Transfer")]
enum Repr {
    Attached(u32),
    Inline(#[serde(with = "super::bytes")] Vec<u8>),
}

impl Serialize for Transfer {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match envelope::attach(Attachment::Buffer(Arc::clone(&self.inner))) {
            Ok(index) => ReprRef::Attached(index).serialize(serializer),
            Err(_) => {
                let guard = self.inner.lock();
                ReprRef::Inline(guard.as_deref().unwrap_or_default()).serialize(serializer)
            }
        }
    }
}

impl<'de> Deserialize<'de> for Transfer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Repr::deserialize(deserializer)? {
            Repr::Inline(bytes) => Ok(Transfer::new(bytes)),
            Repr::Attached(index) => {
                match envelope::take(index).map_err(serde::de::Error::custom)? {
                    Attachment::Buffer(inner) => Ok(Transfer { inner }),
                    Attachment::Port(_) => Err(serde::de::Error::custom(envelope::error(format!(
                        "attachment {index} is a port where a Transfer was expected"
                    )))),
                }
            }
        }
    }
}
