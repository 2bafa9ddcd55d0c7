//! The isolate's thread: start, then messages and control requests until exit.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel as cb;

use super::shared::{Control, Item, Leftover, Mail, ReplyTo, Shared};
use super::timer::Due;
use super::watch::{self, Down, Ended};
use super::{Context, ExitReason, Isolate, IsolateError, IsolateState};
use crate::codec::envelope::Envelope;
use crate::invoke::{self, Invoked};
use crate::pending::Reply;
use crate::spin::Spin;
use crate::unwind;

/// Busy time, read from the clock when a run of messages starts, when it
/// ends and every [`Busy::FLUSH`] messages in a run; not twice a message: a
/// clock read costs 20–40 ns, a small message not much more. A run ends
/// when the isolate blocks, so the short spins between back-to-back
/// messages count as busy (the thread held its core) and a request/reply
/// exchange reads no clock at all. The run in progress is published (its
/// start), so [`stats`](super::IsolateHandle::stats) counts it too: a
/// caller that got its reply sees the time counted.
#[derive(Default)]
struct Busy {
    since: Option<Instant>,
    /// Messages handled since the clock was last read.
    uncounted: u32,
}

impl Busy {
    const FLUSH: u32 = 64;

    /// A message is about to be handled.
    fn tick<I: Isolate>(&mut self, shared: &Shared<I>) {
        if self.since.is_none() {
            let now = Instant::now();
            self.since = Some(now);
            shared.set_run_start(Some(now));
        } else if self.uncounted >= Self::FLUSH {
            self.count(shared);
        }
        self.uncounted += 1;
    }

    /// Adds the time since the clock was last read.
    fn count<I: Isolate>(&mut self, shared: &Shared<I>) {
        if let Some(since) = self.since {
            let now = Instant::now();
            // Moved on before the time is added: a reader in between
            // undercounts for an instant, never counts twice.
            shared.set_run_start(Some(now));
            shared.add_busy(now - since);
            self.since = Some(now);
            self.uncounted = 0;
        }
    }

    /// The isolate is about to wait (or exit): the run ends.
    fn stop<I: Isolate>(&mut self, shared: &Shared<I>) {
        if self.uncounted > 0 {
            self.count(shared);
        }
        if self.since.take().is_some() {
            shared.set_run_start(None);
        }
    }
}

/// What a step of the loop decided.
type Exit = Option<ExitReason>;

/// What handles the messages: the state, or a child process that has it.
enum Body<I: Isolate> {
    Local(I),
    /// The run loop's `child` has it.
    #[cfg(target_os = "linux")]
    Child,
}

struct RunLoop<I: Isolate> {
    shared: Arc<Shared<I>>,
    control_rx: cb::Receiver<Control>,
    mailbox_rx: cb::Receiver<Mail<I>>,
    paused: HashSet<u64>,
    orphaned: bool,
    /// Stopped by a handle: exit once the mailbox is empty.
    stopped: bool,
    /// A message taken from the mailbox but not handled yet, because a
    /// control request sent before it (a pause, a kill) must go first.
    held: Option<Mail<I>>,
    /// `Down`s for [`Isolate::down`], taken in by `apply` (maybe while
    /// paused or before `start`) and handled between messages.
    downs: VecDeque<Down>,
    ctx: Context<I>,
    /// A process isolate's first message, sent behind the start frame: it
    /// is the current message once the child has started.
    #[cfg(target_os = "linux")]
    first: Option<Unpacked<I>>,
    /// A process isolate's child, started by `spawn` (or why it could not
    /// be).
    #[cfg(target_os = "linux")]
    launched: Prelaunched,
}

/// A process isolate's child started before its thread (see [`prelaunch`]).
#[cfg(target_os = "linux")]
pub(super) type Prelaunched = Option<Result<super::body::Launched, super::Crash>>;
/// Nothing is started before the thread off Linux.
#[cfg(not(target_os = "linux"))]
pub(super) type Prelaunched = ();

/// Starts a process isolate's child on the caller's thread, before the
/// isolate's thread: the child's `exec` and the thread's start overlap.
/// Not for an isolate spawned paused (nothing runs before it is resumed).
#[cfg(target_os = "linux")]
pub(super) fn prelaunch<I: Isolate>(shared: &Arc<Shared<I>>) -> Prelaunched {
    let spec = shared.process.as_ref()?;
    Some(super::body::RemoteBody::spawn_child(shared, spec))
}

