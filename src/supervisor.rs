//! Supervisors: Erlang/OTP supervision of isolates.
//!
//! A [`Supervisor`] starts its children in order, watches them, restarts
//! them by its [`Strategy`] and each child's [`Restart`] type, and stops them
//! in reverse order. Restarts are limited by an intensity (at most `n` in a
//! sliding window, 1 in 5 s by default as in OTP); past it the supervisor
//! stops its children and exits, and its own supervisor sees that exit.
//! Beyond OTP, a [`Backoff`] can space restarts out.
//!
//! A restarted worker keeps its mailbox and its handles: messages queued when
//! it crashed are handled by the next incarnation, and the caller of the
//! message that crashed it gets a typed error ([`AskError::Panicked`] or
//! [`AskError::Failed`]). Nothing is retried behind the caller's back.
//!
//! [`AskError::Panicked`]: crate::AskError::Panicked
//! [`AskError::Failed`]: crate::AskError::Failed

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel as cb;
use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};

use crate::codec::{Bincode, Codec};
use crate::error::{SpawnError, TrySendError};
use crate::isolate::{
    ExitHook, ExitReason, Isolate, IsolateBuilder, IsolateHandle, Leftover, Priority, Restartable,
};
use crate::port::SendPort;

/// Which children a supervisor restarts when one of them exits.
///
/// # Examples
///
/// ```
/// use isolates::supervisor::{Strategy, SupervisorBuilder};
/// let builder = SupervisorBuilder::new().strategy(Strategy::RestForOne);
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
/// (logging a warning every [`ABANDON_AFTER`]): a handler that never
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
    /// [`ABANDON_AFTER`] if it has not exited.
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
pub const ABANDON_AFTER: Duration = Duration::from_secs(5);

/// Delay between a child's exit and its restart, growing with the child's
/// recent restarts (beyond OTP, which restarts at once).
///
/// The n-th restart within the intensity window waits
/// `min(max, min_delay · 2ⁿ⁻¹)`, scaled by a random factor in [0.5, 1] when
/// jitter is on, so a crowd of crashing children does not restart in step.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::supervisor::Backoff;
/// let b = Backoff::exponential(Duration::from_millis(10), Duration::from_secs(1));
/// assert_eq!(b.delay(1, 0.0), Duration::from_millis(10));
/// assert_eq!(b.delay(3, 0.0), Duration::from_millis(40));
/// assert_eq!(b.delay(30, 0.0), Duration::from_secs(1));
/// assert_eq!(Backoff::none().delay(5, 0.7), Duration::ZERO);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    jitter: bool,
}

impl Backoff {
    /// Restart at once (OTP's behaviour, the default).
    ///
    /// # Examples
    ///
    /// See [`Backoff`].
    pub const fn none() -> Self {
        Backoff {
            min: Duration::ZERO,
            max: Duration::ZERO,
            jitter: false,
        }
    }

    /// Exponential backoff from `min` up to `max`, with jitter.
    ///
    /// # Examples
    ///
    /// See [`Backoff`].
    pub const fn exponential(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            jitter: true,
        }
    }

    /// The same backoff without jitter (deterministic delays).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use isolates::supervisor::Backoff;
    /// let b = Backoff::exponential(Duration::from_millis(10), Duration::from_secs(1)).without_jitter();
    /// assert_eq!(b.delay(2, 0.9), Duration::from_millis(20));
    /// ```
    pub const fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// The delay before restart number `attempt` (1 for the first), with
    /// `random` in [0, 1) used for the jitter.
    ///
    /// # Examples
    ///
    /// See [`Backoff`].
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        if self.max.is_zero() {
            return Duration::ZERO;
        }
        let doubling = 2u32.saturating_pow(attempt.saturating_sub(1).min(31));
        let base = self.min.saturating_mul(doubling).min(self.max);
        if self.jitter {
            base.mul_f64(1.0 - 0.5 * random.clamp(0.0, 1.0))
        } else {
            base
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::none()
    }
}

