//! [`IsolateHandle`]: how the outside world talks to an isolate.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::shared::{Control, Item, Refused, ReplyTo, Shared, Wait};
use super::watch::{Down, MonitorRef};
use super::{ExitReason, Isolate, IsolateError, IsolateState, IsolateStats, PauseToken, Priority};
use crate::codec::envelope::Envelope;
use crate::error::{AskError, CodecError, SendError, SendTimeoutError, TrySendError};
use crate::oneshot;
use crate::pending::{Pending, Reply};
use crate::port::{Packed, ReceivePort, SendPort};

/// A cheap, clonable reference to a running isolate; never exposes its state.
///
/// Every call is safe from a UI thread: those that could wait have a form that
/// does not ([`try_cast`](Self::try_cast), [`ask_pending`](Self::ask_pending),
/// [`exit_reason`](Self::exit_reason)). When the last handle is dropped,
/// the isolate handles what is queued and exits normally.
///
/// `Debug` shows the name, id and state, never a message.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::{Context, Isolate, Priority, ExitReason};
///
/// struct Upper;
/// impl Isolate for Upper {
///     type Args = ();
///     type Message = String;
///     type Reply = String;
///     type Error = String;
///     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Upper) }
///     fn handle(&mut self, s: String, _: &mut Context<Self>) -> Result<String, String> {
///         Ok(s.to_uppercase())
///     }
/// }
///
/// let upper = Upper::spawn(()).unwrap();
/// let mut reply = upper.ask_pending("quiet".into());
/// // ... the UI thread goes on drawing, and looks once per frame:
/// let text = loop {
///     if let Some(r) = reply.try_take() { break r.unwrap(); }
///     std::thread::yield_now();
/// };
/// assert_eq!(text, "QUIET");
/// upper.kill(Priority::AfterCurrent);
/// assert_eq!(upper.join(Duration::from_secs(5)), Some(ExitReason::Killed));
/// ```
pub struct IsolateHandle<I: Isolate> {
    shared: Arc<Shared<I>>,
}

impl<I: Isolate> IsolateHandle<I> {
    pub(super) fn new(shared: Arc<Shared<I>>) -> Self {
        shared.handles.fetch_add(1, Ordering::SeqCst);
        IsolateHandle { shared }
    }

    /// The record it shares with the isolate.
    pub(super) fn shared(&self) -> &Arc<Shared<I>> {
        &self.shared
    }

    /// The debug name given at spawn (or `Type#id`).
    ///
    /// # Examples
    ///
    /// See [`Context`](crate::Context).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// A process-unique id.
    ///
    /// # Examples
    ///
    /// See [`IsolateHandle::stats`].
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// Sends a message without waiting for its reply, waiting for room if
    /// the mailbox is bounded and full.
    ///
    /// A message cast just as the isolate exits may be dropped unhandled
    /// (counted in [`IsolateStats::dropped`]); use [`ask`](Self::ask) to know.
    ///
    /// # Errors
    ///
    /// The message comes back in [`SendError::Disconnected`] if the isolate
    /// has exited, or [`SendError::Encode`] if it cannot be encoded (only
    /// with [`IsolateBuilder::copy_messages`](crate::IsolateBuilder::copy_messages)).
    ///
    /// # Examples
    ///
    /// See [`Isolate`].
    pub fn cast(&self, msg: I::Message) -> Result<(), SendError<I::Message>> {
        match self.push_cast(msg, Wait::Block) {
            Ok(()) => Ok(()),
            Err(CastRefused::Encode(msg, e)) => Err(SendError::Encode(msg, e)),
            Err(CastRefused::Full(msg) | CastRefused::Disconnected(msg)) => {
                Err(SendError::Disconnected(msg))
            }
        }
    }

    /// Sends a message if the mailbox has room now; never blocks.
    ///
    /// # Errors
    ///
    /// The message comes back in [`TrySendError::Full`],
    /// [`TrySendError::Disconnected`] or [`TrySendError::Encode`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::{Context, Isolate, IsolateBuilder, Mailbox};
    /// # struct Echo;
    /// # impl Isolate for Echo {
    /// #     type Args = (); type Message = u8; type Reply = u8; type Error = String;
    /// #     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Echo) }
    /// #     fn handle(&mut self, m: u8, _: &mut Context<Self>) -> Result<u8, String> { Ok(m) }
    /// # }
    /// let (echo, token) = IsolateBuilder::new()
    ///     .mailbox(Mailbox::Bounded(1))
    ///     .spawn_paused::<Echo>(())
    ///     .unwrap();
    /// echo.try_cast(1).unwrap();
    /// assert!(echo.try_cast(2).unwrap_err().is_full());
    /// echo.resume(&token);
    /// ```
    pub fn try_cast(&self, msg: I::Message) -> Result<(), TrySendError<I::Message>> {
        match self.push_cast(msg, Wait::No) {
            Ok(()) => Ok(()),
            Err(CastRefused::Encode(msg, e)) => Err(TrySendError::Encode(msg, e)),
            Err(CastRefused::Full(msg)) => Err(TrySendError::Full(msg)),
            Err(CastRefused::Disconnected(msg)) => Err(TrySendError::Disconnected(msg)),
        }
    }