/// Nothing is started before the thread off Linux.
#[cfg(not(target_os = "linux"))]
pub(super) fn prelaunch<I: Isolate>(_: &Arc<Shared<I>>) -> Prelaunched {}

/// A message taken out of its envelope, and where its reply goes.
#[cfg(target_os = "linux")]
type Unpacked<I> = (
    <I as Isolate>::Message,
    Option<ReplyTo<<I as Isolate>::Reply, <I as Isolate>::Error>>,
);

/// What woke a waiting isolate.
enum Woke<I: Isolate> {
    Mail(Mail<I>),
    /// A control request is waiting.
    Control,
    /// A timer is due.
    Timer,
}

/// Runs an isolate to its end on the current thread.
pub(super) fn run<I: Isolate>(
    shared: Arc<Shared<I>>,
    control_rx: cb::Receiver<Control>,
    args: Envelope<I::Args>,
    paused: Option<u64>,
    held: Option<Mail<I>>,
    incarnation: u64,
    launched: Prelaunched,
) {
    let span =
        tracing::debug_span!(target: "isolates", "isolate", name = %shared.name, id = shared.id);
    let _entered = span.enter();
    shared.holding.store(held.is_some(), Ordering::Relaxed);
    let mut run_loop = RunLoop {
        mailbox_rx: shared.mailbox_rx.clone(),
        ctx: Context::new(Arc::clone(&shared), Some(incarnation)),
        downs: VecDeque::new(),
        shared: Arc::clone(&shared),
        control_rx,
        paused: paused.into_iter().collect(),
        orphaned: false,
        stopped: false,
        held,
        #[cfg(target_os = "linux")]
        first: None,
        #[cfg(target_os = "linux")]
        launched,
    };
    #[cfg(not(target_os = "linux"))]
    let () = launched;
    // User code runs under `catch`, so the loop itself should not unwind;
    // if it ever does, the isolate must still be closed, or its callers
    // would wait forever.
    let guard = CloseOnUnwind(&shared);
    let reason = run_loop.run(args);
    std::mem::forget(guard);
    // Timers, monitors set, names: nothing of this incarnation survives it.
    run_loop.ctx.timers.cancel_all();
    for (monitor, peer) in run_loop.ctx.watching.drain() {
        if let Some(peer) = peer.upgrade() {
            peer.watch().demonitor(&monitor);
        }
    }
    let ended = end(&shared, &reason);
    let RunLoop {
        control_rx, held, ..
    } = run_loop;
    // A supervised isolate keeps its mailbox for the next incarnation: its
    // supervisor decides between restart and the end.
    let leftover = Leftover::new::<I>(control_rx, held);
    if let Some(leftover) = shared.exit_to_supervisor(reason.clone(), leftover) {
        // Close before the loop's receivers drop: queued asks get the reason.
        shared.close(reason.clone());
        if let (_, Some(item)) = leftover.into_parts::<I>() {
            shared.discard(item);
        }
    }
    // Told last: whoever hears of the exit finds the isolate closed.
    watch::tell(&*shared, ended, &reason);
}

/// An incarnation whose thread could not start ends at once: whoever
/// watched it is told.
pub(super) fn abandon<I: Isolate>(shared: &Shared<I>, reason: &ExitReason) {
    let ended = end(shared, reason);
    watch::tell(shared, ended, reason);
}

/// Ends the incarnation's table: no monitor or link can be added to it
/// from here on, and its names are forgotten.
fn end<I: Isolate>(shared: &Shared<I>, reason: &ExitReason) -> Ended {
    let ended = shared.watch.end(reason);
    super::registry::forget(shared.id, &ended.names);
    ended
}

struct CloseOnUnwind<'a, I: Isolate>(&'a Shared<I>);

impl<I: Isolate> Drop for CloseOnUnwind<'_, I> {
    fn drop(&mut self) {
        let reason =
            ExitReason::Panicked("the isolate's run loop panicked (a bug in isolates)".into());
        let ended = end(self.0, &reason);
        self.0.close(reason.clone());
        watch::tell(self.0, ended, &reason);
    }
}

