//! [`ExitReason`] and [`Crash`]: why an isolate exited. They live with the
//! errors (which carry them, as [`AskError::Dead`](crate::AskError::Dead))
//! so that the dependency goes one way: `isolate` uses `error`, never the
//! reverse.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an isolate exited.
///
/// # Examples
///
/// ```
/// use isolates::ExitReason;
/// let reason = ExitReason::Panicked("index out of bounds".into());
/// assert!(!reason.is_normal());
/// assert_eq!(reason.to_string(), "panicked: index out of bounds");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExitReason {
    /// It stopped itself, or every handle was dropped and its mailbox drained.
    Normal,
    /// It was killed.
    Killed,
    /// User code panicked, with this message.
    Panicked(String),
    /// `start` or a handler returned this error (its `Display` text).
    Failed(String),
    /// A [process isolate](crate::process)'s child process died: a signal,
    /// a stack overflow, its memory limit, an exit of its own, or a broken
    /// channel. The parent and its other isolates go on.
    Crashed(Crash),
    /// An isolate [linked](crate::Context::link) to this one exited
    /// abnormally, and this one did not [trap exits](crate::Context::trap_exits)
    /// (OTP's exit signal). `reason` is the root cause: where a chain of
    /// links fails one after the other, every isolate of the chain names
    /// the isolate that failed first's reason, never a nested `Linked`, so
    /// a reason stays one level deep whatever the chain's length.
    Linked {
        /// The id of the linked isolate that exited.
        id: u64,
        /// Its name.
        name: String,
        /// Why it exited (never itself `Linked`: the root cause).
        reason: Box<ExitReason>,
    },
}

/// How a [process isolate](crate::process)'s child process died.
///
/// # Examples
///
/// ```
/// use isolates::{Crash, ExitReason};
/// let reason = ExitReason::Crashed(Crash::Signal(11));
/// assert_eq!(reason.to_string(), "crashed: killed by signal 11 (SIGSEGV, a segmentation fault)");
/// let oom = ExitReason::Crashed(Crash::OutOfMemory { limit: 64 << 20 });
/// assert!(oom.to_string().contains("memory limit"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Crash {
    /// Killed by this signal: 11 a segmentation fault, 6 an abort (a
    /// Rust `abort`, a C library's assertion), 9 a kill from outside.
    Signal(i32),
    /// A thread of the child overflowed its stack.
    StackOverflow,
    /// An allocation failed under the memory limit (`max_memory`), in bytes.
    OutOfMemory {
        /// The limit the child ran under.
        limit: u64,
    },
    /// The child exited by itself with this code (e.g. `std::process::exit`
    /// in user code).
    Exit(i32),
    /// The child broke the channel: it sent bytes that are not a frame, a
    /// frame over the codec's limit, closed its end, or did not start in
    /// time. The child is killed.
    Protocol(String),
    /// The child process could not be started.
    Spawn(String),
}

impl fmt::Display for Crash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Crash::Signal(signal) => {
                write!(f, "killed by signal {signal}")?;
                let name = match signal {
                    4 => " (SIGILL, an illegal instruction)",
                    6 => " (SIGABRT, an abort)",
                    7 => " (SIGBUS, a bus error)",
                    8 => " (SIGFPE, an arithmetic fault)",
                    9 => " (SIGKILL)",
                    11 => " (SIGSEGV, a segmentation fault)",
                    15 => " (SIGTERM)",
                    _ => "",
                };
                f.write_str(name)
            }
            Crash::StackOverflow => f.write_str("a stack overflow"),
            Crash::OutOfMemory { limit } => {
                write!(f, "out of memory under its memory limit of {limit} bytes")
            }
            Crash::Exit(code) => write!(f, "the child process exited by itself with code {code}"),
            Crash::Protocol(why) => write!(f, "the child process broke its channel: {why}"),
            Crash::Spawn(why) => write!(f, "the child process could not be started: {why}"),
        }
    }
}

impl ExitReason {
    /// Whether this is [`ExitReason::Normal`].
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(isolates::ExitReason::Normal.is_normal());
    /// ```
    pub fn is_normal(&self) -> bool {
        matches!(self, ExitReason::Normal)
    }

    /// The reason a linked isolate exits with when the isolate `id`
    /// (`name`) exited with this reason: the root cause is kept, so links
    /// never nest.
    pub(crate) fn linked(&self, id: u64, name: &str) -> ExitReason {
        let root = match self {
            ExitReason::Linked { reason, .. } => (**reason).clone(),
            other => other.clone(),
        };
        ExitReason::Linked {
            id,
            name: name.to_owned(),
            reason: Box::new(root),
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("exited normally"),
            ExitReason::Killed => f.write_str("killed"),
            ExitReason::Panicked(msg) => write!(f, "panicked: {msg}"),
            ExitReason::Failed(msg) => write!(f, "failed: {msg}"),
            ExitReason::Crashed(crash) => write!(f, "crashed: {crash}"),
            ExitReason::Linked { id, name, reason } => {
                write!(f, "linked isolate {name} (#{id}) exited: {reason}")
            }
        }
    }
}