    /// Like [`cast`](Self::cast), waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// As [`cast_deadline`](Self::cast_deadline).
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
    /// echo.cast_timeout(1, std::time::Duration::from_millis(10)).unwrap();
    /// ```
    pub fn cast_timeout(
        &self,
        msg: I::Message,
        timeout: Duration,
    ) -> Result<(), SendTimeoutError<I::Message>> {
        let wait = crate::time::deadline_after(timeout).map_or(Wait::Block, Wait::Until);
        match self.push_cast(msg, wait) {
            Ok(()) => Ok(()),
            Err(CastRefused::Encode(msg, e)) => Err(SendTimeoutError::Encode(msg, e)),
            Err(CastRefused::Full(msg)) => Err(SendTimeoutError::Timeout(msg)),
            Err(CastRefused::Disconnected(msg)) => Err(SendTimeoutError::Disconnected(msg)),
        }
    }

    /// Like [`cast`](Self::cast), waiting until `deadline` at most for room.
    ///
    /// # Errors
    ///
    /// The message comes back in [`SendTimeoutError::Timeout`],
    /// [`SendTimeoutError::Disconnected`] or [`SendTimeoutError::Encode`].
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
    /// use std::time::{Duration, Instant};
    /// let echo = Echo::spawn(()).unwrap();
    /// echo.cast_deadline(1, Instant::now() + Duration::from_millis(10)).unwrap();
    /// ```
    pub fn cast_deadline(
        &self,
        msg: I::Message,
        deadline: Instant,
    ) -> Result<(), SendTimeoutError<I::Message>> {
        match self.push_cast(msg, Wait::Until(deadline)) {
            Ok(()) => Ok(()),
            Err(CastRefused::Encode(msg, e)) => Err(SendTimeoutError::Encode(msg, e)),
            Err(CastRefused::Full(msg)) => Err(SendTimeoutError::Timeout(msg)),
            Err(CastRefused::Disconnected(msg)) => Err(SendTimeoutError::Disconnected(msg)),
        }
    }

    /// Packs (moves or encodes) and pushes a cast; a refused message comes
    /// back.
    fn push_cast(&self, msg: I::Message, wait: Wait) -> Result<(), CastRefused<I::Message>> {
        if self.shared.is_closed() {
            return Err(CastRefused::Disconnected(msg));
        }
        let Packed { envelope, kept } = self
            .shared
            .codecs
            .message
            .pack(msg, "message")
            .map_err(|(msg, e)| CastRefused::Encode(msg, e))?;
        let item = Item {
            envelope,
            reply: None,
        };
        match self.shared.push(item, wait) {
            Ok(()) => Ok(()),
            Err((refused, item)) => {
                let msg = Packed::take_back(item.envelope, kept);
                Err(match refused {
                    Refused::Full => CastRefused::Full(msg),
                    Refused::Disconnected => CastRefused::Disconnected(msg),
                })
            }
        }
    }

    /// Sends a message and waits for the reply, as long as the isolate
    /// takes to answer (including any wait for room in a bounded mailbox).
    ///
    /// It cannot hang on a dead isolate: an isolate that exits, is killed
    /// or crashes before answering resolves it at once with
    /// [`AskError::Dead`], and one that panics on the message with
    /// [`AskError::Panicked`]. It does wait as long as a live isolate takes,
    /// paused ones included: bound the wait with
    /// [`ask_timeout`](Self::ask_timeout) or
    /// [`ask_deadline`](Self::ask_deadline), and on a UI thread use
    /// [`ask_pending`](Self::ask_pending), which never blocks.
    ///
    /// # Errors
    ///
    /// [`AskError`]: the isolate's exit, a panic or error of the handler,
    /// or a codec failure on either side.
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::{AskError, ExitReason, Priority};
    ///
    /// let doubler = isolates::spawn_fn((), |_: &mut (), n: u32, _| n * 2).unwrap();
    /// assert_eq!(doubler.ask(21), Ok(42));
    ///
    /// // A dead isolate answers at once: `ask` cannot hang on it.
    /// doubler.kill(Priority::Immediate);
    /// assert_eq!(doubler.ask(1), Err(AskError::Dead(ExitReason::Killed)));
    /// ```
    pub fn ask(&self, msg: I::Message) -> Result<I::Reply, AskError<I::Error>> {
        self.ask_until(msg, Limit::Forever)
    }

