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
use super::layout;

/// The schema version of a store this build creates, and the newest it
/// reads.
pub(super) const LATEST: i32 = 2;

/// One step: from `from` to `from + 1`.
struct Migration {
    from: i32,
    run: fn(&Transaction<'_>) -> Result<(), rusqlite::Error>,
}

/// Every step, in order; `MIGRATIONS[i].from == i + 1`.
const MIGRATIONS: &[Migration] = &[Migration {
    from: 1,
    run: add_layouts,
}];

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
