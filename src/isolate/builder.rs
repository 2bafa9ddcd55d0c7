//! [`IsolateBuilder`]: how an isolate is configured and spawned.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel as cb;

use super::shared::{Codecs, Control, Mail, Shared};
use super::{Isolate, IsolateHandle, PauseToken, runloop};
use crate::codec::envelope::Envelope;
use crate::codec::{Bincode, Codec};
use crate::error::SpawnError;
use crate::port::dyn_codec;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// How many messages an isolate's mailbox holds.
///
/// # Examples
///
/// ```
/// use isolates::{IsolateBuilder, Mailbox};
/// let builder = IsolateBuilder::new().mailbox(Mailbox::Bounded(1024));
/// # let _ = builder;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mailbox {
    /// No limit (the default, as in Dart).
    #[default]
    Unbounded,
    /// At most this many queued messages: `cast` and `ask` wait for room,
    /// `try_cast` and `ask_pending` fail with `Full`. Zero is refused at
    /// spawn with [`SpawnError::ZeroCapacity`](crate::SpawnError::ZeroCapacity).
    Bounded(usize),
}

/// Configures and spawns isolates, in the style of rayon's
/// `ThreadPoolBuilder`. One builder can spawn many isolates.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::{Bincode, Context, Isolate, IsolateBuilder, Mailbox};
///
/// struct Echo;
/// impl Isolate for Echo {
///     type Args = ();
///     type Message = Vec<u8>;
///     type Reply = usize;
///     type Error = String;
///     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Echo) }
///     fn handle(&mut self, m: Vec<u8>, _: &mut Context<Self>) -> Result<usize, String> { Ok(m.len()) }
/// }
///
/// let echo = IsolateBuilder::new()
///     .name("echo")
///     .mailbox(Mailbox::Bounded(64))
///     .codec(Bincode::<{ 1 << 20 }>::limited())
///     .spawn::<Echo>(())
///     .unwrap();
/// assert_eq!(echo.name(), "echo");
/// assert_eq!(echo.ask_timeout(vec![1, 2, 3], Duration::from_secs(5)), Ok(3));
/// ```
#[derive(Debug, Clone)]
pub struct IsolateBuilder<C: Codec = Bincode> {
    name: Option<String>,
    mailbox: Mailbox,
    errors_are_fatal: bool,
    stack_size: Option<usize>,
    copy_messages: bool,
    process: Option<crate::backend::launch::ProcessOptions>,
    /// Set for an isolate from a closure: why it cannot run in a child
    /// process. Its start value then moves even when messages are copied.
    in_process_only: Option<&'static str>,
    codec: C,
}

impl IsolateBuilder<Bincode> {
    /// A builder with the defaults: unbounded mailbox, errors fatal, the
    /// default [`Bincode`] codec, the platform's thread stack size.
    ///
    /// # Examples
    ///
    /// See [`IsolateBuilder`].
    pub fn new() -> Self {
        IsolateBuilder {
            name: None,
            mailbox: Mailbox::Unbounded,
            errors_are_fatal: true,
            stack_size: None,
            copy_messages: false,
            process: None,
            in_process_only: None,
            codec: Bincode::new(),
        }
    }
}

impl Default for IsolateBuilder<Bincode> {
    fn default() -> Self {
        IsolateBuilder::new()
    }
}

impl<C: Codec> IsolateBuilder<C> {
    /// The debug name (also the thread's name). Default: `Type#id`.
    ///
    /// # Examples
    ///
    /// See [`IsolateBuilder`].
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The mailbox's bound.
    ///
    /// # Examples
    ///
    /// See [`IsolateBuilder`].
    pub fn mailbox(mut self, mailbox: Mailbox) -> Self {
        self.mailbox = mailbox;
        self
    }