impl<I: Isolate> RunLoop<I> {
    fn run(&mut self, args: Envelope<I::Args>) -> ExitReason {
        tracing::debug!(target: "isolates", "isolate spawned");
        // Paused here only if spawned paused: then no child was started
        // for it yet (`prelaunch`).
        if let Some(reason) = self.wait_while_paused() {
            self.shared.mark_started();
            return reason;
        }
        let started = self.start(args);
        self.shared.mark_started();
        let mut state = match started {
            Ok(state) => state,
            Err(reason) => return reason,
        };
        self.shared.set_state(IsolateState::Running);
        let reason = if self.ctx.stop_requested {
            ExitReason::Normal
        } else {
            self.serve(&mut state)
        };
        match state {
            Body::Local(mut state) => {
                let _ = unwind::catch(|| state.stopping(&reason));
                let _ = unwind::catch(move || drop(state));
            }
            #[cfg(target_os = "linux")]
            Body::Child => {
                // Its `stopping` runs in the child.
                let child = self.shared.conn.lock().take();
                if let Some(child) = child {
                    child.end(&self.shared, &reason);
                }
                self.shared.set_child_kill(None);
            }
        }
        reason
    }

    /// Decodes the arguments and runs `start` (in a child process, for a
    /// process isolate).
    fn start(&mut self, args: Envelope<I::Args>) -> Result<Body<I>, ExitReason> {
        self.shared.set_state(IsolateState::Starting);
        let args = match self.shared.codecs.args.unpack(args, "start argument") {
            Ok(args) => args,
            Err(e) => {
                return Err(ExitReason::Failed(format!(
                    "start arguments could not be decoded: {e}"
                )));
            }
        };
        #[cfg(target_os = "linux")]
        let shared = Arc::clone(&self.shared);
        #[cfg(target_os = "linux")]
        if let Some(spec) = &shared.process {
            let launched = self.launched.take();
            let started = super::body::RemoteBody::launch(&shared, spec, args, launched).and_then(
                |mut child| {
                    self.send_first(&mut child);
                    child.started(&shared, spec)
                },
            );
            return match started {
                Ok(child) => {
                    *self.shared.conn.lock() = Some(child);
                    Ok(Body::Child)
                }
                Err(reason) => {
                    // A first message sent was not handled: it stays queued.
                    if let Some((msg, reply)) = self.first.take() {
                        self.hold(Item {
                            envelope: Envelope::Moved(msg),
                            reply,
                        });
                    }
                    self.shared.set_child_kill(None);
                    if !matches!(reason, ExitReason::Killed) {
                        self.shared.report_error(IsolateError {
                            message: reason.to_string(),
                            stack: String::new(),
                        });
                    }
                    Err(reason)
                }
            };
        }
        let ctx = &mut self.ctx;
        match unwind::catch(|| I::start(args, ctx)) {
            // `Context::exit`: no error, a normal end.
            Err(_) if self.ctx.exiting => Err(ExitReason::Normal),
            Ok(Ok(state)) => Ok(Body::Local(state)),
            Ok(Err(error)) => {
                let message = unwind::describe(&error);
                self.shared.report_error(IsolateError {
                    message: message.clone(),
                    stack: String::new(),
                });
                Err(ExitReason::Failed(message))
            }
            Err(caught) => {
                self.shared.report_error(IsolateError {
                    message: caught.message.clone(),
                    stack: caught.stack,
                });
                Err(ExitReason::Panicked(caught.message))
            }
        }
    }

    /// Sends a process isolate's first message right behind the start frame,
    /// while its child starts: the child finds it waiting once `start` has
    /// run, which saves a round trip (the Started frame, then the message).
    /// Only a message already queued with no control request ahead of it
    /// (a control request goes first, as in [`serve`](Self::serve)): every
    /// request is in the control channel before its sender returns, so one
    /// sent before the message is seen here. (Not the wake flag: a resume
    /// taken while paused leaves it raised.)
    #[cfg(target_os = "linux")]
    fn send_first(&mut self, child: &mut super::body::RemoteBody<I>) {
        if self.held.is_some() || !self.control_rx.is_empty() {
            return;
        }
        let Ok(item) = self.mailbox_rx.try_recv() else {
            return;
        };
        let Item {
            envelope: Envelope::Moved(msg),
            reply,
        } = item
        else {
            return self.hold(item);
        };
        // A control request sent before this message goes first.
        if !self.control_rx.is_empty() || !child.send_first(&msg, reply.is_none()) {
            return self.hold(Item {
                envelope: Envelope::Moved(msg),
                reply,
            });
        }
        self.first = Some((msg, reply));
    }

