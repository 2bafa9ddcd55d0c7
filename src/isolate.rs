//! Isolates: actors whose state is built inside them and never leaves.
//! The [`Isolate`] trait's docs describe them and their lifecycle.

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::SpawnError;
pub use crate::error::{Crash, ExitReason};

#[cfg(target_os = "linux")]
mod body;
mod builder;
mod context;
mod func;
mod handle;
mod registry;
#[cfg(target_os = "linux")]
mod remote;
mod request;
mod runloop;
mod shared;
mod supervised;
#[cfg(target_os = "linux")]
mod threads;
mod timer;
mod watch;

#[cfg(target_os = "linux")]
pub(crate) use remote::serve_child;
pub(crate) use shared::{ExitHook, Leftover};
pub(crate) use supervised::Restartable;

pub use builder::{IsolateBuilder, Mailbox};
pub use context::Context;
pub use func::{FnIsolate, spawn_fn};
pub use handle::IsolateHandle;
pub use registry::{registered, unregister};
pub use request::Request;
pub use timer::TimerRef;
pub use watch::{Down, MonitorRef};

/// An actor with private state, built inside its own thread.
///
/// An isolate runs on its own thread. Its state is created by
/// [`Isolate::start`] from start arguments that the spawner gave up, and
/// every message reaches [`Isolate::handle`] the same way: moved into the
/// isolate, so the sender cannot touch it again and a send costs the same
/// whatever the message's size. (With
/// [`IsolateBuilder::copy_messages`] every message is encoded instead, as
/// Dart copies.) The state type need not be `Send`: it never crosses a
/// thread.
///
/// Every message type is serializable, so the same isolate can later cross
/// a real boundary (a child process, another machine), where its messages
/// are encoded.
///
/// The outside world holds [`IsolateHandle`]s: cheap to clone, they can
/// [`cast`](IsolateHandle::cast) (fire and forget), [`ask`](IsolateHandle::ask)
/// (wait for the reply) or [`ask_pending`](IsolateHandle::ask_pending) (poll
/// for it), and control the isolate: kill, pause, resume, ping, listen for its
/// exit and its errors.
///
/// # Lifecycle
///
/// An isolate exits, with an [`ExitReason`], when:
/// - it is [killed](IsolateHandle::kill) → `Killed`;
/// - its handler panics or returns `Err` while errors are fatal (the default,
///   as in Dart) → `Panicked` / `Failed`; with errors not fatal it goes on;
/// - [`start`](Isolate::start) fails → `Failed`;
/// - it calls [`Context::stop`], or every handle is dropped and its mailbox
///   is empty → `Normal`.
///
/// Messages still queued when it exits are not handled: each queued `ask`
/// resolves [`AskError::Dead`](crate::AskError::Dead) with the exit reason,
/// and queued casts are dropped (counted in [`IsolateStats::dropped`]).
/// [`Context::exit`] ends the isolate from inside a handler at once (Dart's
/// `Isolate.exit`): the rest of the handler does not run.
///
/// # Globals are shared
///
/// **Unlike Dart**, where each isolate has its own globals, an isolate here
/// is a thread of the process: `static`s are shared by every isolate and
/// the main thread (a `thread_local!` is per thread). Keep the isolate's
/// data in its state, which nothing else can reach. For real separation
/// (its own statics and memory, a kill that stops a running handler, a
/// crash that cannot take the process down) run it in a child process:
/// [`IsolateBuilder::process`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::{Context, Isolate};
///
/// /// Sums what it is sent; the total never leaves the isolate.
/// struct Counter { total: i64 }
///
/// impl Isolate for Counter {
///     type Args = i64;          // where to start
///     type Message = i64;       // what to add
///     type Reply = i64;         // the total after adding
///     type Error = String;
///
///     fn start(start: i64, _ctx: &mut Context<Self>) -> Result<Self, String> {
///         Ok(Counter { total: start })
///     }
///
///     fn handle(&mut self, n: i64, _ctx: &mut Context<Self>) -> Result<i64, String> {
///         self.total = self.total.checked_add(n).ok_or("overflow")?;
///         Ok(self.total)
///     }
/// }
///
/// let counter = Counter::spawn(100).unwrap();
/// counter.cast(5).unwrap();
/// assert_eq!(counter.ask_timeout(10, Duration::from_secs(5)), Ok(115));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an isolate",
    label = "not an isolate",
    note = "implement `isolates::Isolate` for `{Self}`, or spawn a state and a function with `isolates::spawn_fn`"
)]
pub trait Isolate: Sized + 'static {
    /// What the isolate is started from; moved to the isolate's thread.
    type Args: Serialize + DeserializeOwned + Send + 'static;
    /// What it is sent.
    type Message: Serialize + DeserializeOwned + Send + 'static;
    /// What it answers to an `ask`.
    type Reply: Serialize + DeserializeOwned + Send + 'static;
    /// What its handler may fail with; carried back to the asker typed.
    type Error: Serialize + DeserializeOwned + fmt::Display + Send + 'static;

    /// Builds the state, on the isolate's own thread.
    ///
    /// # Errors
    ///
    /// An error makes the isolate exit with [`ExitReason::Failed`] before it
    /// handles any message.
    fn start(args: Self::Args, ctx: &mut Context<Self>) -> Result<Self, Self::Error>;

    /// Handles one message and returns the reply (dropped for a cast).
    ///
    /// # Errors
    ///
    /// An error goes back to the asker as
    /// [`AskError::Failed`](crate::AskError::Failed) and to the error
    /// listeners; while errors are fatal, the isolate then exits with
    /// [`ExitReason::Failed`].
    fn handle(
        &mut self,
        msg: Self::Message,
        ctx: &mut Context<Self>,
    ) -> Result<Self::Reply, Self::Error>;

    /// Called when an isolate this one [monitors](Context::monitor) exits,
    /// or, while it [traps exits](Context::trap_exits), when an isolate it
    /// is [linked](Context::link) to exits. Runs between messages, as a
    /// cast's handler does: the default does nothing.
    ///
    /// # Errors
    ///
    /// An error is reported to the error listeners and, while errors are
    /// fatal, ends the isolate with [`ExitReason::Failed`], as a handler's.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use isolates::{Context, Down, ExitReason, Isolate, IsolateHandle, Priority};
    /// # struct Echo;
    /// # impl Isolate for Echo {
    /// #     type Args = (); type Message = u8; type Reply = u8; type Error = String;
    /// #     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Echo) }
    /// #     fn handle(&mut self, m: u8, _: &mut Context<Self>) -> Result<u8, String> { Ok(m) }
    /// # }
    ///
    /// /// Watches the isolate registered as "doc-down"; counts who went.
    /// struct Watcher { gone: u32 }
    /// impl Isolate for Watcher {
    ///     type Args = (); type Message = (); type Reply = u32; type Error = String;
    ///     fn start(_: (), ctx: &mut Context<Self>) -> Result<Self, String> {
    ///         let echo = IsolateHandle::<Echo>::whereis("doc-down").map_err(|e| e.to_string())?;
    ///         ctx.monitor(&echo).map_err(|e| e.to_string())?;
    ///         Ok(Watcher { gone: 0 })
    ///     }
    ///     fn handle(&mut self, _: (), _: &mut Context<Self>) -> Result<u32, String> {
    ///         Ok(self.gone)
    ///     }
    ///     fn down(&mut self, down: Down, _: &mut Context<Self>) -> Result<(), String> {
    ///         assert_eq!(down.reason, ExitReason::Killed);
    ///         self.gone += 1;
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let echo = Echo::spawn(()).unwrap();
    /// echo.register("doc-down").unwrap();
    /// let watcher = Watcher::spawn(()).unwrap();
    /// assert_eq!(watcher.ask_timeout((), Duration::from_secs(5)), Ok(0));
    /// echo.kill(Priority::Immediate);
    /// let deadline = std::time::Instant::now() + Duration::from_secs(5);
    /// while watcher.ask_timeout((), Duration::from_secs(5)) != Ok(1) {
    ///     assert!(std::time::Instant::now() < deadline);
    ///     std::thread::sleep(Duration::from_millis(1));
    /// }
    /// ```
    fn down(&mut self, down: Down, ctx: &mut Context<Self>) -> Result<(), Self::Error> {
        let _ = (down, ctx);
        Ok(())
    }

    /// Called once when the isolate exits after a successful start, with the
    /// reason. A panic here is caught and ignored.
    fn stopping(&mut self, reason: &ExitReason) {
        let _ = reason;
    }

    /// Spawns this isolate with the default settings; see [`IsolateBuilder`].
    ///
    /// # Errors
    ///
    /// [`SpawnError`] if the arguments cannot be encoded (only with
    /// [`IsolateBuilder::copy_messages`]) or no thread can be
    /// started.
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::{Context, Isolate};
    /// # struct Echo;
    /// # impl Isolate for Echo {
    /// #     type Args = (); type Message = u8; type Reply = u8; type Error = String;
    /// #     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Echo) }
    /// #     fn handle(&mut self, m: u8, _: &mut Context<Self>) -> Result<u8, String> { Ok(m) }
    /// # }
    /// let echo = Echo::spawn(()).unwrap();
    /// assert_eq!(echo.ask_timeout(4, std::time::Duration::from_secs(5)), Ok(4));
    /// ```
    fn spawn(args: Self::Args) -> Result<IsolateHandle<Self>, SpawnError> {
        IsolateBuilder::new().spawn(args)
    }
}