/// What happened in a supervisor, for the application to observe (see
/// [`SupervisorBuilder::event_listener`] and
/// [`Supervisor::add_event_listener`]).
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
    /// A child started (at supervisor start): only listeners attached with
    /// [`SupervisorBuilder::event_listener`] are there to see it.
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
            | Self::Restarted { child, .. } => Some(child),
            Self::GaveUp { .. } => None,
        }
    }
}

/// What a nested supervisor is called in [`LookupError::WrongType`].
const SUPERVISOR: &str = "a supervisor";

/// Why [`Supervisor::worker`] or [`Supervisor::supervisor`] gave no
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
    /// it was added with (`found`), or use [`Supervisor::supervisor`] for
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
    /// [`Supervisor::exit_reason`].
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

/// A child that a supervisor can start, stop and restart.
trait Child: Send {
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

/// A supervisor as a child of another.
struct Nested {
    name: String,
    builder: SupervisorBuilder,
    registry: Registry,
    current: Option<Supervisor>,
}

impl Child for Nested {
    fn start(
        &mut self,
        exited: Box<dyn Fn(ExitReason, Option<Leftover>) + Send + Sync>,
    ) -> Result<(), SpawnError> {
        let parent: ParentHook = Box::new(move |reason| exited(reason, None));
        let supervisor = self.builder.clone().start_inner(Some(parent))?;
        self.registry.lock().insert(
            self.name.clone(),
            (Box::new(supervisor.clone()), SUPERVISOR),
        );
        self.current = Some(supervisor);
        Ok(())
    }

    fn ended(&mut self, _: Option<Leftover>) {
        self.current = None;
    }

    fn stop(&self, _: Priority) {
        if let Some(current) = &self.current {
            current.stop();
        }
    }

    fn close(&mut self, _: ExitReason) {
        if let Some(current) = self.current.take() {
            current.stop();
        }
    }
}

/// The children's handles by name, each with what it is (for
/// [`LookupError::WrongType`]).
type Registry = Arc<Mutex<HashMap<String, (Box<dyn Any + Send>, &'static str)>>>;
type ParentHook = Box<dyn Fn(ExitReason) + Send + Sync>;
type ChildFactory = Arc<dyn Fn(&Registry) -> Result<Box<dyn Child>, SpawnError> + Send + Sync>;

/// How to start one child: a worker isolate or a nested supervisor, with
/// its restart type and shutdown policy.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::supervisor::{ChildSpec, Restart, Shutdown, SupervisorBuilder};
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
/// let inner = ChildSpec::supervisor("inner", SupervisorBuilder::new().child(ChildSpec::worker::<W>("x", 1)));
/// # let _ = (worker, inner);
/// ```
#[derive(Clone)]
pub struct ChildSpec {
    name: String,
    restart: Restart,
    shutdown: Shutdown,
    factory: ChildFactory,
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

    /// A nested supervisor named `name`. It is started (and restarted) from
    /// `builder`; a restart starts a fresh tree.
    ///
    /// # Examples
    ///
    /// See [`ChildSpec`].
    pub fn supervisor(name: impl Into<String>, builder: SupervisorBuilder) -> Self {
        let name = name.into();
        let nested_name = name.clone();
        ChildSpec {
            name,
            restart: Restart::default(),
            // A supervisor stops its own children first; give it time.
            shutdown: Shutdown::Timeout(Duration::from_secs(30)),
            factory: Arc::new(move |registry: &Registry| {
                Ok(Box::new(Nested {
                    name: nested_name.clone(),
                    builder: builder.clone(),
                    registry: Arc::clone(registry),
                    current: None,
                }) as Box<dyn Child>)
            }),
        }
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
    /// use isolates::supervisor::{ChildSpec, SupervisorBuilder};
    /// assert_eq!(ChildSpec::supervisor("tree", SupervisorBuilder::new()).name(), "tree");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .finish_non_exhaustive()
    }
}

/// Configures a supervisor: strategy, restart intensity, backoff, children.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::{Context, Isolate};
/// use isolates::supervisor::{ChildSpec, Strategy, SupervisorBuilder};
///
/// struct Echo;
/// impl Isolate for Echo {
///     type Args = (); type Message = u32; type Reply = u32; type Error = String;
///     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Echo) }
///     fn handle(&mut self, n: u32, _: &mut Context<Self>) -> Result<u32, String> {
///         assert!(n != 0, "zero");
///         Ok(n)
///     }
/// }
///
/// let sup = SupervisorBuilder::new()
///     .strategy(Strategy::OneForOne)
///     .restart_intensity(3, Duration::from_secs(5))
///     .child(ChildSpec::worker::<Echo>("echo", ()))
///     .start()
///     .unwrap();
/// let echo = sup.worker::<Echo>("echo").unwrap();
/// let t = Duration::from_secs(5);
/// assert!(echo.ask(0, t).is_err());      // panics: restarted
/// assert_eq!(echo.ask(7, t), Ok(7));     // the same handle works
/// sup.stop();
/// assert!(sup.join(t).is_some());
/// ```
#[derive(Clone)]
pub struct SupervisorBuilder {
    name: Option<String>,
    strategy: Strategy,
    intensity: u32,
    period: Duration,
    backoff: Backoff,
    children: Vec<ChildSpec>,
    listeners: Vec<SendPort<SupervisionEvent>>,
}

impl Default for SupervisorBuilder {
    fn default() -> Self {
        SupervisorBuilder {
            name: None,
            strategy: Strategy::default(),
            intensity: 1,
            period: Duration::from_secs(5),
            backoff: Backoff::none(),
            children: Vec::new(),
            listeners: Vec::new(),
        }
    }
}

impl fmt::Debug for SupervisorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorBuilder")
            .field("name", &self.name)
            .field("strategy", &self.strategy)
            .field("intensity", &self.intensity)
            .field("period", &self.period)
            .field("backoff", &self.backoff)
            .field("children", &self.children)
            .field("listeners", &self.listeners.len())
            .finish()
    }
}

