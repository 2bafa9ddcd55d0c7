//! Typed ports: `SendPort<T>` and `ReceivePort<T>`, as in Dart.
//!
//! A port made with [`bounded`] or [`unbounded`] moves each message as a
//! value: a send is O(1) whatever the message's size, and the sender cannot
//! touch the message again (Rust's ownership is the isolation). A port made
//! with [`bounded_with`] or [`unbounded_with`] has Dart's copy semantics
//! instead: [`SendPort::send`] encodes on the sender's thread and
//! [`ReceivePort::recv`] decodes on the receiver's, under the codec's limit.
//! Use that where the bytes matter: to enforce a size limit on what a peer
//! may send, or to test that a message type survives encoding before it is
//! sent to a child process or another machine. A `SendPort` is itself
//! serializable and can travel inside a message to another isolate; a reply
//! port is just a port in a message.
//!
//! Every operation comes in crossbeam's four forms: `try_` (never blocks),
//! blocking, `_timeout` and `_deadline`.
//!
//! # Examples
//!
//! ```
//! use isolates::{port, SendPort};
//!
//! // A request carries the port its answer goes to.
//! let (requests, inbox) = port::unbounded::<(u64, SendPort<u64>)>();
//! let worker = std::thread::spawn(move || {
//!     for (n, reply_to) in inbox.iter() {
//!         reply_to.send(n * n).unwrap();
//!     }
//! });
//!
//! let (reply_to, answers) = port::bounded::<u64>(1);
//! requests.send((12, reply_to)).unwrap();
//! assert_eq!(answers.recv().unwrap(), 144);
//! drop(requests);
//! worker.join().unwrap();
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel as cb;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::envelope::{self, Attachment, Envelope};
use crate::codec::{Bincode, Codec};
use crate::error::{
    CodecError, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError,
    TrySendError,
};

/// How one message type crosses between two threads: moved as a value, or
/// encoded with a codec (Dart's copy semantics, and every real boundary).
pub(crate) trait MessageCodec<T>: Send + Sync {
    /// Makes an envelope of `value` on the sender's side: a move (O(1),
    /// no user code runs) or an encode, which keeps the value beside the
    /// bytes so a refused send can give it back. A failed (or panicking)
    /// encode gives the value back; `what` names it in the error.
    fn pack(&self, value: T, what: &str) -> Result<Packed<T>, (T, CodecError)>;

    /// Encodes a copy of `value` whatever the mode: for a copy kept to
    /// retry a task, or for bytes that must cross a boundary.
    fn encode_copy(&self, value: &T, what: &str) -> Result<Envelope<T>, CodecError>;

    /// Takes the value out of an envelope on the receiver's side: O(1) for
    /// a moved value, a decode under the codec's limit for bytes. A panic
    /// in a `Deserialize` is a malformed-message error naming `what`.
    fn unpack(&self, envelope: Envelope<T>, what: &str) -> Result<T, CodecError>;
}

/// A codec and the choice between moving and copying.
struct Wire<C> {
    codec: C,
    copy: bool,
}

impl<C: Codec, T: Serialize + DeserializeOwned + Send + 'static> MessageCodec<T> for Wire<C> {
    fn pack(&self, value: T, what: &str) -> Result<Packed<T>, (T, CodecError)> {
        if !self.copy {
            return Ok(Packed {
                envelope: Envelope::Moved(value),
                kept: None,
            });
        }
        match self.encode_copy(&value, what) {
            Ok(envelope) => Ok(Packed {
                envelope,
                kept: Some(value),
            }),
            Err(e) => Err((value, e)),
        }
    }

    fn encode_copy(&self, value: &T, what: &str) -> Result<Envelope<T>, CodecError> {
        crate::unwind::catch(|| envelope::encode(&self.codec, value))
            .unwrap_or_else(|caught| {
                Err(CodecError::Encode(format!(
                    "the {what}'s Serialize panicked: {}",
                    caught.message
                )))
            })
            .map(|frame| Envelope::Encoded(Box::new(frame)))
    }

    fn unpack(&self, envelope: Envelope<T>, what: &str) -> Result<T, CodecError> {
        match envelope {
            Envelope::Moved(value) => Ok(value),
            Envelope::Encoded(frame) => {
                crate::unwind::catch(|| envelope::decode(&self.codec, *frame)).unwrap_or_else(
                    |caught| {
                        Err(CodecError::Malformed(format!(
                            "the {what}'s Deserialize panicked: {}",
                            caught.message
                        )))
                    },
                )
            }
        }
    }
}