    /// Like [`ask`](Self::ask), waiting at most `timeout` for the reply,
    /// including any wait for room in a bounded mailbox. `Duration::MAX`
    /// waits as [`ask`](Self::ask) does.
    ///
    /// On timeout the message may still be handled later; its reply is then
    /// dropped.
    ///
    /// # Errors
    ///
    /// [`AskError`]: timeout, the isolate's exit, a panic or error of the
    /// handler, or a codec failure on either side.
    ///
    /// # Examples
    ///
    /// See [`Isolate`].
    pub fn ask_timeout(
        &self,
        msg: I::Message,
        timeout: Duration,
    ) -> Result<I::Reply, AskError<I::Error>> {
        self.ask_until(msg, Limit::Timeout(timeout))
    }

    /// Like [`ask`](Self::ask), waiting until `deadline` at most for the
    /// reply, including any wait for room in a bounded mailbox.
    ///
    /// # Errors
    ///
    /// As [`ask_timeout`](Self::ask_timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use isolates::AskError;
    ///
    /// let echo = isolates::spawn_fn((), |_: &mut (), n: u8, _| n).unwrap();
    /// let deadline = Instant::now() + Duration::from_secs(5);
    /// assert_eq!(echo.ask_deadline(3, deadline), Ok(3));
    ///
    /// // A paused isolate answers nothing: the deadline ends the wait.
    /// let token = echo.pause();
    /// let soon = Instant::now() + Duration::from_millis(20);
    /// assert_eq!(echo.ask_deadline(4, soon), Err(AskError::Timeout));
    /// echo.resume(&token);
    /// ```
    pub fn ask_deadline(
        &self,
        msg: I::Message,
        deadline: Instant,
    ) -> Result<I::Reply, AskError<I::Error>> {
        self.ask_until(msg, Limit::Deadline(deadline))
    }

    fn ask_until(&self, msg: I::Message, limit: Limit) -> Result<I::Reply, AskError<I::Error>> {
        // A process isolate whose thread is parked: the caller talks to the
        // child itself.
        #[cfg(target_os = "linux")]
        let msg = if self.shared.process.is_some() {
            let timeout = match limit {
                Limit::Forever => Duration::MAX,
                Limit::Timeout(timeout) => timeout,
                Limit::Deadline(deadline) => deadline.saturating_duration_since(Instant::now()),
            };
            match super::remote::direct_ask(&self.shared, msg, timeout) {
                Ok(result) => return result,
                Err(msg) => msg,
            }
        } else {
            msg
        };
        // An unbounded mailbox never makes a send wait: read the clock for
        // a timeout's deadline after the send, while the isolate is already
        // at work, not before it.
        let bounded = self.shared.mailbox_tx.capacity().is_some();
        let mut deadline = match limit {
            Limit::Forever => None,
            Limit::Timeout(timeout) if bounded => crate::time::deadline_after(timeout),
            Limit::Timeout(_) => None,
            Limit::Deadline(deadline) => Some(deadline),
        };
        let envelope = self.pack_ask(msg)?;
        let (tx, rx) = oneshot::reply_slot();
        let item = Item {
            envelope,
            reply: Some(ReplyTo::Typed(tx)),
        };
        match self
            .shared
            .push(item, deadline.map_or(Wait::Block, Wait::Until))
        {
            Ok(()) => {}
            Err((Refused::Full, _)) => return Err(AskError::Timeout),
            Err((Refused::Disconnected, _)) => return Err(self.dead()),
        }
        if let (Limit::Timeout(timeout), false) = (limit, bounded) {
            deadline = crate::time::deadline_after(timeout);
        }
        // Waits on the reply slot directly: no `Pending` to allocate.
        let result = match rx.recv_until(deadline) {
            Ok(reply) => resolve_reply(&self.shared, Some(reply)),
            Err(oneshot::Miss::Empty) => Err(AskError::Timeout),
            Err(oneshot::Miss::Closed) => resolve_reply(&self.shared, None),
        };
        rx.recycle();
        result
    }

