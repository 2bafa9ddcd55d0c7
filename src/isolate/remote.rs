//! A process isolate's body in its parent: a child process does the work,
//! and the run loop drives it with frames.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use std::os::unix::net::UnixStream;

use super::body::{Launched, ProcessSpec, RemoteBody};
use super::shared::{Control, Item, Shared};
use super::{Context, Crash, ExitReason, Isolate, IsolateBuilder};
use crate::backend::CodecWire;
use crate::backend::process::Channel;
use crate::backend::process::child::split_start;
use crate::backend::process::frame::{self, Kind};
use crate::backend::process::parent::{Broken, ChildProcess};
use crate::backend::process::{decode, decode_reason, encode_reason};
use crate::codec::Codec;
use crate::codec::envelope::Envelope;
use crate::error::CodecError;
use crate::invoke::{self, Invoked};
use crate::pending::Reply;
use crate::unwind;

/// What became of one message sent to the child.
pub(super) enum Outcome<I: Isolate> {
    /// The child's handler ran: what it came to. A bad input is a message
    /// that could not reach it (encoding here, decoding there); an
    /// unencodable one, a reply or error that could not come back.
    Called(Invoked<I::Reply, I::Error>),
    /// A cast was handled.
    Done,
    /// Not handled: the isolate had exited with this reason.
    Dead(ExitReason),
    /// The child died handling it.
    Gone(ExitReason),
}

static NEXT_CHILD: AtomicU64 = AtomicU64::new(1);

/// The largest first message sent behind the start frame (bytes, encoded):
/// well under a Unix socket's send buffer, with the start frame.
const FIRST_MAX: usize = 32 << 10;

impl<I: Isolate> RemoteBody<I> {
    /// Starts a child for the isolate: it waits for its start frame. On
    /// the caller's thread in `spawn`, so that the child's `exec` overlaps
    /// the start of the isolate's thread.
    pub(super) fn spawn_child(
        shared: &Arc<Shared<I>>,
        spec: &ProcessSpec<I>,
    ) -> Result<Launched, Crash> {
        let id = NEXT_CHILD.fetch_add(1, Ordering::Relaxed);
        let weak = Arc::downgrade(shared);
        let on_exit = Box::new(move |_: Crash| {
            if let Some(shared) = weak.upgrade() {
                shared.control(Control::Child { child: id }, true);
            }
        });
        let child = ChildProcess::spawn(
            &spec.options.launch(),
            spec.test_entry.as_deref(),
            spec.wire.limit(),
            on_exit,
        )?;
        Ok(Launched { child, id })
    }

    /// Sends the start frame to the child started for the isolate
    /// (`launched`: by `spawn`; started here if `None`);
    /// [`started`](Self::started) waits for the isolate in it to start. A
    /// message may go out in between ([`send_first`](Self::send_first)):
    /// it waits in the channel while the child starts, so the child finds
    /// it there.
    pub(super) fn launch(
        shared: &Arc<Shared<I>>,
        spec: &ProcessSpec<I>,
        args: I::Args,
        launched: Option<Result<Launched, Crash>>,
    ) -> Result<Self, ExitReason> {
        let args = match spec.wire.encode_args(&args) {
            Ok(args) => args,
            Err(e) => {
                if let Some(Ok(launched)) = launched {
                    // It waits for a start that will not come.
                    let reason = encode_reason(&ExitReason::Killed);
                    launched.child.stop(&reason, spec.options.stop_timeout);
                }
                return Err(ExitReason::Failed(format!(
                    "start arguments could not be encoded: {e}"
                )));
            }
        };
        let Launched { child, id } = launched
            .unwrap_or_else(|| Self::spawn_child(shared, spec))
            .map_err(ExitReason::Crashed)?;
        let kill = child.kill_switch();
        shared.set_child_kill(Some(Arc::clone(&kill)));
        // A kill that came before the switch was there.
        if shared.kill_requested.load(Ordering::SeqCst) {
            kill.kill();
        }
        let mut body = RemoteBody {
            child,
            id,
            wire: Arc::clone(&spec.wire),
            stop_timeout: spec.options.stop_timeout,
            pending_exit: None,
            owed: false,
            sent_first: false,
            start_deadline: Instant::now() + spec.options.start_timeout,
        };
        // A child that does not read (it never starts) must not hold this
        // thread in a write past the start timeout: a start frame or first
        // message larger than the socket's buffer waits for its reads.
        body.child.write_timeout(Some(spec.options.start_timeout));
        // The name fits the start frame's overhead.
        let mut end = shared.name.len().min(1024);
        while !shared.name.is_char_boundary(end) {
            end -= 1;
        }
        let name = &shared.name.as_bytes()[..end];
        let name_len = (name.len() as u32).to_le_bytes();
        body.child.send(
            Kind::Start,
            &[&spec.key.to_le_bytes(), &name_len, name, &args],
        );
        Ok(body)
    }