    /// Whether a handler's `Err` ends the isolate (default `true`, as in
    /// Dart). Either way the asker gets the error.
    ///
    /// A panic ends the isolate whatever this says (unlike Dart, where
    /// `errorsAreFatal: false` goes on after any uncaught error): a panic
    /// means broken invariants, and the state it left half-changed is not
    /// used again. The isolate exits [`ExitReason::Panicked`](crate::ExitReason::Panicked);
    /// a supervisor restarts it from its arguments.
    ///
    /// # Examples
    ///
    /// See [`IsolateHandle::add_error_listener`].
    pub fn errors_are_fatal(mut self, fatal: bool) -> Self {
        self.errors_are_fatal = fatal;
        self
    }

    /// The isolate thread's stack size in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = isolates::IsolateBuilder::new().stack_size(256 << 10);
    /// # let _ = builder;
    /// ```
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Dart's copy semantics: every start argument, message, reply and error
    /// is encoded with the [codec](Self::codec) by its sender and decoded by
    /// its receiver, under the codec's limit. Default `false`: values move.
    ///
    /// Moving is what a program inside one process wants: a send is O(1)
    /// whatever the message's size and a UI thread never pays for a
    /// payload. Copy when the bytes matter: to enforce the codec's size
    /// limit on what a peer may send, or to prove in tests that the
    /// isolate's message types survive encoding before it is moved to a
    /// child process or another machine. Then the sender pays the encode
    /// (an `ask`'s caller also the reply's decode); a [`Transfer`](crate::Transfer)
    /// inside a message still moves without a copy.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use isolates::{AskError, Bincode, CodecError, Context, Isolate, IsolateBuilder};
    ///
    /// struct Len;
    /// impl Isolate for Len {
    ///     type Args = (); type Message = Vec<u8>; type Reply = usize; type Error = String;
    ///     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Len) }
    ///     fn handle(&mut self, m: Vec<u8>, _: &mut Context<Self>) -> Result<usize, String> { Ok(m.len()) }
    /// }
    ///
    /// let copied = IsolateBuilder::new()
    ///     .copy_messages(true)
    ///     .codec(Bincode::<1024>::limited())
    ///     .spawn::<Len>(())
    ///     .unwrap();
    /// let err = copied.ask_timeout(vec![0; 4096], Duration::from_secs(5)).unwrap_err();
    /// assert!(matches!(err, AskError::Encode(CodecError::TooLarge { .. })));
    ///
    /// // Moved, the same message is only a pointer changing hands.
    /// let moved = IsolateBuilder::new().spawn::<Len>(()).unwrap();
    /// assert_eq!(moved.ask_timeout(vec![0; 4096], Duration::from_secs(5)), Ok(4096));
    /// ```
    pub fn copy_messages(mut self, copy: bool) -> Self {
        self.copy_messages = copy;
        self
    }

    /// Runs the isolate in a child process: a private heap the OS enforces,
    /// a kill that kills, crashes and a memory limit contained by the OS.
    /// The handle and its calls stay the same; messages, replies and errors
    /// are encoded with the [codec](Self::codec) in both directions. The
    /// type must be registered with
    /// [`Registry::init`](crate::process::Registry::init) first thing in
    /// `main`; the [`process`](crate::process) module says how and what
    /// changes.
    ///
    /// [`spawn`](Self::spawn) does not wait for the child's `start`: it
    /// starts the child process on the calling thread (a fork and exec,
    /// about 0.2 ms, so that the child's `exec` overlaps the start of the
    /// isolate's thread), and messages wait in the mailbox meanwhile. A
    /// child that cannot be started is the isolate's exit reason
    /// ([`Crash::Spawn`](crate::Crash::Spawn)). With
    /// [`spawn_paused`](Self::spawn_paused) nothing starts until it is
    /// resumed.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use isolates::{Context, Isolate, IsolateBuilder};
    /// use isolates::process::{ProcessOptions, Registry};
    ///
    /// struct Pid;
    /// impl Isolate for Pid {
    ///     type Args = (); type Message = (); type Reply = u32; type Error = String;
    ///     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Pid) }
    ///     fn handle(&mut self, _: (), _: &mut Context<Self>) -> Result<u32, String> {
    ///         Ok(std::process::id())
    ///     }
    /// }
    ///
    /// fn main() {
    ///     Registry::new().isolate::<Pid>().init();
    ///     # #[cfg(target_os = "linux")] {
    ///     let child = IsolateBuilder::new()
    ///         .process(ProcessOptions::new())
    ///         .spawn::<Pid>(())
    ///         .unwrap();
    ///     let theirs = child.ask_timeout((), Duration::from_secs(30)).unwrap();
    ///     assert_ne!(theirs, std::process::id());
    ///     # }
    /// }
    /// ```
    pub fn process(mut self, options: crate::backend::launch::ProcessOptions) -> Self {
        self.process = Some(options);
        self
    }