    /// Like [`ask_timeout`](Self::ask_timeout), sending the message again (a clone) when
    /// handling it panicked, up to `attempts` sends in all, within one
    /// overall `timeout`. Meant for a supervised isolate, which is restarted
    /// after the panic; a message that panics every time gives up after
    /// `attempts` (no poison loop) with the last [`AskError::Panicked`].
    ///
    /// # Errors
    ///
    /// As [`ask_timeout`](Self::ask_timeout); `Panicked` only once the attempts are spent.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::time::Duration;
    /// use isolates::{AskError, Context, Isolate};
    /// use isolates::supervisor::{ChildSpec, Supervisor};
    ///
    /// static FLAKY: AtomicBool = AtomicBool::new(true);
    ///
    /// struct Once;
    /// impl Isolate for Once {
    ///     type Args = (); type Message = u8; type Reply = u8; type Error = String;
    ///     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Once) }
    ///     fn handle(&mut self, n: u8, _: &mut Context<Self>) -> Result<u8, String> {
    ///         assert!(!FLAKY.swap(false, Ordering::SeqCst), "first try fails");
    ///         Ok(n)
    ///     }
    /// }
    /// let sup = Supervisor::builder().child(ChildSpec::worker::<Once>("once", ())).spawn().unwrap();
    /// let once = sup.worker::<Once>("once").unwrap();
    /// assert_eq!(once.ask_retrying(5, Duration::from_secs(5), 2), Ok(5));
    /// sup.stop();
    /// ```
    pub fn ask_retrying(
        &self,
        msg: I::Message,
        timeout: Duration,
        attempts: u32,
    ) -> Result<I::Reply, AskError<I::Error>>
    where
        I::Message: Clone,
    {
        let deadline = crate::time::deadline_after(timeout);
        let mut left = attempts.max(1);
        loop {
            let remaining = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            left -= 1;
            match self.ask_timeout(msg.clone(), remaining) {
                Err(AskError::Panicked(_)) if left > 0 => continue,
                other => return other,
            }
        }
    }

    /// Sends a message and returns at once with a [`Pending`] reply to poll;
    /// never blocks. A full bounded mailbox resolves it to
    /// [`AskError::Full`] at once.
    ///
    /// # Examples
    ///
    /// See [`IsolateHandle`].
    pub fn ask_pending(&self, msg: I::Message) -> Pending<I::Reply, AskError<I::Error>> {
        self.ask_pending_then(msg, Ok)
    }

    /// [`ask_pending`](Self::ask_pending) whose reply goes through `then`
    /// on the thread that takes it (a typed request's unwrapping).
    pub(super) fn ask_pending_then<T>(
        &self,
        msg: I::Message,
        then: impl FnOnce(I::Reply) -> Result<T, AskError<I::Error>> + Send + 'static,
    ) -> Pending<T, AskError<I::Error>> {
        let envelope = match self.pack_ask(msg) {
            Ok(envelope) => envelope,
            Err(e) => return Pending::ready(Err(e)),
        };
        let (tx, rx) = oneshot::oneshot();
        let item = Item {
            envelope,
            reply: Some(ReplyTo::Erased(tx)),
        };
        match self.shared.push(item, Wait::No) {
            Ok(()) => {}
            Err((Refused::Full, _)) => return Pending::ready(Err(AskError::Full)),
            Err((Refused::Disconnected, _)) => return Pending::ready(Err(self.dead())),
        }
        let shared = Arc::clone(&self.shared);
        Pending::waiting(rx, move |reply| {
            resolve_reply(&shared, reply.map(Reply::typed::<I::Reply, I::Error>)).and_then(then)
        })
    }

    /// Packs an ask's message. A refused ask's message is dropped where it
    /// is refused: on the asker's thread, as before the send.
    fn pack_ask(&self, msg: I::Message) -> Result<Envelope<I::Message>, AskError<I::Error>> {
        if self.shared.is_closed() {
            return Err(self.dead());
        }
        match self.shared.codecs.message.pack(msg, "message") {
            Ok(packed) => Ok(packed.envelope),
            Err((_, e)) => Err(AskError::Encode(e)),
        }
    }

    fn dead(&self) -> AskError<I::Error> {
        AskError::Dead(lost_reason(self.shared.exit_reason()))
    }

    /// Kills the isolate. [`Priority::Immediate`] sets the flag that
    /// [`Context::kill_requested`](crate::Context::kill_requested) reads at
    /// once and exits at the next message boundary, ahead of queued control
    /// requests; [`Priority::AfterCurrent`] exits after the current message
    /// and any control request sent before it. Either way no further message
    /// is handled: queued asks resolve [`AskError::Dead`] with
    /// [`ExitReason::Killed`], queued casts are dropped.
    ///
    /// A process isolate's child runs its `stopping` and exits (an
    /// immediate kill ends it with SIGKILL, and the isolate ends without
    /// waiting for the child's exit: [`join`](Self::join) reaps it).
    ///
    /// Killing an isolate that has exited does nothing.
    ///
    /// # Examples
    ///
    /// See [`IsolateHandle`].
    pub fn kill(&self, priority: Priority) {
        self.shared.kill(priority);
    }