    /// Sends the first message behind the start frame, before the child
    /// has started: it is handled right after `start`, as the first message
    /// in the mailbox would be, and [`call`](Self::call) then only reads
    /// its answer. Whether it went (a message that does not encode stays
    /// with the caller, to fail as usual).
    pub(super) fn send_first(&mut self, msg: &I::Message, cast: bool) -> bool {
        let Ok(bytes) = self.wire.encode_message(msg) else {
            return false;
        };
        // Only a message the socket's buffer takes at once: a larger one
        // would wait for the child's `start` to return before the start
        // could be waited for. It goes after the start, as usual.
        if bytes.len() > FIRST_MAX {
            return false;
        }
        let kind = if cast { Kind::Cast } else { Kind::Ask };
        self.child.send(kind, &[&bytes]);
        self.sent_first = true;
        true
    }

    /// Waits for the isolate in the child to start (after
    /// [`launch`](Self::launch)). If it does not, a first message sent was
    /// not handled.
    pub(super) fn started(
        mut self,
        shared: &Arc<Shared<I>>,
        spec: &ProcessSpec<I>,
    ) -> Result<Self, ExitReason> {
        let kill = self.child.kill_switch();
        match self.child.read(Some(self.start_deadline)) {
            Ok((Kind::Started, _)) => {
                self.child.write_timeout(None);
                Ok(self)
            }
            Ok((Kind::Exited, reason)) => {
                let reason = decode_reason(&reason).unwrap_or_else(|| {
                    ExitReason::Crashed(Crash::Protocol(
                        "an exit frame that does not decode".into(),
                    ))
                });
                self.stop(&reason);
                Err(reason)
            }
            Ok((kind, _)) => {
                kill.kill();
                self.stop(&ExitReason::Killed);
                Err(ExitReason::Crashed(Crash::Protocol(format!(
                    "a {kind:?} frame before the isolate started"
                ))))
            }
            Err(Broken::Gone(crash)) => Err(gone(shared, crash)),
            Err(Broken::Timeout) => {
                let timeout = spec.options.start_timeout;
                self.stop(&ExitReason::Killed);
                if shared.kill_requested.load(Ordering::SeqCst) {
                    return Err(ExitReason::Killed);
                }
                Err(ExitReason::Crashed(Crash::Protocol(format!(
                    "the child did not start its isolate within {timeout:?} \
                     (is isolates::process::Registry::init the first call in main?)"
                ))))
            }
        }
    }

    /// Has the child handle one message, and waits for what became of it.
    pub(super) fn call(&mut self, shared: &Shared<I>, msg: &I::Message, cast: bool) -> Outcome<I> {
        self.call_until(shared, msg, cast, None).unwrap_or_else(|| {
            Outcome::Gone(ExitReason::Crashed(Crash::Protocol(
                "no answer from the child".into(),
            )))
        })
    }

    /// As [`call`](Self::call), waiting at most until `deadline`: `None`
    /// if the answer has not started by then (it is then owed).
    fn call_until(
        &mut self,
        shared: &Shared<I>,
        msg: &I::Message,
        cast: bool,
        deadline: Option<Instant>,
    ) -> Option<Outcome<I>> {
        let bytes = match self.wire.encode_message(msg) {
            Ok(bytes) => bytes,
            Err(e) => return Some(Outcome::Called(Invoked::BadInput(e))),
        };
        let kind = if cast { Kind::Cast } else { Kind::Ask };
        // A failed write means the child is going: the read says how.
        self.child.send(kind, &[&bytes]);
        self.wait_answer(shared, deadline)
    }

