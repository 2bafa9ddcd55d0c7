//! A pool worker in a child process: the parent's worker thread drives the
//! child task by task; the child runs the [`Worker`] on its channel's
//! thread.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Worker;
use super::task::{CodecSet, ErrorKind, Outcome, TaskCell};
use super::wire::WorkerWire;
use crate::backend::CodecWire;
use crate::backend::launch::ProcessOptions;
use crate::backend::process::child::split_start;
use crate::backend::process::frame::{self, Kind};
use crate::backend::process::parent::{Broken, ChildProcess, KillSwitch};
use crate::backend::process::{Channel, decode, decode_reason, encode, encode_reason};
use crate::backend::registry::ArgsEncoder;
use crate::codec::Codec;
use crate::error::{Crash, ExitReason};
use crate::invoke::Invoked;
use crate::unwind;

/// How a pool's workers run in children: set by
/// [`PoolBuilder::process`](super::PoolBuilder::process).
pub(crate) struct WorkerSpec<W: Worker> {
    pub(super) options: ProcessOptions,
    pub(super) wire: Arc<dyn WorkerWire<W>>,
    /// Encodes the start arguments, as the worker's registration with
    /// [`Registry::worker_with`](crate::process::Registry::worker_with)
    /// made it: where `W::Args` is known to be encodable.
    pub(super) encode_args: ArgsEncoder<W::Args>,
    pub(super) key: u64,
    pub(super) test_entry: Option<String>,
}

/// The start-argument encoder of worker `W` with `codec`.
pub(crate) fn args_encoder<W: Worker, C: Codec>(codec: C) -> ArgsEncoder<W::Args>
where
    W::Args: Serialize,
{
    let wire = CodecWire(codec);
    Arc::new(move |args: &W::Args| wire.encode(args, "start argument"))
}

/// How often a running task's worker looks at its cancellation, to pass it
/// on to the child.
const CANCEL_POLL: Duration = Duration::from_millis(20);

/// A worker's child, as the parent's worker thread drives it.
pub(super) struct ChildWorker<W: Worker> {
    child: ChildProcess,
    wire: Arc<dyn WorkerWire<W>>,
}

impl<W: Worker> ChildWorker<W> {
    /// Starts a child and the worker's state in it.
    pub(super) fn start(spec: &WorkerSpec<W>, name: &str, args: &W::Args) -> Result<Self, String> {
        let args = (spec.encode_args)(args)
            .map_err(|e| format!("start arguments could not be encoded: {e}"))?;
        let mut child = ChildProcess::spawn(
            &spec.options.launch(),
            spec.test_entry.as_deref(),
            spec.wire.limit(),
            Box::new(|_| {}),
        )
        .map_err(|crash| crash.to_string())?;
        let name = &name.as_bytes()[..name.len().min(1024)];
        let name = std::str::from_utf8(name).unwrap_or("worker").as_bytes();
        let name_len = (name.len() as u32).to_le_bytes();
        child.send(
            Kind::Start,
            &[&spec.key.to_le_bytes(), &name_len, name, &args],
        );
        let deadline = Instant::now() + spec.options.start_timeout;
        match child.read(Some(deadline)) {
            Ok((Kind::Started, _)) => Ok(ChildWorker {
                child,
                wire: Arc::clone(&spec.wire),
            }),
            Ok((Kind::Exited, reason)) => Err(decode_reason(&reason).map_or_else(
                || "its child process failed to start".into(),
                |r| r.to_string(),
            )),
            Ok((kind, _)) => {
                child.kill_switch().kill();
                Err(
                    Crash::Protocol(format!("a {kind:?} frame before the worker started"))
                        .to_string(),
                )
            }
            Err(Broken::Gone(crash)) => Err(crash.to_string()),
            Err(Broken::Timeout) => Err(Crash::Protocol(format!(
                "the child did not start its worker within {:?} \
                 (is isolates::process::Registry::init the first call in main?)",
                spec.options.start_timeout
            ))
            .to_string()),
        }
    }

    /// The switch that kills this worker's child.
    pub(super) fn kill_switch(&self) -> Arc<KillSwitch> {
        self.child.kill_switch()
    }

    /// Whether this worker's child has died (the reaper saw it exit).
    pub(super) fn has_died(&mut self) -> bool {
        self.child.has_died()
    }

