//! What this executable can run in a child process, as
//! `process::Registry::init` installed it, and the keys that name each
//! entry the same way in the parent and the child. Isolates, pools and
//! `process::run` look their entries up here; the registry's public
//! builder (`process::Registry`) is above them all and fills it.

use std::any::TypeId;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use parking_lot::Mutex;

use crate::error::{CodecError, SpawnError};

/// Encodes a worker's start arguments for its child.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) type ArgsEncoder<A> =
    std::sync::Arc<dyn Fn(&A) -> Result<Vec<u8>, CodecError> + Send + Sync>;

/// One registration of `process::Registry`.
#[derive(Clone)]
pub(crate) struct Registered {
    pub(crate) type_name: &'static str,
    #[cfg(target_os = "linux")]
    pub(crate) entry: crate::backend::process::Entry,
    /// A pool worker's start-argument encoder (an `ArgsEncoder` of its
    /// `Args`): its registration is where they are known to be encodable.
    #[cfg(target_os = "linux")]
    pub(crate) args: Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>,
}

/// What `init` recorded in the parent.
struct Installed {
    entries: HashMap<u64, Registered>,
    test_entry: Option<String>,
}

static INSTALLED: Mutex<Option<Installed>> = Mutex::new(None);

/// Records `entries` (and the test entry, if any) for this process.
pub(crate) fn install(entries: HashMap<u64, Registered>, test_entry: Option<String>) {
    let mut installed = INSTALLED.lock();
    let installed = installed.get_or_insert_with(|| Installed {
        entries: HashMap::new(),
        test_entry: None,
    });
    installed.entries.extend(entries);
    if test_entry.is_some() {
        installed.test_entry = test_entry;
    }
}

/// The entries a child may run, and the longest start frame any of them
/// takes.
#[cfg(target_os = "linux")]
pub(crate) fn child_entries() -> (usize, HashMap<u64, crate::backend::process::Entry>) {
    let installed = INSTALLED.lock();
    let entries: HashMap<u64, crate::backend::process::Entry> = installed
        .as_ref()
        .map(|i| {
            i.entries
                .iter()
                .map(|(k, r)| (*k, r.entry.clone()))
                .collect()
        })
        .unwrap_or_default();
    let limit = entries.values().map(|e| e.limit).max().unwrap_or(0);
    (limit, entries)
}

/// Identifies isolate `I` with codec `C` in both processes: the same
/// executable gives the same type ids.
pub(crate) fn key<I: 'static, C: 'static>() -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    TypeId::of::<(I, C)>().hash(&mut hasher);
    hasher.finish()
}

/// The key of function `f` for `process::run`: its type and its place in this
/// executable (an offset from a function of this crate, the same in every
/// process started from the same file, wherever it is loaded).
pub(crate) fn fn_key<A: 'static, R: 'static>(f: fn(A) -> R) -> u64 {
    fn anchor() {}
    let anchor: fn() = anchor;
    let offset = (f as usize).wrapping_sub(anchor as usize);
    let mut hasher = std::hash::DefaultHasher::new();
    TypeId::of::<(A, R)>().hash(&mut hasher);
    offset.hash(&mut hasher);
    hasher.finish()
}

/// The key of pool worker `W` with codec `C` (a type may be both an
/// isolate and a worker).
pub(crate) fn worker_key<W: 'static, C: 'static>() -> u64 {
    key::<AsWorker<W>, C>()
}

struct AsWorker<W>(std::marker::PhantomData<W>);

/// Checks that isolate `I` with codec `C` can run in a child; returns the
/// test entry to start the child with, if any.
pub(crate) fn lookup<I: 'static, C: 'static>() -> Result<Option<String>, SpawnError> {
    lookup_key::<I, C>(key::<I, C>(), "isolate")
}

/// As [`lookup`], for pool worker `W`.
pub(crate) fn lookup_worker<W: 'static, C: 'static>() -> Result<Option<String>, SpawnError> {
    lookup_key::<W, C>(worker_key::<W, C>(), "worker")
}

/// The start-argument encoder that registering pool worker `W` with codec
/// `C` made; `None` if it is not registered.
#[cfg(target_os = "linux")]
pub(crate) fn worker_args<W: 'static, C: 'static, A: 'static>() -> Option<ArgsEncoder<A>> {
    let installed = INSTALLED.lock();
    let registered = installed.as_ref()?.entries.get(&worker_key::<W, C>())?;
    registered
        .args
        .as_ref()?
        .downcast_ref::<ArgsEncoder<A>>()
        .cloned()
}

/// Checks that the entry of `key` (type `T`, codec `C`, a `kind` such as
/// "isolate") is installed; returns the test entry to start a child with.
pub(crate) fn lookup_key<T: 'static, C: 'static>(
    key: u64,
    kind: &str,
) -> Result<Option<String>, SpawnError> {
    if !cfg!(target_os = "linux") {
        return Err(SpawnError::Unsupported(
            "process isolates need Linux; use a thread isolate (the default) here",
        ));
    }
    let installed = INSTALLED.lock();
    let type_name = std::any::type_name::<T>();
    match &*installed {
        Some(installed) if installed.entries.contains_key(&key) => Ok(installed.test_entry.clone()),
        Some(_) => Err(SpawnError::NotRegistered(format!(
            "{kind} {type_name} (with codec {}) is not registered: add `.{kind}::<{type_name}>()` \
             (or `.{kind}_with` for another codec) to the Registry that main initializes",
            std::any::type_name::<C>()
        ))),
        None => Err(SpawnError::NotRegistered(format!(
            "isolates::process::Registry::init was not called: call it first thing in main, \
             registering {type_name}"
        ))),
    }
}
