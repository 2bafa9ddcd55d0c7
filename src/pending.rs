//! [`Pending`]: a result that is not there yet, which the main thread polls.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::codec::envelope::{Envelope, Erased};
use crate::error::ExitReason;
use crate::error::{AskError, CodecError, RunError};
use crate::handle::{self, Handle};
use crate::oneshot;

/// What travels back on a reply channel: typed (`Reply<R, E>`) on a
/// blocking ask's own slot, erased (`Reply`) where one kind of slot serves
/// many types (a [`Pending`]).
pub(crate) enum Reply<R = Erased, E = Erased> {
    /// The reply value, moved (or encoded, when copying).
    Value(Envelope<R>),
    /// The error the handler returned, moved (or encoded, when copying).
    Failed(Envelope<E>),
    /// The handler panicked with this message.
    Panicked(String),
    /// The request could not be decoded by the receiver.
    BadMessage(CodecError),
    /// The reply or error could not be encoded by the receiver.
    Unencodable(CodecError),
    /// The isolate exited before handling the request.
    Dead(ExitReason),
}

impl<R: Send + 'static, E: Send + 'static> Reply<R, E> {
    /// The reply with its payload boxed.
    pub(crate) fn erase(self) -> Reply {
        match self {
            Reply::Value(v) => Reply::Value(v.erase()),
            Reply::Failed(e) => Reply::Failed(e.erase()),
            Reply::Panicked(m) => Reply::Panicked(m),
            Reply::BadMessage(e) => Reply::BadMessage(e),
            Reply::Unencodable(e) => Reply::Unencodable(e),
            Reply::Dead(r) => Reply::Dead(r),
        }
    }
}

impl Reply {
    /// The typed form of an erased reply; a payload of another type is an
    /// `Unencodable` reply (a bug in the crate, reported, not hidden).
    pub(crate) fn typed<R: 'static, E: 'static>(self) -> Reply<R, E> {
        match self {
            Reply::Value(v) => match v.typed("reply") {
                Ok(v) => Reply::Value(v),
                Err(e) => Reply::Unencodable(e),
            },
            Reply::Failed(e) => match e.typed("error") {
                Ok(e) => Reply::Failed(e),
                Err(e) => Reply::Unencodable(e),
            },
            Reply::Panicked(m) => Reply::Panicked(m),
            Reply::BadMessage(e) => Reply::BadMessage(e),
            Reply::Unencodable(e) => Reply::Unencodable(e),
            Reply::Dead(r) => Reply::Dead(r),
        }
    }
}

/// A result on its way: from [`ask_pending`](crate::IsolateHandle::ask_pending),
/// [`run`](crate::run()), or [`ping`](crate::IsolateHandle::ping).
///
/// It resolves exactly once. The main thread polls it with
/// [`try_take`](Pending::try_take) each frame and never blocks, or hands it to
/// a [`MainThread`](crate::pool::MainThread) with a callback; other threads
/// may [`wait`](Pending::wait); async code `.await`s it (it is a [`Future`]
/// on any executor, woken by the reply itself). The reply is decoded by
/// whichever call takes it, on that caller's thread.
///
/// # Examples
///
/// ```
/// use isolates::run;
///
/// fn slow_square(n: u64) -> u64 { n * n }
///
/// let mut pending = run(slow_square, 12);
/// let result = loop {
///     // ... draw a frame ...
///     if let Some(result) = pending.try_take() {
///         break result;
///     }
///     std::thread::yield_now();
/// };
/// assert_eq!(result, Ok(144));
/// assert!(pending.is_done());
/// assert_eq!(pending.try_take(), None); // taken once
/// ```
#[must_use = "a Pending does nothing unless its result is taken"]
pub struct Pending<T, E> {
    handle: Handle<handle::Reply<Reply, Result<T, E>>>,
    /// Run when the `Pending` goes (see [`on_drop`](Pending::on_drop)).
    _on_drop: Option<OnDrop>,
}

