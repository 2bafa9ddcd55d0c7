//! The codec layer: round trips, hostile and random input, size limits,
//! trailing bytes, the `bytes` helper, and `Transfer` / `SendPort` outside an
//! envelope.

use std::collections::HashMap;
use std::fmt::Debug;

use isolates::{Bincode, Codec, CodecError, Transfer, port};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Inner {
    Unit,
    Number(i32),
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Point,
    Circle { radius: u32, tag: Inner },
    Many(Vec<Inner>),
    Maybe(Option<Inner>),
}

/// Integers of every width, strings, a `Vec<u64>`, an `Option`, a nested
/// enum, and a block of bytes written by the `bytes` helper (last, so the
/// tests can find it at the end of the encoding).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    small: u8,
    signed: i16,
    wide: u32,
    big: i64,
    huge: u128,
    name: String,
    numbers: Vec<u64>,
    note: Option<String>,
    shape: Shape,
    #[serde(with = "isolates::codec::bytes")]
    blob: Vec<u8>,
}

/// A `Vec<u8>` written by the `bytes` helper.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Blob(#[serde(with = "isolates::codec::bytes")] Vec<u8>);

/// A record plus buffers that travel beside the bytes when sent on a port.
#[derive(Debug, Serialize, Deserialize)]
struct Parcel {
    record: Record,
    payload: Transfer,
    extras: Vec<Transfer>,
}

fn inner() -> impl Strategy<Value = Inner> {
    prop_oneof![
        Just(Inner::Unit),
        any::<i32>().prop_map(Inner::Number),
        ".{0,12}".prop_map(Inner::Text),
    ]
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        Just(Shape::Point),
        (any::<u32>(), inner()).prop_map(|(radius, tag)| Shape::Circle { radius, tag }),
        vec(inner(), 0..6).prop_map(Shape::Many),
        option::of(inner()).prop_map(Shape::Maybe),
    ]
}

prop_compose! {
    fn record()(
        small in any::<u8>(),
        signed in any::<i16>(),
        wide in any::<u32>(),
        big in any::<i64>(),
        huge in any::<u128>(),
        name in ".{0,40}",
        numbers in vec(any::<u64>(), 0..64),
        note in option::of(".{0,20}"),
        shape in shape(),
        blob in vec(any::<u8>(), 0..600),
    ) -> Record {
        Record { small, signed, wide, big, huge, name, numbers, note, shape, blob }
    }
}

/// Decodes `bytes` as `T` with `codec` and checks the outcome: an error must
/// be one a decoder may report (and `TooLarge` exactly when the frame is over
/// the limit); a value must survive a second round trip.
fn decode_checked<T, C>(codec: &C, bytes: &[u8]) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
    C: Codec,
{
    match codec.decode::<T>(bytes) {
        Ok(value) => {
            prop_assert!(bytes.len() <= codec.limit());
            let mut again = Vec::new();
            codec
                .encode(&value, &mut again)
                .map_err(|e| TestCaseError::fail(format!("re-encoding failed: {e}")))?;
            let back: T = codec
                .decode(&again)
                .map_err(|e| TestCaseError::fail(format!("re-decoding failed: {e}")))?;
            prop_assert_eq!(back, value);
        }
        Err(CodecError::TooLarge { size, limit }) => {
            prop_assert_eq!(size, bytes.len());
            prop_assert_eq!(limit, codec.limit());
            prop_assert!(size > limit);
        }
        Err(e) => {
            prop_assert!(bytes.len() <= codec.limit(), "{e:?} for an oversized frame");
            prop_assert!(
                matches!(
                    e,
                    CodecError::ClaimOverLimit { .. }
                        | CodecError::Malformed(_)
                        | CodecError::TrailingBytes { .. }
                ),
                "unexpected decode error {e:?}"
            );
            if let CodecError::ClaimOverLimit { limit } = e {
                prop_assert_eq!(limit, codec.limit());
            }
            if let CodecError::TrailingBytes { unread } = e {
                prop_assert!(unread > 0 && unread <= bytes.len());
            }
        }
    }
    Ok(())
}