impl SupervisorBuilder {
    /// A one-for-one supervisor allowing 1 restart in 5 s, with no children.
    ///
    /// # Examples
    ///
    /// See [`SupervisorBuilder`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Names the supervisor (its thread and its events' logs).
    ///
    /// # Examples
    ///
    /// ```
    /// let b = isolates::supervisor::SupervisorBuilder::new().name("root");
    /// # let _ = b;
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the strategy (default [`Strategy::OneForOne`]).
    ///
    /// # Examples
    ///
    /// See [`Strategy`].
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Allows at most `restarts` restarts within any `period`; one more and
    /// the supervisor gives up (default 1 in 5 s, as OTP).
    ///
    /// # Examples
    ///
    /// See [`SupervisorBuilder`].
    pub fn restart_intensity(mut self, restarts: u32, period: Duration) -> Self {
        self.intensity = restarts;
        self.period = period;
        self
    }

    /// Sets the delay between an exit and its restart (default none).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use isolates::supervisor::{Backoff, SupervisorBuilder};
    /// let b = SupervisorBuilder::new()
    ///     .backoff(Backoff::exponential(Duration::from_millis(50), Duration::from_secs(5)));
    /// # let _ = b;
    /// ```
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Adds a child; children start in the order added.
    ///
    /// # Examples
    ///
    /// See [`SupervisorBuilder`].
    pub fn child(mut self, spec: ChildSpec) -> Self {
        self.children.push(spec);
        self
    }

