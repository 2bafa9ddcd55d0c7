//! The supervisor's errors: looking a child up.

use std::fmt;

/// What a nested supervisor is called in [`LookupError::WrongType`].
pub(super) const SUPERVISOR: &str = "a supervisor";

/// Why [`Supervisor::worker`](super::Supervisor::worker) or [`Supervisor::supervisor`](super::Supervisor::supervisor) gave no
/// handle.
///
/// # Examples
///
/// ```
/// use isolates::supervisor::{LookupError, SupervisorBuilder};
/// let sup = SupervisorBuilder::new().name("root").start().unwrap();
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
