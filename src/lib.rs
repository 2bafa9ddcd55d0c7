#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod backend;
pub mod codec;
mod error;
#[doc(hidden)]
pub mod fuzz;
mod isolate;
mod oneshot;
mod pending;
pub mod pool;
pub mod port;
pub mod process;
#[cfg(feature = "nats")]
pub mod remote;
mod run;
pub mod schedule;
mod spin;
pub mod supervisor;
mod time;
mod unwind;

pub use codec::{Bincode, Codec, DEFAULT_LIMIT, Transfer};
pub use error::{
    AskError, CodecError, RecvError, RecvTimeoutError, RegisterError, RemoteError, RunError,
    SendError, SendTimeoutError, SpawnError, TaskError, TimerError, TryRecvError, TrySendError,
    WatchError, WhereisError,
};
pub use isolate::{
    Context, Crash, Down, ExitReason, Isolate, IsolateBuilder, IsolateError, IsolateHandle,
    IsolateState, IsolateStats, Mailbox, MonitorRef, PauseToken, Priority, TimerRef, registered,
    unregister,
};
pub use pending::{Pending, Taken};
pub use port::{ReceivePort, SendPort};
pub use run::{IDLE_RETIRE, run, run_with};
