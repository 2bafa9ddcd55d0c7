//! Keeping `sqlite_sequence` ahead of the ids written, so that a commit
//! writes one page, not two.
//!
//! The `works` table is `AUTOINCREMENT`: `sqlite_sequence` keeps the
//! highest id ever stored, so ids of pruned works are never reused (see
//! [`WorkStore::max_id`](super::WorkStore::max_id)). SQLite updates that
//! row on every insert whose id passes it: a second page in every commit
//! of new work, which made a single-work commit cost about twice a plain
//! insert. SQLite leaves the row alone when the id is not above it, so the
//! store sets it ahead, [`RESERVE`] ids at a time, in the same
//! transaction as the insert that passes it; one commit in [`RESERVE`]
//! writes the second page.
//!
//! The row then always holds at least every id stored, as before, and the
//! next start numbers new work after it: ids stay unique. At a clean stop
//! the store brings the row back to the highest id stored
//! ([`IdReserve::release`]), so ids after a restart follow on as before;
//! after a crash they skip at most [`RESERVE`] numbers.

use rusqlite::{Connection, OptionalExtension, params};

/// How many ids past the highest written `sqlite_sequence` is set to.
pub(super) const RESERVE: i64 = 1024;

/// What the store knows of `sqlite_sequence`.
#[derive(Debug, Default)]
pub(super) struct IdReserve {
    /// `None` until read, at the first write.
    seen: Option<Seen>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    /// Whether the store has `sqlite_sequence` (a table made without
    /// `AUTOINCREMENT` has none, and its inserts write nothing there).
    sequence: bool,
    /// The row's value when first read: every id stored before.
    found: i64,
    /// The row's value now.
    reserved: i64,
    /// The highest id this store wrote.
    written: i64,
}

/// A change [`IdReserve::cover`] made in a transaction, to note once it
/// committed.
#[must_use]
pub(super) struct Covered {
    written: i64,
    reserved: Option<i64>,
}

impl IdReserve {
    /// Before rows with ids up to `max` are inserted in `tx`: sets
    /// `sqlite_sequence` ahead of `max` if it is not, so the inserts leave
    /// it alone. Note the result with [`committed`](Self::committed) once
    /// `tx` committed.
    pub(super) fn cover(&mut self, tx: &Connection, max: Option<i64>) -> rusqlite::Result<Covered> {
        let seen = match self.seen {
            Some(seen) => seen,
            None => {
                let seen = read(tx)?;
                self.seen = Some(seen);
                seen
            }
        };
        let Some(max) = max.filter(|&m| seen.sequence && m > seen.reserved) else {
            return Ok(Covered {
                written: max.unwrap_or(0),
                reserved: None,
            });
        };
        let ahead = max.saturating_add(RESERVE).min(i64::MAX - 1).max(max);
        set(tx, ahead)?;
        Ok(Covered {
            written: max,
            reserved: Some(ahead),
        })
    }

    /// Notes what [`cover`](Self::cover) did, its transaction committed.
    pub(super) fn committed(&mut self, covered: Covered) {
        if let Some(seen) = &mut self.seen {
            seen.written = seen.written.max(covered.written);
            if let Some(reserved) = covered.reserved {
                seen.reserved = reserved;
            }
        }
    }

    /// At a clean stop: brings `sqlite_sequence` back to the highest id
    /// ever stored, so the next start numbers on from there.
    pub(super) fn release(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let Some(seen) = self.seen.filter(|s| s.sequence) else {
            return Ok(());
        };
        let floor = seen.found.max(seen.written);
        if seen.reserved <= floor {
            return Ok(());
        }
        // Rows another writer added (where stores are not locked) count
        // too.
        conn.execute(
            "UPDATE sqlite_sequence SET seq = max(?1, (SELECT coalesce(max(id), 0) FROM works))
             WHERE name = 'works'",
            params![floor],
        )?;
        self.seen = Some(Seen {
            reserved: floor,
            ..seen
        });
        Ok(())
    }
}

fn read(tx: &Connection) -> rusqlite::Result<Seen> {
    let sequence: bool = tx.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'sqlite_sequence'",
        [],
        |r| r.get(0),
    )?;
    let found: i64 = if sequence {
        tx.query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'works'",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0)
    } else {
        0
    };
    Ok(Seen {
        sequence,
        found,
        reserved: found,
        written: 0,
    })
}

fn set(tx: &Connection, seq: i64) -> rusqlite::Result<()> {
    let changed = tx.execute(
        "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'works'",
        params![seq],
    )?;
    if changed == 0 {
        tx.execute(
            "INSERT INTO sqlite_sequence (name, seq) VALUES ('works', ?1)",
            params![seq],
        )?;
    }
    Ok(())
}
