//! Every public error of the crate.
//!
//! Errors follow crossbeam's habits: one type per operation, hand-written,
//! and an error that fails to deliver a value hands that value back. `Debug`
//! of an error never prints a payload; `Display` is lowercase without a final
//! period and says what to do where there is something to do.

use std::fmt;

use serde::{Deserialize, Serialize};

mod exit;

pub use exit::{Crash, ExitReason};

/// Why bytes could not be encoded or decoded.
///
/// # Examples
///
/// ```
/// use isolates::{Bincode, Codec, CodecError};
///
/// let codec = Bincode::new();
/// // A `String` whose length prefix promises far more bytes than are present.
/// let err = codec.decode::<String>(&[0xfb, 0xff, 0xff]).unwrap_err();
/// assert!(matches!(err, CodecError::Malformed(_)), "{err}");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CodecError {
    /// The encoded message, or what decoding it would allocate, is larger than
    /// the codec's limit.
    TooLarge {
        /// How many bytes the message has or claims.
        size: usize,
        /// The codec's limit in bytes.
        limit: usize,
    },
    /// Decoding the message would claim more than the limit allows: a
    /// length claims too much, or the values take far more room in memory
    /// than on the wire, over twice the limit (corrupt or hostile bytes;
    /// see [`Bincode`](crate::Bincode)). The decode stopped there; nothing
    /// that large was allocated.
    ClaimOverLimit {
        /// The codec's limit in bytes.
        limit: usize,
    },
    /// The message nests values (options, sequences, enums...) deeper than
    /// the decoder goes, which bounds its stack: flatten the type, or the
    /// bytes are hostile.
    TooDeep {
        /// The deepest nesting decoded.
        limit: usize,
    },
    /// The bytes are not a valid encoding of the expected type: truncated,
    /// corrupted, or a different type.
    Malformed(String),
    /// Decoding succeeded but left bytes unread: the message is of another
    /// type, or was framed wrongly.
    TrailingBytes {
        /// How many bytes were left unread.
        unread: usize,
    },
    /// The value could not be encoded (a `Serialize` implementation failed).
    Encode(String),
    /// A [`Transfer`](crate::Transfer) or [`SendPort`](crate::SendPort) in the
    /// message could not be attached or taken back: a port outside an
    /// envelope, a missing or already taken attachment, or a port of another
    /// message type.
    Attachment(String),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { size, limit } => write!(
                f,
                "message of {size} bytes (encoded, or claimed when decoded) exceeds the codec \
                 limit of {limit} bytes; \
                 raise the limit or move large buffers with `Transfer`"
            ),
            Self::ClaimOverLimit { limit } => write!(
                f,
                "decoding the message would claim more than the codec limit of {limit} bytes \
                 allows (in its lengths and values, or in memory: at most twice the limit); \
                 the bytes are corrupt or the limit too small"
            ),
            Self::TooDeep { limit } => write!(
                f,
                "the message nests values deeper than {limit} levels; flatten the type, or the \
                 bytes are corrupt"
            ),
            Self::Malformed(why) => write!(f, "malformed message bytes: {why}"),
            Self::TrailingBytes { unread } => write!(
                f,
                "{unread} bytes left after decoding; sender and receiver disagree on the message type"
            ),
            Self::Encode(why) => write!(f, "message could not be encoded: {why}"),
            Self::Attachment(why) => write!(f, "message attachment error: {why}"),
        }
    }
}

impl std::error::Error for CodecError {}

/// Writes the variants shared by the send error types, without the payload.
macro_rules! payload_debug {
    ($ty:ident { $($variant:ident),* } $(, $codec:ident)?) => {
        impl<T> fmt::Debug for $ty<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $(Self::$variant(..) => f.write_str(concat!(stringify!($ty), "::", stringify!($variant), "(..)")),)*
                    $(Self::$codec(_, e) => f.debug_tuple(concat!(stringify!($ty), "::", stringify!($codec))).field(&"..").field(e).finish(),)?
                }
            }
        }
    };
}

/// A blocking send failed; the message comes back.
///
/// # Examples
///
/// ```
/// use isolates::{port, SendError};
///
/// let (tx, rx) = port::unbounded::<u32>();
/// drop(rx);
/// assert!(matches!(tx.send(7), Err(SendError::Disconnected(7))));
/// ```
pub enum SendError<T> {
    /// Every receiver is gone (for an isolate: it has exited).
    Disconnected(T),
    /// The message could not be encoded.
    Encode(T, CodecError),
}

