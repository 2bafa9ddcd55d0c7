//! The answer to a request: a handle to poll, wait on or await.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

#[cfg(doc)]
use super::WorkManager;
use super::error::WorkError;
use crate::handle::{self, Handle};
use crate::oneshot;

/// The answer to a request, once the scheduler has made it durable: poll
/// it from a UI thread, wait for it elsewhere, or `.await` it (it is a
/// [`Future`] on any executor, woken by the scheduler
/// once it answers).
///
/// The answer is given once: taking it again gives `None`, and waiting on
/// or awaiting it again gives [`WorkError::AlreadyTaken`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::schedule::*;
///
/// let manager = WorkManager::builder(WorkStore::in_memory().unwrap())
///     .handler_fn("noop", |(): (), _: &WorkContext<'_>| WorkResult::Success(()))
///     .spawn()
///     .unwrap();
/// let mut op = manager.enqueue(WorkRequest::once("noop"));
/// // Each frame: op.try_take() is None until the store has it.
/// let done = op.wait_timeout(Duration::from_secs(10)).expect("answered");
/// assert!(matches!(done, Ok(Enqueued::New(_))));
/// assert!(op.is_done());
/// assert_eq!(op.try_take(), None); // taken once
/// ```
pub struct Operation<T> {
    handle: Handle<handle::Reply<Result<T, WorkError>, Result<T, WorkError>>>,
    /// Runs the scheduler's turn on a caller that blocks for the answer.
    turn: Option<Box<dyn FnOnce() + Send>>,
}

impl<T> Operation<T> {
    pub(super) fn waiting(rx: oneshot::Receiver<Result<T, WorkError>>) -> Self {
        // The scheduler dropped the reply: it stopped first.
        let resolve = |got: Option<_>| got.unwrap_or(Err(WorkError::Stopped));
        Operation {
            handle: Handle::new(handle::Reply::waiting(rx, resolve, || {
                Err(WorkError::AlreadyTaken)
            })),
            turn: None,
        }
    }

    /// Runs `turn` (once) before the first blocking wait; see
    /// [`wait`](Self::wait).
    pub(super) fn with_turn(mut self, turn: Box<dyn FnOnce() + Send>) -> Self {
        self.turn = Some(turn);
        self
    }

    /// Before a blocking wait: run the scheduler's turn here if it is free.
    fn caller_turn(&mut self) {
        if let Some(turn) = self.turn.take()
            && !self.handle.is_done()
        {
            turn();
        }
    }

    pub(super) fn resolved(result: Result<T, WorkError>) -> Self {
        Operation {
            handle: Handle::new(handle::Reply::ready(result, || {
                Err(WorkError::AlreadyTaken)
            })),
            turn: None,
        }
    }

    /// The answer, if it came; never blocks. `None` while it is on its way,
    /// and after it was taken once.
    ///
    /// # Examples
    ///
    /// See [`Operation`].
    pub fn try_take(&mut self) -> Option<Result<T, WorkError>> {
        self.handle.try_take()
    }

    /// Whether the answer has come (and stays true once it was taken);
    /// never blocks.
    ///
    /// # Examples
    ///
    /// See [`Operation`].
    pub fn is_done(&self) -> bool {
        self.handle.is_done()
    }

    /// Waits for the answer.
    ///
    /// Waiting on an enqueue may do the manager's work on this thread: if
    /// the scheduler is between turns, this thread runs its turn (the
    /// request is handled, written to the store and answered here,
    /// without waking the scheduler's thread and being woken back; other
    /// requests waiting then are handled in the same turn). Never so in
    /// [`try_take`](Self::try_take) or [`is_done`](Self::is_done), nor from
    /// inside a work's handler.
    ///
    /// # Errors
    ///
    /// The request's error; [`WorkError::Stopped`] if the manager stopped
    /// first; [`WorkError::AlreadyTaken`] if the answer was taken before.
    ///
    /// # Examples
    ///
    /// See [`WorkManager`].
    pub fn wait(mut self) -> Result<T, WorkError> {
        self.caller_turn();
        self.handle.wait()
    }

    /// Waits up to `timeout`; `None` if no answer came by then (the
    /// operation stays usable) or it was already taken.
    ///
    /// # Examples
    ///
    /// See [`Operation`].
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<Result<T, WorkError>> {
        self.caller_turn();
        self.handle.wait_timeout(timeout)
    }

    /// Waits until `deadline` at most; `None` if no answer came by then
    /// (the operation stays usable) or it was already taken.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use isolates::schedule::*;
    ///
    /// let manager = WorkManager::builder(WorkStore::in_memory().unwrap())
    ///     .handler_fn("noop", |(): (), _: &WorkContext<'_>| WorkResult::Success(()))
    ///     .spawn()
    ///     .unwrap();
    /// let mut op = manager.enqueue(WorkRequest::once("noop"));
    /// let deadline = Instant::now() + Duration::from_secs(10);
    /// assert!(matches!(op.wait_deadline(deadline), Some(Ok(Enqueued::New(_)))));
    /// assert_eq!(op.wait_deadline(deadline), None); // taken once
    /// ```
    pub fn wait_deadline(&mut self, deadline: Instant) -> Option<Result<T, WorkError>> {
        self.caller_turn();
        self.handle.wait_deadline(deadline)
    }
}

/// An `Operation` holds nothing that needs pinning, so it can be awaited
/// by `&mut` as well as by value.
impl<T> Unpin for Operation<T> {}

/// Awaiting an `Operation` needs no particular runtime: the scheduler thread
/// wakes the awaiting task once the change is stored, and nothing polls in
/// between. Awaiting it after the answer was taken gives
/// [`WorkError::AlreadyTaken`].
///
/// # Examples
///
/// ```
/// use futures::executor::block_on;
/// use isolates::schedule::*;
///
/// let manager = WorkManager::builder(WorkStore::in_memory().unwrap())
///     .handler_fn("noop", |(): (), _: &WorkContext<'_>| WorkResult::Success(()))
///     .spawn()
///     .unwrap();
/// let mut op = manager.enqueue(WorkRequest::once("noop"));
/// block_on(async {
///     assert!(matches!((&mut op).await, Ok(Enqueued::New(_))));
///     assert_eq!(op.await, Err(WorkError::AlreadyTaken));
/// });
/// manager.stop();
/// ```
impl<T> Future for Operation<T> {
    type Output = Result<T, WorkError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().handle.poll_take(cx)
    }
}

impl<T> fmt::Debug for Operation<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Operation")
            .field("state", &self.handle.state_word())
            .finish()
    }
}