    /// The codec used where the isolate's arguments, messages, replies and
    /// errors are encoded: with [`copy_messages`](Self::copy_messages), and
    /// wherever they cross a real boundary.
    ///
    /// # Examples
    ///
    /// See [`IsolateBuilder`].
    pub fn codec<C2: Codec>(self, codec: C2) -> IsolateBuilder<C2> {
        IsolateBuilder {
            name: self.name,
            mailbox: self.mailbox,
            errors_are_fatal: self.errors_are_fatal,
            stack_size: self.stack_size,
            copy_messages: self.copy_messages,
            process: self.process,
            in_process_only: self.in_process_only,
            codec,
        }
    }

    /// Spawns an isolate; returns at once, without waiting for `start`.
    /// Messages sent meanwhile wait in the mailbox.
    ///
    /// # Errors
    ///
    /// [`SpawnError::Args`] if `args` cannot be encoded (only with
    /// [`copy_messages`](Self::copy_messages)),
    /// [`SpawnError::Thread`] if no thread can be started.
    ///
    /// # Examples
    ///
    /// See [`IsolateBuilder`].
    pub fn spawn<I: Isolate>(&self, args: I::Args) -> Result<IsolateHandle<I>, SpawnError> {
        self.spawn_inner(args, false).map(|(handle, _)| handle)
    }

    /// Spawns an isolate paused before `start`: add listeners, then
    /// [`resume`](IsolateHandle::resume) with the returned token. Nothing,
    /// not even `start`, runs before then.
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn).
    ///
    /// # Examples
    ///
    /// See [`IsolateHandle::add_error_listener`].
    pub fn spawn_paused<I: Isolate>(
        &self,
        args: I::Args,
    ) -> Result<(IsolateHandle<I>, PauseToken), SpawnError> {
        self.spawn_inner(args, true)
            .map(|(handle, token)| (handle, PauseToken(token)))
    }

    fn spawn_inner<I: Isolate>(
        &self,
        args: I::Args,
        paused: bool,
    ) -> Result<(IsolateHandle<I>, u64), SpawnError> {
        let (shared, control_rx) = self.prepare::<I>()?;
        let args = match shared.codecs.args.pack(args, "start argument") {
            Ok(packed) => packed.envelope,
            Err((_, e)) => return Err(SpawnError::Args(e)),
        };
        let handle = IsolateHandle::new(Arc::clone(&shared));
        let token = Shared::<I>::new_token();
        let start = Start {
            control_rx,
            args,
            paused: paused.then_some(token),
            held: None,
        };
        spawn_thread(shared, start, self.stack_size)?;
        Ok((handle, token))
    }

    /// Marks the isolate as one that cannot leave this process (it is made
    /// of a closure), for `why`: [`process`](Self::process) then fails at
    /// spawn with [`SpawnError::InProcessOnly`], and its start value moves
    /// even when messages are copied.
    pub(super) fn in_process_only(mut self, why: &'static str) -> Self {
        self.in_process_only = Some(why);
        self
    }

    /// Builds an isolate's shared record and control channel, not started.
    pub(super) fn prepare<I: Isolate>(
        &self,
    ) -> Result<(Arc<Shared<I>>, cb::Receiver<Control>), SpawnError> {
        if self.mailbox == Mailbox::Bounded(0) {
            return Err(SpawnError::ZeroCapacity);
        }
        if let (Some(why), Some(_)) = (self.in_process_only, &self.process) {
            return Err(SpawnError::InProcessOnly(why));
        }
        let copy_args = self.copy_messages && self.in_process_only.is_none();
        let codecs = Codecs::<I> {
            args: dyn_codec(&self.codec, copy_args),
            message: dyn_codec(&self.codec, self.copy_messages),
            reply: dyn_codec(&self.codec, self.copy_messages),
            error: dyn_codec(&self.codec, self.copy_messages),
        };
        #[cfg(target_os = "linux")]
        let process = match &self.process {
            Some(options) => {
                let test_entry = crate::backend::registry::lookup::<I, C>()?;
                Some(super::body::ProcessSpec::<I> {
                    options: options.clone(),
                    wire: Arc::new(crate::backend::CodecWire(self.codec.clone())),
                    key: crate::backend::registry::key::<I, C>(),
                    test_entry,
                })
            }
            None => None,
        };
        #[cfg(not(target_os = "linux"))]
        if self.process.is_some() {
            crate::backend::registry::lookup::<I, C>()?;
        }
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = self.name.clone().unwrap_or_else(|| {
            let type_name = std::any::type_name::<I>();
            let short = type_name.split('<').next().unwrap_or(type_name);
            format!("{}#{id}", short.rsplit("::").next().unwrap_or(short))
        });
        let mailbox = match self.mailbox {
            Mailbox::Unbounded => cb::unbounded(),
            Mailbox::Bounded(capacity) => cb::bounded(capacity),
        };
        let (control_tx, control_rx) = cb::unbounded();
        let shared = Arc::new(Shared::new(
            id,
            name,
            codecs,
            mailbox,
            control_tx,
            self.errors_are_fatal,
            #[cfg(target_os = "linux")]
            process,
        ));
        Ok((shared, control_rx))
    }

    pub(super) fn thread_stack_size(&self) -> Option<usize> {
        self.stack_size
    }
}

