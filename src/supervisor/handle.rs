//! The handle of a running supervisor.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::error::{ChildError, LookupError, SUPERVISOR};
use super::events::SupervisionEvent;
use super::shared::{Request, SupMsg, SupShared};
use super::spec::{ChildInfo, ChildSpec};
use crate::error::ExitReason;
use crate::isolate::{Isolate, IsolateHandle};
use crate::pending::Pending;
use crate::port::SendPort;

/// A running supervisor. Cheap to clone.
///
/// Dropping the last clone stops the supervisor as [`stop`](Self::stop)
/// does, in the background: the drop returns at once, and the supervisor's
/// thread stops its children in reverse order, each as its
/// [`Shutdown`](super::Shutdown) policy says, then exits. A nested
/// supervisor's handle (from [`supervisor`](Self::supervisor)) is one of
/// several: its parent holds one too, so dropping it stops nothing.
///
/// # Examples
///
/// See [`SupervisorBuilder`](super::SupervisorBuilder).
pub struct Supervisor {
    shared: Arc<SupShared>,
}

impl Clone for Supervisor {
    fn clone(&self) -> Self {
        Supervisor::new(Arc::clone(&self.shared))
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _ = self.shared.tx.send(SupMsg::Stop);
        }
    }
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
        shared.handles.fetch_add(1, Ordering::AcqRel);
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
    /// use isolates::supervisor::{ChildSpec, LookupError, Supervisor, SupervisorBuilder};
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
    /// let sup = Supervisor::builder()
    ///     .child(ChildSpec::worker::<Idle>("idle", ()))
    ///     .spawn()
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
    /// use isolates::supervisor::{ChildSpec, Supervisor, SupervisorBuilder};
    /// let root = Supervisor::builder()
    ///     .child(ChildSpec::supervisor("inner", Supervisor::builder()))
    ///     .spawn()
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
    /// use isolates::supervisor::{SupervisionEvent, Supervisor, SupervisorBuilder};
    /// let sup = Supervisor::builder().spawn().unwrap();
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
    /// use isolates::supervisor::{Supervisor, SupervisorBuilder};
    /// let sup = Supervisor::builder().spawn().unwrap();
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

    /// Whether the supervisor has exited; never blocks.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let sup = isolates::supervisor::Supervisor::builder().spawn().unwrap();
    /// assert!(!sup.is_finished());
    /// sup.stop();
    /// assert!(sup.join(Duration::from_secs(5)).is_some());
    /// assert!(sup.is_finished());
    /// ```
    pub fn is_finished(&self) -> bool {
        self.shared.exit.lock().is_some()
    }

    /// Why the supervisor exited, or `None` while it runs; never blocks.
    ///
    /// # Examples
    ///
    /// ```
    /// let sup = isolates::supervisor::Supervisor::builder().spawn().unwrap();
    /// assert_eq!(sup.exit_reason(), None);
    /// sup.stop();
    /// ```
    pub fn exit_reason(&self) -> Option<ExitReason> {
        self.shared.exit.lock().clone()
    }
}