/// What a [`Pending`] runs when it is dropped: for a producer that can
/// stop work nobody waits for any more (a child process running a
/// `process::run`).
struct OnDrop(Option<Box<dyn FnOnce() + Send + Sync>>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

impl<T, E> Pending<T, E> {
    pub(crate) fn waiting(
        rx: oneshot::Receiver<Reply>,
        resolve: impl FnOnce(Option<Reply>) -> Result<T, E> + Send + 'static,
    ) -> Self
    where
        E: Taken,
    {
        Pending {
            handle: Handle::new(handle::Reply::waiting(rx, resolve, || Err(E::taken()))),
            _on_drop: None,
        }
    }

    pub(crate) fn ready(result: Result<T, E>) -> Self
    where
        E: Taken,
    {
        Pending {
            handle: Handle::new(handle::Reply::ready(result, || Err(E::taken()))),
            _on_drop: None,
        }
    }

    /// Runs `f` when this `Pending` is dropped (or consumed by
    /// [`wait`](Self::wait)), whether or not its result came: `f` tells
    /// the two apart itself.
    #[cfg(target_os = "linux")]
    pub(crate) fn on_drop(mut self, f: impl FnOnce() + Send + Sync + 'static) -> Self {
        self._on_drop = Some(OnDrop(Some(Box::new(f))));
        self
    }

    /// Takes the result if it has arrived; never blocks.
    ///
    /// Returns `None` while the result is on its way, and after it has been
    /// taken once.
    ///
    /// # Examples
    ///
    /// ```
    /// fn id(x: u8) -> u8 { x }
    /// let mut p = isolates::run(id, 3);
    /// let first = loop { if let Some(r) = p.try_take() { break r; } };
    /// assert_eq!(first, Ok(3));
    /// assert_eq!(p.try_take(), None);
    /// ```
    pub fn try_take(&mut self) -> Option<Result<T, E>> {
        self.handle.try_take()
    }

    /// Whether the result has arrived (and stays true once it was taken);
    /// never blocks.
    ///
    /// # Examples
    ///
    /// ```
    /// fn id(x: u8) -> u8 { x }
    /// let mut p = isolates::run(id, 3);
    /// p.wait_timeout(std::time::Duration::from_secs(5)).unwrap().unwrap();
    /// assert!(p.is_done());
    /// ```
    pub fn is_done(&self) -> bool {
        self.handle.is_done()
    }

    /// Whether the result has been taken.
    ///
    /// # Examples
    ///
    /// ```
    /// fn id(x: u8) -> u8 { x }
    /// let mut p = isolates::run(id, 3);
    /// assert!(!p.is_taken());
    /// let _ = p.wait_timeout(std::time::Duration::from_secs(5));
    /// assert!(p.is_taken());
    /// ```
    pub fn is_taken(&self) -> bool {
        self.handle.is_taken()
    }

    /// Waits for the result.
    ///
    /// # Errors
    ///
    /// The operation's own error; or, if the result was already taken with
    /// [`try_take`](Pending::try_take), the error type's "already taken" value
    /// (for example [`AskError::AlreadyTaken`]).
    ///
    /// # Examples
    ///
    /// ```
    /// fn double(x: u32) -> u32 { x * 2 }
    /// assert_eq!(isolates::run(double, 21).wait(), Ok(42));
    /// ```
    pub fn wait(self) -> Result<T, E> {
        self.handle.wait()
    }

    /// Waits at most `timeout` for the result; `None` if it has not arrived
    /// (the `Pending` stays usable) or was already taken.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// fn id(x: u8) -> u8 { x }
    /// let mut p = isolates::run(id, 7);
    /// assert_eq!(p.wait_timeout(Duration::from_secs(5)), Some(Ok(7)));
    /// ```
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<Result<T, E>> {
        self.handle.wait_timeout(timeout)
    }

    /// Waits until `deadline` at most for the result; `None` if it has not
    /// arrived (the `Pending` stays usable) or was already taken.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// fn id(x: u8) -> u8 { x }
    /// let mut p = isolates::run(id, 7);
    /// assert_eq!(p.wait_deadline(Instant::now() + Duration::from_secs(5)), Some(Ok(7)));
    /// ```
    pub fn wait_deadline(&mut self, deadline: Instant) -> Option<Result<T, E>> {
        self.handle.wait_deadline(deadline)
    }

    /// Has `waker` woken once the result arrives (or the reply channel
    /// closes); returns `true` if it is there already and nothing will
    /// wake it (see `Handle::wake_on_arrival`: told exactly once). Takes
    /// nothing.
    pub(crate) fn wake_on_arrival(&mut self, waker: &Waker) -> bool {
        self.handle.wake_on_arrival(waker)
    }

    /// The result, or the "already taken" error, once there; never blocks.
    pub(crate) fn take_done(&mut self) -> Option<Result<T, E>> {
        self.handle.take_done()
    }
}

/// A `Pending` holds nothing that needs pinning, so it can be awaited by
/// `&mut` as well as by value (for example in a `select!` loop).
impl<T, E> Unpin for Pending<T, E> {}

/// Awaiting a `Pending` needs no particular runtime: the thread that replies
/// wakes the awaiting task, and nothing polls in between.
///
/// Awaiting it after its result was taken gives the error type's "already
/// taken" value, as [`wait`](Pending::wait) does.
///
/// # Examples
///
/// ```
/// use futures::executor::block_on;
///
/// fn square(n: u64) -> u64 { n * n }
///
/// let mut pending = isolates::run(square, 12);
/// assert_eq!(block_on(&mut pending), Ok(144));
/// // Taken: awaiting again says so instead of hanging or panicking.
/// assert_eq!(block_on(&mut pending), Err(isolates::RunError::AlreadyTaken));
/// ```
impl<T, E> Future for Pending<T, E> {
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().handle.poll_take(cx)
    }
}

impl<T, E> fmt::Debug for Pending<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("state", &self.handle.state_word())
            .finish()
    }
}

/// Error types that can say "this result was already taken": what a
/// [`Pending`] of them gives when waited on after its result was taken.
pub(crate) trait Taken {
    /// The error for waiting on a `Pending` whose result was already taken.
    fn taken() -> Self;
}

impl<E> Taken for AskError<E> {
    fn taken() -> Self {
        AskError::AlreadyTaken
    }
}

impl Taken for RunError {
    fn taken() -> Self {
        RunError::AlreadyTaken
    }
}
