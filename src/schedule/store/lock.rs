//! Files that are not ours, and one opener per store.
//!
//! SQLite takes any file shorter than its header for a new database (and
//! would overwrite it), so a file's first bytes are checked before SQLite
//! opens it. Two work managers on one store would both run every work, so
//! a store holds an exclusive advisory lock (`flock`) on a file beside it,
//! `<store>-lock`, for as long as it is open. The lock is on a file of its
//! own, not on the database: closing a second descriptor of the database
//! would drop the POSIX locks SQLite holds on it in this process.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::StoreError;

/// The first 16 bytes of every SQLite database.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Refuses a file that exists, is not empty and does not start as an
/// SQLite database; SQLite itself would take a short one for a new
/// database and overwrite it. A missing or empty file becomes a new store.
pub(super) fn check_header(path: &Path) -> Result<(), StoreError> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::Io(format!("{}: {e}", path.display()))),
    };
    let mut head = Vec::with_capacity(SQLITE_MAGIC.len());
    (&mut file)
        .take(SQLITE_MAGIC.len() as u64)
        .read_to_end(&mut head)
        .map_err(|e| StoreError::Io(format!("{}: {e}", path.display())))?;
    if head.is_empty() || head == SQLITE_MAGIC {
        Ok(())
    } else {
        Err(StoreError::NotADatabase {
            path: path.to_path_buf(),
        })
    }
}

/// The lock file of the store at `db`: beside the file it names (links
/// followed), so that two paths to one store share it.
fn lock_path(db: &Path) -> PathBuf {
    let db = std::fs::canonicalize(db)
        .ok()
        .or_else(|| {
            // Not created yet: its directory, links followed.
            let dir = match db.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            Some(std::fs::canonicalize(dir).ok()?.join(db.file_name()?))
        })
        .unwrap_or_else(|| db.to_path_buf());
    let mut name = db.as_os_str().to_owned();
    name.push("-lock");
    PathBuf::from(name)
}

/// A held lock on a store; released (and its file removed) when dropped.
#[derive(Debug)]
pub(super) struct StoreLock {
    #[cfg(target_os = "linux")]
    _file: std::fs::File,
    #[cfg(target_os = "linux")]
    path: PathBuf,
}

impl StoreLock {
    /// Whether no other opener can hold the store while this lock is
    /// held (where stores are locked).
    pub(super) fn is_exclusive(&self) -> bool {
        cfg!(target_os = "linux")
    }

    /// Locks the store at `db` (which exists), or says who holds it.
    #[cfg(target_os = "linux")]
    pub(super) fn acquire(db: &Path) -> Result<Self, StoreError> {
        use rustix::fs::{FlockOperation, flock, fstat, stat};
        let path = lock_path(db);
        let io = |e: &dyn std::fmt::Display| StoreError::Io(format!("{}: {e}", path.display()));
        loop {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| io(&e))?;
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    return Err(StoreError::Locked {
                        path: db.to_path_buf(),
                    });
                }
                Err(e) => return Err(io(&e)),
            }
            // The holder before us may have removed the file between our
            // open and our lock: then the lock is on a file nobody else
            // will find, and we try again on the one at the path.
            let held = fstat(&file).map_err(|e| io(&e))?;
            match stat(&path) {
                Ok(now) if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino) => {
                    return Ok(StoreLock { _file: file, path });
                }
                Ok(_) | Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(io(&e)),
            }
        }
    }

    /// Elsewhere stores are not locked (yet): one opener per store is the
    /// caller's to ensure.
    #[cfg(not(target_os = "linux"))]
    pub(super) fn acquire(db: &Path) -> Result<Self, StoreError> {
        let _ = lock_path(db);
        Ok(StoreLock {})
    }
}

#[cfg(target_os = "linux")]
impl Drop for StoreLock {
    fn drop(&mut self) {
        // Removed while still held, so a later opener never locks a file
        // that is about to go; the descriptor closes (and unlocks) after.
        let _ = std::fs::remove_file(&self.path);
    }
}