/// Children added and removed at run time, as OTP's `start_child`,
/// `terminate_child`, `restart_child`, `delete_child` and `which_children`.
///
/// Each request has a blocking form, which waits until the supervisor's
/// thread has done it, and a `_pending` form, which returns at once with a
/// [`Pending`] that a UI thread polls with [`Pending::try_take`] (or that
/// async code awaits). The supervisor serves requests one at a time,
/// between its restarts: a request waits while the supervisor waits for a
/// child to stop or to start. So a child must not make a blocking request
/// of its own supervisor from its `start` (the supervisor is waiting for
/// that `start` to return): use the `_pending` form there.
impl Supervisor {
    /// Adds `spec` as the last child and starts it (OTP's `start_child`);
    /// blocks until it has started. The new child comes after every child
    /// already there: in a [`RestForOne`](super::Strategy::RestForOne)
    /// supervisor its exit restarts no earlier child, and an earlier
    /// child's exit restarts it too; in a
    /// [`OneForAll`](super::Strategy::OneForAll) one it restarts with the
    /// others, last. Its exits count toward the supervisor's restart
    /// intensity like any child's.
    ///
    /// # Errors
    ///
    /// [`ChildError::AlreadyPresent`] if a child of that name is there
    /// (running or not), [`ChildError::StartFailed`] if it could not be
    /// started (it is then not added), [`ChildError::Exited`] if the
    /// supervisor has exited.
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::supervisor::{ChildError, ChildSpec, Supervisor, SupervisorBuilder};
    /// # use isolates::{Context, Isolate};
    /// # struct Idle;
    /// # impl Isolate for Idle {
    /// #     type Args = (); type Message = (); type Reply = (); type Error = String;
    /// #     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Idle) }
    /// #     fn handle(&mut self, _: (), _: &mut Context<Self>) -> Result<(), String> { Ok(()) }
    /// # }
    /// let sup = Supervisor::builder().spawn().unwrap();
    /// sup.start_child(ChildSpec::worker::<Idle>("late", ())).unwrap();
    /// assert!(sup.worker::<Idle>("late").is_ok());
    /// assert_eq!(
    ///     sup.start_child(ChildSpec::worker::<Idle>("late", ())),
    ///     Err(ChildError::AlreadyPresent { name: "late".into() })
    /// );
    /// sup.stop();
    /// ```
    pub fn start_child(&self, spec: ChildSpec) -> Result<(), ChildError> {
        self.start_child_pending(spec).wait()
    }

    /// [`start_child`](Self::start_child) without waiting: the result comes
    /// in the returned [`Pending`].
    ///
    /// # Errors
    ///
    /// The `Pending` resolves to [`start_child`](Self::start_child)'s
    /// errors.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use isolates::supervisor::{ChildSpec, Supervisor, SupervisorBuilder};
    /// # use isolates::{Context, Isolate};
    /// # struct Idle;
    /// # impl Isolate for Idle {
    /// #     type Args = (); type Message = (); type Reply = (); type Error = String;
    /// #     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Idle) }
    /// #     fn handle(&mut self, _: (), _: &mut Context<Self>) -> Result<(), String> { Ok(()) }
    /// # }
    /// let sup = Supervisor::builder().spawn().unwrap();
    /// let mut pending = sup.start_child_pending(ChildSpec::worker::<Idle>("late", ()));
    /// // A UI thread polls it each frame, with `try_take`; here we wait.
    /// assert_eq!(pending.wait_timeout(Duration::from_secs(5)), Some(Ok(())));
    /// assert!(sup.children().unwrap()[0].running);
    /// sup.stop();
    /// ```
    pub fn start_child_pending(&self, spec: ChildSpec) -> Pending<(), ChildError> {
        self.shared.call(Request::Start(spec))
    }

    /// Stops child `name` by its [`Shutdown`](super::Shutdown) policy
    /// (OTP's `terminate_child`); blocks until it is stopped. It is not
    /// restarted, not even by a sibling's exit, and its spec stays: start
    /// it again with [`restart_child`](Self::restart_child) or remove it
    /// with [`delete_child`](Self::delete_child). Handles to it report its
    /// exit from then on. A temporary child's spec goes with it, as in OTP.
    /// Stopping a child that is already stopped does nothing.
    ///
    /// # Errors
    ///
    /// [`ChildError::NotFound`] if there is no child `name`,
    /// [`ChildError::Exited`] if the supervisor has exited.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use isolates::ExitReason;
    /// use isolates::supervisor::{ChildSpec, Supervisor, SupervisorBuilder};
    /// # use isolates::{Context, Isolate};
    /// # struct Idle;
    /// # impl Isolate for Idle {
    /// #     type Args = (); type Message = (); type Reply = (); type Error = String;
    /// #     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Idle) }
    /// #     fn handle(&mut self, _: (), _: &mut Context<Self>) -> Result<(), String> { Ok(()) }
    /// # }
    /// let sup = Supervisor::builder()
    ///     .child(ChildSpec::worker::<Idle>("idle", ()))
    ///     .spawn()
    ///     .unwrap();
    /// let idle = sup.worker::<Idle>("idle").unwrap();
    /// sup.terminate_child("idle").unwrap();
    /// assert_eq!(idle.join(Duration::from_secs(5)), Some(ExitReason::Killed));
    /// assert!(!sup.children().unwrap()[0].running);
    /// sup.stop();
    /// ```
    pub fn terminate_child(&self, name: &str) -> Result<(), ChildError> {
        self.terminate_child_pending(name).wait()
    }