/// A non-blocking send failed; the message comes back.
///
/// # Examples
///
/// ```
/// use isolates::{port, TrySendError};
///
/// let (tx, _rx) = port::bounded::<u32>(1);
/// tx.try_send(1).unwrap();
/// assert!(matches!(tx.try_send(2), Err(TrySendError::Full(2))));
/// ```
pub enum TrySendError<T> {
    /// The mailbox is bounded and full.
    Full(T),
    /// Every receiver is gone (for an isolate: it has exited).
    Disconnected(T),
    /// The message could not be encoded.
    Encode(T, CodecError),
}

/// A send with a timeout or deadline failed; the message comes back.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::{port, SendTimeoutError};
///
/// let (tx, _rx) = port::bounded::<u32>(1);
/// tx.send(1).unwrap();
/// let err = tx.send_timeout(2, Duration::from_millis(1)).unwrap_err();
/// assert!(matches!(err, SendTimeoutError::Timeout(2)));
/// ```
pub enum SendTimeoutError<T> {
    /// The mailbox stayed full until the timeout.
    Timeout(T),
    /// Every receiver is gone (for an isolate: it has exited).
    Disconnected(T),
    /// The message could not be encoded.
    Encode(T, CodecError),
}

payload_debug!(SendError { Disconnected }, Encode);
payload_debug!(TrySendError { Full, Disconnected }, Encode);
payload_debug!(
    SendTimeoutError {
        Timeout,
        Disconnected
    },
    Encode
);

macro_rules! send_error_common {
    ($ty:ident { $($variant:ident => $text:literal),* }) => {
        impl<T> $ty<T> {
            /// Gives back the message that was not delivered.
            pub fn into_inner(self) -> T {
                match self {
                    $(Self::$variant(v))|* | Self::Encode(v, _) => v,
                }
            }
        }

        impl<T> fmt::Display for $ty<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $(Self::$variant(_) => f.write_str($text),)*
                    Self::Encode(_, e) => write!(f, "sending failed: {e}"),
                }
            }
        }

        impl<T> std::error::Error for $ty<T> {}
    };
}

send_error_common!(SendError {
    Disconnected => "sending on a disconnected port: the receiver is gone"
});
send_error_common!(TrySendError {
    Full => "sending on a full port: retry later or use a blocking send",
    Disconnected => "sending on a disconnected port: the receiver is gone"
});
send_error_common!(SendTimeoutError {
    Timeout => "timed out sending on a full port",
    Disconnected => "sending on a disconnected port: the receiver is gone"
});

impl<T> TrySendError<T> {
    /// Returns `true` if the send failed because the mailbox was full.
    pub fn is_full(&self) -> bool {
        matches!(self, Self::Full(_))
    }
}

/// A blocking receive failed.
///
/// # Examples
///
/// ```
/// use isolates::{port, RecvError};
///
/// let (tx, rx) = port::unbounded::<u32>();
/// drop(tx);
/// assert_eq!(rx.recv(), Err(RecvError::Disconnected));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecvError {
    /// Every sender is gone and the port is empty.
    Disconnected,
    /// A message arrived but could not be decoded; it is consumed.
    Decode(CodecError),
}

/// A non-blocking receive failed.
///
/// # Examples
///
/// ```
/// use isolates::{port, TryRecvError};
///
/// let (_tx, rx) = port::unbounded::<u32>();
/// assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TryRecvError {
    /// No message is waiting.
    Empty,
    /// Every sender is gone and the port is empty.
    Disconnected,
    /// A message arrived but could not be decoded; it is consumed.
    Decode(CodecError),
}

/// A receive with a timeout or deadline failed.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::{port, RecvTimeoutError};
///
/// let (_tx, rx) = port::unbounded::<u32>();
/// let err = rx.recv_timeout(Duration::from_millis(1)).unwrap_err();
/// assert_eq!(err, RecvTimeoutError::Timeout);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecvTimeoutError {
    /// No message arrived in time.
    Timeout,
    /// Every sender is gone and the port is empty.
    Disconnected,
    /// A message arrived but could not be decoded; it is consumed.
    Decode(CodecError),
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Disconnected => f.write_str("receiving on an empty, disconnected port"),
            Self::Decode(e) => write!(f, "received a message that failed to decode: {e}"),
        }
    }
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("receiving on an empty port"),
            Self::Disconnected => f.write_str("receiving on an empty, disconnected port"),
            Self::Decode(e) => write!(f, "received a message that failed to decode: {e}"),
        }
    }
}

