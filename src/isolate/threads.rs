//! Threads kept for process isolates' incarnations.
//!
//! A process isolate's thread runs only this crate's loop (its `start`
//! and `handle` run in the child), so a thread that served one can serve
//! the next: spawning one then hands its loop to a parked thread instead
//! of creating one (about 15–45 µs of `mmap`, `mprotect` and `clone` on
//! the caller's thread, which is on the critical path of a spawn). A
//! thread that finds no work within [`KEEP`] ends; at most [`MAX_IDLE`]
//! wait. An in-process isolate always gets a thread of its own: its
//! handlers' thread-locals must not meet another isolate's.

use std::time::Duration;

use crossbeam_channel as cb;
use parking_lot::Mutex;

/// An incarnation's loop.
pub(super) type Job = Box<dyn FnOnce() + Send>;

/// How long a thread waits for the next incarnation before it ends.
const KEEP: Duration = Duration::from_secs(10);

/// How many threads wait at most.
const MAX_IDLE: usize = 16;

/// The parked threads, each reached through its own channel.
static IDLE: Mutex<Vec<cb::Sender<Job>>> = Mutex::new(Vec::new());

/// Runs `job` on a parked thread, or on a new one named `name`; fails only
/// when no thread can be created (the job is dropped then).
pub(super) fn run(name: &str, job: Job) -> std::io::Result<()> {
    let mut job = job;
    loop {
        let Some(parked) = IDLE.lock().pop() else {
            break;
        };
        match parked.send(job) {
            Ok(()) => return Ok(()),
            // Cannot happen (a parked thread keeps its receiver until it
            // has taken itself off the list), but the job is kept if so.
            Err(cb::SendError(back)) => job = back,
        }
    }
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || serve(job))
        .map(drop)
}

/// Runs `job`, then the jobs handed to this thread while it is parked.
fn serve(first: Job) {
    let (tx, rx) = cb::bounded::<Job>(1);
    let mut job = first;
    loop {
        job();
        {
            let mut idle = IDLE.lock();
            if idle.len() >= MAX_IDLE {
                return;
            }
            idle.push(tx.clone());
        }
        job = match rx.recv_timeout(KEEP) {
            Ok(next) => next,
            Err(_) => {
                let mut idle = IDLE.lock();
                if let Some(i) = idle.iter().position(|s| s.same_channel(&tx)) {
                    idle.swap_remove(i);
                    return;
                }
                drop(idle);
                // Taken off the list by a spawn meanwhile: its job is on
                // the way.
                match rx.recv() {
                    Ok(next) => next,
                    Err(_) => return,
                }
            }
        };
    }
}

/// Names the current thread `name` for the OS (`top -H`, debuggers), as
/// far as it fits (15 bytes); the thread's `std` name stays its first.
pub(super) fn set_os_name(name: &str) {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    if let Ok(name) = std::ffi::CString::new(&name.as_bytes()[..end]) {
        let _ = rustix::thread::set_name(&name);
    }
}
