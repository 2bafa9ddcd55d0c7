//! Process isolates: an isolate in a child process, with a heap the OS
//! keeps private, a kill that kills, crashes that stay in the child, and a
//! memory limit.
//!
//! One builder switch, [`IsolateBuilder::process`](crate::IsolateBuilder::process),
//! puts an isolate in a child process. The handle is the same
//! [`IsolateHandle`](crate::IsolateHandle) with the same calls; what
//! changes:
//! - **Messages are encoded** (the builder's codec, bincode by default) in
//!   both directions, and every frame is read under the codec's size limit:
//!   a child that sends garbage, an oversized frame, or closes its channel is
//!   killed and its isolate exits [`Crash::Protocol`](crate::Crash::Protocol),
//!   never a panic or a hang of the parent. A [`Transfer`](crate::Transfer)
//!   is copied (there is no shared memory); a port cannot cross and makes the
//!   message a [`BadMessage`](crate::AskError::BadMessage).
//! - **[`kill`](crate::IsolateHandle::kill)`(Priority::Immediate)` kills**:
//!   the child gets SIGKILL (after SIGTERM and
//!   [`kill_grace`](ProcessOptions::kill_grace), if one is set), even in the
//!   middle of a handler that never returns; the call in flight resolves
//!   [`AskError::Dead`](crate::AskError::Dead)`(ExitReason::Killed)`.
//! - **A crash is an exit reason**: an abort, a segfault, a stack overflow,
//!   an allocation over [`max_memory`](ProcessOptions::max_memory), a kill
//!   from outside or an exit of its own ends the isolate with
//!   [`ExitReason::Crashed`](crate::ExitReason::Crashed) saying which; the
//!   call in flight resolves `Dead` with that reason; supervisors restart it
//!   (a new child) per their policy; the parent goes on.
//! - **Globals are private**: a `static` set in the child is not the
//!   parent's.
//! - **No orphans, no zombies**: a child dies with the thread that started
//!   it (`PR_SET_PDEATHSIG`) and exits when its channel closes; every child
//!   is reaped.
//!
//! The work manager's handlers can run in child processes too
//! (`WorkManagerBuilder::processes` and `Registry::work_handler`, with the
//! `schedule` feature): a crash there fails one run, and a time limit kills
//! the child.
//!
//! # The one call at the top of `main`
//!
//! The child is this same executable, started again with a marker as its
//! `argv[0]` (`isolates-child-of-` and the parent's pid, as `ps` shows
//! it). Its `main` must become the child before doing anything
//! else, so the first line of `main` registers the isolate types that run in
//! child processes and calls [`Registry::init`]: in a child it runs the
//! child and never returns; in the parent it records the registry and
//! returns at once.
//!
//! ```
//! use std::time::Duration;
//! use isolates::{Context, Isolate, IsolateBuilder};
//! use isolates::process::{ProcessOptions, Registry};
//!
//! /// Parses untrusted input in a child process: a crash there is the
//! /// child's.
//! struct Parser;
//!
//! impl Isolate for Parser {
//!     type Args = ();
//!     type Message = Vec<u8>;
//!     type Reply = usize;
//!     type Error = String;
//!     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Parser) }
//!     fn handle(&mut self, input: Vec<u8>, _: &mut Context<Self>) -> Result<usize, String> {
//!         Ok(input.iter().filter(|&&b| b == b'\n').count())
//!     }
//! }
//!
//! fn main() {
//!     Registry::new().isolate::<Parser>().init();
//!
//!     # #[cfg(target_os = "linux")] {
//!     let parser = IsolateBuilder::new()
//!         .process(ProcessOptions::new().max_memory(512 << 20))
//!         .spawn::<Parser>(())
//!         .unwrap();
//!     assert_eq!(parser.ask_timeout(b"a\nb\n".to_vec(), Duration::from_secs(30)), Ok(2));
//!     # }
//! }
//! ```
//!
//! In a test binary (`cargo test`) the test harness owns `main`: name a test
//! that calls `init` with [`Registry::test_entry`], and call the same
//! registration at the start of each test that spawns process isolates (in
//! the parent it only records the registry):
//!
//! ```no_run
//! # use isolates::process::Registry;
//! # struct Parser;
//! fn children() {
//!     Registry::new()/* .isolate::<Parser>() */.test_entry("child_entry").init();
//! }
//!
//! #[test]
//! fn child_entry() {
//!     children(); // a child process runs this test alone, and becomes the child
//! }
//! ```
//!
//! Examples have a `main` of their own: the first form. A criterion bench
//! (`harness = false`) writes its `main` out instead of `criterion_main!`,
//! with the registration first:
//!
//! ```text
//! fn main() {
//!     Registry::new().isolate::<Parser>().init();
//!     benches();
//!     criterion::Criterion::default().configure_from_args().final_summary();
//! }
//! ```
//!
//! # Platforms
//!
//! Linux is the target: everything above holds there. On other platforms
//! the switch is a clear error at spawn,
//! [`SpawnError::Unsupported`](crate::SpawnError); the crate
//! still builds. (Other Unix systems lack `PR_SET_PDEATHSIG` and enforce
//! `RLIMIT_AS` unevenly; they get the error too rather than weaker
//! promises.)