impl fmt::Display for RecvTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("timed out waiting on a port"),
            Self::Disconnected => f.write_str("receiving on an empty, disconnected port"),
            Self::Decode(e) => write!(f, "received a message that failed to decode: {e}"),
        }
    }
}

impl std::error::Error for RecvError {}
impl std::error::Error for TryRecvError {}
impl std::error::Error for RecvTimeoutError {}

/// An [`ask`](crate::IsolateHandle::ask) got no reply value.
///
/// `E` is the isolate's own error type, returned by its handler and carried
/// across the boundary as a typed value.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::{AskError, Context, ExitReason, Isolate, Priority};
///
/// struct Echo;
/// impl Isolate for Echo {
///     type Args = ();
///     type Message = u32;
///     type Reply = u32;
///     type Error = String;
///     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Echo) }
///     fn handle(&mut self, m: u32, _: &mut Context<Self>) -> Result<u32, String> { Ok(m) }
/// }
///
/// let echo = Echo::spawn(()).unwrap();
/// echo.kill(Priority::Immediate);
/// echo.join(Duration::from_secs(5)).unwrap();
/// let err = echo.ask_timeout(1, Duration::from_secs(5)).unwrap_err();
/// assert_eq!(err, AskError::Dead(ExitReason::Killed));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AskError<E> {
    /// No reply came before the timeout. The message may still be handled
    /// later; its reply is then dropped.
    Timeout,
    /// The isolate's mailbox is bounded and was full (non-blocking asks only).
    Full,
    /// The isolate exited before replying, with this reason. Asks queued when
    /// an isolate exits all resolve this way.
    Dead(ExitReason),
    /// The handler panicked on this message; the text is the panic message.
    Panicked(String),
    /// The handler returned this error.
    Failed(E),
    /// The message could not be encoded on the caller's side.
    Encode(CodecError),
    /// The isolate could not decode the message: the sender's bytes were bad.
    BadMessage(CodecError),
    /// The reply could not be encoded by the isolate or decoded by the caller.
    BadReply(CodecError),
    /// The result was already taken from this [`Pending`](crate::Pending)
    /// with `try_take`; waiting on it again is a misuse.
    AlreadyTaken,
    /// A typed [`request`](crate::IsolateHandle::request) got a reply of
    /// another kind than its [`Request`](crate::Request) impl takes: the
    /// isolate's handler and that impl disagree. `request` names the
    /// request's type.
    WrongReply {
        /// The request's type, as [`std::any::type_name`] writes it.
        request: &'static str,
    },
}

impl<E: fmt::Display> fmt::Display for AskError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("no reply before the timeout"),
            Self::Full => f.write_str("the isolate's mailbox is full; retry later"),
            Self::Dead(reason) => write!(f, "the isolate exited before replying ({reason})"),
            Self::Panicked(msg) => write!(f, "the handler panicked: {msg}"),
            Self::Failed(e) => write!(f, "the handler failed: {e}"),
            Self::Encode(e) => write!(f, "the message could not be encoded: {e}"),
            Self::BadMessage(e) => write!(f, "the isolate could not decode the message: {e}"),
            Self::BadReply(e) => write!(f, "the reply could not be carried back: {e}"),
            Self::AlreadyTaken => {
                f.write_str("the reply was already taken from this pending handle")
            }
            Self::WrongReply { request } => write!(
                f,
                "the isolate answered a {request} with a reply of another kind: make its \
                 handler's answer and `Request::from_reply` agree"
            ),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for AskError<E> {}

