//! What the app asks for (requests, chains, policies) and what it sees
//! (ids, states, infos).

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::backoff::{Backoff, Growth};
use crate::codec::{Bincode, Codec};
use crate::error::CodecError;

/// A work's id, unique within its store and never reused.
///
/// # Examples
///
/// ```
/// use isolates::schedule::WorkId;
/// assert_eq!(WorkId(7).to_string(), "work#7");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WorkId(pub u64);

impl fmt::Display for WorkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "work#{}", self.0)
    }
}

/// Where a work is in its life, as Android WorkManager names it.
///
/// `Enqueued → Running → Succeeded | Failed`; a retry goes back to
/// `Enqueued`; `Blocked` while a prerequisite is unfinished; `Cancelled`
/// from any unfinished state. Periodic work returns to `Enqueued` after
/// each period and finishes only by `Cancelled`.
///
/// # Examples
///
/// ```
/// use isolates::schedule::WorkState;
/// assert!(WorkState::Succeeded.is_finished());
/// assert!(!WorkState::Blocked.is_finished());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WorkState {
    /// Waiting for its time and its constraints, or for a free worker
    /// (a due work may wait handed to the worker pool's queue).
    Enqueued,
    /// A handler runs it now: from when the handler starts (its time limit
    /// counts from then) until it returns.
    Running,
    /// Finished with a success (one-off work only).
    Succeeded,
    /// Finished with a failure (one-off work only).
    Failed,
    /// Waiting for a prerequisite to finish.
    Blocked,
    /// Cancelled; it never runs again.
    Cancelled,
}

impl WorkState {
    /// Whether the state is final: succeeded, failed or cancelled.
    ///
    /// # Examples
    ///
    /// See [`WorkState`].
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// A [`Backoff`] as the store keeps it (in every row layout so far):
/// linear or exponential growth, a delay and a cap. A constant backoff is
/// kept as linear growth capped at its delay (the same waits); jitter is
/// not kept, so a request with it is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredBackoff {
    exponential: bool,
    delay: Duration,
    max: Duration,
}

impl StoredBackoff {
    /// The wait after the `n`-th retry in a row.
    pub(crate) fn delay_after(&self, n: u32) -> Duration {
        Backoff::from(*self).delay_after(n)
    }
}

impl Default for StoredBackoff {
    /// A request's default (see [`WorkRequest::backoff`]).
    fn default() -> Self {
        DEFAULT_BACKOFF.into()
    }
}

/// A request's backoff unless it sets one: exponential from 30 s, capped
/// at 5 h, as Android's.
pub(crate) const DEFAULT_BACKOFF: Backoff = Backoff::exponential(Duration::from_secs(30));

impl From<Backoff> for StoredBackoff {
    fn from(backoff: Backoff) -> Self {
        let (growth, delay, max) = backoff.parts();
        match growth {
            Growth::Constant => StoredBackoff {
                exponential: false,
                delay: delay.min(max),
                max: delay.min(max),
            },
            Growth::Linear => StoredBackoff {
                exponential: false,
                delay,
                max,
            },
            Growth::Exponential => StoredBackoff {
                exponential: true,
                delay,
                max,
            },
        }
    }
}

impl From<StoredBackoff> for Backoff {
    fn from(stored: StoredBackoff) -> Self {
        let grow = if stored.exponential {
            Backoff::exponential
        } else {
            Backoff::linear
        };
        grow(stored.delay).max(stored.max)
    }
}