use std::collections::HashMap;

pub use crate::backend::launch::ProcessOptions;
use crate::backend::registry::{Registered, fn_key, install, key, lookup_key, worker_key};
use crate::codec::{Bincode, Codec};
use crate::isolate::Isolate;

/// The isolate types this executable can run in a child process; see the
/// [module docs](self).
///
/// # Examples
///
/// ```
/// use isolates::process::Registry;
/// # use isolates::{Context, Isolate};
/// # struct Echo;
/// # impl Isolate for Echo {
/// #     type Args = (); type Message = u8; type Reply = u8; type Error = String;
/// #     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Echo) }
/// #     fn handle(&mut self, m: u8, _: &mut Context<Self>) -> Result<u8, String> { Ok(m) }
/// # }
///
/// // First thing in main: a child never returns from this.
/// Registry::new().isolate::<Echo>().init();
/// ```
#[derive(Default)]
pub struct Registry {
    entries: HashMap<u64, Registered>,
    test_entry: Option<String>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self.entries.values().map(|e| e.type_name).collect();
        names.sort_unstable();
        f.debug_struct("Registry")
            .field("isolates", &names)
            .field("test_entry", &self.test_entry)
            .finish()
    }
}

/// Runs `f(arg)` in a fresh child process, as [`run`](crate::run()) does on
/// a thread: Dart's `Isolate.run` with a heap and globals of its own. The
/// function must be registered with [`Registry::function`]. The caller
/// never blocks: the child is started, and the argument encoded, on a
/// thread of the `run` pool.
///
/// A crash of the function (an abort, a segfault, a stack overflow, its
/// memory limit) is [`RunError::Crashed`](crate::RunError::Crashed); the
/// caller goes on. Each call starts a child (about a millisecond or two):
/// for many small calls, a [process pool](crate::pool::PoolBuilder::process)
/// keeps its children.
///
/// # Examples
///
/// ```
/// use isolates::process::{ProcessOptions, Registry};
///
/// fn parse(text: String) -> usize {
///     text.split_whitespace().count()
/// }
///
/// fn main() {
///     Registry::new().function(parse).init();
///     # #[cfg(target_os = "linux")] {
///     let words = isolates::process::run(parse, "three small words".to_string());
///     assert_eq!(words.wait(), Ok(3));
///     # }
/// }
/// ```
pub fn run<A, R>(f: fn(A) -> R, arg: A) -> crate::Pending<R, crate::RunError>
where
    A: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
    R: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    run_with(ProcessOptions::new(), f, arg)
}

/// Like [`run`], with `options` for the child (its memory limit, start
/// timeout).
///
/// # Examples
///
/// ```
/// use isolates::process::{ProcessOptions, Registry};
/// use isolates::{Crash, RunError};
///
/// fn hog(bytes: usize) -> usize {
///     let v = vec![1u8; bytes];
///     v.iter().map(|&b| b as usize).sum()
/// }
///
/// fn main() {
///     Registry::new().function(hog).init();
///     # #[cfg(target_os = "linux")] {
///     let limit = 256 << 20;
///     let options = ProcessOptions::new().max_memory(limit);
///     let pending = isolates::process::run_with(options, hog, 1 << 31);
///     assert_eq!(pending.wait(), Err(RunError::Crashed(Crash::OutOfMemory { limit })));
///     # }
/// }
/// ```
pub fn run_with<A, R>(
    options: ProcessOptions,
    f: fn(A) -> R,
    arg: A,
) -> crate::Pending<R, crate::RunError>
where
    A: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
    R: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    let key = fn_key(f);
    let test_entry = match lookup_key::<fn(A) -> R, Bincode>(key, "function") {
        Ok(test_entry) => test_entry,
        Err(e) => {
            return crate::Pending::ready(Err(crate::RunError::NotRegistered(e.to_string())));
        }
    };
    #[cfg(target_os = "linux")]
    {
        run_in_child(options, test_entry, key, arg)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (options, test_entry, arg);
        crate::Pending::ready(Err(crate::RunError::NotRegistered(
            "process isolates need Linux".into(),
        )))
    }
}