    /// Keeps a message taken from the mailbox for later.
    #[cfg(target_os = "linux")]
    fn hold(&mut self, item: Mail<I>) {
        self.held = Some(item);
        self.shared.holding.store(true, Ordering::Relaxed);
    }

    /// Serves control requests only, until no pause holds.
    fn wait_while_paused(&mut self) -> Exit {
        while !self.paused.is_empty() {
            self.shared.set_state(IsolateState::Paused);
            if let Some(reason) = self.urgent() {
                return Some(reason);
            }
            // Nobody is left to resume it. (A stop waits for a resume: the
            // messages already queued are handled first, as `stop` says.)
            if self.nobody_left() {
                return Some(ExitReason::Normal);
            }
            match self.control_rx.recv() {
                Ok(control) => {
                    if let Some(reason) = self.apply(control) {
                        return Some(reason);
                    }
                }
                // The shared record keeps a sender: cannot happen.
                Err(_) => return Some(ExitReason::Killed),
            }
        }
        None
    }

    fn serve(&mut self, state: &mut Body<I>) -> ExitReason {
        let mut busy = Busy::default();
        // The message sent behind a child's start frame is the current one.
        #[cfg(target_os = "linux")]
        if let Some((msg, reply)) = self.first.take() {
            busy.tick(&self.shared);
            if let Some(reason) = self.handle_msg(state, msg, reply) {
                busy.stop(&self.shared);
                return reason;
            }
        }
        let reason = self.serve_until_exit(state, &mut busy);
        busy.stop(&self.shared);
        reason
    }

    fn serve_until_exit(&mut self, state: &mut Body<I>, busy: &mut Busy) -> ExitReason {
        loop {
            if let Some(reason) = self.urgent() {
                return reason;
            }
            // Control requests flag themselves, so a message costs one load
            // here unless one is waiting.
            if self.shared.take_wake() {
                while let Ok(control) = self.control_rx.try_recv() {
                    // An immediate request sent meanwhile still goes first.
                    if let Some(reason) = self.urgent() {
                        return reason;
                    }
                    if let Some(reason) = self.apply(control) {
                        return reason;
                    }
                    // A pause is in force from here: requests after it (a
                    // ping) are answered paused, as the state says.
                    if !self.paused.is_empty() {
                        busy.stop(&self.shared);
                        if let Some(reason) = self.wait_while_paused() {
                            return reason;
                        }
                        self.shared.set_state(IsolateState::Running);
                    }
                }
            }
            if self.held.is_none() {
                // `Down`s and due timers go between messages, as casts.
                if let Some(down) = self.downs.pop_front() {
                    busy.tick(&self.shared);
                    if let Some(reason) = self.down(state, down) {
                        return reason;
                    }
                    continue;
                }
                // No clock is read for timers while there are none.
                if !self.ctx.timers.is_empty()
                    && let Some(due) = self.ctx.timers.pop_due(Instant::now())
                {
                    busy.tick(&self.shared);
                    if let Some(reason) = self.fire(state, due) {
                        return reason;
                    }
                    continue;
                }
            }
            let next = match self.held.take() {
                Some(item) => {
                    self.shared.holding.store(false, Ordering::Relaxed);
                    Ok(item)
                }
                None => self.mailbox_rx.try_recv(),
            };
            let item = match next {
                Ok(item) => item,
                Err(_) => {
                    if self.is_orphaned() {
                        return ExitReason::Normal;
                    }
                    match self.wait_for_mail(busy) {
                        Woke::Mail(item) => item,
                        // A control request came, or a timer is due: look
                        // at it first.
                        Woke::Control | Woke::Timer => continue,
                    }
                }
            };
            // A control request flagged before this message was sent goes
            // first (a pause holds the message; a kill fails it).
            if self.shared.wake_pending() {
                self.held = Some(item);
                self.shared.holding.store(true, Ordering::Relaxed);
                continue;
            }
            let Item { envelope, reply } = item;
            busy.tick(&self.shared);
            if let Some(reason) = self.handle(state, envelope, reply) {
                return reason;
            }
        }
    }

