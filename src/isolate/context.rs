//! [`Context`]: what a running isolate knows about itself.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::shared::Shared;
use super::timer::{TimerRef, Timers};
use super::watch::{self, Down, MonitorRef, Peer, Signal};
use super::{Isolate, IsolateHandle};
use crate::error::{TimerError, WatchError};

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
/// assert_eq!(iso.ask_timeout("hi".into(), Duration::from_secs(5)).unwrap(), "oneshot says hi");
/// assert_eq!(iso.join(Duration::from_secs(5)), Some(ExitReason::Normal));
/// ```
pub struct Context<I: Isolate> {
    pub(super) shared: Arc<Shared<I>>,
    pub(super) stop_requested: bool,
    /// [`Context::exit`] was called: the unwind it started is not a panic.
    pub(super) exiting: bool,
    /// The incarnation this context serves; `None` in a process isolate's
    /// child, which has no loop of the parent's to wake or signal.
    pub(super) incarnation: Option<u64>,
    pub(super) timers: Timers<I::Message>,
    /// The monitors this incarnation set, and the isolates they watch.
    pub(super) watching: HashMap<MonitorRef, Weak<dyn Peer>>,
    pub(super) trap_exits: bool,
}

/// The unwind payload of [`Context::exit`]: the run loop catches it and ends
/// the isolate normally.
struct ExitNow;

impl<I: Isolate> Context<I> {
    /// A context for the incarnation `incarnation` (`None`: in a child).
    pub(super) fn new(shared: Arc<Shared<I>>, incarnation: Option<u64>) -> Self {
        Context {
            shared,
            stop_requested: false,
            exiting: false,
            incarnation,
            timers: Timers::new(),
            watching: HashMap::new(),
            trap_exits: false,
        }
    }

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
    /// assert_eq!(h.ask_timeout((), std::time::Duration::from_secs(5)).unwrap(), "me");
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
    /// assert_eq!(c.ask_timeout(10, std::time::Duration::from_secs(5)), Ok(45));
    /// ```
    pub fn kill_requested(&self) -> bool {
        self.shared.kill_requested.load(Ordering::Relaxed)
    }

    /// Sends `msg` to this isolate, as an ordinary cast, once `delay` has
    /// passed (never before). Costs no thread: the isolate's loop parks
    /// until its earliest timer's deadline. The timer is cancelled when the
    /// isolate exits (a restarted isolate starts with none) or with
    /// [`TimerRef::cancel`].
    ///
    /// A timer's message does not go through the mailbox: it is handled
    /// between messages once due, and a busy isolate handles it after the
    /// message at hand.
    ///
    /// # Errors
    ///
    /// [`TimerError::OutOfRange`] if the deadline is beyond the clock,
    /// [`TimerError::InChildProcess`] inside a process isolate's child.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use isolates::{Context, Isolate, port::{self, SendPort}};
    ///
    /// /// Says "ding" on its port a little after it starts.
    /// struct Egg { out: SendPort<String> }
    /// impl Isolate for Egg {
    ///     type Args = SendPort<String>; type Message = (); type Reply = (); type Error = String;
    ///     fn start(out: SendPort<String>, ctx: &mut Context<Self>) -> Result<Self, String> {
    ///         ctx.send_after(Duration::from_millis(20), ()).map_err(|e| e.to_string())?;
    ///         Ok(Egg { out })
    ///     }
    ///     fn handle(&mut self, _: (), _: &mut Context<Self>) -> Result<(), String> {
    ///         self.out.send("ding".into()).map_err(|e| e.to_string())
    ///     }
    /// }
    /// let (tx, rx) = port::unbounded();
    /// let egg = Egg::spawn(tx).unwrap();
    /// assert_eq!(rx.recv_timeout(Duration::from_secs(5)).as_deref(), Ok("ding"));
    /// # drop(egg);
    /// ```
    pub fn send_after(&mut self, delay: Duration, msg: I::Message) -> Result<TimerRef, TimerError> {
        if self.incarnation.is_none() {
            return Err(TimerError::InChildProcess);
        }
        let deadline = Instant::now()
            .checked_add(delay)
            .ok_or(TimerError::OutOfRange)?;
        Ok(self.timers.insert(deadline, msg, None))
    }