    /// Pauses the isolate after the current message, with a new token.
    /// Messages keep queuing; control requests (kill, ping, resume) are still
    /// served.
    ///
    /// # Examples
    ///
    /// See [`PauseToken`].
    pub fn pause(&self) -> PauseToken {
        let token = PauseToken(Shared::<I>::new_token());
        self.pause_with(&token);
        token
    }

    /// Pauses with an existing token: pausing twice with one token needs only
    /// one resume.
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
    /// echo.pause_with(&token);
    /// echo.resume(&token);
    /// assert_eq!(echo.ask_timeout(3, std::time::Duration::from_secs(5)), Ok(3));
    /// ```
    pub fn pause_with(&self, token: &PauseToken) {
        self.shared.control(Control::Pause(token.0), false);
    }

    /// Lifts the pause held by `token`; the isolate runs again when no token
    /// holds it paused. Resuming with a token that holds no pause does nothing.
    ///
    /// # Examples
    ///
    /// See [`PauseToken`].
    pub fn resume(&self, token: &PauseToken) {
        self.shared.control(Control::Resume(token.0), false);
    }

    /// Asks the isolate to answer a ping; the [`Pending`] resolves `Ok(())`
    /// when it does, or [`AskError::Dead`] if it exits first. A paused
    /// isolate still answers. [`Priority::Immediate`] (Dart's default) jumps
    /// the control queue; neither overtakes a running handler.
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::{Context, Isolate, Priority};
    /// # struct Echo;
    /// # impl Isolate for Echo {
    /// #     type Args = (); type Message = u8; type Reply = u8; type Error = String;
    /// #     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Echo) }
    /// #     fn handle(&mut self, m: u8, _: &mut Context<Self>) -> Result<u8, String> { Ok(m) }
    /// # }
    /// let echo = Echo::spawn(()).unwrap();
    /// let mut pong = echo.ping(Priority::Immediate);
    /// assert_eq!(pong.wait_timeout(std::time::Duration::from_secs(5)), Some(Ok(())));
    /// ```
    pub fn ping(&self, priority: Priority) -> Pending<(), AskError<Infallible>> {
        let (tx, rx) = oneshot::oneshot();
        self.shared
            .control(Control::Ping(tx), priority == Priority::Immediate);
        let shared = Arc::clone(&self.shared);
        Pending::waiting(rx, move |reply| match reply {
            Some(Reply::Value(_)) => Ok(()),
            Some(Reply::Dead(reason)) => Err(AskError::Dead(reason)),
            _ => Err(AskError::Dead(lost_reason(shared.exit_reason()))),
        })
    }

    /// Sends the exit reason to `port` when the isolate exits, or at once if
    /// it already has. To be sure not to miss an early exit, spawn paused
    /// ([`IsolateBuilder::spawn_paused`](crate::IsolateBuilder::spawn_paused)),
    /// add listeners, then resume. The isolate never waits for a listener:
    /// if `port`'s mailbox is full, the reason is dropped (and logged).
    ///
    /// A port added twice gets the reason once, as in Dart (ports are the
    /// same when [`SendPort::same_port`] says so);
    /// [`remove_exit_listener`](Self::remove_exit_listener) takes it off.
    ///
    /// **Unlike Dart**, a listener added after the isolate exited gets the
    /// reason at once (Dart sends it nothing): a supervisor or a UI that
    /// starts listening late learns how the isolate ended instead of
    /// waiting forever. A port is told the exit once, however often it is
    /// added, before the exit or after.
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::{Context, Isolate, Priority, ExitReason, port};
    /// # struct Echo;
    /// # impl Isolate for Echo {
    /// #     type Args = (); type Message = u8; type Reply = u8; type Error = String;
    /// #     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Echo) }
    /// #     fn handle(&mut self, m: u8, _: &mut Context<Self>) -> Result<u8, String> { Ok(m) }
    /// # }
    /// let echo = Echo::spawn(()).unwrap();
    /// let (tx, exits) = port::unbounded::<ExitReason>();
    /// echo.add_exit_listener(tx.clone());
    /// echo.add_exit_listener(tx); // the same port: still one event
    /// echo.kill(Priority::Immediate);
    /// assert_eq!(exits.recv(), Ok(ExitReason::Killed));
    /// assert!(exits.try_recv().is_err());
    ///
    /// // Added after the exit: the reason comes at once.
    /// let (late, late_exits) = port::unbounded::<ExitReason>();
    /// echo.add_exit_listener(late);
    /// assert_eq!(late_exits.recv(), Ok(ExitReason::Killed));
    /// ```
    pub fn add_exit_listener(&self, port: SendPort<ExitReason>) {
        self.shared.add_exit_listener(port);
    }