/// A packed message: its envelope and, when it was encoded, the value
/// itself, kept until the send is known to have succeeded.
pub(crate) struct Packed<T> {
    pub(crate) envelope: Envelope<T>,
    pub(crate) kept: Option<T>,
}

impl<T> Packed<T> {
    /// The message back, after its envelope was refused.
    pub(crate) fn take_back(envelope: Envelope<T>, kept: Option<T>) -> T {
        match (envelope, kept) {
            (_, Some(value)) | (Envelope::Moved(value), None) => value,
            (Envelope::Encoded(_), None) => {
                unreachable!("an encoded message is packed with its value kept beside it")
            }
        }
    }
}

/// A shared, type-fixed codec, with the move path inline: a moved value
/// costs no call through the trait object.
pub(crate) struct DynCodec<T> {
    copy: bool,
    wire: Arc<dyn MessageCodec<T>>,
}

impl<T> Clone for DynCodec<T> {
    fn clone(&self) -> Self {
        DynCodec {
            copy: self.copy,
            wire: Arc::clone(&self.wire),
        }
    }
}

impl<T> DynCodec<T> {
    /// See [`MessageCodec::pack`].
    #[inline]
    pub(crate) fn pack(&self, value: T, what: &str) -> Result<Packed<T>, (T, CodecError)> {
        if self.copy {
            self.wire.pack(value, what)
        } else {
            Ok(Packed {
                envelope: Envelope::Moved(value),
                kept: None,
            })
        }
    }

    /// See [`MessageCodec::encode_copy`].
    pub(crate) fn encode_copy(&self, value: &T, what: &str) -> Result<Envelope<T>, CodecError> {
        self.wire.encode_copy(value, what)
    }

    /// See [`MessageCodec::unpack`].
    #[inline]
    pub(crate) fn unpack(&self, envelope: Envelope<T>, what: &str) -> Result<T, CodecError> {
        match envelope {
            Envelope::Moved(value) => Ok(value),
            encoded => self.wire.unpack(encoded, what),
        }
    }

    /// Whether messages are encoded on every send (Dart's copy semantics).
    pub(crate) fn copies(&self) -> bool {
        self.copy
    }
}

impl<T: 'static> DynCodec<T> {
    /// [`unpack`](Self::unpack) for an envelope from a channel of mixed
    /// types.
    pub(crate) fn unpack_erased(&self, envelope: Envelope, what: &str) -> Result<T, CodecError> {
        self.unpack(envelope.typed(what)?, what)
    }
}

/// Builds the type-fixed form of `codec` for `T`: values move between
/// threads, unless `copy` asks for every message to be encoded.
pub(crate) fn dyn_codec<C: Codec, T: Serialize + DeserializeOwned + Send + 'static>(
    codec: &C,
    copy: bool,
) -> DynCodec<T> {
    DynCodec {
        copy,
        wire: Arc::new(Wire {
            codec: codec.clone(),
            copy,
        }),
    }
}

/// Creates a port pair whose mailbox holds at most `capacity` messages;
/// messages move as values.
///
/// A capacity of zero makes a rendezvous port: a send waits for a receive.
///
/// # Examples
///
/// ```
/// let (tx, rx) = isolates::port::bounded::<String>(8);
/// tx.send("hello".to_string()).unwrap();
/// assert_eq!(rx.recv().unwrap(), "hello");
/// ```
pub fn bounded<T>(capacity: usize) -> (SendPort<T>, ReceivePort<T>)
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    pair(cb::bounded(capacity), dyn_codec(&Bincode::new(), false))
}

