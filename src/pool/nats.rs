//! The client side: a pool built with `PoolBuilder::nats` keeps its queue
//! (priorities, cancellation and deadlines of queued tasks) and gives each
//! of its slots a [`RemoteSlot`] that carries one task at a time over NATS:
//! publish to the pool's stream, wait for the result, resolve the handle.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use futures_util::StreamExt;
use parking_lot::Mutex;

use super::Worker;
use super::task::{CodecSet, ErrorKind, Outcome, TaskCell};
use super::wire::WorkerWire;
use crate::backend::CodecWire;
use crate::backend::nats::bridge::Bridge;
use crate::backend::nats::{self, Link, Names, NatsOptions, frame};
use crate::codec::Codec;
use crate::error::RemoteError;
use crate::invoke::Invoked;

/// How often a slot waiting for a result looks at its task's cancellation
/// and deadline and at the connection.
const POLL: Duration = Duration::from_millis(20);

/// The longest wait between two publishes of a task the server did not
/// confirm.
const REPUBLISH_MAX: Duration = Duration::from_secs(1);

/// What the bridge tells a slot about its task.
enum Event {
    Published(Result<u64, String>),
    Progress(Vec<u8>),
    Result(u8, Vec<u8>),
}

/// Where each task's events go, by task id.
#[derive(Default)]
struct Routes {
    slots: Mutex<HashMap<u64, Sender<(u64, Event)>>>,
    /// Results for tasks no slot waits for any more: a second delivery,
    /// or a task resolved meanwhile.
    duplicates: AtomicU64,
}

impl Routes {
    fn send(&self, id: u64, event: Event) -> bool {
        let slot = self.slots.lock().get(&id).cloned();
        slot.is_some_and(|slot| slot.send((id, event)).is_ok())
    }
}

/// A pool's connection, shared by its slots.
pub(crate) struct Client<W: Worker> {
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    stream: async_nats::jetstream::stream::Stream,
    names: Names,
    id: u64,
    routes: Arc<Routes>,
    link: Arc<Link>,
    options: NatsOptions,
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
            let routes = Arc::clone(&routes);
            async move {
                let client =
                    nats::connect(&options, format!("isolates {} client", names.stream), link)
                        .await?;
                let js = async_nats::jetstream::new(client.clone());
                let stream = nats::stream(&js, &names).await?;
                let closed = |e: async_nats::SubscribeError| RemoteError::Closed(e.to_string());
                let results = client.subscribe(names.results(id)).await.map_err(closed)?;
                let progress = client.subscribe(names.progress(id)).await.map_err(closed)?;
                // The subscriptions reach the server before the first task.
                client
                    .flush()
                    .await
                    .map_err(|e| RemoteError::Closed(e.to_string()))?;
                Ok::<_, RemoteError>((client, js, stream, results, progress, routes))
            }
        };
        let budget = options.connect_timeout * 2 + Duration::from_secs(10);
        let (client, js, stream, results, progress, _) = bridge.run(setup, budget)??;
        bridge.spawn(listen(
            client.clone(),
            results,
            progress,
            Arc::clone(&routes),
        ));
        Ok(Arc::new(Client {
            client,
            js,
            stream,
            names,
            id,
            routes,
            link,
            options: options.clone(),
            wire: Arc::new(CodecWire(codec)),
            bridge,
        }))
    }

    /// A slot's end of the connection.
    pub(crate) fn slot(self: &Arc<Self>) -> RemoteSlot<W> {
        let (tx, rx) = crossbeam_channel::unbounded();
        RemoteSlot {
            client: Arc::clone(self),
            tx,
            rx,
        }
    }

    fn publish(&self, id: u64, payload: Vec<u8>, reply: Sender<(u64, Event)>) {
        let js = self.js.clone();
        let subject = self.names.tasks.clone();
        let mut headers = async_nats::HeaderMap::new();
        // JetStream drops a second copy of a task published again after a
        // lost confirmation.
        headers.insert("Nats-Msg-Id", format!("{:016x}-{id}", self.id).as_str());
        self.bridge.spawn(async move {
            let published = match js
                .publish_with_headers(subject, headers, payload.into())
                .await
            {
                Ok(ack) => ack.await.map(|ack| ack.sequence).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let _ = reply.send((id, Event::Published(published)));
        });
    }

    /// Tells the workers to stop task `id`, and removes it from the stream
    /// if it is still there.
    fn cancel(&self, id: u64, sequence: Option<u64>) {
        let client = self.client.clone();
        let stream = self.stream.clone();
        let subject = self.names.cancel();
        let payload = frame::cancel(self.id, id);
        self.bridge.spawn(async move {
            let _ = client.publish(subject, payload.into()).await;
            if let Some(sequence) = sequence {
                let _ = stream.delete_message(sequence).await;
            }
        });
    }
}

