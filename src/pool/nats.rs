//! The client side: a pool built with `PoolBuilder::nats` keeps its queue
//! (priorities, cancellation and deadlines of queued tasks) and has one
//! worker thread, whose [`RemoteSlot`] hands tasks over to the bridge, in
//! priority order, as long as fewer than `in_flight` are out.
//!
//! The bridge thread does the rest for all tasks: it publishes the tasks
//! handed over while earlier ones waited for the server's confirmation as
//! one batch (one stored message), resolves each task from its result (a
//! results message carries several), and sends a cancel notice as soon as
//! a task is cancelled or times out (a hook on the task, run by whoever
//! resolved it: nothing polls for it). A task's in-flight place comes back
//! when it resolves, however it does.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use parking_lot::{Condvar, Mutex};

use super::Worker;
use super::task::{CodecSet, ErrorKind, Outcome, TaskCell};
use super::wire::WorkerWire;
use crate::backend::CodecWire;
use crate::backend::nats::bridge::Bridge;
use crate::backend::nats::{self, Link, Names, NatsOptions, frame};
use crate::codec::Codec;
use crate::error::{CodecError, RemoteError};
use crate::invoke::Invoked;
use crate::pool::task::TaskState;

/// How often the bridge looks at a connection that is down, until the
/// disconnect timeout fails the tasks out (never while it is up).
const LINK_POLL: Duration = Duration::from_secs(1);

/// The longest wait between two publishes of a batch the server did not
/// confirm.
const REPUBLISH_MAX: Duration = Duration::from_secs(1);

/// How many batches may wait for the server's confirmation at once.
const UNCONFIRMED: usize = 1;

/// A batch grows no larger than this many bytes (a task larger than that
/// goes alone).
const BATCH_BYTES: usize = 256 << 10;
/// Room kept in a message beside a task's input: the batch's header and the
/// task's id, deadline and length, and the message's headers.
const TASK_FRAME: usize = 256;
/// Room kept in a batch's message for its headers (`Nats-Msg-Id`).
const HEADERS_ROOM: usize = 128;

/// What the bridge tells a task's route.
enum Event {
    Progress(bytes::Bytes),
    Result(u8, bytes::Bytes),
    /// The connection has been down for the disconnect timeout.
    Lost(String),
    /// Its input, framed, is over the server's `max_payload`: it can never
    /// be published.
    TooLarge {
        size: usize,
        limit: usize,
    },
}

/// What becomes of a task handed over: its events, until it resolves.
type Deliver = Arc<dyn Fn(Event) + Send + Sync>;

/// Counts a resolved task in its pool's counters.
pub(crate) type Count = Arc<dyn Fn(&Outcome) + Send + Sync>;

/// What the pool's thread hands to the bridge.
enum Command {
    /// Tasks handed over together.
    Submit(Vec<Submit>),
    Cancel(u64),
}

/// Where each task's events go, by task id.
#[derive(Default)]
struct Routes {
    tasks: Mutex<HashMap<u64, Deliver>>,
    /// Results for tasks no route waits for any more: a second delivery,
    /// or a task resolved meanwhile.
    duplicates: AtomicU64,
}

impl Routes {
    /// Progress goes to a task still out; a result or a loss ends its
    /// route (once: a second result finds none).
    fn send(&self, id: u64, event: Event) -> bool {
        let route = match event {
            Event::Progress(_) => self.tasks.lock().get(&id).cloned(),
            _ => self.tasks.lock().remove(&id),
        };
        route.map(|deliver| deliver(event)).is_some()
    }

    fn waits_for_any(&self, ids: &[u64]) -> bool {
        let tasks = self.tasks.lock();
        ids.iter().any(|id| tasks.contains_key(id))
    }
}

/// The pool's in-flight places: its worker thread waits for one before
/// it takes a task from the queue; a task's comes back when it resolves.
struct Places {
    free: Mutex<usize>,
    given_back: Condvar,
    out: Mutex<usize>,
    drained: Condvar,
}

impl Places {
    fn try_take(&self) -> bool {
        let mut free = self.free.lock();
        if *free == 0 {
            return false;
        }
        *free -= 1;
        true
    }

    fn take(&self) {
        let mut free = self.free.lock();
        while *free == 0 {
            self.given_back.wait(&mut free);
        }
        *free -= 1;
    }

    fn give_back(&self) {
        *self.free.lock() += 1;
        self.given_back.notify_one();
    }
}