/// Creates a port pair with an unbounded mailbox; messages move as values.
///
/// # Examples
///
/// ```
/// let (tx, rx) = isolates::port::unbounded::<Vec<u32>>();
/// tx.send(vec![1, 2, 3]).unwrap();
/// assert_eq!(rx.recv().unwrap(), vec![1, 2, 3]);
/// ```
pub fn unbounded<T>() -> (SendPort<T>, ReceivePort<T>)
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    pair(cb::unbounded(), dyn_codec(&Bincode::new(), false))
}

/// Like [`bounded`], with Dart's copy semantics: every message is encoded
/// with `codec` when sent and decoded when received, under its limit.
///
/// # Examples
///
/// ```
/// use isolates::{port, Bincode};
/// let (tx, rx) = port::bounded_with::<u8, _>(Bincode::<16>::limited(), 4);
/// tx.send(1).unwrap();
/// assert_eq!(rx.recv().unwrap(), 1);
/// ```
pub fn bounded_with<T, C>(codec: C, capacity: usize) -> (SendPort<T>, ReceivePort<T>)
where
    T: Serialize + DeserializeOwned + Send + 'static,
    C: Codec,
{
    pair(cb::bounded(capacity), dyn_codec(&codec, true))
}

/// Like [`unbounded`], with Dart's copy semantics: every message is encoded
/// with `codec` when sent and decoded when received, under its limit.
///
/// # Examples
///
/// ```
/// use isolates::{port, Bincode};
/// let (tx, rx) = port::unbounded_with::<u8, _>(Bincode::<16>::limited());
/// tx.send(1).unwrap();
/// assert_eq!(rx.recv().unwrap(), 1);
/// ```
pub fn unbounded_with<T, C>(codec: C) -> (SendPort<T>, ReceivePort<T>)
where
    T: Serialize + DeserializeOwned + Send + 'static,
    C: Codec,
{
    pair(cb::unbounded(), dyn_codec(&codec, true))
}

fn pair<T>(
    (tx, rx): (cb::Sender<Envelope<T>>, cb::Receiver<Envelope<T>>),
    codec: DynCodec<T>,
) -> (SendPort<T>, ReceivePort<T>) {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    (
        SendPort {
            tx,
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            codec: codec.clone(),
            _type: PhantomData,
        },
        ReceivePort {
            rx,
            codec,
            _type: PhantomData,
        },
    )
}

/// The sending end of a port: moves each message into the mailbox (or, on a
/// port with a codec, encodes it on the caller's thread).
///
/// Cheap to clone. Serializable: a `SendPort` inside a message sent through
/// a port or an isolate arrives as a working `SendPort` on the other side.
/// Serializing one any other way is an error, since a channel end cannot be
/// turned into bytes.
///
/// # Examples
///
/// ```
/// let (tx, rx) = isolates::port::unbounded::<u32>();
/// let tx2 = tx.clone();
/// tx.send(1).unwrap();
/// tx2.send(2).unwrap();
/// assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![1, 2]);
/// ```
pub struct SendPort<T> {
    tx: cb::Sender<Envelope<T>>,
    /// The channel's number, the same in every clone (see [`SendPort::id`]).
    id: u64,
    codec: DynCodec<T>,
    _type: PhantomData<fn(T)>,
}

