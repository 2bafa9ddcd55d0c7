//! Pools whose workers run on other machines, carried by NATS JetStream
//! (the `nats` cargo feature).
//!
//! The client is an ordinary [`Pool`](crate::pool::Pool) built with
//! [`PoolBuilder::nats`](crate::pool::PoolBuilder::nats): the same
//! [`Worker`], the same [`TaskHandle`](crate::pool::TaskHandle). Its
//! tasks are published, encoded with the pool's codec, to a JetStream
//! work-queue stream of the pool's name (`ISOLATES_<name>`, file storage,
//! subject `isolates.<name>.tasks`), in batches: the tasks handed over
//! while an earlier batch waits for the server's confirmation share one
//! message (up to [`batch`](NatsOptions::batch) tasks; a task alone goes
//! at once). Worker processes started with [`serve`] on any machine that
//! reaches the server pull the batches from one durable consumer, run
//! their tasks on local worker threads and send the results back, several
//! to a message.
//!
//! - **At least once on the wire, exactly once at the handle.** A worker
//!   acknowledges a batch only after the client confirmed all its
//!   results. A worker that dies mid-batch leaves it unacknowledged, and
//!   JetStream hands it to another worker after the
//!   [ack wait](NatsOptions::ack_wait); a long task keeps its batch's
//!   claim with in-progress acknowledgements. The client resolves each
//!   handle once and ignores a second result.
//! - **Priorities, cancellation, deadlines.** Tasks wait in the client's
//!   queue in priority order until one of the
//!   [`in_flight`](NatsOptions::in_flight) places on the wire is free.
//!   Cancelling a queued task never sends it; cancelling a published one
//!   tells the workers at once: a worker skips it if it has not started,
//!   and a running one sees
//!   [`TaskContext::is_cancelled`](crate::pool::TaskContext::is_cancelled).
//!   A deadline travels with the task and cancels it the same way.
//! - **Progress** values and [`MainThread`](crate::pool::MainThread)
//!   callbacks work as in a local pool.
//! - **Failures are typed, on time.** An unreachable server fails
//!   [`PoolBuilder::spawn`](crate::pool::PoolBuilder::spawn) and [`serve`]
//!   with [`RemoteError`] within the
//!   [connect timeout](NatsOptions::connect_timeout) (5 s by default). A
//!   server that goes away mid-run resolves the tasks on the wire
//!   [`TaskError::WorkerLost`](crate::TaskError::WorkerLost) once it has
//!   been gone for the [disconnect timeout](NatsOptions::disconnect_timeout)
//!   (30 s by default); tasks stored in the stream survive a server
//!   restart.
//! - **Hostile bytes** on the task subject are counted
//!   ([`ServeStats::garbage`]) and dropped; a worker never crashes on them,
//!   and decoding an input stays under the codec's limit.
//!
//! The public API is synchronous: the NATS client (async-nats) runs on a
//! small single-threaded tokio runtime on a thread of its own, and no
//! tokio or async-nats type appears here.
//!
//! # Examples
//!
//! A worker process on each machine, and a client:
//!
//! ```no_run
//! use isolates::pool::{Pool, TaskContext, Worker};
//! use isolates::remote::{self, NatsOptions};
//!
//! struct Square;
//! impl Worker for Square {
//!     type Args = (); type Input = u64; type Output = u64; type Progress = (); type Error = String;
//!     fn start(_: ()) -> Result<Self, String> { Ok(Square) }
//!     fn run(&mut self, n: u64, _: &TaskContext<'_, Self>) -> Result<u64, String> { Ok(n * n) }
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let options = NatsOptions::new("nats://10.0.0.5:4222").user_password("app", "secret");
//!     if std::env::args().any(|a| a == "--serve") {
//!         // Runs until the process is stopped.
//!         remote::serve::<Square>(&options, "squares", ())?;
//!         return Ok(());
//!     }
//!     let pool = Pool::<Square>::builder().nats(options, "squares").spawn(())?;
//!     assert_eq!(pool.submit(12).wait(), Ok(144));
//!     Ok(())
//! }
//! ```

use std::fmt;
use std::sync::Arc;

use crate::codec::{Bincode, Codec};
use crate::error::RemoteError;
use crate::pool::Worker;

mod serve;

pub use crate::backend::nats::NatsOptions;
pub use serve::ServeStats;

