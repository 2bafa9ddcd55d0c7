//! The one result-handle behaviour: a result that resolves once, taken
//! with `try_take` (never blocks), `wait`, `wait_timeout`, `wait_deadline`,
//! or `.await`.
//!
//! [`Pending`](crate::Pending), [`TaskHandle`](crate::pool::TaskHandle)
//! and the work manager's `Operation` each wrap a [`Handle`] around their
//! own [`Source`] (where the result comes from); the rules of taking live
//! here once: a result is taken at most once, a later `try_take` or timed
//! wait gives `None`, and a later `wait` or `.await` gives the source's
//! "already taken" error.

use std::fmt;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::oneshot::{self, Miss};

/// Where a handle's result comes from.
pub(crate) trait Source {
    /// What the handle resolves to.
    type Output;

    /// Takes the result if it is there; never blocks. Called at most once
    /// after it returned `Some`.
    fn try_take(&mut self) -> Option<Self::Output>;

    /// Waits until `deadline` (forever if `None`) for the result.
    fn take_until(&mut self, deadline: Option<Instant>) -> Option<Self::Output>;

    /// Has `waker` woken once the result arrives, replacing an earlier
    /// waker; takes nothing.
    fn register(&mut self, waker: &Waker);

    /// Drops a registered waker that nothing will wake any more; returns
    /// whether it was still registered (if not, the resolver took it and
    /// wakes it).
    fn forget_waker(&mut self) -> bool {
        true
    }

    /// Whether the result has arrived (taken or not); never blocks.
    fn arrived(&self) -> bool;

    /// The error a handle gives when its result was already taken.
    fn already_taken(&self) -> Self::Output;
}

/// A result that resolves once, over a [`Source`].
pub(crate) struct Handle<S> {
    source: S,
    taken: bool,
}

impl<S: Source> Handle<S> {
    pub(crate) fn new(source: S) -> Self {
        Handle {
            source,
            taken: false,
        }
    }

    /// The source, for a handle type's own extra methods.
    pub(crate) fn source(&self) -> &S {
        &self.source
    }

    pub(crate) fn is_taken(&self) -> bool {
        self.taken
    }

    pub(crate) fn is_done(&self) -> bool {
        self.taken || self.source.arrived()
    }

    pub(crate) fn try_take(&mut self) -> Option<S::Output> {
        if self.taken {
            return None;
        }
        self.settle(|s| s.try_take())
    }

    /// The result, or the "already taken" error, if the handle is done;
    /// never blocks.
    pub(crate) fn take_done(&mut self) -> Option<S::Output> {
        if self.taken {
            return Some(self.source.already_taken());
        }
        self.try_take()
    }

    pub(crate) fn wait(mut self) -> S::Output {
        match self.wait_until(None) {
            Some(result) => result,
            None => self.source.already_taken(),
        }
    }

    pub(crate) fn wait_timeout(&mut self, timeout: Duration) -> Option<S::Output> {
        self.wait_until(crate::time::deadline_after(timeout))
    }

    pub(crate) fn wait_deadline(&mut self, deadline: Instant) -> Option<S::Output> {
        self.wait_until(Some(deadline))
    }

    fn wait_until(&mut self, deadline: Option<Instant>) -> Option<S::Output> {
        if self.taken {
            return None;
        }
        self.settle(|s| s.take_until(deadline))
    }

    pub(crate) fn poll_take(&mut self, cx: &mut Context<'_>) -> Poll<S::Output> {
        if let Some(result) = self.take_done() {
            return Poll::Ready(result);
        }
        self.source.register(cx.waker());
        // Resolved between the first look and the registration: the
        // resolver may have missed the waker.
        match self.try_take() {
            Some(result) => {
                // Woken anyway if the resolver took it: a spurious wake.
                let _ = self.source.forget_waker();
                Poll::Ready(result)
            }
            None => Poll::Pending,
        }
    }

    /// Has `waker` woken once the result arrives; returns `true` if the
    /// result is there already and nothing will wake it (the caller acts
    /// as woken). Either way the arrival is told exactly once: a result
    /// that arrives while the waker is being registered is told by the
    /// resolver (which took the waker) or by this `true`, never both.
    /// Takes nothing.
    pub(crate) fn wake_on_arrival(&mut self, waker: &Waker) -> bool {
        if self.is_done() {
            return true;
        }
        self.source.register(waker);
        if self.source.arrived() {
            // Taken back: the resolver missed it. Not there: the resolver
            // took it, and wakes it.
            return self.source.forget_waker();
        }
        false
    }

    fn settle(&mut self, take: impl FnOnce(&mut S) -> Option<S::Output>) -> Option<S::Output> {
        let result = take(&mut self.source)?;
        self.taken = true;
        Some(result)
    }

    /// A word for `Debug`: waiting, arrived or taken.
    pub(crate) fn state_word(&self) -> &'static str {
        if self.taken {
            "taken"
        } else if self.source.arrived() {
            "arrived"
        } else {
            "waiting"
        }
    }
}

