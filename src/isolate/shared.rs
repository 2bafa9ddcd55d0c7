//! What an isolate's handles and its thread share: channels, flags, counters
//! and the exit record. Never the isolate's state.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel as cb;
use parking_lot::{Condvar, Mutex};

use super::watch::{Peer, Signal, Watch};
use super::{ExitReason, Isolate, IsolateError, IsolateState};
use crate::codec::envelope::{Envelope, Erased};
use crate::oneshot;
use crate::pending::Reply;
use crate::port::{DynCodec, SendPort};

/// What a mailbox holds: a message's bytes and, for an ask, where the reply
/// goes.
pub(super) struct Item<M, R, E> {
    pub(super) envelope: Envelope<M>,
    pub(super) reply: Option<ReplyTo<R, E>>,
}

/// Where an ask's reply goes.
pub(super) enum ReplyTo<R, E> {
    /// A blocking `ask` waits on a slot of its own type: nothing is boxed.
    Typed(oneshot::Sender<Reply<R, E>>),
    /// A [`Pending`](crate::Pending) waits on an erased slot.
    Erased(oneshot::Sender<Reply>),
}

impl<R: Send + 'static, E: Send + 'static> ReplyTo<R, E> {
    pub(super) fn send(self, reply: Reply<R, E>) {
        match self {
            ReplyTo::Typed(tx) => tx.send(reply),
            ReplyTo::Erased(tx) => tx.send(reply.erase()),
        }
    }
}

/// What an isolate `I`'s mailbox holds.
pub(super) type Mail<I> =
    Item<<I as Isolate>::Message, <I as Isolate>::Reply, <I as Isolate>::Error>;

/// Told of each ended incarnation of a supervised isolate.
pub(crate) type ExitHook = Box<dyn Fn(ExitReason, Leftover) + Send + Sync>;

/// How long a sender waits for room in a bounded mailbox.
#[derive(Clone, Copy)]
pub(super) enum Wait {
    Block,
    No,
    Until(Instant),
}

/// Why a message was not put in the mailbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// No room (now, or before the deadline).
    Full,
    /// The isolate has exited.
    Disconnected,
}

/// A control request, handled between messages in the order sent.
pub(super) enum Control {
    Kill,
    Pause(u64),
    Resume(u64),
    Ping(oneshot::Sender<Reply>),
    /// The last handle was dropped.
    Orphaned,
    /// [`IsolateHandle::stop`](crate::IsolateHandle::stop): exit once the
    /// mailbox is empty.
    Stop,
    /// Look at the urgent queue.
    Wake,
    /// Look at the connection to the process isolate's child `child`: it
    /// exited, or a direct ask left something to settle.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Child {
        child: u64,
    },
    /// A monitored or linked isolate exited.
    Signal(Signal),
}

/// The codecs of an isolate's four message types.
pub(super) struct Codecs<I: Isolate> {
    pub(super) args: DynCodec<I::Args>,
    pub(super) message: DynCodec<I::Message>,
    pub(super) reply: DynCodec<I::Reply>,
    pub(super) error: DynCodec<I::Error>,
}

#[derive(Default)]
struct ExitRecord {
    reason: Option<ExitReason>,
    exit_listeners: Vec<SendPort<ExitReason>>,
    /// The ports told the exit (by [`SendPort::id`], so that remembering
    /// them keeps no channel open): one added again is not told twice.
    told: Vec<u64>,
    error_listeners: Vec<SendPort<IsolateError>>,
}

/// The isolate's own counters, on cache lines of their own: a sender
/// reading `closed` or the mailbox must not pull in a line the isolate
/// writes on every message (measured: that sharing cost about 200 ns an ask).
#[derive(Default)]
#[repr(align(128))]
pub(super) struct Counters {
    pub(super) handled: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) bad_messages: AtomicU64,
    pub(super) busy_nanos: AtomicU64,
    /// When the run of messages in progress started, in ns since the spawn
    /// plus one; 0 when the isolate is not running messages.
    pub(super) run_start: AtomicU64,
}

