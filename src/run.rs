//! One-shot offload: [`run`], like Dart's `Isolate.run` and Flutter's
//! `compute`.
//!
//! Each call runs on a thread of its own, taken from a cache of idle threads
//! (started on demand, retired after 10 s unused), so concurrent
//! calls never wait for each other and a warm call costs no thread spawn.

use std::convert::Infallible;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel as cb;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{Bincode, Codec};
use crate::error::RunError;
use crate::invoke;
use crate::oneshot;
use crate::pending::{Pending, Reply};
use crate::port::{DynCodec, dyn_codec};

/// How long an idle `run` thread waits for work before it exits.
pub(crate) const IDLE_RETIRE: Duration = Duration::from_secs(10);

/// Runs `f(arg)` on another thread and returns its result as a [`Pending`].
///
/// `arg` moves to the other thread and the result moves back: the call and
/// taking the result cost the same whatever their size (no encoding, no
/// copy), and no memory is shared, since the caller gave `arg` up. `f` is a
/// function pointer, so it captures nothing: non-capturing closures coerce
/// to it. To get a typed error back, return a `Result` from `f`: it arrives
/// as `Ok(Err(e))`.
///
/// The call never blocks: poll the `Pending` from a UI thread, or wait on it.
/// For Dart's copy semantics (both values through a codec, under its
/// limit), use [`run_with`].
///
/// # Examples
///
/// ```
/// use isolates::run;
///
/// fn primes_below(n: u32) -> Vec<u32> {
///     (2..n).filter(|i| (2..*i).take_while(|d| d * d <= *i).all(|d| i % d != 0)).collect()
/// }
///
/// let pending = run(primes_below, 30);
/// assert_eq!(pending.wait().unwrap(), vec![2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
///
/// // A typed error survives the boundary.
/// let parsed = run(|s: String| s.parse::<u8>().map_err(|e| e.to_string()), "300".into());
/// assert!(parsed.wait().unwrap().is_err());
/// ```
///
/// A closure that captures its environment would share memory, so it does
/// not compile:
///
/// ```compile_fail
/// let shared = std::sync::Arc::new(5u32);
/// isolates::run(move |x: u32| x + *shared, 1);
/// ```
///
/// # Globals are shared
///
/// **Unlike Dart**, where each isolate has its own globals, `f` runs on a
/// thread of this process: a `static` it changes is changed for the caller
/// and every other thread too (thread-locals are the thread's, and `run`
/// threads are reused). Pass what `f` needs in `arg` and return what it
/// made. For real separation (its own statics and memory, a crash that
/// cannot take the caller down) run the work in a child process, with
/// [`process::run`](crate::process::run).
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
///
/// static SEEN: AtomicU32 = AtomicU32::new(0);
/// fn remember(n: u32) -> u32 {
///     SEEN.fetch_add(n, Ordering::SeqCst) + n
/// }
///
/// isolates::run(remember, 5).wait().unwrap();
/// assert_eq!(SEEN.load(Ordering::SeqCst), 5); // the caller sees it
/// ```
pub fn run<A, R>(f: fn(A) -> R, arg: A) -> Pending<R, RunError>
where
    A: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    run_on(
        dyn_codec(&Bincode::new(), false),
        dyn_codec(&Bincode::new(), false),
        f,
        arg,
    )
}

/// Like [`run`], with Dart's copy semantics: the argument is encoded with
/// `codec` here and decoded on the other thread, and the result comes back
/// the same way, each under the codec's limit.
///
/// The caller pays for the argument's encode and, when it takes the
/// result, for its decode: use it to bound what crosses, not for large
/// payloads on a UI thread.
///
/// # Examples
///
/// ```
/// use isolates::{run_with, Bincode, CodecError, RunError};
///
/// fn big(n: usize) -> Vec<u8> { vec![1; n] }
/// let err = run_with(Bincode::<64>::limited(), big, 1000).wait().unwrap_err();
/// assert!(matches!(err, RunError::Codec(CodecError::TooLarge { .. })));
/// ```
pub fn run_with<C, A, R>(codec: C, f: fn(A) -> R, arg: A) -> Pending<R, RunError>
where
    C: Codec,
    A: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    run_on(dyn_codec(&codec, true), dyn_codec(&codec, true), f, arg)
}

