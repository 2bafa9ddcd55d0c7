//! The app's handlers and the pool worker that runs them.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel as cb;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::event::Event;
use super::request::{WorkId, WorkInfo};
use crate::codec::{Bincode, Codec};
use crate::pool::{TaskContext, Worker};

/// How one run of a work ended (Android's `Result`).
///
/// # Examples
///
/// ```
/// use isolates::schedule::WorkResult;
/// let r: WorkResult<u32> = WorkResult::Retry;
/// assert_ne!(r, WorkResult::Success(1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkResult<T> {
    /// Done, with this output. Periodic work waits for its next period.
    Success(T),
    /// Try again after the work's backoff.
    Retry,
    /// Give up with this reason: one-off work fails (and the rest of its
    /// chain); periodic work waits for its next period.
    Failure(String),
}

/// The code that runs a kind of work, registered under a name with
/// [`WorkManagerBuilder::handler`](super::WorkManagerBuilder::handler).
///
/// Handlers run on the work manager's pool of worker isolates: input and
/// output cross as encoded bytes. A panic counts as a failure. A handler
/// registered with
/// [`Registry::work_handler`](crate::process::Registry::work_handler)
/// instead runs in child processes
/// ([`WorkManagerBuilder::processes`](super::WorkManagerBuilder::processes)),
/// where a crash counts as a failure too.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::schedule::*;
///
/// struct Fetch;
/// impl Handler for Fetch {
///     type Input = String;
///     type Output = usize;
///     fn run(&self, url: String, work: &WorkContext<'_>) -> WorkResult<usize> {
///         if work.is_stopped() { return WorkResult::Retry; }
///         WorkResult::Success(url.len())
///     }
///     fn on_timeout(&self, info: &WorkInfo) {
///         eprintln!("{} ran out of time", info.id);
///     }
/// }
///
/// let manager = WorkManager::builder(WorkStore::in_memory().unwrap())
///     .handler("fetch", Fetch)
///     .spawn()
///     .unwrap();
/// let ids = manager.enqueue(WorkRequest::once("fetch").input("https://x.y")).wait().unwrap();
/// let info = manager.wait_finished(ids.ids()[0], Duration::from_secs(10)).unwrap();
/// assert_eq!(info.output::<usize>(), Some(Ok(11)));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a work handler",
    label = "not a `schedule::Handler`",
    note = "implement `isolates::schedule::Handler` for `{Self}`, or register a function with `WorkManagerBuilder::handler_fn`"
)]
pub trait Handler: Send + Sync + 'static {
    /// The work's input.
    type Input: DeserializeOwned;
    /// A successful run's output.
    type Output: Serialize;

    /// Runs the work once.
    fn run(&self, input: Self::Input, work: &WorkContext<'_>) -> WorkResult<Self::Output>;

    /// Called when a run passes its time limit, after the run was told to
    /// stop (`background_fetch`'s timeout callback). It runs on a thread of
    /// its own, so it may call the manager and wait for an answer.
    fn on_timeout(&self, info: &WorkInfo) {
        let _ = info;
    }
}

/// A handler made of a function (see
/// [`WorkManagerBuilder::handler_fn`](super::WorkManagerBuilder::handler_fn)).
pub(crate) struct FnHandler<F, I, O> {
    f: F,
    _types: PhantomData<fn(I) -> O>,
}

impl<F, I, O> FnHandler<F, I, O> {
    pub(crate) fn new(f: F) -> Self {
        FnHandler {
            f,
            _types: PhantomData,
        }
    }
}