    /// Sends a copy of `msg` to this isolate, as an ordinary cast, every
    /// `period`, the first after one period, until the timer is
    /// [cancelled](TimerRef::cancel) or the isolate exits.
    ///
    /// Ticks keep to the schedule `start + k × period`: a late tick does
    /// not push the next ones back (no drift). Ticks missed while the
    /// isolate was busy are skipped, not delivered in a burst: the next
    /// one comes at the next point of the schedule, as tokio's
    /// `MissedTickBehavior::Skip`. So a slow isolate never has ticks piling
    /// up.
    ///
    /// # Errors
    ///
    /// [`TimerError::ZeroPeriod`] for a zero `period`; otherwise as
    /// [`send_after`](Self::send_after).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use isolates::{Context, Isolate, TimerRef};
    ///
    /// /// Counts ticks; stops ticking at three.
    /// struct Metronome { ticks: u32, timer: Option<TimerRef> }
    /// #[derive(Clone, serde::Serialize, serde::Deserialize)]
    /// enum Msg { Tick, Count }
    /// impl Isolate for Metronome {
    ///     type Args = (); type Message = Msg; type Reply = u32; type Error = String;
    ///     fn start(_: (), ctx: &mut Context<Self>) -> Result<Self, String> {
    ///         let timer = ctx.send_interval(Duration::from_millis(5), Msg::Tick).map_err(|e| e.to_string())?;
    ///         Ok(Metronome { ticks: 0, timer: Some(timer) })
    ///     }
    ///     fn handle(&mut self, m: Msg, _: &mut Context<Self>) -> Result<u32, String> {
    ///         if let Msg::Tick = m {
    ///             self.ticks += 1;
    ///             if self.ticks == 3 {
    ///                 self.timer.take().map(|t| t.cancel());
    ///             }
    ///         }
    ///         Ok(self.ticks)
    ///     }
    /// }
    /// let m = Metronome::spawn(()).unwrap();
    /// let deadline = std::time::Instant::now() + Duration::from_secs(5);
    /// while m.ask_timeout(Msg::Count, Duration::from_secs(5)) != Ok(3) {
    ///     assert!(std::time::Instant::now() < deadline);
    ///     std::thread::sleep(Duration::from_millis(1));
    /// }
    /// ```
    pub fn send_interval(
        &mut self,
        period: Duration,
        msg: I::Message,
    ) -> Result<TimerRef, TimerError>
    where
        I::Message: Clone,
    {
        if self.incarnation.is_none() {
            return Err(TimerError::InChildProcess);
        }
        if period.is_zero() {
            return Err(TimerError::ZeroPeriod);
        }
        let first = Instant::now()
            .checked_add(period)
            .ok_or(TimerError::OutOfRange)?;
        let copy: fn(&I::Message) -> I::Message = Clone::clone;
        Ok(self.timers.insert(first, msg, Some((period, copy))))
    }

    /// Monitors `other` (of any isolate type), as OTP's `monitor`: when
    /// its incarnation ends, this isolate's [`Isolate::down`] gets a
    /// [`Down`] with the reason, once; at once if it has ended already.
    /// Monitoring twice gives two monitors and two `Down`s. The monitor
    /// goes when either side exits, or with [`demonitor`](Self::demonitor).
    ///
    /// # Errors
    ///
    /// [`WatchError::InChildProcess`] inside a process isolate's child.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use isolates::{Context, Down, Isolate, IsolateHandle, port::{self, SendPort}};
    /// # struct Echo;
    /// # impl Isolate for Echo {
    /// #     type Args = (); type Message = u8; type Reply = u8; type Error = String;
    /// #     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Echo) }
    /// #     fn handle(&mut self, m: u8, _: &mut Context<Self>) -> Result<u8, String> { Ok(m) }
    /// # }
    ///
    /// /// Watches the isolate registered under the name it is sent, and
    /// /// forwards its `Down`.
    /// struct Watcher { out: SendPort<Down> }
    /// impl Isolate for Watcher {
    ///     type Args = SendPort<Down>; type Message = String; type Reply = u64; type Error = String;
    ///     fn start(out: SendPort<Down>, _: &mut Context<Self>) -> Result<Self, String> { Ok(Watcher { out }) }
    ///     fn handle(&mut self, name: String, ctx: &mut Context<Self>) -> Result<u64, String> {
    ///         let target = IsolateHandle::<Echo>::whereis(&name).map_err(|e| e.to_string())?;
    ///         let monitor = ctx.monitor(&target).map_err(|e| e.to_string())?;
    ///         Ok(monitor.target())
    ///     }
    ///     fn down(&mut self, down: Down, _: &mut Context<Self>) -> Result<(), String> {
    ///         self.out.send(down).map_err(|e| e.to_string())
    ///     }
    /// }
    ///
    /// let echo = Echo::spawn(()).unwrap();
    /// echo.register("doc-monitored").unwrap();
    /// let (tx, downs) = port::unbounded();
    /// let watcher = Watcher::spawn(tx).unwrap();
    /// assert_eq!(watcher.ask_timeout("doc-monitored".into(), Duration::from_secs(5)), Ok(echo.id()));
    /// echo.kill(isolates::Priority::Immediate);
    /// let down = downs.recv_timeout(Duration::from_secs(5)).unwrap();
    /// assert_eq!(down.id, echo.id());
    /// ```
    pub fn monitor<J: Isolate>(
        &mut self,
        other: &IsolateHandle<J>,
    ) -> Result<MonitorRef, WatchError> {
        let incarnation = self.incarnation.ok_or(WatchError::InChildProcess)?;
        let target = other.shared();
        let monitor = MonitorRef::new(target.id);
        let me = Arc::downgrade(&self.shared) as Weak<dyn Peer>;
        self.watching
            .insert(monitor, Arc::downgrade(target) as Weak<dyn Peer>);
        if let Err(reason) = target.watch.monitor(monitor, me, incarnation) {
            // Gone already: the `Down` comes through the loop all the same.
            self.shared.signal(Signal {
                incarnation,
                down: Down {
                    id: target.id,
                    name: target.name.clone(),
                    reason,
                    monitor: Some(monitor),
                },
                link: false,
            });
        }
        Ok(monitor)
    }

