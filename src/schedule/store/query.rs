//! The store's queryable columns, and the reads that use them.
//!
//! A row's bytes are the truth about its work; since schema 3 each row
//! also has columns the store can search without decoding it: `handler`,
//! `state`, `due` (the earliest start of enqueued work, `NULL` otherwise)
//! and `uniq` (the unique name), and `work_tags` lists each work's explicit
//! tags. They are written with the row. A work's handler name, which is
//! also its first tag, has no tag row: a work is found by it through the
//! `handler` column (in the due index for enqueued works, whose entries
//! carry it, and in the index of the other works), so a plain work writes
//! no tag row. `work_handlers` lists the handler names the store has
//! works of (written once per name), so a query by a tag that is no
//! handler's name reads `work_tags` alone. With them the scheduler loads only the works
//! it must hold (see `table/lazy.rs`) and reads the others when asked,
//! and the manager answers queries from the store instead of a copy of
//! every work in memory.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::layout::decode_row;
use super::{Record, StoreError, UnreadableWork, io};
use crate::schedule::request::{WorkId, WorkQuery, WorkState};

/// Enqueued works in order: (due, id).
pub(crate) type DueKey = (i64, u64);

/// A page of enqueued works, and the key of its last row if more may
/// follow.
pub(crate) type DuePage = (Vec<Record>, Option<DueKey>);

/// `state` of an enqueued work: only those rows have a `due`.
const ENQUEUED: i64 = 0;

/// The `state` column's number for `state`.
pub(super) fn state_code(state: WorkState) -> i64 {
    match state {
        WorkState::Enqueued => ENQUEUED,
        WorkState::Running => 1,
        WorkState::Succeeded => 2,
        WorkState::Failed => 3,
        WorkState::Blocked => 4,
        WorkState::Cancelled => 5,
    }
}

/// A record's `handler`, `state`, `due` and `uniq` columns.
pub(super) fn columns(rec: &Record) -> (&str, i64, Option<i64>, Option<&str>) {
    let due = (rec.state == WorkState::Enqueued).then_some(rec.next_run_at);
    (
        &rec.handler,
        state_code(rec.state),
        due,
        rec.unique.as_deref(),
    )
}

/// The tags a work has rows in `work_tags` for: its own, less its
/// handler's name (found by the `handler` column).
pub(super) fn explicit_tags(rec: &Record) -> impl Iterator<Item = &str> {
    rec.tags
        .iter()
        .map(String::as_str)
        .filter(move |t| *t != rec.handler)
}

/// A record as the scheduler holds it: with its handler's name as a tag.
pub(crate) fn with_implicit_tag(mut rec: Record) -> Record {
    if !rec.tags.contains(&rec.handler) {
        rec.tags.insert(0, rec.handler.clone());
    }
    rec
}

/// Deletes the tag rows of stored work `id`, the tags its stored row
/// holds (none for new work). A row that cannot be read has none: only
/// readable rows are given tags.
pub(super) fn untag(conn: &Connection, id: i64) -> Result<(), StoreError> {
    let mut old = conn
        .prepare_cached("SELECT id, layout, record FROM works WHERE id = ?1")
        .map_err(io)?;
    let mut rows = old.query([id]).map_err(io)?;
    let Some(row) = rows.next().map_err(io)? else {
        return Ok(());
    };
    let Ok(rec) = read_row(row).map_err(io)? else {
        return Ok(());
    };
    let mut untag = conn
        .prepare_cached("DELETE FROM work_tags WHERE tag = ?1 AND id = ?2")
        .map_err(io)?;
    for t in explicit_tags(&rec) {
        untag.execute(params![t, id]).map_err(io)?;
    }
    Ok(())
}

/// Reads a row of `id, layout, record`: its record, or why it cannot be
/// read (the row stays in the store as it is).
pub(super) fn read_row(row: &Row<'_>) -> Result<Result<Record, UnreadableWork>, rusqlite::Error> {
    let id: i64 = row.get(0)?;
    let unreadable = |reason: String| UnreadableWork {
        id: WorkId(id.unsigned_abs()),
        reason,
    };
    let (layout, bytes) = match (row.get::<_, Option<i64>>(1), row.get::<_, Vec<u8>>(2)) {
        (Ok(layout), Ok(bytes)) => (layout, bytes),
        // Not a blob or a number (written by something else): report, keep.
        (Err(e), _) | (_, Err(e)) => return Ok(Err(unreadable(e.to_string()))),
    };
    Ok(match decode_row(layout, &bytes) {
        Ok(rec) if i64::try_from(rec.id).ok() == Some(id) => match rec.problem() {
            None => Ok(rec),
            Some(reason) => Err(unreadable(reason)),
        },
        Ok(rec) => Err(unreadable(format!("the row holds work {} instead", rec.id))),
        Err(reason) => Err(unreadable(reason)),
    })
}

/// The readable records of the rows `sql` selects (`id, layout, record`
/// first), as the scheduler holds them; the others are left out.
fn records(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Record>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(io)?;
    let mut rows = stmt.query(params).map_err(io)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(io)? {
        if let Ok(rec) = read_row(row).map_err(io)? {
            out.push(with_implicit_tag(rec));
        }
    }
    Ok(out)
}

