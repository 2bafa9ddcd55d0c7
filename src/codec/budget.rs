//! The decode budget: what bincode's limit does not bound.
//!
//! bincode's limit counts a decoded value's primitives and lengths, not the
//! heap it takes: sixteen million `None`s of one byte each decode into a
//! `Vec<Option<[u64; 4]>>` of 640 MiB, and a `Vec<()>` with a length of
//! 2⁶⁴ takes no bytes per element and loops for hours. A decode therefore
//! runs through [`Guard`], a deserializer wrapping bincode's that charges
//! against a budget of [`HEAP_PER_LIMIT`] times the codec's limit:
//!
//! - each element of a sequence its in-memory size twice over (room for a
//!   `Vec`'s growth; the first element a `Vec`'s first allocation), each
//!   key and value of a map four times over (a hash table's empty buckets
//!   and control bytes; the first a B-tree's first node), and at least 1
//!   byte whatever its size: so the number of values a decode visits, and
//!   with it its time, is bounded too;
//! - each element of a tuple, an array or a struct 1 byte (they live inline
//!   in their parent, already charged);
//! - each string or byte buffer its length, before it is copied out of the
//!   frame.
//!
//! A sequence or map whose length alone passes what is left is refused
//! before any element is read, and no size hint reaches a visitor, so
//! nothing is preallocated on a length's word. Values nest at most
//! [`MAX_DEPTH`] deep, which bounds the decoder's stack.
//!
//! The sender cannot count these charges: they depend on the receiver's
//! types (a `None` is one byte whatever it is a `None` of). It refuses what
//! bincode's limit would ([`claim`](super::claim)); a message whose decoded
//! form would take more memory than the limit is refused by the receiver,
//! with [`CodecError::ClaimOverLimit`](crate::CodecError::ClaimOverLimit).

use std::cell::Cell;
use std::fmt;
use std::mem::size_of;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

/// The decode budget, in multiples of the codec's limit: room for the
/// growth of a `Vec` whose elements bincode's count lets in.
pub(super) const HEAP_PER_LIMIT: usize = 2;

/// How deep values may nest (options, newtypes, sequences, maps, enums):
/// a decode's recursion, and so its stack, is bounded.
pub(crate) const MAX_DEPTH: usize = 128;

/// What a sequence element of `size` bytes costs when it is the `index`-th.
pub(super) fn seq_slot(size: usize, index: usize) -> usize {
    // A `Vec`'s first allocation holds 8 one-byte, 4 small or 1 large
    // element; later its capacity at most doubles.
    let first = match size {
        1 => 8,
        2..=1024 => 4,
        _ => 1,
    };
    let factor = if index == 0 { first.max(2) } else { 2 };
    size.saturating_mul(factor).max(1)
}

/// What a map key or value of `size` bytes costs in the `index`-th entry.
pub(super) fn map_slot(size: usize, index: usize) -> usize {
    if index == 0 {
        // A B-tree's first leaf holds 11 entries.
        size.saturating_mul(12).saturating_add(32)
    } else {
        // A hash table's buckets are at most 8/7 × 2 of its entries, plus
        // a control byte each, and the old table lives while it grows.
        size.saturating_mul(4).saturating_add(4)
    }
}

/// What an element of a tuple, array or struct costs: it is inline.
pub(super) const INLINE: usize = 1;

/// Why a decode was stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Exceeded {
    /// The value would take more memory than the budget.
    Memory,
    /// The value nests deeper than [`MAX_DEPTH`].
    Depth,
}

/// One decode's budget.
pub(super) struct Budget {
    left: Cell<usize>,
    depth: Cell<usize>,
    exceeded: Cell<Option<Exceeded>>,
}

impl Budget {
    pub(super) fn new(limit: usize) -> Self {
        Budget {
            left: Cell::new(limit),
            depth: Cell::new(0),
            exceeded: Cell::new(None),
        }
    }

    /// Why the decode was stopped, if the budget stopped it.
    pub(super) fn exceeded(&self) -> Option<Exceeded> {
        self.exceeded.get()
    }

    fn stop<E: de::Error>(&self, why: Exceeded) -> E {
        self.exceeded.set(Some(why));
        E::custom(match why {
            Exceeded::Memory => "the value takes more memory than the codec's limit",
            Exceeded::Depth => "the value nests too deep",
        })
    }

