//! Results and progress delivered on the UI thread, a frame at a time.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::task::Wake;
use std::time::{Duration, Instant};

use crossbeam_channel as cb;

use super::{TaskHandle, Worker};
use crate::error::TaskError;
use crate::pending::Pending;

/// The application's "something is ready" function.
type EventWaker = Arc<dyn Fn() + Send + Sync>;

/// Tells the dispatcher that watch `key` is ready (a task resolved, a reply
/// arrived), then the application's event loop. Runs on the resolving
/// thread, under `catch` there.
struct Notifier {
    key: u64,
    ready: cb::Sender<u64>,
    waker: Option<EventWaker>,
}

impl Notifier {
    fn notify(&self) {
        let _ = self.ready.send(self.key);
        if let Some(waker) = &self.waker {
            waker();
        }
    }
}

impl Wake for Notifier {
    fn wake(self: Arc<Self>) {
        self.notify();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.notify();
    }
}

/// One watched task, type-erased.
trait Watched {
    /// Runs the progress callback on new progress until `until` (`None`:
    /// all of it); how many times it ran. Values left wait for the next
    /// call.
    fn progress(&mut self, until: Option<Instant>) -> usize;
    /// Takes the result and runs the completion callback, if resolved.
    fn finish(&mut self) -> bool;
    /// Resolves a passed deadline (a queued task never reaches a worker
    /// to find out).
    fn expire(&mut self);
}

struct Watch<W: Worker, P, D> {
    handle: TaskHandle<W>,
    on_progress: P,
    on_done: Option<D>,
    /// Progress taken from the handle and not delivered yet (a pump's
    /// budget ran out).
    backlog: std::collections::VecDeque<W::Progress>,
}

impl<W, P, D> Watched for Watch<W, P, D>
where
    W: Worker,
    P: FnMut(W::Progress),
    D: FnOnce(Result<W::Output, TaskError<W::Error>>),
{
    fn progress(&mut self, until: Option<Instant>) -> usize {
        self.backlog.extend(self.handle.progress());
        let mut ran = 0;
        while until.is_none_or(|until| Instant::now() < until) {
            let Some(value) = self.backlog.pop_front() else {
                break;
            };
            (self.on_progress)(value);
            ran += 1;
        }
        ran
    }

    fn expire(&mut self) {
        // `state` resolves `TimedOut` when the deadline has passed, which
        // queues the task for delivery.
        let _ = self.handle.state();
    }

    fn finish(&mut self) -> bool {
        let result = match self.handle.try_take() {
            Some(result) => result,
            // Resolved, its result taken before it was handed over (as
            // `on_reply` does for a taken `Pending`).
            None if self.handle.is_done() => Err(TaskError::AlreadyTaken),
            None => return false,
        };
        // Its progress before its result, all of it.
        self.progress(None);
        if let Some(done) = self.on_done.take() {
            done(result);
        }
        true
    }
}

/// One watched reply.
struct ReplyWatch<T, E, D> {
    pending: Pending<T, E>,
    on_done: Option<D>,
}

impl<T, E, D> Watched for ReplyWatch<T, E, D>
where
    D: FnOnce(Result<T, E>),
{
    fn progress(&mut self, _: Option<Instant>) -> usize {
        0
    }

    fn expire(&mut self) {}

    fn finish(&mut self) -> bool {
        let Some(result) = self.pending.take_done() else {
            return false;
        };
        if let Some(done) = self.on_done.take() {
            done(result);
        }
        true
    }
}

/// Runs task callbacks on the thread that owns it (the UI thread), only
/// when that thread calls [`pump`](Self::pump): like one turn of Dart's
/// event loop, with a time budget so a frame is never overrun by
/// callbacks. Callbacks need not be `Send`. It takes a pool's
/// [`TaskHandle`]s ([`on_done`](Self::on_done), [`watch`](Self::watch)) and
/// the [`Pending`] results of [`run`](crate::run()) and
/// [`ask_pending`](crate::IsolateHandle::ask_pending)
/// ([`on_reply`](Self::on_reply)).
///
/// To integrate with an existing event loop, [`set_waker`](Self::set_waker)
/// installs a function called (from a worker thread) whenever a watched
/// task resolves or a watched reply arrives: post a redraw or an event from
/// it, then pump.
///
/// # Examples
///
/// ```
/// use std::cell::RefCell;
/// use std::rc::Rc;
/// use std::time::Duration;
/// use isolates::pool::{MainThread, Pool, TaskContext, Worker};
///
/// struct Double;
/// impl Worker for Double {
///     type Args = (); type Input = u32; type Output = u32; type Progress = (); type Error = String;
///     fn start(_: ()) -> Result<Self, String> { Ok(Double) }
///     fn run(&mut self, n: u32, _: &TaskContext<'_, Self>) -> Result<u32, String> { Ok(n * 2) }
/// }
///
/// let pool = Pool::<Double>::builder().workers(1).spawn(()).unwrap();
/// let mut ui = MainThread::new();
/// let shown = Rc::new(RefCell::new(None)); // UI state: not Send, not shared
/// let sink = Rc::clone(&shown);
/// ui.on_done(pool.submit(21), move |result| *sink.borrow_mut() = Some(result));
/// // The frame loop: draw, then pump for at most 2 ms.
/// while ui.watching() > 0 {
///     ui.pump(Duration::from_millis(2));
///     std::thread::sleep(Duration::from_millis(1));
/// }
/// assert_eq!(*shown.borrow(), Some(Ok(42)));
/// ```
pub struct MainThread {
    /// By this dispatcher's own key: task ids are only unique per pool, and
    /// a reply has none.
    watched: HashMap<u64, Box<dyn Watched>>,
    next_key: u64,
    ready_tx: cb::Sender<u64>,
    ready_rx: cb::Receiver<u64>,
    waker: Option<EventWaker>,
    /// Not `Send`: callbacks run on the thread that registered them.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Default for MainThread {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MainThread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MainThread")
            .field("watching", &self.watched.len())
            .field("ready", &self.ready_rx.len())
            .finish()
    }
}