/// When a control request takes effect, as Dart's `Isolate.immediate` and
/// `Isolate.beforeNextEvent`.
///
/// A running handler is native code and cannot be interrupted: `Immediate`
/// takes effect at the next point where the isolate looks (between messages,
/// or when the handler checks [`Context::kill_requested`]), ahead of control
/// requests already queued. `AfterCurrent` takes effect after the current
/// message, in order with the other control requests, but before any further
/// message.
///
/// # Examples
///
/// ```
/// use isolates::Priority;
/// assert_ne!(Priority::Immediate, Priority::AfterCurrent);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    /// As soon as possible, never later than `AfterCurrent`.
    Immediate,
    /// After the current message and any control requests sent before.
    AfterCurrent,
}

/// A pause capability, as in Dart: pausing twice with the same token needs
/// one resume; each distinct token needs its own.
///
/// # Examples
///
/// ```
/// # use isolates::{Context, Isolate};
/// # struct Echo;
/// # impl Isolate for Echo {
/// #     type Args = (); type Message = u8; type Reply = u8; type Error = String;
/// #     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Echo) }
/// #     fn handle(&mut self, m: u8, _: &mut Context<Self>) -> Result<u8, String> { Ok(m) }
/// # }
/// let echo = Echo::spawn(()).unwrap();
/// let token = echo.pause();
/// let mut reply = echo.ask_pending(1);
/// assert!(reply.wait_timeout(std::time::Duration::from_millis(20)).is_none());
/// echo.resume(&token);
/// assert_eq!(reply.wait(), Ok(1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PauseToken(pub(crate) u64);