pub(super) struct Shared<I: Isolate> {
    pub(super) id: u64,
    pub(super) name: String,
    pub(super) codecs: Codecs<I>,
    pub(super) mailbox_tx: cb::Sender<Mail<I>>,
    /// Kept so whoever sees the isolate closed can drain what is left.
    pub(super) mailbox_rx: cb::Receiver<Mail<I>>,
    pub(super) control_tx: cb::Sender<Control>,
    /// Where an ended incarnation goes when supervised.
    supervisor: Mutex<Option<ExitHook>>,
    /// Incarnations whose `start` has returned, for a supervisor that
    /// starts children one after another.
    starts: Mutex<u64>,
    started: Condvar,
    /// Immediate-priority requests, looked at before anything else.
    urgent: Mutex<VecDeque<Control>>,
    urgent_flag: AtomicBool,
    /// A control request was sent since the isolate last looked: it checks
    /// this flag between messages instead of polling the control queue.
    wake_pending: AtomicBool,
    /// An immediate kill was requested: handlers may check it.
    pub(super) kill_requested: AtomicBool,
    pub(super) errors_are_fatal: AtomicBool,
    /// Set once the isolate has exited for good; senders check it.
    closed: AtomicBool,
    pub(super) handles: AtomicUsize,
    state: AtomicU8,
    exit: Mutex<ExitRecord>,
    exited: Condvar,
    /// Written by the isolate on every message: kept off the lines senders
    /// touch.
    pub(super) counters: Counters,
    dropped: AtomicU64,
    spawned_at: Instant,
    /// The isolate took a message out of the mailbox but holds it back for
    /// a control request sent before it: still queued, as callers see it.
    pub(super) holding: AtomicBool,
    /// Who monitors it, who it is linked to, the names it has.
    pub(super) watch: Watch,
    /// A process isolate: how it runs in a child.
    #[cfg(target_os = "linux")]
    pub(super) process: Option<super::body::ProcessSpec<I>>,
    /// Kills the running child of a process isolate.
    #[cfg(target_os = "linux")]
    child_kill: Mutex<Option<std::sync::Arc<crate::backend::process::parent::KillSwitch>>>,
    /// The last child of a process isolate that an immediate kill let die
    /// without its thread waiting for it: `join` waits for it and reaps
    /// it (see `ChildProcess::let_die`). Kept (its pidfd open) until a
    /// `join` has seen it gone, or the record is dropped.
    #[cfg(target_os = "linux")]
    dying: Mutex<Option<crate::backend::process::parent::Dying>>,
    /// The running child of a process isolate: used by the isolate's
    /// thread for each message, and by a blocking `ask` directly while the
    /// thread is parked (see `remote::direct_ask`).
    #[cfg(target_os = "linux")]
    pub(super) conn: Mutex<Option<super::body::RemoteBody<I>>>,
    /// The isolate's thread may be taking a message out of its mailbox:
    /// false only while it is parked waiting for one.
    #[cfg(target_os = "linux")]
    pub(super) taking: AtomicBool,
}

impl<I: Isolate> Shared<I> {
    pub(super) fn new(
        id: u64,
        name: String,
        codecs: Codecs<I>,
        mailbox: (cb::Sender<Mail<I>>, cb::Receiver<Mail<I>>),
        control_tx: cb::Sender<Control>,
        errors_are_fatal: bool,
        #[cfg(target_os = "linux")] process: Option<super::body::ProcessSpec<I>>,
    ) -> Self {
        Shared {
            id,
            name,
            codecs,
            mailbox_tx: mailbox.0,
            mailbox_rx: mailbox.1,
            control_tx,
            supervisor: Mutex::new(None),
            starts: Mutex::new(0),
            started: Condvar::new(),
            urgent: Mutex::new(VecDeque::new()),
            urgent_flag: AtomicBool::new(false),
            wake_pending: AtomicBool::new(false),
            kill_requested: AtomicBool::new(false),
            errors_are_fatal: AtomicBool::new(errors_are_fatal),
            closed: AtomicBool::new(false),
            handles: AtomicUsize::new(0),
            state: AtomicU8::new(IsolateState::Starting as u8),
            exit: Mutex::new(ExitRecord::default()),
            exited: Condvar::new(),
            counters: Counters::default(),
            dropped: AtomicU64::new(0),
            spawned_at: Instant::now(),
            holding: AtomicBool::new(false),
            watch: Watch::default(),
            #[cfg(target_os = "linux")]
            process,
            #[cfg(target_os = "linux")]
            child_kill: Mutex::new(None),
            #[cfg(target_os = "linux")]
            dying: Mutex::new(None),
            #[cfg(target_os = "linux")]
            conn: Mutex::new(None),
            #[cfg(target_os = "linux")]
            taking: AtomicBool::new(true),
        }
    }

    /// Sets (or clears) the switch that kills the running child.
    #[cfg(target_os = "linux")]
    pub(super) fn set_child_kill(
        &self,
        kill: Option<std::sync::Arc<crate::backend::process::parent::KillSwitch>>,
    ) {
        *self.child_kill.lock() = kill;
    }

