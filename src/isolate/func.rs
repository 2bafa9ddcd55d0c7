//! Isolates from a state and a function: [`spawn_fn`],
//! [`IsolateBuilder::spawn_fn`] and the isolate they spawn, [`FnIsolate`].

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Context, Isolate, IsolateBuilder, IsolateHandle};
use crate::codec::{Bincode, Codec};
use crate::error::{Never, SpawnError};

/// Why an isolate from a closure stays in this process: the text of
/// [`SpawnError::InProcessOnly`] and of its start value's serde errors.
const IN_PROCESS_ONLY: &str = "an isolate from a closure cannot run in a child process or on \
     another machine (a closure cannot be sent there): implement `isolates::Isolate` for a type \
     of its own and register it with `isolates::process::Registry`";

/// The handler of an [`FnIsolate`], shared by its incarnations.
type Handler<S, M, R> = dyn Fn(&mut S, M, &mut Context<FnIsolate<S, M, R>>) -> R + Send + Sync;

/// An isolate made of a state and a function, spawned by [`spawn_fn`] or
/// [`IsolateBuilder::spawn_fn`]: each message `M` is handled by calling the
/// function with the state, and what it returns (`R`) answers an `ask`.
///
/// It is an ordinary [`Isolate`] (its `Args` is itself, its `Error`
/// [`Never`]): its handle casts, asks, pauses, kills and listens as any
/// other, and a supervisor restarts it ([`ChildSpec::worker_fn`](crate::supervisor::ChildSpec::worker_fn)).
/// A panic in the function ends it (a supervised one restarts) and the
/// asker gets [`AskError::Panicked`](crate::AskError::Panicked).
///
/// It runs in this process only: its state and function are moved to its
/// thread, never encoded. [`IsolateBuilder::process`] with it fails at spawn
/// with [`SpawnError::InProcessOnly`]; with
/// [`copy_messages`](IsolateBuilder::copy_messages) its messages and
/// replies are copied and its state still moves. Its serde impls exist only
/// so it fits [`Isolate`]'s bounds; they always fail, saying why.
///
/// # Examples
///
/// ```
/// use isolates::{FnIsolate, IsolateHandle};
///
/// // The type can be named, e.g. to keep the handle in a struct.
/// struct App {
///     counter: IsolateHandle<FnIsolate<u64, u64, u64>>,
/// }
///
/// let app = App {
///     counter: isolates::spawn_fn(0u64, |total: &mut u64, n: u64, _| {
///         *total += n;
///         *total
///     })
///     .unwrap(),
/// };
/// app.counter.cast(5).unwrap();
/// assert_eq!(app.counter.ask(10), Ok(15));
/// ```
pub struct FnIsolate<S, M, R>
where
    S: Send + 'static,
    M: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    state: S,
    handler: Arc<Handler<S, M, R>>,
}

impl<S, M, R> FnIsolate<S, M, R>
where
    S: Send + 'static,
    M: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    /// The start value of an isolate that begins with `state` and handles
    /// each message with `handler`: what [`Isolate::spawn`] or
    /// [`ChildSpec::worker`](crate::supervisor::ChildSpec::worker) take.
    /// [`spawn_fn`] is the short form.
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::{FnIsolate, Isolate};
    ///
    /// let start = FnIsolate::new(Vec::<String>::new(), |log: &mut Vec<String>, line: String, _| {
    ///     log.push(line);
    ///     log.len()
    /// });
    /// let log = FnIsolate::spawn(start).unwrap();
    /// assert_eq!(log.ask("first".into()), Ok(1));
    /// assert_eq!(log.ask("second".into()), Ok(2));
    /// ```
    pub fn new<F>(state: S, handler: F) -> Self
    where
        F: Fn(&mut S, M, &mut Context<Self>) -> R + Send + Sync + 'static,
    {
        FnIsolate {
            state,
            handler: Arc::new(handler),
        }
    }
}

impl<S, M, R> Isolate for FnIsolate<S, M, R>
where
    S: Send + 'static,
    M: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    type Args = Self;
    type Message = M;
    type Reply = R;
    type Error = Never;

    fn start(start: Self, _: &mut Context<Self>) -> Result<Self, Never> {
        Ok(start)
    }

    fn handle(&mut self, msg: M, ctx: &mut Context<Self>) -> Result<R, Never> {
        Ok((self.handler)(&mut self.state, msg, ctx))
    }
}

/// A clone starts from a clone of the state, with the same function: what
/// a supervisor restarts from.
impl<S, M, R> Clone for FnIsolate<S, M, R>
where
    S: Clone + Send + 'static,
    M: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    fn clone(&self) -> Self {
        FnIsolate {
            state: self.state.clone(),
            handler: Arc::clone(&self.handler),
        }
    }
}

