//! [`PoolBuilder`]: a pool's settings, and the start of its workers.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::queue::Queues;
#[cfg(target_os = "linux")]
use super::remote;
use super::shared::{Inner, PoolCounters};
use super::task::CodecSet;
use super::worker::{lower_priority, rayon_worker, spawn_worker};
use super::{FullPolicy, Pool, Routing, Worker};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{Bincode, Codec};
use crate::error::SpawnError;
use crate::port::dyn_codec;

/// The stack of the thread that holds idle rayon workers' waits: it only
/// waits on a condition variable.
const IDLE_WAITS_STACK: usize = 128 * 1024;

/// Configures a [`Pool`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::pool::{FullPolicy, Pool, Routing, TaskContext, Worker};
/// # struct W;
/// # impl Worker for W {
/// #     type Args = (); type Input = u8; type Output = u8; type Progress = (); type Error = String;
/// #     fn start(_: ()) -> Result<Self, String> { Ok(W) }
/// #     fn run(&mut self, n: u8, _: &TaskContext<'_, Self>) -> Result<u8, String> { Ok(n) }
/// # }
/// let pool = Pool::<W>::builder()
///     .name("thumbnails")
///     .autoscale(1, 4, Duration::from_secs(30))
///     .routing(Routing::SharedQueue)
///     .queue_bound(1000, FullPolicy::Block(Duration::from_millis(50)))
///     .spawn(())
///     .unwrap();
/// assert_eq!(pool.submit(3).wait(), Ok(3));
/// ```
pub struct PoolBuilder<W: Worker, C: Codec = Bincode> {
    name: String,
    min: usize,
    max: usize,
    idle: Duration,
    routing: Routing,
    bound: Option<(usize, FullPolicy)>,
    nice: Option<i32>,
    rayon: bool,
    copy_messages: bool,
    process: Option<crate::backend::launch::ProcessOptions>,
    #[cfg(feature = "nats")]
    nats: Option<(crate::backend::nats::NatsOptions, String)>,
    codec: C,
    _worker: std::marker::PhantomData<fn() -> W>,
}

impl<W: Worker, C: Codec> fmt::Debug for PoolBuilder<W, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("name", &self.name)
            .field("min", &self.min)
            .field("max", &self.max)
            .field("routing", &self.routing)
            .field("bound", &self.bound)
            .field("nice", &self.nice)
            .field("rayon", &self.rayon)
            .finish_non_exhaustive()
    }
}

/// The number of workers a pool starts with by default: one per core (as
/// [`std::thread::available_parallelism`] counts them), at least one. The
/// UI thread needs no core of its own: the workers run below its priority
/// (see [`Pool::builder`] for the figures).
///
/// # Examples
///
/// ```
/// let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
/// assert_eq!(isolates::pool::default_workers(), cores);
/// ```
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl<W: Worker> PoolBuilder<W> {
    /// The defaults of [`Pool::builder`].
    pub(super) fn new() -> Self {
        let n = default_workers();
        PoolBuilder {
            name: "pool".into(),
            min: n,
            max: n,
            idle: Duration::from_secs(30),
            routing: Routing::SharedQueue,
            bound: None,
            nice: Some(10),
            rayon: false,
            copy_messages: false,
            process: None,
            #[cfg(feature = "nats")]
            nats: None,
            codec: Bincode::new(),
            _worker: std::marker::PhantomData,
        }
    }
}

impl<W: Worker, C: Codec> PoolBuilder<W, C> {
    /// Names the pool (its threads are `name-0`, `name-1`, ...).
    ///
    /// # Examples
    ///
    /// See [`PoolBuilder`].
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// A fixed number of workers (default [`default_workers`]).
    ///
    /// # Examples
    ///
    /// See [`Worker`].
    pub fn workers(mut self, n: usize) -> Self {
        self.min = n.max(1);
        self.max = n.max(1);
        self
    }

