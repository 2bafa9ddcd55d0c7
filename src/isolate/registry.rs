//! Names for isolates, process-wide, as OTP's `register`/`whereis`: the
//! way an isolate finds another it was not handed (handles do not
//! serialize, so they cannot travel in messages or start arguments).
//!
//! A name holds no handle: it does not keep its isolate alive, and it goes
//! when the isolate's incarnation ends, so a lookup never finds a dead
//! isolate and a restarted one can take its name again.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Weak};

use parking_lot::Mutex;

use super::shared::Shared;
use super::watch::Peer;
use super::{Isolate, IsolateHandle};
use crate::error::{RegisterError, WhereisError};

struct Entry {
    id: u64,
    type_id: TypeId,
    type_name: &'static str,
    /// A `Weak<Shared<I>>` of the isolate's own type.
    shared: Box<dyn Any + Send + Sync>,
    /// The same, whatever its type.
    peer: Weak<dyn Peer>,
}

static NAMES: LazyLock<Mutex<HashMap<String, Entry>>> = LazyLock::new(Default::default);

impl<I: Isolate> IsolateHandle<I> {
    /// Registers the isolate under `name`, process-wide, until it exits (or
    /// its incarnation ends, for a supervised isolate: a restarted one
    /// registers again, typically from its `start`) or the name is
    /// [`unregister`]ed. An isolate may have several names. Registering
    /// again a name it already has is fine.
    ///
    /// Names are one registry for the whole process; a [`Supervisor`](crate::supervisor::Supervisor)'s
    /// [`worker`](crate::supervisor::Supervisor::worker) looks up its own
    /// children only, by their child name.
    ///
    /// # Errors
    ///
    /// [`RegisterError::Taken`] if another isolate has the name,
    /// [`RegisterError::Exited`] if this one has exited.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use isolates::{Context, Isolate, IsolateHandle, Priority, RegisterError, WhereisError};
    /// # struct Echo;
    /// # impl Isolate for Echo {
    /// #     type Args = (); type Message = u8; type Reply = u8; type Error = String;
    /// #     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Echo) }
    /// #     fn handle(&mut self, m: u8, _: &mut Context<Self>) -> Result<u8, String> { Ok(m) }
    /// # }
    /// let echo = Echo::spawn(()).unwrap();
    /// echo.register("doc-echo").unwrap();
    /// let found = IsolateHandle::<Echo>::whereis("doc-echo").unwrap();
    /// assert_eq!(found.ask_timeout(7, Duration::from_secs(5)), Ok(7));
    ///
    /// let other = Echo::spawn(()).unwrap();
    /// assert!(matches!(other.register("doc-echo"), Err(RegisterError::Taken { .. })));
    ///
    /// // The name goes with the isolate.
    /// echo.kill(Priority::Immediate);
    /// echo.join(Duration::from_secs(5));
    /// assert!(matches!(
    ///     IsolateHandle::<Echo>::whereis("doc-echo"),
    ///     Err(WhereisError::NotFound { .. })
    /// ));
    /// other.register("doc-echo").unwrap();
    /// ```
    pub fn register(&self, name: impl Into<String>) -> Result<(), RegisterError> {
        let name = name.into();
        let shared = self.shared();
        let mut names = NAMES.lock();
        if let Some(entry) = names.get(&name) {
            if entry.id == shared.id {
                return Ok(());
            }
            return Err(RegisterError::Taken { name });
        }
        // Under the registry's lock: an end that comes after this forgets
        // the name; one that came before refuses it.
        if !shared.watch.add_name(&name) {
            return Err(RegisterError::Exited { name });
        }
        names.insert(
            name,
            Entry {
                id: shared.id,
                type_id: TypeId::of::<I>(),
                type_name: std::any::type_name::<I>(),
                shared: Box::new(Arc::downgrade(shared)),
                peer: Arc::downgrade(shared) as Weak<dyn Peer>,
            },
        );
        Ok(())
    }

