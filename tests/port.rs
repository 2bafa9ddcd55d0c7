//! Ports: the four forms of send and receive with their exact errors,
//! rendezvous, ordering, ports inside messages, zero-copy transfers, decode
//! failures that leave the port usable, and `Debug` without payloads.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{Even, wait_until};
use isolates::{
    Bincode, CodecError, RecvError, RecvTimeoutError, SendError, SendPort, SendTimeoutError,
    Transfer, TryRecvError, TrySendError, port,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Long enough never to expire on a loaded machine.
const T: Duration = Duration::from_secs(10);
/// Short waits that are expected to time out.
const SHORT: Duration = Duration::from_millis(20);

fn is_odd_error(e: &CodecError, n: u32) -> bool {
    matches!(e, CodecError::Malformed(m) if m.contains(&format!("{n} is odd")))
}

#[test]
fn unbounded_send_forms_and_receive_forms() {
    let (tx, rx) = port::unbounded::<u32>();
    assert_eq!(tx.capacity(), None);
    assert!(tx.is_empty() && rx.is_empty());

    tx.send(1).unwrap();
    tx.try_send(2).unwrap();
    tx.send_timeout(3, SHORT).unwrap();
    tx.send_deadline(4, Instant::now() + SHORT).unwrap();
    assert_eq!((tx.len(), rx.len()), (4, 4));

    assert_eq!(rx.recv(), Ok(1));
    assert_eq!(rx.try_recv(), Ok(2));
    assert_eq!(rx.recv_timeout(T), Ok(3));
    assert_eq!(rx.recv_deadline(Instant::now() + T), Ok(4));
    assert!(rx.is_empty());

    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    let start = Instant::now();
    assert_eq!(rx.recv_timeout(SHORT), Err(RecvTimeoutError::Timeout));
    assert!(start.elapsed() >= SHORT);
    let start = Instant::now();
    assert_eq!(
        rx.recv_deadline(start + SHORT),
        Err(RecvTimeoutError::Timeout)
    );
    assert!(start.elapsed() >= SHORT);
}

#[test]
fn messages_queued_before_the_senders_leave_are_still_received() {
    let (tx, rx) = port::unbounded::<u32>();
    let tx2 = tx.clone();
    tx.send(10).unwrap();
    tx2.send(20).unwrap();
    drop(tx);
    // One sender left: still connected.
    assert_eq!(rx.recv_timeout(SHORT), Ok(10));
    assert_eq!(rx.recv_timeout(SHORT), Ok(20));
    assert_eq!(rx.recv_timeout(SHORT), Err(RecvTimeoutError::Timeout));
    tx2.send(30).unwrap();
    drop(tx2);
    assert_eq!(rx.try_recv(), Ok(30));
    assert_eq!(rx.recv(), Err(RecvError::Disconnected));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    assert_eq!(rx.recv_timeout(T), Err(RecvTimeoutError::Disconnected));
    assert_eq!(
        rx.recv_deadline(Instant::now() + T),
        Err(RecvTimeoutError::Disconnected)
    );
}

#[test]
fn bounded_port_full_gives_the_message_back() {
    let (tx, rx) = port::bounded::<String>(1);
    assert_eq!(tx.capacity(), Some(1));
    tx.send("first".into()).unwrap();

    let err = tx.try_send("two".into()).unwrap_err();
    assert!(err.is_full());
    assert!(matches!(&err, TrySendError::Full(m) if m == "two"));
    assert_eq!(err.into_inner(), "two");

    let start = Instant::now();
    let err = tx.send_timeout("three".into(), SHORT).unwrap_err();
    assert!(start.elapsed() >= SHORT);
    assert!(matches!(&err, SendTimeoutError::Timeout(m) if m == "three"));
    assert_eq!(err.into_inner(), "three");

    let start = Instant::now();
    let err = tx.send_deadline("four".into(), start + SHORT).unwrap_err();
    assert!(start.elapsed() >= SHORT);
    assert!(matches!(&err, SendTimeoutError::Timeout(m) if m == "four"));

    // Nothing was delivered by the failed sends.
    assert_eq!(rx.len(), 1);
    assert_eq!(rx.try_recv().as_deref(), Ok("first"));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    tx.try_send("five".into()).unwrap();
    assert_eq!(rx.recv().as_deref(), Ok("five"));
}

#[test]
fn blocking_send_waits_for_room() {
    let (tx, rx) = port::bounded::<u32>(1);
    tx.send(1).unwrap();
    let sender = thread::spawn(move || tx.send(2));
    // The mailbox is full, so the sender cannot have finished yet.
    assert!(!sender.is_finished());
    assert_eq!(rx.recv_timeout(T), Ok(1));
    assert_eq!(rx.recv_timeout(T), Ok(2));
    assert!(sender.join().unwrap().is_ok());
}

#[test]
fn send_to_a_dropped_receiver_gives_the_message_back() {
    for (tx, rx) in [port::bounded::<String>(4), port::unbounded::<String>()] {
        drop(rx);
        let err = tx.send("a".into()).unwrap_err();
        assert!(matches!(&err, SendError::Disconnected(m) if m == "a"));
        assert_eq!(err.into_inner(), "a");
        let err = tx.try_send("b".into()).unwrap_err();
        assert!(!err.is_full());
        assert!(matches!(&err, TrySendError::Disconnected(m) if m == "b"));
        assert_eq!(err.into_inner(), "b");
        let err = tx.send_timeout("c".into(), T).unwrap_err();
        assert!(matches!(&err, SendTimeoutError::Disconnected(m) if m == "c"));
        assert_eq!(err.into_inner(), "c");
        let err = tx
            .send_deadline("d".into(), Instant::now() + T)
            .unwrap_err();
        assert!(matches!(&err, SendTimeoutError::Disconnected(m) if m == "d"));
        assert_eq!(err.into_inner(), "d");
    }
}

#[test]
fn every_send_form_reports_an_encode_error_with_the_message() {
    let (tx, rx) = port::unbounded_with::<Vec<u8>, _>(Bincode::<16>::limited());
    let big = vec![7u8; 100];
    let too_large = CodecError::TooLarge {
        size: 101,
        limit: 16,
    };

    match tx.send(big.clone()).unwrap_err() {
        SendError::Encode(v, e) => assert_eq!((v, e), (big.clone(), too_large.clone())),
        other => panic!("{other:?}"),
    }
    match tx.try_send(big.clone()).unwrap_err() {
        TrySendError::Encode(v, e) => assert_eq!((v, e), (big.clone(), too_large.clone())),
        other => panic!("{other:?}"),
    }
    match tx.send_timeout(big.clone(), T).unwrap_err() {
        SendTimeoutError::Encode(v, e) => assert_eq!((v, e), (big.clone(), too_large.clone())),
        other => panic!("{other:?}"),
    }
    let err = tx
        .send_deadline(big.clone(), Instant::now() + T)
        .unwrap_err();
    assert!(matches!(&err, SendTimeoutError::Encode(_, e) if *e == too_large));
    assert_eq!(err.into_inner(), big);

    // Nothing was queued, and small messages still go through.
    assert!(rx.is_empty());
    tx.send(vec![1, 2, 3]).unwrap();
    assert_eq!(rx.try_recv(), Ok(vec![1, 2, 3]));
}

#[test]
fn rendezvous_port_hands_over_across_threads() {
    let (tx, rx) = port::bounded::<u64>(0);
    assert_eq!(tx.capacity(), Some(0));
    // No receiver is waiting: there is never room.
    assert!(matches!(tx.try_send(1), Err(TrySendError::Full(1))));
    assert!(matches!(
        tx.send_timeout(2, SHORT),
        Err(SendTimeoutError::Timeout(2))
    ));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));

    let receiver = thread::spawn(move || {
        let first = rx.recv_timeout(T);
        let second = rx.recv_timeout(T);
        (first, second)
    });
    tx.send(3).unwrap();
    tx.send_timeout(4, T).unwrap();
    assert_eq!(receiver.join().unwrap(), (Ok(3), Ok(4)));
}

