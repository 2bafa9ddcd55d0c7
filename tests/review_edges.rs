//! Edges found by a review of session 10's changes (each failed before
//! its fix): a result that fits `max_payload` sent as it is, a batch
//! caught by a server that came back with a lower `max_payload` batched
//! again, and an exit listener that missed the exit (its mailbox full)
//! told when added again.

#[allow(dead_code)] // wait_until is not needed here
mod common;

use std::path::Path;
use std::time::Duration;

use common::nats_server::NatsServer;
use isolates::pool::{Pool, TaskContext, Worker};
use isolates::remote::{self, NatsOptions};
use isolates::{Context, ExitReason, Isolate, Priority, port};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Job {
    /// Returns `len` bytes.
    Big(usize),
    /// Takes a large input, returns its first byte.
    Blob(Vec<u8>),
}

struct Rec;

impl Worker for Rec {
    type Args = ();
    type Input = Job;
    type Output = Vec<u8>;
    type Progress = u64;
    type Error = String;

    fn start(_: ()) -> Result<Self, String> {
        Ok(Rec)
    }

    fn run(&mut self, job: Job, _: &TaskContext<'_, Self>) -> Result<Vec<u8>, String> {
        match job {
            Job::Big(len) => Ok(vec![7u8; len]),
            Job::Blob(bytes) => Ok(bytes[..1].to_vec()),
        }
    }
}

fn tmp() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

fn options(server: &NatsServer) -> NatsOptions {
    NatsOptions::new(server.url()).ack_wait(Duration::from_secs(2))
}

/// A server with `max_payload: 4096`. A result of 3,500 bytes fits a
/// results message (8 + 13 + 3,500 bytes, no headers) with room to spare:
/// it goes as it is (the worker kept 1,024 bytes aside for headers a
/// request does not send, and turned it into an error).
#[test]
fn a_result_that_fits_max_payload_is_not_turned_into_an_error() {
    let conf = tmp().join(format!("s10-max4k-{}.conf", std::process::id()));
    std::fs::write(&conf, "max_payload: 4096\n").unwrap();
    let server = NatsServer::start(tmp(), &["-c", conf.to_str().unwrap()]);
    let _serving = remote::start::<Rec>(&options(&server).workers(1), "s10fits", ()).unwrap();
    let pool = Pool::<Rec>::builder()
        .nats(options(&server), "s10fits")
        .spawn(())
        .unwrap();
    // The input, as big, goes through.
    let mut input = pool.submit(Job::Blob(vec![5; 3_500]));
    assert_eq!(
        input.wait_timeout(Duration::from_secs(10)),
        Some(Ok(vec![5]))
    );
    let mut out = pool.submit(Job::Big(3_500));
    let got = out.wait_timeout(Duration::from_secs(10));
    let _ = std::fs::remove_file(&conf);
    assert!(
        matches!(&got, Some(Ok(v)) if v.len() == 3_500),
        "a 3,500-byte result under a 4,096-byte max_payload: {:?}",
        got.map(|r| r.map(|v| v.len()))
    );
}

/// The server comes back with a smaller max_payload while a batch
/// published under the old one is unconfirmed: the batch must not be
/// published again forever while it holds the pool's only place for an
/// unconfirmed batch; its tasks are batched again under the new limit,
/// and one too big alone resolves.
#[test]
fn a_batch_caught_by_a_lowered_max_payload_does_not_stall_the_pool() {
    let conf = tmp().join(format!("s10-lower-{}.conf", std::process::id()));
    std::fs::write(&conf, "max_payload: 1048576\n").unwrap();
    let mut server = NatsServer::start(tmp(), &["-c", conf.to_str().unwrap()]);
    let _serving = remote::start::<Rec>(&options(&server).workers(1), "s10lower", ()).unwrap();
    let pool = Pool::<Rec>::builder()
        .nats(options(&server), "s10lower")
        .spawn(())
        .unwrap();
    assert_eq!(pool.submit(Job::Blob(vec![1; 10])).wait(), Ok(vec![1]));
    server.kill();
    std::fs::write(&conf, "max_payload: 65536\n").unwrap();
    let mut big = pool.submit(Job::Blob(vec![2; 600 << 10]));
    // Setup only: the bridge takes the task (and publishes its batch,
    // unconfirmed) while the server is down.
    std::thread::sleep(Duration::from_millis(300));
    server.restart();
    let got = big.wait_timeout(Duration::from_secs(20));
    let mut small = pool.submit(Job::Blob(vec![3; 10]));
    let after = small.wait_timeout(Duration::from_secs(10));
    let _ = std::fs::remove_file(&conf);
    assert!(
        got.is_some() && after == Some(Ok(vec![3])),
        "a 600 KiB input after max_payload went down to 64 KiB: {:?}; a small task after it: {after:?}",
        got.map(|r| r.map(|v| v.len()))
    );
}

struct Echo;
impl Isolate for Echo {
    type Args = ();
    type Message = u64;
    type Reply = u64;
    type Error = String;
    fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> {
        Ok(Echo)
    }
    fn handle(&mut self, m: u64, _: &mut Context<Self>) -> Result<u64, String> {
        Ok(m)
    }
}

/// An exit listener whose mailbox was full at the exit misses it (logged:
/// "a listener's mailbox is full"); added again after the exit, once
/// drained, it is told (it was recorded as told and never learned how the
/// isolate ended).
#[test]
fn an_exit_listener_that_missed_the_exit_is_told_when_added_again() {
    let h = Echo::spawn(()).unwrap();
    let (tx, exits) = port::bounded::<ExitReason>(1);
    tx.send(ExitReason::Normal).unwrap(); // the mailbox is full
    h.add_exit_listener(tx.clone());
    h.kill(Priority::Immediate);
    assert_eq!(h.join(Duration::from_secs(5)), Some(ExitReason::Killed));
    // Drained: only the filler was there.
    assert_eq!(exits.try_iter().collect::<Vec<_>>(), [ExitReason::Normal]);
    h.add_exit_listener(tx.clone());
    assert_eq!(
        exits.recv_timeout(Duration::from_secs(5)),
        Ok(ExitReason::Killed),
        "the port never heard the exit"
    );
}
