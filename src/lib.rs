#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
// The README (these docs) links the work manager's items; without the
// `schedule` feature those links have no target. CI builds the docs with
// every feature, where a broken link is an error.
#![cfg_attr(not(feature = "schedule"), allow(rustdoc::broken_intra_doc_links))]

mod backend;
mod backoff;
pub mod codec;
mod error;
#[doc(hidden)]
pub mod fuzz;
mod handle;
mod invoke;
mod isolate;
mod oneshot;
mod pending;
pub mod pool;
pub mod port;
pub mod process;
#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub mod remote;
mod run;
#[cfg(feature = "schedule")]
#[cfg_attr(docsrs, doc(cfg(feature = "schedule")))]
pub mod schedule;
mod spin;
pub mod supervisor;
mod time;
mod unwind;

pub use backoff::Backoff;
pub use codec::{Bincode, Codec, Transfer};
pub use error::{
    AskError, CodecError, Never, RecvError, RecvTimeoutError, RegisterError, RemoteError, RunError,
    SendError, SendTimeoutError, SpawnError, TaskError, TimerError, TryRecvError, TrySendError,
    WatchError, WhereisError,
};
pub use isolate::{
    Context, Crash, Down, ExitReason, FnIsolate, Isolate, IsolateBuilder, IsolateError,
    IsolateHandle, IsolateState, IsolateStats, Mailbox, MonitorRef, PauseToken, Priority, Request,
    TimerRef, registered, spawn_fn, unregister,
};
pub use pending::Pending;
pub use port::{ReceivePort, SendPort};
pub use run::{run, run_with};