impl Registry {
    /// An empty registry.
    ///
    /// # Examples
    ///
    /// See [`Registry`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers isolate `I`, with the default codec ([`Bincode`]).
    ///
    /// # Examples
    ///
    /// See [`Registry`].
    pub fn isolate<I: Isolate>(self) -> Self {
        self.isolate_with::<I, Bincode>(Bincode::new())
    }

    /// Registers isolate `I` with `codec`, for isolates built with
    /// [`IsolateBuilder::codec`](crate::IsolateBuilder::codec)`(codec)`:
    /// the child decodes with it.
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::Bincode;
    /// use isolates::process::Registry;
    /// # use isolates::{Context, Isolate};
    /// # struct Echo;
    /// # impl Isolate for Echo {
    /// #     type Args = (); type Message = u8; type Reply = u8; type Error = String;
    /// #     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Echo) }
    /// #     fn handle(&mut self, m: u8, _: &mut Context<Self>) -> Result<u8, String> { Ok(m) }
    /// # }
    /// Registry::new().isolate_with::<Echo, _>(Bincode::<{ 1 << 20 }>::limited()).init();
    /// ```
    pub fn isolate_with<I: Isolate, C: Codec>(mut self, codec: C) -> Self {
        let _ = &codec;
        let registered = Registered {
            type_name: std::any::type_name::<I>(),
            #[cfg(target_os = "linux")]
            entry: crate::backend::process::Entry {
                limit: codec.limit(),
                run: std::sync::Arc::new(move |channel, start| {
                    crate::isolate::serve_child::<I, C>(&codec, channel, start)
                }),
            },
            #[cfg(target_os = "linux")]
            args: None,
        };
        self.entries.insert(key::<I, C>(), registered);
        self
    }

    /// Registers pool worker `W`, with the default codec ([`Bincode`]),
    /// for pools built with
    /// [`PoolBuilder::process`](crate::pool::PoolBuilder::process).
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::process::Registry;
    /// # use isolates::pool::{TaskContext, Worker};
    /// # struct Hash;
    /// # impl Worker for Hash {
    /// #     type Args = (); type Input = Vec<u8>; type Output = u64; type Progress = (); type Error = String;
    /// #     fn start(_: ()) -> Result<Self, String> { Ok(Hash) }
    /// #     fn run(&mut self, v: Vec<u8>, _: &TaskContext<'_, Self>) -> Result<u64, String> { Ok(v.len() as u64) }
    /// # }
    /// Registry::new().worker::<Hash>().init();
    /// ```
    pub fn worker<W: crate::pool::Worker>(self) -> Self
    where
        W::Args: serde::Serialize + serde::de::DeserializeOwned,
    {
        self.worker_with::<W, Bincode>(Bincode::new())
    }

    /// Registers pool worker `W` with `codec`, for pools built with
    /// [`PoolBuilder::codec`](crate::pool::PoolBuilder::codec)`(codec)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::Bincode;
    /// use isolates::process::Registry;
    /// # use isolates::pool::{TaskContext, Worker};
    /// # struct Hash;
    /// # impl Worker for Hash {
    /// #     type Args = (); type Input = Vec<u8>; type Output = u64; type Progress = (); type Error = String;
    /// #     fn start(_: ()) -> Result<Self, String> { Ok(Hash) }
    /// #     fn run(&mut self, v: Vec<u8>, _: &TaskContext<'_, Self>) -> Result<u64, String> { Ok(v.len() as u64) }
    /// # }
    /// Registry::new().worker_with::<Hash, _>(Bincode::<{ 1 << 20 }>::limited()).init();
    /// ```
    pub fn worker_with<W: crate::pool::Worker, C: Codec>(mut self, codec: C) -> Self
    where
        W::Args: serde::Serialize + serde::de::DeserializeOwned,
    {
        let _ = &codec;
        let registered = Registered {
            type_name: std::any::type_name::<W>(),
            #[cfg(target_os = "linux")]
            args: Some(std::sync::Arc::new(crate::pool::args_encoder::<W, C>(
                codec.clone(),
            ))),
            #[cfg(target_os = "linux")]
            entry: crate::backend::process::Entry {
                limit: codec.limit(),
                run: std::sync::Arc::new(move |channel, start| {
                    crate::pool::serve_worker::<W, C>(&codec, channel, start)
                }),
            },
        };
        self.entries.insert(worker_key::<W, C>(), registered);
        self
    }