/// What to do when work with the same unique name exists (Android's
/// `ExistingWorkPolicy` and `ExistingPeriodicWorkPolicy`).
///
/// "Existing" means work under the name that is not finished, except for
/// `Append`, which also looks at finished work still in the store.
///
/// Work that new work supersedes under its name is deleted, as in Android:
/// `Replace`, and `Keep`, `Update` or `AppendOrReplace` that start fresh,
/// delete every work under the name (finished or not; unfinished ones are
/// cancelled first). A watch of a deleted work sees it `Cancelled` (if it
/// was unfinished), then nothing more; [`WorkManager::info`] answers
/// `None` for it from then on.
///
/// [`WorkManager::info`]: super::WorkManager::info
///
/// # Examples
///
/// ```
/// use isolates::schedule::ExistingWork;
/// assert_eq!(ExistingWork::default(), ExistingWork::Keep);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ExistingWork {
    /// Ignore the new request if unfinished work has the name (the default
    /// for one-off work).
    #[default]
    Keep,
    /// Cancel and delete the existing work and enqueue the new one. Work that enqueues
    /// its own replacement from inside its handler is not cancelled mid-run:
    /// it loses the name, finishes its run, and is then cancelled (periodic
    /// work does not run again; one-off work keeps the result of that run).
    Replace,
    /// Chain the new work after the existing work's leaves: it runs when
    /// they succeed, and fails or is cancelled if one of them did (one-off
    /// work only).
    Append,
    /// As `Append`, but if a leaf failed or was cancelled, start fresh as
    /// `Replace` does, deleting the old work (one-off work only).
    AppendOrReplace,
    /// Change the existing work in place (handler, input, tags,
    /// constraints, backoff, limit; for periodic work the interval, keeping
    /// its timing), without cancelling a run in progress: the change applies
    /// from its next run. Enqueues the new work if none exists. The default
    /// for periodic work in Android; pass it explicitly here.
    Update,
}

/// How a work with several prerequisites gets its input from their outputs
/// (Android's `InputMerger`), when it has no input of its own.
///
/// Outputs here are typed values, not Android's key-value maps, so the
/// default overwrite works on whole values: the prerequisite listed last
/// (in a chain, the last of the stage before) wins, as the last writer of
/// a key wins in Android. [`ArrayCreating`](Self::ArrayCreating) gives the
/// dependent every output instead, as a `Vec` of them in prerequisite
/// order: merge them in the handler. A work given an input of its own
/// keeps it whatever the merger (in Android the outputs would overwrite
/// it).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::schedule::*;
///
/// let manager = WorkManager::builder(WorkStore::in_memory().unwrap())
///     .handler_fn("square", |n: u32, _: &WorkContext<'_>| WorkResult::Success(n * n))
///     .handler_fn("sum", |all: Vec<u32>, _: &WorkContext<'_>| {
///         WorkResult::Success(all.iter().sum::<u32>())
///     })
///     .spawn()
///     .unwrap();
/// let chain = WorkChain::all([1u32, 2, 3].map(|n| WorkRequest::once("square").input(&n)))
///     .then(WorkRequest::once("sum").input_merger(InputMerger::ArrayCreating));
/// let ids = manager.enqueue(chain).wait().unwrap();
/// let sum = manager.wait_finished(ids.ids()[3], Duration::from_secs(10)).unwrap();
/// assert_eq!(sum.output::<u32>(), Some(Ok(14)));
/// assert_eq!(InputMerger::default(), InputMerger::Overwriting);
/// # manager.stop();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum InputMerger {
    /// The output of the prerequisite listed last (the default; with one
    /// prerequisite, its output).
    #[default]
    Overwriting,
    /// A `Vec` of every prerequisite's output, in prerequisite order: the
    /// dependent's input type is `Vec<T>` when each prerequisite outputs a
    /// `T` (even with one prerequisite).
    ArrayCreating,
}

/// What an alarm ([`WorkRequest::at`]) does when its time passed while no
/// manager ran (the machine was off or asleep, the app closed and no OS
/// wake-up started a headless run), as Android's exact alarms are
/// delivered late on wake or dropped.
///
/// An alarm is late when it starts after its time: the manager was down,
/// or every worker was busy, or a constraint did not hold. Several missed
/// alarms never run in a burst per alarm: each is one work, run once or
/// skipped.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use isolates::schedule::*;
///
/// let clock = ManualClock::default();
/// let manager = WorkManager::builder(WorkStore::in_memory().unwrap())
///     .clock(clock.clone())
///     .handler_fn("ring", |text: String, _: &WorkContext<'_>| WorkResult::Success(text))
///     .spawn()
///     .unwrap();
/// let nine = clock.now() + Duration::from_secs(3600);
/// let wake_up = WorkRequest::at("ring", nine).input("wake up");
/// let standup = WorkRequest::at("ring", nine)
///     .input("stand-up")
///     .if_missed(MissedAlarm::SkipAfter(Duration::from_secs(300)));
/// let wake_up = manager.enqueue(wake_up).wait().unwrap().ids()[0];
/// let standup = manager.enqueue(standup).wait().unwrap().ids()[0];
///
/// clock.advance(Duration::from_secs(2 * 3600)); // asleep past nine
/// let rang = manager.wait_finished(wake_up, Duration::from_secs(10)).unwrap();
/// assert_eq!(rang.state, WorkState::Succeeded); // runs once, late
/// let skipped = manager.wait_finished(standup, Duration::from_secs(10)).unwrap();
/// assert_eq!(skipped.state, WorkState::Cancelled); // an hour late: skipped
/// assert!(skipped.failure.unwrap().contains("missed"));
/// # manager.stop();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum MissedAlarm {
    /// Run once, however late, as soon as a manager (the app or a
    /// headless run) is up: the default.
    #[default]
    RunOnce,
    /// Skip it (it is cancelled, its failure saying it was missed, and its
    /// dependents are cancelled) if it would start later than this after
    /// its time; run it otherwise.
    SkipAfter(Duration),
}