/// Decodes `bytes` as every type under test with `codec`.
fn decode_as_everything<C: Codec>(codec: &C, bytes: &[u8]) -> Result<(), TestCaseError> {
    decode_checked::<String, _>(codec, bytes)?;
    decode_checked::<Vec<u8>, _>(codec, bytes)?;
    decode_checked::<Blob, _>(codec, bytes)?;
    decode_checked::<Vec<String>, _>(codec, bytes)?;
    decode_checked::<Record, _>(codec, bytes)?;
    decode_checked::<(u64, Vec<Vec<u32>>), _>(codec, bytes)?;
    decode_checked::<HashMap<String, u32>, _>(codec, bytes)?;
    Ok(())
}

proptest! {
    // Failures print the minimal input; no regression files are written.
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn record_round_trips_through_the_default_codec(r in record()) {
        let codec = Bincode::new();
        // `encode` appends: what was in the buffer stays in front.
        let mut buf = vec![0xAA, 0xBB];
        codec.encode(&r, &mut buf).unwrap();
        prop_assert_eq!(&buf[..2], &[0xAA, 0xBB]);
        // The annotated field is written as one raw block, at the end.
        prop_assert!(buf.ends_with(&r.blob));
        let back: Record = codec.decode(&buf[2..]).unwrap();
        prop_assert_eq!(back, r);
    }

    #[test]
    fn parcel_round_trips_through_a_port_with_its_transfers(
        r in record(),
        payload in vec(any::<u8>(), 1..4096),
        extras in vec(vec(any::<u8>(), 0..64), 0..5),
    ) {
        let (tx, rx) = port::unbounded::<Parcel>();
        let expected = payload.clone();
        let payload_ptr = payload.as_ptr();
        let parcel = Parcel {
            record: r.clone(),
            payload: Transfer::new(payload),
            extras: extras.iter().cloned().map(Transfer::new).collect(),
        };
        tx.send(parcel).unwrap();
        let got = rx.try_recv().unwrap();
        prop_assert_eq!(got.record, r);
        let got_payload = got.payload.into_vec();
        prop_assert_eq!(got_payload.as_ptr(), payload_ptr, "the payload was copied");
        prop_assert_eq!(got_payload, expected);
        let got_extras: Vec<Vec<u8>> = got.extras.into_iter().map(Transfer::into_vec).collect();
        prop_assert_eq!(got_extras, extras);
    }

    #[test]
    fn random_bytes_decode_to_a_value_or_a_codec_error(bytes in vec(any::<u8>(), 0..2048)) {
        decode_as_everything(&Bincode::new(), &bytes)?;
        decode_as_everything(&Bincode::<1024>::limited(), &bytes)?;
    }

    #[test]
    fn corrupted_records_decode_to_a_value_or_a_codec_error(
        r in record(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = Vec::new();
        Bincode::new().encode(&r, &mut bytes).unwrap();
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        decode_as_everything(&Bincode::new(), &bytes)?;
        decode_as_everything(&Bincode::<1024>::limited(), &bytes)?;
        let truncated = &bytes[..cut.index(bytes.len())];
        decode_as_everything(&Bincode::new(), truncated)?;
        decode_as_everything(&Bincode::<1024>::limited(), truncated)?;
    }
}

/// A standard-config varint: `0xfd` then a little-endian `u64`.
fn u64_length_prefix(len: u64) -> Vec<u8> {
    let mut frame = vec![0xfd];
    frame.extend_from_slice(&len.to_le_bytes());
    frame
}

#[test]
fn hostile_length_prefix_is_refused_without_allocating() {
    let codec = Bincode::new();
    for len in [0x7fff_ffff_ffff_ffff, u64::MAX] {
        let frame = u64_length_prefix(len);
        assert_eq!(frame.len(), 9);
        // Types read as one block claim the whole length up front: refused.
        assert_eq!(
            codec.decode::<String>(&frame),
            Err(CodecError::ClaimOverLimit {
                limit: Bincode::DEFAULT_LIMIT
            }),
            "len {len:#x}"
        );
        assert_eq!(
            codec.decode::<Blob>(&frame),
            Err(CodecError::ClaimOverLimit {
                limit: Bincode::DEFAULT_LIMIT
            }),
            "len {len:#x}"
        );
        // Sequences: each element costs at least a byte of the decode
        // budget, so the length alone is refused before any is read.
        for err in [
            codec.decode::<Vec<u8>>(&frame).unwrap_err(),
            codec.decode::<Vec<String>>(&frame).unwrap_err(),
            codec.decode::<Vec<()>>(&frame).unwrap_err(),
            codec.decode::<HashMap<String, u32>>(&frame).unwrap_err(),
        ] {
            assert_eq!(
                err,
                CodecError::ClaimOverLimit {
                    limit: Bincode::DEFAULT_LIMIT
                },
                "len {len:#x}"
            );
        }
    }
    let small = Bincode::<1024>::limited();
    let frame = u64_length_prefix(0x7fff_ffff_ffff_ffff);
    assert_eq!(
        small.decode::<String>(&frame),
        Err(CodecError::ClaimOverLimit { limit: 1024 })
    );
    assert_eq!(
        small.decode::<Blob>(&frame),
        Err(CodecError::ClaimOverLimit { limit: 1024 })
    );
}

#[test]
fn claim_under_the_default_limit_with_missing_bytes_is_malformed() {
    let codec = Bincode::new();
    let frame = u64_length_prefix(60 << 20);
    for err in [
        codec.decode::<String>(&frame).unwrap_err(),
        codec.decode::<Blob>(&frame).unwrap_err(),
    ] {
        assert!(
            matches!(&err, CodecError::Malformed(m)
                if m.contains("UnexpectedEnd") && m.contains(&(60u64 << 20).to_string())),
            "{err:?}"
        );
    }
    // Just over the limit, the same frame is refused before reading.
    let frame = u64_length_prefix(65 << 20);
    assert_eq!(
        codec.decode::<String>(&frame),
        Err(CodecError::ClaimOverLimit {
            limit: Bincode::DEFAULT_LIMIT
        })
    );
}

#[test]
fn frame_over_the_limit_is_too_large() {
    let codec = Bincode::<16>::limited();
    assert_eq!(codec.limit(), 16);
    assert_eq!(
        codec.decode::<Vec<u8>>(&[0; 17]),
        Err(CodecError::TooLarge {
            size: 17,
            limit: 16
        })
    );
    assert_eq!(
        codec.decode::<u8>(&[7; 1000]),
        Err(CodecError::TooLarge {
            size: 1000,
            limit: 16
        })
    );
    // A frame of exactly the limit is read (here: one byte, fifteen left).
    assert_eq!(
        codec.decode::<u8>(&[7; 16]),
        Err(CodecError::TrailingBytes { unread: 15 })
    );
}

#[test]
fn encoding_over_the_limit_is_too_large_and_leaves_the_buffer_alone() {
    let codec = Bincode::<16>::limited();
    let mut out = vec![1, 2, 3];
    // Exactly the limit when decoded: the length prefix claims 8 bytes and
    // the bytes 8; on the wire a 1-byte prefix and 8 bytes.
    codec.encode(&Blob(vec![9; 8]), &mut out).unwrap();
    assert_eq!(out.len(), 3 + 9);
    assert_eq!(&out[..4], &[1, 2, 3, 8]);
    assert_eq!(codec.decode::<Blob>(&out[3..]), Ok(Blob(vec![9; 8])));

    // One more byte would claim 17 when decoded.
    let mut out = vec![1, 2, 3];
    assert_eq!(
        codec.encode(&Blob(vec![9; 9]), &mut out),
        Err(CodecError::TooLarge {
            size: 17,
            limit: 16
        })
    );
    assert_eq!(out, [1, 2, 3]);
    assert_eq!(
        codec.encode(&vec![0u8; 100], &mut out),
        Err(CodecError::TooLarge {
            size: 101,
            limit: 16
        })
    );
    assert_eq!(out, [1, 2, 3]);
}

#[test]
fn trailing_bytes_are_counted() {
    let codec = Bincode::new();
    assert_eq!(
        codec.decode::<u32>(&[1, 2, 3]),
        Err(CodecError::TrailingBytes { unread: 2 })
    );
    assert_eq!(
        codec.decode::<String>(&[1, b'a', 0, 0, 0]),
        Err(CodecError::TrailingBytes { unread: 3 })
    );
    let mut buf = Vec::new();
    codec.encode(&(5u8, "ok"), &mut buf).unwrap();
    buf.extend_from_slice(&[0; 7]);
    assert_eq!(
        codec.decode::<(u8, String)>(&buf),
        Err(CodecError::TrailingBytes { unread: 7 })
    );
    assert!(matches!(
        codec.decode::<u8>(&[]),
        Err(CodecError::Malformed(_))
    ));
}

#[test]
fn bytes_helper_writes_one_prefixed_block() {
    let codec = Bincode::new();
    for n in [0usize, 1, 7, 250] {
        let data: Vec<u8> = (0..n).map(|i| (i * 7 % 256) as u8).collect();
        let mut buf = Vec::new();
        codec.encode(&Blob(data.clone()), &mut buf).unwrap();
        assert_eq!(buf.len(), 1 + n, "n = {n}");
        assert_eq!(buf[0] as usize, n);
        assert_eq!(&buf[1..], &data[..]);
        assert_eq!(codec.decode::<Blob>(&buf), Ok(Blob(data)));
    }
    for n in [251usize, 1000, 65_535] {
        let data = vec![0x5a; n];
        let mut buf = Vec::new();
        codec.encode(&Blob(data.clone()), &mut buf).unwrap();
        assert_eq!(buf.len(), 3 + n, "n = {n}");
        assert_eq!(buf[0], 0xfb);
        assert_eq!(u16::from_le_bytes([buf[1], buf[2]]) as usize, n);
        assert_eq!(codec.decode::<Blob>(&buf), Ok(Blob(data)));
    }
}

#[test]
fn bytes_helper_is_wire_compatible_with_a_plain_vec() {
    let codec = Bincode::new();
    let data: Vec<u8> = (0..=255).collect();
    let (mut block, mut plain) = (Vec::new(), Vec::new());
    codec.encode(&Blob(data.clone()), &mut block).unwrap();
    codec.encode(&data, &mut plain).unwrap();
    assert_eq!(block, plain);
    assert_eq!(codec.decode::<Vec<u8>>(&block), Ok(data.clone()));
    assert_eq!(codec.decode::<Blob>(&plain), Ok(Blob(data)));
}

#[test]
fn bytes_helper_serializes_slices_and_fills_other_containers() {
    #[derive(Serialize)]
    struct View<'a> {
        #[serde(serialize_with = "isolates::codec::bytes::serialize")]
        data: &'a [u8],
    }
    #[derive(Deserialize)]
    struct Boxed {
        #[serde(deserialize_with = "isolates::codec::bytes::deserialize")]
        data: Box<[u8]>,
    }
    let codec = Bincode::new();
    let mut buf = Vec::new();
    codec.encode(&View { data: &[4, 5, 6] }, &mut buf).unwrap();
    assert_eq!(buf, [3, 4, 5, 6]);
    let back: Boxed = codec.decode(&buf).unwrap();
    assert_eq!(&*back.data, &[4, 5, 6]);
}