    /// Monitors the isolate from outside any isolate (a UI thread, a test):
    /// the port gets one [`Down`] when its incarnation ends, at once if it
    /// has ended already. The `Down` goes out without waiting (the port is
    /// unbounded). For an isolate watching another, see
    /// [`Context::monitor`](crate::Context::monitor).
    ///
    /// Unlike an [exit listener](Self::add_exit_listener), which hears of
    /// the isolate's final exit, a monitor is about the running incarnation:
    /// a supervised isolate's restart fires it. It stays until it fires or
    /// [`demonitor`](Self::demonitor) takes it off.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use isolates::{Context, ExitReason, Isolate, Priority};
    /// # struct Echo;
    /// # impl Isolate for Echo {
    /// #     type Args = (); type Message = u8; type Reply = u8; type Error = String;
    /// #     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Echo) }
    /// #     fn handle(&mut self, m: u8, _: &mut Context<Self>) -> Result<u8, String> { Ok(m) }
    /// # }
    /// let echo = Echo::spawn(()).unwrap();
    /// let (monitor, downs) = echo.monitor_port();
    /// echo.kill(Priority::Immediate);
    /// let down = downs.recv_timeout(Duration::from_secs(5)).unwrap();
    /// assert_eq!(down.monitor, Some(monitor));
    /// assert_eq!(down.reason, ExitReason::Killed);
    ///
    /// // Already dead: the `Down` is there at once.
    /// let (_, late) = echo.monitor_port();
    /// assert_eq!(late.try_recv().unwrap().reason, ExitReason::Killed);
    /// ```
    pub fn monitor_port(&self) -> (MonitorRef, ReceivePort<Down>) {
        let (tx, rx) = crate::port::unbounded::<Down>();
        let monitor = MonitorRef::new(self.shared.id);
        if let Err(reason) = self.shared.watch.monitor_port(monitor, tx.clone()) {
            let _ = tx.try_send(Down {
                id: self.shared.id,
                name: self.shared.name.clone(),
                reason,
                monitor: Some(monitor),
            });
        }
        (monitor, rx)
    }

    /// Takes off a monitor of this isolate set with
    /// [`monitor_port`](Self::monitor_port); returns whether it was still
    /// to fire. (An isolate's own monitors: [`Context::demonitor`](crate::Context::demonitor).)
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::{Context, Isolate, Priority};
    /// # struct Echo;
    /// # impl Isolate for Echo {
    /// #     type Args = (); type Message = u8; type Reply = u8; type Error = String;
    /// #     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Echo) }
    /// #     fn handle(&mut self, m: u8, _: &mut Context<Self>) -> Result<u8, String> { Ok(m) }
    /// # }
    /// let echo = Echo::spawn(()).unwrap();
    /// let (monitor, downs) = echo.monitor_port();
    /// assert!(echo.demonitor(&monitor));
    /// echo.kill(Priority::Immediate);
    /// echo.join(std::time::Duration::from_secs(5));
    /// assert!(downs.try_recv().is_err());
    /// ```
    pub fn demonitor(&self, monitor: &MonitorRef) -> bool {
        self.shared.watch.demonitor(monitor)
    }

    /// Stops sending the exit reason to `port` (Dart's
    /// `removeOnExitListener`); returns whether it was a listener. Every
    /// registration of the same port goes: it was registered once.
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::{Context, Isolate, Priority, ExitReason, port};
    /// # struct Echo;
    /// # impl Isolate for Echo {
    /// #     type Args = (); type Message = u8; type Reply = u8; type Error = String;
    /// #     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Echo) }
    /// #     fn handle(&mut self, m: u8, _: &mut Context<Self>) -> Result<u8, String> { Ok(m) }
    /// # }
    /// let echo = Echo::spawn(()).unwrap();
    /// let (tx, exits) = port::unbounded::<ExitReason>();
    /// echo.add_exit_listener(tx.clone());
    /// assert!(echo.remove_exit_listener(&tx));
    /// assert!(!echo.remove_exit_listener(&tx));
    /// echo.kill(Priority::Immediate);
    /// assert!(echo.join(std::time::Duration::from_secs(5)).is_some());
    /// assert!(exits.try_recv().is_err());
    /// ```
    pub fn remove_exit_listener(&self, port: &SendPort<ExitReason>) -> bool {
        self.shared.remove_exit_listener(port)
    }