    /// Between `min` and `max` workers: one is added when work waits and
    /// none is idle; one idle for `idle` exits while more than `min` run.
    ///
    /// # Examples
    ///
    /// See [`PoolBuilder`].
    pub fn autoscale(mut self, min: usize, max: usize, idle: Duration) -> Self {
        self.min = min;
        self.max = max.max(min).max(1);
        self.idle = idle;
        self
    }

    /// Sets the routing (default [`Routing::SharedQueue`]).
    ///
    /// # Examples
    ///
    /// See [`PoolBuilder`].
    pub fn routing(mut self, routing: Routing) -> Self {
        self.routing = routing;
        self
    }

    /// Bounds the queued tasks (running ones not counted), with what to do
    /// when full (default: unbounded).
    ///
    /// # Examples
    ///
    /// See [`PoolBuilder`].
    pub fn queue_bound(mut self, bound: usize, policy: FullPolicy) -> Self {
        self.bound = Some((bound, policy));
        self
    }

    /// The nice level of worker threads on Linux (default 10: below the UI
    /// thread; [`Pool::builder`] says why); `None` leaves them as spawned,
    /// at the priority of the thread that builds the pool. A level below
    /// the threads' current one is ignored: a pool only ever lowers
    /// priority. Ignored on other systems.
    ///
    /// Nice orders only threads that compete for a core: on a machine with
    /// nothing else to run, niced workers are as fast as any. They do yield
    /// to every other process too, so batch work that must win over other
    /// programs (a build server, a benchmark against rayon on a busy
    /// machine) may want `None`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::pool::{Pool, TaskContext, Worker};
    /// # struct W;
    /// # impl Worker for W {
    /// #     type Args = (); type Input = (); type Output = (); type Progress = (); type Error = String;
    /// #     fn start(_: ()) -> Result<Self, String> { Ok(W) }
    /// #     fn run(&mut self, _: (), _: &TaskContext<'_, Self>) -> Result<(), String> { Ok(()) }
    /// # }
    /// let b = Pool::<W>::builder().nice(None);
    /// # let _ = b;
    /// ```
    pub fn nice(mut self, nice: Option<i32>) -> Self {
        self.nice = nice;
        self
    }

    /// Runs the workers as the threads of a rayon pool of their own, so
    /// tasks can split data-parallel work ([`TaskContext::par`](super::TaskContext::par)) over the
    /// idle workers without starting more threads than the pool has. The
    /// pool then keeps a fixed size (the maximum; no autoscaling), idle
    /// workers help with a task's `par` work while it runs and sleep
    /// otherwise (one more thread, which computes nothing, holds their
    /// waits), and a killed worker's replacement starts on the same thread
    /// once the abandoned `run` returns.
    ///
    /// # Examples
    ///
    /// See [`TaskContext::par`](super::TaskContext::par).
    pub fn rayon(mut self, rayon: bool) -> Self {
        self.rayon = rayon;
        self
    }

    /// Dart's copy semantics: every input, output, progress value and
    /// error is encoded with the [codec](Self::codec) by its sender and
    /// decoded by its receiver, under its limit. The workers' start
    /// arguments are not messages: each worker gets a clone, as without
    /// copying. Default `false`: values move, so
    /// [`submit`](Pool::submit) and [`TaskHandle::try_take`](super::TaskHandle::try_take) cost the same
    /// whatever a payload's size.
    ///
    /// Copy to enforce the codec's size limit on inputs and outputs, or to
    /// prove in tests that the worker's types survive encoding before the
    /// pool is moved to child processes or other machines. Then the
    /// submitter pays the input's encode and the taker the output's decode.
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::pool::{Pool, TaskContext, Worker};
    /// use isolates::{Bincode, CodecError, TaskError};
    ///
    /// struct Len;
    /// impl Worker for Len {
    ///     type Args = (); type Input = Vec<u8>; type Output = usize; type Progress = (); type Error = String;
    ///     fn start(_: ()) -> Result<Self, String> { Ok(Len) }
    ///     fn run(&mut self, v: Vec<u8>, _: &TaskContext<'_, Self>) -> Result<usize, String> { Ok(v.len()) }
    /// }
    ///
    /// let copied = Pool::<Len>::builder()
    ///     .workers(1)
    ///     .copy_messages(true)
    ///     .codec(Bincode::<1024>::limited())
    ///     .spawn(())
    ///     .unwrap();
    /// let err = copied.submit(vec![0; 4096]).wait().unwrap_err();
    /// assert!(matches!(err, TaskError::Codec(CodecError::TooLarge { .. })));
    ///
    /// let moved = Pool::<Len>::builder().workers(1).spawn(()).unwrap();
    /// assert_eq!(moved.submit(vec![0; 4096]).wait(), Ok(4096));
    /// ```
    pub fn copy_messages(mut self, copy: bool) -> Self {
        self.copy_messages = copy;
        self
    }