fn run_on<A: Send + 'static, R: Send + 'static>(
    arg_codec: DynCodec<A>,
    result_codec: DynCodec<R>,
    f: fn(A) -> R,
    arg: A,
) -> Pending<R, RunError> {
    let envelope = match arg_codec.pack(arg, "argument") {
        Ok(packed) => packed.envelope,
        Err((_, e)) => return Pending::ready(Err(RunError::Codec(e))),
    };
    let (tx, rx) = oneshot::oneshot();
    let worker_codec = result_codec.clone();
    let job = Box::new(move || {
        // Everything user-written (serde impls included) runs under `catch`:
        // a panic is this call's error, and the cached thread lives on.
        let arg = arg_codec.unpack(envelope, "argument");
        let invoked = invoke::invoke(arg, |arg| Ok::<_, Infallible>(f(arg))).encode_with(
            |value| {
                let packed = worker_codec.pack(value, "result").map_err(|(_, e)| e)?;
                Ok(packed.envelope.erase())
            },
            |never| match never {},
        );
        tx.send(invoked.into_reply());
    });
    if let Err(e) = submit(job) {
        return Pending::ready(Err(RunError::Spawn(e)));
    }
    Pending::waiting(rx, move |reply| match reply {
        Some(Reply::Value(envelope)) => result_codec
            .unpack_erased(envelope, "result")
            .map_err(RunError::Codec),
        Some(Reply::Panicked(message)) => Err(RunError::Panicked(message)),
        Some(Reply::BadMessage(e) | Reply::Unencodable(e)) => Err(RunError::Codec(e)),
        Some(Reply::Failed(_) | Reply::Dead(_)) | None => Err(RunError::Panicked(
            "the run thread ended without a result".into(),
        )),
    })
}

pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// A cache of threads for [`run`].
///
/// Invariant: `idle` = threads waiting for a job − jobs queued. A submitter
/// claims an idle thread by decrementing it (then queues the job) or starts a
/// new thread; a thread that times out may retire only by claiming itself
/// the same way, so every queued job has a thread waiting for it.
struct Cache {
    tx: cb::Sender<Job>,
    rx: cb::Receiver<Job>,
    idle: AtomicUsize,
}

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| {
        let (tx, rx) = cb::unbounded();
        Cache {
            tx,
            rx,
            idle: AtomicUsize::new(0),
        }
    })
}

pub(crate) fn submit(job: Job) -> Result<(), String> {
    let cache = cache();
    let mut idle = cache.idle.load(Ordering::Acquire);
    while idle > 0 {
        match cache
            .idle
            .compare_exchange_weak(idle, idle - 1, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                // The receiver lives in the static cache: this cannot fail.
                let _ = cache.tx.send(job);
                return Ok(());
            }
            Err(now) => idle = now,
        }
    }
    std::thread::Builder::new()
        .name("isolates-run".into())
        .spawn(move || worker(cache, job))
        .map(drop)
        .map_err(|e| e.to_string())
}

fn worker(cache: &'static Cache, first: Job) {
    first();
    loop {
        cache.idle.fetch_add(1, Ordering::AcqRel);
        let job = match cache.rx.recv_timeout(IDLE_RETIRE) {
            Ok(job) => job,
            Err(_) => {
                let mut idle = cache.idle.load(Ordering::Acquire);
                let retired = loop {
                    if idle == 0 {
                        break false;
                    }
                    match cache.idle.compare_exchange_weak(
                        idle,
                        idle - 1,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => break true,
                        Err(now) => idle = now,
                    }
                };
                if retired {
                    return;
                }
                // A job was queued for the threads that are waiting: take it.
                match cache.rx.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                }
            }
        };
        job();
    }
}
