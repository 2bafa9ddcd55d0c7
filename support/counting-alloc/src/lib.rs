//! A global allocator that counts, per thread and only inside [`peak_of`],
//! the bytes allocated and not yet freed, and their peak: the tests of
//! `isolates` measure with it what a decode holds. It lives in a crate of
//! its own because `isolates` forbids `unsafe` code, tests included.
//!
//! ```
//! #[global_allocator]
//! static ALLOCATOR: isolates_counting_alloc::Counting = isolates_counting_alloc::Counting;
//!
//! let (v, peak) = isolates_counting_alloc::peak_of(|| vec![0u8; 1000]);
//! assert_eq!(v.len(), 1000);
//! assert!(peak >= 1000);
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The counting allocator: [`System`]'s, with counters. Install it with
/// `#[global_allocator]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counting;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn moved(delta: isize) {
    // `try_with`: a thread's locals may be gone while it exits.
    if ON.try_with(Cell::get).unwrap_or(false) {
        let _ = LIVE.try_with(|live| {
            let now = live.get() + delta;
            live.set(now);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
        });
    }
}

fn signed(n: usize) -> isize {
    isize::try_from(n).unwrap_or(isize::MAX)
}

// SAFETY: every call goes to `System` unchanged; only thread-local
// counters (const-initialized, without destructors: they never allocate)
// move beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        moved(signed(layout.size()));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        moved(signed(layout.size()));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        moved(-signed(layout.size()));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        moved(signed(new_size) - signed(layout.size()));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` and returns what it returns with the most heap this thread
/// held at once while it ran (its result included; memory allocated
/// before and freed during it is not deducted). Counts only with
/// [`Counting`] installed as the global allocator; otherwise 0.
///
/// # Examples
///
/// See the [crate documentation](crate).
pub fn peak_of<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    ON.with(|on| on.set(true));
    let out = f();
    ON.with(|on| on.set(false));
    (out, usize::try_from(PEAK.with(Cell::get)).unwrap_or(0))
}