    /// Sends every [`SupervisionEvent`] of the supervisor to `port`, from
    /// the first: the [`Started`](SupervisionEvent::Started) of each child
    /// included, which [`Supervisor::add_event_listener`] comes too late
    /// for. As there, the supervisor never waits for the listener. A
    /// nested supervisor's builder keeps its listeners: each incarnation
    /// tells them its events.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use isolates::{port, Isolate, Context};
    /// use isolates::supervisor::{ChildSpec, SupervisionEvent, SupervisorBuilder};
    ///
    /// struct Idle;
    /// impl Isolate for Idle {
    ///     type Args = (); type Message = (); type Reply = (); type Error = String;
    ///     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Idle) }
    ///     fn handle(&mut self, _: (), _: &mut Context<Self>) -> Result<(), String> { Ok(()) }
    /// }
    ///
    /// let (tx, events) = port::unbounded::<SupervisionEvent>();
    /// let sup = SupervisorBuilder::new()
    ///     .event_listener(tx)
    ///     .child(ChildSpec::worker::<Idle>("idle", ()))
    ///     .start()
    ///     .unwrap();
    /// let first = events.recv_timeout(Duration::from_secs(5)).unwrap();
    /// assert_eq!(first, SupervisionEvent::Started { child: "idle".into() });
    /// sup.stop();
    /// ```
    pub fn event_listener(mut self, port: SendPort<SupervisionEvent>) -> Self {
        self.listeners.push(port);
        self
    }

    /// Starts the supervisor and its children, in order.
    ///
    /// # Errors
    ///
    /// The first child that cannot be spawned; the children started before
    /// it are stopped again.
    ///
    /// # Examples
    ///
    /// See [`SupervisorBuilder`].
    pub fn start(self) -> Result<Supervisor, SpawnError> {
        self.start_inner(None)
    }

    fn start_inner(self, parent: Option<ParentHook>) -> Result<Supervisor, SpawnError> {
        let (tx, rx) = cb::unbounded();
        let shared = Arc::new(SupShared {
            name: self.name.clone().unwrap_or_else(|| "supervisor".into()),
            tx,
            registry: Arc::new(Mutex::new(HashMap::new())),
            exit: Mutex::new(None),
            exited: Condvar::new(),
            listeners: Mutex::new(self.listeners.clone()),
            dropped_events: AtomicU64::new(0),
        });
        let (started_tx, started_rx) = cb::bounded(1);
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(shared.name.clone())
            .spawn(move || {
                let mut run = SupRun::new(self, Arc::clone(&thread_shared), rx);
                let started = run.start_children();
                let failed = started.is_err();
                let _ = started_tx.send(started);
                let reason = if failed {
                    ExitReason::Failed("a child could not be started".into())
                } else {
                    run.serve()
                };
                thread_shared.finish(reason.clone());
                if let Some(parent) = parent {
                    parent(reason);
                }
            })
            .map_err(|e| SpawnError::Thread(e.to_string()))?;
        match started_rx.recv() {
            Ok(Ok(())) => Ok(Supervisor { shared }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SpawnError::Thread(
                "the supervisor thread ended while starting".into(),
            )),
        }
    }
}

/// What a supervisor's handles and its thread share.
struct SupShared {
    name: String,
    tx: cb::Sender<SupMsg>,
    registry: Registry,
    exit: Mutex<Option<ExitReason>>,
    exited: Condvar,
    listeners: Mutex<Vec<SendPort<SupervisionEvent>>>,
    /// Events a full listener missed.
    dropped_events: AtomicU64,
}

impl SupShared {
    /// Tells every listener, never waiting for one: a listener whose
    /// mailbox is full misses the event (counted, and logged), one whose
    /// receiver is gone is forgotten. Sends happen outside the lock.
    fn emit(&self, event: SupervisionEvent) {
        match &event {
            SupervisionEvent::Exited {
                reason: ExitReason::Panicked(_) | ExitReason::Failed(_) | ExitReason::Crashed(_),
                ..
            } => {
                tracing::warn!(target: "isolates", supervisor = %self.name, ?event, "a child crashed");
            }
            _ => {
                tracing::debug!(target: "isolates", supervisor = %self.name, ?event, "supervision event");
            }
        }
        let listeners = self.listeners.lock().clone();
        let mut gone = Vec::new();
        for port in listeners {
            match port.try_send(event.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    self.dropped_events.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(target: "isolates", supervisor = %self.name, "a supervision event listener is full: it misses an event");
                }
                Err(_) => gone.push(port),
            }
        }
        if !gone.is_empty() {
            self.listeners
                .lock()
                .retain(|port| !gone.iter().any(|g| g.same_port(port)));
        }
    }

    fn finish(&self, reason: ExitReason) {
        *self.exit.lock() = Some(reason);
        self.exited.notify_all();
        self.listeners.lock().clear();
        self.registry.lock().clear();
    }
}

