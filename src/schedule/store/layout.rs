//! The layouts a stored row has had, and how each reads as today's
//! [`Record`].
//!
//! A row is a bincode blob: fields in order, no names, no tags. Adding a
//! field or reordering an enum changes the bytes of every row, so each
//! row carries the number of the layout it was written in (the `layout`
//! column, since schema 2), and each past layout keeps a frozen struct
//! here that decodes it and converts into the current one. Rows are not
//! rewritten when a build with a new layout opens the store: an old row
//! is read through its struct and written in the current layout the next
//! time its work changes.
//!
//! To change [`Record`]: copy it here as `RecordV<LAYOUT>` (the fields as
//! they are now, with `#[derive(Deserialize)]`), write its `From`
//! conversion (saying what the new field means for old rows), add its arm
//! to [`decode_row`], then change `Record` and bump [`LAYOUT`]. Never
//! edit a frozen struct: stores in the field hold its bytes.
//! `tests/schedule_upgrade.rs` opens a store of the first schema to check
//! that nothing changes meaning.

use std::time::Duration;

use serde::Deserialize;

use super::Record;
use crate::codec::{Bincode, Codec};
use crate::schedule::request::{InputMerger, StoredBackoff, WorkState};

/// The layout this build writes.
pub(super) const LAYOUT: i64 = 3;

/// Decodes a row written in `layout`; `None` is a row of a schema-1 store
/// whose layout the upgrade could not tell (it did not read as either):
/// it is tried as each once more, and stays unreadable otherwise.
pub(super) fn decode_row(layout: Option<i64>, bytes: &[u8]) -> Result<Record, String> {
    let codec = Bincode::new();
    let v1 = |b: &[u8]| codec.decode::<RecordV1>(b).map(Record::from);
    let v2 = |b: &[u8]| codec.decode::<RecordV2>(b).map(Record::from);
    let v3 = |b: &[u8]| codec.decode::<Record>(b);
    match layout {
        Some(1) => v1(bytes).map_err(|e| e.to_string()),
        Some(2) => v2(bytes).map_err(|e| e.to_string()),
        Some(3) => v3(bytes).map_err(|e| e.to_string()),
        None => guess(bytes).map(|(rec, _)| rec),
        Some(n) => Err(format!(
            "it was written in row layout {n}, which this build does not know (it reads 1 to \
             {LAYOUT})"
        )),
    }
}

/// Reads a row of a schema-1 store, which has no layout number (layouts 1
/// and 2 were written then): as the second layout, else as the first. They cannot be mistaken for each
/// other: the second has a field more at the end, and a decode must use
/// every byte. Returns the record and the layout it read as.
pub(super) fn guess(bytes: &[u8]) -> Result<(Record, i64), String> {
    let codec = Bincode::new();
    match codec.decode::<RecordV2>(bytes) {
        Ok(rec) => Ok((Record::from(rec), 2)),
        Err(e) => codec
            .decode::<RecordV1>(bytes)
            .map(|r| (Record::from(r), 1))
            .map_err(|_| e.to_string()),
    }
}

/// Layout 2: a [`Record`] without its alarm (alarms came in layout 3).
/// The last layout of schema 1: layout 1 and the input merger.
#[derive(Deserialize)]
pub(super) struct RecordV2 {
    /// The fields of layout 1, in their order: bincode writes a nested
    /// struct's fields in line, so this reads the bytes that the same
    /// fields spelled out here read.
    first: RecordV1,
    input_merger: InputMerger,
}

impl From<RecordV2> for Record {
    /// No alarm: work of layout 2 was never one.
    fn from(r: RecordV2) -> Self {
        Record {
            input_merger: r.input_merger,
            ..Record::from(r.first)
        }
    }
}

/// Layout 1, the first: a [`Record`] without its input merger (the
/// overwriting one, the only behaviour then) or alarm.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct RecordV1 {
    id: u64,
    handler: String,
    state: WorkState,
    input: Option<Vec<u8>>,
    output: Option<Vec<u8>>,
    progress: Option<Vec<u8>>,
    tags: Vec<String>,
    unique: Option<String>,
    periodic: Option<(i64, i64)>,
    period_start: i64,
    initial_delay: i64,
    enqueued_at: i64,
    backoff: StoredBackoff,
    constraints: Vec<String>,
    time_limit: Option<Duration>,
    attempts: u32,
    retries: u32,
    periods: u64,
    next_run_at: i64,
    finished_at: Option<i64>,
    prerequisites: Vec<u64>,
    failure: Option<String>,
    retire: bool,
}