/// Never shows the state.
impl<S, M, R> fmt::Debug for FnIsolate<S, M, R>
where
    S: Send + 'static,
    M: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnIsolate").finish_non_exhaustive()
    }
}

/// Always fails: a closure cannot be encoded.
impl<S, M, R> Serialize for FnIsolate<S, M, R>
where
    S: Send + 'static,
    M: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    fn serialize<Z: Serializer>(&self, _: Z) -> Result<Z::Ok, Z::Error> {
        Err(serde::ser::Error::custom(IN_PROCESS_ONLY))
    }
}

/// Always fails: a closure cannot be decoded.
impl<'de, S, M, R> Deserialize<'de> for FnIsolate<S, M, R>
where
    S: Send + 'static,
    M: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom(IN_PROCESS_ONLY))
    }
}

impl<C: Codec> IsolateBuilder<C> {
    /// Spawns an isolate from a state and a function, with this builder's
    /// settings: the state moves to the isolate's thread, and every
    /// message is handled by `handler(&mut state, message, ctx)`, whose
    /// return value answers an `ask`. [`spawn_fn`] is the short form with
    /// the default settings; [`FnIsolate`] says what the isolate can do.
    ///
    /// # Errors
    ///
    /// [`SpawnError::InProcessOnly`] with [`process`](Self::process) (a
    /// closure cannot run in a child process: implement [`Isolate`]);
    /// otherwise as [`spawn`](Self::spawn).
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::{IsolateBuilder, Mailbox};
    ///
    /// let words = IsolateBuilder::new()
    ///     .name("words")
    ///     .mailbox(Mailbox::Bounded(64))
    ///     .spawn_fn(0usize, |seen: &mut usize, text: String, _| {
    ///         *seen += text.split_whitespace().count();
    ///         *seen
    ///     })
    ///     .unwrap();
    /// assert_eq!(words.name(), "words");
    /// assert_eq!(words.ask("one two".into()), Ok(2));
    /// assert_eq!(words.ask("three".into()), Ok(3));
    /// ```
    pub fn spawn_fn<S, M, R, F>(
        &self,
        state: S,
        handler: F,
    ) -> Result<IsolateHandle<FnIsolate<S, M, R>>, SpawnError>
    where
        S: Send + 'static,
        M: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        F: Fn(&mut S, M, &mut Context<FnIsolate<S, M, R>>) -> R + Send + Sync + 'static,
    {
        self.clone()
            .in_process_only(IN_PROCESS_ONLY)
            .spawn(FnIsolate::new(state, handler))
    }
}

/// Spawns an isolate from a state and a function, with the default
/// settings: the state moves to the isolate's thread, and every message is
/// handled by `handler(&mut state, message, ctx)`, whose return value
/// answers an `ask`. No type or trait to write; [`Isolate`] is the longer
/// form, for state built on the isolate's thread, typed errors, a
/// `stopping` hook, or a child process. [`FnIsolate`] says what it can do;
/// [`IsolateBuilder::spawn_fn`] takes settings.
///
/// # Errors
///
/// [`SpawnError::Thread`] if no thread can be started.
///
/// # Examples
///
/// ```
/// use std::collections::HashMap;
/// use isolates::Context;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// enum Op { Set(String, i64), Get(String) }
///
/// let store = isolates::spawn_fn(
///     HashMap::new(),
///     |map: &mut HashMap<String, i64>, op: Op, _ctx: &mut Context<_>| match op {
///         Op::Set(key, value) => map.insert(key, value),
///         Op::Get(key) => map.get(&key).copied(),
///     },
/// )
/// .unwrap();
/// store.cast(Op::Set("answer".into(), 42)).unwrap();
/// assert_eq!(store.ask(Op::Get("answer".into())), Ok(Some(42)));
/// assert_eq!(store.ask(Op::Get("question".into())), Ok(None));
/// ```
///
/// Spawning a type that is not an isolate does not compile; the compiler
/// says "`String` is not an isolate" and suggests implementing [`Isolate`]
/// or calling `spawn_fn`:
///
/// ```compile_fail,E0277
/// let text = isolates::IsolateBuilder::new().spawn::<String>("hello".into());
/// ```
pub fn spawn_fn<S, M, R, F>(
    state: S,
    handler: F,
) -> Result<IsolateHandle<FnIsolate<S, M, R>>, SpawnError>
where
    S: Send + 'static,
    M: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
    F: Fn(&mut S, M, &mut Context<FnIsolate<S, M, R>>) -> R + Send + Sync + 'static,
{
    IsolateBuilder::<Bincode>::new().spawn_fn(state, handler)
}
