//! Pools from a function: [`Pool::from_fn`], [`Pool::from_task_fn`], the
//! builder's [`spawn_fn`](PoolBuilder::spawn_fn) and
//! [`spawn_task_fn`](PoolBuilder::spawn_task_fn), and their worker,
//! [`FnWorker`].

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Pool, PoolBuilder, TaskContext, Worker};
use crate::codec::Codec;
use crate::error::{Never, SpawnError};

/// Why a pool from a closure stays in this process: the text of
/// [`SpawnError::InProcessOnly`] and of its start value's serde errors.
const IN_PROCESS_ONLY: &str = "a pool from a closure cannot run in a child process or on \
     another machine: implement `Worker` and register it";

/// The function of an [`FnWorker`], shared by every worker of its pool.
type TaskFn<I, O, E, P> =
    dyn Fn(I, &TaskContext<'_, FnWorker<I, O, E, P>>) -> Result<O, E> + Send + Sync;

/// The worker of a pool made from a function ([`Pool::from_fn`],
/// [`Pool::from_task_fn`]): each task's input `I` goes through the
/// function, which returns the output `O` or fails with `E`, and may report
/// progress `P` through its [`TaskContext`].
///
/// Such a pool is an ordinary [`Pool`]: `submit` returns the usual
/// [`TaskHandle`](super::TaskHandle), with priorities, cancellation,
/// deadlines, retries, progress, autoscaling and
/// [`MainThread`](super::MainThread) as for any worker. Every worker calls
/// the same function (it is `Fn + Sync`), so per-worker state needs a
/// [`Worker`] of its own. It runs in this process only: with
/// [`PoolBuilder::process`] or `PoolBuilder::nats` it fails at spawn with
/// [`SpawnError::InProcessOnly`]. Its serde impls exist only so that those
/// settings can be named; they always fail, saying why.
///
/// # Examples
///
/// ```
/// use isolates::pool::{FnWorker, Pool};
///
/// // The type can be named, e.g. to keep the pool in a struct.
/// struct App {
///     squares: Pool<FnWorker<u64, u64>>,
/// }
///
/// let app = App { squares: Pool::from_fn(|n: u64| n * n).unwrap() };
/// assert_eq!(app.squares.submit(12).wait(), Ok(144));
/// ```
pub struct FnWorker<I, O, E = Never, P = ()>
where
    I: Serialize + DeserializeOwned + Send + 'static,
    O: Serialize + DeserializeOwned + Send + 'static,
    E: Serialize + DeserializeOwned + fmt::Display + Send + 'static,
    P: Serialize + DeserializeOwned + Send + 'static,
{
    run: Arc<TaskFn<I, O, E, P>>,
}

impl<I, O, E, P> Worker for FnWorker<I, O, E, P>
where
    I: Serialize + DeserializeOwned + Send + 'static,
    O: Serialize + DeserializeOwned + Send + 'static,
    E: Serialize + DeserializeOwned + fmt::Display + Send + 'static,
    P: Serialize + DeserializeOwned + Send + 'static,
{
    type Args = Self;
    type Input = I;
    type Output = O;
    type Progress = P;
    type Error = E;

    fn start(args: Self) -> Result<Self, E> {
        Ok(args)
    }

    fn run(&mut self, input: I, task: &TaskContext<'_, Self>) -> Result<O, E> {
        (self.run)(input, task)
    }
}

impl<I, O, E, P> Clone for FnWorker<I, O, E, P>
where
    I: Serialize + DeserializeOwned + Send + 'static,
    O: Serialize + DeserializeOwned + Send + 'static,
    E: Serialize + DeserializeOwned + fmt::Display + Send + 'static,
    P: Serialize + DeserializeOwned + Send + 'static,
{
    fn clone(&self) -> Self {
        FnWorker {
            run: Arc::clone(&self.run),
        }
    }
}

impl<I, O, E, P> fmt::Debug for FnWorker<I, O, E, P>
where
    I: Serialize + DeserializeOwned + Send + 'static,
    O: Serialize + DeserializeOwned + Send + 'static,
    E: Serialize + DeserializeOwned + fmt::Display + Send + 'static,
    P: Serialize + DeserializeOwned + Send + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnWorker").finish_non_exhaustive()
    }
}

