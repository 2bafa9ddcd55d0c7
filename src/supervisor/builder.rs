//! Configuring and starting a supervisor.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use crossbeam_channel as cb;
use parking_lot::{Condvar, Mutex};

use super::events::{Listeners, SupervisionEvent};
use super::handle::Supervisor;
use super::runloop::{Policy, SupRun};
use super::shared::{ParentHook, SupShared};
use super::spec::{ChildSpec, Strategy};
use crate::Backoff;
use crate::error::ExitReason;
use crate::error::SpawnError;
use crate::port::SendPort;

/// Configures a supervisor: strategy, restart intensity, backoff, children.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::{Context, Isolate};
/// use isolates::supervisor::{ChildSpec, Strategy, Supervisor, SupervisorBuilder};
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
/// let sup = Supervisor::builder()
///     .strategy(Strategy::OneForOne)
///     .restart_intensity(3, Duration::from_secs(5))
///     .child(ChildSpec::worker::<Echo>("echo", ()))
///     .spawn()
///     .unwrap();
/// let echo = sup.worker::<Echo>("echo").unwrap();
/// let t = Duration::from_secs(5);
/// assert!(echo.ask_timeout(0, t).is_err());      // panics: restarted
/// assert_eq!(echo.ask_timeout(7, t), Ok(7));     // the same handle works
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

impl Supervisor {
    /// A builder of a one-for-one supervisor allowing 1 restart in 5 s,
    /// with no children.
    ///
    /// # Examples
    ///
    /// See [`SupervisorBuilder`].
    pub fn builder() -> SupervisorBuilder {
        SupervisorBuilder::default()
    }
}

impl SupervisorBuilder {
    /// Names the supervisor (its thread and its events' logs).
    ///
    /// # Examples
    ///
    /// ```
    /// let b = isolates::supervisor::Supervisor::builder().name("root");
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
    /// use isolates::Backoff;
    /// use isolates::supervisor::Supervisor;
    /// let b = Supervisor::builder()
    ///     .backoff(Backoff::exponential(Duration::from_millis(50)).max(Duration::from_secs(5)).jitter());
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
    /// use isolates::supervisor::{ChildSpec, SupervisionEvent, Supervisor, SupervisorBuilder};
    ///
    /// struct Idle;
    /// impl Isolate for Idle {
    ///     type Args = (); type Message = (); type Reply = (); type Error = String;
    ///     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Idle) }
    ///     fn handle(&mut self, _: (), _: &mut Context<Self>) -> Result<(), String> { Ok(()) }
    /// }
    ///
    /// let (tx, events) = port::unbounded::<SupervisionEvent>();
    /// let sup = Supervisor::builder()
    ///     .event_listener(tx)
    ///     .child(ChildSpec::worker::<Idle>("idle", ()))
    ///     .spawn()
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
    /// [`SpawnError::DuplicateChild`] if two children share a name (then
    /// nothing starts); otherwise the first child that cannot be spawned,
    /// and the children started before it are stopped again.
    ///
    /// # Examples
    ///
    /// See [`SupervisorBuilder`].
    pub fn spawn(self) -> Result<Supervisor, SpawnError> {
        self.start_inner(None)
    }

    pub(super) fn start_inner(self, parent: Option<ParentHook>) -> Result<Supervisor, SpawnError> {
        let mut names = std::collections::HashSet::new();
        if let Some(twice) = self.children.iter().find(|c| !names.insert(&c.name)) {
            return Err(SpawnError::DuplicateChild(twice.name.clone()));
        }
        let (tx, rx) = cb::unbounded();
        let shared = Arc::new(SupShared {
            name: self.name.clone().unwrap_or_else(|| "supervisor".into()),
            tx,
            registry: Arc::new(Mutex::new(HashMap::new())),
            exit: Mutex::new(None),
            exited: Condvar::new(),
            listeners: Listeners::new(self.listeners.clone()),
            children: Mutex::new(Vec::new()),
            handles: AtomicUsize::new(0),
        });
        let (started_tx, started_rx) = cb::bounded(1);
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(shared.name.clone())
            .spawn(move || {
                let policy = Policy {
                    strategy: self.strategy,
                    intensity: self.intensity,
                    period: self.period,
                    backoff: self.backoff,
                };
                let mut run = SupRun::new(policy, self.children, Arc::clone(&thread_shared), rx);
                let started = run.start_children();
                let failed = started.is_err();
                let _ = started_tx.send(started);
                let reason = if failed {
                    ExitReason::Failed("a child could not be started".into())
                } else {
                    run.serve()
                };
                thread_shared.finish(reason.clone());
                run.discard_queue();
                drop(run);
                if let Some(parent) = parent {
                    parent(reason);
                }
            })
            .map_err(|e| SpawnError::Thread(e.to_string()))?;
        match started_rx.recv() {
            Ok(Ok(())) => Ok(Supervisor::new(shared)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SpawnError::Thread(
                "the supervisor thread ended while starting".into(),
            )),
        }
    }
}