/// An error reported to error listeners: a panic or a handler error.
///
/// # Examples
///
/// ```
/// let e = isolates::IsolateError::new("boom", "");
/// assert_eq!(e.to_string(), "boom");
/// assert_eq!(e.message, "boom");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct IsolateError {
    /// The panic message or the error's `Display` text.
    pub message: String,
    /// Where a panic happened, with a backtrace when `RUST_BACKTRACE` is set;
    /// empty for handler errors.
    pub stack: String,
}

impl IsolateError {
    /// An error with `message` and `stack` (empty for a handler error),
    /// for code that reports one as an isolate would (a test's listener).
    ///
    /// # Examples
    ///
    /// See [`IsolateError`].
    pub fn new(message: impl Into<String>, stack: impl Into<String>) -> Self {
        IsolateError {
            message: message.into(),
            stack: stack.into(),
        }
    }
}

impl fmt::Display for IsolateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Where an isolate is in its life.
///
/// # Examples
///
/// ```
/// use isolates::IsolateState;
/// assert_ne!(IsolateState::Running, IsolateState::Exited);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IsolateState {
    /// Spawned, `start` not finished (or paused before it).
    Starting,
    /// Handling or waiting for messages.
    Running,
    /// Paused: messages queue up.
    Paused,
    /// Gone; see [`IsolateHandle::exit_reason`].
    Exited,
}

/// Counters of one isolate, read without disturbing it.
///
/// # Examples
///
/// ```
/// # use isolates::{Context, Isolate};
/// # struct Echo;
/// # impl Isolate for Echo {
/// #     type Args = (); type Message = u8; type Reply = u8; type Error = String;
/// #     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Echo) }
/// #     fn handle(&mut self, m: u8, _: &mut Context<Self>) -> Result<u8, String> { Ok(m) }
/// # }
/// let echo = Echo::spawn(()).unwrap();
/// echo.ask_timeout(1, std::time::Duration::from_secs(5)).unwrap();
/// let stats = echo.stats();
/// assert_eq!(stats.messages_handled, 1);
/// assert_eq!(stats.queue_len, 0);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IsolateStats {
    /// Messages whose handler returned (successfully or not).
    pub messages_handled: u64,
    /// Handler errors and panics.
    pub errors: u64,
    /// Messages that could not be decoded.
    pub bad_messages: u64,
    /// Casts dropped because the isolate exited with them queued.
    pub dropped: u64,
    /// Messages waiting in the mailbox now.
    pub queue_len: usize,
    /// Time spent handling messages (`handle`, replying), not blocked
    /// waiting for them. The brief spin (a few µs at most) with which the
    /// isolate looks for the next message before it blocks counts as busy:
    /// the thread holds its core meanwhile. The run of messages in progress
    /// is included.
    pub busy: Duration,
    /// Time since spawn.
    pub uptime: Duration,
    /// Where it is in its life.
    pub state: IsolateState,
}