    /// Records the child an immediate kill let die: set before the
    /// isolate is closed, so that a `join` that sees it closed finds it.
    #[cfg(target_os = "linux")]
    pub(super) fn set_dying(&self, dying: crate::backend::process::parent::Dying) {
        *self.dying.lock() = Some(dying);
    }

    /// Waits until `deadline` for the child an immediate kill let die (if
    /// any) to be reaped; whether it is.
    #[cfg(target_os = "linux")]
    fn wait_reaped(&self, deadline: Option<Instant>) -> bool {
        let Some(dying) = self.dying.lock().clone() else {
            return true;
        };
        if !dying.wait(deadline) {
            return false;
        }
        // Gone: later joins need not look (unless another child took its
        // place meanwhile).
        let mut slot = self.dying.lock();
        if slot.as_ref().is_some_and(|d| d.is(&dying)) {
            *slot = None;
        }
        true
    }

    /// A pause token no other pause of any isolate has: as Dart's
    /// capabilities, a token of one isolate does nothing to another.
    pub(super) fn new_token() -> u64 {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    pub(super) fn state(&self) -> IsolateState {
        match self.state.load(Ordering::Acquire) {
            0 => IsolateState::Starting,
            1 => IsolateState::Running,
            2 => IsolateState::Paused,
            _ => IsolateState::Exited,
        }
    }

    pub(super) fn set_state(&self, state: IsolateState) {
        self.state.store(state as u8, Ordering::Release);
    }

    pub(super) fn uptime(&self) -> Duration {
        self.spawned_at.elapsed()
    }

    pub(super) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Sends a control request; immediate ones jump the queue.
    ///
    /// The request goes on the control channel (which wakes an isolate
    /// blocked on its mailbox and control channel), then the flag the
    /// isolate checks between messages is raised: in that order, so an
    /// isolate that sees the flag finds the request.
    pub(super) fn control(&self, request: Control, immediate: bool) {
        if immediate {
            self.urgent.lock().push_back(request);
            self.urgent_flag.store(true, Ordering::SeqCst);
            let _ = self.control_tx.send(Control::Wake);
        } else {
            let _ = self.control_tx.send(request);
        }
        self.wake_pending.store(true, Ordering::SeqCst);
        // As in `push`: if the isolate closed meanwhile, nobody will
        // look at the urgent queue again; dropping what is there resolves
        // its pings with the exit reason.
        if immediate && self.is_closed() {
            drop(self.take_urgent());
        }
    }

    /// Called by the isolate between messages: whether control requests
    /// may be waiting (then the flag is cleared and it must look). One
    /// atomic load when there are none.
    pub(super) fn take_wake(&self) -> bool {
        self.wake_pending.load(Ordering::Acquire) && self.wake_pending.swap(false, Ordering::AcqRel)
    }

    /// See [`IsolateHandle::kill`](super::IsolateHandle::kill).
    pub(super) fn kill(&self, priority: super::Priority) {
        match priority {
            super::Priority::Immediate => {
                self.kill_requested.store(true, Ordering::SeqCst);
                // A process isolate's handler is stopped where it is: the
                // signal first, so that the child's exit (what a `join`
                // waits for) starts before the isolate's thread is woken.
                // A kill switch set after this looks at `kill_requested`.
                #[cfg(target_os = "linux")]
                if let Some(kill) = self.child_kill.lock().clone() {
                    kill.kill();
                }
                self.control(Control::Kill, true);
            }
            super::Priority::AfterCurrent => self.control(Control::Kill, false),
        }
    }

    /// Called by each incarnation once `start` has returned (or will not
    /// run).
    pub(super) fn mark_started(&self) {
        *self.starts.lock() += 1;
        self.started.notify_all();
    }

    /// Waits until `count` incarnations have finished starting.
    pub(super) fn wait_started(&self, count: u64) {
        let mut starts = self.starts.lock();
        while *starts < count {
            self.started.wait(&mut starts);
        }
    }

    /// Clears what a new incarnation must not inherit: the kill flag, and
    /// kills, pauses and resumes still queued for the last one. Pings, an
    /// orphan notice and a stop stay (they are about the isolate, not the
    /// incarnation: a `stop` from a handle, sent while the supervisor
    /// waited out a restart's backoff, stops the next one; only handles
    /// send it).
    pub(super) fn reset_for_restart(&self, control_rx: &cb::Receiver<Control>) {
        self.kill_requested.store(false, Ordering::SeqCst);
        let keep = |c: &Control| matches!(c, Control::Ping(_) | Control::Orphaned | Control::Stop);
        let queued: Vec<Control> = control_rx.try_iter().filter(keep).collect();
        for control in queued {
            let _ = self.control_tx.send(control);
        }
        if let Some(urgent) = self.take_urgent() {
            for control in urgent.into_iter().filter(keep) {
                self.control(control, true);
            }
        }
    }

    /// Hands an ended incarnation to the supervisor, if there is one;
    /// otherwise gives the leftover back for a final close.
    pub(super) fn exit_to_supervisor(
        &self,
        reason: ExitReason,
        leftover: Leftover,
    ) -> Option<Leftover> {
        let hook = self.supervisor.lock();
        match &*hook {
            Some(hook) => {
                self.set_state(IsolateState::Starting);
                hook(reason, leftover);
                None
            }
            None => Some(leftover),
        }
    }

    /// Puts the isolate under a supervisor: from now on an ended
    /// incarnation goes to `hook` instead of closing the isolate.
    pub(super) fn set_supervisor(&self, hook: Option<ExitHook>) {
        *self.supervisor.lock() = hook;
    }

    /// Whether a control request is flagged; does not clear the flag.
    pub(super) fn wake_pending(&self) -> bool {
        self.wake_pending.load(Ordering::Relaxed)
    }

    /// Publishes when the run of messages in progress started (`None`: no
    /// run): [`busy`](Self::busy) counts it.
    pub(super) fn set_run_start(&self, start: Option<Instant>) {
        let nanos = start.map_or(0, |s| {
            u64::try_from(s.saturating_duration_since(self.spawned_at).as_nanos())
                .unwrap_or(u64::MAX - 1)
                + 1
        });
        self.counters.run_start.store(nanos, Ordering::Relaxed);
    }

    /// Time spent handling messages, the run in progress included.
    pub(super) fn busy(&self) -> Duration {
        let counted = Duration::from_nanos(self.counters.busy_nanos.load(Ordering::Relaxed));
        match self.counters.run_start.load(Ordering::Relaxed) {
            0 => counted,
            start => {
                let start = self.spawned_at + Duration::from_nanos(start - 1);
                counted + Instant::now().saturating_duration_since(start)
            }
        }
    }

    /// Adds time the isolate spent busy.
    pub(super) fn add_busy(&self, busy: Duration) {
        let nanos = u64::try_from(busy.as_nanos()).unwrap_or(u64::MAX);
        self.counters.busy_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Takes the immediate-priority requests, if any; one atomic load when
    /// there are none.
    pub(super) fn take_urgent(&self) -> Option<VecDeque<Control>> {
        if !self.urgent_flag.load(Ordering::SeqCst) {
            return None;
        }
        let mut queue = self.urgent.lock();
        self.urgent_flag.store(false, Ordering::Release);
        Some(std::mem::take(&mut *queue))
    }

    pub(super) fn exit_reason(&self) -> Option<ExitReason> {
        self.exit.lock().reason.clone()
    }

    /// Puts a message in the mailbox, waiting for room as `wait` says; a
    /// refused message comes back with the reason.
    ///
    /// If the isolate closed meanwhile, nobody else may drain the mailbox,
    /// so the sender drains it (the message it just pushed included).
    pub(super) fn push(&self, item: Mail<I>, wait: Wait) -> Result<(), (Refused, Mail<I>)> {
        if self.is_closed() {
            return Err((Refused::Disconnected, item));
        }
        let sent = match wait {
            Wait::Block => self
                .mailbox_tx
                .send(item)
                .map_err(|cb::SendError(item)| (Refused::Disconnected, item)),
            Wait::No => self.mailbox_tx.try_send(item).map_err(|e| match e {
                cb::TrySendError::Full(item) => (Refused::Full, item),
                cb::TrySendError::Disconnected(item) => (Refused::Disconnected, item),
            }),
            Wait::Until(deadline) => {
                self.mailbox_tx
                    .send_deadline(item, deadline)
                    .map_err(|e| match e {
                        cb::SendTimeoutError::Timeout(item) => (Refused::Full, item),
                        cb::SendTimeoutError::Disconnected(item) => (Refused::Disconnected, item),
                    })
            }
        };
        if sent.is_ok() && self.is_closed() {
            self.drain();
        }
        sent
    }

    /// Messages waiting in the mailbox.
    pub(super) fn queued(&self) -> usize {
        self.mailbox_tx.len() + usize::from(self.holding.load(Ordering::Relaxed))
    }

    /// Resolves every queued ask with the exit reason and drops queued casts.
    fn drain(&self) {
        let Some(reason) = self.exit_reason() else {
            return;
        };
        for item in self.mailbox_rx.try_iter() {
            self.discard_with(item, &reason);
        }
    }

    /// Resolves one message that will never be handled, once closed.
    pub(super) fn discard(&self, item: Mail<I>) {
        // Only a held message is discarded one by one.
        self.holding.store(false, Ordering::Relaxed);
        let reason = self.exit_reason().unwrap_or(ExitReason::Killed);
        self.discard_with(item, &reason);
    }

    fn discard_with(&self, item: Mail<I>, reason: &ExitReason) {
        match item.reply {
            Some(reply) => reply.send(Reply::Dead(reason.clone())),
            None => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records the exit, tells the listeners and resolves what is queued.
    ///
    /// Ordering matters: the reason is set before `closed`, and `closed`
    /// before the drain, so a sender that pushes after the drain sees
    /// `closed` in [`after_push`](Self::after_push) and drains itself.
    pub(super) fn close(&self, reason: ExitReason) {
        let listeners = {
            let mut record = self.exit.lock();
            // A supervisor may give up on an isolate whose abandoned thread
            // ends later: the first reason stands.
            if record.reason.is_some() {
                return;
            }
            record.reason = Some(reason.clone());
            record.error_listeners.clear();
            let listeners = std::mem::take(&mut record.exit_listeners);
            record.told = listeners.iter().map(SendPort::id).collect();
            listeners
        };
        self.set_state(IsolateState::Exited);
        self.closed.store(true, Ordering::SeqCst);
        self.drain();
        // Immediate pings still queued resolve `Dead` when dropped here; the
        // ordinary ones when the control channel's receiver goes. A kill
        // stays: an incarnation closed while its thread is still in a
        // handler (a supervisor gave up on it) ends once the handler
        // returns, instead of waiting for mail that will not come.
        if let Some(urgent) = self.take_urgent() {
            let kills: VecDeque<Control> = urgent
                .into_iter()
                .filter(|c| matches!(c, Control::Kill))
                .collect();
            if !kills.is_empty() {
                let mut queue = self.urgent.lock();
                queue.extend(kills);
                self.urgent_flag.store(true, Ordering::SeqCst);
            }
        }
        // A port whose mailbox was full missed the exit: added again, it
        // is told.
        let missed: Vec<u64> = listeners
            .iter()
            .filter(|l| tell(l, reason.clone(), &self.name) != Told::Delivered)
            .map(SendPort::id)
            .collect();
        if !missed.is_empty() {
            self.exit.lock().told.retain(|id| !missed.contains(id));
        }
        self.exited.notify_all();
        // A crash must be visible: only a normal exit or a kill is routine.
        match &reason {
            ExitReason::Panicked(_) | ExitReason::Failed(_) | ExitReason::Crashed(_) => {
                tracing::warn!(target: "isolates", isolate = %self.name, %reason, "isolate exited");
            }
            _ => {
                tracing::debug!(target: "isolates", isolate = %self.name, %reason, "isolate exited")
            }
        }
    }

    pub(super) fn add_exit_listener(&self, port: SendPort<ExitReason>) {
        let mut record = self.exit.lock();
        match &record.reason {
            Some(reason) => {
                if record.told.contains(&port.id()) {
                    return;
                }
                let reason = reason.clone();
                record.told.push(port.id());
                drop(record);
                if tell(&port, reason, &self.name) != Told::Delivered {
                    self.exit.lock().told.retain(|&id| id != port.id());
                }
            }
            None => add_once(&mut record.exit_listeners, port),
        }
    }

    pub(super) fn add_error_listener(&self, port: SendPort<IsolateError>) {
        let mut record = self.exit.lock();
        if record.reason.is_none() {
            add_once(&mut record.error_listeners, port);
        }
    }

    /// Forgets `port` as an exit listener; whether it was one.
    pub(super) fn remove_exit_listener(&self, port: &SendPort<ExitReason>) -> bool {
        remove_port(&mut self.exit.lock().exit_listeners, port)
    }

    /// Forgets `port` as an error listener; whether it was one.
    pub(super) fn remove_error_listener(&self, port: &SendPort<IsolateError>) -> bool {
        remove_port(&mut self.exit.lock().error_listeners, port)
    }

    /// Tells the error listeners, never waiting for one; those whose
    /// receiver is gone are forgotten.
    pub(super) fn report_error(&self, error: IsolateError) {
        let listeners = self.exit.lock().error_listeners.clone();
        let gone: Vec<_> = listeners
            .into_iter()
            .filter(|listener| tell(listener, error.clone(), &self.name) == Told::Gone)
            .collect();
        if !gone.is_empty() {
            self.exit
                .lock()
                .error_listeners
                .retain(|port| !gone.iter().any(|g| g.same_port(port)));
        }
    }

    /// Waits until the isolate has exited, at most until `deadline`.
    pub(super) fn wait_exit(&self, deadline: Option<Instant>) -> Option<ExitReason> {
        // After an immediate kill, the child's exit comes first: waited
        // for here, its exit wakes this thread itself while the isolate's
        // thread ends beside it, and what is left below is most likely
        // done by then (one wake-up, not one for the thread's end and
        // another for the child's).
        #[cfg(target_os = "linux")]
        if self.kill_requested.load(Ordering::SeqCst) {
            let killed = self.child_kill.lock().clone();
            if let Some(kill) = killed.filter(|kill| kill.kills_at_once()) {
                kill.await_exit(deadline);
            }
        }
        let reason = {
            let mut record = self.exit.lock();
            while record.reason.is_none() {
                if crate::time::wait(&self.exited, &mut record, deadline) {
                    break;
                }
            }
            record.reason.clone()
        };
        // A process isolate has ended once its child is reaped: an
        // immediate kill left that to whoever waits for the end.
        #[cfg(target_os = "linux")]
        if reason.is_some() && !self.wait_reaped(deadline) {
            return None;
        }
        reason
    }
}

/// What an incarnation leaves to the next: its control channel and a
/// message it took but did not handle.
///
/// It passes through the supervisor, which supervises isolates of many
/// types, so the held message is boxed: only the isolate's own code, which
/// knows its message type, takes it out.
pub(crate) struct Leftover {
    control_rx: cb::Receiver<Control>,
    held: Option<Erased>,
}

impl Leftover {
    pub(super) fn new<I: Isolate>(
        control_rx: cb::Receiver<Control>,
        held: Option<Mail<I>>,
    ) -> Self {
        Leftover {
            control_rx,
            held: held.map(|item| Box::new(item) as Erased),
        }
    }

    /// The control channel and the held message of an isolate `I`.
    pub(super) fn into_parts<I: Isolate>(self) -> (cb::Receiver<Control>, Option<Mail<I>>) {
        let held = self.held.and_then(|held| match held.downcast::<Mail<I>>() {
            Ok(item) => Some(*item),
            Err(_) => {
                // Only the isolate that made a leftover takes it apart.
                tracing::error!(target: "isolates", "a held message of another type was dropped (a bug in isolates)");
                None
            }
        });
        (self.control_rx, held)
    }
}

impl<I: Isolate> Peer for Shared<I> {
    fn id(&self) -> u64 {
        self.id
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn watch(&self) -> &Watch {
        &self.watch
    }

    fn signal(&self, signal: Signal) {
        self.control(Control::Signal(signal), false);
    }
}

/// Adds `port` to `listeners` unless it is there already: as in Dart, a
/// port added twice gets each event once.
fn add_once<T>(listeners: &mut Vec<SendPort<T>>, port: SendPort<T>) {
    if !listeners.iter().any(|p| p.same_port(&port)) {
        listeners.push(port);
    }
}

/// Removes `port` from `listeners`; whether it was there.
fn remove_port<T>(listeners: &mut Vec<SendPort<T>>, port: &SendPort<T>) -> bool {
    let before = listeners.len();
    listeners.retain(|p| !p.same_port(port));
    listeners.len() != before
}

/// What became of an event sent to a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Told {
    Delivered,
    /// Its mailbox was full (logged).
    Missed,
    /// Its receiver is gone.
    Gone,
}

/// Sends an event to a listener without waiting: a full mailbox misses it
/// (logged), so a listener nobody drains cannot hold up the isolate.
fn tell<T: 'static>(port: &SendPort<T>, event: T, isolate: &str) -> Told {
    match port.try_send(event) {
        Ok(()) => Told::Delivered,
        Err(crate::error::TrySendError::Full(_)) => {
            tracing::warn!(target: "isolates", %isolate, "a listener's mailbox is full: it misses an event");
            Told::Missed
        }
        Err(_) => Told::Gone,
    }
}