/// Always fails: a closure cannot be encoded.
impl<I, O, E, P> Serialize for FnWorker<I, O, E, P>
where
    I: Serialize + DeserializeOwned + Send + 'static,
    O: Serialize + DeserializeOwned + Send + 'static,
    E: Serialize + DeserializeOwned + fmt::Display + Send + 'static,
    P: Serialize + DeserializeOwned + Send + 'static,
{
    fn serialize<Z: Serializer>(&self, _: Z) -> Result<Z::Ok, Z::Error> {
        Err(serde::ser::Error::custom(IN_PROCESS_ONLY))
    }
}

/// Always fails: a closure cannot be decoded.
impl<'de, I, O, E, P> Deserialize<'de> for FnWorker<I, O, E, P>
where
    I: Serialize + DeserializeOwned + Send + 'static,
    O: Serialize + DeserializeOwned + Send + 'static,
    E: Serialize + DeserializeOwned + fmt::Display + Send + 'static,
    P: Serialize + DeserializeOwned + Send + 'static,
{
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom(IN_PROCESS_ONLY))
    }
}

impl<I, O> Pool<FnWorker<I, O>>
where
    I: Serialize + DeserializeOwned + Send + 'static,
    O: Serialize + DeserializeOwned + Send + 'static,
{
    /// A pool whose tasks are calls of `f`, with the default settings (one
    /// worker per core, below the UI thread's priority: see
    /// [`Pool::builder`]). [`submit`](Pool::submit) returns the usual
    /// [`TaskHandle`](super::TaskHandle); [`FnWorker`] says what such a pool
    /// can do. For settings, [`PoolBuilder::spawn_fn`]; for progress,
    /// cancellation or errors, [`from_task_fn`](Self::from_task_fn).
    ///
    /// # Errors
    ///
    /// [`SpawnError::Thread`] if no worker thread can be started.
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::pool::{join_all, Pool};
    ///
    /// let squares = Pool::from_fn(|x: u64| x * x).unwrap();
    /// let results = join_all((1..=4).map(|x| squares.submit(x)));
    /// assert_eq!(results, [Ok(1), Ok(4), Ok(9), Ok(16)]);
    /// ```
    pub fn from_fn<F>(f: F) -> Result<Self, SpawnError>
    where
        F: Fn(I) -> O + Send + Sync + 'static,
    {
        Pool::builder().spawn_fn(f)
    }
}