    /// [`terminate_child`](Self::terminate_child) without waiting: the
    /// result comes in the returned [`Pending`].
    ///
    /// # Errors
    ///
    /// The `Pending` resolves to
    /// [`terminate_child`](Self::terminate_child)'s errors.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use isolates::supervisor::{ChildSpec, Supervisor, SupervisorBuilder};
    /// # use isolates::{Context, Isolate};
    /// # struct Idle;
    /// # impl Isolate for Idle {
    /// #     type Args = (); type Message = (); type Reply = (); type Error = String;
    /// #     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Idle) }
    /// #     fn handle(&mut self, _: (), _: &mut Context<Self>) -> Result<(), String> { Ok(()) }
    /// # }
    /// let sup = Supervisor::builder()
    ///     .child(ChildSpec::worker::<Idle>("idle", ()))
    ///     .spawn()
    ///     .unwrap();
    /// let mut pending = sup.terminate_child_pending("idle");
    /// assert_eq!(pending.wait_timeout(Duration::from_secs(10)), Some(Ok(())));
    /// sup.stop();
    /// ```
    pub fn terminate_child_pending(&self, name: &str) -> Pending<(), ChildError> {
        self.shared.call(Request::Terminate(name.to_owned()))
    }

    /// Starts a stopped child again (OTP's `restart_child`): one stopped
    /// with [`terminate_child`](Self::terminate_child), or a transient
    /// child that exited normally. It starts fresh, from its spec, with a
    /// new handle: look it up again (old handles report the old exit).
    /// This is not counted in [`ChildInfo::restarts`].
    ///
    /// # Errors
    ///
    /// [`ChildError::NotFound`] if there is no child `name`,
    /// [`ChildError::Running`] if it runs (or waits out its backoff before a
    /// restart), [`ChildError::StartFailed`] if it could not be started (it
    /// stays stopped), [`ChildError::Exited`] if the supervisor has exited.
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::supervisor::{ChildError, ChildSpec, Supervisor, SupervisorBuilder};
    /// # use isolates::{Context, Isolate};
    /// # struct Idle;
    /// # impl Isolate for Idle {
    /// #     type Args = (); type Message = (); type Reply = (); type Error = String;
    /// #     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Idle) }
    /// #     fn handle(&mut self, _: (), _: &mut Context<Self>) -> Result<(), String> { Ok(()) }
    /// # }
    /// let sup = Supervisor::builder()
    ///     .child(ChildSpec::worker::<Idle>("idle", ()))
    ///     .spawn()
    ///     .unwrap();
    /// assert_eq!(sup.restart_child("idle"), Err(ChildError::Running { name: "idle".into() }));
    /// sup.terminate_child("idle").unwrap();
    /// sup.restart_child("idle").unwrap();
    /// let idle = sup.worker::<Idle>("idle").unwrap();
    /// assert_eq!(idle.ask_timeout((), std::time::Duration::from_secs(5)), Ok(()));
    /// sup.stop();
    /// ```
    pub fn restart_child(&self, name: &str) -> Result<(), ChildError> {
        self.restart_child_pending(name).wait()
    }

    /// [`restart_child`](Self::restart_child) without waiting: the result
    /// comes in the returned [`Pending`].
    ///
    /// # Errors
    ///
    /// The `Pending` resolves to [`restart_child`](Self::restart_child)'s
    /// errors.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use isolates::supervisor::{ChildSpec, Supervisor, SupervisorBuilder};
    /// # use isolates::{Context, Isolate};
    /// # struct Idle;
    /// # impl Isolate for Idle {
    /// #     type Args = (); type Message = (); type Reply = (); type Error = String;
    /// #     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Idle) }
    /// #     fn handle(&mut self, _: (), _: &mut Context<Self>) -> Result<(), String> { Ok(()) }
    /// # }
    /// let sup = Supervisor::builder()
    ///     .child(ChildSpec::worker::<Idle>("idle", ()))
    ///     .spawn()
    ///     .unwrap();
    /// sup.terminate_child("idle").unwrap();
    /// let mut pending = sup.restart_child_pending("idle");
    /// assert_eq!(pending.wait_timeout(Duration::from_secs(5)), Some(Ok(())));
    /// sup.stop();
    /// ```
    pub fn restart_child_pending(&self, name: &str) -> Pending<(), ChildError> {
        self.shared.call(Request::Restart(name.to_owned()))
    }