#[test]
fn ten_thousand_messages_arrive_in_order() {
    let (tx, rx) = port::unbounded::<u32>();
    let sender = thread::spawn(move || {
        for i in 0..10_000 {
            tx.send(i).unwrap();
        }
    });
    let got: Vec<u32> = rx.iter().collect();
    sender.join().unwrap();
    assert_eq!(got, (0..10_000).collect::<Vec<_>>());
}

#[test]
fn each_sender_keeps_its_own_order() {
    const SENDERS: u32 = 4;
    const EACH: u32 = 2_500;
    // A small mailbox makes the senders block and interleave.
    let (tx, rx) = port::bounded::<(u32, u32)>(16);
    let senders: Vec<_> = (0..SENDERS)
        .map(|id| {
            let tx = tx.clone();
            thread::spawn(move || {
                for seq in 0..EACH {
                    tx.send((id, seq)).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let mut next = [0u32; SENDERS as usize];
    let mut total = 0;
    for (id, seq) in rx.iter() {
        assert_eq!(seq, next[id as usize], "sender {id} out of order");
        next[id as usize] += 1;
        total += 1;
    }
    for s in senders {
        s.join().unwrap();
    }
    assert_eq!(total, SENDERS * EACH);
    assert_eq!(next, [EACH; SENDERS as usize]);
}

#[test]
fn reply_port_travels_inside_a_message() {
    let (requests, inbox) = port::unbounded::<(u64, SendPort<u64>)>();
    let worker = thread::spawn(move || {
        let mut served = 0;
        for (n, reply_to) in inbox.iter() {
            reply_to.send(n * n).unwrap();
            served += 1;
        }
        served
    });
    let (reply_to, answers) = port::bounded::<u64>(1);
    for n in [3u64, 12, 1000] {
        requests.send((n, reply_to.clone())).unwrap();
        assert_eq!(answers.recv_timeout(T), Ok(n * n));
    }
    drop(requests);
    assert_eq!(worker.join().unwrap(), 3);
}

#[test]
fn received_port_is_the_same_port() {
    let (carrier, inbox) = port::unbounded::<SendPort<String>>();
    let (tx, rx) = port::unbounded::<String>();
    carrier.send(tx.clone()).unwrap();
    let back = inbox.try_recv().unwrap();
    assert!(back.same_port(&tx));
    back.send("via the copy".into()).unwrap();
    assert_eq!(tx.len(), 1);
    assert_eq!(rx.try_recv().as_deref(), Ok("via the copy"));
    // The receiver's end is the original one: dropping it disconnects both.
    drop(rx);
    assert!(matches!(
        back.send("x".into()),
        Err(SendError::Disconnected(_))
    ));
}

#[test]
fn vec_of_ports_arrives_in_order() {
    let (carrier, inbox) = port::unbounded::<Vec<SendPort<u32>>>();
    let pairs: Vec<_> = (0..5).map(|_| port::unbounded::<u32>()).collect();
    carrier
        .send(pairs.iter().map(|(tx, _)| tx.clone()).collect())
        .unwrap();
    let worker = thread::spawn(move || {
        let ports = inbox.recv_timeout(T).unwrap();
        for (i, p) in ports.iter().enumerate() {
            p.send(i as u32 * 10).unwrap();
        }
        ports.len()
    });
    assert_eq!(worker.join().unwrap(), 5);
    for (i, (_, rx)) in pairs.iter().enumerate() {
        assert_eq!(rx.try_recv(), Ok(i as u32 * 10), "port {i}");
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "port {i}");
    }
}

#[test]
fn port_for_ports_travels_inside_a_port_message() {
    // The worker is handed a port on which it sends back a port of its own.
    let (carrier, inbox) = port::unbounded::<SendPort<SendPort<String>>>();
    let worker = thread::spawn(move || {
        let answer_to = inbox.recv_timeout(T).unwrap();
        let (mine, my_inbox) = port::unbounded::<String>();
        answer_to.send(mine).unwrap();
        my_inbox.recv_timeout(T)
    });
    let (answer_to, answers) = port::unbounded::<SendPort<String>>();
    carrier.send(answer_to).unwrap();
    let workers_port = answers.recv_timeout(T).unwrap();
    workers_port.send("nested".into()).unwrap();
    assert_eq!(worker.join().unwrap().as_deref(), Ok("nested"));
}

#[test]
fn transfer_of_64_mib_arrives_as_the_same_allocation() {
    let (tx, rx) = port::unbounded::<(u32, Transfer)>();
    let mut buffer = vec![0u8; 64 << 20];
    buffer[0] = 1;
    buffer[(64 << 20) - 1] = 2;
    let addr = buffer.as_ptr();
    let sender = thread::spawn(move || tx.send((7, Transfer::new(buffer))).is_ok());
    let (tag, t) = rx.recv_timeout(T).unwrap();
    assert!(sender.join().unwrap());
    assert_eq!(tag, 7);
    assert_eq!(t.len(), 64 << 20);
    let got = t.into_vec();
    assert_eq!(got.as_ptr(), addr, "the buffer was copied");
    assert_eq!((got[0], got[(64 << 20) - 1]), (1, 2));
}

#[test]
fn transfer_does_not_count_against_the_codec_limit() {
    let (tx, rx) = port::unbounded_with::<Transfer, _>(Bincode::<16>::limited());
    tx.send(Transfer::new(vec![3; 1 << 20])).unwrap();
    let got = rx.try_recv().unwrap().into_vec();
    assert_eq!(got.len(), 1 << 20);
    assert!(got.iter().all(|&b| b == 3));
}

#[test]
fn failed_sends_give_back_the_transfer_with_its_buffer() {
    const LEN: usize = 64 << 20;
    let buffer = vec![5u8; LEN];
    let addr = buffer.as_ptr();
    let check = |t: Transfer| {
        assert_eq!(t.len(), LEN);
        let v = t.into_vec();
        assert_eq!(v.as_ptr(), addr);
        v
    };

    // Full.
    let (tx, rx) = port::bounded::<(String, Transfer)>(1);
    tx.send(("filler".into(), Transfer::new(Vec::new())))
        .unwrap();
    let (_, t) = tx
        .try_send(("x".into(), Transfer::new(buffer)))
        .unwrap_err()
        .into_inner();
    let buffer = check(t);
    let (_, t) = tx
        .send_timeout(("x".into(), Transfer::new(buffer)), SHORT)
        .unwrap_err()
        .into_inner();
    let buffer = check(t);

    // Encode: the rest of the message is over the limit.
    let (small, _small_rx) =
        port::unbounded_with::<(String, Transfer), _>(Bincode::<16>::limited());
    let err = small
        .send((
            "far too long for sixteen bytes".into(),
            Transfer::new(buffer),
        ))
        .unwrap_err();
    assert!(matches!(
        &err,
        SendError::Encode(_, CodecError::TooLarge { limit: 16, .. })
    ));
    let (_, t) = err.into_inner();
    let buffer = check(t);

    // Disconnected.
    drop(rx);
    let err = tx.send(("x".into(), Transfer::new(buffer))).unwrap_err();
    assert!(matches!(&err, SendError::Disconnected(_)));
    let (_, t) = err.into_inner();
    let buffer = check(t);
    assert!(buffer.iter().all(|&b| b == 5));
}

#[test]
fn undecodable_message_is_reported_and_the_next_one_arrives() {
    let (tx, rx) = port::unbounded_with::<Even, _>(Bincode::new());
    for n in [3, 4, 5, 6, 7, 8] {
        tx.send(Even(n)).unwrap();
    }
    assert!(matches!(rx.recv(), Err(RecvError::Decode(e)) if is_odd_error(&e, 3)));
    assert_eq!(rx.recv(), Ok(Even(4)));
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Decode(e)) if is_odd_error(&e, 5)));
    assert_eq!(rx.try_recv(), Ok(Even(6)));
    assert!(matches!(
        rx.recv_timeout(T),
        Err(RecvTimeoutError::Decode(e)) if is_odd_error(&e, 7)
    ));
    assert_eq!(rx.recv_deadline(Instant::now() + T), Ok(Even(8)));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
}

#[test]
fn iterators_skip_undecodable_messages() {
    let (tx, rx) = port::unbounded_with::<Even, _>(Bincode::new());
    for n in 0..6 {
        tx.send(Even(n)).unwrap();
    }
    assert_eq!(
        rx.try_iter().collect::<Vec<_>>(),
        [Even(0), Even(2), Even(4)]
    );
    for n in 10..14 {
        tx.send(Even(n)).unwrap();
    }
    drop(tx);
    assert_eq!(rx.iter().collect::<Vec<_>>(), [Even(10), Even(12)]);
}

/// Writes a `SendPort<u32>` and reads a `SendPort<String>`: the receiver
/// finds a port of another message type in the envelope.
#[derive(Debug)]
struct PortOfAnotherType(Option<SendPort<u32>>);

impl Serialize for PortOfAnotherType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.as_ref().expect("only sent with a port").serialize(s)
    }
}