/// What an incarnation starts from.
pub(super) struct Start<I: Isolate> {
    pub(super) control_rx: cb::Receiver<Control>,
    pub(super) args: Envelope<I::Args>,
    pub(super) paused: Option<u64>,
    pub(super) held: Option<Mail<I>>,
}

/// Starts an incarnation of the isolate on a new thread.
pub(super) fn spawn_thread<I: Isolate>(
    shared: Arc<Shared<I>>,
    start: Start<I>,
    stack_size: Option<usize>,
) -> Result<(), SpawnError> {
    let mut thread = std::thread::Builder::new().name(shared.name.clone());
    if let Some(bytes) = stack_size {
        thread = thread.stack_size(bytes);
    }
    // Begun here, not on the thread: a monitor or link set up as soon as
    // `spawn` returns is about this incarnation.
    let incarnation = shared.watch.begin();
    // A process isolate's child is started here, unless the isolate is
    // paused (nothing runs before it is resumed): dropped with the closure
    // if the thread does not start, it exits and is reaped.
    let launched = if start.paused.is_none() {
        runloop::prelaunch(&shared)
    } else {
        Default::default()
    };
    let on_thread = Arc::clone(&shared);
    let job = move || {
        let Start {
            control_rx,
            args,
            paused,
            held,
        } = start;
        runloop::run(
            on_thread,
            control_rx,
            args,
            paused,
            held,
            incarnation,
            launched,
        );
    };
    // A process isolate's thread runs only this crate's loop: one kept
    // from an earlier incarnation serves (see `threads`).
    #[cfg(target_os = "linux")]
    let spawned = if shared.process.is_some() && stack_size.is_none() {
        let name = shared.name.clone();
        super::threads::run(
            &shared.name,
            Box::new(move || {
                super::threads::set_os_name(&name);
                job();
            }),
        )
    } else {
        thread.spawn(job).map(drop)
    };
    #[cfg(not(target_os = "linux"))]
    let spawned = thread.spawn(job).map(drop);
    spawned.map_err(|e| {
        let e = e.to_string();
        runloop::abandon(
            &shared,
            &crate::ExitReason::Failed(format!("the isolate's thread could not start: {e}")),
        );
        SpawnError::Thread(e)
    })
}