/// A one-shot [`run`](crate::run()) produced no value.
///
/// # Examples
///
/// ```
/// use isolates::{run, RunError};
///
/// fn boom(_: u8) -> u8 { panic!("boom") }
/// let err = run(boom, 1).wait().unwrap_err();
/// assert_eq!(err, RunError::Panicked("boom".into()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunError {
    /// The function panicked; the text is the panic message.
    Panicked(String),
    /// The argument could not be encoded, or the result could not be carried
    /// back.
    Codec(CodecError),
    /// No thread could be started for the function.
    Spawn(String),
    /// The function ran in a child process ([`process::run`](crate::process::run)),
    /// which died: a signal, a stack overflow, its memory limit, or a
    /// broken channel.
    Crashed(crate::Crash),
    /// The function cannot run in a child process: it is not registered,
    /// or the platform has no process isolates. The text says what to do.
    NotRegistered(String),
    /// The result was already taken from this [`Pending`](crate::Pending)
    /// with `try_take`; waiting on it again is a misuse.
    AlreadyTaken,
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Panicked(msg) => write!(f, "the function panicked: {msg}"),
            Self::Codec(e) => write!(f, "the argument or result could not be carried: {e}"),
            Self::Spawn(why) => write!(f, "no thread could be started: {why}"),
            Self::Crashed(crash) => write!(f, "the function's child process died: {crash}"),
            Self::NotRegistered(why) => {
                write!(f, "the function cannot run in a child process: {why}")
            }
            Self::AlreadyTaken => {
                f.write_str("the result was already taken from this pending handle")
            }
        }
    }
}

impl std::error::Error for RunError {}

/// An isolate could not be spawned.
///
/// # Examples
///
/// ```
/// use isolates::{IsolateBuilder, SpawnError};
/// let err = SpawnError::Thread("resource temporarily unavailable".into());
/// assert!(err.to_string().contains("thread"));
/// # let _ = IsolateBuilder::new();
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpawnError {
    /// The start arguments could not be encoded.
    Args(CodecError),
    /// The operating system refused to start a thread.
    Thread(String),
    /// `Mailbox::Bounded(0)`: an isolate's mailbox needs room for at least
    /// one message (there is no rendezvous form).
    ZeroCapacity,
    /// A [process isolate](crate::process)'s type is not registered with
    /// [`Registry::init`](crate::process::Registry::init): the text says
    /// what to add.
    NotRegistered(String),
    /// Process isolates are not available on this platform.
    Unsupported(&'static str),
    /// A pool's NATS connection could not be set up (see
    /// [`PoolBuilder::nats`](crate::pool::PoolBuilder)).
    Remote(RemoteError),
    /// An isolate or pool built from a closure
    /// ([`spawn_fn`](crate::spawn_fn), [`Pool::from_fn`](crate::pool::Pool::from_fn))
    /// was asked to run in a child process or on another machine, where a
    /// closure cannot go; the text says what to do instead.
    InProcessOnly(&'static str),
    /// Two children given to a
    /// [`SupervisorBuilder`](crate::supervisor::SupervisorBuilder) have
    /// this name; nothing was started. Names find children (in
    /// `children`, `restart_child`, `terminate_child`): give each its own.
    DuplicateChild(String),
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Args(e) => write!(f, "start arguments could not be encoded: {e}"),
            Self::Thread(why) => write!(f, "the isolate's thread could not be started: {why}"),
            Self::ZeroCapacity => f.write_str(
                "a bounded mailbox needs room for at least one message: use Mailbox::Bounded(1) or more",
            ),
            Self::NotRegistered(why) => write!(f, "no child process can run this isolate: {why}"),
            Self::Unsupported(why) => f.write_str(why),
            Self::Remote(e) => write!(f, "the pool's workers could not be reached: {e}"),
            Self::InProcessOnly(why) => f.write_str(why),
            Self::DuplicateChild(name) => write!(
                f,
                "two children of the supervisor are named {name:?}: give each child a name of its own"
            ),
        }
    }
}

impl std::error::Error for SpawnError {}