/// The receiving end of a port: takes each message out of the mailbox (on a
/// port with a codec, decodes it on the caller's thread).
///
/// A message that fails to decode is consumed and reported as a `Decode`
/// error; the next receive goes on with the next message.
///
/// # Examples
///
/// ```
/// use isolates::{port, Bincode, RecvError};
///
/// // This port's codec allows 16 bytes a message (as decoded: a string's
/// // length prefix counts 8).
/// let (tx, rx) = port::unbounded_with::<String, _>(Bincode::<16>::limited());
/// tx.send("short".into()).unwrap();
/// assert_eq!(rx.recv().unwrap(), "short");
/// assert!(tx.send("much too long for the limit".into()).is_err());
/// ```
pub struct ReceivePort<T> {
    rx: cb::Receiver<Envelope<T>>,
    codec: DynCodec<T>,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for SendPort<T> {
    fn clone(&self) -> Self {
        SendPort {
            tx: self.tx.clone(),
            id: self.id,
            codec: self.codec.clone(),
            _type: PhantomData,
        }
    }
}

impl<T> Clone for ReceivePort<T> {
    fn clone(&self) -> Self {
        ReceivePort {
            rx: self.rx.clone(),
            codec: self.codec.clone(),
            _type: PhantomData,
        }
    }
}

impl<T> fmt::Debug for SendPort<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendPort")
            .field("len", &self.tx.len())
            .field("capacity", &self.tx.capacity())
            .finish()
    }
}

impl<T> fmt::Debug for ReceivePort<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceivePort")
            .field("len", &self.rx.len())
            .field("capacity", &self.rx.capacity())
            .finish()
    }
}

impl<T> SendPort<T> {
    /// Sends a message, waiting while a bounded mailbox is full.
    ///
    /// # Errors
    ///
    /// The message comes back in [`SendError::Disconnected`] when every
    /// receiver is gone, or in [`SendError::Encode`] when it cannot be encoded.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = isolates::port::unbounded::<u8>();
    /// tx.send(5).unwrap();
    /// assert_eq!(rx.recv().unwrap(), 5);
    /// ```
    pub fn send(&self, msg: T) -> Result<(), SendError<T>> {
        let Packed { envelope, kept } = match self.codec.pack(msg, "message") {
            Ok(packed) => packed,
            Err((msg, e)) => return Err(SendError::Encode(msg, e)),
        };
        match self.tx.send(envelope) {
            Ok(()) => Ok(()),
            Err(cb::SendError(envelope)) => {
                Err(SendError::Disconnected(Packed::take_back(envelope, kept)))
            }
        }
    }

