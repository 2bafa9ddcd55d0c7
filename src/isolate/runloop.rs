//! The isolate's thread: start, then messages and control requests until exit.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel as cb;

use super::shared::{Control, Item, Shared};
use super::{Context, ExitReason, Isolate, IsolateError, IsolateState};
use crate::codec::envelope::Envelope;
use crate::oneshot;
use crate::pending::Reply;
use crate::unwind;

/// Busy time, read from the clock when a run of messages starts, before
/// each reply (so a caller that got its reply sees the time counted), and
/// every [`Busy::FLUSH`] casts in a run; not twice a message: a clock read
/// costs about 20 ns, a small message not much more.
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
            self.since = Some(Instant::now());
        } else if self.uncounted >= Self::FLUSH {
            self.count(shared);
        }
        self.uncounted += 1;
    }

    /// Adds the time since the clock was last read.
    fn count<I: Isolate>(&mut self, shared: &Shared<I>) {
        if let Some(since) = self.since {
            let now = Instant::now();
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
        self.since = None;
    }
}

/// How long an isolate polls its empty mailbox before it blocks.
const POLL: std::time::Duration = std::time::Duration::from_micros(5);

/// What a step of the loop decided.
type Exit = Option<ExitReason>;

struct RunLoop<I: Isolate> {
    shared: Arc<Shared<I>>,
    control_rx: cb::Receiver<Control>,
    mailbox_rx: cb::Receiver<Item>,
    paused: HashSet<u64>,
    orphaned: bool,
    ctx: Context<I>,
}

/// Runs an isolate to its end on the current thread.
pub(super) fn run<I: Isolate>(
    shared: Arc<Shared<I>>,
    control_rx: cb::Receiver<Control>,
    args: Envelope,
    paused: Option<u64>,
) {
    let span =
        tracing::debug_span!(target: "isolates", "isolate", name = %shared.name, id = shared.id);
    let _entered = span.enter();
    let mut run_loop = RunLoop {
        mailbox_rx: shared.mailbox_rx.clone(),
        ctx: Context {
            shared: Arc::clone(&shared),
            stop_requested: false,
        },
        shared: Arc::clone(&shared),
        control_rx,
        paused: paused.into_iter().collect(),
        orphaned: false,
    };
    let reason = run_loop.run(args);
    // Close before the loop's receivers drop: queued asks get the reason.
    shared.close(reason);
}

impl<I: Isolate> RunLoop<I> {
    fn run(&mut self, args: Envelope) -> ExitReason {
        tracing::debug!(target: "isolates", "isolate spawned");
        if let Some(reason) = self.wait_while_paused() {
            return reason;
        }
        let args = match self.shared.codecs.args.decode(args) {
            Ok(args) => args,
            Err(e) => {
                return ExitReason::Failed(format!("start arguments could not be decoded: {e}"));
            }
        };
        let ctx = &mut self.ctx;
        let mut state = match unwind::catch(|| I::start(args, ctx)) {
            Ok(Ok(state)) => state,
            Ok(Err(error)) => {
                let message = error.to_string();
                self.shared.report_error(IsolateError {
                    message: message.clone(),
                    stack: String::new(),
                });
                return ExitReason::Failed(message);
            }
            Err(caught) => {
                self.shared.report_error(IsolateError {
                    message: caught.message.clone(),
                    stack: caught.stack,
                });
                return ExitReason::Panicked(caught.message);
            }
        };
        self.shared.set_state(IsolateState::Running);
        let reason = if self.ctx.stop_requested {
            ExitReason::Normal
        } else {
            self.serve(&mut state)
        };
        let _ = unwind::catch(|| state.stopping(&reason));
        let _ = unwind::catch(move || drop(state));
        reason
    }

