//! Work-store helpers for the schedule tests.

#![allow(dead_code)] // only the store's tests use them

use std::path::Path;

/// What a `kill -9` of the manager's process now would leave, copied
/// to `copy`: the database (`VACUUM INTO`, a consistent copy of what
/// SQLite holds) and then the store's log beside it, whose commits are
/// not all in SQLite yet (a store opened folds them in).
pub(crate) fn crash_copy(path: &Path, copy: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
        .unwrap();
    drop(conn);
    for suffix in ["-log", "-log2"] {
        let from = format!("{}{suffix}", path.display());
        if Path::new(&from).exists() {
            std::fs::copy(&from, format!("{}{suffix}", copy.display())).unwrap();
        }
    }
}