    /// Runs one task in the child: its outcome, and whether the child must
    /// be replaced (it panicked or died).
    pub(super) fn run(
        &mut self,
        input: &W::Input,
        cell: &TaskCell,
        codecs: &CodecSet<W>,
    ) -> (Outcome, bool) {
        let bytes = match self.wire.encode_input(input) {
            Ok(bytes) => bytes,
            Err(e) => return (Outcome::Error(ErrorKind::Codec(e)), false),
        };
        let id = cell.id.to_le_bytes();
        self.child.send(Kind::Task, &[&id, &bytes]);
        let mut cancel_sent = false;
        loop {
            // Looked at before every wait, not only after a quiet one: a
            // task that reports progress more often than the poll must
            // still meet its deadline and its cancel.
            let now = Instant::now();
            if cell.deadline_passed(now) {
                // A deadline on a process worker ends its child: the work
                // really stops.
                cell.check_deadline(now);
                self.child.kill_switch().kill();
                let why = "its deadline passed: its child process was killed".to_string();
                return (Outcome::Error(ErrorKind::WorkerLost(why)), true);
            }
            if !cancel_sent && cell.cancel.load(std::sync::atomic::Ordering::Acquire) {
                self.child.send(Kind::Cancel, &[&id]);
                cancel_sent = true;
            }
            let frame = match self.child.poll_read(CANCEL_POLL) {
                Ok(Some(frame)) => frame,
                Ok(None) => continue,
                Err(Broken::Gone(crash)) => {
                    let why = format!("its child process died: {crash}");
                    return (Outcome::Error(ErrorKind::WorkerLost(why)), true);
                }
                Err(Broken::Timeout) => {
                    let why = "its child process did not answer".to_string();
                    return (Outcome::Error(ErrorKind::WorkerLost(why)), true);
                }
            };
            let (kind, body) = frame;
            if let Some(answer) = kind.answer() {
                let invoked = Invoked::from_frame(answer, &body).encode_with(
                    |value| self.wire.decode_output(&value),
                    |error| self.wire.decode_error(&error),
                );
                // A panic may have left the child's state broken: it goes.
                let panicked = invoked.panicked();
                return (
                    Outcome::from(invoked.pack(&codecs.output, &codecs.error)),
                    panicked,
                );
            }
            return match kind {
                Kind::Progress => {
                    if let Ok(value) = self.wire.decode_progress(&body)
                        && let Ok(packed) = codecs.progress.pack(value, "progress")
                    {
                        cell.push_progress(packed.envelope.erase());
                    }
                    continue;
                }
                other => {
                    self.child.kill_switch().kill();
                    let why = format!("its child process sent a {other:?} frame mid-task");
                    (Outcome::Error(ErrorKind::WorkerLost(why)), true)
                }
            };
        }
    }
}

/// What a child's reader thread and its task loop share.
#[derive(Default)]
struct Current {
    /// The task running.
    task: Option<Arc<TaskCell>>,
    /// A cancel that came before its task was taken up (the reader may see
    /// it first): kept until that task starts.
    early_cancel: Option<u64>,
}

/// Runs pool worker `W` for the parent on `channel`, in the child: tasks one
/// at a time, on this thread; returns the exit code.
pub(crate) fn serve_worker<W: Worker, C: Codec>(codec: &C, channel: Channel, start: Vec<u8>) -> i32
where
    W::Args: DeserializeOwned,
{
    let Channel { writer, mut reader } = channel;
    let writer = Mutex::new(writer);
    let send = |kind: Kind, body: &[&[u8]]| frame::write(&mut *writer.lock(), kind, body).is_ok();
    let exited = |reason: ExitReason| {
        send(Kind::Exited, &[&encode_reason(&reason)]);
        0
    };
    let Some((_, args)) = split_start(&start) else {
        return exited(ExitReason::Failed("a malformed start frame".into()));
    };
    let args = match decode::<W::Args, C>(codec, args, "start argument") {
        Ok(args) => args,
        Err(e) => return exited(ExitReason::Failed(e)),
    };
    let mut state = match unwind::catch(|| W::start(args)) {
        Ok(Ok(state)) => state,
        Ok(Err(e)) => return exited(ExitReason::Failed(unwind::describe(&e))),
        Err(caught) => return exited(ExitReason::Panicked(caught.message)),
    };
    if !send(Kind::Started, &[]) {
        return 0;
    }
    let served = super::TaskServer::<W, C>::new(codec);
    let current = Mutex::new(Current::default());
    let (tasks_tx, tasks) = crossbeam_channel::bounded::<Vec<u8>>(1);
    let limit = codec.limit().saturating_add(frame::OVERHEAD);
    std::thread::scope(|scope| {
        // Reads the parent's frames while a task runs: cancellations.
        let current = &current;
        scope.spawn(move || {
            loop {
                match frame::read(&mut reader, limit) {
                    Ok((Kind::Task, body)) => {
                        if tasks_tx.send(body).is_err() {
                            break;
                        }
                    }
                    Ok((Kind::Cancel, body)) => {
                        let id = body.get(..8).map(|b| {
                            let mut id = [0u8; 8];
                            id.copy_from_slice(b);
                            u64::from_le_bytes(id)
                        });
                        let mut current = current.lock();
                        match &current.task {
                            Some(cell) if Some(cell.id) == id => {
                                cell.cancel
                                    .store(true, std::sync::atomic::Ordering::Release);
                            }
                            // Not started yet: it is cancelled when it is.
                            _ => current.early_cancel = id,
                        }
                    }
                    // Stop, or the parent is gone.
                    _ => break,
                }
            }
        });
        for body in tasks.iter() {
            let Some((id, input)) = body.split_first_chunk::<8>() else {
                break;
            };
            let cell = Arc::new(TaskCell::new(u64::from_le_bytes(*id), None));
            {
                let mut current = current.lock();
                if current.early_cancel.take() == Some(cell.id) {
                    cell.cancel
                        .store(true, std::sync::atomic::Ordering::Release);
                }
                current.task = Some(Arc::clone(&cell));
            }
            let sink = |value: W::Progress| {
                if let Ok(bytes) = encode(codec, &value, "progress") {
                    send(Kind::Progress, &[&bytes]);
                }
            };
            let invoked = served.run(&mut state, &cell, input, &sink);
            current.lock().task = None;
            let panicked = invoked.panicked();
            let (answer, bytes) = invoked.into_frame();
            let sent = send(Kind::from(answer), &[&bytes]);
            if panicked {
                // The state may be broken: the parent starts a new child;
                // this one goes.
                std::process::exit(0);
            }
            if !sent {
                break;
            }
        }
        let _ = unwind::catch(move || drop(state));
        // The reader ends when the parent closes the channel.
        std::process::exit(0);
    })
}