/// An alarm as stored: its time (ms) and what to do when it is missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Alarm {
    pub(crate) at: i64,
    pub(crate) missed: MissedAlarm,
}

/// One piece of work to schedule: a handler's name, its input, when and
/// under which conditions to run it.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::Backoff;
/// use isolates::schedule::WorkRequest;
///
/// let sync = WorkRequest::periodic("sync", Duration::from_secs(15 * 60))
///     .flex(Duration::from_secs(5 * 60))
///     .input(&"https://example.com/feed")
///     .tag("network")
///     .constraint("network")
///     .backoff(Backoff::linear(Duration::from_secs(30)))
///     .time_limit(Duration::from_secs(30));
/// assert_eq!(sync.handler(), "sync");
///
/// let once = WorkRequest::once("upload").initial_delay(Duration::from_secs(10));
/// assert!(!once.is_periodic());
/// ```
#[derive(Debug, Clone)]
pub struct WorkRequest {
    pub(crate) handler: String,
    pub(crate) input: Result<Option<Vec<u8>>, CodecError>,
    pub(crate) periodic: Option<(Duration, Option<Duration>)>,
    pub(crate) initial_delay: Duration,
    pub(crate) tags: Vec<String>,
    pub(crate) constraints: Vec<String>,
    pub(crate) backoff: Backoff,
    pub(crate) time_limit: Option<Duration>,
    pub(crate) input_merger: InputMerger,
    /// An alarm's time and missed policy ([`WorkRequest::at`]).
    pub(crate) at: Option<SystemTime>,
    pub(crate) missed: Option<MissedAlarm>,
}

impl WorkRequest {
    fn new(handler: &str, periodic: Option<(Duration, Option<Duration>)>) -> Self {
        WorkRequest {
            handler: handler.to_owned(),
            input: Ok(None),
            periodic,
            initial_delay: Duration::ZERO,
            tags: Vec::new(),
            constraints: Vec::new(),
            backoff: DEFAULT_BACKOFF,
            time_limit: None,
            input_merger: InputMerger::default(),
            at: None,
            missed: None,
        }
    }

    /// One-off work for the handler registered as `handler`.
    ///
    /// # Examples
    ///
    /// See [`WorkRequest`].
    pub fn once(handler: &str) -> Self {
        Self::new(handler, None)
    }

    /// An alarm: one-off work that runs at the wall-clock time `time`
    /// (at once if that has passed when it is enqueued; in a chain, at
    /// `time` or once its prerequisites succeed, whichever is later). The
    /// time is stored as such: it means the same after a restart, and an
    /// alarm missed while no manager ran is run once or skipped as
    /// [`if_missed`](Self::if_missed) says (default: run once). For a
    /// program that is closed at that time, see
    /// [`OsWake`](super::OsWake). An alarm takes no
    /// [`initial_delay`](Self::initial_delay).
    ///
    /// # Examples
    ///
    /// See [`MissedAlarm`].
    pub fn at(handler: &str, time: SystemTime) -> Self {
        let mut request = Self::new(handler, None);
        request.at = Some(time);
        request
    }

    /// What an alarm does when its time passed while no manager ran (see
    /// [`MissedAlarm`]). Only alarms ([`at`](Self::at)) take it: other
    /// work is refused with [`WorkError::Invalid`](super::WorkError::Invalid).
    ///
    /// # Examples
    ///
    /// See [`MissedAlarm`].
    pub fn if_missed(mut self, policy: MissedAlarm) -> Self {
        self.missed = Some(policy);
        self
    }