    /// Takes off a monitor this isolate set; returns whether it was still
    /// to fire. After it, the monitor's [`Down`] is not delivered, even one
    /// already on its way.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use isolates::{Context, Isolate};
    /// struct Fickle;
    /// impl Isolate for Fickle {
    ///     type Args = (); type Message = (); type Reply = (bool, bool); type Error = String;
    ///     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Fickle) }
    ///     fn handle(&mut self, _: (), ctx: &mut Context<Self>) -> Result<(bool, bool), String> {
    ///         let me = ctx.handle();
    ///         let monitor = ctx.monitor(&me).map_err(|e| e.to_string())?;
    ///         Ok((ctx.demonitor(&monitor), ctx.demonitor(&monitor)))
    ///     }
    /// }
    /// let f = Fickle::spawn(()).unwrap();
    /// assert_eq!(f.ask_timeout((), Duration::from_secs(5)), Ok((true, false)));
    /// ```
    pub fn demonitor(&mut self, monitor: &MonitorRef) -> bool {
        let Some(peer) = self.watching.remove(monitor) else {
            return false;
        };
        if let Some(peer) = peer.upgrade() {
            peer.watch().demonitor(monitor);
        }
        true
    }

    /// Links this isolate and `other` (of any isolate type), both ways, as
    /// OTP's `link`: when either exits abnormally, the other exits too,
    /// with [`ExitReason::Linked`](crate::ExitReason::Linked) naming it —
    /// unless it [traps exits](Self::trap_exits), in which case its
    /// [`Isolate::down`] gets a [`Down`] (with `monitor: None`) instead. A
    /// normal exit does not propagate (a trapping isolate still gets its
    /// `Down`). Linking to an isolate that has exited already acts at once,
    /// with its reason. Linking twice is linking once; linking to itself
    /// does nothing. The link goes when either side exits, or with
    /// [`unlink`](Self::unlink).
    ///
    /// # Errors
    ///
    /// [`WatchError::InChildProcess`] inside a process isolate's child.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use isolates::{Context, ExitReason, Isolate, IsolateHandle};
    ///
    /// /// Links to the isolate registered under the name it is sent; fails on 0.
    /// struct Partner;
    /// impl Isolate for Partner {
    ///     type Args = (); type Message = Option<String>; type Reply = (); type Error = String;
    ///     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Partner) }
    ///     fn handle(&mut self, m: Option<String>, ctx: &mut Context<Self>) -> Result<(), String> {
    ///         let name = m.ok_or("asked to fail")?;
    ///         let other = IsolateHandle::<Partner>::whereis(&name).map_err(|e| e.to_string())?;
    ///         ctx.link(&other).map_err(|e| e.to_string())
    ///     }
    /// }
    ///
    /// let a = Partner::spawn(()).unwrap();
    /// let b = Partner::spawn(()).unwrap();
    /// b.register("doc-partner-b").unwrap();
    /// a.ask_timeout(Some("doc-partner-b".into()), Duration::from_secs(5)).unwrap();
    /// let _ = b.ask_timeout(None, Duration::from_secs(5)); // b fails, a follows
    /// let reason = a.join(Duration::from_secs(5)).unwrap();
    /// assert!(matches!(reason, ExitReason::Linked { id, .. } if id == b.id()), "{reason}");
    /// ```
    pub fn link<J: Isolate>(&mut self, other: &IsolateHandle<J>) -> Result<(), WatchError> {
        let incarnation = self.incarnation.ok_or(WatchError::InChildProcess)?;
        let target = other.shared();
        if target.id == self.shared.id {
            return Ok(());
        }
        let me = Arc::clone(&self.shared) as Arc<dyn Peer>;
        let them = Arc::clone(target) as Arc<dyn Peer>;
        if let Err(reason) = watch::link(&me, incarnation, &them) {
            self.shared.signal(Signal {
                incarnation,
                down: Down {
                    id: target.id,
                    name: target.name.clone(),
                    reason,
                    monitor: None,
                },
                link: true,
            });
        }
        Ok(())
    }