/// A pool's connection, shared by its slots.
pub(crate) struct Client<W: Worker> {
    client: async_nats::Client,
    commands: tokio::sync::mpsc::UnboundedSender<Command>,
    routes: Arc<Routes>,
    places: Arc<Places>,
    batch: usize,
    wire: Arc<dyn WorkerWire<W>>,
    /// Last: stopping it ends the tasks that hold the rest.
    bridge: Bridge,
}

impl<W: Worker> Client<W> {
    /// Connects (within the connect timeout), sets up the pool's stream
    /// and listens for results.
    pub(crate) fn connect<C: Codec>(
        options: &NatsOptions,
        name: &str,
        codec: C,
    ) -> Result<Arc<Self>, RemoteError> {
        let names = Names::new(name)?;
        let bridge = Bridge::start(name)?;
        let link = Arc::new(Link::default());
        let id = nats::random_id();
        let routes = Arc::new(Routes::default());
        let setup = {
            let options = options.clone();
            let names = names.clone();
            let link = Arc::clone(&link);
            async move {
                let client =
                    nats::connect(&options, format!("isolates {} client", names.stream), link)
                        .await?;
                let js = async_nats::jetstream::new(client.clone());
                nats::stream(&js, &names).await?;
                let closed = |e: async_nats::SubscribeError| RemoteError::Closed(e.to_string());
                let results = client.subscribe(names.results(id)).await.map_err(closed)?;
                let progress = client.subscribe(names.progress(id)).await.map_err(closed)?;
                // The subscriptions reach the server before the first task.
                client
                    .flush()
                    .await
                    .map_err(|e| RemoteError::Closed(e.to_string()))?;
                Ok::<_, RemoteError>((client, js, results, progress))
            }
        };
        let budget = options.connect_timeout * 2 + Duration::from_secs(10);
        let (client, js, results, progress) = bridge.run(setup, budget)??;
        bridge.spawn(listen(
            client.clone(),
            results,
            progress,
            Arc::clone(&routes),
        ));
        bridge.spawn(watch_link(
            Arc::clone(&link),
            Arc::clone(&routes),
            options.clone(),
        ));
        let (commands, commands_rx) = tokio::sync::mpsc::unbounded_channel();
        bridge.spawn(
            Batcher {
                client: client.clone(),
                js,
                names,
                id,
                routes: Arc::clone(&routes),
                batch: options.batch,
                places: Arc::new(tokio::sync::Semaphore::new(UNCONFIRMED)),
                sequence: 0,
                again: commands.downgrade(),
            }
            .run(commands_rx),
        );
        Ok(Arc::new(Client {
            client,
            commands,
            routes,
            places: Arc::new(Places {
                free: Mutex::new(options.in_flight),
                given_back: Condvar::new(),
                out: Mutex::new(0),
                drained: Condvar::new(),
            }),
            batch: options.batch,
            wire: Arc::new(CodecWire(codec)),
            bridge,
        }))
    }

    /// The worker thread's end of the connection.
    pub(crate) fn slot(self: &Arc<Self>) -> RemoteSlot<W> {
        RemoteSlot {
            client: Arc::clone(self),
            holding: false,
            handed: Vec::new(),
        }
    }
}

impl<W: Worker> Drop for Client<W> {
    fn drop(&mut self) {
        // Never while a task is out (its route holds the pool), but a
        // handle must not wait for nothing.
        let routes = std::mem::take(&mut *self.routes.tasks.lock());
        for (_, deliver) in routes {
            deliver(Event::Lost("the pool's NATS client closed".into()));
        }
        // Sends what is buffered before the runtime stops.
        let client = self.client.clone();
        let _ = self
            .bridge
            .run(async move { client.flush().await }, Duration::from_secs(2));
    }
}

/// The bridge's sending side: batches of tasks, cancel notices.
struct Batcher {
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    names: Names,
    id: u64,
    routes: Arc<Routes>,
    batch: usize,
    /// Places for batches the server has not confirmed yet: while they
    /// are taken, tasks handed over wait and go together.
    places: Arc<tokio::sync::Semaphore>,
    sequence: u64,
    /// Hands the tasks of a batch that can no longer go as it is back to
    /// be batched again (weak: the channel still closes with the pool).
    again: tokio::sync::mpsc::WeakUnboundedSender<Command>,
}

/// One task handed over to be sent.
struct Submit {
    id: u64,
    deadline_ms: u64,
    input: Vec<u8>,
}