#[test]
fn transfer_outside_an_envelope_is_written_inline() {
    let codec = Bincode::new();
    let mut buf = Vec::new();
    codec
        .encode(&Transfer::new(vec![1, 2, 3]), &mut buf)
        .unwrap();
    // Variant 1 (`Inline`), then the block: length 3 and the bytes.
    assert_eq!(buf, [1, 3, 1, 2, 3]);
    let back: Transfer = codec.decode(&buf).unwrap();
    assert_eq!(back.len(), 3);
    assert_eq!(back.into_vec(), [1, 2, 3]);

    let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let mut buf = Vec::new();
    codec
        .encode(&("inline", Transfer::new(data.clone())), &mut buf)
        .unwrap();
    assert!(buf.len() > data.len(), "the bytes are in the frame");
    let (name, t): (String, Transfer) = codec.decode(&buf).unwrap();
    assert_eq!(name, "inline");
    assert_eq!(t.into_vec(), data);
}

#[test]
fn attached_transfer_cannot_be_decoded_outside_an_envelope() {
    // Variant 0 (`Attached`) with index 0, as a port would write it.
    let err = Bincode::new().decode::<Transfer>(&[0, 0]).unwrap_err();
    assert!(
        err.to_string()
            .contains("an attached value can only be decoded from an isolates envelope"),
        "{err:?}"
    );
}