impl MainThread {
    /// A dispatcher with nothing watched.
    ///
    /// # Examples
    ///
    /// See [`MainThread`].
    pub fn new() -> Self {
        let (ready_tx, ready_rx) = cb::unbounded();
        MainThread {
            watched: HashMap::new(),
            next_key: 0,
            ready_tx,
            ready_rx,
            waker: None,
            _not_send: std::marker::PhantomData,
        }
    }

    /// Calls `waker` (on the worker's thread) each time a watched task
    /// resolves or a watched reply arrives, so an event loop that sleeps can
    /// be woken to pump. It applies to what is watched after it is set.
    /// A panic in it is caught on the worker's thread and goes no further.
    ///
    /// This is also how results reach a channel an existing event loop
    /// selects on: send into that channel from the waker, then pump when it
    /// fires.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use std::time::Duration;
    /// use isolates::pool::{MainThread, Pool, TaskContext, Worker};
    ///
    /// struct Echo;
    /// impl Worker for Echo {
    ///     type Args = (); type Input = u8; type Output = u8; type Progress = (); type Error = String;
    ///     fn start(_: ()) -> Result<Self, String> { Ok(Echo) }
    ///     fn run(&mut self, n: u8, _: &TaskContext<'_, Self>) -> Result<u8, String> { Ok(n) }
    /// }
    ///
    /// // The application's own event channel (any channel works).
    /// enum Event { TaskReady, Quit }
    /// let (events, inbox) = mpsc::channel::<Event>();
    ///
    /// let pool = Pool::<Echo>::builder().workers(1).spawn(()).unwrap();
    /// let mut ui = MainThread::new();
    /// let wake = events.clone();
    /// ui.set_waker(move || { let _ = wake.send(Event::TaskReady); });
    /// ui.on_done(pool.submit(7), move |r| {
    ///     assert_eq!(r, Ok(7));
    ///     let _ = events.send(Event::Quit);
    /// });
    /// // The event loop sleeps until something happens.
    /// loop {
    ///     match inbox.recv_timeout(Duration::from_secs(10)).expect("no event") {
    ///         Event::TaskReady => { ui.pump(Duration::from_millis(2)); }
    ///         Event::Quit => break,
    ///     }
    /// }
    /// ```
    pub fn set_waker(&mut self, waker: impl Fn() + Send + Sync + 'static) {
        self.waker = Some(Arc::new(waker));
    }

    /// Runs `on_done` with the task's result during a later
    /// [`pump`](Self::pump).
    ///
    /// # Examples
    ///
    /// See [`MainThread`].
    pub fn on_done<W: Worker>(
        &mut self,
        handle: TaskHandle<W>,
        on_done: impl FnOnce(Result<W::Output, TaskError<W::Error>>) + 'static,
    ) {
        self.watch(handle, |_| {}, on_done);
    }