impl<W: Worker> Drop for Client<W> {
    fn drop(&mut self) {
        // Sends what is buffered before the runtime stops.
        let client = self.client.clone();
        let _ = self
            .bridge
            .run(async move { client.flush().await }, Duration::from_secs(2));
    }
}

/// Routes results and progress to the slots; confirms every result, a
/// duplicate too, so its worker acknowledges the task.
async fn listen(
    client: async_nats::Client,
    mut results: async_nats::Subscriber,
    mut progress: async_nats::Subscriber,
    routes: Arc<Routes>,
) {
    loop {
        tokio::select! {
            message = results.next() => {
                let Some(message) = message else { return };
                if let Some((id, kind, body)) = frame::parse_result(&message.payload)
                    && !routes.send(id, Event::Result(kind, body.to_vec()))
                {
                    routes.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(reply) = message.reply {
                    let _ = client.publish(reply, bytes::Bytes::new()).await;
                }
            }
            message = progress.next() => {
                let Some(message) = message else { return };
                if let Some((id, body)) = frame::parse_progress(&message.payload) {
                    routes.send(id, Event::Progress(body.to_vec()));
                }
            }
        }
    }
}

/// One pool slot's way to run a task remotely.
pub(crate) struct RemoteSlot<W: Worker> {
    client: Arc<Client<W>>,
    tx: Sender<(u64, Event)>,
    rx: Receiver<(u64, Event)>,
}

impl<W: Worker> RemoteSlot<W> {
    /// Carries one task to a worker and back: its outcome, and whether the
    /// slot must be replaced (never: a remote worker replaces itself).
    pub(crate) fn run(
        &mut self,
        input: &W::Input,
        cell: &TaskCell,
        codecs: &CodecSet<W>,
    ) -> (Outcome, bool) {
        let outcome = self.carry(input, cell, codecs);
        self.client.routes.slots.lock().remove(&cell.id);
        (outcome, false)
    }

    fn carry(&mut self, input: &W::Input, cell: &TaskCell, codecs: &CodecSet<W>) -> Outcome {
        let client = &*self.client;
        let bytes = match client.wire.encode_input(input) {
            Ok(bytes) => bytes,
            Err(e) => return Outcome::Error(ErrorKind::Codec(e)),
        };
        let deadline_ms = cell.deadline.map_or(frame::NO_DEADLINE, |d| {
            let left = d.saturating_duration_since(Instant::now());
            u64::try_from(left.as_millis()).unwrap_or(frame::NO_DEADLINE - 1)
        });
        let payload = frame::task(client.id, cell.id, deadline_ms, &bytes);
        drop(bytes);
        client.routes.slots.lock().insert(cell.id, self.tx.clone());
        client.publish(cell.id, payload.clone(), self.tx.clone());
        let mut sequence = None;
        let mut publishing = true;
        let mut republish_at: Option<Instant> = None;
        let mut pause = Duration::from_millis(50);
        loop {
            match self.rx.recv_timeout(POLL) {
                Ok((id, _)) if id != cell.id => continue, // an earlier task's
                Ok((_, Event::Published(Ok(seq)))) => {
                    publishing = false;
                    sequence = Some(seq);
                }
                Ok((_, Event::Published(Err(why)))) => {
                    publishing = false;
                    tracing::debug!(target: "isolates", %why, "a task was not confirmed by the NATS server: publishing it again");
                    republish_at = Some(Instant::now() + pause);
                    pause = (pause * 2).min(REPUBLISH_MAX);
                }
                Ok((_, Event::Progress(body))) => {
                    if let Ok(value) = client.wire.decode_progress(&body)
                        && let Ok(packed) = codecs.progress.pack(value, "progress")
                    {
                        cell.push_progress(packed.envelope.erase());
                    }
                }
                Ok((_, Event::Result(kind, body))) => return self.outcome(kind, &body, codecs),
                Err(_) => {}
            }
            let now = Instant::now();
            if cell.check_deadline(now) || cell.deadline_passed(now) {
                client.cancel(cell.id, sequence);
                return Outcome::Error(ErrorKind::TimedOut);
            }
            if cell.cancel.load(Ordering::Acquire) {
                client.cancel(cell.id, sequence);
                return Outcome::Error(ErrorKind::Cancelled);
            }
            if let Some(down) = client.link.down_for()
                && down >= client.options.disconnect_timeout
            {
                return Outcome::Error(ErrorKind::WorkerLost(format!(
                    "the NATS server at {} has been unreachable for {down:?} \
                     (the disconnect timeout): the task may still run there",
                    client.options.url
                )));
            }
            if !publishing && republish_at.is_some_and(|at| now >= at) {
                republish_at = None;
                publishing = true;
                client.publish(cell.id, payload.clone(), self.tx.clone());
            }
        }
    }

    fn outcome(&self, kind: u8, body: &[u8], codecs: &CodecSet<W>) -> Outcome {
        let wire = &self.client.wire;
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
}
