//! Panic discipline in one place: user code runs under [`catch`], which turns
//! a panic into a [`Caught`] report instead of tearing down the thread.
//!
//! A process-wide panic hook (installed once, chained to the previous hook)
//! records where a caught panic happened and its backtrace (when
//! `RUST_BACKTRACE` asks for one), and reports it through `tracing` instead of
//! printing it: the panic is not lost, it is delivered as a value to the
//! caller, the error listeners and the exit reason. Panics outside [`catch`]
//! go to the previous hook unchanged.

use std::any::Any;
use std::backtrace::{Backtrace, BacktraceStatus};
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

/// A caught panic.
#[derive(Debug, Clone, Default)]
pub(crate) struct Caught {
    /// The panic message.
    pub(crate) message: String,
    /// Where it happened and, when captured, the backtrace.
    pub(crate) stack: String,
}

thread_local! {
    static CATCHING: Cell<bool> = const { Cell::new(false) };
    static LAST: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

fn install_hook() {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if CATCHING.with(Cell::get) {
                let location =
                    info.location().map(|l| format!("at {}:{}:{}", l.file(), l.line(), l.column()));
                let backtrace = Backtrace::capture();
                let mut stack = location.unwrap_or_default();
                if backtrace.status() == BacktraceStatus::Captured {
                    stack.push('\n');
                    stack.push_str(&backtrace.to_string());
                }
                tracing::debug!(target: "isolates", panic = %stack, "caught a panic in isolate code");
                LAST.with(|l| *l.borrow_mut() = Some(stack));
            } else {
                previous(info);
            }
        }));
    });
}

/// The error's text; a panicking `Display` gives a placeholder instead of
/// unwinding into the runtime.
pub(crate) fn describe(error: &impl std::fmt::Display) -> String {
    catch(|| error.to_string())
        .unwrap_or_else(|c| format!("<the error's Display panicked: {}>", c.message))
}

/// Runs `f`, catching a panic as a [`Caught`].
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, Caught> {
    install_hook();
    let was = CATCHING.with(|c| c.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(was));
    result.map_err(|payload| {
        let message = payload_message(&*payload);
        // Dropping a payload can itself panic; keep that inside too.
        let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(payload)));
        Caught {
            message,
            stack: LAST.with(|l| l.borrow_mut().take()).unwrap_or_default(),
        }
    })
}

fn payload_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catches_message_and_location() {
        let caught = catch(|| panic!("boom {}", 7)).unwrap_err();
        assert_eq!(caught.message, "boom 7");
        assert!(caught.stack.contains("unwind.rs"), "{}", caught.stack);
        assert_eq!(catch(|| 5).unwrap(), 5);
    }
}
