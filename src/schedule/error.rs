//! The work manager's error.

use std::fmt;

use super::store::StoreError;
#[cfg(doc)]
use super::{Operation, WorkManagerBuilder};
use crate::error::CodecError;

/// What went wrong with a request to the work manager.
///
/// # Examples
///
/// ```
/// use isolates::schedule::{WorkError, WorkManager, WorkRequest, WorkStore};
///
/// let manager = WorkManager::builder(WorkStore::in_memory().unwrap()).spawn().unwrap();
/// let err = manager.enqueue(WorkRequest::once("nobody")).wait().unwrap_err();
/// assert_eq!(err, WorkError::UnknownHandler("nobody".into()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkError {
    /// No handler is registered under this name: register it with
    /// [`WorkManagerBuilder::handler`].
    UnknownHandler(String),
    /// No constraint is registered under this name: register it with
    /// [`WorkManagerBuilder::constraint`].
    UnknownConstraint(String),
    /// The request is not valid as given; the text says why.
    Invalid(String),
    /// The input is larger than the data limit
    /// ([`WorkManagerBuilder::data_limit`]).
    DataTooLarge {
        /// Its encoded size in bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The input could not be encoded.
    Codec(CodecError),
    /// The store could not be opened or read.
    Store(StoreError),
    /// The manager could not start its workers or scheduler thread.
    Spawn(String),
    /// What [`WorkManagerBuilder::processes`] needs is not registered: the
    /// work handlers for child processes
    /// ([`Registry::work_handler`](crate::process::Registry::work_handler)),
    /// or `Registry::init` was not called. The text says what to add.
    NotRegistered(String),
    /// The manager was shut down.
    Stopped,
    /// The answer was already taken from this [`Operation`]: it is given
    /// once, like every result handle's.
    AlreadyTaken,
}

impl fmt::Display for WorkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownHandler(h) => write!(
                f,
                "no handler is registered as {h:?}: register it with WorkManagerBuilder::handler"
            ),
            Self::UnknownConstraint(c) => write!(
                f,
                "no constraint is registered as {c:?}: register it with \
                 WorkManagerBuilder::constraint"
            ),
            Self::Invalid(why) => write!(f, "invalid work request: {why}"),
            Self::DataTooLarge { size, limit } => write!(
                f,
                "the input is {size} bytes, over the data limit of {limit}: pass a path or a key \
                 instead, or raise WorkManagerBuilder::data_limit"
            ),
            Self::Codec(e) => write!(f, "the input could not be encoded: {e}"),
            Self::Store(e) => e.fmt(f),
            Self::Spawn(e) => write!(f, "the work manager could not start: {e}"),
            Self::NotRegistered(why) => write!(f, "the work manager could not start: {why}"),
            Self::Stopped => f.write_str("the work manager was shut down"),
            Self::AlreadyTaken => f.write_str("the answer was already taken from this operation"),
        }
    }
}

impl std::error::Error for WorkError {}

impl From<StoreError> for WorkError {
    fn from(e: StoreError) -> Self {
        WorkError::Store(e)
    }
}
