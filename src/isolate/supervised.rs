//! Isolates a supervisor restarts in place (crate-internal).
//!
//! A supervised isolate keeps one shared record, so one mailbox and one set
//! of handles, across its incarnations: when an incarnation ends, its
//! control channel and any message it held go to the supervisor instead of
//! the mailbox being drained, and the next incarnation starts from them.
//! Callers keep their handles; queued messages wait for the restart.

use std::sync::Arc;

use super::builder::{Start, spawn_thread};
use super::shared::{ExitHook, Leftover, Shared};
use super::{ExitReason, Isolate, IsolateBuilder, IsolateHandle, Priority};
use crate::codec::Codec;
use crate::codec::envelope::Envelope;
use crate::error::{CodecError, SpawnError};

/// One supervised isolate: how to start it again, and what its last
/// incarnation left.
pub(crate) struct Restartable<I: Isolate>
where
    I::Args: Clone,
{
    shared: Arc<Shared<I>>,
    args: I::Args,
    stack_size: Option<usize>,
    /// The control channel and held message, while no incarnation runs.
    leftover: Option<Leftover>,
    /// Incarnations started.
    incarnations: u64,
}

impl<I: Isolate> Restartable<I>
where
    I::Args: Clone,
{
    /// Builds the isolate, not started; returns it and its stable handle.
    pub(crate) fn new<C: Codec>(
        builder: &IsolateBuilder<C>,
        args: I::Args,
    ) -> Result<(Self, IsolateHandle<I>), SpawnError> {
        let (shared, control_rx) = builder.prepare::<I>()?;
        // Copying: check once that the arguments encode, so a restart
        // cannot fail on them later (they are encoded again for every
        // incarnation). Moving: each incarnation gets its own clone.
        if shared.codecs.args.copies() {
            shared
                .codecs
                .args
                .encode_copy(&args, "start argument")
                .map_err(SpawnError::Args)?;
        }
        let handle = IsolateHandle::new(Arc::clone(&shared));
        let restartable = Restartable {
            shared,
            args,
            stack_size: builder.thread_stack_size(),
            leftover: Some(Leftover::new::<I>(control_rx, None)),
            incarnations: 0,
        };
        Ok((restartable, handle))
    }

    /// Starts an incarnation and waits until its `start` has returned (as
    /// OTP starts children one after another); when it ends, `hook` gets its
    /// reason and what it left (hand that back with [`ended`](Self::ended)).
    pub(crate) fn start(&mut self, hook: ExitHook) -> Result<(), SpawnError> {
        let Some(leftover) = self.leftover.take() else {
            // Already running.
            return Ok(());
        };
        let codec = &self.shared.codecs.args;
        let args = if codec.copies() {
            codec.encode_copy(&self.args, "start argument")
        } else {
            crate::unwind::catch(|| self.args.clone())
                .map(Envelope::Moved)
                .map_err(|caught| {
                    CodecError::Encode(format!(
                        "cloning the start arguments panicked: {}",
                        caught.message
                    ))
                })
        };
        let args = match args {
            Ok(args) => args,
            Err(e) => {
                self.leftover = Some(leftover);
                return Err(SpawnError::Args(e));
            }
        };
        self.shared.set_supervisor(Some(hook));
        let (control_rx, held) = leftover.into_parts::<I>();
        // What was meant for the last incarnation (a kill that came after it
        // had already exited, its pauses) must not reach this one.
        self.shared.reset_for_restart(&control_rx);
        // Keep the channel here in case the thread cannot start (a held
        // message is then dropped, which resolves its ask).
        let start = Start {
            control_rx: control_rx.clone(),
            args,
            paused: None,
            held,
        };
        if let Err(e) = spawn_thread(Arc::clone(&self.shared), start, self.stack_size) {
            self.leftover = Some(Leftover::new::<I>(control_rx, None));
            return Err(e);
        }
        self.incarnations += 1;
        self.shared.wait_started(self.incarnations);
        Ok(())
    }

    /// Takes back what an ended incarnation left.
    pub(crate) fn ended(&mut self, leftover: Leftover) {
        self.leftover = Some(leftover);
    }

    /// Asks the running incarnation to exit: `Immediate` also raises the
    /// flag [`Context::kill_requested`](crate::Context::kill_requested).
    pub(crate) fn stop(&self, priority: Priority) {
        self.shared.kill(priority);
    }

    /// Ends the isolate for good: queued asks resolve with `reason`. An
    /// incarnation still running (abandoned: its thread is stuck in a
    /// handler) is ended here for its watchers: its monitors and links are
    /// told and its names forgotten now, as the isolate is reported dead
    /// (its thread's own end, later, finds nothing left to tell).
    pub(crate) fn close(&mut self, reason: ExitReason) {
        self.shared.set_supervisor(None);
        self.shared.close(reason.clone());
        super::runloop::abandon(&self.shared, &reason);
        if let Some(item) = self.leftover.take().and_then(|l| l.into_parts::<I>().1) {
            self.shared.discard(item);
        }
    }
}