    /// The answer to the message sent behind the start frame
    /// ([`send_first`](Self::send_first)).
    pub(super) fn call_first(&mut self, shared: &Shared<I>) -> Outcome<I> {
        self.sent_first = false;
        self.answer(shared, false)
    }

    /// Waits for the answer to the message just sent (at most until
    /// `deadline`: `None` if it has not started by then; it is then owed).
    fn wait_answer(&mut self, shared: &Shared<I>, deadline: Option<Instant>) -> Option<Outcome<I>> {
        let mut ready = false;
        if let Some(deadline) = deadline {
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.child.wait_readable(wait) {
                Ok(true) => ready = true,
                Ok(false) => {
                    self.owed = true;
                    return None;
                }
                Err(Broken::Gone(crash)) => return Some(Outcome::Gone(gone(shared, crash))),
                Err(Broken::Timeout) => {}
            }
        }
        Some(self.answer(shared, ready))
    }

    /// Reads the child's answer to the message it was sent (`ready`: the
    /// channel was just seen readable, so the answer has started).
    fn answer(&mut self, shared: &Shared<I>, ready: bool) -> Outcome<I> {
        let read = if ready {
            self.child.read_started()
        } else {
            self.child.read(None)
        };
        let (kind, body) = match read {
            Ok(frame) => frame,
            Err(Broken::Gone(crash)) => return Outcome::Gone(gone(shared, crash)),
            Err(Broken::Timeout) => {
                return Outcome::Gone(ExitReason::Crashed(Crash::Protocol(
                    "no answer from the child".into(),
                )));
            }
        };
        if let Some(answer) = kind.answer() {
            return Outcome::Called(Invoked::from_frame(answer, &body).encode_with(
                |value| self.wire.decode_reply(&value),
                |error| self.wire.decode_error(&error),
            ));
        }
        match kind {
            Kind::Done => Outcome::Done,
            // It stopped itself (after its last answer) before this one.
            Kind::Exited => match decode_reason(&body) {
                Some(reason) => Outcome::Dead(reason),
                None => self.broken("an exit frame that does not decode"),
            },
            other => self.broken(&format!("a {other:?} frame in answer to a message")),
        }
    }

    fn broken(&self, why: &str) -> Outcome<I> {
        self.child.kill_switch().kill();
        Outcome::Gone(ExitReason::Crashed(Crash::Protocol(why.to_string())))
    }

    /// What the isolate's thread must know before using the channel, or
    /// when told to look: an exit a direct ask ran into, the answer to a
    /// direct ask that timed out (accounted as a cast's would be), or the
    /// child's death. `Some` ends the isolate.
    pub(super) fn look(&mut self, shared: &Shared<I>) -> Option<ExitReason> {
        if let Some(reason) = &self.pending_exit {
            return Some(reason.clone());
        }
        if self.owed {
            self.owed = false;
            let outcome = self.answer(shared, false);
            if let Some(reason) = account(shared, &outcome) {
                self.pending_exit = Some(reason.clone());
                return Some(reason);
            }
        }
        if self.child.has_died() {
            return Some(self.exit_reason(shared));
        }
        None
    }

    /// The child was reaped while the isolate was idle: why it exited (it
    /// said so, having stopped itself, or it crashed).
    fn exit_reason(&mut self, shared: &Shared<I>) -> ExitReason {
        let soon = Instant::now() + std::time::Duration::from_millis(100);
        match self.child.read(Some(soon)) {
            Ok((Kind::Exited, body)) => decode_reason(&body).unwrap_or_else(|| {
                ExitReason::Crashed(Crash::Protocol("an exit frame that does not decode".into()))
            }),
            Ok((kind, _)) => ExitReason::Crashed(Crash::Protocol(format!(
                "a {kind:?} frame while no message was sent"
            ))),
            Err(Broken::Gone(crash)) => gone(shared, crash),
            Err(Broken::Timeout) => gone(
                shared,
                Crash::Protocol("the child exited without closing its channel".into()),
            ),
        }
    }

