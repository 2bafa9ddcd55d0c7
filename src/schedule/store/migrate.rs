//! Schema migrations: each step brings a store from one schema version to
//! the next, in the same transaction as the version it sets, so a store
//! is either wholly at the old version or wholly at the new one (a crash
//! or a failed step leaves it as it was). Android's WorkManager ships Room
//! migrations for the same reason.
//!
//! The schema is the tables; what a row's bytes mean is its layout (see
//! [`layout`](super::layout)). A new field in a row needs no migration,
//! only a new layout; a new table or column does.

use rusqlite::{Transaction, params};

use super::StoreError;
use super::{layout, query};

/// The schema version of a store this build creates, and the newest it
/// reads.
pub(super) const LATEST: i32 = 4;

/// The indexes over the columns of schema 3 and the tags table (see
/// [`query`]): enqueued works by (due, id), carrying their handler's name
/// (works are found by handler name through it: no row of their own); the
/// works that are not enqueued (or whose row has no columns: `state` is
/// `NULL`), which a manager loads when it starts; works by unique name;
/// works by explicit tag (a work's tag rows are found from its row's tags
/// when it changes: no index by id, one page less to write a work); and
/// the handler names the store has works of, so that a tag that is none
/// is answered from `work_tags` alone. A plain delayed work writes its row
/// and its due-index entry, nothing else.
pub(super) const INDEXES: &str = "
    CREATE INDEX works_due ON works (due, id, handler) WHERE due IS NOT NULL;
    CREATE INDEX works_held ON works (state) WHERE state IS NOT 0;
    CREATE INDEX works_uniq ON works (uniq) WHERE uniq IS NOT NULL;
    CREATE TABLE work_tags (tag TEXT NOT NULL, id INTEGER NOT NULL, PRIMARY KEY (tag, id))
        WITHOUT ROWID;
    CREATE TABLE work_handlers (name TEXT PRIMARY KEY) WITHOUT ROWID;";

/// Since schema 4: how far the store's log is folded into the database,
/// written in the transaction of each fold (see [`behind`](super::behind)):
/// the log's generation and the offset in it after the last frame folded.
/// One row, or none before the first fold.
pub(super) const LOG_TABLE: &str = "
    CREATE TABLE store_log (id INTEGER PRIMARY KEY CHECK (id = 0),
                            generation INTEGER NOT NULL, end_offset INTEGER NOT NULL);";

/// One step: from `from` to `from + 1`.
struct Migration {
    from: i32,
    run: fn(&Transaction<'_>) -> Result<(), rusqlite::Error>,
}

/// Every step, in order; `MIGRATIONS[i].from == i + 1`.
const MIGRATIONS: &[Migration] = &[
    Migration {
        from: 1,
        run: add_layouts,
    },
    Migration {
        from: 2,
        run: add_columns,
    },
    Migration {
        from: 3,
        run: add_log,
    },
];

/// 1 → 2: each row says the layout it was written in. Schema-1 rows have
/// no number; each is read to tell (they are layout 1 or 2), and a row
/// that reads as neither keeps none: it stays unreadable, untouched.
fn add_layouts(tx: &Transaction<'_>) -> Result<(), rusqlite::Error> {
    tx.execute_batch("ALTER TABLE works ADD COLUMN layout INTEGER")?;
    let mut found = Vec::new();
    {
        let mut rows = tx.prepare("SELECT id, record FROM works")?;
        let mut rows = rows.query([])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            // A row that is not a blob is left for the load to report.
            if let Ok(bytes) = row.get::<_, Vec<u8>>(1)
                && let Ok((_, n)) = layout::guess(&bytes)
            {
                found.push((id, n));
            }
        }
    }
    let mut set = tx.prepare("UPDATE works SET layout = ?2 WHERE id = ?1")?;
    for (id, n) in found {
        set.execute(params![id, n])?;
    }
    Ok(())
}