#[test]
fn send_port_cannot_be_encoded_outside_an_envelope() {
    let (tx, rx) = port::unbounded::<u32>();
    let mut out = vec![9];
    let err = Bincode::new().encode(&tx, &mut out).unwrap_err();
    assert!(
        err.to_string().contains(
            "a SendPort can only be encoded inside a message sent through isolates ports"
        ),
        "{err:?}"
    );
    assert_eq!(out, [9]);
    // The port itself is unharmed.
    tx.send(4).unwrap();
    assert_eq!(rx.try_recv(), Ok(4));
}

/// A port or an attached buffer met outside any envelope is an attachment
/// error, not a generic encode or decode failure.
#[test]
fn send_port_outside_an_envelope_is_an_attachment_error() {
    let (tx, _rx) = port::unbounded::<u32>();
    let err = Bincode::new().encode(&tx, &mut Vec::new()).unwrap_err();
    assert!(matches!(err, CodecError::Attachment(_)), "{err:?}");
    let err = Bincode::new().decode::<Transfer>(&[0, 0]).unwrap_err();
    assert!(matches!(err, CodecError::Attachment(_)), "{err:?}");
}

/// bincode's decode limit counts in-memory sizes (8 bytes per length prefix
/// and per `u64`, whatever their varint width), so encode counts the same
/// claim and refuses what the receiver would refuse.
#[test]
fn encode_refuses_what_decode_would_claim_over_the_limit() {
    let codec = Bincode::<1024>::limited();
    // 1020 wire bytes but a claim of 8 + 1017: refused at the sender.
    let text = "a".repeat(1017);
    let err = codec.encode(&text, &mut Vec::new()).unwrap_err();
    assert_eq!(
        err,
        CodecError::TooLarge {
            size: 1025,
            limit: 1024
        }
    );
    let mut buf = Vec::new();
    Bincode::new().encode(&text, &mut buf).unwrap();
    assert_eq!(buf.len(), 1020);
    assert_eq!(
        codec.decode::<String>(&buf),
        Err(CodecError::ClaimOverLimit { limit: 1024 })
    );
    // One byte shorter fits both ways.
    let text = "a".repeat(1016);
    let mut buf = Vec::new();
    codec.encode(&text, &mut buf).unwrap();
    assert_eq!(codec.decode::<String>(&buf), Ok(text));

    // 127 `u64`s of one wire byte each claim 8 + 127 * 8 = 1024: fits, in
    // memory too (32 for the first element, 16 for each other with room
    // for the `Vec` to grow: 2048, twice the limit).
    let numbers = vec![1u64; 127];
    let mut buf = Vec::new();
    codec.encode(&numbers, &mut buf).unwrap();
    assert_eq!(buf.len(), 128);
    assert_eq!(codec.decode::<Vec<u64>>(&buf), Ok(numbers));
    // 128 of them claim 1032: refused by both sides.
    let numbers = vec![1u64; 128];
    let err = codec.encode(&numbers, &mut Vec::new()).unwrap_err();
    assert_eq!(
        err,
        CodecError::TooLarge {
            size: 1032,
            limit: 1024
        }
    );
    let mut buf = Vec::new();
    Bincode::new().encode(&numbers, &mut buf).unwrap();
    assert_eq!(
        codec.decode::<Vec<u64>>(&buf),
        Err(CodecError::ClaimOverLimit { limit: 1024 })
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// A limited codec encodes a value exactly when bincode's count lets it
    /// decode it again; the receiver may still refuse it for the memory it
    /// takes (which depends on the receiver's types, not on the bytes), and
    /// then with `ClaimOverLimit`.
    #[test]
    fn a_limited_codec_encodes_exactly_what_it_can_decode(r in record()) {
        let small = Bincode::<600>::limited();
        let mut full = Vec::new();
        Bincode::new().encode(&r, &mut full).unwrap();
        let mut buf = Vec::new();
        match small.encode(&r, &mut buf) {
            Ok(()) => {
                prop_assert_eq!(&buf, &full);
                match small.decode::<Record>(&buf) {
                    Ok(back) => prop_assert_eq!(back, r),
                    Err(e) => prop_assert_eq!(e, CodecError::ClaimOverLimit { limit: 600 }),
                }
            }
            Err(CodecError::TooLarge { limit: 600, .. }) => {
                prop_assert!(buf.is_empty());
                let err = small.decode::<Record>(&full).unwrap_err();
                prop_assert!(
                    matches!(
                        err,
                        CodecError::TooLarge { .. } | CodecError::ClaimOverLimit { .. }
                    ),
                    "{:?}",
                    err
                );
            }
            Err(other) => prop_assert!(false, "unexpected {:?}", other),
        }
    }
}