    /// Undoes a [`link`](Self::link) with `other`; returns whether there
    /// was one. An exit of `other` already on its way is still delivered.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use isolates::{Context, Isolate};
    /// struct Loner;
    /// impl Isolate for Loner {
    ///     type Args = (); type Message = (); type Reply = bool; type Error = String;
    ///     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Loner) }
    ///     fn handle(&mut self, _: (), ctx: &mut Context<Self>) -> Result<bool, String> {
    ///         let other = Loner::spawn(()).map_err(|e| e.to_string())?;
    ///         ctx.link(&other).map_err(|e| e.to_string())?;
    ///         Ok(ctx.unlink(&other) && !ctx.unlink(&other))
    ///     }
    /// }
    /// let l = Loner::spawn(()).unwrap();
    /// assert_eq!(l.ask_timeout((), Duration::from_secs(5)), Ok(true));
    /// ```
    pub fn unlink<J: Isolate>(&mut self, other: &IsolateHandle<J>) -> bool {
        let target = other.shared();
        let mine = self.shared.watch.unlink(target.id);
        let theirs = target.watch.unlink(self.shared.id);
        mine || theirs
    }

    /// Whether a linked isolate's exit reaches [`Isolate::down`] as a
    /// [`Down`] (`true`) or, when abnormal, ends this isolate too (`false`,
    /// the default), as OTP's `process_flag(trap_exit, ...)`. Set it in
    /// `start`, before linking.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use isolates::{Context, Down, ExitReason, Isolate, IsolateHandle, port::{self, SendPort}};
    ///
    /// /// Links to an isolate that fails at once, and survives it.
    /// struct Trapper { out: SendPort<Down> }
    /// struct Doomed;
    /// impl Isolate for Doomed {
    ///     type Args = (); type Message = (); type Reply = (); type Error = String;
    ///     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Err("doomed".into()) }
    ///     fn handle(&mut self, _: (), _: &mut Context<Self>) -> Result<(), String> { Ok(()) }
    /// }
    /// impl Isolate for Trapper {
    ///     type Args = SendPort<Down>; type Message = (); type Reply = (); type Error = String;
    ///     fn start(out: SendPort<Down>, ctx: &mut Context<Self>) -> Result<Self, String> {
    ///         ctx.trap_exits(true);
    ///         let doomed = Doomed::spawn(()).map_err(|e| e.to_string())?;
    ///         ctx.link(&doomed).map_err(|e| e.to_string())?;
    ///         Ok(Trapper { out })
    ///     }
    ///     fn handle(&mut self, _: (), _: &mut Context<Self>) -> Result<(), String> { Ok(()) }
    ///     fn down(&mut self, down: Down, _: &mut Context<Self>) -> Result<(), String> {
    ///         self.out.send(down).map_err(|e| e.to_string())
    ///     }
    /// }
    /// let (tx, downs) = port::unbounded();
    /// let trapper = Trapper::spawn(tx).unwrap();
    /// let down = downs.recv_timeout(Duration::from_secs(5)).unwrap();
    /// assert_eq!(down.reason, ExitReason::Failed("doomed".into()));
    /// assert_eq!(down.monitor, None);
    /// assert!(!trapper.is_finished());
    /// ```
    pub fn trap_exits(&mut self, trap: bool) {
        self.trap_exits = trap;
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
    /// assert_eq!(q.ask_timeout(1, Duration::from_secs(5)), Ok(1));
    /// assert_eq!(q.ask_timeout(0, Duration::from_secs(5)), Err(AskError::Dead(ExitReason::Normal)));
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
