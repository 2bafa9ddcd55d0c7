//! A decode's heap and time are bounded by the codec's limit, not only its
//! bytes: a counting global allocator measures the peak heap of each
//! decode (on the decoding thread), which must stay within twice the limit
//! (the budget: see `Bincode`), for hostile frames and random bytes read as
//! several types.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use isolates::{Bincode, Codec, CodecError};
use proptest::collection::vec;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

// ---- the counting allocator -------------------------------------------------

#[global_allocator]
static ALLOCATOR: isolates_counting_alloc::Counting = isolates_counting_alloc::Counting;

use isolates_counting_alloc::peak_of;

/// Room for an error's text (bincode's message, then ours): a few hundred
/// bytes, whatever the input.
const ERROR_TEXT: usize = 512;

/// Decodes `bytes` as `T` with `codec`, checking the decode held at most
/// twice the limit (plus an error's text), and returns what it gave.
fn decode_within<T, const LIMIT: usize>(
    codec: &Bincode<LIMIT>,
    bytes: &[u8],
) -> Result<Result<T, CodecError>, TestCaseError>
where
    T: serde::de::DeserializeOwned,
{
    let (out, peak) = peak_of(|| codec.decode::<T>(bytes));
    prop_assert!(
        peak <= 2 * LIMIT + ERROR_TEXT,
        "decoding {} bytes as {} held {peak} bytes, over twice the limit of {LIMIT}",
        bytes.len(),
        std::any::type_name::<T>()
    );
    Ok(out)
}

/// A standard-config varint length: `0xfd` then a little-endian `u64`.
fn length_prefix(len: u64) -> Vec<u8> {
    let mut frame = vec![0xfd];
    frame.extend_from_slice(&len.to_le_bytes());
    frame
}

// ---- hostile frames ---------------------------------------------------------

/// 16 MiB of zeros after a length of 16 Mi: as many `None`s, which bincode
/// counts a byte each but which take 40 bytes each in memory (1 GiB once
/// in a `Vec`). Refused under the default limit, holding no more than it.
#[test]
fn nones_that_would_take_a_gigabyte_are_refused_within_the_limit() {
    let n = 16 << 20;
    let mut frame = length_prefix(n as u64);
    frame.resize(frame.len() + n, 0);
    let codec = Bincode::new();
    let out =
        decode_within::<Vec<Option<[u64; 4]>>, { Bincode::DEFAULT_LIMIT }>(&codec, &frame).unwrap();
    assert_eq!(
        out.unwrap_err(),
        CodecError::ClaimOverLimit {
            limit: Bincode::DEFAULT_LIMIT
        }
    );
}

/// A `Vec<()>` with a length of 2⁶⁴ − 1 takes no byte per element: it is
/// refused before its first, not after hours of looping.
#[test]
fn zero_sized_elements_with_a_huge_length_are_refused_at_once() {
    let frame = length_prefix(u64::MAX);
    let codec = Bincode::new();
    let started = Instant::now();
    let out = decode_within::<Vec<()>, { Bincode::DEFAULT_LIMIT }>(&codec, &frame).unwrap();
    assert_eq!(
        out.unwrap_err(),
        CodecError::ClaimOverLimit {
            limit: Bincode::DEFAULT_LIMIT
        }
    );
    // Hours before; now no element is read. Generous for a loaded machine.
    assert!(started.elapsed() < Duration::from_secs(5));
    // Zero-sized elements still cost a byte each: at most twice the limit.
    let small = Bincode::<1024>::limited();
    let fits = length_prefix(2048);
    assert_eq!(small.decode::<Vec<()>>(&fits).map(|v| v.len()), Ok(2048));
    let over = length_prefix(2049);
    assert_eq!(
        small.decode::<Vec<()>>(&over),
        Err(CodecError::ClaimOverLimit { limit: 1024 })
    );
}

/// A length prefix no longer makes a visitor preallocate: under a 1 KiB
/// limit, a sequence or map whose length would have preallocated several
/// KiB holds at most the limit before the frame runs out.
#[test]
fn length_prefixes_do_not_preallocate() {
    let small = Bincode::<1024>::limited();
    let frame = length_prefix(1000);
    let out = decode_within::<Vec<u64>, 1024>(&small, &frame).unwrap();
    assert!(matches!(out, Err(CodecError::Malformed(_))), "{out:?}");
    // A map's entries cost at least 2 each: 1000 of them may fit.
    let out = decode_within::<HashMap<u64, u64>, 1024>(&small, &frame).unwrap();
    assert!(matches!(out, Err(CodecError::Malformed(_))), "{out:?}");
}

/// A value nested deeper than the decoder goes is refused (its stack is
/// bounded), not a stack overflow.
#[test]
fn deep_nesting_is_refused() {
    #[derive(Debug, Serialize, Deserialize)]
    struct Node(Option<Box<Node>>);
    // 100,000 `Some`s: each one byte, each one level deeper.
    let mut frame = vec![1u8; 100_000];
    frame.push(0);
    let err = Bincode::new().decode::<Node>(&frame).unwrap_err();
    assert_eq!(err, CodecError::TooDeep { limit: 128 });
    assert!(err.to_string().contains("flatten"), "{err}");
    // A shallow one decodes.
    let mut frame = vec![1u8; 50];
    frame.push(0);
    assert!(Bincode::new().decode::<Node>(&frame).is_ok());
}

// ---- random and structured input --------------------------------------------

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Item {
    Empty,
    Word(String),
    Wide([u64; 4]),
    Many(Vec<u32>),
}

/// Decodes `bytes` as each type under test with a 4 KiB codec, each decode
/// within the limit.
fn decode_all(bytes: &[u8]) -> Result<(), TestCaseError> {
    let codec = Bincode::<4096>::limited();
    decode_within::<Vec<Option<[u64; 4]>>, 4096>(&codec, bytes)?.ok();
    decode_within::<Vec<()>, 4096>(&codec, bytes)?.ok();
    decode_within::<Vec<String>, 4096>(&codec, bytes)?.ok();
    decode_within::<Vec<Vec<u8>>, 4096>(&codec, bytes)?.ok();
    decode_within::<Vec<Item>, 4096>(&codec, bytes)?.ok();
    decode_within::<HashMap<u32, String>, 4096>(&codec, bytes)?.ok();
    decode_within::<BTreeMap<u16, Vec<u16>>, 4096>(&codec, bytes)?.ok();
    decode_within::<(String, Vec<u64>, Option<Vec<Item>>), 4096>(&codec, bytes)?.ok();
    Ok(())
}

/// Frames made of a few varint lengths and runs of one byte: the shapes
/// that make bincode's count and the heap part ways.
fn structured() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        (0u64..5000).prop_map(|n| {
            let mut v = Vec::new();
            Bincode::new().encode(&n, &mut v).unwrap();
            v
        }),
        (any::<u8>(), 0usize..2048).prop_map(|(b, n)| vec![b; n]),
        vec(any::<u8>(), 0..16),
    ];
    vec(piece, 1..6).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random bytes decode within the limit, whatever they decode to.
    #[test]
    fn random_bytes_decode_within_the_limit(bytes in vec(any::<u8>(), 0..4096)) {
        decode_all(&bytes)?;
    }

    /// Lengths and runs decode within the limit.
    #[test]
    fn lengths_and_runs_decode_within_the_limit(bytes in structured()) {
        decode_all(&bytes)?;
    }
}