impl<'de> Deserialize<'de> for PortOfAnotherType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        SendPort::<String>::deserialize(d).map(|_| PortOfAnotherType(None))
    }
}

/// Writes a `Transfer` and reads a `SendPort<u32>`.
#[derive(Debug)]
struct TransferAsPort(Option<Transfer>);

impl Serialize for TransferAsPort {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0
            .as_ref()
            .expect("only sent with a transfer")
            .serialize(s)
    }
}

impl<'de> Deserialize<'de> for TransferAsPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        SendPort::<u32>::deserialize(d).map(|_| TransferAsPort(None))
    }
}

/// Writes a `SendPort<u32>` where a `Transfer`'s `Attached` variant (index
/// 0) would be, and reads a `Transfer`.
#[derive(Debug)]
struct PortAsTransfer(Option<SendPort<u32>>);

impl Serialize for PortAsTransfer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let port = self.0.as_ref().expect("only sent with a port");
        (0u8, port).serialize(s)
    }
}

impl<'de> Deserialize<'de> for PortAsTransfer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Transfer::deserialize(d).map(|_| PortAsTransfer(None))
    }
}

fn attachment_error_contains(e: &CodecError, text: &str) -> bool {
    matches!(e, CodecError::Attachment(m) if m.contains(text))
}