impl Batcher {
    /// Takes what the slots hand over. A task goes out at once when a
    /// place for an unconfirmed batch is free; while none is, the tasks
    /// handed over meanwhile wait, and go out together (up to the batch's
    /// size) as soon as one is. Cancel notices never wait.
    async fn run(mut self, mut commands: tokio::sync::mpsc::UnboundedReceiver<Command>) {
        let mut queue = VecDeque::new();
        loop {
            if queue.is_empty() {
                match commands.recv().await {
                    None => return,
                    Some(command) => self.take(command, &mut queue).await,
                }
                continue;
            }
            let place = loop {
                tokio::select! {
                    biased;
                    place = Arc::clone(&self.places).acquire_owned() => match place {
                        Ok(place) => break place,
                        Err(_) => return,
                    },
                    command = commands.recv() => match command {
                        None => return,
                        Some(command) => self.take(command, &mut queue).await,
                    },
                }
            };
            while let Ok(command) = commands.try_recv() {
                self.take(command, &mut queue).await;
            }
            let mut batch = frame::Tasks::new(self.id);
            // A message is at most the server's max_payload: a batch stays
            // under it, and a task that cannot fit alone resolves with
            // an error instead of being published again and again.
            let max = self.client.server_info().max_payload;
            let fits = if max == 0 {
                BATCH_BYTES
            } else {
                max.saturating_sub(TASK_FRAME)
            };
            let mut too_large = Vec::new();
            {
                let tasks = self.routes.tasks.lock();
                while let Some(task) = queue.front() {
                    let full = batch.len() >= self.batch
                        || batch.bytes() + task.input.len() > BATCH_BYTES.min(fits);
                    if batch.len() > 0 && full {
                        break;
                    }
                    let Some(task) = queue.pop_front() else { break };
                    if task.input.len() > fits {
                        too_large.push((task.id, task.input.len() + TASK_FRAME));
                        continue;
                    }
                    // Not one resolved meanwhile (cancelled, timed out).
                    if tasks.contains_key(&task.id) {
                        batch.push(task.id, task.deadline_ms, &task.input);
                    }
                }
            }
            for (id, size) in too_large {
                self.routes.send(id, Event::TooLarge { size, limit: max });
            }
            if batch.len() > 0 {
                self.publish(batch, place).await;
            }
        }
    }

    /// A cancel notice goes out now; a task joins the queue.
    async fn take(&self, command: Command, queue: &mut VecDeque<Submit>) {
        match command {
            Command::Cancel(task) => {
                let payload = frame::cancel(self.id, task);
                let _ = self
                    .client
                    .publish(self.names.cancel(), payload.into())
                    .await;
            }
            Command::Submit(tasks) => queue.extend(tasks),
        }
    }

    /// Publishes a batch; its confirmation is awaited on its own task,
    /// which publishes it again (same message id: the server keeps one
    /// copy) until the server confirms it or no slot waits for its tasks,
    /// and then gives back its `place`.
    async fn publish(&mut self, batch: frame::Tasks, place: tokio::sync::OwnedSemaphorePermit) {
        self.sequence += 1;
        let (payload, ids) = batch.finish();
        let payload = bytes::Bytes::from(payload);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            "Nats-Msg-Id",
            format!("{:016x}-{}", self.id, self.sequence).as_str(),
        );
        let subject = self.names.tasks.clone();
        let js = self.js.clone();
        let routes = Arc::clone(&self.routes);
        let client = self.client.clone();
        let again = self.again.clone();
        let first = js
            .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
            .await;
        tokio::spawn(async move {
            let _place = place;
            let mut attempt = first;
            let mut pause = Duration::from_millis(50);
            loop {
                let why = match attempt {
                    Ok(ack) => match ack.await {
                        Ok(_) => return,
                        Err(e) => e.to_string(),
                    },
                    Err(e) => e.to_string(),
                };
                tracing::debug!(target: "isolates", %why, "a batch of tasks was not confirmed by the NATS server: publishing it again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(REPUBLISH_MAX);
                if !routes.waits_for_any(&ids) {
                    return;
                }
                let max = client.server_info().max_payload;
                if max != 0 && payload.len() + HEADERS_ROOM > max {
                    // The server came back with a lower max_payload: the
                    // batch can never go as it is. Its tasks still waiting
                    // are batched again under the new limit (one too big
                    // alone resolves `TooLarge` there), and the place goes
                    // back.
                    let tasks = frame::parse_tasks(&payload).map(|(_, tasks)| {
                        tasks
                            .into_iter()
                            .filter(|(id, ..)| routes.waits_for_any(&[*id]))
                            .map(|(id, deadline_ms, input)| Submit {
                                id,
                                deadline_ms,
                                input: input.to_vec(),
                            })
                            .collect::<Vec<_>>()
                    });
                    if let (Some(tasks), Some(again)) = (tasks, again.upgrade()) {
                        let _ = again.send(Command::Submit(tasks));
                    }
                    return;
                }
                attempt = js
                    .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                    .await;
            }
        });
    }
}