enum SupMsg {
    Exited {
        index: usize,
        generation: u64,
        reason: ExitReason,
        leftover: Option<Leftover>,
    },
    Stop,
}

/// A running supervisor. Cheap to clone; dropping handles does not stop
/// it (call [`stop`](Self::stop)).
///
/// # Examples
///
/// See [`SupervisorBuilder`].
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
    /// with [`SupervisorBuilder::event_listener`] to see them. The supervisor never waits for a listener: while `port`'s
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
        self.shared.listeners.lock().push(port);
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
        self.shared.dropped_events.load(Ordering::Relaxed)
    }

    /// Stops the children in reverse order, then the supervisor exits
    /// [`ExitReason::Normal`]; returns at once (see [`join`](Self::join)).
    ///
    /// # Examples
    ///
    /// See [`SupervisorBuilder`].
    pub fn stop(&self) {
        let _ = self.shared.tx.send(SupMsg::Stop);
    }

    /// Waits at most `timeout` for the supervisor to exit; its reason, or
    /// `None` if it still runs.
    ///
    /// # Examples
    ///
    /// See [`SupervisorBuilder`].
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

/// One child as its supervisor tracks it.
struct Slot {
    spec: ChildSpec,
    child: Box<dyn Child>,
    /// Increases with every start: exits of older incarnations are stale.
    generation: u64,
    running: bool,
    /// Ended for good (a temporary or a normally exited transient child).
    gone: bool,
    /// This child's restart times within the intensity window.
    recent: VecDeque<Instant>,
}

/// The supervisor's thread.
struct SupRun {
    shared: Arc<SupShared>,
    rx: cb::Receiver<SupMsg>,
    strategy: Strategy,
    intensity: u32,
    period: Duration,
    backoff: Backoff,
    specs: Vec<ChildSpec>,
    slots: Vec<Slot>,
    /// Restart times of all children within the window.
    restarts: VecDeque<Instant>,
    /// Children waiting out their backoff: (due, index).
    due: Vec<(Instant, usize)>,
    rng: u64,
}

impl SupRun {
    fn new(builder: SupervisorBuilder, shared: Arc<SupShared>, rx: cb::Receiver<SupMsg>) -> Self {
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let seed = u64::from(clock)
            ^ (Arc::as_ptr(&shared) as u64).rotate_left(17)
            ^ 0x9E37_79B9_7F4A_7C15;
        SupRun {
            shared,
            rx,
            strategy: builder.strategy,
            intensity: builder.intensity,
            period: builder.period,
            backoff: builder.backoff,
            specs: builder.children,
            slots: Vec::new(),
            restarts: VecDeque::new(),
            due: Vec::new(),
            rng: seed | 1,
        }
    }