impl<S> fmt::Debug for Handle<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("taken", &self.taken)
            .finish()
    }
}

/// Turns what came back on a reply slot (`None`: it closed empty) into the
/// handle's result.
type Resolver<R, O> = Box<dyn FnOnce(Option<R>) -> O + Send>;

/// A [`Source`] fed by a one-shot reply slot, or ready from the start.
pub(crate) struct Reply<R, O> {
    state: ReplyState<R, O>,
    already: fn() -> O,
}

enum ReplyState<R, O> {
    Waiting {
        rx: oneshot::Receiver<R>,
        resolve: Resolver<R, O>,
    },
    Ready(O),
    Spent,
}

impl<R, O> Reply<R, O> {
    /// Resolves through `resolve` once `rx` gets its value or closes;
    /// `already` makes the "already taken" error.
    pub(crate) fn waiting(
        rx: oneshot::Receiver<R>,
        resolve: impl FnOnce(Option<R>) -> O + Send + 'static,
        already: fn() -> O,
    ) -> Self {
        Reply {
            state: ReplyState::Waiting {
                rx,
                resolve: Box::new(resolve),
            },
            already,
        }
    }

    /// Resolved already, to `result`.
    pub(crate) fn ready(result: O, already: fn() -> O) -> Self {
        Reply {
            state: ReplyState::Ready(result),
            already,
        }
    }

    fn resolve(&mut self, got: Result<R, Miss>) -> Option<O> {
        let reply = match got {
            Ok(reply) => Some(reply),
            Err(Miss::Empty) => return None,
            Err(Miss::Closed) => None,
        };
        match std::mem::replace(&mut self.state, ReplyState::Spent) {
            ReplyState::Waiting { resolve, .. } => Some(resolve(reply)),
            ReplyState::Ready(result) => Some(result),
            ReplyState::Spent => None,
        }
    }
}

impl<R, O> Source for Reply<R, O> {
    type Output = O;

    fn try_take(&mut self) -> Option<O> {
        match &self.state {
            ReplyState::Waiting { rx, .. } => {
                let got = rx.try_recv();
                self.resolve(got)
            }
            ReplyState::Ready(_) => self.resolve(Err(Miss::Closed)),
            ReplyState::Spent => None,
        }
    }

    fn take_until(&mut self, deadline: Option<Instant>) -> Option<O> {
        match &self.state {
            ReplyState::Waiting { rx, .. } => {
                let got = rx.recv_until(deadline);
                self.resolve(got)
            }
            ReplyState::Ready(_) | ReplyState::Spent => self.try_take(),
        }
    }

    fn register(&mut self, waker: &Waker) {
        if let ReplyState::Waiting { rx, .. } = &self.state {
            rx.register(waker);
        }
    }

    fn forget_waker(&mut self) -> bool {
        match &self.state {
            ReplyState::Waiting { rx, .. } => rx.forget_waker(),
            ReplyState::Ready(_) | ReplyState::Spent => true,
        }
    }

    fn arrived(&self) -> bool {
        match &self.state {
            ReplyState::Waiting { rx, .. } => !rx.is_empty(),
            ReplyState::Ready(_) | ReplyState::Spent => true,
        }
    }

    fn already_taken(&self) -> O {
        (self.already)()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::oneshot::tests::counter;

    /// A source whose result arrives while the waker is being registered:
    /// the resolver either takes the waker and wakes it, or misses it.
    struct Racy {
        waker: Option<Waker>,
        arrived: bool,
        resolver_sees_waker: bool,
    }

    impl Source for Racy {
        type Output = u32;

        fn try_take(&mut self) -> Option<u32> {
            self.arrived.then_some(7)
        }

        fn take_until(&mut self, _: Option<Instant>) -> Option<u32> {
            self.try_take()
        }

        fn register(&mut self, waker: &Waker) {
            self.waker = Some(waker.clone());
            self.arrived = true;
            if self.resolver_sees_waker
                && let Some(waker) = self.waker.take()
            {
                waker.wake();
            }
        }

        fn forget_waker(&mut self) -> bool {
            self.waker.take().is_some()
        }

        fn arrived(&self) -> bool {
            self.arrived
        }

        fn already_taken(&self) -> u32 {
            0
        }
    }

    /// Told once: by the resolver (which took the waker) or by `true`,
    /// never both and never neither.
    #[test]
    fn an_arrival_racing_the_registration_is_told_exactly_once() {
        for resolver_sees_waker in [true, false] {
            let mut handle = Handle::new(Racy {
                waker: None,
                arrived: false,
                resolver_sees_waker,
            });
            let (count, waker) = counter(false);
            let here = handle.wake_on_arrival(&waker);
            let woken = count.wakes.load(Ordering::SeqCst);
            assert_eq!(here, !resolver_sees_waker);
            assert_eq!(usize::from(here) + woken, 1, "here {here}, woken {woken}");
            assert_eq!(handle.try_take(), Some(7));
        }
    }
}
