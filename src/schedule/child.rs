//! Work handlers in child processes: registering them with
//! [`process::Registry`](crate::process::Registry) (so the child finds
//! them), and the pool worker that runs them there.
//!
//! The manager's side ([`WorkManagerBuilder::processes`](super::WorkManagerBuilder::processes))
//! runs these handlers on a process pool of [`ChildRunner`]s: a run's
//! request goes to a child, its progress comes back as the pool's progress,
//! a stop as the pool's cancel, and a kill kills the child.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::handler::{
    ChildTask, ErasedHandler, FnHandler, Handler, RunOutput, RunRequest, Side, WorkContext,
    WorkResult,
};
use super::request::WorkId;
use crate::pool::{TaskContext, Worker};
use crate::process::Registry;

/// The work handlers registered with [`Registry::work_handler`], by name:
/// the same in the parent and in its children, which run the same
/// registration first thing in `main`.
static WORK_HANDLERS: Mutex<Option<HashMap<String, Arc<dyn ErasedHandler>>>> = Mutex::new(None);

/// The work handlers registered for child processes, by name.
pub(crate) fn registered() -> HashMap<String, Arc<dyn ErasedHandler>> {
    WORK_HANDLERS.lock().clone().unwrap_or_default()
}

fn lookup(name: &str) -> Option<Arc<dyn ErasedHandler>> {
    WORK_HANDLERS.lock().as_ref()?.get(name).cloned()
}

#[cfg_attr(docsrs, doc(cfg(feature = "schedule")))]
impl Registry {
    /// Registers `handler` under `name` for work managers that run their
    /// handlers in child processes
    /// ([`WorkManagerBuilder::processes`](crate::schedule::WorkManagerBuilder::processes)):
    /// the child, this executable started again, runs the same
    /// registration and finds the handler by its name. Such a manager
    /// takes every handler registered here as its own; do not register
    /// the same name on its builder too. A name registered again is
    /// replaced. The handler is recorded when this is called.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use isolates::process::{ProcessOptions, Registry};
    /// use isolates::schedule::*;
    ///
    /// /// Parses untrusted bytes: a crash there is the child's.
    /// struct Parse;
    /// impl Handler for Parse {
    ///     type Input = Vec<u8>;
    ///     type Output = (usize, u32);
    ///     fn run(&self, bytes: Vec<u8>, _: &WorkContext<'_>) -> WorkResult<(usize, u32)> {
    ///         WorkResult::Success((bytes.len(), std::process::id()))
    ///     }
    /// }
    ///
    /// fn main() {
    ///     Registry::new().work_handler("parse", Parse).init();
    ///     # #[cfg(target_os = "linux")] {
    ///     let manager = WorkManager::builder(WorkStore::in_memory().unwrap())
    ///         .processes(ProcessOptions::new().max_memory(1 << 30))
    ///         .spawn()
    ///         .unwrap();
    ///     let request = WorkRequest::once("parse").input(&vec![1u8, 2, 3]);
    ///     let id = manager.enqueue(request).wait().unwrap().ids()[0];
    ///     let info = manager.wait_finished(id, Duration::from_secs(30)).unwrap();
    ///     let (len, pid) = info.output::<(usize, u32)>().unwrap().unwrap();
    ///     assert_eq!(len, 3);
    ///     assert_ne!(pid, std::process::id()); // it ran in a child
    ///     manager.stop();
    ///     # }
    /// }
    /// ```
    pub fn work_handler<H: Handler>(self, name: &str, handler: H) -> Self {
        WORK_HANDLERS
            .lock()
            .get_or_insert_with(HashMap::new)
            .insert(name.to_owned(), Arc::new(handler));
        self.worker::<ChildRunner>()
    }

    /// Registers a function as the work handler `name` for child processes
    /// (as [`work_handler`](Self::work_handler), with a function as
    /// [`WorkManagerBuilder::handler_fn`](crate::schedule::WorkManagerBuilder::handler_fn)
    /// takes).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use isolates::process::{ProcessOptions, Registry};
    /// use isolates::schedule::*;
    ///
    /// fn main() {
    ///     Registry::new()
    ///         .work_handler_fn("pid", |(): (), _: &WorkContext<'_>| {
    ///             WorkResult::Success(std::process::id())
    ///         })
    ///         .init();
    ///     # #[cfg(target_os = "linux")] {
    ///     let manager = WorkManager::builder(WorkStore::in_memory().unwrap())
    ///         .processes(ProcessOptions::new())
    ///         .spawn()
    ///         .unwrap();
    ///     let id = manager.enqueue(WorkRequest::once("pid")).wait().unwrap().ids()[0];
    ///     let info = manager.wait_finished(id, Duration::from_secs(30)).unwrap();
    ///     assert_ne!(info.output::<u32>(), Some(Ok(std::process::id())));
    ///     manager.stop();
    ///     # }
    /// }
    /// ```
    pub fn work_handler_fn<I, O, F>(self, name: &str, f: F) -> Self
    where
        F: Fn(I, &WorkContext<'_>) -> WorkResult<O> + Send + Sync + 'static,
        I: DeserializeOwned + 'static,
        O: Serialize + 'static,
    {
        self.work_handler(name, FnHandler::new(f))
    }
}

/// What a child's runner starts from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ChildArgs {
    /// The manager's data limit (outputs and progress).
    pub(crate) data_limit: usize,
}

/// The pool worker that runs work handlers in a child process: a run's
/// request in, its outcome out, progress as the pool's progress.
pub(crate) struct ChildRunner {
    data_limit: usize,
}

impl Worker for ChildRunner {
    type Args = ChildArgs;
    type Input = RunRequest;
    type Output = RunOutput;
    type Progress = Vec<u8>;
    type Error = String;

    fn start(args: ChildArgs) -> Result<Self, String> {
        Ok(ChildRunner {
            data_limit: args.data_limit,
        })
    }

    fn run(&mut self, run: RunRequest, task: &TaskContext<'_, Self>) -> Result<RunOutput, String> {
        let Some(handler) = lookup(&run.handler) else {
            return Ok(RunOutput::Failure(format!(
                "no work handler is registered as {:?} in the child process: register it with \
                 isolates::process::Registry::work_handler in the registration that main runs \
                 first, the same in parent and child",
                run.handler
            )));
        };
        let work = WorkContext {
            id: WorkId(run.work),
            attempt: run.attempt,
            data_limit: self.data_limit,
            side: Side::Child(task),
        };
        Ok(handler.run(&run.input, &work))
    }
}

impl ChildTask for TaskContext<'_, ChildRunner> {
    fn is_cancelled(&self) -> bool {
        TaskContext::is_cancelled(self)
    }

    fn progress(&self, bytes: Vec<u8>) {
        TaskContext::progress(self, bytes);
    }
}