    /// Work that runs once per `interval` until cancelled. The interval must
    /// be at least the manager's minimum
    /// ([`WorkManagerBuilder::min_interval`](super::WorkManagerBuilder::min_interval)).
    ///
    /// As in Android, the next run comes no sooner than one interval after
    /// the last run started: a run on time keeps the schedule, a late one
    /// (the process was down, the work waited for a constraint or a worker)
    /// pushes it, and the periods it missed are skipped, not run in a burst.
    /// Each period's first run is attempt 1 ([`WorkContext::attempt`](super::WorkContext::attempt)).
    ///
    /// # Examples
    ///
    /// See [`WorkRequest`].
    pub fn periodic(handler: &str, interval: Duration) -> Self {
        Self::new(handler, Some((interval, None)))
    }

    /// For periodic work: run only in the last `flex` of each interval
    /// (Android's flex window). Ignored by one-off work.
    ///
    /// # Examples
    ///
    /// See [`WorkRequest`].
    pub fn flex(mut self, flex: Duration) -> Self {
        if let Some((_, f)) = &mut self.periodic {
            *f = Some(flex);
        }
        self
    }

    /// The handler's input, encoded now. A value that cannot be encoded
    /// makes the enqueue fail with [`WorkError::Codec`](super::WorkError::Codec).
    /// Work without input gets `()`, or in a chain its prerequisite's output.
    ///
    /// # Examples
    ///
    /// See [`WorkRequest`].
    pub fn input<T: Serialize + ?Sized>(mut self, input: &T) -> Self {
        let mut bytes = Vec::new();
        self.input = Bincode::new()
            .encode(input, &mut bytes)
            .map(|()| Some(bytes));
        self
    }

    /// Waits this long after enqueueing (or after its prerequisites
    /// succeed) before the first run.
    ///
    /// # Examples
    ///
    /// See [`WorkRequest`].
    pub fn initial_delay(mut self, delay: Duration) -> Self {
        self.initial_delay = delay;
        self
    }

    /// Adds a tag to observe or cancel work by. Every work also carries
    /// its handler's name as a tag, first (as Android tags each work with
    /// its worker's class name), so `WorkQuery::Tag(handler)` selects all
    /// works of a kind.
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::schedule::*;
    ///
    /// let manager = WorkManager::builder(WorkStore::in_memory().unwrap())
    ///     .handler_fn("upload", |(): (), _: &WorkContext<'_>| WorkResult::Success(()))
    ///     .spawn()
    ///     .unwrap();
    /// let later = WorkRequest::once("upload").tag("photos").initial_delay(std::time::Duration::from_secs(60));
    /// let id = manager.enqueue(later).wait().unwrap().ids()[0];
    /// assert_eq!(manager.info(id).unwrap().tags, ["upload", "photos"]);
    /// assert_eq!(manager.infos(&WorkQuery::Tag("upload".into())).len(), 1);
    /// # manager.stop();
    /// ```
    pub fn tag(mut self, tag: &str) -> Self {
        if !self.tags.iter().any(|t| t == tag) {
            self.tags.push(tag.to_owned());
        }
        self
    }

    /// Runs only while the constraint registered under `name` holds (see
    /// [`WorkManagerBuilder::constraint`](super::WorkManagerBuilder::constraint)).
    ///
    /// # Examples
    ///
    /// See [`WorkRequest`].
    pub fn constraint(mut self, name: &str) -> Self {
        if !self.constraints.iter().any(|c| c == name) {
            self.constraints.push(name.to_owned());
        }
        self
    }

    /// How retries back off (default exponential from 30 s, at most 5 h).
    ///
    /// # Examples
    ///
    /// See [`WorkRequest`].
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The longest one run may take; past it the run is told to stop, its
    /// worker is abandoned after a grace period, the handler's
    /// [`on_timeout`](super::Handler::on_timeout) is called and the run
    /// counts as a retry. Default: the manager's
    /// ([`WorkManagerBuilder::time_limit`](super::WorkManagerBuilder::time_limit)).
    ///
    /// # Examples
    ///
    /// See [`WorkRequest`].
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = Some(limit);
        self
    }

    /// How this work's input is made from the outputs of its
    /// prerequisites, when it has no input of its own (default
    /// [`InputMerger::Overwriting`]).
    ///
    /// # Examples
    ///
    /// See [`InputMerger`].
    pub fn input_merger(mut self, merger: InputMerger) -> Self {
        self.input_merger = merger;
        self
    }

    /// The handler's name.
    ///
    /// # Examples
    ///
    /// See [`WorkRequest`].
    pub fn handler(&self) -> &str {
        &self.handler
    }

    /// Whether the work is periodic.
    ///
    /// # Examples
    ///
    /// See [`WorkRequest`].
    pub fn is_periodic(&self) -> bool {
        self.periodic.is_some()
    }
}

