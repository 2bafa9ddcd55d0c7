//! The crate's panic hook composes with an application's: one installed
//! before the crate's still gets every panic outside isolate code, and one
//! installed after it (chaining to the previous hook, as composable hooks
//! do) sees every panic while the crate still records where a caught one
//! happened. One test: the hook is process-wide.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use isolates::{AskError, Context, Isolate, IsolateBuilder, IsolateError, port};

struct Touchy;

impl Isolate for Touchy {
    type Args = ();
    type Message = u8;
    type Reply = u8;
    type Error = String;
    fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> {
        Ok(Touchy)
    }
    fn handle(&mut self, n: u8, _: &mut Context<Self>) -> Result<u8, String> {
        assert!(n != 0, "zero is not allowed");
        Ok(n)
    }
}

const T: Duration = Duration::from_secs(10);

/// Panics in an isolate; returns the stack its error listener was told.
fn panic_in_an_isolate() -> String {
    let h = IsolateBuilder::new().spawn::<Touchy>(()).unwrap();
    let (tx, errors) = port::unbounded::<IsolateError>();
    h.add_error_listener(tx);
    assert_eq!(
        h.ask_timeout(0, T),
        Err(AskError::Panicked("zero is not allowed".into()))
    );
    errors.recv_timeout(T).unwrap().stack
}

fn panic_outside() {
    let _ = std::panic::catch_unwind(|| panic!("outside any isolate"));
}

#[test]
fn the_crates_panic_hook_composes_with_the_applications() {
    // The application's hook, installed first (as a crash reporter is).
    let before = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&before);
    std::panic::set_hook(Box::new(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
    }));

    // A caught panic is the isolate's error, reported with where it
    // happened; the application's hook is not bothered with it.
    let stack = panic_in_an_isolate();
    assert!(stack.contains("panic_hook.rs"), "stack: {stack:?}");
    assert_eq!(before.load(Ordering::SeqCst), 0);
    // Any other panic reaches the application's hook, through ours.
    panic_outside();
    assert_eq!(before.load(Ordering::SeqCst), 1);

    // A second hook installed after the crate's, chaining to it.
    let after = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&after);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        counted.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
    // It sees the caught panic, and the crate still records where it was.
    let stack = panic_in_an_isolate();
    assert!(stack.contains("panic_hook.rs"), "stack: {stack:?}");
    assert_eq!(after.load(Ordering::SeqCst), 1);
    assert_eq!(before.load(Ordering::SeqCst), 1);
    // And a panic outside goes through all three.
    panic_outside();
    assert_eq!(after.load(Ordering::SeqCst), 2);
    assert_eq!(before.load(Ordering::SeqCst), 2);
    let _ = std::panic::take_hook();
}