    /// The isolate registered as `name`, as a handle of type `I`.
    ///
    /// # Errors
    ///
    /// [`WhereisError::NotFound`] if no live isolate has the name,
    /// [`WhereisError::WrongType`] if the one that has it is not an `I`.
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::{Context, Isolate, IsolateHandle, WhereisError};
    /// # struct Echo;
    /// # impl Isolate for Echo {
    /// #     type Args = (); type Message = u8; type Reply = u8; type Error = String;
    /// #     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Echo) }
    /// #     fn handle(&mut self, m: u8, _: &mut Context<Self>) -> Result<u8, String> { Ok(m) }
    /// # }
    /// # struct Other;
    /// # impl Isolate for Other {
    /// #     type Args = (); type Message = (); type Reply = (); type Error = String;
    /// #     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Other) }
    /// #     fn handle(&mut self, _: (), _: &mut Context<Self>) -> Result<(), String> { Ok(()) }
    /// # }
    /// let echo = Echo::spawn(()).unwrap();
    /// echo.register("doc-whereis").unwrap();
    /// assert_eq!(IsolateHandle::<Echo>::whereis("doc-whereis").unwrap(), echo);
    /// assert!(matches!(
    ///     IsolateHandle::<Other>::whereis("doc-whereis"),
    ///     Err(WhereisError::WrongType { .. })
    /// ));
    /// ```
    pub fn whereis(name: &str) -> Result<IsolateHandle<I>, WhereisError> {
        let names = NAMES.lock();
        let not_found = || WhereisError::NotFound {
            name: name.to_owned(),
        };
        let entry = names.get(name).ok_or_else(not_found)?;
        if entry.type_id != TypeId::of::<I>() {
            return Err(WhereisError::WrongType {
                name: name.to_owned(),
                expected: std::any::type_name::<I>(),
                found: entry.type_name,
            });
        }
        let shared = entry
            .shared
            .downcast_ref::<Weak<Shared<I>>>()
            .and_then(Weak::upgrade)
            .ok_or_else(not_found)?;
        Ok(IsolateHandle::new(shared))
    }
}

/// Takes `name` off the registry; returns whether it was there. The
/// isolate goes on; only the name goes.
///
/// # Examples
///
/// ```
/// use isolates::{Context, Isolate, IsolateHandle};
/// # struct Echo;
/// # impl Isolate for Echo {
/// #     type Args = (); type Message = u8; type Reply = u8; type Error = String;
/// #     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Echo) }
/// #     fn handle(&mut self, m: u8, _: &mut Context<Self>) -> Result<u8, String> { Ok(m) }
/// # }
/// let echo = Echo::spawn(()).unwrap();
/// echo.register("doc-unregister").unwrap();
/// assert!(isolates::unregister("doc-unregister"));
/// assert!(!isolates::unregister("doc-unregister"));
/// assert!(IsolateHandle::<Echo>::whereis("doc-unregister").is_err());
/// assert!(!echo.is_finished());
/// ```
pub fn unregister(name: &str) -> bool {
    let Some(entry) = NAMES.lock().remove(name) else {
        return false;
    };
    // Its table keeps the names to forget at the end: this one is gone.
    if let Some(peer) = entry.peer.upgrade() {
        peer.watch().remove_name(name);
    }
    true
}

/// The names registered now, sorted.
///
/// # Examples
///
/// ```
/// # use isolates::{Context, Isolate};
/// # struct Echo;
/// # impl Isolate for Echo {
/// #     type Args = (); type Message = u8; type Reply = u8; type Error = String;
/// #     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Echo) }
/// #     fn handle(&mut self, m: u8, _: &mut Context<Self>) -> Result<u8, String> { Ok(m) }
/// # }
/// let echo = Echo::spawn(()).unwrap();
/// echo.register("doc-registered").unwrap();
/// assert!(isolates::registered().contains(&"doc-registered".to_string()));
/// ```
pub fn registered() -> Vec<String> {
    let mut names: Vec<String> = NAMES.lock().keys().cloned().collect();
    names.sort();
    names
}

/// Forgets the names of the isolate `id` whose incarnation ended. Only
/// entries still pointing at it go: a name it lost to `unregister` may
/// belong to another isolate since.
pub(super) fn forget(id: u64, names: &[String]) {
    if names.is_empty() {
        return;
    }
    let mut registry = NAMES.lock();
    for name in names {
        if registry.get(name).is_some_and(|entry| entry.id == id) {
            registry.remove(name);
        }
    }
}
