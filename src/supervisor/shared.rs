//! What a supervisor's handles and its thread share, and the messages its
//! thread serves.

use std::sync::atomic::AtomicUsize;

use crossbeam_channel as cb;
use parking_lot::{Condvar, Mutex};

use super::error::ChildError;
use super::events::{Listeners, SupervisionEvent};
use super::spec::{ChildInfo, ChildSpec, Registry};
use crate::codec::envelope::Envelope;
use crate::error::ExitReason;
use crate::isolate::Leftover;
use crate::oneshot;
use crate::pending::{Pending, Reply};

/// Tells a parent supervisor that a nested one exited.
pub(super) type ParentHook = Box<dyn Fn(ExitReason) + Send + Sync>;

/// What a supervisor's handles and its thread share.
pub(super) struct SupShared {
    pub(super) name: String,
    pub(super) tx: cb::Sender<SupMsg>,
    pub(super) registry: Registry,
    pub(super) exit: Mutex<Option<ExitReason>>,
    pub(super) exited: Condvar,
    pub(super) listeners: Listeners,
    /// The children as the supervisor's thread last saw them, published
    /// before each event so that whoever sees an event sees this as new.
    pub(super) children: Mutex<Vec<ChildInfo>>,
    /// [`Supervisor`](super::Supervisor) handles alive: the last one
    /// dropped stops the supervisor.
    pub(super) handles: AtomicUsize,
}

impl SupShared {
    /// Tells every listener; see [`Listeners::emit`].
    pub(super) fn emit(&self, event: SupervisionEvent) {
        self.listeners.emit(&self.name, event);
    }

    /// Records the exit. After this no [`Call`] enters the queue (see
    /// [`call`](Self::call)): the thread drops those already there, which
    /// resolves their [`Pending`]s.
    pub(super) fn finish(&self, reason: ExitReason) {
        *self.exit.lock() = Some(reason);
        self.exited.notify_all();
        self.listeners.clear();
        self.registry.lock().clear();
        self.children.lock().clear();
    }

    pub(super) fn exited_error(&self) -> ChildError {
        ChildError::Exited {
            supervisor: self.name.clone(),
        }
    }

    /// Hands a request to the supervisor's thread; its answer comes in the
    /// returned `Pending`. Never blocks on the thread.
    pub(super) fn call(&self, request: Request) -> Pending<(), ChildError> {
        let (answer, rx) = oneshot::oneshot();
        {
            // Checked and sent under the exit lock: the thread records its
            // exit under it too, then drops what is queued.
            let exit = self.exit.lock();
            if exit.is_some() {
                return Pending::ready(Err(self.exited_error()));
            }
            let answer = Answer(answer);
            let _ = self.tx.send(SupMsg::Call(Call { request, answer }));
        }
        let exited = self.exited_error();
        Pending::waiting(rx, move |reply| match reply {
            Some(Reply::Value(Envelope::Moved(value))) => {
                match value.downcast::<Result<(), ChildError>>() {
                    Ok(result) => *result,
                    Err(_) => unreachable_answer(),
                }
            }
            // The thread ended without answering: the supervisor exited.
            None => Err(exited),
            Some(_) => unreachable_answer(),
        })
    }
}

/// Only [`Answer::send`] fills the slot, always with a moved
/// `Result<(), ChildError>`; anything else is a bug in this crate, said as
/// such rather than hidden.
fn unreachable_answer() -> Result<(), ChildError> {
    Err(ChildError::StartFailed {
        name: String::new(),
        error: crate::error::SpawnError::Thread(
            "the supervisor answered in an unexpected form (a bug in isolates)".into(),
        ),
    })
}

/// What a handle asks of the supervisor's thread.
pub(super) enum Request {
    Start(ChildSpec),
    Terminate(String),
    Restart(String),
    Delete(String),
}

/// A request and where its answer goes.
pub(super) struct Call {
    request: Request,
    answer: Answer,
}

impl Call {
    pub(super) fn into_parts(self) -> (Request, Answer) {
        (self.request, self.answer)
    }
}

/// Where the answer to a [`Call`] goes; dropping it unanswered resolves
/// the caller's `Pending` as [`ChildError::Exited`].
pub(super) struct Answer(oneshot::Sender<Reply>);

impl Answer {
    pub(super) fn send(self, result: Result<(), ChildError>) {
        self.0.send(Reply::Value(Envelope::Moved(Box::new(result))));
    }
}

pub(super) enum SupMsg {
    Exited {
        /// The child's id: stable while indexes shift as children come
        /// and go.
        id: u64,
        generation: u64,
        reason: ExitReason,
        leftover: Option<Leftover>,
    },
    Stop,
    Call(Call),
}
