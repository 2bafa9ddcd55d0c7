//! Codec layer: how a message becomes bytes and back.
//!
//! Between threads of one process a message moves as a value: nothing is
//! encoded. A message is encoded by a [`Codec`] where bytes are needed: on
//! a port or isolate built with Dart's copy semantics
//! ([`port::unbounded_with`](crate::port::unbounded_with),
//! [`IsolateBuilder::copy_messages`](crate::IsolateBuilder::copy_messages),
//! [`run_with`](crate::run_with)), for a pool task's retry copy, in the
//! work manager's store, and at every boundary the value crosses. The
//! default codec is [`Bincode`] (bincode 2 over serde, standard
//! configuration) and every decode runs under a limit that bounds its bytes,
//! its heap and its time (see [`Bincode`]): a hostile length prefix gets a
//! [`CodecError`], never an allocation above the limit.
//!
//! Two escapes from "everything is copied through serde" where a message
//! is encoded:
//! - [`bytes`]: a `#[serde(with = "isolates::codec::bytes")]` helper that
//!   writes a `Vec<u8>` (or `&[u8]`) as one block instead of byte by byte;
//! - [`Transfer`]: an owned buffer that moves inside a message without any
//!   copy, whatever its size.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::CodecError;

mod budget;
pub mod bytes;
mod claim;
pub(crate) mod envelope;
mod transfer;

pub use transfer::Transfer;

/// The default decode limit of [`Bincode`]: 64 MiB (read it as
/// [`Bincode::DEFAULT_LIMIT`]).
pub(crate) const DEFAULT_LIMIT: usize = 64 << 20;

/// Turns values into bytes and back, under a size limit.
///
/// The crate's ports and isolates are written against this trait, not against
/// bincode, so the wire format can change without changing the API. An
/// implementation must never panic or allocate more than [`limit`](Codec::limit)
/// bytes on any input, and must report bad input as a [`CodecError`].
///
/// [`Transfer`] and [`SendPort`](crate::SendPort) values inside a message work
/// with any codec: they serialize as small indexes into the envelope.
///
/// # Examples
///
/// ```
/// use isolates::{Bincode, Codec};
///
/// let codec = Bincode::new();
/// let mut buf = Vec::new();
/// codec.encode(&("point", 3_i32, 4_i32), &mut buf).unwrap();
/// let back: (String, i32, i32) = codec.decode(&buf).unwrap();
/// assert_eq!(back, ("point".to_string(), 3, 4));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a codec",
    label = "not an `isolates::Codec`",
    note = "use `isolates::Bincode` (e.g. `Bincode::<{{ 1 << 20 }}>::limited()`), or implement `isolates::Codec` for `{Self}`"
)]
pub trait Codec: Clone + fmt::Debug + Send + Sync + 'static {
    /// Appends the encoding of `value` to `out`.
    ///
    /// # Errors
    ///
    /// [`CodecError::Encode`] if the value's `Serialize` fails, or
    /// [`CodecError::TooLarge`] if the encoding, or the memory decoding it
    /// would claim, exceeds the limit (the receiver could not decode it).
    fn encode<T: Serialize + ?Sized>(&self, value: &T, out: &mut Vec<u8>)
    -> Result<(), CodecError>;

    /// Decodes a whole value from `bytes`; every byte must be used.
    ///
    /// # Errors
    ///
    /// [`CodecError::TooLarge`], [`CodecError::Malformed`] or
    /// [`CodecError::TrailingBytes`] for bad input.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError>;

    /// The most bytes this codec encodes into, or allocates while decoding,
    /// one message.
    fn limit(&self) -> usize;
}

/// The default codec: bincode 2 with its standard configuration (little
/// endian, variable-length integers) and a decode limit of `LIMIT` bytes.
///
/// The limit is a const parameter because bincode checks it at compile time:
/// pick another with `Bincode::<{ 1 << 20 }>::limited()`. It bounds a decode
/// three ways, so no frame can make the receiver abort, run out of memory or
/// spin (for the message types these bounds cover: see the last point):
///
/// - **bytes**: a frame over the limit is [`CodecError::TooLarge`];
/// - **bincode's count**: each integer its in-memory width whatever its varint
///   size (a `u64` counts 8), each length prefix 8, each string or byte
///   buffer its length; over the limit is [`CodecError::ClaimOverLimit`];
/// - **heap and time**: a decode holds at most **twice** the limit in heap
///   (a `Vec` of `LIMIT / 8` `u64`s, which bincode's count allows, takes
///   `LIMIT` bytes and up to as much again of room to grow). It charges the
///   decoded value's memory: each element of a sequence twice its size, each
///   map entry four times (a hash table's), each string its length, and
///   every element at least 1 byte, so `Vec<()>` with a length of 2⁶⁴ is
///   refused before its first element and a decode visits at most
///   `2 × LIMIT` values. Nothing is preallocated on a length's word. Over is
///   [`CodecError::ClaimOverLimit`]; values nested deeper than 128 levels are
///   [`CodecError::TooDeep`] (which bounds the decoder's stack). What `Box`es
///   hold, and what `HashSet`s and `BTreeSet`s (charged as sequences) take
///   beyond a `Vec`, is not charged.
/// - **not covered**: the contents of a `Box` (or `Rc`, `Arc`) are charged
///   as if they sat inside their parent, one byte per value at least, while
///   they take their full size on the heap. A type that boxes a large
///   fixed-size value, such as `Vec<Box<[Option<[u64; 4]>; 32]>>` (a boxed
///   array of 32 `None`s is 33 bytes on the wire and 1,280 on the heap),
///   lets a frame under the limit make a decode hold many times the limit
///   (about 40 times for that type). Keep such types out of messages from
///   senders you do not trust, or give their codec a limit that much
///   smaller.
///
/// Encoding refuses a message over the limit in bytes or in bincode's count,
/// so the receiver decodes what a sender sends unless its decoded form
/// takes more memory than the limit: that depends on the receiver's types,
/// not on the bytes (a `None` is one byte whatever it is a `None` of), and
/// the receiver refuses it with [`CodecError::ClaimOverLimit`].
///
/// # Examples
///
/// ```
/// use isolates::{Bincode, Codec, CodecError};
///
/// let small = Bincode::<1024>::limited();
/// let mut buf = Vec::new();
/// let err = small.encode(&vec![0u64; 2000], &mut buf).unwrap_err();
/// assert!(matches!(err, CodecError::TooLarge { limit: 1024, .. }));
///
/// // 1,000 `None`s are 1,000 bytes on the wire but 16 KB in memory, over
/// // twice the limit.
/// let nones = vec![None::<[u64; 1]>; 1000];
/// let mut buf = Vec::new();
/// Bincode::new().encode(&nones, &mut buf).unwrap();
/// let err = small.decode::<Vec<Option<[u64; 1]>>>(&buf).unwrap_err();
/// assert_eq!(err, CodecError::ClaimOverLimit { limit: 1024 });
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Bincode<const LIMIT: usize = DEFAULT_LIMIT>;