    /// Sends every uncaught error (handler panic or `Err`, start failure) to
    /// `port`, whether errors are fatal or not. The isolate never waits for
    /// a listener: while `port`'s mailbox is full, errors for it are dropped
    /// (and logged); once its receiver is gone, it is forgotten. An error
    /// reaches listeners after the asker has its reply. A port added twice
    /// gets each error once, as in Dart;
    /// [`remove_error_listener`](Self::remove_error_listener) takes it off.
    /// A listener added after the isolate exited gets nothing: errors come
    /// only from a running isolate.
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::{Context, Isolate, IsolateBuilder, IsolateError, port};
    /// struct Picky;
    /// impl Isolate for Picky {
    ///     type Args = (); type Message = u8; type Reply = u8; type Error = String;
    ///     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Picky) }
    ///     fn handle(&mut self, m: u8, _: &mut Context<Self>) -> Result<u8, String> {
    ///         if m == 0 { Err("zero".into()) } else { Ok(m) }
    ///     }
    /// }
    /// let (picky, token) = IsolateBuilder::new().errors_are_fatal(false).spawn_paused::<Picky>(()).unwrap();
    /// let (tx, errors) = port::unbounded::<IsolateError>();
    /// picky.add_error_listener(tx);
    /// picky.resume(&token);
    /// picky.cast(0).unwrap();
    /// assert_eq!(errors.recv().unwrap().message, "zero");
    /// assert!(!picky.is_finished());
    /// ```
    pub fn add_error_listener(&self, port: SendPort<IsolateError>) {
        self.shared.add_error_listener(port);
    }

    /// Stops sending errors to `port` (Dart's `removeErrorListener`);
    /// returns whether it was a listener.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use isolates::{Context, Isolate, IsolateBuilder, IsolateError, port};
    /// struct Picky;
    /// impl Isolate for Picky {
    ///     type Args = (); type Message = u8; type Reply = u8; type Error = String;
    ///     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Picky) }
    ///     fn handle(&mut self, m: u8, _: &mut Context<Self>) -> Result<u8, String> {
    ///         if m == 0 { Err("zero".into()) } else { Ok(m) }
    ///     }
    /// }
    /// let picky = IsolateBuilder::new().errors_are_fatal(false).spawn::<Picky>(()).unwrap();
    /// let (tx, errors) = port::unbounded::<IsolateError>();
    /// picky.add_error_listener(tx.clone());
    /// assert!(picky.remove_error_listener(&tx));
    /// assert!(picky.ask_timeout(0, Duration::from_secs(5)).is_err());
    /// assert!(errors.try_recv().is_err());
    /// ```
    pub fn remove_error_listener(&self, port: &SendPort<IsolateError>) -> bool {
        self.shared.remove_error_listener(port)
    }

    /// Makes a handler's `Err` fatal (the default) or not, from the next
    /// message on, as Dart's `setErrorsFatal`. A panic is always fatal (see
    /// [`IsolateBuilder::errors_are_fatal`](crate::IsolateBuilder::errors_are_fatal)).
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
    /// echo.set_errors_fatal(false);
    /// ```
    pub fn set_errors_fatal(&self, fatal: bool) {
        self.shared.errors_are_fatal.store(fatal, Ordering::Relaxed);
    }

    /// Why the isolate exited, or `None` while it runs; never blocks.
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
    /// assert_eq!(echo.exit_reason(), None);
    /// ```
    pub fn exit_reason(&self) -> Option<ExitReason> {
        self.shared.exit_reason()
    }

    /// Whether the isolate has exited; never blocks.
    ///
    /// # Examples
    ///
    /// See [`IsolateHandle::add_error_listener`].
    pub fn is_finished(&self) -> bool {
        self.shared.is_closed()
    }

    /// Stops the isolate gracefully; returns at once (see
    /// [`join`](Self::join)). It handles the messages already in its
    /// mailbox, then exits [`ExitReason::Normal`] (as when its last handle
    /// is dropped). To exit without handling them, [`kill`](Self::kill) it.
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::{Context, ExitReason, Isolate};
    /// # struct Echo;
    /// # impl Isolate for Echo {
    /// #     type Args = (); type Message = u8; type Reply = u8; type Error = String;
    /// #     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Echo) }
    /// #     fn handle(&mut self, m: u8, _: &mut Context<Self>) -> Result<u8, String> { Ok(m) }
    /// # }
    /// use std::time::Duration;
    /// let echo = Echo::spawn(()).unwrap();
    /// let reply = echo.ask_pending(7);
    /// echo.stop();
    /// assert_eq!(echo.join(Duration::from_secs(5)), Some(ExitReason::Normal));
    /// assert!(echo.is_finished());
    /// assert_eq!(reply.wait(), Ok(7)); // handled before the exit
    /// ```
    pub fn stop(&self) {
        self.shared.control(Control::Stop, false);
    }

