//! The handle of a running supervisor.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::error::{LookupError, SUPERVISOR};
use super::events::SupervisionEvent;
use super::shared::{SupMsg, SupShared};
use crate::isolate::{ExitReason, Isolate, IsolateHandle};
use crate::port::SendPort;

/// A running supervisor. Cheap to clone; dropping handles does not stop
/// it (call [`stop`](Self::stop)).
///
/// # Examples
///
/// See [`SupervisorBuilder`](super::SupervisorBuilder).
#[derive(Clone)]
pub struct Supervisor {
    shared: Arc<SupShared>,
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("name", &self.shared.name)
            .field("exit", &*self.shared.exit.lock())
            .finish()
    }
}

impl Supervisor {
    pub(super) fn new(shared: Arc<SupShared>) -> Self {
        Supervisor { shared }
    }

    /// The handle of worker child `name` of type `I`: the same handle across
    /// restarts.
    ///
    /// # Errors
    ///
    /// [`LookupError::NotFound`] if the supervisor has no child `name` (it
    /// lists the names it has), [`LookupError::WrongType`] if the child
    /// is of another type or a supervisor, [`LookupError::Exited`] once
    /// the supervisor has exited.
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::{Context, Isolate};
    /// use isolates::supervisor::{ChildSpec, LookupError, SupervisorBuilder};
    ///
    /// struct Idle;
    /// impl Isolate for Idle {
    ///     type Args = (); type Message = (); type Reply = (); type Error = String;
    ///     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Idle) }
    ///     fn handle(&mut self, _: (), _: &mut Context<Self>) -> Result<(), String> { Ok(()) }
    /// }
    /// struct Other;
    /// impl Isolate for Other {
    ///     type Args = (); type Message = (); type Reply = (); type Error = String;
    ///     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Other) }
    ///     fn handle(&mut self, _: (), _: &mut Context<Self>) -> Result<(), String> { Ok(()) }
    /// }
    ///
    /// let sup = SupervisorBuilder::new()
    ///     .child(ChildSpec::worker::<Idle>("idle", ()))
    ///     .start()
    ///     .unwrap();
    /// assert!(sup.worker::<Idle>("idle").is_ok());
    /// let typo = sup.worker::<Idle>("idel").unwrap_err();
    /// assert!(matches!(&typo, LookupError::NotFound { children, .. } if children == &["idle"]));
    /// let wrong = sup.worker::<Other>("idle").unwrap_err();
    /// assert!(matches!(wrong, LookupError::WrongType { .. }));
    /// sup.stop();
    /// ```
    pub fn worker<I: Isolate>(&self, name: &str) -> Result<IsolateHandle<I>, LookupError> {
        self.lookup(name, std::any::type_name::<I>())
    }

    /// The current incarnation of nested supervisor `name`.
    ///
    /// # Errors
    ///
    /// As [`worker`](Self::worker)'s: [`LookupError::WrongType`] if the
    /// child `name` is a worker.
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::supervisor::{ChildSpec, SupervisorBuilder};
    /// let root = SupervisorBuilder::new()
    ///     .child(ChildSpec::supervisor("inner", SupervisorBuilder::new()))
    ///     .start()
    ///     .unwrap();
    /// assert!(root.supervisor("inner").is_ok());
    /// root.stop();
    /// ```
    pub fn supervisor(&self, name: &str) -> Result<Supervisor, LookupError> {
        self.lookup(name, SUPERVISOR)
    }

    /// The child `name`'s handle, of type `T` (`expected` names it).
    fn lookup<T: Clone + 'static>(
        &self,
        name: &str,
        expected: &'static str,
    ) -> Result<T, LookupError> {
        if self.shared.exit.lock().is_some() {
            return Err(LookupError::Exited {
                supervisor: self.shared.name.clone(),
            });
        }
        let registry = self.shared.registry.lock();
        let Some((handle, found)) = registry.get(name) else {
            let mut children: Vec<String> = registry.keys().cloned().collect();
            children.sort();
            return Err(LookupError::NotFound {
                name: name.to_owned(),
                children,
            });
        };
        handle
            .downcast_ref::<T>()
            .cloned()
            .ok_or_else(|| LookupError::WrongType {
                name: name.to_owned(),
                expected,
                found,
            })
    }

    /// Sends every later [`SupervisionEvent`] to `port` (until its receiver
    /// is gone); the children's `Started` events are past by now: attach
    /// with [`SupervisorBuilder::event_listener`](super::SupervisorBuilder::event_listener) to see them. The supervisor never waits for a listener: while `port`'s
    /// mailbox is full, events for it are dropped and counted in
    /// [`dropped_events`](Self::dropped_events).
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::port;
    /// use isolates::supervisor::{SupervisionEvent, SupervisorBuilder};
    /// let sup = SupervisorBuilder::new().start().unwrap();
    /// let (tx, events) = port::unbounded::<SupervisionEvent>();
    /// sup.add_event_listener(tx);
    /// sup.stop();
    /// # let _ = events;
    /// ```
    pub fn add_event_listener(&self, port: SendPort<SupervisionEvent>) {
        self.shared.listeners.add(port);
    }

    /// How many events listeners missed because their mailbox was full.
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::supervisor::SupervisorBuilder;
    /// let sup = SupervisorBuilder::new().start().unwrap();
    /// assert_eq!(sup.dropped_events(), 0);
    /// sup.stop();
    /// ```
    pub fn dropped_events(&self) -> u64 {
        self.shared.listeners.dropped()
    }

    /// Stops the children in reverse order, then the supervisor exits
    /// [`ExitReason::Normal`]; returns at once (see [`join`](Self::join)).
    ///
    /// # Examples
    ///
    /// See [`SupervisorBuilder`](super::SupervisorBuilder).
    pub fn stop(&self) {
        let _ = self.shared.tx.send(SupMsg::Stop);
    }

    /// Waits at most `timeout` for the supervisor to exit; its reason, or
    /// `None` if it still runs.
    ///
    /// # Examples
    ///
    /// See [`SupervisorBuilder`](super::SupervisorBuilder).
    pub fn join(&self, timeout: Duration) -> Option<ExitReason> {
        let deadline = crate::time::deadline_after(timeout);
        let mut exit = self.shared.exit.lock();
        while exit.is_none() {
            if crate::time::wait(&self.shared.exited, &mut exit, deadline) {
                break;
            }
        }
        exit.clone()
    }

    /// Why the supervisor exited, or `None` while it runs; never blocks.
    ///
    /// # Examples
    ///
    /// ```
    /// let sup = isolates::supervisor::SupervisorBuilder::new().start().unwrap();
    /// assert_eq!(sup.exit_reason(), None);
    /// sup.stop();
    /// ```
    pub fn exit_reason(&self) -> Option<ExitReason> {
        self.shared.exit.lock().clone()
    }
}