    /// Runs each worker in a child process of its own (see
    /// [`process`](crate::process)): a task's panic, abort, segfault or
    /// memory blow-up ends only that child, which the pool replaces; a
    /// task deadline or [`kill_worker`](Pool::kill_worker) kills the
    /// child, so the work really stops. Inputs, outputs, progress values
    /// and errors are encoded with the [codec](Self::codec). The worker
    /// type must be registered with
    /// [`Registry::worker`](crate::process::Registry::worker) first thing
    /// in `main`. Cancellation reaches a running task in the child within
    /// about 20 ms ([`TaskContext::is_cancelled`](super::TaskContext::is_cancelled) turns true there).
    /// Not with [`rayon`](Self::rayon): its workers are rayon's threads.
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::pool::{Pool, TaskContext, Worker};
    /// use isolates::process::{ProcessOptions, Registry};
    ///
    /// struct Pid;
    /// impl Worker for Pid {
    ///     type Args = (); type Input = (); type Output = u32; type Progress = (); type Error = String;
    ///     fn start(_: ()) -> Result<Self, String> { Ok(Pid) }
    ///     fn run(&mut self, _: (), _: &TaskContext<'_, Self>) -> Result<u32, String> {
    ///         Ok(std::process::id())
    ///     }
    /// }
    ///
    /// fn main() {
    ///     Registry::new().worker::<Pid>().init();
    ///     # #[cfg(target_os = "linux")] {
    ///     let pool = Pool::<Pid>::builder()
    ///         .workers(2)
    ///         .process(ProcessOptions::new().max_memory(1 << 30))
    ///         .spawn(())
    ///         .unwrap();
    ///     assert_ne!(pool.submit(()).wait(), Ok(std::process::id()));
    ///     # }
    /// }
    /// ```
    pub fn process(mut self, options: crate::backend::launch::ProcessOptions) -> Self
    where
        W::Args: Serialize + DeserializeOwned,
    {
        self.process = Some(options);
        self
    }

    /// Runs the pool's tasks on workers on other machines, carried by NATS
    /// JetStream (see [`remote`](crate::remote); the `nats` feature):
    /// tasks go to the stream of pool `name` on the server in `options`,
    /// and worker processes started with
    /// [`remote::serve`](crate::remote::serve) for the same `name` run
    /// them. The handles behave as a local pool's. The pool has one
    /// worker thread, which hands tasks over to the NATS client as long as
    /// fewer than [`in_flight`](crate::remote::NatsOptions::in_flight) are
    /// out;
    /// the start arguments given to [`spawn`](Self::spawn) are unused
    /// (the workers get theirs from `serve`). Inputs, outputs, progress
    /// and errors are encoded with the [codec](Self::codec), which the
    /// workers must share. Not with [`rayon`](Self::rayon) or
    /// [`process`](Self::process).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use isolates::pool::{Pool, TaskContext, Worker};
    /// use isolates::remote::NatsOptions;
    ///
    /// struct Square;
    /// impl Worker for Square {
    ///     type Args = (); type Input = u64; type Output = u64; type Progress = (); type Error = String;
    ///     fn start(_: ()) -> Result<Self, String> { Ok(Square) }
    ///     fn run(&mut self, n: u64, _: &TaskContext<'_, Self>) -> Result<u64, String> { Ok(n * n) }
    /// }
    ///
    /// let pool = Pool::<Square>::builder()
    ///     .nats(NatsOptions::new("nats://127.0.0.1:4222").in_flight(32), "squares")
    ///     .spawn(())?;
    /// assert_eq!(pool.submit(9).wait(), Ok(81));
    /// # Ok::<(), isolates::SpawnError>(())
    /// ```
    #[cfg(feature = "nats")]
    pub fn nats(
        mut self,
        options: impl Into<crate::backend::nats::NatsOptions>,
        name: impl Into<String>,
    ) -> Self {
        self.nats = Some((options.into(), name.into()));
        self
    }

