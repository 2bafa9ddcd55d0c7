//! What decoding a value will claim against [`Bincode`](super::Bincode)'s
//! limit, counted on the sending side.
//!
//! bincode's decode limit does not count wire bytes: every decoded
//! primitive claims its in-memory size (a `u64` claims 8 bytes even when its
//! varint is 1 byte), every length prefix claims 8, every string or byte
//! buffer its length. A frame under the limit can so claim up to 16 times
//! its size (a `u128` of 1 wire byte claims 16), and the receiver would
//! refuse a message the sender was told it could send. [`Bincode`]'s encode
//! therefore counts the claim of any frame larger than `limit / 16` with this
//! serializer and refuses the message there instead.
//!
//! The counts mirror `bincode` 2.0.1's serde decoder (`de_borrowed.rs` and
//! `de/impls.rs`); the codec tests check them against real decodes.
//!
//! [`Bincode`]: super::Bincode

use std::fmt;

use serde::ser::{self, Serialize};

/// How many bytes decoding `value` claims, or `None` if it fails to
/// serialize a second time.
pub(super) fn claim<T: Serialize + ?Sized>(value: &T) -> Option<usize> {
    let mut counter = Counter { total: 0 };
    value.serialize(&mut counter).ok()?;
    Some(counter.total)
}

/// The largest factor between a frame's size and its claim (a `u128`).
pub(super) const MAX_CLAIM_PER_BYTE: usize = 16;

struct Counter {
    total: usize,
}

/// The value failed to serialize.
#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the value failed to serialize")
    }
}

impl std::error::Error for Stop {}

impl ser::Error for Stop {
    fn custom<M: fmt::Display>(_: M) -> Self {
        Stop
    }
}

impl Counter {
    fn add(&mut self, n: usize) -> Result<(), Stop> {
        self.total = self.total.saturating_add(n);
        Ok(())
    }
}

/// A length prefix: decoded as a `u64`.
const LEN: usize = 8;
/// An enum variant index: decoded as a `u32`.
const VARIANT: usize = 4;
/// The `Option` tag: decoded as a `u8`.
const TAG: usize = 1;

impl ser::Serializer for &mut Counter {
    type Ok = ();
    type Error = Stop;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn serialize_bool(self, _: bool) -> Result<(), Stop> {
        self.add(1)
    }
    fn serialize_i8(self, _: i8) -> Result<(), Stop> {
        self.add(1)
    }
    fn serialize_i16(self, _: i16) -> Result<(), Stop> {
        self.add(2)
    }
    fn serialize_i32(self, _: i32) -> Result<(), Stop> {
        self.add(4)
    }
    fn serialize_i64(self, _: i64) -> Result<(), Stop> {
        self.add(8)
    }
    fn serialize_i128(self, _: i128) -> Result<(), Stop> {
        self.add(16)
    }
    fn serialize_u8(self, _: u8) -> Result<(), Stop> {
        self.add(1)
    }
    fn serialize_u16(self, _: u16) -> Result<(), Stop> {
        self.add(2)
    }
    fn serialize_u32(self, _: u32) -> Result<(), Stop> {
        self.add(4)
    }
    fn serialize_u64(self, _: u64) -> Result<(), Stop> {
        self.add(8)
    }
    fn serialize_u128(self, _: u128) -> Result<(), Stop> {
        self.add(16)
    }
    fn serialize_f32(self, _: f32) -> Result<(), Stop> {
        self.add(4)
    }
    fn serialize_f64(self, _: f64) -> Result<(), Stop> {
        self.add(8)
    }
    fn serialize_char(self, v: char) -> Result<(), Stop> {
        self.add(v.len_utf8())
    }
    fn serialize_str(self, v: &str) -> Result<(), Stop> {
        self.add(LEN.saturating_add(v.len()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Stop> {
        self.add(LEN.saturating_add(v.len()))
    }
    fn serialize_none(self) -> Result<(), Stop> {
        self.add(TAG)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Stop> {
        self.add(TAG)?;
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<(), Stop> {
        self.add(VARIANT)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Stop> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), Stop> {
        self.add(VARIANT)?;
        value.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self, Stop> {
        self.add(LEN)?;
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, Stop> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, Stop> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Stop> {
        self.add(VARIANT)?;
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self, Stop> {
        self.add(LEN)?;
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Stop> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Stop> {
        self.add(VARIANT)?;
        Ok(self)
    }
    fn is_human_readable(&self) -> bool {
        false
    }
}

/// Every compound form only counts its elements.
macro_rules! elements {
    ($($trait:ident :: $method:ident),* $(,)?) => {$(
        impl ser::$trait for &mut Counter {
            type Ok = ();
            type Error = Stop;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Stop> {
                value.serialize(&mut **self)
            }
            fn end(self) -> Result<(), Stop> {
                Ok(())
            }
        }
    )*};
}

elements!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
);

macro_rules! fields {
    ($($trait:ident),* $(,)?) => {$(
        impl ser::$trait for &mut Counter {
            type Ok = ();
            type Error = Stop;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                _: &'static str,
                value: &T,
            ) -> Result<(), Stop> {
                value.serialize(&mut **self)
            }
            fn end(self) -> Result<(), Stop> {
                Ok(())
            }
        }
    )*};
}

fields!(SerializeStruct, SerializeStructVariant);

impl ser::SerializeMap for &mut Counter {
    type Ok = ();
    type Error = Stop;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Stop> {
        key.serialize(&mut **self)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Stop> {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<(), Stop> {
        Ok(())
    }
}
