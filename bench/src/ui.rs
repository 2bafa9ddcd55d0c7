//! `ui_call_*`: the caller-thread cost of offloading a big payload with
//! `isolates::run` and polling for the (equally big) result, against one
//! memcpy of the payload.

use std::hint::black_box;
use std::time::Instant;

use isolates::{Bincode, Pending, RunError, run, run_with};

use super::ui_call::{POLL_GAP, byte_payload, caller_cost, float_payload, same_bytes, same_floats};
use super::{Measure, median};

/// The codec limit of the fallback figures, when `run` refuses a payload.
const RAISED_LIMIT: usize = 256 << 20;

/// `run` as a user calls it (values move), or `run_with` a codec limit big
/// enough for the payload (Dart's copy semantics, for reference figures).
#[derive(Clone, Copy)]
enum Call {
    Run,
    RaisedLimit,
}

fn start<T>(call: Call, f: fn(T) -> T, payload: T) -> Pending<T, RunError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    match call {
        Call::Run => run(f, payload),
        Call::RaisedLimit => run_with(Bincode::<RAISED_LIMIT>::limited(), f, payload),
    }
}

/// Medians over `rounds` of: a memcpy of `bytes`, then the caller's cost of
/// a call with a `Vec<u8>` and with a `Vec<f32>` of `bytes`; all in µs.
fn costs(call: Call, bytes: usize, rounds: usize) -> Result<(f64, f64, f64), RunError> {
    let source_bytes = byte_payload(bytes);
    let source_floats = float_payload(bytes);
    let mut target = vec![1u8; bytes]; // written: its pages are mapped
    // Warm the run thread cache.
    caller_cost(|| run(same_bytes, vec![1u8; 16]))?;
    let (mut copy, mut u8s, mut f32s) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let start_copy = Instant::now();
        target.copy_from_slice(black_box(&source_bytes));
        black_box(&target);
        copy.push(start_copy.elapsed().as_secs_f64() * 1e6);

        let payload = source_bytes.clone();
        let (inside, back) = caller_cost(|| start(call, same_bytes, payload))?;
        assert_eq!(back.len(), bytes);
        drop(back);
        u8s.push(inside.as_secs_f64() * 1e6);

        let payload = source_floats.clone();
        let (inside, back) = caller_cost(|| start(call, same_floats, payload))?;
        assert_eq!(back.len() * 4, bytes);
        drop(back);
        f32s.push(inside.as_secs_f64() * 1e6);
    }
    Ok((median(copy), median(u8s), median(f32s)))
}

/// `ui_call_8mib` or `ui_call_64mib`: the worse of the two payload types.
/// If `run` refuses the payload, the value is null, and the note says why
/// and gives reference figures from `run_with` a raised codec limit.
pub(crate) fn ui_call(quick: bool, mib: usize) -> Measure {
    let rounds = match (quick, mib > 8) {
        (true, true) => 3,
        (true, false) => 5,
        (false, true) => 5,
        (false, false) => 11,
    };
    let bytes = mib << 20;
    let how = format!(
        "caller time inside run() and try_take() only (polled every {} µs), f returns its \
         argument, median of {rounds}",
        POLL_GAP.as_micros()
    );
    let (value, copy, note) = match costs(Call::Run, bytes, rounds) {
        Ok((copy, u8s, f32s)) => {
            let copied = match costs(Call::RaisedLimit, bytes, rounds.min(3)) {
                Ok((_, u8s, f32s)) => format!(
                    "with Dart's copy semantics (run_with, a {} MiB codec limit): Vec<u8> \
                     {u8s:.0} µs, Vec<f32> {f32s:.0} µs",
                    RAISED_LIMIT >> 20
                ),
                Err(e) => format!("run_with a raised limit failed: {e}"),
            };
            (
                u8s.max(f32s),
                copy,
                format!(
                    "Vec<u8>: {u8s:.1} µs, Vec<f32>: {f32s:.1} µs (value: the worse); {copied}; \
                     {how}"
                ),
            )
        }
        Err(e) => {
            let reference = match costs(Call::RaisedLimit, bytes, rounds) {
                Ok((_, u8s, f32s)) => format!(
                    "with run_with(a {} MiB codec limit): Vec<u8> {u8s:.0} µs, Vec<f32> \
                     {f32s:.0} µs",
                    RAISED_LIMIT >> 20
                ),
                Err(e) => format!("run_with a raised limit failed too: {e}"),
            };
            let copy = costs_copy(bytes, rounds);
            (
                f64::NAN,
                copy,
                format!("isolates::run failed: {e} (value null); {reference}; {how}"),
            )
        }
    };
    Measure {
        name: if mib > 8 {
            "ui_call_64mib"
        } else {
            "ui_call_8mib"
        },
        value,
        unit: "µs",
        baseline: "memcpy of the payload (ratio = value / memcpy)",
        baseline_value: copy,
        ratio: value / copy,
        goal: Some("value <= 50 µs"),
        note: Some(note),
    }
}

/// The median memcpy of `bytes` over `rounds`, in µs.
fn costs_copy(bytes: usize, rounds: usize) -> f64 {
    let source = byte_payload(bytes);
    let mut target = vec![1u8; bytes]; // written: its pages are mapped
    let copies = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            target.copy_from_slice(black_box(&source));
            black_box(&target);
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    median(copies)
}
