//! Backends that carry an isolate's messages across a real boundary.

#[cfg(target_os = "linux")]
pub(crate) mod process;

#[cfg(feature = "nats")]
pub(crate) mod nats;
