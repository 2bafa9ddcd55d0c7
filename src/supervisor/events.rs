//! What happened in a supervisor, and telling it to listeners that are
//! never waited for.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::error::ExitReason;
use crate::error::TrySendError;
use crate::port::SendPort;

/// What happened in a supervisor, for the application to observe (see
/// [`SupervisorBuilder::event_listener`](super::SupervisorBuilder::event_listener) and
/// [`Supervisor::add_event_listener`](super::Supervisor::add_event_listener)).
///
/// # Examples
///
/// ```
/// use isolates::ExitReason;
/// use isolates::supervisor::SupervisionEvent;
/// let e = SupervisionEvent::Exited { child: "db".into(), reason: ExitReason::Killed };
/// assert_eq!(e.child(), Some("db"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SupervisionEvent {
    /// A child started: at supervisor start (only listeners attached with
    /// [`SupervisorBuilder::event_listener`](super::SupervisorBuilder::event_listener)
    /// are there to see it), or when asked with
    /// [`Supervisor::start_child`](super::Supervisor::start_child) or
    /// [`Supervisor::restart_child`](super::Supervisor::restart_child).
    Started {
        /// The child's name.
        child: String,
    },
    /// A child exited.
    Exited {
        /// The child's name.
        child: String,
        /// Why.
        reason: ExitReason,
    },
    /// A child was started again after an exit.
    Restarted {
        /// The child's name.
        child: String,
        /// Restarts of this child within the intensity window, this one
        /// included.
        attempt: u32,
    },
    /// A stopped child's spec was removed with
    /// [`Supervisor::delete_child`](super::Supervisor::delete_child).
    Deleted {
        /// The child's name.
        child: String,
    },
    /// The restart intensity was passed: the supervisor stopped its
    /// children and exits with `reason`.
    GaveUp {
        /// The supervisor's exit reason.
        reason: ExitReason,
    },
}

impl SupervisionEvent {
    /// The child the event is about, if any.
    ///
    /// # Examples
    ///
    /// See [`SupervisionEvent`].
    pub fn child(&self) -> Option<&str> {
        match self {
            Self::Started { child }
            | Self::Exited { child, .. }
            | Self::Restarted { child, .. }
            | Self::Deleted { child } => Some(child),
            Self::GaveUp { .. } => None,
        }
    }
}

/// A supervisor's event listeners, and how many events they missed.
pub(super) struct Listeners {
    ports: Mutex<Vec<SendPort<SupervisionEvent>>>,
    /// Events a full listener missed.
    dropped: AtomicU64,
}

impl Listeners {
    pub(super) fn new(ports: Vec<SendPort<SupervisionEvent>>) -> Self {
        Listeners {
            ports: Mutex::new(ports),
            dropped: AtomicU64::new(0),
        }
    }

    pub(super) fn add(&self, port: SendPort<SupervisionEvent>) {
        self.ports.lock().push(port);
    }

    pub(super) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Forgets every listener (the supervisor has exited).
    pub(super) fn clear(&self) {
        self.ports.lock().clear();
    }

    /// Tells every listener, never waiting for one: a listener whose
    /// mailbox is full misses the event (counted, and logged), one whose
    /// receiver is gone is forgotten. Sends happen outside the lock.
    pub(super) fn emit(&self, supervisor: &str, event: SupervisionEvent) {
        match &event {
            SupervisionEvent::Exited {
                reason: ExitReason::Panicked(_) | ExitReason::Failed(_) | ExitReason::Crashed(_),
                ..
            } => {
                tracing::warn!(target: "isolates", supervisor = %supervisor, ?event, "a child crashed");
            }
            _ => {
                tracing::debug!(target: "isolates", supervisor = %supervisor, ?event, "supervision event");
            }
        }
        let listeners = self.ports.lock().clone();
        let mut gone = Vec::new();
        for port in listeners {
            match port.try_send(event.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(target: "isolates", supervisor = %supervisor, "a supervision event listener is full: it misses an event");
                }
                Err(_) => gone.push(port),
            }
        }
        if !gone.is_empty() {
            self.ports
                .lock()
                .retain(|port| !gone.iter().any(|g| g.same_port(port)));
        }
    }
}
