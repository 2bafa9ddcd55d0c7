//! The worker side (`remote::serve`): pulls the pool's batches of tasks
//! from its durable consumer, runs each task on one of this process's
//! worker threads, keeps the batch's claim alive while they run, sends the
//! results to the client as requests (those finished close together in
//! one; each goes without waiting for the client to confirm the ones
//! before), and acknowledges the batch only once the client confirmed all
//! its results. A batch this process never finishes (it died, it was cut off)
//! goes to another worker after the ack wait; the client ignores the
//! results it already had.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use parking_lot::{Condvar, Mutex};

use crate::backend::nats::bridge::Bridge;
use crate::backend::nats::{self, Link, Names, NatsOptions, frame};
use crate::codec::Codec;
use crate::error::RemoteError;
use crate::invoke::Invoked;
use crate::pool::task::TaskCell;
use crate::pool::{TaskServer, Worker};
use crate::unwind;

/// The durable consumer all workers of a pool share.
const CONSUMER: &str = "workers";

/// The longest the results of a batch wait for more, all told (only while
/// tasks wait for this process's worker threads).
const RESULTS_LINGER_MAX: Duration = Duration::from_micros(500);

/// How many cancelled task ids a worker remembers (a cancel may arrive
/// before its task).
const CANCELLED_KEEP: usize = 16_384;

/// What a worker process has served.
///
/// # Examples
///
/// ```
/// let s = isolates::remote::ServeStats::default();
/// assert_eq!(s.garbage, 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ServeStats {
    /// Tasks received (a redelivered task counts again).
    pub received: u64,
    /// Of those, deliveries after the first (their first worker died or
    /// was cut off).
    pub redelivered: u64,
    /// Messages received: batches of one or more tasks.
    pub batches: u64,
    /// Tasks that returned a value.
    pub succeeded: u64,
    /// Tasks that returned their own error.
    pub failed: u64,
    /// Tasks whose worker panicked (the worker's state was started again).
    pub panicked: u64,
    /// Tasks skipped because they were cancelled or past their deadline.
    pub skipped: u64,
    /// Messages that were not batches of tasks (each counts once), and
    /// tasks whose input did not decode under the codec's limit: dropped
    /// (the client of a bad input is told).
    pub garbage: u64,
    /// Results no client took (it had gone): the task was dropped.
    pub orphaned: u64,
    /// Cancel notices heard (for tasks here or not).
    pub cancels: u64,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    redelivered: AtomicU64,
    batches: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    panicked: AtomicU64,
    skipped: AtomicU64,
    garbage: AtomicU64,
    orphaned: AtomicU64,
    cancels: AtomicU64,
    /// Set by `stop`: the worker threads start no more jobs (those queued
    /// for them are not acknowledged, so the server hands them to another
    /// worker).
    stopping: std::sync::atomic::AtomicBool,
}

/// One task for a worker thread.
struct Job {
    cell: Arc<TaskCell>,
    client: u64,
    input: bytes::Bytes,
    done: Arc<Outbox>,
}

/// One result: the task's id, its kind ([`SKIPPED`] for none) and body.
type Answer = (u64, u8, Vec<u8>);

/// A batch's results on their way from the worker threads to the batch's
/// task on the bridge. A worker thread wakes that task only when it is
/// worth it: the first result waiting (which starts the linger), the last
/// of the batch, or no task left waiting for a thread (what runs now may be
/// long); the others join the results already waiting, with no wake-up.
struct Outbox {
    ready: Mutex<Vec<Answer>>,
    /// Tasks of the batch not finished yet.
    left: std::sync::atomic::AtomicUsize,
    notify: tokio::sync::Notify,
}

impl Outbox {
    fn put(&self, answer: Answer, idle: bool) {
        let first = {
            let mut ready = self.ready.lock();
            ready.push(answer);
            ready.len() == 1
        };
        let last = self.left.fetch_sub(1, Ordering::AcqRel) == 1;
        if first || last || idle {
            self.notify.notify_one();
        }
    }
}