    /// Removes a stopped child's spec (OTP's `delete_child`): the name is
    /// free again, and the child no longer counts in the supervisor's
    /// strategy.
    ///
    /// # Errors
    ///
    /// [`ChildError::NotFound`] if there is no child `name`,
    /// [`ChildError::Running`] if it runs (stop it first with
    /// [`terminate_child`](Self::terminate_child)),
    /// [`ChildError::Exited`] if the supervisor has exited.
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::supervisor::{ChildSpec, Supervisor, SupervisorBuilder};
    /// # use isolates::{Context, Isolate};
    /// # struct Idle;
    /// # impl Isolate for Idle {
    /// #     type Args = (); type Message = (); type Reply = (); type Error = String;
    /// #     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Idle) }
    /// #     fn handle(&mut self, _: (), _: &mut Context<Self>) -> Result<(), String> { Ok(()) }
    /// # }
    /// let sup = Supervisor::builder()
    ///     .child(ChildSpec::worker::<Idle>("idle", ()))
    ///     .spawn()
    ///     .unwrap();
    /// sup.terminate_child("idle").unwrap();
    /// sup.delete_child("idle").unwrap();
    /// assert!(sup.children().unwrap().is_empty());
    /// assert!(sup.worker::<Idle>("idle").is_err());
    /// sup.stop();
    /// ```
    pub fn delete_child(&self, name: &str) -> Result<(), ChildError> {
        self.delete_child_pending(name).wait()
    }

    /// [`delete_child`](Self::delete_child) without waiting: the result
    /// comes in the returned [`Pending`].
    ///
    /// # Errors
    ///
    /// The `Pending` resolves to [`delete_child`](Self::delete_child)'s
    /// errors.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use isolates::supervisor::{ChildError, Supervisor, SupervisorBuilder};
    /// let sup = Supervisor::builder().spawn().unwrap();
    /// let mut pending = sup.delete_child_pending("nobody");
    /// let result = pending.wait_timeout(Duration::from_secs(5)).unwrap();
    /// assert!(matches!(result, Err(ChildError::NotFound { .. })));
    /// sup.stop();
    /// ```
    pub fn delete_child_pending(&self, name: &str) -> Pending<(), ChildError> {
        self.shared.call(Request::Delete(name.to_owned()))
    }

    /// The children in start order (OTP's `which_children`): name, kind,
    /// whether it runs, how often it was restarted. Never blocks: this is
    /// what the supervisor's thread last published, which is at least as
    /// new as the last event it sent and the last request it answered.
    ///
    /// # Errors
    ///
    /// [`ChildError::Exited`] if the supervisor has exited.
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::supervisor::{ChildKind, ChildSpec, Supervisor, SupervisorBuilder};
    /// # use isolates::{Context, Isolate};
    /// # struct Idle;
    /// # impl Isolate for Idle {
    /// #     type Args = (); type Message = (); type Reply = (); type Error = String;
    /// #     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Idle) }
    /// #     fn handle(&mut self, _: (), _: &mut Context<Self>) -> Result<(), String> { Ok(()) }
    /// # }
    /// let sup = Supervisor::builder()
    ///     .child(ChildSpec::worker::<Idle>("a", ()))
    ///     .child(ChildSpec::supervisor("tree", Supervisor::builder()))
    ///     .spawn()
    ///     .unwrap();
    /// let children = sup.children().unwrap();
    /// let names: Vec<_> = children.iter().map(|c| (c.name.as_str(), c.kind)).collect();
    /// assert_eq!(names, [("a", ChildKind::Worker), ("tree", ChildKind::Supervisor)]);
    /// sup.stop();
    /// ```
    pub fn children(&self) -> Result<Vec<ChildInfo>, ChildError> {
        // Under the exit lock: the exit clears the list after recording
        // itself, so an exited supervisor never shows an empty one.
        let exit = self.shared.exit.lock();
        if exit.is_some() {
            return Err(self.shared.exited_error());
        }
        Ok(self.shared.children.lock().clone())
    }
}