    /// The codec for inputs, outputs, progress and errors where they are
    /// encoded: with [`copy_messages`](Self::copy_messages), for a retry's
    /// copy of an input, and wherever they cross a real boundary.
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::pool::{Pool, TaskContext, Worker};
    /// # struct W;
    /// # impl Worker for W {
    /// #     type Args = (); type Input = (); type Output = (); type Progress = (); type Error = String;
    /// #     fn start(_: ()) -> Result<Self, String> { Ok(W) }
    /// #     fn run(&mut self, _: (), _: &TaskContext<'_, Self>) -> Result<(), String> { Ok(()) }
    /// # }
    /// let b = Pool::<W>::builder().codec(isolates::Bincode::<{ 1 << 20 }>::limited());
    /// # let _ = b;
    /// ```
    pub fn codec<C2: Codec>(self, codec: C2) -> PoolBuilder<W, C2> {
        PoolBuilder {
            name: self.name,
            min: self.min,
            max: self.max,
            idle: self.idle,
            routing: self.routing,
            bound: self.bound,
            nice: self.nice,
            rayon: self.rayon,
            copy_messages: self.copy_messages,
            process: self.process,
            #[cfg(feature = "nats")]
            nats: self.nats,
            codec,
            _worker: std::marker::PhantomData,
        }
    }

    /// Whether the workers would run outside this process: in child
    /// processes or on other machines.
    pub(super) fn leaves_process(&self) -> bool {
        #[cfg(feature = "nats")]
        if self.nats.is_some() {
            return true;
        }
        self.process.is_some()
    }