#[test]
fn attachment_of_the_wrong_kind_is_a_decode_error() {
    let (tx_u32, rx_u32) = port::unbounded::<u32>();

    let (tx, rx) = port::unbounded_with::<PortOfAnotherType, _>(Bincode::new());
    tx.send(PortOfAnotherType(Some(tx_u32.clone()))).unwrap();
    let err = rx.try_recv().unwrap_err();
    assert!(
        matches!(&err, TryRecvError::Decode(e)
            if attachment_error_contains(e, "attachment 0 is a SendPort of another message type")),
        "{err:?}"
    );

    let (tx, rx) = port::unbounded_with::<TransferAsPort, _>(Bincode::new());
    tx.send(TransferAsPort(Some(Transfer::new(vec![1]))))
        .unwrap();
    let err = rx.recv_timeout(T).unwrap_err();
    assert_eq!(
        err,
        RecvTimeoutError::Decode(CodecError::Attachment(
            "attachment 0 is a Transfer where a SendPort was expected".into()
        ))
    );

    let (tx, rx) = port::unbounded_with::<PortAsTransfer, _>(Bincode::new());
    tx.send(PortAsTransfer(Some(tx_u32.clone()))).unwrap();
    let err = rx.recv().unwrap_err();
    assert_eq!(
        err,
        RecvError::Decode(CodecError::Attachment(
            "attachment 0 is a port where a Transfer was expected".into()
        ))
    );

    // The ports inside the failed messages were dropped; the original works.
    tx_u32.send(9).unwrap();
    assert_eq!(rx_u32.try_recv(), Ok(9));
}