impl From<RecordV1> for Record {
    fn from(r: RecordV1) -> Self {
        Record {
            id: r.id,
            handler: r.handler,
            state: r.state,
            input: r.input,
            output: r.output,
            progress: r.progress,
            tags: r.tags,
            unique: r.unique,
            periodic: r.periodic,
            period_start: r.period_start,
            initial_delay: r.initial_delay,
            enqueued_at: r.enqueued_at,
            backoff: r.backoff,
            constraints: r.constraints,
            time_limit: r.time_limit,
            attempts: r.attempts,
            retries: r.retries,
            periods: r.periods,
            next_run_at: r.next_run_at,
            finished_at: r.finished_at,
            prerequisites: r.prerequisites,
            failure: r.failure,
            retire: r.retire,
            input_merger: InputMerger::Overwriting,
            alarm: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::request::Alarm;

    #[test]
    fn rows_of_the_first_layout_still_read() {
        // A row of the first layout, as a build before the input merger
        // wrote it.
        let old = RecordV1 {
            id: 7,
            handler: "sum".into(),
            state: WorkState::Blocked,
            input: None,
            output: None,
            progress: None,
            tags: vec!["t".into()],
            unique: Some("u".into()),
            periodic: None,
            period_start: 5,
            initial_delay: 0,
            enqueued_at: 5,
            backoff: StoredBackoff::default(),
            constraints: vec![],
            time_limit: None,
            attempts: 0,
            retries: 0,
            periods: 0,
            next_run_at: 5,
            finished_at: None,
            prerequisites: vec![3, 4],
            failure: None,
            retire: true,
        };
        let mut bytes = Vec::new();
        Bincode::new().encode(&old, &mut bytes).unwrap();
        let rec = decode_row(Some(1), &bytes).expect("a first-layout row reads");
        // A schema-1 row has no layout number: it is told by reading.
        assert_eq!(guess(&bytes).map(|(_, n)| n), Ok(1));
        assert!(decode_row(Some(2), &bytes).is_err());
        assert_eq!((rec.id, rec.handler.as_str()), (7, "sum"));
        assert_eq!(rec.prerequisites, [3, 4]);
        assert!(rec.retire);
        assert_eq!(rec.input_merger, InputMerger::Overwriting);

        // A row of layout 2 (what schema 1 wrote last) is a row of layout
        // 3 without its last field; an alarm of `None` is one byte.
        let mut rec = rec;
        rec.input_merger = InputMerger::ArrayCreating;
        let mut bytes = Vec::new();
        Bincode::new().encode(&rec, &mut bytes).unwrap();
        assert_eq!(bytes.pop(), Some(0));
        let back = decode_row(Some(2), &bytes).unwrap();
        assert_eq!(guess(&bytes).map(|(_, n)| n), Ok(2));
        assert_eq!(back.input_merger, InputMerger::ArrayCreating);
        assert_eq!(back.alarm, None);
        assert!(back.retire);

        // And a row of the current layout reads as itself, not as a
        // schema-1 row.
        rec.alarm = Some(Alarm {
            at: 42,
            missed: crate::schedule::MissedAlarm::SkipAfter(Duration::from_secs(9)),
        });
        let mut bytes = Vec::new();
        Bincode::new().encode(&rec, &mut bytes).unwrap();
        let back = decode_row(Some(LAYOUT), &bytes).unwrap();
        assert_eq!(back.alarm, rec.alarm);
        assert_eq!(back.input_merger, InputMerger::ArrayCreating);
        assert!(guess(&bytes).is_err());

        // Garbage is still an error, the current layout's.
        assert!(decode_row(Some(LAYOUT), &bytes[..bytes.len() - 3]).is_err());
        assert!(decode_row(None, &bytes[..bytes.len() - 3]).is_err());
        // A layout from a later build is not guessed at.
        let err = decode_row(Some(LAYOUT + 1), &bytes).unwrap_err();
        assert!(err.contains("does not know"), "{err}");
    }
}