    fn is_orphaned(&self) -> bool {
        self.stopped || self.nobody_left()
    }

    /// Every handle is gone: nobody can send, resume or stop it any more.
    fn nobody_left(&self) -> bool {
        self.orphaned && self.shared.handles.load(Ordering::SeqCst) == 0
    }

    /// Waits for the next message, or returns `None` when a control request
    /// is waiting.
    ///
    /// Spins briefly first, as crossbeam does ([`Spin`]): a request/reply
    /// partner often answers within that. A longer spin, or one timed by
    /// the clock, would take the core from the thread that is to send on
    /// a loaded machine. Then it blocks on the mailbox and the control
    /// channel together: waiting on two channels costs microseconds, paid
    /// only once idle.
    ///
    /// The run of messages (see [`Busy`]) ends only when it blocks: a
    /// message caught while spinning continues it, so back-to-back
    /// messages read no clock.
    fn wait_for_mail(&mut self, busy: &mut Busy) -> Woke<I> {
        let mut spin = Spin::default();
        // A process isolate parks at once: a message to it costs a socket
        // round trip anyway, and a parked isolate lets a blocking `ask`
        // talk to the child directly, without two thread hops.
        #[cfg(target_os = "linux")]
        let spins = self.shared.process.is_none();
        #[cfg(not(target_os = "linux"))]
        let spins = true;
        while spins && !spin.is_completed() {
            if let Ok(item) = self.mailbox_rx.try_recv() {
                return Woke::Mail(item);
            }
            if self.shared.wake_pending() {
                return Woke::Control;
            }
            spin.snooze();
        }
        busy.stop(&self.shared);
        // Parks until the earliest timer at most; with none, until woken.
        let deadline = self.ctx.timers.next_deadline();
        let mut select = cb::Select::new();
        let mail = select.recv(&self.mailbox_rx);
        select.recv(&self.control_rx);
        loop {
            // Parked: a blocking `ask` may use a process isolate's child
            // directly meanwhile (`remote::direct_ask`).
            #[cfg(target_os = "linux")]
            let process = self.shared.process.is_some();
            #[cfg(target_os = "linux")]
            if process {
                self.shared.taking.store(false, Ordering::SeqCst);
            }
            let ready = match deadline {
                None => Some(select.ready()),
                Some(deadline) => select.ready_deadline(deadline).ok(),
            };
            #[cfg(target_os = "linux")]
            if process {
                self.shared.taking.store(true, Ordering::SeqCst);
            }
            match ready {
                None => return Woke::Timer,
                Some(ready) if ready == mail => {
                    if let Ok(item) = self.mailbox_rx.try_recv() {
                        return Woke::Mail(item);
                    }
                }
                Some(_) => return Woke::Control,
            }
            // Another receiver (a drain) took the message: wait again.
        }
    }

    /// Applies immediate-priority requests, if any.
    fn urgent(&mut self) -> Exit {
        for control in self.shared.take_urgent()? {
            if let Some(reason) = self.apply(control) {
                return Some(reason);
            }
        }
        None
    }