/// The wire form of an attached `Transfer`: variant 0 and an index.
#[derive(Serialize)]
#[serde(rename = "Transfer")]
enum ForgedIndex {
    Attached(u32),
}

/// Sends one real `Transfer` followed by a forged attachment index, and
/// reads two `Transfer`s: an envelope whose bytes lie about attachments.
#[derive(Debug)]
enum Forged {
    Out { real: Transfer, claim: u32 },
    In,
}

impl Serialize for Forged {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Forged::Out { real, claim } => (real, ForgedIndex::Attached(*claim)).serialize(s),
            Forged::In => Err(serde::ser::Error::custom("only sent as Out")),
        }
    }
}

impl<'de> Deserialize<'de> for Forged {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <(Transfer, Transfer)>::deserialize(d).map(|_| Forged::In)
    }
}

#[test]
fn forged_attachment_indexes_are_decode_errors() {
    let (tx, rx) = port::unbounded_with::<Forged, _>(Bincode::new());
    let forged = |claim| Forged::Out {
        real: Transfer::new(vec![1, 2]),
        claim,
    };
    tx.send(forged(0)).unwrap();
    tx.send(forged(7)).unwrap();
    tx.send(forged(1)).unwrap();
    assert_eq!(
        rx.recv().unwrap_err(),
        RecvError::Decode(CodecError::Attachment(
            "attachment 0 is referenced twice".into()
        ))
    );
    assert_eq!(
        rx.recv().unwrap_err(),
        RecvError::Decode(CodecError::Attachment(
            "attachment 7 is missing: the envelope has 1".into()
        ))
    );
    assert_eq!(
        rx.recv().unwrap_err(),
        RecvError::Decode(CodecError::Attachment(
            "attachment 1 is missing: the envelope has 1".into()
        ))
    );
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
}

