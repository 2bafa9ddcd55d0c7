//! [`Context`]: what a running isolate knows about itself.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::shared::Shared;
use super::{Isolate, IsolateHandle};

/// Passed to [`Isolate::start`] and [`Isolate::handle`]: the isolate's view of
/// itself.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::{Context, ExitReason, Isolate};
///
/// /// Answers once, then stops.
/// struct OneShot;
/// impl Isolate for OneShot {
///     type Args = ();
///     type Message = String;
///     type Reply = String;
///     type Error = String;
///     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(OneShot) }
///     fn handle(&mut self, m: String, ctx: &mut Context<Self>) -> Result<String, String> {
///         ctx.stop();
///         Ok(format!("{} says {m}", ctx.name()))
///     }
/// }
///
/// let iso = isolates::IsolateBuilder::new().name("oneshot").spawn::<OneShot>(()).unwrap();
/// assert_eq!(iso.ask("hi".into(), Duration::from_secs(5)).unwrap(), "oneshot says hi");
/// assert_eq!(iso.join(Duration::from_secs(5)), Some(ExitReason::Normal));
/// ```
pub struct Context<I: Isolate> {
    pub(super) shared: Arc<Shared<I>>,
    pub(super) stop_requested: bool,
    /// [`Context::exit`] was called: the unwind it started is not a panic.
    pub(super) exiting: bool,
}

/// The unwind payload of [`Context::exit`]: the run loop catches it and ends
/// the isolate normally.
struct ExitNow;

impl<I: Isolate> Context<I> {
    /// A handle to this isolate, to give to others or to send to itself.
    ///
    /// An isolate that keeps a handle to itself in its state never exits for
    /// lack of handles; it exits when killed or when it calls
    /// [`stop`](Context::stop).
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::{Context, Isolate, IsolateHandle};
    /// struct Selfish { me: Option<IsolateHandle<Selfish>> }
    /// impl Isolate for Selfish {
    ///     type Args = (); type Message = (); type Reply = String; type Error = String;
    ///     fn start(_: (), ctx: &mut Context<Self>) -> Result<Self, String> {
    ///         Ok(Selfish { me: Some(ctx.handle()) })
    ///     }
    ///     fn handle(&mut self, _: (), ctx: &mut Context<Self>) -> Result<String, String> {
    ///         self.me = None; // let go, so dropping the outer handles ends it
    ///         Ok(ctx.handle().name().to_string())
    ///     }
    /// }
    /// let h = isolates::IsolateBuilder::new().name("me").spawn::<Selfish>(()).unwrap();
    /// assert_eq!(h.ask((), std::time::Duration::from_secs(5)).unwrap(), "me");
    /// ```
    pub fn handle(&self) -> IsolateHandle<I> {
        IsolateHandle::new(Arc::clone(&self.shared))
    }

    /// The isolate's debug name.
    ///
    /// # Examples
    ///
    /// See [`Context`].
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Whether an immediate kill has been requested. A long handler should
    /// check this now and then and return early: native code cannot be
    /// interrupted from outside.
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::{Context, Isolate};
    /// struct Crunch;
    /// impl Isolate for Crunch {
    ///     type Args = (); type Message = u64; type Reply = u64; type Error = String;
    ///     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Crunch) }
    ///     fn handle(&mut self, n: u64, ctx: &mut Context<Self>) -> Result<u64, String> {
    ///         let mut acc = 0u64;
    ///         for i in 0..n {
    ///             if i % 1024 == 0 && ctx.kill_requested() {
    ///                 return Err("killed".into());
    ///             }
    ///             acc = acc.wrapping_add(i);
    ///         }
    ///         Ok(acc)
    ///     }
    /// }
    /// let c = Crunch::spawn(()).unwrap();
    /// assert_eq!(c.ask(10, std::time::Duration::from_secs(5)), Ok(45));
    /// ```
    pub fn kill_requested(&self) -> bool {
        self.shared.kill_requested.load(Ordering::Relaxed)
    }

    /// Exits with [`ExitReason::Normal`](super::ExitReason::Normal) once the
    /// current message is handled (or right after `start`). Messages still
    /// queued are not handled; see [the lifecycle](crate::Isolate#lifecycle).
    ///
    /// # Examples
    ///
    /// See [`Context`].
    pub fn stop(&mut self) {
        self.stop_requested = true;
    }

    /// Ends the isolate now, with [`ExitReason::Normal`](super::ExitReason::Normal):
    /// it never returns, and the rest of the handler (or of `start`) does
    /// not run, as Dart's `Isolate.exit` or an isolate killing itself with
    /// immediate priority. Compare [`stop`](Self::stop), which lets the
    /// handler finish.
    ///
    /// The handler's stack unwinds (its locals are dropped) up to the
    /// isolate's loop, which is not a panic: no error is reported, the
    /// asker of the message being handled gets
    /// [`AskError::Dead`](crate::AskError::Dead) with `Normal`, and queued
    /// messages are not handled. It needs the default `panic = "unwind"`.
    /// Code that catches unwinds itself (`catch_unwind`) and goes on ends
    /// the isolate when it returns.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use isolates::{AskError, Context, ExitReason, Isolate};
    ///
    /// struct Quitter { after: u32 }
    /// impl Isolate for Quitter {
    ///     type Args = (); type Message = u32; type Reply = u32; type Error = String;
    ///     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Quitter { after: 0 }) }
    ///     fn handle(&mut self, n: u32, ctx: &mut Context<Self>) -> Result<u32, String> {
    ///         if n == 0 {
    ///             ctx.exit();
    ///         }
    ///         self.after += 1; // not reached after exit
    ///         Ok(self.after)
    ///     }
    /// }
    ///
    /// let q = Quitter::spawn(()).unwrap();
    /// assert_eq!(q.ask(1, Duration::from_secs(5)), Ok(1));
    /// assert_eq!(q.ask(0, Duration::from_secs(5)), Err(AskError::Dead(ExitReason::Normal)));
    /// assert_eq!(q.join(Duration::from_secs(5)), Some(ExitReason::Normal));
    /// ```
    pub fn exit(&mut self) -> ! {
        self.stop_requested = true;
        self.exiting = true;
        // Not `panic!`: the panic hook does not run, nothing is reported.
        std::panic::resume_unwind(Box::new(ExitNow))
    }
}

impl<I: Isolate> fmt::Debug for Context<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("name", &self.shared.name)
            .finish()
    }
}