/// The readable works `query` selects, by id.
pub(super) fn select(conn: &Connection, query: &WorkQuery) -> Result<Vec<Record>, StoreError> {
    let mut found = match query {
        WorkQuery::Id(id) => {
            let Ok(id) = i64::try_from(id.0) else {
                return Ok(Vec::new());
            };
            records(
                conn,
                "SELECT id, layout, record FROM works WHERE id = ?1",
                [id],
            )?
        }
        WorkQuery::Tag(tag) if !is_handler(conn, tag)? => records(
            conn,
            "SELECT w.id, w.layout, w.record FROM work_tags t JOIN works w ON w.id = t.id
             WHERE t.tag = ?1 ORDER BY t.id",
            [tag],
        )?,
        WorkQuery::Tag(tag) => {
            // A handler's name: its works are found by their `handler`
            // column, enqueued ones through the due index's entries (they
            // carry it: a scan of the index, not of the rows), the others
            // through the index of works that are not enqueued; and the
            // works that have it as an explicit tag of another handler. A
            // work whose explicit tag is its own handler's name has no tag
            // row for it: each work comes once.
            let mut found = records(
                conn,
                "SELECT w.id, w.layout, w.record FROM work_tags t JOIN works w ON w.id = t.id
                 WHERE t.tag = ?1
                 UNION ALL
                 SELECT id, layout, record FROM works INDEXED BY works_due
                 WHERE due IS NOT NULL AND handler = ?1
                 UNION ALL
                 SELECT id, layout, record FROM works INDEXED BY works_held
                 WHERE state IS NOT 0 AND handler = ?1",
                [tag],
            )?;
            found.sort_by_key(|r| r.id);
            found.dedup_by_key(|r| r.id);
            found
        }
        WorkQuery::UniqueName(name) => records(
            conn,
            "SELECT id, layout, record FROM works WHERE uniq = ?1 ORDER BY id",
            [name],
        )?,
        WorkQuery::All => records(conn, "SELECT id, layout, record FROM works ORDER BY id", [])?,
    };
    // The columns find the rows; the record decides (a row edited by
    // hand may say otherwise).
    found.retain(|r| r.selected_by(query));
    Ok(found)
}

/// Whether the store has (or had) works of handler `name`.
fn is_handler(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM work_handlers WHERE name = ?1)")
        .map_err(io)?
        .query_row([name], |r| r.get(0))
        .map_err(io)
}

/// The enqueued works `query` selects, in no order.
pub(super) fn enqueued(conn: &Connection, query: &WorkQuery) -> Result<Vec<Record>, StoreError> {
    let mut found = match query {
        WorkQuery::All => records(
            conn,
            "SELECT id, layout, record FROM works WHERE due IS NOT NULL",
            [],
        )?,
        query => select(conn, query)?,
    };
    found.retain(|r| r.state == WorkState::Enqueued);
    Ok(found)
}

/// The enqueued works after `after` in (due, id) order, at most `n` rows
/// (the readable ones; the others go to `unreadable`), and the key of the
/// last row read when there may be more (`None`: none is left after them).
pub(super) fn due_after(
    conn: &Connection,
    after: Option<DueKey>,
    n: usize,
    unreadable: &mut Vec<UnreadableWork>,
) -> Result<DuePage, StoreError> {
    let (due, id) = after.unwrap_or((i64::MIN, 0));
    let id = i64::try_from(id).unwrap_or(i64::MAX);
    let limit = i64::try_from(n).unwrap_or(i64::MAX);
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, layout, record, due FROM works
             WHERE due IS NOT NULL AND (due, id) > (?1, ?2) AND typeof(due) = 'integer'
             ORDER BY due, id LIMIT ?3",
        )
        .map_err(io)?;
    let mut rows = stmt.query(params![due, id, limit]).map_err(io)?;
    let (mut out, mut read, mut last) = (Vec::new(), 0usize, None);
    while let Some(row) = rows.next().map_err(io)? {
        read += 1;
        let key: (i64, i64) = (row.get(3).map_err(io)?, row.get(0).map_err(io)?);
        last = Some((key.0, key.1.max(0).unsigned_abs()));
        match read_row(row).map_err(io)? {
            Ok(rec) => out.push(with_implicit_tag(rec)),
            Err(bad) => unreadable.push(bad),
        }
    }
    Ok((out, if read < n { None } else { last }))
}

/// The rows whose `due` is text or a blob, which this crate never writes
/// (a row written by something else, or by hand): unreadable, reported
/// and left as they are. They sort after every number in the due index,
/// so finding them costs a seek. (The due order reads integer dues only.)
pub(super) fn foreign_dues(
    conn: &Connection,
    unreadable: &mut Vec<UnreadableWork>,
) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT id, typeof(due) FROM works WHERE due >= '' ORDER BY id")
        .map_err(io)?;
    let mut rows = stmt.query([]).map_err(io)?;
    while let Some(row) = rows.next().map_err(io)? {
        let id: i64 = row.get(0).map_err(io)?;
        let kind: String = row.get(1).map_err(io)?;
        unreadable.push(UnreadableWork {
            id: WorkId(id.unsigned_abs()),
            reason: format!("its due column holds a {kind}, not a time"),
        });
    }
    Ok(())
}

/// When the earliest enqueued work is due, on the work clock.
pub(super) fn next_due(conn: &Connection) -> Result<Option<i64>, StoreError> {
    conn.query_row(
        "SELECT min(due) FROM works WHERE due IS NOT NULL AND typeof(due) = 'integer'",
        [],
        |r| r.get(0),
    )
    .optional()
    .map(Option::flatten)
    .map_err(io)
}