    /// Registers function `f` for [`run`]. Register and run the same
    /// function item (a plain `fn`, not a closure); a generic function may
    /// have several copies in an executable and is best wrapped in a plain
    /// one.
    ///
    /// # Examples
    ///
    /// See [`run`].
    pub fn function<A, R>(mut self, f: fn(A) -> R) -> Self
    where
        A: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
        R: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
    {
        let registered = Registered {
            type_name: std::any::type_name::<fn(A) -> R>(),
            #[cfg(target_os = "linux")]
            entry: crate::backend::process::Entry {
                limit: crate::Bincode::DEFAULT_LIMIT,
                run: std::sync::Arc::new(move |channel, start| {
                    crate::backend::process::serve_fn(f, channel, start)
                }),
            },
            #[cfg(target_os = "linux")]
            args: None,
        };
        self.entries.insert(fn_key(f), registered);
        self
    }

    /// In a test binary, the name of the `#[test]` function that calls
    /// [`init`](Self::init) (its full path within the test crate, e.g.
    /// `child_entry` or `process::child_entry`): the child is the test
    /// binary running that test alone.
    ///
    /// # Examples
    ///
    /// See the [module docs](self).
    pub fn test_entry(mut self, name: impl Into<String>) -> Self {
        self.test_entry = Some(name.into());
        self
    }

    /// In a child process: runs the child and exits, never returning. In
    /// the parent: records what can run in a child and returns at once.
    /// Calling it again adds to what was recorded.
    ///
    /// # Examples
    ///
    /// See [`Registry`].
    pub fn init(self) {
        let Registry {
            entries,
            test_entry,
        } = self;
        install(entries, test_entry);
        #[cfg(target_os = "linux")]
        {
            let (start_limit, entries) = crate::backend::registry::child_entries();
            crate::backend::process::child::enter_if_child(start_limit, |key| {
                entries.get(&key).cloned()
            });
        }
    }
}

