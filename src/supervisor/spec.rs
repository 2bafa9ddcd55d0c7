//! What a supervisor is told about its children: how to start each one,
//! when to restart it, how to stop it, and which of its siblings go with
//! it.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{Bincode, Codec};
use crate::error::SpawnError;
use crate::isolate::{
    Context, ExitHook, ExitReason, FnIsolate, Isolate, IsolateBuilder, Leftover, Priority,
    Restartable,
};

/// Which children a supervisor restarts when one of them exits.
///
/// # Examples
///
/// ```
/// use isolates::supervisor::{Strategy, Supervisor, SupervisorBuilder};
/// let builder = Supervisor::builder().strategy(Strategy::RestForOne);
/// # let _ = builder;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Strategy {
    /// Only the child that exited.
    #[default]
    OneForOne,
    /// Every child: the others are stopped (in reverse order), then all are
    /// started again in order.
    OneForAll,
    /// The child that exited and those started after it.
    RestForOne,
}

/// When a child is restarted, as OTP's restart types.
///
/// # Examples
///
/// ```
/// use isolates::supervisor::{ChildSpec, Restart};
/// # use isolates::{Context, Isolate};
/// # struct W;
/// # impl Isolate for W {
/// #     type Args = (); type Message = (); type Reply = (); type Error = String;
/// #     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(W) }
/// #     fn handle(&mut self, _: (), _: &mut Context<Self>) -> Result<(), String> { Ok(()) }
/// # }
/// let spec = ChildSpec::worker::<W>("cache", ()).restart(Restart::Transient);
/// # let _ = spec;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Restart {
    /// Always restarted.
    #[default]
    Permanent,
    /// Restarted only after an abnormal exit (anything but
    /// [`ExitReason::Normal`]).
    Transient,
    /// Never restarted, not even when a sibling's exit restarts the others.
    /// Once it ends its spec is gone too, as in OTP: it leaves
    /// [`Supervisor::children`](super::Supervisor::children), and its name
    /// can be given to a new child.
    Temporary,
}

/// How a supervisor stops a child.
///
/// Threads cannot be killed from outside: a stop takes effect between
/// messages, and a running handler sees it through
/// [`Context::kill_requested`](crate::Context::kill_requested). A child
/// that has not exited when a supervisor gives up on it is abandoned: it is
/// marked exited (its queued asks fail) and its thread ends on its own.
/// That is for a final stop; a restart needs the old incarnation gone, so a
/// supervisor restarting siblings waits for a child that does not stop
/// (logging a warning every 5 s): a handler that never
/// returns and never checks `kill_requested` blocks its supervisor's
/// restarts.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::supervisor::Shutdown;
/// let graceful = Shutdown::Timeout(Duration::from_secs(2));
/// assert_ne!(graceful, Shutdown::Immediate);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shutdown {
    /// Kill at once ([`Priority::Immediate`]); abandoned after
    /// 5 s if it has not exited.
    Immediate,
    /// Ask it to exit after its current message ([`Priority::AfterCurrent`]),
    /// then kill it at once if it has not exited within the timeout.
    Timeout(Duration),
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::Timeout(Duration::from_secs(5))
    }
}

/// How long a supervisor waits for a killed child before abandoning it.
pub(crate) const ABANDON_AFTER: Duration = Duration::from_secs(5);

/// A child that a supervisor can start, stop and restart.
pub(super) trait Child: Send {
    /// Starts an incarnation; its end is reported to `exited`.
    fn start(
        &mut self,
        exited: Box<dyn Fn(ExitReason, Option<Leftover>) + Send + Sync>,
    ) -> Result<(), SpawnError>;
    /// Takes back what the ended incarnation left.
    fn ended(&mut self, leftover: Option<Leftover>);
    fn stop(&self, priority: Priority);
    /// Ends it for good.
    fn close(&mut self, reason: ExitReason);
}

impl<I: Isolate> Child for Restartable<I>
where
    I::Args: Clone + Send,
{
    fn start(
        &mut self,
        exited: Box<dyn Fn(ExitReason, Option<Leftover>) + Send + Sync>,
    ) -> Result<(), SpawnError> {
        let hook: ExitHook = Box::new(move |reason, leftover| exited(reason, Some(leftover)));
        Restartable::start(self, hook)
    }

    fn ended(&mut self, leftover: Option<Leftover>) {
        if let Some(leftover) = leftover {
            Restartable::ended(self, leftover);
        }
    }

    fn stop(&self, priority: Priority) {
        Restartable::stop(self, priority);
    }

    fn close(&mut self, reason: ExitReason) {
        Restartable::close(self, reason);
    }
}

