//! The fuzz targets of `fuzz/` (run with `cargo +nightly fuzz run NAME`),
//! on the stable toolchain as property tests: random bytes, and the
//! committed fuzz corpus, must go through every entry point that decodes
//! bytes from outside the process without a panic, and within the heap the
//! docs promise (a counting allocator measures each call's peak).

use proptest::collection::vec;
use proptest::prelude::*;

#[global_allocator]
static ALLOCATOR: isolates_counting_alloc::Counting = isolates_counting_alloc::Counting;

use isolates_counting_alloc::peak_of;

/// The codec target decodes under a 64 KiB limit: twice that in heap, and
/// room for error texts.
const CODEC_BUDGET: usize = 2 * (1 << 16) + 4096;
/// Frames are read under a 64 KiB limit, one at a time.
const FRAME_BUDGET: usize = (1 << 16) + 4096;
/// A stored row is decoded under the default codec's limit; random rows of
/// a few KiB hold far less than that.
const ROW_BUDGET: usize = 1 << 20;
/// A store's log frame is decoded under a 2 MiB limit: twice that in heap,
/// and the file's bytes.
const LOG_BUDGET: usize = 2 * (2 << 20) + (64 << 10);

/// A log file's header (magic, generation 0) and then `tail`: random
/// bytes after a header that passes are what reach the frame reader.
fn log_file(tail: &[u8]) -> Vec<u8> {
    let mut bytes = b"ISOWLOG1".to_vec();
    bytes.extend_from_slice(&0u64.to_le_bytes());
    bytes.extend_from_slice(tail);
    bytes
}

fn within(
    what: &str,
    budget: usize,
    bytes: &[u8],
    f: impl FnOnce(&[u8]),
) -> Result<(), TestCaseError> {
    let ((), peak) = peak_of(|| f(bytes));
    prop_assert!(
        peak <= budget,
        "{what}: {} bytes of input held {peak} bytes of heap, over {budget}",
        bytes.len()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn codec_target_holds_its_budget(bytes in vec(any::<u8>(), 0..4096)) {
        within("codec", CODEC_BUDGET, &bytes, isolates::fuzz::codec)?;
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn frames_target_holds_its_budget(bytes in vec(any::<u8>(), 0..4096)) {
        within("frames", FRAME_BUDGET, &bytes, isolates::fuzz::frames)?;
    }

    #[cfg(feature = "schedule")]
    #[test]
    fn stored_row_target_holds_its_budget(bytes in vec(any::<u8>(), 0..4096)) {
        within("stored_row", ROW_BUDGET, &bytes, isolates::fuzz::stored_row)?;
    }

    #[cfg(feature = "schedule")]
    #[test]
    fn store_log_target_holds_its_budget(bytes in vec(any::<u8>(), 0..4096)) {
        within("store_log", LOG_BUDGET, &bytes, isolates::fuzz::store_log)?;
        within("store_log", LOG_BUDGET, &log_file(&bytes), isolates::fuzz::store_log)?;
        // A frame whose checksum holds: the payload reaches the decoder.
        let mut frame = u32::try_from(bytes.len()).unwrap().to_le_bytes().to_vec();
        frame.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
        frame.extend_from_slice(&bytes);
        within("store_log", LOG_BUDGET, &log_file(&frame), isolates::fuzz::store_log)?;
    }

    #[cfg(feature = "nats")]
    #[test]
    fn nats_frames_target_holds_its_budget(bytes in vec(any::<u8>(), 0..4096)) {
        within("nats_frames", FRAME_BUDGET, &bytes, isolates::fuzz::nats_frames)?;
    }
}

/// A fuzz target: its name, its entry point, its heap budget.
type Target = (&'static str, fn(&[u8]), usize);

/// Every input the fuzzer kept (the committed corpus) still goes through.
#[test]
fn the_committed_corpus_goes_through() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let targets: [Target; 5] = [
        ("codec", isolates::fuzz::codec, CODEC_BUDGET),
        #[cfg(target_os = "linux")]
        ("frames", isolates::fuzz::frames, FRAME_BUDGET),
        #[cfg(not(target_os = "linux"))]
        ("frames", |_| {}, FRAME_BUDGET),
        #[cfg(feature = "schedule")]
        ("stored_row", isolates::fuzz::stored_row, ROW_BUDGET),
        #[cfg(not(feature = "schedule"))]
        ("stored_row", |_| {}, ROW_BUDGET),
        #[cfg(feature = "schedule")]
        ("store_log", isolates::fuzz::store_log, LOG_BUDGET),
        #[cfg(not(feature = "schedule"))]
        ("store_log", |_| {}, LOG_BUDGET),
        #[cfg(feature = "nats")]
        ("nats_frames", isolates::fuzz::nats_frames, FRAME_BUDGET),
        #[cfg(not(feature = "nats"))]
        ("nats_frames", |_| {}, FRAME_BUDGET),
    ];
    let mut seen = 0;
    for (name, target, budget) in targets {
        let Ok(entries) = std::fs::read_dir(corpus.join(name)) else {
            continue;
        };
        for entry in entries.flatten() {
            let bytes = std::fs::read(entry.path()).unwrap();
            let ((), peak) = peak_of(|| target(&bytes));
            assert!(
                peak <= budget.max(2 * bytes.len() + 4096),
                "{name}: corpus input {:?} held {peak} bytes",
                entry.path()
            );
            seen += 1;
        }
    }
    assert!(
        seen > 0,
        "no corpus under {}: run the fuzzers (fuzz/README.md)",
        corpus.display()
    );
}
