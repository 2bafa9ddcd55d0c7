//! One write of a store ([`Batch`]): what [`Db::apply`] writes into
//! SQLite, and how the store's log holds it (see [`behind`]).
//!
//! [`Db::apply`]: super::db::Db::apply
//! [`behind`]: super::behind

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::layout::{LAYOUT, decode_row};
use super::{Record, StoreError};
use crate::codec::{Bincode, Codec};

/// One work written: its id, its bytes in `layout`, and (unless read back
/// from a log in a layout this build cannot read) the work.
#[derive(Debug)]
pub(super) struct Put {
    pub(super) id: u64,
    pub(super) layout: i64,
    pub(super) bytes: Vec<u8>,
    pub(super) rec: Option<Record>,
}

/// One write of the store: works put, works deleted, and which works have
/// their tags written (`true`: delete their old tag rows first).
#[derive(Debug, Default)]
pub(super) struct Batch {
    pub(super) puts: Vec<Put>,
    pub(super) deletes: Vec<u64>,
    pub(super) retag: HashMap<u64, bool>,
}

/// A place in the store's log: the generation of a log file and an
/// offset in it. Ordered as the log's frames are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct LogMark {
    pub(super) generation: u64,
    pub(super) offset: u64,
}

/// A batch as a log holds it.
#[derive(Debug, Serialize, Deserialize)]
struct Frame {
    layout: i64,
    puts: Vec<(u64, Vec<u8>)>,
    deletes: Vec<u64>,
    retag: Vec<(u64, bool)>,
}

impl Batch {
    /// The batch of a write, and its frame's payload.
    pub(super) fn encode(
        puts: &[&Record],
        deletes: &[u64],
        retag: &HashMap<u64, bool>,
    ) -> Result<(Batch, Vec<u8>), StoreError> {
        let codec = Bincode::new();
        let mut frame = Frame {
            layout: LAYOUT,
            puts: Vec::with_capacity(puts.len()),
            deletes: deletes.to_vec(),
            retag: retag.iter().map(|(&id, &old)| (id, old)).collect(),
        };
        for rec in puts {
            let mut bytes = Vec::new();
            codec.encode(*rec, &mut bytes).map_err(|e| {
                StoreError::Io(format!("work {} could not be encoded: {e}", rec.id))
            })?;
            frame.puts.push((rec.id, bytes));
        }
        let mut payload = Vec::new();
        codec
            .encode(&frame, &mut payload)
            .map_err(|e| StoreError::Io(format!("a write could not be encoded: {e}")))?;
        let batch = Batch {
            puts: frame
                .puts
                .into_iter()
                .zip(puts)
                .map(|((id, bytes), rec)| Put {
                    id,
                    layout: LAYOUT,
                    bytes,
                    rec: Some((*rec).clone()),
                })
                .collect(),
            deletes: frame.deletes,
            retag: retag.clone(),
        };
        Ok((batch, payload))
    }

    /// A frame's batch as read back from a log, decoded under
    /// `Bincode<LIMIT>` (so holding at most twice `LIMIT` in heap).
    pub(super) fn decode<const LIMIT: usize>(payload: &[u8]) -> Result<Batch, String> {
        let frame: Frame = Bincode::<LIMIT>::limited()
            .decode(payload)
            .map_err(|e| e.to_string())?;
        // Ids are SQLite's (i64): a frame with another is not one we wrote.
        let max = i64::MAX.unsigned_abs();
        if frame
            .puts
            .iter()
            .map(|(id, _)| *id)
            .chain(frame.deletes.iter().copied())
            .any(|id| id > max)
        {
            return Err("a frame with an id past the last SQLite has".into());
        }
        let puts = frame
            .puts
            .into_iter()
            .map(|(id, bytes)| {
                // Written again in this build's layout, where it reads.
                match decode_row(Some(frame.layout), &bytes) {
                    Ok(rec) if frame.layout == LAYOUT => Put {
                        id,
                        layout: LAYOUT,
                        bytes,
                        rec: Some(rec),
                    },
                    Ok(rec) => {
                        let mut again = Vec::new();
                        match Bincode::new().encode(&rec, &mut again) {
                            Ok(()) => Put {
                                id,
                                layout: LAYOUT,
                                bytes: again,
                                rec: Some(rec),
                            },
                            Err(_) => Put {
                                id,
                                layout: frame.layout,
                                bytes,
                                rec: None,
                            },
                        }
                    }
                    // Kept as it was, to be reported as unreadable.
                    Err(_) => Put {
                        id,
                        layout: frame.layout,
                        bytes,
                        rec: None,
                    },
                }
            })
            .collect();
        Ok(Batch {
            puts,
            deletes: frame.deletes,
            retag: frame.retag.into_iter().collect(),
        })
    }

    /// How many works it puts or deletes.
    pub(super) fn works(&self) -> usize {
        self.puts.len() + self.deletes.len()
    }
}