    /// xorshift64*: jitter needs no more.
    fn random(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn start_children(&mut self) -> Result<(), SpawnError> {
        for spec in std::mem::take(&mut self.specs) {
            let child = match (spec.factory)(&self.shared.registry) {
                Ok(child) => child,
                Err(e) => {
                    self.shutdown_all();
                    return Err(e);
                }
            };
            self.slots.push(Slot {
                spec,
                child,
                generation: 0,
                running: false,
                gone: false,
                recent: VecDeque::new(),
            });
            let index = self.slots.len() - 1;
            if let Err(e) = self.start_child(index) {
                self.shutdown_all();
                return Err(e);
            }
            let child = self.slots[index].spec.name.clone();
            self.shared.emit(SupervisionEvent::Started { child });
        }
        Ok(())
    }

    fn start_child(&mut self, index: usize) -> Result<(), SpawnError> {
        let slot = &mut self.slots[index];
        slot.generation += 1;
        let generation = slot.generation;
        let tx = self.shared.tx.clone();
        slot.child.start(Box::new(move |reason, leftover| {
            let _ = tx.send(SupMsg::Exited {
                index,
                generation,
                reason,
                leftover,
            });
        }))?;
        slot.running = true;
        Ok(())
    }

    fn serve(&mut self) -> ExitReason {
        loop {
            let next_due = self.due.iter().map(|(at, _)| *at).min();
            let msg = match next_due {
                Some(at) => match self.rx.recv_deadline(at) {
                    Ok(msg) => Some(msg),
                    Err(cb::RecvTimeoutError::Timeout) => None,
                    Err(cb::RecvTimeoutError::Disconnected) => return ExitReason::Normal,
                },
                // The shared record holds a sender: never disconnected.
                None => self.rx.recv().ok(),
            };
            match msg {
                None => {
                    if let Some(reason) = self.restart_due() {
                        return reason;
                    }
                }
                Some(SupMsg::Stop) => {
                    self.shutdown_all();
                    return ExitReason::Normal;
                }
                Some(SupMsg::Exited {
                    index,
                    generation,
                    reason,
                    leftover,
                }) => {
                    if let Some(reason) = self.child_exited(index, generation, reason, leftover) {
                        return reason;
                    }
                }
            }
        }
    }

    /// Records an exit; decides what to restart. `Some` when giving up.
    fn child_exited(
        &mut self,
        index: usize,
        generation: u64,
        reason: ExitReason,
        leftover: Option<Leftover>,
    ) -> Option<ExitReason> {
        let slot = &mut self.slots[index];
        if generation != slot.generation {
            return None;
        }
        slot.running = false;
        slot.child.ended(leftover);
        let name = slot.spec.name.clone();
        self.shared.emit(SupervisionEvent::Exited {
            child: name.clone(),
            reason: reason.clone(),
        });
        let restart = match slot.spec.restart {
            Restart::Permanent => true,
            Restart::Transient => reason != ExitReason::Normal,
            Restart::Temporary => false,
        };
        if !restart {
            slot.gone = true;
            slot.child.close(reason);
            return None;
        }
        // Intensity: one more restart within the window is allowed only up
        // to the limit.
        let now = Instant::now();
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.period)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() >= self.intensity as usize {
            let why = ExitReason::Failed(format!(
                "{}: restart intensity reached ({} in {:?}); last exit of {name}: {reason}",
                self.shared.name, self.intensity, self.period
            ));
            // The child that exited is closed with its own reason.
            self.slots[index].gone = true;
            self.slots[index].child.close(reason);
            self.shutdown_all();
            self.shared.emit(SupervisionEvent::GaveUp {
                reason: why.clone(),
            });
            return Some(why);
        }
        self.restarts.push_back(now);
        let affected: Vec<usize> = match self.strategy {
            Strategy::OneForOne => vec![index],
            Strategy::OneForAll => (0..self.slots.len()).collect(),
            Strategy::RestForOne => (index..self.slots.len()).collect(),
        };
        // Stop the running siblings in reverse order; temporary ones end.
        for &i in affected.iter().rev() {
            if i != index && self.slots[i].running {
                self.stop_child(i, false);
                if self.slots[i].spec.restart == Restart::Temporary {
                    self.slots[i].gone = true;
                    self.slots[i].child.close(ExitReason::Killed);
                }
            }
        }
        for &i in &affected {
            let slot = &mut self.slots[i];
            while slot
                .recent
                .front()
                .is_some_and(|t| now.duration_since(*t) > self.period)
            {
                slot.recent.pop_front();
            }
            if !slot.gone {
                slot.recent.push_back(now);
            }
        }
        // One delay for the whole wave, from the child that exited, so the
        // wave restarts together, in child order.
        let attempt = u32::try_from(self.slots[index].recent.len()).unwrap_or(u32::MAX);
        let random = self.random();
        let due = now + self.backoff.delay(attempt, random);
        for i in affected {
            if !self.slots[i].gone {
                self.due.push((due, i));
            }
        }
        self.restart_due()
    }