    /// Sends a message if there is room now; never blocks.
    ///
    /// # Errors
    ///
    /// The message comes back in [`TrySendError::Full`],
    /// [`TrySendError::Disconnected`] or [`TrySendError::Encode`].
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, _rx) = isolates::port::bounded::<u8>(1);
    /// assert!(tx.try_send(1).is_ok());
    /// assert!(tx.try_send(2).unwrap_err().is_full());
    /// ```
    pub fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
        let Packed { envelope, kept } = match self.codec.pack(msg, "message") {
            Ok(packed) => packed,
            Err((msg, e)) => return Err(TrySendError::Encode(msg, e)),
        };
        self.tx.try_send(envelope).map_err(|e| match e {
            cb::TrySendError::Full(envelope) => {
                TrySendError::Full(Packed::take_back(envelope, kept))
            }
            cb::TrySendError::Disconnected(envelope) => {
                TrySendError::Disconnected(Packed::take_back(envelope, kept))
            }
        })
    }

    /// Sends a message, waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// As [`send_deadline`](SendPort::send_deadline).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let (tx, rx) = isolates::port::bounded::<u8>(1);
    /// tx.send_timeout(1, Duration::from_millis(10)).unwrap();
    /// assert!(tx.send_timeout(2, Duration::from_millis(10)).is_err());
    /// assert_eq!(rx.recv().unwrap(), 1);
    /// ```
    pub fn send_timeout(&self, msg: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        match crate::time::deadline_after(timeout) {
            Some(deadline) => self.send_deadline(msg, deadline),
            None => self.send(msg).map_err(|e| match e {
                SendError::Disconnected(msg) => SendTimeoutError::Disconnected(msg),
                SendError::Encode(msg, e) => SendTimeoutError::Encode(msg, e),
            }),
        }
    }

    /// Sends a message, waiting until `deadline` at most for room.
    ///
    /// # Errors
    ///
    /// The message comes back in [`SendTimeoutError::Timeout`],
    /// [`SendTimeoutError::Disconnected`] or [`SendTimeoutError::Encode`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let (tx, rx) = isolates::port::bounded::<u8>(1);
    /// tx.send_deadline(1, Instant::now() + Duration::from_millis(10)).unwrap();
    /// assert_eq!(rx.recv().unwrap(), 1);
    /// ```
    pub fn send_deadline(&self, msg: T, deadline: Instant) -> Result<(), SendTimeoutError<T>> {
        let Packed { envelope, kept } = match self.codec.pack(msg, "message") {
            Ok(packed) => packed,
            Err((msg, e)) => return Err(SendTimeoutError::Encode(msg, e)),
        };
        self.tx
            .send_deadline(envelope, deadline)
            .map_err(|e| match e {
                cb::SendTimeoutError::Timeout(envelope) => {
                    SendTimeoutError::Timeout(Packed::take_back(envelope, kept))
                }
                cb::SendTimeoutError::Disconnected(envelope) => {
                    SendTimeoutError::Disconnected(Packed::take_back(envelope, kept))
                }
            })
    }

    /// How many messages wait in the mailbox.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, _rx) = isolates::port::unbounded::<u8>();
    /// tx.send(1).unwrap();
    /// assert_eq!(tx.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.tx.len()
    }

    /// Whether the mailbox is empty.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, _rx) = isolates::port::unbounded::<u8>();
    /// assert!(tx.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.tx.is_empty()
    }

    /// The mailbox's capacity, or `None` if unbounded.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, _rx) = isolates::port::bounded::<u8>(3);
    /// assert_eq!(tx.capacity(), Some(3));
    /// ```
    pub fn capacity(&self) -> Option<usize> {
        self.tx.capacity()
    }

    /// Whether both ports send into the same mailbox.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, _rx) = isolates::port::unbounded::<u8>();
    /// let (b, _rx2) = isolates::port::unbounded::<u8>();
    /// assert!(a.same_port(&a.clone()));
    /// assert!(!a.same_port(&b));
    /// ```
    pub fn same_port(&self, other: &SendPort<T>) -> bool {
        self.tx.same_channel(&other.tx)
    }

    /// A number of the port's channel, unique in the process and the same
    /// in every clone: what remembers a port without keeping it open.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}

impl<T> ReceivePort<T> {
    /// Waits for a message and decodes it.
    ///
    /// # Errors
    ///
    /// [`RecvError::Disconnected`] when the port is empty and every sender is
    /// gone; [`RecvError::Decode`] when the message's bytes are bad.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = isolates::port::unbounded::<u8>();
    /// tx.send(9).unwrap();
    /// assert_eq!(rx.recv(), Ok(9));
    /// ```
    pub fn recv(&self) -> Result<T, RecvError> {
        let envelope = self.rx.recv().map_err(|_| RecvError::Disconnected)?;
        self.codec
            .unpack(envelope, "message")
            .map_err(RecvError::Decode)
    }