    fn charge<E: de::Error>(&self, n: usize) -> Result<(), E> {
        match self.left.get().checked_sub(n) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => Err(self.stop(Exceeded::Memory)),
        }
    }

    /// Refuses a length whose elements, at the least `each` a piece,
    /// cannot fit.
    fn fits<E: de::Error>(&self, len: Option<usize>, each: usize) -> Result<(), E> {
        match len {
            Some(n) if n.saturating_mul(each) > self.left.get() => Err(self.stop(Exceeded::Memory)),
            _ => Ok(()),
        }
    }

    /// Runs `f` one level deeper.
    fn nest<T, E: de::Error>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let depth = self.depth.get() + 1;
        if depth > MAX_DEPTH {
            return Err(self.stop(Exceeded::Depth));
        }
        self.depth.set(depth);
        let out = f();
        self.depth.set(depth - 1);
        out
    }
}

/// Deserializes a `T` under `budget` (the seed of a whole decode).
pub(super) struct Budgeted<'b, T> {
    pub(super) budget: &'b Budget,
    pub(super) value: std::marker::PhantomData<T>,
}

impl<'de, T: de::Deserialize<'de>> DeserializeSeed<'de> for Budgeted<'_, T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<T, D::Error> {
        T::deserialize(Guard {
            de,
            budget: self.budget,
        })
    }
}

/// What a visitor is about to be shown, for the charges of its elements.
#[derive(Clone, Copy)]
enum Shape {
    /// A sequence of any length: its elements live on the heap.
    Seq,
    /// A tuple, array or struct: its elements live inline.
    Inline,
    /// Anything else (a map, a scalar, an enum).
    Other,
}

/// A deserializer charging what it decodes to a budget.
struct Guard<'b, D> {
    de: D,
    budget: &'b Budget,
}

impl<'b, D> Guard<'b, D> {
    fn wrap<V>(&self, inner: V, shape: Shape) -> Wrap<'b, V> {
        Wrap {
            inner,
            budget: self.budget,
            shape,
        }
    }
}

macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*) => $shape:ident;)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            let visitor = self.wrap(visitor, Shape::$shape);
            self.de.$method($($arg,)* visitor)
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Guard<'_, D> {
    type Error = D::Error;

    forward! {
        deserialize_any() => Seq;
        deserialize_bool() => Other;
        deserialize_i8() => Other;
        deserialize_i16() => Other;
        deserialize_i32() => Other;
        deserialize_i64() => Other;
        deserialize_i128() => Other;
        deserialize_u8() => Other;
        deserialize_u16() => Other;
        deserialize_u32() => Other;
        deserialize_u64() => Other;
        deserialize_u128() => Other;
        deserialize_f32() => Other;
        deserialize_f64() => Other;
        deserialize_char() => Other;
        deserialize_str() => Other;
        deserialize_bytes() => Other;
        deserialize_option() => Other;
        deserialize_unit() => Other;
        deserialize_unit_struct(name: &'static str) => Other;
        deserialize_newtype_struct(name: &'static str) => Other;
        deserialize_seq() => Seq;
        deserialize_tuple(len: usize) => Inline;
        deserialize_tuple_struct(name: &'static str, len: usize) => Inline;
        deserialize_map() => Other;
        deserialize_struct(name: &'static str, fields: &'static [&'static str]) => Inline;
        deserialize_enum(name: &'static str, variants: &'static [&'static str]) => Other;
        deserialize_identifier() => Other;
        deserialize_ignored_any() => Seq;
    }

    /// Read as a borrowed `str` (the same bytes): the string is charged
    /// before its visitor copies it, not after the decoder allocated it.
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.deserialize_str(visitor)
    }

    /// Read as borrowed bytes, for the same reason.
    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.deserialize_bytes(visitor)
    }

    fn is_human_readable(&self) -> bool {
        self.de.is_human_readable()
    }
}

/// A visitor passing what it is shown on, under the budget.
struct Wrap<'b, V> {
    inner: V,
    budget: &'b Budget,
    shape: Shape,
}

macro_rules! pass {
    ($($method:ident($ty:ty);)*) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

macro_rules! text {
    ($($method:ident($ty:ty);)*) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.budget.charge(v.len())?;
            self.inner.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    pass! {
        visit_bool(bool);
        visit_i8(i8);
        visit_i16(i16);
        visit_i32(i32);
        visit_i64(i64);
        visit_i128(i128);
        visit_u8(u8);
        visit_u16(u16);
        visit_u32(u32);
        visit_u64(u64);
        visit_u128(u128);
        visit_f32(f32);
        visit_f64(f64);
        visit_char(char);
    }

    text! {
        visit_str(&str);
        visit_borrowed_str(&'de str);
        visit_string(String);
        visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]);
        visit_byte_buf(Vec<u8>);
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<V::Value, D::Error> {
        let budget = self.budget;
        budget.nest(|| self.inner.visit_some(Guard { de, budget }))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, de: D) -> Result<V::Value, D::Error> {
        let budget = self.budget;
        budget.nest(|| self.inner.visit_newtype_struct(Guard { de, budget }))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let budget = self.budget;
        let heap = !matches!(self.shape, Shape::Inline);
        if heap {
            budget.fits(seq.size_hint(), 1)?;
        }
        budget.nest(|| {
            self.inner.visit_seq(Seq {
                seq,
                budget,
                heap,
                index: 0,
            })
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let budget = self.budget;
        budget.fits(map.size_hint(), 2)?;
        budget.nest(|| {
            self.inner.visit_map(Map {
                map,
                budget,
                index: 0,
            })
        })
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        let budget = self.budget;
        budget.nest(|| self.inner.visit_enum(Enum { data, budget }))
    }
}

/// A seed decoding under the budget.
struct Seed<'b, S> {
    seed: S,
    budget: &'b Budget,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<S::Value, D::Error> {
        self.seed.deserialize(Guard {
            de,
            budget: self.budget,
        })
    }
}

struct Seq<'b, A> {
    seq: A,
    budget: &'b Budget,
    heap: bool,
    index: usize,
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Seq<'_, A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        let budget = self.budget;
        let value = self.seq.next_element_seed(Seed { seed, budget })?;
        if value.is_some() {
            budget.charge(if self.heap {
                seq_slot(size_of::<T::Value>(), self.index)
            } else {
                INLINE
            })?;
            self.index += 1;
        }
        Ok(value)
    }

    fn size_hint(&self) -> Option<usize> {
        // Nothing is preallocated on a length's word: a `Vec` grows as its
        // elements come, each charged.
        None
    }
}

struct Map<'b, A> {
    map: A,
    budget: &'b Budget,
    index: usize,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Map<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let budget = self.budget;
        let key = self.map.next_key_seed(Seed { seed, budget })?;
        if key.is_some() {
            budget.charge(map_slot(size_of::<K::Value>(), self.index))?;
        }
        Ok(key)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        let budget = self.budget;
        let value = self.map.next_value_seed(Seed { seed, budget })?;
        budget.charge(map_slot(size_of::<T::Value>(), self.index))?;
        self.index += 1;
        Ok(value)
    }

    fn size_hint(&self) -> Option<usize> {
        None
    }
}

struct Enum<'b, A> {
    data: A,
    budget: &'b Budget,
}

impl<'de, 'b, A: EnumAccess<'de>> EnumAccess<'de> for Enum<'b, A> {
    type Error = A::Error;
    type Variant = Variant<'b, A::Variant>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), A::Error> {
        let budget = self.budget;
        let (value, variant) = self.data.variant_seed(Seed { seed, budget })?;
        Ok((value, Variant { variant, budget }))
    }
}

struct Variant<'b, A> {
    variant: A,
    budget: &'b Budget,
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Variant<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.variant.unit_variant()
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, A::Error> {
        let budget = self.budget;
        self.variant.newtype_variant_seed(Seed { seed, budget })
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        let visitor = Wrap {
            inner: visitor,
            budget: self.budget,
            shape: Shape::Inline,
        };
        self.variant.tuple_variant(len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let visitor = Wrap {
            inner: visitor,
            budget: self.budget,
            shape: Shape::Inline,
        };
        self.variant.struct_variant(fields, visitor)
    }
}