    fn apply(&mut self, control: Control) -> Exit {
        match control {
            Control::Kill => return Some(ExitReason::Killed),
            Control::Pause(token) => {
                self.paused.insert(token);
            }
            Control::Resume(token) => {
                self.paused.remove(&token);
            }
            Control::Ping(reply) => reply.send(Reply::Value(Envelope::unit())),
            Control::Orphaned => self.orphaned = true,
            Control::Stop => self.stopped = true,
            Control::Wake => {}
            Control::Signal(signal) => {
                // Meant for an incarnation that has ended.
                if Some(signal.incarnation) != self.ctx.incarnation {
                    return None;
                }
                let down = signal.down;
                if signal.link {
                    if self.ctx.trap_exits {
                        self.downs.push_back(down);
                    } else if !down.reason.is_normal() {
                        return Some(down.reason.linked(down.id, &down.name));
                    }
                } else if down
                    .monitor
                    .is_some_and(|monitor| self.ctx.watching.remove(&monitor).is_some())
                {
                    // Only a monitor still set: not one taken off since.
                    self.downs.push_back(down);
                }
            }
            #[cfg(target_os = "linux")]
            Control::Child { child } => {
                let mut conn = self.shared.conn.lock();
                // Notices of an earlier incarnation's child are stale.
                if let Some(body) = conn.as_mut().filter(|c| c.id == child) {
                    return body.look(&self.shared);
                }
            }
            #[cfg(not(target_os = "linux"))]
            Control::Child { .. } => {}
        }
        None
    }

    /// Runs [`Isolate::down`], as a cast's handler.
    #[cfg_attr(not(target_os = "linux"), allow(irrefutable_let_patterns))]
    fn down(&mut self, state: &mut Body<I>, down: Down) -> Exit {
        let Body::Local(state) = state else {
            // A process isolate's state is in its child, which sets no
            // monitor and traps no exit: no `Down` is taken in for it.
            return None;
        };
        let ctx = &mut self.ctx;
        let invoked = match invoke::call(|| state.down(down, ctx)) {
            Invoked::Panicked(_) if self.ctx.exiting => return Some(ExitReason::Normal),
            Invoked::Value(()) => return self.ctx.stop_requested.then_some(ExitReason::Normal),
            Invoked::Failed(error) => Invoked::Failed(error),
            Invoked::Panicked(caught) => Invoked::Panicked(caught),
            Invoked::BadInput(e) => Invoked::BadInput(e),
            Invoked::Unencodable(e) => Invoked::Unencodable(e),
        };
        self.settle(invoked, None)
    }

    /// Delivers a due timer's message, as a cast.
    fn fire(&mut self, state: &mut Body<I>, due: Due<I::Message>) -> Exit {
        match due {
            Due::Once(msg) | Due::Tick(Ok(msg)) => self.handle(state, Envelope::Moved(msg), None),
            Due::Tick(Err(message)) => {
                let message = format!("cloning an interval's message panicked: {message}");
                self.settle(
                    Invoked::Panicked(crate::unwind::Caught {
                        message,
                        stack: String::new(),
                    }),
                    None,
                )
            }
        }
    }

    fn handle(
        &mut self,
        state: &mut Body<I>,
        envelope: Envelope<I::Message>,
        reply: Option<ReplyTo<I::Reply, I::Error>>,
    ) -> Exit {
        let shared = &*self.shared;
        let msg = match shared.codecs.message.unpack(envelope, "message") {
            Ok(msg) => msg,
            Err(e) => return self.bad_message(e, reply),
        };
        self.handle_msg(state, msg, reply)
    }

    fn handle_msg(
        &mut self,
        state: &mut Body<I>,
        msg: I::Message,
        reply: Option<ReplyTo<I::Reply, I::Error>>,
    ) -> Exit {
        #[cfg(target_os = "linux")]
        let shared = &*self.shared;
        let _span = tracing::trace_span!(target: "isolates", "message").entered();
        let invoked = match state {
            Body::Local(state) => {
                let ctx = &mut self.ctx;
                match invoke::call(|| state.handle(msg, ctx)) {
                    Invoked::Panicked(_) if self.ctx.exiting => {
                        // `Context::exit`: the isolate ends here, normally.
                        self.count_handled();
                        if let Some(reply) = reply {
                            reply.send(Reply::Dead(ExitReason::Normal));
                        }
                        return Some(ExitReason::Normal);
                    }
                    invoked => invoked,
                }
            }
            #[cfg(target_os = "linux")]
            Body::Child => {
                use super::remote::Outcome;
                let mut conn = shared.conn.lock();
                let Some(child) = conn.as_mut() else {
                    return Some(ExitReason::Crashed(super::Crash::Protocol(
                        "the child is gone".into(),
                    )));
                };
                let outcome = if child.sent_first {
                    // Sent behind the start frame: only its answer to read.
                    child.call_first(shared)
                } else {
                    // What a direct ask left: an exit, an answer still to come.
                    match child.look(shared) {
                        Some(reason) => Outcome::Dead(reason),
                        None => child.call(shared, &msg, reply.is_none()),
                    }
                };
                drop(conn);
                match outcome {
                    Outcome::Called(invoked) => invoked,
                    Outcome::Done => {
                        self.count_handled();
                        return self.ctx.stop_requested.then_some(ExitReason::Normal);
                    }
                    Outcome::Dead(reason) => {
                        // Not handled: it stays queued, as for an isolate
                        // that exits with messages in its mailbox.
                        self.held = Some(Item {
                            envelope: Envelope::Moved(msg),
                            reply,
                        });
                        shared.holding.store(true, Ordering::Relaxed);
                        return Some(reason);
                    }
                    Outcome::Gone(reason) => {
                        // It died handling this one: the sender is told.
                        if let Some(reply) = reply {
                            reply.send(Reply::Dead(reason.clone()));
                        }
                        if !matches!(reason, ExitReason::Killed) {
                            shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                            shared.report_error(IsolateError {
                                message: reason.to_string(),
                                stack: String::new(),
                            });
                        }
                        return Some(reason);
                    }
                }
            }
        };
        self.finish(invoked, reply)
    }