    /// Takes a message if one is waiting; never blocks.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`], [`TryRecvError::Disconnected`] or
    /// [`TryRecvError::Decode`].
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::TryRecvError;
    /// let (tx, rx) = isolates::port::unbounded::<u8>();
    /// assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    /// tx.send(1).unwrap();
    /// assert_eq!(rx.try_recv(), Ok(1));
    /// ```
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let envelope = self.rx.try_recv().map_err(|e| match e {
            cb::TryRecvError::Empty => TryRecvError::Empty,
            cb::TryRecvError::Disconnected => TryRecvError::Disconnected,
        })?;
        self.codec
            .unpack(envelope, "message")
            .map_err(TryRecvError::Decode)
    }

    /// Waits at most `timeout` for a message.
    ///
    /// # Errors
    ///
    /// As [`recv_deadline`](ReceivePort::recv_deadline).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use isolates::RecvTimeoutError;
    /// let (_tx, rx) = isolates::port::unbounded::<u8>();
    /// assert_eq!(rx.recv_timeout(Duration::from_millis(5)), Err(RecvTimeoutError::Timeout));
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        match crate::time::deadline_after(timeout) {
            Some(deadline) => self.recv_deadline(deadline),
            None => self.recv().map_err(|e| match e {
                RecvError::Disconnected => RecvTimeoutError::Disconnected,
                RecvError::Decode(e) => RecvTimeoutError::Decode(e),
            }),
        }
    }

    /// Waits until `deadline` at most for a message.
    ///
    /// # Errors
    ///
    /// [`RecvTimeoutError::Timeout`], [`RecvTimeoutError::Disconnected`] or
    /// [`RecvTimeoutError::Decode`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let (tx, rx) = isolates::port::unbounded::<u8>();
    /// tx.send(3).unwrap();
    /// assert_eq!(rx.recv_deadline(Instant::now() + Duration::from_secs(1)), Ok(3));
    /// ```
    pub fn recv_deadline(&self, deadline: Instant) -> Result<T, RecvTimeoutError> {
        let envelope = self.rx.recv_deadline(deadline).map_err(|e| match e {
            cb::RecvTimeoutError::Timeout => RecvTimeoutError::Timeout,
            cb::RecvTimeoutError::Disconnected => RecvTimeoutError::Disconnected,
        })?;
        self.codec
            .unpack(envelope, "message")
            .map_err(RecvTimeoutError::Decode)
    }

    /// A blocking iterator over messages; it ends when every sender is gone.
    /// Messages that fail to decode are skipped (use [`recv`](Self::recv) to
    /// see those errors).
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = isolates::port::unbounded::<u8>();
    /// tx.send(1).unwrap();
    /// tx.send(2).unwrap();
    /// drop(tx);
    /// assert_eq!(rx.iter().collect::<Vec<_>>(), vec![1, 2]);
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        self.rx
            .iter()
            .filter_map(|e| self.codec.unpack(e, "message").ok())
    }

    /// An iterator over the messages waiting now; never blocks. Messages that
    /// fail to decode are skipped.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = isolates::port::unbounded::<u8>();
    /// tx.send(1).unwrap();
    /// assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![1]);
    /// assert_eq!(rx.try_iter().count(), 0);
    /// ```
    pub fn try_iter(&self) -> impl Iterator<Item = T> + '_ {
        self.rx
            .try_iter()
            .filter_map(|e| self.codec.unpack(e, "message").ok())
    }

    /// How many messages wait in the mailbox.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = isolates::port::unbounded::<u8>();
    /// tx.send(1).unwrap();
    /// assert_eq!(rx.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// Whether the mailbox is empty.
    ///
    /// # Examples
    ///
    /// ```
    /// let (_tx, rx) = isolates::port::unbounded::<u8>();
    /// assert!(rx.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

/// On the wire a port is only the index of its attachment.
#[derive(Serialize, Deserialize)]
#[serde(rename = "SendPort")]
struct PortIndex(u32);

impl<T: Send + 'static> Serialize for SendPort<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match envelope::attach(Attachment::Port(Box::new(self.clone()))) {
            Ok(index) => PortIndex(index).serialize(serializer),
            Err(_) => Err(serde::ser::Error::custom(envelope::error(
                "a SendPort can only be encoded inside a message sent through isolates ports",
            ))),
        }
    }
}

impl<'de, T: Send + 'static> Deserialize<'de> for SendPort<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let PortIndex(index) = PortIndex::deserialize(deserializer)?;
        match envelope::take(index).map_err(serde::de::Error::custom)? {
            Attachment::Port(port) => port.downcast::<SendPort<T>>().map(|p| *p).map_err(|_| {
                serde::de::Error::custom(envelope::error(format!(
                    "attachment {index} is a SendPort of another message type than {}",
                    std::any::type_name::<T>()
                )))
            }),
            Attachment::Buffer(_) => Err(serde::de::Error::custom(envelope::error(format!(
                "attachment {index} is a Transfer where a SendPort was expected"
            )))),
        }
    }
}
