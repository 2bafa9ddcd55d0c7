//! The supervisor's errors: looking a child up, and adding, stopping,
//! restarting or removing one at run time.

use std::fmt;

use crate::error::SpawnError;
use crate::pending::Taken;

/// What a nested supervisor is called in [`LookupError::WrongType`].
pub(super) const SUPERVISOR: &str = "a supervisor";

/// Why [`Supervisor::worker`](super::Supervisor::worker) or [`Supervisor::supervisor`](super::Supervisor::supervisor) gave no
/// handle.
///
/// # Examples
///
/// ```
/// use isolates::supervisor::{LookupError, Supervisor, SupervisorBuilder};
/// let sup = Supervisor::builder().name("root").spawn().unwrap();
/// let err = sup.supervisor("nobody").unwrap_err();
/// assert_eq!(err, LookupError::NotFound { name: "nobody".into(), children: vec![] });
/// assert!(err.to_string().contains("no child named \"nobody\""));
/// sup.stop();
/// sup.join(std::time::Duration::from_secs(5));
/// assert!(matches!(sup.supervisor("nobody"), Err(LookupError::Exited { .. })));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// The supervisor has no child of this name: check the spelling
    /// against `children`, the names it has.
    NotFound {
        /// The name asked for.
        name: String,
        /// The supervisor's children, by name, sorted.
        children: Vec<String>,
    },
    /// The child exists but is not what was asked for: ask with the type
    /// it was added with (`found`), or use [`Supervisor::supervisor`](super::Supervisor::supervisor) for
    /// a nested supervisor.
    WrongType {
        /// The child's name.
        name: String,
        /// The isolate type asked for, or "a supervisor".
        expected: &'static str,
        /// What the child is: its isolate type, or "a supervisor".
        found: &'static str,
    },
    /// The supervisor has exited and its children with it: see
    /// [`Supervisor::exit_reason`](super::Supervisor::exit_reason).
    Exited {
        /// The supervisor's name.
        supervisor: String,
    },
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound { name, children } => write!(
                f,
                "the supervisor has no child named {name:?}; its children are {children:?}"
            ),
            Self::WrongType {
                name,
                expected,
                found,
            } => write!(
                f,
                "the child {name:?} is {found}, not {expected}: look it up as what it was added as"
            ),
            Self::Exited { supervisor } => write!(
                f,
                "the supervisor {supervisor:?} has exited and its children with it: see its \
                 exit_reason"
            ),
        }
    }
}

impl std::error::Error for LookupError {}

/// Why [`start_child`](super::Supervisor::start_child),
/// [`terminate_child`](super::Supervisor::terminate_child),
/// [`restart_child`](super::Supervisor::restart_child),
/// [`delete_child`](super::Supervisor::delete_child) or
/// [`children`](super::Supervisor::children) did not do what was asked.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::supervisor::{ChildError, Supervisor, SupervisorBuilder};
/// let sup = Supervisor::builder().name("root").spawn().unwrap();
/// let err = sup.terminate_child("nobody").unwrap_err();
/// assert_eq!(err, ChildError::NotFound { name: "nobody".into(), children: vec![] });
/// assert!(err.to_string().contains("no child named \"nobody\""));
/// sup.stop();
/// sup.join(Duration::from_secs(5));
/// assert_eq!(sup.delete_child("nobody"), Err(ChildError::Exited { supervisor: "root".into() }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChildError {
    /// The supervisor has no child of this name (a temporary child's spec
    /// is gone once it ends): check the spelling against `children`.
    NotFound {
        /// The name asked for.
        name: String,
        /// The supervisor's children, by name, in start order.
        children: Vec<String>,
    },
    /// A child of this name is already there, running or not: pick
    /// another name, or restart it with
    /// [`restart_child`](super::Supervisor::restart_child), or remove it
    /// first with [`delete_child`](super::Supervisor::delete_child).
    AlreadyPresent {
        /// The name asked for.
        name: String,
    },
    /// The child is running (or waiting out its backoff before a restart):
    /// stop it first with
    /// [`terminate_child`](super::Supervisor::terminate_child).
    Running {
        /// The child's name.
        name: String,
    },
    /// The child could not be started; a new child is not added, a
    /// terminated one stays terminated.
    StartFailed {
        /// The child's name.
        name: String,
        /// Why it could not start.
        error: SpawnError,
    },
    /// The supervisor has exited and its children with it: see
    /// [`Supervisor::exit_reason`](super::Supervisor::exit_reason).
    Exited {
        /// The supervisor's name.
        supervisor: String,
    },
    /// The result was already taken from this
    /// [`Pending`](crate::Pending).
    AlreadyTaken,
}

impl fmt::Display for ChildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound { name, children } => write!(
                f,
                "the supervisor has no child named {name:?}; its children are {children:?}"
            ),
            Self::AlreadyPresent { name } => write!(
                f,
                "the supervisor already has a child named {name:?}: use another name, restart \
                 it with restart_child, or delete it first with delete_child"
            ),
            Self::Running { name } => write!(
                f,
                "the child {name:?} is running: stop it first with terminate_child"
            ),
            Self::StartFailed { name, error } => {
                write!(f, "the child {name:?} could not be started: {error}")
            }
            Self::Exited { supervisor } => write!(
                f,
                "the supervisor {supervisor:?} has exited and its children with it: see its \
                 exit_reason"
            ),
            Self::AlreadyTaken => f.write_str("the result was already taken from this handle"),
        }
    }
}

impl std::error::Error for ChildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::StartFailed { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl Taken for ChildError {
    fn taken() -> Self {
        ChildError::AlreadyTaken
    }
}