/// 2 → 3: the columns the store is searched by (handler, state, due,
/// unique name), the tags table (explicit tags) and the handler names, filled from each row that reads; a row that does
/// not keeps `NULL` columns, and its bytes stay as they were.
fn add_columns(tx: &Transaction<'_>) -> Result<(), rusqlite::Error> {
    tx.execute_batch(&format!(
        "ALTER TABLE works ADD COLUMN handler TEXT;
         ALTER TABLE works ADD COLUMN state INTEGER;
         ALTER TABLE works ADD COLUMN due INTEGER;
         ALTER TABLE works ADD COLUMN uniq TEXT;
         {INDEXES}"
    ))?;
    // Read first, then written: a table is not changed under a scan of it.
    type Columns = (i64, String, i64, Option<i64>, Option<String>, Vec<String>);
    let mut found: Vec<Columns> = Vec::new();
    {
        let mut rows = tx.prepare("SELECT id, layout, record FROM works")?;
        let mut rows = rows.query([])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            if let Ok(rec) = query::read_row(row)? {
                let (handler, state, due, uniq) = query::columns(&rec);
                let tags = query::explicit_tags(&rec).map(str::to_owned).collect();
                found.push((
                    id,
                    handler.to_owned(),
                    state,
                    due,
                    uniq.map(str::to_owned),
                    tags,
                ));
            }
        }
    }
    let mut set =
        tx.prepare("UPDATE works SET handler = ?2, state = ?3, due = ?4, uniq = ?5 WHERE id = ?1")?;
    let mut tag = tx.prepare("INSERT OR IGNORE INTO work_tags (tag, id) VALUES (?1, ?2)")?;
    for (id, handler, state, due, uniq, tags) in found {
        set.execute(params![id, handler, state, due, uniq])?;
        for t in tags {
            tag.execute(params![t, id])?;
        }
    }
    tx.execute_batch(
        "INSERT OR IGNORE INTO work_handlers (name)
         SELECT DISTINCT handler FROM works WHERE handler IS NOT NULL",
    )?;
    Ok(())
}

/// 3 → 4: the store's commits may wait in a log beside the file (see
/// [`behind`](super::behind)), which builds of schema 3 do not read (the
/// version makes them refuse the store, [`StoreError::TooNew`]), and the
/// table that says how far that log is folded in ([`LOG_TABLE`]).
fn add_log(tx: &Transaction<'_>) -> Result<(), rusqlite::Error> {
    tx.execute_batch(LOG_TABLE)
}

/// Brings the store from schema `version` to [`LATEST`], if it is older,
/// in one transaction, or leaves it as it was.
pub(super) fn run(
    conn: &mut rusqlite::Connection,
    version: i32,
    path: &std::path::Path,
) -> Result<(), StoreError> {
    if version >= LATEST {
        return Ok(());
    }
    let failed = |e: rusqlite::Error, from: i32| StoreError::Migration {
        path: path.to_path_buf(),
        from,
        to: LATEST,
        detail: e.to_string(),
    };
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| failed(e, version))?;
    // Read again inside the transaction: another opener (where stores
    // are not locked) may have migrated it meanwhile.
    let mut at: i32 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| failed(e, version))?;
    while at < LATEST {
        let step = usize::try_from(at - 1)
            .ok()
            .and_then(|i| MIGRATIONS.get(i))
            .filter(|m| m.from == at)
            .ok_or_else(|| StoreError::Migration {
                path: path.to_path_buf(),
                from: at,
                to: LATEST,
                detail: format!("no migration from schema {at}"),
            })?;
        (step.run)(&tx).map_err(|e| failed(e, at))?;
        at += 1;
        tx.pragma_update(None, "user_version", at)
            .map_err(|e| failed(e, at - 1))?;
    }
    tx.commit().map_err(|e| failed(e, version))?;
    tracing::info!(target: "isolates", path = %path.display(), from = version, to = LATEST,
        "the work store was upgraded");
    Ok(())
}