#[test]
fn debug_never_prints_the_payload() {
    const SECRET: &str = "SECRET";
    let secret = || SECRET.to_string();

    let (tx, rx) = port::bounded::<String>(1);
    tx.send(secret()).unwrap();
    assert_eq!(format!("{tx:?}"), "SendPort { len: 1, capacity: Some(1) }");
    assert_eq!(
        format!("{rx:?}"),
        "ReceivePort { len: 1, capacity: Some(1) }"
    );

    let full = tx.try_send(secret()).unwrap_err();
    assert_eq!(format!("{full:?}"), "TrySendError::Full(..)");
    let timeout = tx.send_timeout(secret(), Duration::ZERO).unwrap_err();
    assert_eq!(format!("{timeout:?}"), "SendTimeoutError::Timeout(..)");

    let (small, _small_rx) = port::unbounded_with::<String, _>(Bincode::<4>::limited());
    let encode = small.send(secret().repeat(3)).unwrap_err();
    let encode_debug = format!("{encode:?}");
    assert!(
        encode_debug.starts_with("SendError::Encode(\"..\", TooLarge"),
        "{encode_debug}"
    );
    let try_encode = small.try_send(secret().repeat(3)).unwrap_err();
    let timeout_encode = small.send_timeout(secret().repeat(3), T).unwrap_err();

    drop(rx);
    let gone = tx.send(secret()).unwrap_err();
    assert_eq!(format!("{gone:?}"), "SendError::Disconnected(..)");
    let try_gone = tx.try_send(secret()).unwrap_err();
    assert_eq!(format!("{try_gone:?}"), "TrySendError::Disconnected(..)");
    let timeout_gone = tx.send_timeout(secret(), T).unwrap_err();
    assert_eq!(
        format!("{timeout_gone:?}"),
        "SendTimeoutError::Disconnected(..)"
    );

    let transfer = Transfer::new(SECRET.as_bytes().to_vec());
    assert_eq!(format!("{transfer:?}"), "Transfer { len: 6 }");

    for text in [
        format!("{tx:?}"),
        format!("{encode:?}"),
        format!("{try_encode:?}"),
        format!("{timeout_encode:?}"),
        format!("{gone:?} {try_gone:?} {timeout_gone:?} {full:?} {timeout:?}"),
    ] {
        assert!(!text.contains(SECRET), "{text}");
    }
    // The values are all still there to be taken back.
    assert_eq!(gone.into_inner(), SECRET);
    assert_eq!(encode.into_inner(), SECRET.repeat(3));
}

#[test]
fn blocked_receiver_wakes_when_the_last_sender_leaves() {
    let (tx, rx) = port::unbounded::<u32>();
    let receiver = thread::spawn(move || rx.recv());
    let tx2 = tx.clone();
    drop(tx);
    assert!(!wait_until(|| receiver.is_finished(), SHORT));
    drop(tx2);
    assert!(wait_until(|| receiver.is_finished(), T));
    assert_eq!(receiver.join().unwrap(), Err(RecvError::Disconnected));
}

/// A send succeeds exactly when the receiver can decode the message: what
/// decoding would claim over the limit is refused at the sender, and the
/// value comes back.
#[test]
fn a_message_the_receiver_could_not_decode_is_refused_at_send() {
    let (tx, rx) = port::unbounded_with::<Vec<u64>, _>(Bincode::<4096>::limited());
    // 1002 wire bytes, but 8 + 1000 * 8 claimed when decoded.
    let err = tx.send(vec![1u64; 1000]).unwrap_err();
    assert!(
        matches!(
            err,
            SendError::Encode(
                _,
                CodecError::TooLarge {
                    size: 8008,
                    limit: 4096
                }
            )
        ),
        "{err:?}"
    );
    assert_eq!(err.into_inner(), vec![1u64; 1000]);
    tx.send(vec![1u64; 500]).unwrap();
    assert_eq!(rx.try_recv(), Ok(vec![1u64; 500]));
}