/// Routes results and progress to the slots; confirms every results
/// message, duplicates too, so its worker acknowledges the batch.
async fn listen(
    client: async_nats::Client,
    mut results: async_nats::Subscriber,
    mut progress: async_nats::Subscriber,
    routes: Arc<Routes>,
) {
    loop {
        tokio::select! {
            // Progress first when both are there: a task's last progress
            // goes out before its result, and must reach the handle before
            // the result ends the task's route.
            biased;
            message = progress.next() => {
                let Some(message) = message else { return };
                if let Some((id, body)) = frame::parse_progress(&message.payload) {
                    routes.send(id, Event::Progress(message.payload.slice_ref(body)));
                }
            }
            message = results.next() => {
                let Some(message) = message else { return };
                for (id, kind, body) in frame::parse_results(&message.payload).unwrap_or_default() {
                    if !routes.send(id, Event::Result(kind, message.payload.slice_ref(body))) {
                        routes.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if let Some(reply) = message.reply {
                    let _ = client.publish(reply, bytes::Bytes::new()).await;
                }
            }
        }
    }
}

/// Fails the tasks out once the server has been unreachable for the
/// disconnect timeout (they may still run there); wakes only while the
/// connection is down.
async fn watch_link(link: Arc<Link>, routes: Arc<Routes>, options: NatsOptions) {
    loop {
        link.changed.notified().await;
        while let Some(down) = link.down_for() {
            if down >= options.disconnect_timeout {
                let lost = std::mem::take(&mut *routes.tasks.lock());
                for (_, deliver) in lost {
                    deliver(Event::Lost(format!(
                        "the NATS server at {} has been unreachable for {down:?} \
                         (the disconnect timeout): the task may still run there",
                        options.url
                    )));
                }
            }
            let left = options.disconnect_timeout.saturating_sub(down);
            tokio::time::sleep(left.clamp(Duration::from_millis(10), LINK_POLL)).await;
        }
    }
}

/// The pool worker thread's way to run tasks remotely.
pub(crate) struct RemoteSlot<W: Worker> {
    client: Arc<Client<W>>,
    /// Whether this thread holds an in-flight place not used yet.
    holding: bool,
    /// Tasks handed over and not yet given to the bridge: they go
    /// together, before this thread waits (for a place or a task).
    handed: Vec<Submit>,
}

impl<W: Worker> Drop for RemoteSlot<W> {
    /// A place taken and not used goes back: a slot's thread that leaves
    /// (its worker killed, the pool closed) holding one would lose it for
    /// good.
    fn drop(&mut self) {
        if self.holding {
            self.client.places.give_back();
        }
    }
}

impl<W: Worker> RemoteSlot<W> {
    /// Waits for an in-flight place, before the next task is taken from
    /// the queue (so the queue's order holds).
    pub(crate) fn place(&mut self) {
        if !self.holding {
            if !self.client.places.try_take() {
                self.flush();
                self.client.places.take();
            }
            self.holding = true;
        }
    }

    /// Gives the tasks handed over to the bridge: before this thread
    /// waits (for a place, or for a task when the queue is empty).
    pub(crate) fn flush(&mut self) {
        if !self.handed.is_empty() {
            let tasks = std::mem::take(&mut self.handed);
            let _ = self.client.commands.send(Command::Submit(tasks));
        }
    }

    /// Waits until every task handed over has resolved (the pool closed:
    /// the tasks out finish first).
    pub(crate) fn drain(&mut self) {
        self.flush();
        let places = &self.client.places;
        let mut out = places.out.lock();
        while *out > 0 {
            places.drained.wait(&mut out);
        }
    }

    /// Hands a task over to the bridge, with the place taken by
    /// [`place`](Self::place); the bridge resolves it and counts it with
    /// `count`.
    pub(crate) fn hand_over(
        &mut self,
        input: &W::Input,
        cell: &Arc<TaskCell>,
        codecs: &Arc<CodecSet<W>>,
        count: Count,
    ) {
        let client = &*self.client;
        self.holding = false;
        let resolve = {
            let count = Arc::clone(&count);
            move |cell: &TaskCell, outcome: Outcome| {
                count(&outcome);
                cell.returned();
                cell.resolve(outcome);
            }
        };
        let input = match client.wire.encode_input(input) {
            Ok(bytes) => bytes,
            Err(e) => {
                client.places.give_back();
                resolve(cell, Outcome::Error(ErrorKind::Codec(e)));
                return;
            }
        };
        let deadline_ms = cell.deadline.map_or(frame::NO_DEADLINE, |d| {
            let left = d.saturating_duration_since(Instant::now());
            u64::try_from(left.as_millis()).unwrap_or(frame::NO_DEADLINE - 1)
        });
        *client.places.out.lock() += 1;
        let deliver: Deliver = {
            let cell = Arc::clone(cell);
            let codecs = Arc::clone(codecs);
            let wire = Arc::clone(&client.wire);
            Arc::new(move |event| match event {
                Event::Progress(body) => {
                    if let Ok(value) = wire.decode_progress(&body)
                        && let Ok(packed) = codecs.progress.pack(value, "progress")
                    {
                        cell.push_progress(packed.envelope.erase());
                    }
                }
                Event::Result(kind, body) => {
                    resolve(&cell, outcome(&*wire, kind, &body, &codecs));
                }
                Event::Lost(why) => resolve(&cell, Outcome::Error(ErrorKind::WorkerLost(why))),
                Event::TooLarge { size, limit } => resolve(
                    &cell,
                    Outcome::Error(ErrorKind::Codec(CodecError::TooLarge { size, limit })),
                ),
            })
        };
        client.routes.tasks.lock().insert(cell.id, deliver);
        // Whoever resolves the task (its result, a cancel, the deadline
        // timer, a lost connection) gives its place back and ends its
        // route; a cancel or a deadline also tells the workers at once, in
        // the order of the cancels.
        let weak: Weak<TaskCell> = Arc::downgrade(cell);
        let commands = client.commands.clone();
        let routes = Arc::clone(&client.routes);
        let places = Arc::clone(&client.places);
        cell.on_resolve(Box::new(move |id| {
            let route = routes.tasks.lock().remove(&id);
            if let Some(cell) = weak.upgrade() {
                cell.returned();
                if route.is_some() && cell.cancel.load(Ordering::Acquire) {
                    let _ = commands.send(Command::Cancel(id));
                }
            }
            drop(route);
            places.give_back();
            let mut out = places.out.lock();
            *out -= 1;
            if *out == 0 {
                places.drained.notify_all();
            }
        }));
        if cell.state() != TaskState::Done {
            self.handed.push(Submit {
                id: cell.id,
                deadline_ms,
                input,
            });
            if self.handed.len() >= client.batch {
                self.flush();
            }
        }
    }
}

/// A task's outcome from its result.
fn outcome<W: Worker>(
    wire: &dyn WorkerWire<W>,
    kind: u8,
    body: &[u8],
    codecs: &CodecSet<W>,
) -> Outcome {
    let Some(answer) = frame::answer(kind) else {
        return Outcome::Error(ErrorKind::WorkerLost(format!(
            "a remote worker answered with an unknown result kind {kind}"
        )));
    };
    let invoked = Invoked::from_frame(answer, body).encode_with(
        |value| wire.decode_output(&value),
        |error| wire.decode_error(&error),
    );
    Outcome::from(invoked.pack(&codecs.output, &codecs.error))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A result delivered twice (a batch run again after its first worker
    /// died) resolves its task once; the second finds no route (the
    /// listener counts it a duplicate).
    #[test]
    fn a_second_result_for_a_task_is_a_duplicate() {
        let routes = Routes::default();
        let results = Arc::new(AtomicU64::new(0));
        let progress = Arc::new(AtomicU64::new(0));
        let deliver: Deliver = {
            let (results, progress) = (Arc::clone(&results), Arc::clone(&progress));
            Arc::new(move |event| match event {
                Event::Progress(_) => drop(progress.fetch_add(1, Ordering::Relaxed)),
                _ => drop(results.fetch_add(1, Ordering::Relaxed)),
            })
        };
        routes.tasks.lock().insert(5, deliver);
        assert!(routes.waits_for_any(&[4, 5]));
        assert!(routes.send(5, Event::Progress(bytes::Bytes::new())));
        assert!(routes.send(5, Event::Result(frame::VALUE, bytes::Bytes::new())));
        assert!(!routes.send(5, Event::Result(frame::VALUE, bytes::Bytes::new())));
        assert!(!routes.send(5, Event::Progress(bytes::Bytes::new())));
        assert_eq!(results.load(Ordering::Relaxed), 1);
        assert_eq!(progress.load(Ordering::Relaxed), 1);
        assert!(!routes.waits_for_any(&[4, 5]));
    }

    #[test]
    fn places_are_taken_and_given_back() {
        let places = Places {
            free: Mutex::new(1),
            given_back: Condvar::new(),
            out: Mutex::new(0),
            drained: Condvar::new(),
        };
        assert!(places.try_take());
        assert!(!places.try_take());
        places.give_back();
        places.take();
        assert!(!places.try_take());
    }
}
