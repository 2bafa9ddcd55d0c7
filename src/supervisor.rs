//! Supervisors: Erlang/OTP supervision of isolates.
//!
//! A [`Supervisor`] starts its children in order, watches them, restarts
//! them by its [`Strategy`] and each child's [`Restart`] type, and stops them
//! in reverse order. Restarts are limited by an intensity (at most `n` in a
//! sliding window, 1 in 5 s by default as in OTP); past it the supervisor
//! stops its children and exits, and its own supervisor sees that exit.
//! Beyond OTP, a [`Backoff`](crate::Backoff) can space restarts out.
//!
//! Children can also be added and removed while it runs, as with OTP's
//! `start_child`, `terminate_child`, `restart_child`, `delete_child` and
//! `which_children` ([`Supervisor::start_child`] and the methods after it);
//! each request has a `_pending` form that never blocks the caller. A child
//! added later comes after the others, for [`Strategy::RestForOne`] and
//! [`Strategy::OneForAll`] as for start and stop order.
//!
//! A restarted worker keeps its mailbox and its handles: messages queued when
//! it crashed are handled by the next incarnation, and the caller of the
//! message that crashed it gets a typed error ([`AskError::Panicked`] or
//! [`AskError::Failed`]). Nothing is retried behind the caller's back.
//!
//! [`AskError::Panicked`]: crate::AskError::Panicked
//! [`AskError::Failed`]: crate::AskError::Failed

mod builder;
mod error;
mod events;
mod handle;
mod nested;
mod runloop;
mod shared;
mod spec;

pub use builder::SupervisorBuilder;
pub use error::{ChildError, LookupError};
pub use events::SupervisionEvent;
pub use handle::Supervisor;
pub use spec::{ChildInfo, ChildKind, ChildSpec, Restart, Shutdown, Strategy};