impl<I, O, E, P> Pool<FnWorker<I, O, E, P>>
where
    I: Serialize + DeserializeOwned + Send + 'static,
    O: Serialize + DeserializeOwned + Send + 'static,
    E: Serialize + DeserializeOwned + fmt::Display + Send + 'static,
    P: Serialize + DeserializeOwned + Send + 'static,
{
    /// A pool whose tasks are calls of `f`, which sees its task's
    /// [`TaskContext`] (progress, cancellation, `par`) and can fail with
    /// `E` ([`TaskError::Failed`](crate::TaskError::Failed)), with the
    /// default settings; [`PoolBuilder::spawn_task_fn`] takes settings.
    ///
    /// When the function reports no progress, nothing says what `P` is:
    /// name the worker, `Pool::<FnWorker<I, O, E>>::from_task_fn` (`P`
    /// defaults to `()`).
    ///
    /// # Errors
    ///
    /// [`SpawnError::Thread`] if no worker thread can be started.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use isolates::pool::{FnWorker, Pool, TaskContext};
    ///
    /// let counter = Pool::from_task_fn(|n: u32, task: &TaskContext<'_, _>| {
    ///     for i in 1..=n {
    ///         if task.is_cancelled() {
    ///             return Err(format!("cancelled at {i}"));
    ///         }
    ///         task.progress(i);
    ///     }
    ///     Ok(n)
    /// })
    /// .unwrap();
    /// let mut task = counter.submit(3);
    /// assert_eq!(task.wait_timeout(Duration::from_secs(5)), Some(Ok(3)));
    /// assert_eq!(task.progress(), vec![1, 2, 3]);
    ///
    /// // No progress: name the worker's types (`P` defaults to `()`).
    /// let halves = Pool::<FnWorker<u32, u32, String>>::from_task_fn(|n, _| {
    ///     if n % 2 == 0 { Ok(n / 2) } else { Err(format!("{n} is odd")) }
    /// })
    /// .unwrap();
    /// assert_eq!(halves.submit(8).wait(), Ok(4));
    /// assert_eq!(halves.submit(3).wait().unwrap_err().to_string(), "the task failed: 3 is odd");
    /// ```
    pub fn from_task_fn<F>(f: F) -> Result<Self, SpawnError>
    where
        F: Fn(I, &TaskContext<'_, FnWorker<I, O, E, P>>) -> Result<O, E> + Send + Sync + 'static,
    {
        Pool::builder().spawn_task_fn(f)
    }
}

impl<I, O, C> PoolBuilder<FnWorker<I, O>, C>
where
    I: Serialize + DeserializeOwned + Send + 'static,
    O: Serialize + DeserializeOwned + Send + 'static,
    C: Codec,
{
    /// Starts the pool with its tasks as calls of `f`: [`Pool::from_fn`]
    /// with this builder's settings.
    ///
    /// # Errors
    ///
    /// [`SpawnError::InProcessOnly`] with [`process`](Self::process) or
    /// `nats` (a closure cannot run elsewhere: implement [`Worker`] and
    /// register it); otherwise as the builder's own start.
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::pool::{Pool, TaskPriority, Task};
    ///
    /// let lengths = Pool::builder()
    ///     .name("lengths")
    ///     .workers(2)
    ///     .spawn_fn(|text: String| text.chars().count())
    ///     .unwrap();
    /// let task = lengths.submit_task(Task::new("héllo".to_string()).priority(TaskPriority::High));
    /// assert_eq!(task.wait(), Ok(5));
    /// ```
    pub fn spawn_fn<F>(self, f: F) -> Result<Pool<FnWorker<I, O>>, SpawnError>
    where
        F: Fn(I) -> O + Send + Sync + 'static,
    {
        self.spawn_task_fn(move |input, _| Ok(f(input)))
    }
}

impl<I, O, E, P, C> PoolBuilder<FnWorker<I, O, E, P>, C>
where
    I: Serialize + DeserializeOwned + Send + 'static,
    O: Serialize + DeserializeOwned + Send + 'static,
    E: Serialize + DeserializeOwned + fmt::Display + Send + 'static,
    P: Serialize + DeserializeOwned + Send + 'static,
    C: Codec,
{
    /// Starts the pool with its tasks as calls of `f`, which sees its
    /// task's [`TaskContext`] and can fail: [`Pool::from_task_fn`] with
    /// this builder's settings.
    ///
    /// # Errors
    ///
    /// As [`spawn_fn`](PoolBuilder::spawn_fn).
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::SpawnError;
    /// use isolates::pool::{FnWorker, Pool};
    /// use isolates::process::ProcessOptions;
    ///
    /// let parse = Pool::<FnWorker<String, i64, String>>::builder()
    ///     .workers(1)
    ///     .spawn_task_fn(|text, _| text.trim().parse().map_err(|e| format!("{text:?}: {e}")))
    ///     .unwrap();
    /// assert_eq!(parse.submit(" 42 ".into()).wait(), Ok(42));
    ///
    /// // A closure cannot run in a child process: a typed error, at spawn.
    /// let err = Pool::<FnWorker<String, i64, String>>::builder()
    ///     .process(ProcessOptions::new())
    ///     .spawn_task_fn(|text, _| text.trim().parse().map_err(|_| text))
    ///     .unwrap_err();
    /// assert!(matches!(err, SpawnError::InProcessOnly(_)));
    /// ```
    pub fn spawn_task_fn<F>(self, f: F) -> Result<Pool<FnWorker<I, O, E, P>>, SpawnError>
    where
        F: Fn(I, &TaskContext<'_, FnWorker<I, O, E, P>>) -> Result<O, E> + Send + Sync + 'static,
    {
        if self.leaves_process() {
            return Err(SpawnError::InProcessOnly(IN_PROCESS_ONLY));
        }
        self.spawn(FnWorker { run: Arc::new(f) })
    }
}
