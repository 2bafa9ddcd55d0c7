//! The answer to a request: a handle to poll, wait on or await.

use std::fmt;
use std::time::Duration;

#[cfg(doc)]
use super::WorkManager;
use super::error::WorkError;
use crate::oneshot::{self, Miss};

/// The answer to a request, once the scheduler has made it durable: poll
/// it from a UI thread, wait for it elsewhere, or `.await` it (it is a
/// [`Future`] on any executor, woken by the scheduler
/// once it answers).
///
/// The answer is given once; asking again gives
/// [`WorkError::AlreadyTaken`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::schedule::*;
///
/// let manager = WorkManager::builder(WorkStore::in_memory().unwrap())
///     .handler_fn("noop", |(): (), _: &WorkContext<'_>| WorkResult::Success(()))
///     .build()
///     .unwrap();
/// let mut op = manager.enqueue(WorkRequest::once("noop"));
/// // Each frame: op.try_result() is None until the store has it.
/// let done = op.wait_timeout(Duration::from_secs(10)).expect("answered");
/// assert!(matches!(done, Ok(Enqueued::New(_))));
/// assert_eq!(op.try_result(), Some(Err(WorkError::AlreadyTaken)));
/// ```
pub struct Operation<T> {
    rx: oneshot::Receiver<Result<T, WorkError>>,
    taken: bool,
}

impl<T> Operation<T> {
    pub(super) fn waiting(rx: oneshot::Receiver<Result<T, WorkError>>) -> Self {
        Operation { rx, taken: false }
    }

    pub(super) fn resolved(result: Result<T, WorkError>) -> Self {
        let (tx, rx) = oneshot::oneshot();
        tx.send(result);
        Operation::waiting(rx)
    }

    /// The answer, if it came; never blocks. After it returned an answer,
    /// later calls return `Some(Err(WorkError::AlreadyTaken))`.
    ///
    /// # Examples
    ///
    /// See [`Operation`].
    pub fn try_result(&mut self) -> Option<Result<T, WorkError>> {
        if self.taken {
            return Some(Err(WorkError::AlreadyTaken));
        }
        let got = self.rx.try_recv();
        self.settle(got)
    }

    /// Waits for the answer.
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
        if self.taken {
            return Err(WorkError::AlreadyTaken);
        }
        let got = self.rx.recv_until(None);
        self.settle(got).unwrap_or(Err(WorkError::Stopped))
    }

    /// Waits up to `timeout`; `None` if no answer came by then. After an
    /// answer was taken, `Some(Err(WorkError::AlreadyTaken))`.
    ///
    /// # Examples
    ///
    /// See [`Operation`].
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<Result<T, WorkError>> {
        if self.taken {
            return Some(Err(WorkError::AlreadyTaken));
        }
        let got = self.rx.recv_until(crate::time::deadline_after(timeout));
        self.settle(got)
    }

    /// What a look at the reply slot found, as the caller's answer.
    fn settle(&mut self, got: Result<Result<T, WorkError>, Miss>) -> Option<Result<T, WorkError>> {
        let answer = match got {
            Ok(answer) => answer,
            Err(Miss::Empty) => return None,
            // The scheduler dropped the reply: it stopped first.
            Err(Miss::Closed) => Err(WorkError::Stopped),
        };
        self.taken = true;
        Some(answer)
    }
}

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
///     .build()
///     .unwrap();
/// let mut op = manager.enqueue(WorkRequest::once("noop"));
/// block_on(async {
///     assert!(matches!((&mut op).await, Ok(Enqueued::New(_))));
///     assert_eq!(op.await, Err(WorkError::AlreadyTaken));
/// });
/// manager.shutdown();
/// ```
impl<T> Future for Operation<T> {
    type Output = Result<T, WorkError>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.get_mut();
        if !this.taken && this.rx.poll_ready(cx).is_pending() {
            return std::task::Poll::Pending;
        }
        std::task::Poll::Ready(this.try_result().unwrap_or(Err(WorkError::Stopped)))
    }
}

impl<T> fmt::Debug for Operation<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.taken {
            "taken"
        } else if self.rx.is_empty() {
            "waiting"
        } else {
            "answered"
        };
        f.debug_struct("Operation").field("state", &state).finish()
    }
}