/// Serves pool `name`'s tasks in this process for as long as it runs (a
/// server that goes away is reconnected to, again and again): pulls tasks
/// from the server, runs them on
/// [`workers`](NatsOptions::workers) threads, each with a `W` started
/// from a clone of `args`, and sends results and progress back. Blocks;
/// see [`start`] for a handle that can stop it.
///
/// # Errors
///
/// [`RemoteError`]: the server is unreachable (within the connect
/// timeout), refuses the credentials, has no JetStream, or `W::start`
/// fails.
///
/// # Examples
///
/// See the [module](self).
pub fn serve<W: Worker>(
    options: &NatsOptions,
    name: &str,
    args: W::Args,
) -> Result<(), RemoteError> {
    start::<W>(options, name, args)?.wait()
}

/// Starts serving pool `name`'s tasks (as [`serve`]) and returns at once.
///
/// # Errors
///
/// As [`serve`].
///
/// # Examples
///
/// ```no_run
/// # use isolates::pool::{TaskContext, Worker};
/// # struct Square;
/// # impl Worker for Square {
/// #     type Args = (); type Input = u64; type Output = u64; type Progress = (); type Error = String;
/// #     fn start(_: ()) -> Result<Self, String> { Ok(Square) }
/// #     fn run(&mut self, n: u64, _: &TaskContext<'_, Self>) -> Result<u64, String> { Ok(n * n) }
/// # }
/// use isolates::remote::{self, NatsOptions};
///
/// let serving = remote::start::<Square>(&NatsOptions::new("nats://127.0.0.1:4222"), "squares", ())?;
/// println!("{:?}", serving.stats());
/// serving.stop();
/// # Ok::<(), isolates::RemoteError>(())
/// ```
pub fn start<W: Worker>(
    options: &NatsOptions,
    name: &str,
    args: W::Args,
) -> Result<Serving, RemoteError> {
    start_with::<W, Bincode>(options, name, args, Bincode::new())
}

/// [`start`] with a codec for inputs, outputs, progress and errors: the
/// same codec as the client pool's
/// [`PoolBuilder::codec`](crate::pool::PoolBuilder::codec). Its limit
/// bounds what a task's decode may take.
///
/// # Errors
///
/// As [`serve`].
///
/// # Examples
///
/// ```no_run
/// # use isolates::pool::{TaskContext, Worker};
/// # struct Square;
/// # impl Worker for Square {
/// #     type Args = (); type Input = u64; type Output = u64; type Progress = (); type Error = String;
/// #     fn start(_: ()) -> Result<Self, String> { Ok(Square) }
/// #     fn run(&mut self, n: u64, _: &TaskContext<'_, Self>) -> Result<u64, String> { Ok(n * n) }
/// # }
/// use isolates::Bincode;
/// use isolates::remote::{self, NatsOptions};
///
/// let options = NatsOptions::new("nats://127.0.0.1:4222");
/// let serving = remote::start_with::<Square, _>(&options, "squares", (), Bincode::<4096>::limited())?;
/// serving.wait()?;
/// # Ok::<(), isolates::RemoteError>(())
/// ```
pub fn start_with<W: Worker, C: Codec>(
    options: &NatsOptions,
    name: &str,
    args: W::Args,
    codec: C,
) -> Result<Serving, RemoteError> {
    let inner = serve::start::<W, C>(options, name, args, codec)?;
    Ok(Serving { inner })
}

/// A running [`start`]: its figures, and a way to stop it.
///
/// # Examples
///
/// See [`start`].
pub struct Serving {
    inner: Arc<serve::Served>,
}

impl fmt::Debug for Serving {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serving")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Serving {
    /// What this process has served so far.
    ///
    /// # Examples
    ///
    /// See [`start`].
    pub fn stats(&self) -> ServeStats {
        self.inner.stats()
    }

    /// Stops pulling tasks and closes the connection; tasks it holds and
    /// has not finished go back to other workers after the ack wait.
    ///
    /// # Examples
    ///
    /// See [`start`].
    pub fn stop(&self) {
        self.inner.stop();
    }

    /// Waits until it stops: [`stop`](Self::stop) from another thread (a
    /// lost server is reconnected to, not an end).
    ///
    /// # Errors
    ///
    /// None yet: the `Result` leaves room for an end that is a failure.
    ///
    /// # Examples
    ///
    /// See [`start_with`].
    pub fn wait(&self) -> Result<(), RemoteError> {
        self.inner.wait()
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.inner.stop();
    }
}