/// A connection to a NATS server, or its JetStream, failed: from
/// `PoolBuilder::nats` (inside [`SpawnError::Remote`]) and from
/// `isolates::remote::serve` (the `nats` feature). Each text says what to
/// check.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::RemoteError;
///
/// let e = RemoteError::Unreachable {
///     url: "nats://127.0.0.1:4222".into(),
///     waited: Duration::from_secs(5),
///     why: "connection refused".into(),
/// };
/// assert!(e.to_string().contains("is nats-server running"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoteError {
    /// No server answered at `url` within `waited` (the connect timeout).
    Unreachable {
        /// The server's address as given.
        url: String,
        /// How long the connection was tried.
        waited: std::time::Duration,
        /// What the attempt met.
        why: String,
    },
    /// The server refused the credentials (user and password, token,
    /// nkey).
    Unauthorized(String),
    /// TLS could not be set up (a certificate, a server that requires or
    /// refuses TLS).
    Tls(String),
    /// JetStream is off on the server, or refused the pool's stream or
    /// consumer.
    JetStream(String),
    /// The pool's name cannot name a NATS subject and stream.
    InvalidName(String),
    /// A worker's state could not be started (its `Worker::start` failed).
    WorkerStart(String),
    /// The connection or its thread ended.
    Closed(String),
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable { url, waited, why } => write!(
                f,
                "no NATS server answered at {url} within {waited:?} ({why}): \
                 is nats-server running there, and is the address right?"
            ),
            Self::Unauthorized(why) => write!(
                f,
                "the NATS server refused the credentials ({why}): check the user and \
                 password, token or nkey"
            ),
            Self::Tls(why) => write!(
                f,
                "TLS with the NATS server failed ({why}): check the certificates and \
                 whether the server requires TLS"
            ),
            Self::JetStream(why) => write!(
                f,
                "JetStream refused the pool's queue ({why}): start nats-server with -js \
                 (JetStream on), and give the account JetStream resources"
            ),
            Self::InvalidName(name) => write!(
                f,
                "{name:?} cannot name a remote pool: use 1 to 64 ASCII letters, digits, '-' or '_'"
            ),
            Self::WorkerStart(why) => write!(f, "a worker could not start: {why}"),
            Self::Closed(why) => write!(f, "the NATS connection closed: {why}"),
        }
    }
}

impl std::error::Error for RemoteError {}

/// Why a pool task produced no value.
///
/// # Examples
///
/// ```
/// use isolates::TaskError;
/// let e: TaskError<String> = TaskError::Cancelled;
/// assert_eq!(e.to_string(), "the task was cancelled");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskError<E> {
    /// The worker panicked running it; the text is the panic message.
    Panicked(String),
    /// The worker returned this error.
    Failed(E),
    /// Cancelled through its handle.
    Cancelled,
    /// Its deadline passed before it finished.
    TimedOut,
    /// Its worker stopped without finishing it (and no retry was left).
    WorkerLost(String),
    /// The pool's queue was full.
    Rejected,
    /// The pool was shut down before the task ran.
    PoolClosed,
    /// The input, output or error could not be encoded or decoded.
    Codec(CodecError),
    /// The result was already taken from this handle.
    AlreadyTaken,
}

impl<E: fmt::Display> fmt::Display for TaskError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Panicked(m) => write!(f, "the worker panicked: {m}"),
            Self::Failed(e) => write!(f, "the task failed: {e}"),
            Self::Cancelled => f.write_str("the task was cancelled"),
            Self::TimedOut => f.write_str("the task's deadline passed"),
            Self::WorkerLost(why) => write!(f, "the task's worker was lost: {why}"),
            Self::Rejected => {
                f.write_str("the pool's queue is full: retry later, or raise the queue bound")
            }
            Self::PoolClosed => f.write_str("the pool was shut down before the task ran"),
            Self::Codec(e) => write!(f, "the task's data could not be carried: {e}"),
            Self::AlreadyTaken => f.write_str("the result was already taken from this handle"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for TaskError<E> {}

/// Why [`Context::send_after`](crate::Context::send_after) or
/// [`Context::send_interval`](crate::Context::send_interval) set no timer.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::{Context, Isolate, TimerError};
///
/// struct Ticker;
/// impl Isolate for Ticker {
///     type Args = (); type Message = (); type Reply = String; type Error = String;
///     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Ticker) }
///     fn handle(&mut self, _: (), ctx: &mut Context<Self>) -> Result<String, String> {
///         let err = ctx.send_interval(Duration::ZERO, ()).unwrap_err();
///         Ok(err.to_string())
///     }
/// }
/// let t = Ticker::spawn(()).unwrap();
/// assert!(t.ask_timeout((), Duration::from_secs(5)).unwrap().contains("zero"));
/// assert_eq!(TimerError::ZeroPeriod, TimerError::ZeroPeriod);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimerError {
    /// An interval of zero would fire without end: give a period above zero.
    ZeroPeriod,
    /// The delay or period ends beyond what the clock can represent: give a
    /// shorter one.
    OutOfRange,
    /// Called inside a [process isolate](crate::process)'s child, whose loop
    /// waits on its parent's frames and cannot wake for a deadline: send the
    /// isolate messages from the parent (a thread isolate holding its
    /// handle) instead.
    InChildProcess,
}