/// The children's handles by name, each with what it is (for
/// [`LookupError::WrongType`]).
pub(super) type Registry = Arc<Mutex<HashMap<String, (Box<dyn Any + Send>, &'static str)>>>;
pub(super) type ChildFactory =
    Arc<dyn Fn(&Registry) -> Result<Box<dyn Child>, SpawnError> + Send + Sync>;

/// How to start one child: a worker isolate or a nested supervisor, with
/// its restart type and shutdown policy.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::supervisor::{ChildSpec, Restart, Shutdown, Supervisor, SupervisorBuilder};
/// # use isolates::{Context, Isolate};
/// # struct W;
/// # impl Isolate for W {
/// #     type Args = u32; type Message = (); type Reply = (); type Error = String;
/// #     fn start(_: u32, _: &mut Context<Self>) -> Result<Self, String> { Ok(W) }
/// #     fn handle(&mut self, _: (), _: &mut Context<Self>) -> Result<(), String> { Ok(()) }
/// # }
/// let worker = ChildSpec::worker::<W>("w", 7)
///     .restart(Restart::Transient)
///     .shutdown(Shutdown::Timeout(Duration::from_secs(1)));
/// let inner = ChildSpec::supervisor("inner", Supervisor::builder().child(ChildSpec::worker::<W>("x", 1)));
/// # let _ = (worker, inner);
/// ```
#[derive(Clone)]
pub struct ChildSpec {
    pub(super) name: String,
    pub(super) restart: Restart,
    pub(super) shutdown: Shutdown,
    pub(super) kind: ChildKind,
    pub(super) factory: ChildFactory,
}

impl ChildSpec {
    /// A worker isolate `I` named `name`, started (and restarted) from
    /// clones of `args`, with the default [`IsolateBuilder`].
    ///
    /// # Examples
    ///
    /// See [`ChildSpec`].
    pub fn worker<I: Isolate>(name: impl Into<String>, args: I::Args) -> Self
    where
        I::Args: Clone + Send + Sync,
    {
        Self::worker_with::<I, Bincode>(name, IsolateBuilder::new(), args)
    }

    /// Like [`worker`](Self::worker), spawned with `builder` (its name is
    /// replaced by `name`).
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::{IsolateBuilder, Mailbox};
    /// use isolates::supervisor::ChildSpec;
    /// # use isolates::{Context, Isolate};
    /// # struct W;
    /// # impl Isolate for W {
    /// #     type Args = (); type Message = (); type Reply = (); type Error = String;
    /// #     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(W) }
    /// #     fn handle(&mut self, _: (), _: &mut Context<Self>) -> Result<(), String> { Ok(()) }
    /// # }
    /// let spec = ChildSpec::worker_with::<W, _>(
    ///     "bounded", IsolateBuilder::new().mailbox(Mailbox::Bounded(64)), ());
    /// # let _ = spec;
    /// ```
    pub fn worker_with<I: Isolate, C: Codec>(
        name: impl Into<String>,
        builder: IsolateBuilder<C>,
        args: I::Args,
    ) -> Self
    where
        I::Args: Clone + Send + Sync,
    {
        let name = name.into();
        let builder = builder.name(name.clone());
        let factory_name = name.clone();
        ChildSpec {
            name,
            restart: Restart::default(),
            shutdown: Shutdown::default(),
            kind: ChildKind::Worker,
            factory: Arc::new(move |registry: &Registry| {
                let (child, handle) = Restartable::<I>::new(&builder, args.clone())?;
                registry.lock().insert(
                    factory_name.clone(),
                    (Box::new(handle), std::any::type_name::<I>()),
                );
                Ok(Box::new(child) as Box<dyn Child>)
            }),
        }
    }

    /// A worker isolate from a state and a function (an
    /// [`FnIsolate`], as [`spawn_fn`](crate::spawn_fn) spawns) named
    /// `name`, with the default [`IsolateBuilder`]. Each incarnation, the
    /// first and every restart, starts from a clone of `state`, so a
    /// restarted isolate begins again from the initial state, never from
    /// what a crashed one left. Its handle is
    /// `worker::<FnIsolate<S, M, R>>(name)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use isolates::{AskError, FnIsolate};
    /// use isolates::supervisor::{ChildSpec, Supervisor};
    ///
    /// let tree = Supervisor::builder()
    ///     .child(ChildSpec::worker_fn("total", 100i64, |total: &mut i64, n: i64, _| {
    ///         assert!(n != 0, "zero is not allowed");
    ///         *total += n;
    ///         *total
    ///     }))
    ///     .spawn()
    ///     .unwrap();
    /// let total = tree.worker::<FnIsolate<i64, i64, i64>>("total").unwrap();
    /// assert_eq!(total.ask(5), Ok(105));
    /// assert!(matches!(total.ask(0), Err(AskError::Panicked(_))));
    /// assert_eq!(total.ask(1), Ok(101)); // restarted from a clone of 100
    /// tree.stop();
    /// assert!(tree.join(Duration::from_secs(5)).is_some());
    /// ```
    pub fn worker_fn<S, M, R, F>(name: impl Into<String>, state: S, handler: F) -> Self
    where
        S: Clone + Send + Sync + 'static,
        M: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        F: Fn(&mut S, M, &mut Context<FnIsolate<S, M, R>>) -> R + Send + Sync + 'static,
    {
        Self::worker::<FnIsolate<S, M, R>>(name, FnIsolate::new(state, handler))
    }

    /// Sets the restart type (default [`Restart::Permanent`]).
    ///
    /// # Examples
    ///
    /// See [`ChildSpec`].
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Sets the shutdown policy (default a 5 s graceful stop for workers,
    /// 30 s for supervisors).
    ///
    /// # Examples
    ///
    /// See [`ChildSpec`].
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// The child's name.
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::supervisor::{ChildSpec, Supervisor, SupervisorBuilder};
    /// assert_eq!(ChildSpec::supervisor("tree", Supervisor::builder()).name(), "tree");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the child is a worker isolate or a nested supervisor.
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::supervisor::{ChildKind, ChildSpec, Supervisor, SupervisorBuilder};
    /// let spec = ChildSpec::supervisor("tree", Supervisor::builder());
    /// assert_eq!(spec.kind(), ChildKind::Supervisor);
    /// ```
    pub fn kind(&self) -> ChildKind {
        self.kind
    }
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .finish_non_exhaustive()
    }
}

/// What a child is, as OTP's `worker` and `supervisor` child types.
///
/// # Examples
///
/// ```
/// use isolates::supervisor::{ChildKind, ChildSpec, Supervisor, SupervisorBuilder};
/// let spec = ChildSpec::supervisor("tree", Supervisor::builder());
/// assert_eq!(spec.kind(), ChildKind::Supervisor);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChildKind {
    /// A worker isolate ([`ChildSpec::worker`]).
    Worker,
    /// A nested supervisor ([`ChildSpec::supervisor`]).
    Supervisor,
}