/// Works to run one stage after another: each stage starts when every work
/// of the stage before has succeeded, and a work without input of its own
/// gets its prerequisites' outputs, merged as its [`InputMerger`] says (by
/// default the last one's). A failure fails the rest of the chain; a cancel
/// cancels it. An empty stage is skipped, as Android skips one; a chain with
/// no work at all is refused with
/// [`WorkError::Invalid`](super::WorkError::Invalid).
///
/// # Examples
///
/// ```
/// use isolates::schedule::{WorkChain, WorkRequest};
///
/// let chain = WorkChain::new(WorkRequest::once("download"))
///     .then(WorkRequest::once("resize"))
///     .then_all([WorkRequest::once("upload"), WorkRequest::once("notify")]);
/// assert_eq!(chain.len(), 4);
/// ```
#[derive(Debug, Clone)]
pub struct WorkChain {
    pub(crate) stages: Vec<Vec<WorkRequest>>,
}

impl From<WorkRequest> for WorkChain {
    fn from(request: WorkRequest) -> Self {
        WorkChain::new(request)
    }
}

impl WorkChain {
    /// A chain starting with one work.
    ///
    /// # Examples
    ///
    /// See [`WorkChain`].
    pub fn new(first: WorkRequest) -> Self {
        WorkChain {
            stages: vec![vec![first]],
        }
    }

    /// A chain starting with works that run side by side (also how to
    /// enqueue many independent works in one store transaction).
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::schedule::{WorkChain, WorkRequest};
    /// let batch = WorkChain::all((0..3).map(|i| WorkRequest::once("job").input(&i)));
    /// assert_eq!(batch.len(), 3);
    /// ```
    pub fn all(first: impl IntoIterator<Item = WorkRequest>) -> Self {
        WorkChain {
            stages: vec![first.into_iter().collect()],
        }
    }

    /// Adds a stage of one work, run after the last stage succeeds.
    ///
    /// # Examples
    ///
    /// See [`WorkChain`].
    pub fn then(mut self, next: WorkRequest) -> Self {
        self.stages.push(vec![next]);
        self
    }

    /// Adds a stage of works that run side by side after the last stage.
    /// An empty stage is skipped: the next stage waits for the last stage
    /// that holds work.
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::schedule::{WorkChain, WorkRequest};
    /// let chain = WorkChain::new(WorkRequest::once("a"))
    ///     .then_all([])
    ///     .then(WorkRequest::once("b")); // runs after "a"
    /// assert_eq!(chain.len(), 2);
    /// ```
    pub fn then_all(mut self, next: impl IntoIterator<Item = WorkRequest>) -> Self {
        self.stages.push(next.into_iter().collect());
        self
    }

    /// How many works the chain holds.
    ///
    /// # Examples
    ///
    /// See [`WorkChain`].
    pub fn len(&self) -> usize {
        self.stages.iter().map(Vec::len).sum()
    }

    /// Whether the chain holds no work.
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::schedule::WorkChain;
    /// assert!(WorkChain::all([]).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Which works to observe or cancel.
///
/// # Examples
///
/// ```
/// use isolates::schedule::{WorkId, WorkQuery};
/// let q = WorkQuery::Tag("sync".into());
/// assert_ne!(q, WorkQuery::Id(WorkId(1)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WorkQuery {
    /// One work.
    Id(WorkId),
    /// Works with this tag.
    Tag(String),
    /// Works under this unique name.
    UniqueName(String),
    /// Every work.
    All,
}

impl WorkQuery {
    pub(crate) fn matches(&self, info: &WorkInfo) -> bool {
        self.matches_parts(info.id, &info.tags, info.unique_name.as_deref())
    }

    /// Whether a work with this id, tags and unique name is selected.
    pub(crate) fn matches_parts(&self, id: WorkId, tags: &[String], unique: Option<&str>) -> bool {
        match self {
            Self::Id(want) => id == *want,
            Self::Tag(tag) => tags.iter().any(|t| t == tag),
            Self::UniqueName(name) => unique == Some(name),
            Self::All => true,
        }
    }
}