impl<F, I, O> Handler for FnHandler<F, I, O>
where
    F: Fn(I, &WorkContext<'_>) -> WorkResult<O> + Send + Sync + 'static,
    I: DeserializeOwned + 'static,
    O: Serialize + 'static,
{
    type Input = I;
    type Output = O;

    fn run(&self, input: I, work: &WorkContext<'_>) -> WorkResult<O> {
        (self.f)(input, work)
    }
}

/// What a running handler can see and say.
///
/// # In a child process
///
/// A handler registered with
/// [`Registry::work_handler`](crate::process::Registry::work_handler) and
/// run by a manager built with
/// [`processes`](super::WorkManagerBuilder::processes) has the same context
/// in its child: [`id`](Self::id), [`attempt`](Self::attempt),
/// [`is_stopped`](Self::is_stopped) (a cancel, a time limit or lost
/// constraints reach the child within about 20 ms) and
/// [`set_progress`](Self::set_progress) (it crosses the channel and reaches
/// the parent's watchers) all work; [`in_child`](Self::in_child) says
/// where the run is. **Not available in a child:** the parent's
/// [`WorkManager`](super::WorkManager) and anything else of the parent's
/// memory. A handler there cannot enqueue work on its manager (nor replace
/// its own unique work from its run), and what it captured is the copy its
/// child's registration made. [`Handler::on_timeout`] runs in the parent.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::schedule::*;
///
/// let manager = WorkManager::builder(WorkStore::in_memory().unwrap())
///     .handler_fn("count", |n: u32, work: &WorkContext<'_>| {
///         for i in 1..=n {
///             work.set_progress(&i);
///         }
///         WorkResult::Success(work.attempt())
///     })
///     .spawn()
///     .unwrap();
/// let id = manager.enqueue(WorkRequest::once("count").input(&3u32)).wait().unwrap().ids()[0];
/// let info = manager.wait_finished(id, Duration::from_secs(10)).unwrap();
/// assert_eq!(info.output::<u32>(), Some(Ok(1)));
/// // Progress is the run's: cleared once it ended, as in Android.
/// assert_eq!(info.progress, None);
/// ```
pub struct WorkContext<'a> {
    pub(crate) id: WorkId,
    pub(crate) attempt: u32,
    /// The largest encoded output or progress.
    pub(crate) data_limit: usize,
    pub(crate) side: Side<'a>,
}

/// Where a run runs, and so where its progress and stop come from.
pub(crate) enum Side<'a> {
    /// On a worker thread of the manager's process: progress goes straight
    /// to the scheduler.
    Thread {
        task: &'a TaskContext<'a, Runner>,
        registry: &'a Registry,
    },
    /// In a child process
    /// ([`WorkManagerBuilder::processes`](super::WorkManagerBuilder::processes)):
    /// progress crosses the process pool's channel.
    Child(&'a dyn ChildTask),
}

/// A run in a child process as its context sees it: the child's pool task.
pub(crate) trait ChildTask {
    /// Whether the parent told the run to stop.
    fn is_cancelled(&self) -> bool;
    /// Sends encoded progress to the parent.
    fn progress(&self, bytes: Vec<u8>);
}