/// The parent's side of [`process::run`](crate::process::run): on a `run`
/// thread, start a child for the function, send the argument, wait for the
/// result.
#[cfg(target_os = "linux")]
fn run_in_child<A, R>(
    options: ProcessOptions,
    test_entry: Option<String>,
    key: u64,
    arg: A,
) -> crate::Pending<R, crate::RunError>
where
    A: serde::Serialize + Send + 'static,
    R: serde::de::DeserializeOwned + Send + 'static,
{
    use crate::RunError;
    use crate::backend::process::{decode, decode_reason, encode, encode_reason, frame, parent};
    use crate::codec::envelope::Envelope;
    use crate::error::ExitReason;
    use crate::pending::{Pending, Reply};
    use parking_lot::Mutex;
    use std::sync::Arc;
    let (tx, rx) = crate::oneshot::oneshot();
    // A `Pending` dropped before its result came kills the child: nobody
    // waits for its work any more.
    let child_kill: Arc<Mutex<RunKill>> = Arc::default();
    let abandon = Arc::clone(&child_kill);
    let job = Box::new(move || {
        let codec = Bincode::new();
        let reply = (|| {
            let arg = encode(&codec, &arg, "argument")
                .map_err(|e| Reply::BadMessage(crate::CodecError::Encode(e)))?;
            let mut child = parent::ChildProcess::spawn(
                &options.launch(),
                test_entry.as_deref(),
                codec.limit(),
                Box::new(|_| {}),
            )
            .map_err(|crash| Reply::Dead(ExitReason::Crashed(crash)))?;
            {
                let mut kill = child_kill.lock();
                if kill.abandoned {
                    child.kill_switch().kill();
                }
                kill.switch = Some(child.kill_switch());
            }
            // The child says it has started once it has the argument: the
            // start timeout holds until then (the start frame's write
            // included), as for isolates.
            let deadline = std::time::Instant::now() + options.start_timeout;
            child.write_timeout(Some(options.start_timeout));
            child.send(
                frame::Kind::Start,
                &[&key.to_le_bytes(), &0u32.to_le_bytes(), &arg],
            );
            child.write_timeout(None);
            let answer = match child.read(Some(deadline)) {
                Ok((frame::Kind::Started, _)) => child.read(None),
                Err(parent::Broken::Timeout) => {
                    Err(parent::Broken::Gone(crate::Crash::Protocol(format!(
                        "the child did not start the run within {:?} (is \
                         isolates::process::Registry::init the first call in main?)",
                        options.start_timeout
                    ))))
                }
                other => other,
            };
            child_kill.lock().answered = true;
            let reply = match answer {
                Ok((frame::Kind::Value, body)) => match decode::<R, _>(&codec, &body, "result") {
                    Ok(value) => Reply::Value(Envelope::Moved(value).erase()),
                    Err(e) => Reply::Unencodable(crate::CodecError::Malformed(e)),
                },
                Ok((frame::Kind::Panicked, body)) => {
                    Reply::Panicked(String::from_utf8_lossy(&body).into_owned())
                }
                Ok((frame::Kind::BadMessage, body)) => Reply::BadMessage(
                    crate::CodecError::Malformed(String::from_utf8_lossy(&body).into_owned()),
                ),
                Ok((frame::Kind::Unencodable, body)) => Reply::Unencodable(
                    crate::CodecError::Encode(String::from_utf8_lossy(&body).into_owned()),
                ),
                Ok((frame::Kind::Exited, body)) => Reply::Dead(decode_reason(&body).unwrap_or(
                    ExitReason::Failed("the child could not run the function".into()),
                )),
                Ok((kind, _)) => Reply::Dead(ExitReason::Crashed(crate::Crash::Protocol(format!(
                    "a {kind:?} frame in answer to a run"
                )))),
                Err(parent::Broken::Gone(crash)) => Reply::Dead(ExitReason::Crashed(crash)),
                Err(parent::Broken::Timeout) => Reply::Dead(ExitReason::Crashed(
                    crate::Crash::Protocol("no answer from the child".into()),
                )),
            };
            // The child exits after answering: reaped here.
            child.stop(&encode_reason(&ExitReason::Normal), options.stop_timeout);
            Ok(reply)
        })()
        .unwrap_or_else(|reply| reply);
        tx.send(reply);
    });
    if let Err(e) = crate::run::submit(job) {
        return Pending::ready(Err(RunError::Spawn(e)));
    }
    let pending = Pending::waiting(rx, move |reply| match reply {
        Some(Reply::Value(envelope)) => match envelope.typed::<R>("result") {
            Ok(Envelope::Moved(value)) => Ok(value),
            Ok(Envelope::Encoded(_)) => Err(RunError::Codec(crate::CodecError::Malformed(
                "an encoded result where a value was expected".into(),
            ))),
            Err(e) => Err(RunError::Codec(e)),
        },
        Some(Reply::Panicked(message)) => Err(RunError::Panicked(message)),
        Some(Reply::BadMessage(e) | Reply::Unencodable(e)) => Err(RunError::Codec(e)),
        Some(Reply::Dead(ExitReason::Crashed(crash))) => Err(RunError::Crashed(crash)),
        Some(Reply::Dead(reason)) => Err(RunError::NotRegistered(reason.to_string())),
        Some(Reply::Failed(_)) | None => Err(RunError::Panicked(
            "the run thread ended without a result".into(),
        )),
    });
    pending.on_drop(move || {
        let mut kill = abandon.lock();
        kill.abandoned = true;
        if !kill.answered
            && let Some(switch) = &kill.switch
        {
            switch.kill();
        }
    })
}

/// A `process::run`'s child, for a `Pending` dropped before the answer.
#[cfg(target_os = "linux")]
#[derive(Default)]
struct RunKill {
    /// Its kill switch, once it was started.
    switch: Option<std::sync::Arc<crate::backend::process::parent::KillSwitch>>,
    /// The answer was read: nothing to kill.
    answered: bool,
    /// The `Pending` was dropped.
    abandoned: bool,
}