    /// Starts the pool's first workers (the minimum) with `args`.
    ///
    /// # Errors
    ///
    /// [`SpawnError::Args`] if `args` cannot be cloned (a panicking
    /// `Clone`) or, for [`process`](Self::process) workers, encoded;
    /// [`SpawnError::NotRegistered`] if process workers are not
    /// registered; [`SpawnError::Thread`] if no worker thread can be
    /// started.
    ///
    /// # Examples
    ///
    /// See [`Worker`].
    pub fn spawn(#[allow(unused_mut)] mut self, args: W::Args) -> Result<Pool<W>, SpawnError> {
        #[cfg(target_os = "linux")]
        let process = match &self.process {
            Some(_) if self.rayon => {
                return Err(SpawnError::Unsupported(
                    "a rayon pool's workers are threads of its rayon pool: process workers need rayon(false)",
                ));
            }
            Some(options) => {
                let test_entry = crate::backend::registry::lookup_worker::<W, C>()?;
                // The registration knows the arguments are encodable; the
                // builder does not.
                let encode_args = crate::backend::registry::worker_args::<W, C, W::Args>()
                    .ok_or_else(|| {
                        SpawnError::NotRegistered(format!(
                            "worker {} is not registered with Registry::worker",
                            std::any::type_name::<W>()
                        ))
                    })?;
                // Every child start encodes them again: fail here, not in
                // a worker.
                encode_args(&args).map_err(SpawnError::Args)?;
                Some(remote::WorkerSpec::<W> {
                    options: options.clone(),
                    wire: Arc::new(crate::backend::CodecWire(self.codec.clone())),
                    encode_args,
                    key: crate::backend::registry::worker_key::<W, C>(),
                    test_entry,
                })
            }
            None => None,
        };
        #[cfg(not(target_os = "linux"))]
        if self.process.is_some() {
            crate::backend::registry::lookup_worker::<W, C>()?;
        }
        #[cfg(feature = "nats")]
        let nats = match &self.nats {
            Some(_) if self.rayon || self.process.is_some() => {
                return Err(SpawnError::Unsupported(
                    "a NATS pool's workers are remote: not with rayon(true) or process(..)",
                ));
            }
            Some((options, name)) => {
                // One thread hands tasks over; `in_flight` bounds how
                // many are out.
                self.min = 1;
                self.max = 1;
                let client = super::nats::Client::<W>::connect(options, name, self.codec.clone())
                    .map_err(SpawnError::Remote)?;
                Some(client)
            }
            None => None,
        };
        let copy = self.copy_messages;
        let codecs = Arc::new(CodecSet::<W> {
            input: dyn_codec(&self.codec, copy),
            output: dyn_codec(&self.codec, copy),
            progress: dyn_codec(&self.codec, copy),
            error: dyn_codec(&self.codec, copy),
        });
        let fixed = self.routing == Routing::KeyAffinity || self.rayon;
        let max = if self.routing == Routing::KeyAffinity {
            self.min.max(1)
        } else {
            self.max
        };
        let min = if fixed { max } else { self.min };
        let rayon = if self.rayon {
            let nice = self.nice;
            let name = self.name.clone();
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(max)
                    .thread_name(move |i| format!("{name}-{i}"))
                    .start_handler(move |_| lower_priority(nice))
                    .build()
                    .map_err(|e| SpawnError::Thread(e.to_string()))?,
            )
        } else {
            None
        };
        // Idle workers of a rayon pool wait for a task on this thread's
        // behalf while a `par` section runs: a rayon worker that waits on
        // another rayon pool steals its own pool's work meanwhile and
        // sleeps when there is none, woken by rayon when work appears.
        let idle_waits = if self.rayon {
            let name = self.name.clone();
            let built = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .thread_name(move |_| format!("{name}-idle"))
                .stack_size(IDLE_WAITS_STACK)
                .build();
            match built {
                Ok(pool) => Some(pool),
                // Workers then only run tasks: `par` runs on its caller.
                Err(e) => {
                    tracing::warn!(target: "isolates", error = %e,
                        "no thread for idle rayon workers: par work runs on its task's worker");
                    None
                }
            }
        } else {
            None
        };
        let inner = Arc::new(Inner {
            name: self.name,
            min,
            max,
            idle: self.idle,
            routing: self.routing,
            bound: self.bound,
            nice: self.nice,
            args,
            codecs,
            queue: Mutex::new(Queues::new(max)),
            work: Condvar::new(),
            rejoin: Condvar::new(),
            room: Condvar::new(),
            left: Condvar::new(),
            next_id: AtomicU64::new(0),
            counters: PoolCounters::default(),
            handles: AtomicUsize::new(1),
            rayon,
            idle_waits,
            deadlines: Arc::default(),
            #[cfg(target_os = "linux")]
            process,
            #[cfg(feature = "nats")]
            nats,
        });
        if let Some(rayon) = &inner.rayon {
            {
                let mut q = inner.queue.lock();
                for slot in 0..max {
                    q.occupy(slot);
                }
            }
            let broadcast_inner = Arc::clone(&inner);
            rayon.spawn_broadcast(move |ctx| rayon_worker(&broadcast_inner, ctx.index()));
            return Ok(Pool { inner });
        }
        for _ in 0..min.max(1) {
            let claimed = {
                let mut q = inner.queue.lock();
                q.free_slot().map(|slot| (slot, q.occupy(slot)))
            };
            let Some((slot, generation)) = claimed else {
                break;
            };
            if let Err(e) = spawn_worker(&inner, slot, generation) {
                inner.close();
                return Err(e);
            }
        }
        Ok(Pool { inner })
    }
}