impl fmt::Display for TimerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroPeriod => f.write_str("an interval's period must be above zero"),
            Self::OutOfRange => {
                f.write_str("the timer's deadline is beyond what the clock can represent")
            }
            Self::InChildProcess => f.write_str(
                "timers are not available inside a process isolate's child: \
                 send it messages from the parent instead",
            ),
        }
    }
}

impl std::error::Error for TimerError {}

/// Why [`Context::monitor`](crate::Context::monitor) or
/// [`Context::link`](crate::Context::link) did nothing.
///
/// # Examples
///
/// ```
/// use isolates::WatchError;
/// assert!(WatchError::InChildProcess.to_string().contains("child"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchError {
    /// Called inside a [process isolate](crate::process)'s child, where no
    /// other isolate's handle can reach: monitor or link the process
    /// isolate from the parent instead (it can be watched and linked to
    /// like any isolate).
    InChildProcess,
}

impl fmt::Display for WatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InChildProcess => f.write_str(
                "monitors and links cannot be set up inside a process isolate's child: \
                 set them up from the parent instead",
            ),
        }
    }
}

impl std::error::Error for WatchError {}

/// Why [`IsolateHandle::register`](crate::IsolateHandle::register) gave no
/// name.
///
/// # Examples
///
/// ```
/// use isolates::RegisterError;
/// let e = RegisterError::Taken { name: "db".into() };
/// assert!(e.to_string().contains("\"db\""));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegisterError {
    /// Another live isolate has the name: pick another, or
    /// [`unregister`](crate::unregister) it first.
    Taken {
        /// The name asked for.
        name: String,
    },
    /// The isolate has exited (or its incarnation ended): a name would
    /// point nowhere. A restarted isolate registers again from its `start`.
    Exited {
        /// The name asked for.
        name: String,
    },
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Taken { name } => write!(
                f,
                "the name {name:?} is registered to another isolate: pick another or unregister it"
            ),
            Self::Exited { name } => {
                write!(f, "cannot register {name:?}: the isolate has exited")
            }
        }
    }
}

impl std::error::Error for RegisterError {}

/// Why [`IsolateHandle::whereis`](crate::IsolateHandle::whereis) found no
/// handle.
///
/// # Examples
///
/// ```
/// use isolates::WhereisError;
/// let e = WhereisError::NotFound { name: "db".into() };
/// assert!(e.to_string().contains("no isolate is registered"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WhereisError {
    /// No live isolate has the name (it never had one, was unregistered, or
    /// exited): see [`registered`](crate::registered) for the names there
    /// are.
    NotFound {
        /// The name asked for.
        name: String,
    },
    /// An isolate of another type has the name: look it up with the type
    /// it has (`found`).
    WrongType {
        /// The name asked for.
        name: String,
        /// The isolate type asked for.
        expected: &'static str,
        /// The type of the isolate registered under the name.
        found: &'static str,
    },
}

impl fmt::Display for WhereisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound { name } => write!(f, "no isolate is registered as {name:?}"),
            Self::WrongType {
                name,
                expected,
                found,
            } => write!(
                f,
                "the isolate registered as {name:?} is a {found}, not a {expected}: \
                 look it up with its own type"
            ),
        }
    }
}

impl std::error::Error for WhereisError {}

/// The error of a handler that cannot fail: an isolate from
/// [`spawn_fn`](crate::spawn_fn), a pool from
/// [`Pool::from_fn`](crate::pool::Pool::from_fn). No value of it exists, so
/// [`AskError::Failed`] and [`TaskError::Failed`] never come from such a
/// handler. (It stands where [`std::convert::Infallible`] would if serde
/// could carry that.)
///
/// # Examples
///
/// ```
/// use isolates::{AskError, Never};
///
/// let echo = isolates::spawn_fn((), |_: &mut (), n: u32, _| n).unwrap();
/// let answer: Result<u32, AskError<Never>> = echo.ask(7);
/// assert_eq!(answer, Ok(7));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Never {}

impl fmt::Display for Never {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {}
    }
}

impl std::error::Error for Never {}