impl Bincode {
    /// The default decode limit: 64 MiB.
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::{Bincode, Codec};
    /// assert_eq!(Bincode::new().limit(), Bincode::DEFAULT_LIMIT);
    /// ```
    pub const DEFAULT_LIMIT: usize = DEFAULT_LIMIT;

    /// The codec with the default limit, [`DEFAULT_LIMIT`](Self::DEFAULT_LIMIT).
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::{Bincode, Codec};
    /// assert_eq!(Bincode::new().limit(), 64 << 20);
    /// ```
    pub const fn new() -> Self {
        Bincode
    }
}

impl<const LIMIT: usize> Bincode<LIMIT> {
    /// The codec with the limit `LIMIT`.
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::{Bincode, Codec};
    /// assert_eq!(Bincode::<4096>::limited().limit(), 4096);
    /// ```
    pub const fn limited() -> Self {
        Bincode
    }

    fn config() -> impl bincode::config::Config {
        bincode::config::standard().with_limit::<LIMIT>()
    }
}

impl<const LIMIT: usize> fmt::Debug for Bincode<LIMIT> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bincode").field("limit", &LIMIT).finish()
    }
}

impl<const LIMIT: usize> Codec for Bincode<LIMIT> {
    fn encode<T: Serialize + ?Sized>(
        &self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        let start = out.len();
        bincode::serde::encode_into_std_write(value, out, Self::config()).map_err(|e| {
            let text = match e {
                // A `Serialize` impl's own message, without bincode's wrapper.
                bincode::error::EncodeError::OtherString(text) => text,
                other => other.to_string(),
            };
            envelope::take_attachment_error(&text).unwrap_or(CodecError::Encode(text))
        })?;
        let size = out.len() - start;
        if size > LIMIT {
            out.truncate(start);
            return Err(CodecError::TooLarge { size, limit: LIMIT });
        }
        // A frame this large may claim more than the limit when decoded
        // (see `claim`): refuse here what the receiver would refuse.
        if size > LIMIT / claim::MAX_CLAIM_PER_BYTE {
            let claimed = envelope::counting(|| claim::claim(value));
            if let Some(claimed) = claimed.filter(|&c| c > LIMIT) {
                out.truncate(start);
                return Err(CodecError::TooLarge {
                    size: claimed,
                    limit: LIMIT,
                });
            }
        }
        Ok(())
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        if bytes.len() > LIMIT {
            return Err(CodecError::TooLarge {
                size: bytes.len(),
                limit: LIMIT,
            });
        }
        let budget = budget::Budget::new(LIMIT.saturating_mul(budget::HEAP_PER_LIMIT));
        let seed = budget::Budgeted::<T> {
            budget: &budget,
            value: std::marker::PhantomData,
        };
        match bincode::serde::seed_decode_from_slice(seed, bytes, Self::config()) {
            Ok((value, read)) if read == bytes.len() => Ok(value),
            Ok((_, read)) => Err(CodecError::TrailingBytes {
                unread: bytes.len() - read,
            }),
            Err(bincode::error::DecodeError::LimitExceeded) => {
                Err(CodecError::ClaimOverLimit { limit: LIMIT })
            }
            Err(_) if budget.exceeded() == Some(budget::Exceeded::Memory) => {
                Err(CodecError::ClaimOverLimit { limit: LIMIT })
            }
            Err(_) if budget.exceeded() == Some(budget::Exceeded::Depth) => {
                Err(CodecError::TooDeep {
                    limit: budget::MAX_DEPTH,
                })
            }
            Err(e) => {
                let text = match e {
                    // A `Deserialize` impl's own message, without bincode's
                    // wrapper.
                    bincode::error::DecodeError::OtherString(text) => text,
                    other => other.to_string(),
                };
                Err(envelope::take_attachment_error(&text).unwrap_or(CodecError::Malformed(text)))
            }
        }
    }

    fn limit(&self) -> usize {
        LIMIT
    }
}