impl fmt::Debug for WorkContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkContext")
            .field("id", &self.id)
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl WorkContext<'_> {
    /// The work's id.
    ///
    /// # Examples
    ///
    /// See [`WorkContext`].
    pub fn id(&self) -> WorkId {
        self.id
    }

    /// Which run this is, from 1 (runs interrupted by a crash count too).
    /// For periodic work it counts within the period, and starts at 1 again
    /// each period, as Android's run attempt count: "give up after n
    /// attempts" means n attempts per period.
    ///
    /// # Examples
    ///
    /// See [`WorkContext`].
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether the run should stop: it was cancelled, passed its time
    /// limit, or its constraints stopped holding (then the work goes back
    /// to enqueued, and runs again once they hold; what this run returns
    /// is ignored). A handler doing long work checks it and returns.
    ///
    /// # Examples
    ///
    /// See [`Handler`].
    pub fn is_stopped(&self) -> bool {
        match &self.side {
            Side::Thread { task, .. } => task.is_cancelled(),
            Side::Child(task) => task.is_cancelled(),
        }
    }

    /// Whether this run runs in a child process
    /// ([`WorkManagerBuilder::processes`](super::WorkManagerBuilder::processes)).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use isolates::schedule::*;
    ///
    /// let manager = WorkManager::builder(WorkStore::in_memory().unwrap())
    ///     .handler_fn("where", |(): (), work: &WorkContext<'_>| {
    ///         WorkResult::Success(work.in_child())
    ///     })
    ///     .spawn()
    ///     .unwrap();
    /// let id = manager.enqueue(WorkRequest::once("where")).wait().unwrap().ids()[0];
    /// let info = manager.wait_finished(id, Duration::from_secs(10)).unwrap();
    /// assert_eq!(info.output::<bool>(), Some(Ok(false))); // a thread
    /// ```
    pub fn in_child(&self) -> bool {
        matches!(self.side, Side::Child(_))
    }

    /// Stores `progress` for observers ([`WorkInfo::progress`]) while this
    /// run lasts: it is cleared when the run ends. Progress
    /// that cannot be encoded, or is over the data limit, is dropped with
    /// a warning.
    ///
    /// # Examples
    ///
    /// See [`WorkContext`].
    pub fn set_progress<T: Serialize + ?Sized>(&self, progress: &T) {
        let mut bytes = Vec::new();
        match Bincode::new().encode(progress, &mut bytes) {
            Ok(()) if bytes.len() <= self.data_limit => match &self.side {
                Side::Thread { task, registry } => {
                    let _ = registry.events.send(Event::Progress {
                        work: self.id.0,
                        task: task.id(),
                        bytes,
                    });
                }
                Side::Child(task) => task.progress(bytes),
            },
            Ok(()) => tracing::warn!(target: "isolates", work = %self.id, size = bytes.len(),
                limit = self.data_limit, "progress over the data limit dropped"),
            Err(e) => tracing::warn!(target: "isolates", work = %self.id, error = %e,
                "progress that cannot be encoded dropped"),
        }
    }
}

/// A handler with its types erased: bytes in, an outcome out.
pub(crate) trait ErasedHandler: Send + Sync {
    fn run(&self, input: &[u8], work: &WorkContext<'_>) -> RunOutput;
    fn on_timeout(&self, info: &WorkInfo);
}

impl<H: Handler> ErasedHandler for H {
    fn run(&self, input: &[u8], work: &WorkContext<'_>) -> RunOutput {
        let codec = Bincode::new();
        // Work without input has none: `()` decodes from it, another
        // type fails here with a clear reason.
        let input = match codec.decode::<H::Input>(input) {
            Ok(input) => input,
            Err(e) => return RunOutput::Failure(format!("the input could not be decoded: {e}")),
        };
        match Handler::run(self, input, work) {
            WorkResult::Success(out) => {
                let mut bytes = Vec::new();
                match codec.encode(&out, &mut bytes) {
                    Ok(()) if bytes.len() <= work.data_limit => RunOutput::Success(bytes),
                    Ok(()) => RunOutput::Failure(format!(
                        "the output is {} bytes, over the data limit of {}",
                        bytes.len(),
                        work.data_limit
                    )),
                    Err(e) => RunOutput::Failure(format!("the output could not be encoded: {e}")),
                }
            }
            WorkResult::Retry => RunOutput::Retry,
            WorkResult::Failure(why) => RunOutput::Failure(why),
        }
    }