    /// Only the isolate's thread writes the count: a plain load and store,
    /// not a locked read-modify-write on every message. (A process
    /// isolate's callers count their direct asks too: an atomic add.)
    fn count_handled(&self) {
        let handled = &self.shared.counters.handled;
        #[cfg(target_os = "linux")]
        if self.shared.process.is_some() {
            handled.fetch_add(1, Ordering::Relaxed);
            return;
        }
        handled.store(handled.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// A message that could not be taken: dropped, its sender told.
    fn bad_message(
        &self,
        e: crate::error::CodecError,
        reply: Option<ReplyTo<I::Reply, I::Error>>,
    ) -> Exit {
        self.shared
            .counters
            .bad_messages
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(target: "isolates", error = %e, "dropped a message that failed to decode");
        if let Some(reply) = reply {
            reply.send(Reply::BadMessage(e));
        }
        None
    }

    /// Replies with what the handler did; an error or panic may end the
    /// isolate.
    fn finish(
        &mut self,
        invoked: Invoked<I::Reply, I::Error>,
        reply: Option<ReplyTo<I::Reply, I::Error>>,
    ) -> Exit {
        let invoked = match invoked {
            // It did not reach the handler: not counted as handled.
            Invoked::BadInput(e) => return self.bad_message(e, reply),
            invoked => invoked,
        };
        self.count_handled();
        self.settle(invoked, reply)
    }

    /// [`finish`](Self::finish) without counting a handled message: for
    /// what did not come from the mailbox (a `Down`, a timer's clone).
    fn settle(
        &mut self,
        invoked: Invoked<I::Reply, I::Error>,
        reply: Option<ReplyTo<I::Reply, I::Error>>,
    ) -> Exit {
        let shared = &*self.shared;
        // What listeners and the supervisor hear, taken before the error
        // moves into the reply.
        let fault = match &invoked {
            Invoked::Failed(error) => {
                let message = unwind::describe(error);
                Some((ExitReason::Failed(message.clone()), message, String::new()))
            }
            Invoked::Panicked(caught) => Some((
                ExitReason::Panicked(caught.message.clone()),
                caught.message.clone(),
                caught.stack.clone(),
            )),
            _ => None,
        };
        if let Some(reply) = reply {
            reply.send(
                invoked
                    .pack(&shared.codecs.reply, &shared.codecs.error)
                    .into_reply(),
            );
        }
        if let Some((reason, message, stack)) = fault {
            shared.counters.errors.fetch_add(1, Ordering::Relaxed);
            shared.report_error(IsolateError { message, stack });
            // A panic always ends the isolate: its state may be half-changed,
            // so it is not used again (a supervisor restarts it from its
            // arguments). Only an `Err` may be let go.
            if matches!(reason, ExitReason::Panicked(_))
                || shared.errors_are_fatal.load(Ordering::Relaxed)
            {
                return Some(reason);
            }
        }
        self.ctx.stop_requested.then_some(ExitReason::Normal)
    }
}
