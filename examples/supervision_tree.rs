//! A small service tree with crashing children: a root supervisor with an
//! order store, and a nested "workers" supervisor whose parser crashes on
//! bad input. It prints every supervision event, and checks at the end that
//! no order was lost although the parser crashed while orders were queued.
//!
//! `cargo run --release --example supervision_tree` (add `-- --short` for a
//! quick run, as CI does).

use std::time::Duration;

use isolates::Backoff;
use isolates::supervisor::{ChildSpec, Restart, Strategy, SupervisionEvent, Supervisor};
use isolates::{AskError, Context, Isolate, port};
use serde::{Deserialize, Serialize};

const T: Duration = Duration::from_secs(10);

/// Keeps the orders it is given; its state is the list.
struct Store {
    orders: Vec<u64>,
}

#[derive(Serialize, Deserialize)]
enum StoreMsg {
    Add(u64),
    Count,
}

impl Isolate for Store {
    type Args = ();
    type Message = StoreMsg;
    type Reply = usize;
    type Error = String;

    fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> {
        Ok(Store { orders: Vec::new() })
    }

    fn handle(&mut self, msg: StoreMsg, _: &mut Context<Self>) -> Result<usize, String> {
        if let StoreMsg::Add(order) = msg {
            self.orders.push(order);
        }
        Ok(self.orders.len())
    }
}

/// Parses order lines; panics on a line that is not a number (a bug the
/// supervisor contains).
struct Parser;

impl Isolate for Parser {
    type Args = ();
    type Message = String;
    type Reply = u64;
    type Error = String;

    fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> {
        Ok(Parser)
    }

    fn handle(&mut self, line: String, _: &mut Context<Self>) -> Result<u64, String> {
        Ok(line.trim().parse().expect("an order line must be a number"))
    }
}

fn main() {
    let short = std::env::args().any(|a| a == "--short");
    let orders: u64 = if short { 200 } else { 5_000 };

    let workers = Supervisor::builder()
        .name("workers")
        .strategy(Strategy::OneForOne)
        .restart_intensity(100, Duration::from_secs(1))
        .backoff(
            Backoff::exponential(Duration::from_millis(1))
                .max(Duration::from_millis(20))
                .jitter(),
        )
        .child(ChildSpec::worker::<Parser>("parser", ()));
    let root = Supervisor::builder()
        .name("root")
        .strategy(Strategy::RestForOne)
        .child(ChildSpec::worker::<Store>("store", ()).restart(Restart::Permanent))
        .child(ChildSpec::supervisor("workers", workers))
        .spawn()
        .expect("start the tree");

    let (events_tx, events) = port::unbounded::<SupervisionEvent>();
    root.add_event_listener(events_tx.clone());
    let inner = root.supervisor("workers").expect("workers");
    inner.add_event_listener(events_tx);
    let parser = inner.worker::<Parser>("parser").expect("parser");
    let store = root.worker::<Store>("store").expect("store");

    // Queue every line at once; every 50th is garbage and crashes the
    // parser. The good lines queued behind a crash wait in the same mailbox
    // for the restarted parser.
    let pending: Vec<_> = (0..orders)
        .map(|i| {
            let line = if i % 50 == 49 {
                format!("garbage #{i}")
            } else {
                i.to_string()
            };
            (i, parser.ask_pending(line))
        })
        .collect();
    let (mut parsed, mut crashed) = (0u64, 0u64);
    for (i, mut reply) in pending {
        match reply.wait_timeout(T) {
            Some(Ok(order)) => {
                assert_eq!(order, i);
                store.cast(StoreMsg::Add(order)).expect("store");
                parsed += 1;
            }
            Some(Err(AskError::Panicked(_))) => crashed += 1,
            other => panic!("order {i}: unexpected {other:?}"),
        }
    }
    let stored = store.ask_timeout(StoreMsg::Count, T).expect("count");
    println!(
        "{parsed} orders parsed and stored ({stored} in the store), {crashed} bad lines crashed the parser"
    );
    assert_eq!(crashed, orders / 50);
    assert_eq!(parsed, orders - orders / 50);
    assert_eq!(stored as u64, parsed, "no order lost");

    // Every crash was followed by a restart, each one seen as an event.
    let mut restarts = 0;
    while restarts < crashed {
        let event = events.recv_timeout(T).expect("a supervision event");
        if matches!(event, SupervisionEvent::Restarted { .. }) {
            restarts += 1;
        }
        if !short {
            println!("  {event:?}");
        }
    }
    println!("{restarts} restarts seen as events");

    root.stop();
    println!("root stopped: {:?}", root.join(T));
    for event in events.try_iter() {
        println!("  {event:?}");
    }
}