    fn on_timeout(&self, info: &WorkInfo) {
        Handler::on_timeout(self, info);
    }
}

/// What the scheduler and the workers share: the handlers, the way back.
pub(crate) struct Registry {
    pub(crate) handlers: HashMap<String, Arc<dyn ErasedHandler>>,
    /// The handlers whose runs run in child processes (the others run on
    /// threads).
    pub(crate) in_child: HashSet<String>,
    pub(crate) events: cb::Sender<Event>,
    pub(crate) data_limit: usize,
    /// The pool tasks whose handler is running now. A run told to stop
    /// that is in here says when it returns ([`Event::Returned`]); one that
    /// is not is about to start or has just returned, and the scheduler
    /// looks at its task again shortly.
    pub(crate) in_handler: Mutex<HashSet<u64>>,
    /// Tells this manager's runs from another's on a thread
    /// ([`current_work`]): work ids repeat across stores.
    pub(crate) key: u64,
}

impl Registry {
    /// Whether task `task`'s handler is running now.
    pub(crate) fn in_handler(&self, task: u64) -> bool {
        self.in_handler.lock().contains(&task)
    }
}

static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// A key no other work manager of this process has.
pub(crate) fn new_key() -> u64 {
    NEXT_KEY.fetch_add(1, Ordering::Relaxed)
}

thread_local! {
    /// The work this thread runs now, if it is a work manager's worker:
    /// (the manager's registry key, the work's id).
    static CURRENT: Cell<Option<(u64, u64)>> = const { Cell::new(None) };
}

/// The work the calling thread is running for the manager with registry
/// `key`, if any (ids repeat across stores: the key tells them apart).
pub(crate) fn current_work(key: u64) -> Option<u64> {
    CURRENT
        .with(Cell::get)
        .filter(|(k, _)| *k == key)
        .map(|(_, id)| id)
}

/// One run, as sent to a worker.
#[derive(Serialize, Deserialize)]
pub(crate) struct RunRequest {
    pub(crate) work: u64,
    pub(crate) handler: String,
    pub(crate) input: Vec<u8>,
    pub(crate) attempt: u32,
}

/// One run's outcome, as a worker sends it back.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum RunOutput {
    Success(Vec<u8>),
    Retry,
    Failure(String),
}

/// The pool worker that runs handlers; each starts from its manager's
/// registry.
pub(crate) struct Runner {
    registry: Arc<Registry>,
}

impl Worker for Runner {
    type Args = Arc<Registry>;
    type Input = RunRequest;
    type Output = RunOutput;
    type Progress = ();
    type Error = String;

    fn start(registry: Arc<Registry>) -> Result<Self, String> {
        Ok(Runner { registry })
    }

    fn run(&mut self, run: RunRequest, task: &TaskContext<'_, Self>) -> Result<RunOutput, String> {
        let Some(handler) = self.registry.handlers.get(&run.handler) else {
            return Ok(RunOutput::Failure(format!(
                "no handler is registered as {:?}",
                run.handler
            )));
        };
        let work = WorkContext {
            id: WorkId(run.work),
            attempt: run.attempt,
            data_limit: self.registry.data_limit,
            side: Side::Thread {
                task,
                registry: &self.registry,
            },
        };
        /// Clears the current work even if the handler panics, and tells
        /// the scheduler when a run it told to stop has returned: it waits
        /// for that (runs of one work never overlap) without polling.
        struct Current<'a> {
            registry: &'a Registry,
            work: u64,
            task: &'a TaskContext<'a, Runner>,
        }
        impl Drop for Current<'_> {
            fn drop(&mut self) {
                CURRENT.with(|c| c.set(None));
                let id = self.task.id();
                self.registry.in_handler.lock().remove(&id);
                // Told to stop before this point, the scheduler saw the run
                // in the handler and waits for this; told after, it finds
                // it out of the handler. Either way no stop is missed.
                if self.task.is_cancelled() {
                    let _ = self.registry.events.send(Event::Returned {
                        work: self.work,
                        task: id,
                    });
                }
            }
        }
        CURRENT.with(|c| c.set(Some((self.registry.key, run.work))));
        self.registry.in_handler.lock().insert(task.id());
        // The run may have waited in the pool's queue behind busy workers:
        // its work is Running, and its time limit counts, from here.
        let _ = self.registry.events.send(Event::Started {
            work: run.work,
            task: task.id(),
            at: std::time::Instant::now(),
        });
        let _current = Current {
            registry: &self.registry,
            work: run.work,
            task,
        };
        Ok(handler.run(&run.input, &work))
    }
}