    /// Ends the child at the isolate's end, for `reason`. After an
    /// immediate kill (SIGKILL, no grace) the child is let die: the
    /// isolate's end does not wait for its exit (which `join` waits for,
    /// reaping it: the exit then wakes the joining thread itself, not this
    /// one and through it the joiner). Otherwise as [`stop`](Self::stop).
    pub(super) fn end(self, shared: &Shared<I>, reason: &ExitReason) {
        let killed =
            matches!(reason, ExitReason::Killed) && shared.kill_requested.load(Ordering::SeqCst);
        if !killed || !self.child.can_let_die() {
            return self.stop(reason);
        }
        if let Some(dying) = self.child.let_die() {
            shared.set_dying(dying);
        }
    }

    /// Asks the child to finish and exit; kills it if it takes longer than
    /// the stop timeout. Returns once it is reaped.
    pub(super) fn stop(self, reason: &ExitReason) {
        self.child.stop(&encode_reason(reason), self.stop_timeout);
    }
}

/// Counts what a direct ask's answer means for the isolate: errors are
/// reported; a fatal one, or the child's end, is the reason it exits.
fn account<I: Isolate>(shared: &Shared<I>, outcome: &Outcome<I>) -> Option<ExitReason> {
    let (message, reason) = match outcome {
        Outcome::Called(Invoked::Failed(error)) => {
            let message = unwind::describe(error);
            (message.clone(), ExitReason::Failed(message))
        }
        Outcome::Called(Invoked::Panicked(caught)) => (
            caught.message.clone(),
            ExitReason::Panicked(caught.message.clone()),
        ),
        Outcome::Dead(reason) => return Some(reason.clone()),
        Outcome::Gone(reason) => {
            if !matches!(reason, ExitReason::Killed) {
                shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                shared.report_error(super::IsolateError {
                    message: reason.to_string(),
                    stack: String::new(),
                });
            }
            return Some(reason.clone());
        }
        Outcome::Called(Invoked::BadInput(_)) => {
            shared.counters.bad_messages.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Outcome::Called(Invoked::Value(_) | Invoked::Unencodable(_)) | Outcome::Done => {
            count_handled(shared);
            return None;
        }
    };
    count_handled(shared);
    shared.counters.errors.fetch_add(1, Ordering::Relaxed);
    shared.report_error(super::IsolateError {
        message,
        stack: String::new(),
    });
    // A panic always ends the isolate (its state may be half-changed).
    (matches!(reason, ExitReason::Panicked(_)) || shared.errors_are_fatal.load(Ordering::Relaxed))
        .then_some(reason)
}

/// Counted by whichever thread used the child: an atomic add.
fn count_handled<I: Isolate>(shared: &Shared<I>) {
    shared.counters.handled.fetch_add(1, Ordering::Relaxed);
}

/// What an `ask` of isolate `I` gives.
type AskResult<I> = Result<<I as Isolate>::Reply, crate::AskError<<I as Isolate>::Error>>;

/// A blocking `ask` of a process isolate whose thread is parked with an
/// empty mailbox: the caller talks to the child itself, saving two thread
/// hops (the round trip then costs about what the socket's does). The
/// message comes back (`Err`) when the isolate's thread is, or may be, at
/// work: it then goes through the mailbox, so that a sender's messages stay
/// in order.
///
/// Ordering: the isolate's thread clears `taking` only while parked, and
/// raises it before it looks at its mailbox; a caller reads `taking` and
/// the mailbox after its own earlier sends. Either it sees the thread
/// parked and its own earlier messages handled, or it goes the long way.
pub(super) fn direct_ask<I: Isolate>(
    shared: &Shared<I>,
    msg: I::Message,
    timeout: std::time::Duration,
) -> Result<AskResult<I>, I::Message> {
    use crate::AskError;
    let idle = |shared: &Shared<I>| {
        !shared.taking.load(Ordering::SeqCst)
            && shared.state() == super::IsolateState::Running
            && !shared.wake_pending()
            && shared.queued() == 0
            && !shared.is_closed()
    };
    if !idle(shared) {
        return Err(msg);
    }
    let Some(mut conn) = shared.conn.try_lock() else {
        return Err(msg);
    };
    let Some(body) = conn.as_mut() else {
        return Err(msg);
    };
    if !idle(shared)
        || body.owed
        || body.sent_first
        || body.pending_exit.is_some()
        || body.child.has_died()
    {
        return Err(msg);
    }
    let deadline = crate::time::deadline_after(timeout);
    let started = Instant::now();
    let outcome = body.call_until(shared, &msg, false, deadline);
    let id = body.id;
    let Some(outcome) = outcome else {
        // Its thread reads the answer when it comes.
        drop(conn);
        shared.control(Control::Child { child: id }, true);
        return Ok(Err(AskError::Timeout));
    };
    let exit = account(shared, &outcome);
    shared.add_busy(started.elapsed());
    if let Some(reason) = exit {
        body.pending_exit = Some(reason);
        drop(conn);
        shared.control(Control::Child { child: id }, true);
    }
    Ok(match outcome {
        Outcome::Called(Invoked::Value(value)) => Ok(value),
        Outcome::Called(Invoked::Failed(error)) => Err(AskError::Failed(error)),
        Outcome::Called(Invoked::Panicked(caught)) => Err(AskError::Panicked(caught.message)),
        Outcome::Called(Invoked::BadInput(e)) => Err(AskError::BadMessage(e)),
        Outcome::Called(Invoked::Unencodable(e)) => Err(AskError::BadReply(e)),
        Outcome::Dead(reason) | Outcome::Gone(reason) => Err(AskError::Dead(reason)),
        Outcome::Done => Err(AskError::BadReply(CodecError::Malformed(
            "the child answered an ask as a cast".into(),
        ))),
    })
}

/// The reason for a child that died: a kill we were asked for is `Killed`,
/// anything else is how it crashed.
fn gone<I: Isolate>(shared: &Shared<I>, crash: Crash) -> ExitReason {
    if shared.kill_requested.load(Ordering::SeqCst) {
        ExitReason::Killed
    } else {
        ExitReason::Crashed(crash)
    }
}

/// Runs isolate `I` for the parent on `channel`, in the child: its state
/// lives on this thread; returns the exit code.
pub(crate) fn serve_child<I: Isolate, C: Codec>(
    codec: &C,
    mut channel: Channel,
    start: Vec<u8>,
) -> i32 {
    let write = |channel: &mut UnixStream, kind: Kind, body: &[u8]| {
        frame::write(channel, kind, &[body]).is_ok()
    };
    let Some((name, args)) = split_start(&start) else {
        let reason = ExitReason::Failed("a malformed start frame".into());
        write(&mut channel.writer, Kind::Exited, &encode_reason(&reason));
        return 0;
    };
    let args = match decode::<I::Args, C>(codec, args, "start argument") {
        Ok(args) => args,
        Err(e) => {
            let reason = ExitReason::Failed(format!("start arguments could not be decoded: {e}"));
            write(&mut channel.writer, Kind::Exited, &encode_reason(&reason));
            return 0;
        }
    };
    let shared = match IsolateBuilder::new().name(name).prepare::<I>() {
        Ok((shared, _control)) => shared,
        Err(e) => {
            let reason = ExitReason::Failed(e.to_string());
            write(&mut channel.writer, Kind::Exited, &encode_reason(&reason));
            return 0;
        }
    };
    // No incarnation of a parent's loop: timers, monitors and links say
    // so with an error.
    let mut ctx = Context::new(Arc::clone(&shared), None);
    let mut state = match unwind::catch(|| I::start(args, &mut ctx)) {
        // `Context::exit`: a normal end.
        Err(_) if ctx.exiting => {
            write(
                &mut channel.writer,
                Kind::Exited,
                &encode_reason(&ExitReason::Normal),
            );
            return 0;
        }
        Ok(Ok(state)) => state,
        Ok(Err(error)) => {
            let reason = ExitReason::Failed(unwind::describe(&error));
            write(&mut channel.writer, Kind::Exited, &encode_reason(&reason));
            return 0;
        }
        Err(caught) => {
            let reason = ExitReason::Panicked(caught.message);
            write(&mut channel.writer, Kind::Exited, &encode_reason(&reason));
            return 0;
        }
    };
    let ended = |state: I, reason: &ExitReason| {
        let mut state = state;
        let _ = unwind::catch(|| state.stopping(reason));
        let _ = unwind::catch(move || drop(state));
    };
    if ctx.stop_requested {
        write(
            &mut channel.writer,
            Kind::Exited,
            &encode_reason(&ExitReason::Normal),
        );
        ended(state, &ExitReason::Normal);
        return 0;
    }
    // When the first message is already waiting (sent behind the start
    // frame), `Started` goes out with its answer: one write, and one
    // wake-up of the parent.
    let mut started_owed = channel.message_waiting();
    let Channel {
        writer: mut channel,
        mut reader,
    } = channel;
    if !started_owed && !write(&mut channel, Kind::Started, &[]) {
        return 0;
    }
    let limit = codec.limit().saturating_add(frame::OVERHEAD);
    let wire = CodecWire(codec.clone());
    loop {
        let (kind, body) = match frame::read(&mut reader, limit) {
            Ok(frame) => frame,
            // The parent is gone.
            Err(_) => return 0,
        };
        let cast = match kind {
            Kind::Ask => false,
            Kind::Cast => true,
            Kind::Stop => {
                let reason = decode_reason(&body).unwrap_or(ExitReason::Killed);
                ended(state, &reason);
                return 0;
            }
            _ => return 0,
        };
        let msg = wire.decode::<I::Message>(&body, "message");
        let invoked = invoke::invoke(msg, |msg| state.handle(msg, &mut ctx));
        let (kind, answer) = if cast && matches!(invoked, Invoked::Value(_)) {
            (Kind::Done, Vec::new())
        } else {
            let (answer, body) = invoked
                .encode_with(
                    |value| wire.encode(&value, "reply"),
                    |error| wire.encode(&error, "error"),
                )
                .into_frame();
            (Kind::from(answer), body)
        };
        if ctx.exiting {
            // `Context::exit`: this message's sender hears of the exit.
            let exited = encode_reason(&ExitReason::Normal);
            send(&mut channel, &mut started_owed, Kind::Exited, &exited);
            ended(state, &ExitReason::Normal);
            return 0;
        }
        if !send(&mut channel, &mut started_owed, kind, &answer) {
            return 0;
        }
        // Messages it sent itself meanwhile are handled before the next
        // one from the parent; their answers go to their senders here.
        while let Ok(item) = shared.mailbox_rx.try_recv() {
            let Item { envelope, reply } = item;
            let Envelope::Moved(msg) = envelope else {
                continue;
            };
            let invoked = invoke::call(|| state.handle(msg, &mut ctx));
            if ctx.exiting {
                if let Some(reply) = reply {
                    reply.send(Reply::Dead(ExitReason::Normal));
                }
                break;
            }
            if let Some(reply) = reply {
                let codecs = &shared.codecs;
                reply.send(invoked.pack(&codecs.reply, &codecs.error).into_reply());
            }
        }
        if ctx.stop_requested {
            let exited = encode_reason(&ExitReason::Normal);
            send(&mut channel, &mut started_owed, Kind::Exited, &exited);
            ended(state, &ExitReason::Normal);
            return 0;
        }
    }
}

/// Writes a frame to the parent, behind the `Started` frame if that is
/// still owed (one write for both when the frame is small); whether it
/// went.
fn send(channel: &mut UnixStream, started_owed: &mut bool, kind: Kind, body: &[u8]) -> bool {
    use std::io::Write;
    if std::mem::take(started_owed) {
        let mut both = Vec::with_capacity(10 + body.len().min(4096));
        if frame::write(&mut both, Kind::Started, &[]).is_err() {
            return false;
        }
        if body.len() <= 4096 {
            return frame::write(&mut both, kind, &[body]).is_ok()
                && channel.write_all(&both).is_ok();
        }
        if channel.write_all(&both).is_err() {
            return false;
        }
    }
    frame::write(channel, kind, &[body]).is_ok()
}