    /// Serves control requests only, until no pause holds.
    fn wait_while_paused(&mut self) -> Exit {
        while !self.paused.is_empty() {
            self.shared.set_state(IsolateState::Paused);
            if let Some(reason) = self.urgent() {
                return Some(reason);
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

    fn serve(&mut self, state: &mut I) -> ExitReason {
        let mut busy = Busy::default();
        let reason = self.serve_until_exit(state, &mut busy);
        busy.stop(&self.shared);
        reason
    }

    fn serve_until_exit(&mut self, state: &mut I, busy: &mut Busy) -> ExitReason {
        loop {
            if let Some(reason) = self.urgent() {
                return reason;
            }
            // Control requests flag themselves, so a message costs one load
            // here unless one is waiting.
            if self.shared.take_wake() {
                while let Ok(control) = self.control_rx.try_recv() {
                    if let Some(reason) = self.apply(control) {
                        return reason;
                    }
                }
                if !self.paused.is_empty() {
                    busy.stop(&self.shared);
                    if let Some(reason) = self.wait_while_paused() {
                        return reason;
                    }
                    self.shared.set_state(IsolateState::Running);
                    continue;
                }
            }
            let item = match self.mailbox_rx.try_recv() {
                Ok(item) => item,
                Err(_) => {
                    if self.orphaned && self.shared.handles.load(Ordering::SeqCst) == 0 {
                        return ExitReason::Normal;
                    }
                    busy.stop(&self.shared);
                    match self.wait_for_mail() {
                        Some(item) => item,
                        // The shared record keeps a sender: cannot happen.
                        None => return ExitReason::Normal,
                    }
                }
            };
            let Item::Message { envelope, reply } = item else {
                self.shared.took_wake();
                continue;
            };
            busy.tick(&self.shared);
            if let Some(reason) = self.handle(state, envelope, reply, busy) {
                return reason;
            }
        }
    }

    /// Waits for the next item: polls at a steady short interval for a few
    /// microseconds (a request/reply partner usually answers within that,
    /// and crossbeam's exponential backoff would notice it up to a growing
    /// batch of pauses late), then blocks.
    fn wait_for_mail(&self) -> Option<Item> {
        let spin_until = Instant::now() + POLL;
        loop {
            for _ in 0..32 {
                if let Ok(item) = self.mailbox_rx.try_recv() {
                    return Some(item);
                }
                std::hint::spin_loop();
            }
            if Instant::now() >= spin_until {
                return self.mailbox_rx.recv().ok();
            }
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
            Control::Ping(reply) => reply.send(Reply::Value(Envelope::default())),
            Control::Orphaned => self.orphaned = true,
            Control::Wake => {}
        }
        None
    }

    fn handle(
        &mut self,
        state: &mut I,
        envelope: Envelope,
        reply: Option<oneshot::Sender<Reply>>,
        busy: &mut Busy,
    ) -> Exit {
        let shared = &*self.shared;
        let msg = match shared.codecs.message.decode(envelope) {
            Ok(msg) => msg,
            Err(e) => {
                shared.counters.bad_messages.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target: "isolates", error = %e, "dropped a message that failed to decode");
                if let Some(reply) = reply {
                    reply.send(Reply::BadMessage(e));
                }
                return None;
            }
        };
        let _span = tracing::trace_span!(target: "isolates", "message").entered();
        let ctx = &mut self.ctx;
        let result = unwind::catch(|| state.handle(msg, ctx));
        if reply.is_some() {
            busy.count(shared);
        }
        shared.counters.handled.fetch_add(1, Ordering::Relaxed);
        let fatal = match result {
            Ok(Ok(value)) => {
                if let Some(reply) = reply {
                    reply.send(match shared.codecs.reply.encode(&value) {
                        Ok(envelope) => Reply::Value(envelope),
                        Err(e) => Reply::Unencodable(e),
                    });
                }
                None
            }
            Ok(Err(error)) => {
                let message = error.to_string();
                if let Some(reply) = reply {
                    reply.send(match shared.codecs.error.encode(&error) {
                        Ok(envelope) => Reply::Failed(envelope),
                        Err(e) => Reply::Unencodable(e),
                    });
                }
                shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                shared.report_error(IsolateError {
                    message: message.clone(),
                    stack: String::new(),
                });
                Some(ExitReason::Failed(message))
            }
            Err(caught) => {
                if let Some(reply) = reply {
                    reply.send(Reply::Panicked(caught.message.clone()));
                }
                shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                shared.report_error(IsolateError {
                    message: caught.message.clone(),
                    stack: caught.stack,
                });
                Some(ExitReason::Panicked(caught.message))
            }
        };
        if let Some(reason) = fatal
            && shared.errors_are_fatal.load(Ordering::Relaxed)
        {
            return Some(reason);
        }
        self.ctx.stop_requested.then_some(ExitReason::Normal)
    }
}