    /// Restarts the children whose backoff is over, in child order.
    fn restart_due(&mut self) -> Option<ExitReason> {
        let now = Instant::now();
        let mut ready: Vec<usize> = Vec::new();
        self.due.retain(|&(at, i)| {
            if at <= now {
                ready.push(i);
                false
            } else {
                true
            }
        });
        ready.sort_unstable();
        ready.dedup();
        for i in ready {
            if self.slots[i].gone || self.slots[i].running {
                continue;
            }
            let attempt = u32::try_from(self.slots[i].recent.len()).unwrap_or(u32::MAX);
            match self.start_child(i) {
                Ok(()) => {
                    let child = self.slots[i].spec.name.clone();
                    self.shared
                        .emit(SupervisionEvent::Restarted { child, attempt });
                }
                Err(e) => {
                    let why = ExitReason::Failed(format!(
                        "{}: could not restart {}: {e}",
                        self.shared.name, self.slots[i].spec.name
                    ));
                    self.shutdown_all();
                    self.shared.emit(SupervisionEvent::GaveUp {
                        reason: why.clone(),
                    });
                    return Some(why);
                }
            }
        }
        None
    }

    /// Stops child `i` by its shutdown policy and waits for its exit
    /// (abandoning it after a while if `final_stop`). Other messages that
    /// arrive meanwhile are handled after.
    fn stop_child(&mut self, i: usize, final_stop: bool) {
        let (first, wait_first) = match self.slots[i].spec.shutdown {
            Shutdown::Immediate => (Priority::Immediate, ABANDON_AFTER),
            Shutdown::Timeout(t) => (Priority::AfterCurrent, t),
        };
        self.slots[i].child.stop(first);
        if self.wait_exit(i, wait_first) {
            return;
        }
        if first == Priority::AfterCurrent {
            self.slots[i].child.stop(Priority::Immediate);
            if self.wait_exit(i, ABANDON_AFTER) {
                return;
            }
        }
        if final_stop {
            tracing::warn!(target: "isolates", supervisor = %self.shared.name,
                child = %self.slots[i].spec.name, "abandoning a child that does not stop");
            self.slots[i].running = false;
            self.slots[i].gone = true;
            self.slots[i].child.close(ExitReason::Killed);
        } else {
            // A restart needs the old incarnation gone: keep waiting, as
            // long as it takes, without waking to say so again.
            tracing::warn!(target: "isolates", supervisor = %self.shared.name,
                child = %self.slots[i].spec.name, "a child does not stop; waiting for it");
            self.wait_exit(i, Duration::MAX);
        }
    }

    /// Waits up to `timeout` for child `i`'s current incarnation to exit.
    fn wait_exit(&mut self, i: usize, timeout: Duration) -> bool {
        let deadline = crate::time::deadline_after(timeout);
        let mut later = Vec::new();
        let done = loop {
            if !self.slots[i].running {
                break true;
            }
            let msg = match deadline {
                Some(d) => self.rx.recv_deadline(d).ok(),
                None => self.rx.recv().ok(),
            };
            match msg {
                None => break false,
                Some(SupMsg::Exited {
                    index,
                    generation,
                    reason,
                    leftover,
                }) if index == i && generation == self.slots[i].generation => {
                    let slot = &mut self.slots[i];
                    slot.running = false;
                    slot.child.ended(leftover);
                    self.shared.emit(SupervisionEvent::Exited {
                        child: slot.spec.name.clone(),
                        reason,
                    });
                }
                // Another child's exit is handled in full by the main loop
                // (restart, intensity), after this wait.
                Some(other) => later.push(other),
            }
        };
        // Requeue what was not ours (other exits, a stop request) for the
        // main loop.
        for msg in later {
            let _ = self.shared.tx.send(msg);
        }
        done
    }

    /// Stops every running child in reverse order and ends them all.
    fn shutdown_all(&mut self) {
        self.due.clear();
        for i in (0..self.slots.len()).rev() {
            if self.slots[i].running {
                self.stop_child(i, true);
            }
            if !self.slots[i].gone {
                self.slots[i].gone = true;
                self.slots[i].child.close(ExitReason::Killed);
            }
        }
    }
}