/// What an enqueue did.
///
/// # Examples
///
/// ```
/// use isolates::schedule::{Enqueued, WorkId};
/// let e = Enqueued::Kept(vec![WorkId(3)]);
/// assert_eq!(e.ids(), &[WorkId(3)]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// New works, in chain order.
    New(Vec<WorkId>),
    /// Nothing new: unfinished work with the unique name was kept.
    Kept(Vec<WorkId>),
    /// The existing work was changed in place.
    Updated(WorkId),
}

impl Enqueued {
    /// The works concerned: new, kept or updated.
    ///
    /// # Examples
    ///
    /// See [`Enqueued`].
    pub fn ids(&self) -> &[WorkId] {
        match self {
            Self::New(ids) | Self::Kept(ids) => ids,
            Self::Updated(id) => std::slice::from_ref(id),
        }
    }
}

/// A snapshot of one work, as the store holds it.
///
/// # Examples
///
/// ```
/// use isolates::schedule::{Handler, WorkContext, WorkManager, WorkRequest, WorkResult, WorkState, WorkStore};
///
/// let manager = WorkManager::builder(WorkStore::in_memory().unwrap())
///     .handler_fn("double", |n: u32, _: &WorkContext<'_>| WorkResult::Success(n * 2))
///     .spawn()
///     .unwrap();
/// let id = manager.enqueue(WorkRequest::once("double").input(&21u32)).wait().unwrap().ids()[0];
/// let info = manager.wait_finished(id, std::time::Duration::from_secs(10)).unwrap();
/// assert_eq!(info.state, WorkState::Succeeded);
/// assert_eq!(info.output::<u32>(), Some(Ok(42)));
/// assert_eq!(info.run_attempts, 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkInfo {
    /// Its id.
    pub id: WorkId,
    /// The handler that runs it.
    pub handler: String,
    /// Its state.
    pub state: WorkState,
    /// Its tags: its handler's name first (the implicit tag), then those
    /// of its request.
    pub tags: Vec<String>,
    /// Its unique name, if it was enqueued under one.
    pub unique_name: Option<String>,
    /// Whether it is periodic.
    pub periodic: bool,
    /// Runs started, interrupted ones included: of this work (one-off
    /// work), or of its current period (periodic work: 0 again when a
    /// period ends, as Android's run attempt count).
    pub run_attempts: u32,
    /// Retries in a row since its last success or failure (drives backoff).
    pub retries: u32,
    /// Periods completed (periodic work).
    pub periods: u64,
    /// When it runs next, at the earliest (enqueued work).
    pub next_run_at: Option<SystemTime>,
    /// Its last output, encoded.
    pub output: Option<Vec<u8>>,
    /// The progress of the run in progress, encoded: `None` unless it is
    /// [`Running`](WorkState::Running) and has set some. Progress is
    /// cleared when a run ends, as Android clears it when a work finishes.
    pub progress: Option<Vec<u8>>,
    /// Why its last run failed, or why it was failed.
    pub failure: Option<String>,
    /// The works it waits for.
    pub prerequisites: Vec<WorkId>,
}

impl WorkInfo {
    /// Decodes the output as `T`; `None` without output.
    ///
    /// # Examples
    ///
    /// See [`WorkInfo`].
    pub fn output<T: DeserializeOwned>(&self) -> Option<Result<T, CodecError>> {
        self.output.as_deref().map(|b| Bincode::new().decode(b))
    }

    /// Decodes the last progress as `T`; `None` without progress.
    ///
    /// # Examples
    ///
    /// See [`WorkContext::set_progress`](super::WorkContext::set_progress).
    pub fn progress<T: DeserializeOwned>(&self) -> Option<Result<T, CodecError>> {
        self.progress.as_deref().map(|b| Bincode::new().decode(b))
    }
}

/// A validated request, as the scheduler takes it.
pub(crate) struct Spec {
    pub(crate) handler: String,
    pub(crate) input: Option<Vec<u8>>,
    /// Interval and flex in milliseconds.
    pub(crate) periodic: Option<(i64, i64)>,
    pub(crate) initial_delay: i64,
    pub(crate) tags: Vec<String>,
    pub(crate) constraints: Vec<String>,
    pub(crate) backoff: StoredBackoff,
    pub(crate) time_limit: Option<Duration>,
    pub(crate) input_merger: InputMerger,
    pub(crate) alarm: Option<Alarm>,
}