    /// Runs `on_progress` with each progress value and `on_done` with the
    /// result, during later [`pump`](Self::pump)s.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::cell::Cell;
    /// use std::rc::Rc;
    /// use std::time::Duration;
    /// use isolates::pool::{MainThread, Pool, TaskContext, Worker};
    ///
    /// struct Count;
    /// impl Worker for Count {
    ///     type Args = (); type Input = u32; type Output = u32; type Progress = u32; type Error = String;
    ///     fn start(_: ()) -> Result<Self, String> { Ok(Count) }
    ///     fn run(&mut self, n: u32, t: &TaskContext<'_, Self>) -> Result<u32, String> {
    ///         for i in 1..=n { t.progress(i); }
    ///         Ok(n)
    ///     }
    /// }
    /// let pool = Pool::<Count>::builder().workers(1).spawn(()).unwrap();
    /// let mut ui = MainThread::new();
    /// let (seen, done) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(false)));
    /// let (s, d) = (Rc::clone(&seen), Rc::clone(&done));
    /// ui.watch(pool.submit(5), move |p| s.set(s.get() + p), move |r| d.set(r == Ok(5)));
    /// while ui.watching() > 0 {
    ///     ui.pump(Duration::from_millis(2));
    ///     std::thread::yield_now();
    /// }
    /// assert_eq!(seen.get(), 15);
    /// assert!(done.get());
    /// ```
    pub fn watch<W: Worker>(
        &mut self,
        handle: TaskHandle<W>,
        on_progress: impl FnMut(W::Progress) + 'static,
        on_done: impl FnOnce(Result<W::Output, TaskError<W::Error>>) + 'static,
    ) {
        let notifier = self.notifier();
        let key = notifier.key;
        handle
            .cell()
            .on_resolve(Box::new(move |_| notifier.notify()));
        self.watched.insert(
            key,
            Box::new(Watch {
                handle,
                on_progress,
                on_done: Some(on_done),
                backlog: std::collections::VecDeque::new(),
            }),
        );
    }

    /// Runs `on_done` with the result of a [`Pending`] (from
    /// [`run`](crate::run()), [`ask_pending`](crate::IsolateHandle::ask_pending)
    /// or [`ping`](crate::IsolateHandle::ping)) during a later
    /// [`pump`](Self::pump), once it has arrived. A `Pending` whose result
    /// was already taken delivers the error type's "already taken" value.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use std::rc::Rc;
    /// use std::time::Duration;
    /// use isolates::pool::MainThread;
    ///
    /// fn square(n: u64) -> u64 { n * n }
    ///
    /// let mut ui = MainThread::new();
    /// let shown = Rc::new(RefCell::new(None)); // UI state: not Send
    /// let sink = Rc::clone(&shown);
    /// ui.on_reply(isolates::run(square, 12), move |result| *sink.borrow_mut() = Some(result));
    /// while ui.watching() > 0 {
    ///     ui.pump(Duration::from_millis(2));
    ///     std::thread::sleep(Duration::from_millis(1));
    /// }
    /// assert_eq!(*shown.borrow(), Some(Ok(144)));
    /// ```
    pub fn on_reply<T: 'static, E: 'static>(
        &mut self,
        mut pending: Pending<T, E>,
        on_done: impl FnOnce(Result<T, E>) + 'static,
    ) {
        let notifier = Arc::new(self.notifier());
        let key = notifier.key;
        // The reply's sender wakes the notifier once it sends (or drops).
        if pending.wake_on_arrival(&std::task::Waker::from(Arc::clone(&notifier))) {
            notifier.notify();
        }
        self.watched.insert(
            key,
            Box::new(ReplyWatch {
                pending,
                on_done: Some(on_done),
            }),
        );
    }

    /// A notifier for the next watch.
    fn notifier(&mut self) -> Notifier {
        let key = self.next_key;
        self.next_key += 1;
        Notifier {
            key,
            ready: self.ready_tx.clone(),
            waker: self.waker.clone(),
        }
    }

    /// Runs ready callbacks until none is left or `budget` is spent (it is
    /// looked at between callbacks: one callback that takes long still
    /// overruns it); returns how many ran. Completed tasks come first (a
    /// task's completion runs after all of its progress), then progress;
    /// progress values the budget left out wait for the next pump. Never
    /// blocks.
    ///
    /// # Examples
    ///
    /// See [`MainThread`].
    pub fn pump(&mut self, budget: Duration) -> usize {
        let start = Instant::now();
        let mut ran = self.deliver_ready(start, budget);
        if start.elapsed() < budget {
            let until = start.checked_add(budget);
            for watched in self.watched.values_mut() {
                watched.expire();
                ran += watched.progress(until);
                if start.elapsed() >= budget {
                    break;
                }
            }
            // What expired just now, budget permitting.
            ran += self.deliver_ready(start, budget);
        }
        ran
    }

    /// Runs the completion callbacks of resolved tasks within the budget.
    fn deliver_ready(&mut self, start: Instant, budget: Duration) -> usize {
        let mut ran = 0;
        while start.elapsed() < budget {
            let Ok(key) = self.ready_rx.try_recv() else {
                break;
            };
            if let Some(mut watched) = self.watched.remove(&key) {
                if watched.finish() {
                    ran += 1;
                } else {
                    self.watched.insert(key, watched);
                }
            }
        }
        ran
    }

    /// How many tasks and replies are watched and not yet delivered.
    ///
    /// # Examples
    ///
    /// See [`MainThread`].
    pub fn watching(&self) -> usize {
        self.watched.len()
    }
}