/// Tasks received and not finished, by (client, task), for cancels.
#[derive(Default)]
struct Running {
    cells: HashMap<(u64, u64), Arc<TaskCell>>,
    cancelled: HashSet<(u64, u64)>,
    order: VecDeque<(u64, u64)>,
}

/// A serving process's shared state.
pub(crate) struct Served {
    counters: Arc<Counters>,
    bridge: Mutex<Option<Bridge>>,
    ended: Mutex<Option<Result<(), RemoteError>>>,
    ended_cv: Condvar,
}

impl Served {
    pub(crate) fn stats(&self) -> ServeStats {
        let c = &self.counters;
        ServeStats {
            received: c.received.load(Ordering::Relaxed),
            redelivered: c.redelivered.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            succeeded: c.succeeded.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            panicked: c.panicked.load(Ordering::Relaxed),
            skipped: c.skipped.load(Ordering::Relaxed),
            garbage: c.garbage.load(Ordering::Relaxed),
            orphaned: c.orphaned.load(Ordering::Relaxed),
            cancels: c.cancels.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn stop(&self) {
        self.counters.stopping.store(true, Ordering::SeqCst);
        self.end(Ok(()));
        // Outside the lock: stopping joins the bridge thread.
        let bridge = self.bridge.lock().take();
        drop(bridge);
    }

    fn end(&self, why: Result<(), RemoteError>) {
        let mut ended = self.ended.lock();
        if ended.is_none() {
            *ended = Some(why);
            self.ended_cv.notify_all();
        }
    }

    pub(crate) fn wait(&self) -> Result<(), RemoteError> {
        let mut ended = self.ended.lock();
        loop {
            if let Some(why) = &*ended {
                return why.clone();
            }
            self.ended_cv.wait(&mut ended);
        }
    }
}

/// Starts the worker threads (each `W::start`s first), connects, sets up
/// the stream and consumer, and starts pulling.
pub(crate) fn start<W: Worker, C: Codec>(
    options: &NatsOptions,
    name: &str,
    args: W::Args,
    codec: C,
) -> Result<Arc<Served>, RemoteError> {
    let names = Names::new(name)?;
    let counters = Arc::new(Counters::default());
    let (jobs_tx, jobs) = crossbeam_channel::unbounded::<Job>();
    let bridge = Bridge::start(name)?;
    let link = Arc::new(Link::default());
    // Connect first: progress needs the client.
    let setup = {
        let options = options.clone();
        let names = names.clone();
        let link = Arc::clone(&link);
        async move {
            let client =
                nats::connect(&options, format!("isolates {} worker", names.stream), link).await?;
            let js = async_nats::jetstream::new(client.clone());
            let stream = nats::stream(&js, &names).await?;
            use async_nats::jetstream::consumer::{AckPolicy, pull};
            let consumer = stream
                .get_or_create_consumer(
                    CONSUMER,
                    pull::Config {
                        durable_name: Some(CONSUMER.into()),
                        ack_policy: AckPolicy::Explicit,
                        ack_wait: options.ack_wait,
                        max_deliver: -1,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| RemoteError::JetStream(e.to_string()))?;
            let cancels = client
                .subscribe(names.cancel())
                .await
                .map_err(|e| RemoteError::Closed(e.to_string()))?;
            Ok::<_, RemoteError>((client, consumer, cancels))
        }
    };
    let budget = options.connect_timeout * 2 + Duration::from_secs(10);
    let (client, consumer, cancels) = bridge.run(setup, budget)??;

    // The worker threads, each with its state started before serving.
    let handle_codecs = Arc::new(codec);
    let (started_tx, started) = crossbeam_channel::unbounded::<Result<(), String>>();
    for i in 0..options.workers {
        let jobs = jobs.clone();
        let args = args.clone();
        let codec = Arc::clone(&handle_codecs);
        let counters = Arc::clone(&counters);
        let started_tx = started_tx.clone();
        let progress = Progress {
            client: client.clone(),
            names: names.clone(),
            handle: bridge_handle(&bridge),
        };
        std::thread::Builder::new()
            .name(format!("{name}-served-{i}"))
            .spawn(move || {
                work::<W, C>(&*codec, args, &jobs, &counters, &progress, &started_tx);
            })
            .map_err(|e| RemoteError::WorkerStart(format!("no thread: {e}")))?;
    }
    drop(started_tx);
    for _ in 0..options.workers {
        match started.recv() {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return Err(RemoteError::WorkerStart(why)),
            Err(_) => return Err(RemoteError::WorkerStart("a worker thread ended".into())),
        }
    }
    let served = Arc::new(Served {
        counters: Arc::clone(&counters),
        bridge: Mutex::new(None),
        ended: Mutex::new(None),
        ended_cv: Condvar::new(),
    });
    let running = Arc::new(Mutex::new(Running::default()));
    bridge.spawn(listen_cancels(
        cancels,
        Arc::clone(&running),
        Arc::clone(&counters),
    ));
    let pull = Pull {
        client,
        names,
        counters,
        running,
        jobs: jobs_tx,
        ack_wait: options.ack_wait,
        give_up: options.ack_wait.max(Duration::from_secs(10)),
        batch: options.workers * 2,
    };
    bridge.spawn(pull.run(consumer));
    *served.bridge.lock() = Some(bridge);
    Ok(served)
}

/// Lets worker threads publish progress through the bridge.
struct Progress {
    client: async_nats::Client,
    names: Names,
    handle: tokio::runtime::Handle,
}

fn bridge_handle(bridge: &Bridge) -> tokio::runtime::Handle {
    bridge.handle()
}

/// A worker thread: starts its state, then runs jobs until the channel
/// closes. A panic starts the state again.
fn work<W: Worker, C: Codec>(
    codec: &C,
    args: W::Args,
    jobs: &crossbeam_channel::Receiver<Job>,
    counters: &Counters,
    progress: &Progress,
    started: &crossbeam_channel::Sender<Result<(), String>>,
) {
    let start = |args: W::Args| match unwind::catch(|| W::start(args)) {
        Ok(Ok(state)) => Ok(state),
        Ok(Err(e)) => Err(unwind::describe(&e)),
        Err(caught) => Err(format!("it panicked: {}", caught.message)),
    };
    let mut state = match start(args.clone()) {
        Ok(state) => {
            let _ = started.send(Ok(()));
            state
        }
        Err(why) => {
            let _ = started.send(Err(why));
            return;
        }
    };
    let served = TaskServer::<W, C>::new(codec);
    for job in jobs.iter() {
        if counters.stopping.load(Ordering::SeqCst) {
            // Stopped: neither run nor acknowledged, it goes to another
            // worker.
            break;
        }
        let Job {
            cell,
            client,
            input,
            done,
        } = job;
        if cell.cancel.load(Ordering::Acquire) || cell.deadline_passed(Instant::now()) {
            counters.skipped.fetch_add(1, Ordering::Relaxed);
            done.put((cell.id, SKIPPED, Vec::new()), jobs.is_empty());
            continue;
        }
        let outgoing = Arc::new(Outgoing::default());
        let sink = |value: W::Progress| {
            if let Ok(bytes) = nats::encode(codec, &value, "progress") {
                let payload = bytes::Bytes::from(frame::progress(cell.id, &bytes));
                if outgoing.put(payload) {
                    let outgoing = Arc::clone(&outgoing);
                    let nats = progress.client.clone();
                    let subject = progress.names.progress(client);
                    drop(progress.handle.spawn(async move {
                        while let Some(payload) = outgoing.next() {
                            let _ = nats.publish(subject.clone(), payload).await;
                        }
                    }));
                }
            }
        };
        let invoked = served.run(&mut state, &cell, &input, &sink);
        // The task's last progress goes out before its result.
        outgoing.drained(PROGRESS_DRAIN);
        let counter = match &invoked {
            Invoked::Value(_) => Some(&counters.succeeded),
            Invoked::Failed(_) => Some(&counters.failed),
            Invoked::Panicked(_) => Some(&counters.panicked),
            Invoked::BadInput(_) => Some(&counters.garbage),
            Invoked::Unencodable(_) => None,
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let panicked = invoked.panicked();
        let (answer, body) = invoked.into_frame();
        done.put((cell.id, frame::kind(answer), body), jobs.is_empty());
        if panicked {
            // The state may be broken: start it again.
            match start(args.clone()) {
                Ok(fresh) => {
                    let old = std::mem::replace(&mut state, fresh);
                    let _ = unwind::catch(move || drop(old));
                }
                Err(why) => {
                    tracing::error!(target: "isolates", %why, "a remote worker could not restart: its thread ends");
                    return;
                }
            }
        }
    }
    let _ = unwind::catch(move || drop(state));
}

/// A job the worker skipped: acknowledged, nothing sent.
const SKIPPED: u8 = u8::MAX;

/// How long a task's result waits for its last progress to be handed to
/// the NATS client.
const PROGRESS_DRAIN: Duration = Duration::from_secs(1);

/// A task's progress on its way out: the latest value not yet handed to
/// the NATS client, and whether a sender is at work. A task that reports
/// faster than the client takes its values keeps one waiting (the newest
/// replaces it) and one being published: its memory stays bounded.
#[derive(Default)]
struct Outgoing {
    state: Mutex<(Option<bytes::Bytes>, bool)>,
    idle: Condvar,
}

impl Outgoing {
    /// Puts the newest value; true if a sender must be started for it.
    fn put(&self, payload: bytes::Bytes) -> bool {
        let mut state = self.state.lock();
        state.0 = Some(payload);
        !std::mem::replace(&mut state.1, true)
    }

    /// The sender's next value; `None` (and the sender done) if none waits.
    fn next(&self) -> Option<bytes::Bytes> {
        let mut state = self.state.lock();
        let next = state.0.take();
        if next.is_none() {
            state.1 = false;
            self.idle.notify_all();
        }
        next
    }

    /// Waits up to `timeout` until every value was handed to the client.
    fn drained(&self, timeout: Duration) {
        let until = Instant::now() + timeout;
        let mut state = self.state.lock();
        while state.1 {
            if self.idle.wait_until(&mut state, until).timed_out() {
                return;
            }
        }
    }
}

async fn listen_cancels(
    mut cancels: async_nats::Subscriber,
    running: Arc<Mutex<Running>>,
    counters: Arc<Counters>,
) {
    while let Some(message) = cancels.next().await {
        let Some(key) = frame::parse_cancel(&message.payload) else {
            continue;
        };
        let mut running = running.lock();
        counters.cancels.fetch_add(1, Ordering::Relaxed);
        if let Some(cell) = running.cells.get(&key) {
            cell.cancel.store(true, Ordering::Release);
        }
        if running.cancelled.insert(key) {
            running.order.push_back(key);
            if running.order.len() > CANCELLED_KEEP
                && let Some(old) = running.order.pop_front()
            {
                running.cancelled.remove(&old);
            }
        }
    }
}

/// The pull loop and what each task needs from it.
struct Pull {
    client: async_nats::Client,
    names: Names,
    counters: Arc<Counters>,
    running: Arc<Mutex<Running>>,
    jobs: crossbeam_channel::Sender<Job>,
    ack_wait: Duration,
    give_up: Duration,
    batch: usize,
}

impl Pull {
    async fn run(
        self,
        consumer: async_nats::jetstream::consumer::Consumer<
            async_nats::jetstream::consumer::pull::Config,
        >,
    ) {
        let this = Arc::new(self);
        // At most `batch` batches held here at once: the rest stay for
        // other workers.
        let permits = Arc::new(tokio::sync::Semaphore::new(this.batch));
        loop {
            let messages = consumer
                .stream()
                .max_messages_per_batch(this.batch)
                .heartbeat(Duration::from_secs(5))
                .expires(Duration::from_secs(30))
                .messages()
                .await;
            let mut messages = match messages {
                Ok(messages) => messages,
                Err(e) => {
                    tracing::debug!(target: "isolates", error = %e, "pulling tasks failed: trying again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            loop {
                let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                    return;
                };
                match messages.next().await {
                    Some(Ok(message)) => {
                        let this = Arc::clone(&this);
                        tokio::spawn(async move {
                            this.batch(message, permit).await;
                        });
                    }
                    Some(Err(e)) => {
                        tracing::debug!(target: "isolates", error = %e, "while pulling tasks");
                    }
                    None => break,
                }
            }
        }
    }

    /// One delivered batch, from receipt to acknowledgement. `permit` is
    /// its place among the batches this process takes at once: given back
    /// when the local runs of its tasks end, so that the next batch is
    /// pulled while the last results are delivered and acknowledged
    /// (round trips, not work).
    async fn batch(
        &self,
        message: async_nats::jetstream::Message,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        use async_nats::jetstream::AckKind;
        let counters = &self.counters;
        counters.batches.fetch_add(1, Ordering::Relaxed);
        let Some((client, tasks)) = frame::parse_tasks(&message.payload) else {
            counters.garbage.fetch_add(1, Ordering::Relaxed);
            let _ = message.ack_with(AckKind::Term).await;
            return;
        };
        let count = tasks.len() as u64;
        counters.received.fetch_add(count, Ordering::Relaxed);
        if message.info().is_ok_and(|info| info.delivered > 1) {
            counters.redelivered.fetch_add(count, Ordering::Relaxed);
        }
        let outbox = Arc::new(Outbox {
            ready: Mutex::new(Vec::new()),
            left: std::sync::atomic::AtomicUsize::new(tasks.len()),
            notify: tokio::sync::Notify::new(),
        });
        let mut left = 0usize;
        for (id, deadline_ms, input) in tasks {
            let key = (client, id);
            let deadline = (deadline_ms != frame::NO_DEADLINE)
                .then(|| Instant::now().checked_add(Duration::from_millis(deadline_ms)))
                .flatten();
            let cell = Arc::new(TaskCell::new(id, deadline));
            {
                let mut running = self.running.lock();
                if running.cancelled.contains(&key) {
                    cell.cancel.store(true, Ordering::Release);
                }
                running.cells.insert(key, Arc::clone(&cell));
            }
            let job = Job {
                cell,
                client,
                input: message.payload.slice_ref(input),
                done: Arc::clone(&outbox),
            };
            if self.jobs.send(job).is_err() {
                self.running.lock().cells.remove(&key);
                break;
            }
            left += 1;
        }
        // Those never queued (the worker threads are gone) are not waited for.
        outbox
            .left
            .fetch_sub(count as usize - left, Ordering::AcqRel);
        let mut permit = Some(permit);
        // Its first tick one period from now: an interval's immediate first
        // tick still waits for the runtime timer's next millisecond, which
        // each batch's results would wait for.
        let every = self.ack_wait / 3;
        let mut alive = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut ready = Vec::new();
        let mut results = Vec::new();
        let mut finished = 0u64;
        // Results go out as soon as they are ready, without waiting for the
        // client to confirm the ones before (the batch's acknowledgement
        // waits for all confirmations, the client's next tasks do not).
        let mut sending = futures_util::stream::FuturesUnordered::new();
        while left > 0 || !sending.is_empty() {
            tokio::select! {
                () = outbox.notify.notified(), if left > 0 => {
                    self.linger(&outbox).await;
                    ready.append(&mut outbox.ready.lock());
                    for answer in ready.drain(..) {
                        left -= 1;
                        self.take(client, answer, &mut results, &mut finished);
                    }
                    // No worker thread is left to finish the others (each
                    // queued job holds the outbox; the channel drops them
                    // when the last thread ends).
                    if left > 0 && Arc::strong_count(&outbox) == 1 {
                        left = 0;
                    }
                    if left == 0 {
                        drop(permit.take());
                    }
                    let max = self.client.server_info().max_payload;
                    for part in under_max_payload(std::mem::take(&mut results), max) {
                        sending.push(self.deliver(&message, client, part));
                    }
                }
                delivered = sending.next(), if !sending.is_empty() => {
                    if delivered == Some(false) {
                        return;
                    }
                }
                _ = alive.tick() => {
                    let _ = message.ack_with(AckKind::Progress).await;
                    // Looks again (the worker threads may be gone).
                    outbox.notify.notify_one();
                }
            }
        }
        drop(permit);
        if finished < count {
            // No worker thread is left to run them: another process may
            // (the client ignores the results it already has).
            let _ = message.ack_with(AckKind::Nak(None)).await;
            return;
        }
        let _ = message.ack().await;
    }

    /// A task's local run ended: it leaves the running set, and its result
    /// waits to be sent (none for a skipped task).
    fn take(
        &self,
        client: u64,
        (id, kind, body): (u64, u8, Vec<u8>),
        ready: &mut Vec<(u64, u8, Vec<u8>)>,
        finished: &mut u64,
    ) {
        self.running.lock().cells.remove(&(client, id));
        *finished += 1;
        if kind != SKIPPED {
            ready.push((id, kind, body));
        }
    }

    /// After a wake-up, lets the results that follow close behind join
    /// those waiting: while the batch's tasks are not all finished and some
    /// wait for a worker thread (so more results come soon), parked until a
    /// worker thread says so, for at most [`RESULTS_LINGER_MAX`] (rounded up
    /// to the runtime timer's millisecond).
    async fn linger(&self, outbox: &Outbox) {
        let until = tokio::time::Instant::now() + RESULTS_LINGER_MAX;
        while outbox.left.load(Ordering::Acquire) > 0 && !self.jobs.is_empty() {
            if tokio::time::timeout_at(until, outbox.notify.notified())
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// Sends results to their client as one request, again until it
    /// confirms; false once given up (the batch was terminated or given
    /// back).
    async fn deliver(
        &self,
        message: &async_nats::jetstream::Message,
        client: u64,
        ready: Vec<(u64, u8, Vec<u8>)>,
    ) -> bool {
        use async_nats::jetstream::AckKind;
        let result = bytes::Bytes::from(frame::results(&ready));
        let results = ready.len() as u64;
        drop(ready);
        let subject = self.names.results(client);
        let started = Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            match self.client.request(subject.clone(), result.clone()).await {
                Ok(_) => return true,
                Err(e) => {
                    let gone = e.kind() == async_nats::RequestErrorKind::NoResponders;
                    if started.elapsed() >= self.give_up {
                        if gone {
                            // Its client is gone: nobody will take them.
                            self.counters.orphaned.fetch_add(results, Ordering::Relaxed);
                            let _ = message.ack_with(AckKind::Term).await;
                        } else {
                            let _ = message.ack_with(AckKind::Nak(None)).await;
                        }
                        return false;
                    }
                    let _ = message.ack_with(AckKind::Progress).await;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

/// Room a results message takes beside its results: its header (a
/// request carries no NATS headers).
const RESULTS_ROOM: usize = 8;

/// Results in messages under the server's `max_payload` (0: unknown, one
/// message): packed in order while they fit; a result too big for a
/// message of its own is replaced by an error that says so (the client
/// resolves its task with it), since the server would refuse it every
/// time and the task would run again after each give-up.
fn under_max_payload(results: Vec<Answer>, max: usize) -> Vec<Vec<Answer>> {
    let limit = if max == 0 {
        usize::MAX
    } else {
        max.saturating_sub(RESULTS_ROOM)
    };
    let size = |body: &[u8]| 13 + body.len();
    let mut parts = Vec::new();
    let mut part = Vec::new();
    let mut bytes = 0;
    for (id, kind, body) in results {
        let (kind, body) = if size(&body) > limit {
            let why = format!(
                "the result is {} bytes, over the NATS server's max_payload of {max}: it cannot \
                 be sent (raise max_payload, or return less)",
                body.len()
            );
            // Cut to fit where even the text would not.
            let mut why = why.into_bytes();
            why.truncate(limit.saturating_sub(size(&[])));
            (frame::UNENCODABLE, why)
        } else {
            (kind, body)
        };
        if !part.is_empty() && bytes + size(&body) > limit {
            parts.push(std::mem::take(&mut part));
            bytes = 0;
        }
        bytes += size(&body);
        part.push((id, kind, body));
    }
    if !part.is_empty() {
        parts.push(part);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[test]
    fn results_are_split_under_max_payload_and_one_too_big_becomes_an_error() {
        let results = vec![
            (1, frame::VALUE, vec![1; 3000]),
            (2, frame::VALUE, vec![2; 3000]),
            (3, frame::VALUE, vec![3; 20_000]),
            (4, frame::VALUE, vec![4; 10]),
        ];
        let ids = |parts: &[Vec<Answer>]| -> Vec<Vec<u64>> {
            parts
                .iter()
                .map(|p| p.iter().map(|r| r.0).collect())
                .collect()
        };
        // The third is too big alone: an error in its place, which fits.
        let parts = under_max_payload(results.clone(), 8192);
        assert_eq!(ids(&parts), [vec![1, 2, 3, 4]]);
        assert_eq!(parts[0][2].1, frame::UNENCODABLE);
        assert!(String::from_utf8_lossy(&parts[0][2].2).contains("max_payload of 8192"));
        assert_eq!(parts[0][3].2, vec![4; 10]);
        // Three that fit one at a time but not together: two messages.
        let three: Vec<Answer> = (1..=3)
            .map(|id| (id, frame::VALUE, vec![0; 3000]))
            .collect();
        let parts = under_max_payload(three, 8192);
        assert_eq!(ids(&parts), [vec![1, 2], vec![3]]);
        for part in &parts {
            assert!(frame::results(part).len() <= 8192);
        }
        // A result that fills a message alone still goes.
        let full = vec![(9, frame::VALUE, vec![0; 8192 - RESULTS_ROOM - 13])];
        let parts = under_max_payload(full, 8192);
        assert_eq!(parts[0][0].1, frame::VALUE);
        assert_eq!(frame::results(&parts[0]).len(), 8192);
        assert_eq!(
            under_max_payload(results, 0).len(),
            1,
            "no limit known: one message"
        );
    }

    fn woken(outbox: &Outbox) -> bool {
        outbox.notify.notified().now_or_never().is_some()
    }

    /// A worker thread wakes the batch's task for the first result waiting,
    /// when no task waits for a thread, and for the batch's last; the
    /// results between join those waiting without a wake-up.
    #[test]
    fn the_outbox_wakes_its_batch_only_when_worth_it() {
        let outbox = |left| Outbox {
            ready: Mutex::new(Vec::new()),
            left: std::sync::atomic::AtomicUsize::new(left),
            notify: tokio::sync::Notify::new(),
        };
        let batch = outbox(3);
        batch.put((1, frame::VALUE, Vec::new()), false);
        assert!(woken(&batch), "the first result waiting wakes");
        batch.put((2, frame::VALUE, Vec::new()), false);
        assert!(!woken(&batch), "one more joins those waiting");
        batch.put((3, SKIPPED, Vec::new()), false);
        assert!(woken(&batch), "the batch's last wakes");
        assert_eq!(batch.left.load(Ordering::Acquire), 0);
        assert_eq!(batch.ready.lock().len(), 3);

        let batch = outbox(3);
        batch.put((1, frame::VALUE, Vec::new()), false);
        assert!(woken(&batch));
        batch.put((2, frame::VALUE, Vec::new()), true);
        assert!(woken(&batch), "no task waits for a thread: wakes");
        assert_eq!(batch.ready.lock().drain(..).count(), 2);
    }
}