/// One child as its supervisor sees it, from
/// [`Supervisor::children`](super::Supervisor::children) (OTP's
/// `which_children`).
///
/// # Examples
///
/// ```
/// use isolates::supervisor::{ChildKind, ChildSpec, Supervisor, SupervisorBuilder};
/// let sup = Supervisor::builder()
///     .child(ChildSpec::supervisor("tree", Supervisor::builder()))
///     .spawn()
///     .unwrap();
/// let children = sup.children().unwrap();
/// assert_eq!(children[0].name, "tree");
/// assert_eq!(children[0].kind, ChildKind::Supervisor);
/// assert!(children[0].running);
/// assert_eq!(children[0].restarts, 0);
/// sup.stop();
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChildInfo {
    /// The child's name.
    pub name: String,
    /// A worker or a nested supervisor.
    pub kind: ChildKind,
    /// Its restart type.
    pub restart: Restart,
    /// Whether an incarnation runs now: false while it waits out its
    /// backoff before a restart, after a normal exit of a transient child,
    /// and once it was stopped with
    /// [`terminate_child`](super::Supervisor::terminate_child).
    pub running: bool,
    /// How many times the supervisor restarted it after an exit (by its
    /// restart type and strategy), since it was added; a
    /// [`restart_child`](super::Supervisor::restart_child) is not counted.
    pub restarts: u64,
}