    /// Waits at most `timeout` for the isolate to exit (a process isolate:
    /// and its child to be reaped) and returns why, or `None` if not yet.
    ///
    /// # Examples
    ///
    /// See [`IsolateHandle`].
    pub fn join(&self, timeout: Duration) -> Option<ExitReason> {
        self.shared.wait_exit(crate::time::deadline_after(timeout))
    }

    /// Where the isolate is in its life; never blocks.
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::{Context, Isolate, IsolateState};
    /// # struct Echo;
    /// # impl Isolate for Echo {
    /// #     type Args = (); type Message = u8; type Reply = u8; type Error = String;
    /// #     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Echo) }
    /// #     fn handle(&mut self, m: u8, _: &mut Context<Self>) -> Result<u8, String> { Ok(m) }
    /// # }
    /// let echo = Echo::spawn(()).unwrap();
    /// echo.ask_timeout(1, std::time::Duration::from_secs(5)).unwrap();
    /// assert_eq!(echo.state(), IsolateState::Running);
    /// ```
    pub fn state(&self) -> IsolateState {
        self.shared.state()
    }

    /// The isolate's counters; never blocks.
    ///
    /// # Examples
    ///
    /// See [`IsolateStats`].
    pub fn stats(&self) -> IsolateStats {
        IsolateStats {
            messages_handled: self.shared.counters.handled.load(Ordering::Relaxed),
            errors: self.shared.counters.errors.load(Ordering::Relaxed),
            bad_messages: self.shared.counters.bad_messages.load(Ordering::Relaxed),
            dropped: self.shared.dropped(),
            queue_len: self.shared.queued(),
            busy: self.shared.busy(),
            uptime: self.shared.uptime(),
            state: self.shared.state(),
        }
    }
}

/// The reason to report when a reply channel closed without a reply.
/// Turns what came back for an ask into its result; `None` means the reply
/// slot was dropped unanswered (the isolate went away).
fn resolve_reply<I: Isolate>(
    shared: &Shared<I>,
    reply: Option<Reply<I::Reply, I::Error>>,
) -> Result<I::Reply, AskError<I::Error>> {
    match reply {
        Some(Reply::Value(envelope)) => shared
            .codecs
            .reply
            .unpack(envelope, "reply")
            .map_err(AskError::BadReply),
        Some(Reply::Failed(envelope)) => match shared.codecs.error.unpack(envelope, "error") {
            Ok(error) => Err(AskError::Failed(error)),
            Err(e) => Err(AskError::BadReply(e)),
        },
        Some(Reply::Panicked(message)) => Err(AskError::Panicked(message)),
        Some(Reply::BadMessage(e)) => Err(AskError::BadMessage(e)),
        Some(Reply::Unencodable(e)) => Err(AskError::BadReply(e)),
        Some(Reply::Dead(reason)) => Err(AskError::Dead(reason)),
        None => Err(AskError::Dead(lost_reason(shared.exit_reason()))),
    }
}

/// How long a blocking ask waits for its reply.
#[derive(Clone, Copy)]
enum Limit {
    Forever,
    Timeout(Duration),
    Deadline(Instant),
}

/// A cast that did not go into the mailbox, with its message.
enum CastRefused<M> {
    Encode(M, CodecError),
    Full(M),
    Disconnected(M),
}

fn lost_reason(reason: Option<ExitReason>) -> ExitReason {
    // A reply channel only closes empty once the isolate has exited; a
    // missing reason would mean the runtime itself failed, which we report
    // rather than hide.
    reason.unwrap_or_else(|| ExitReason::Failed("the isolate's runtime lost the reply".into()))
}

impl<I: Isolate> Clone for IsolateHandle<I> {
    fn clone(&self) -> Self {
        IsolateHandle::new(Arc::clone(&self.shared))
    }
}

impl<I: Isolate> Drop for IsolateHandle<I> {
    fn drop(&mut self) {
        if self.shared.handles.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.shared.control(Control::Orphaned, false);
        }
    }
}

impl<I: Isolate> fmt::Debug for IsolateHandle<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IsolateHandle")
            .field("name", &self.shared.name)
            .field("id", &self.shared.id)
            .field("state", &self.shared.state())
            .finish()
    }
}

impl<I: Isolate> PartialEq for IsolateHandle<I> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl<I: Isolate> Eq for IsolateHandle<I> {}
