//! In-process values move: the very allocation a sender gave up is what the
//! receiver gets, through every path (ports, casts, asks, replies, `run`,
//! pool inputs, outputs and progress), and a restart loses no moved message.
//! With `copy_messages` (Dart's copy semantics) they are encoded instead.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use isolates::pool::{Pool, Task, TaskContext, Worker};
use isolates::supervisor::{ChildSpec, Restart, Supervisor};
use isolates::{AskError, Context, Isolate, IsolateBuilder, SendPort, port, run};
use serde::{Deserialize, Serialize};

const T: Duration = Duration::from_secs(10);
const BIG: usize = 8 << 20;

fn addr<T>(v: &[T]) -> usize {
    v.as_ptr() as usize
}

#[test]
fn a_port_moves_the_allocation() {
    let (tx, rx) = port::unbounded::<Vec<f32>>();
    let image = vec![0.5f32; BIG / 4];
    let at = addr(&image);
    tx.send(image).unwrap();
    let back = rx.recv().unwrap();
    assert_eq!(addr(&back), at, "the same allocation arrives");
    assert_eq!(back.len(), BIG / 4);
}

#[test]
fn a_refused_send_gives_the_same_allocation_back() {
    let (tx, rx) = port::bounded::<Vec<u8>>(1);
    tx.send(vec![1]).unwrap();
    let payload = vec![7u8; BIG];
    let at = addr(&payload);
    let back = tx.try_send(payload).unwrap_err().into_inner();
    assert_eq!(addr(&back), at);
    drop(rx);
    let back = tx.send(back).unwrap_err().into_inner();
    assert_eq!(addr(&back), at);
}

fn identity(v: Vec<u8>) -> Vec<u8> {
    v
}

fn identity_f32(v: Vec<f32>) -> Vec<f32> {
    v
}

#[test]
fn run_moves_its_argument_and_result() {
    let bytes = vec![3u8; BIG];
    let at = addr(&bytes);
    let back = run(identity, bytes).wait().unwrap();
    assert_eq!(addr(&back), at, "argument and result moved, never copied");

    let floats = vec![1.5f32; BIG / 4];
    let at = addr(&floats);
    let mut pending = run(identity_f32, floats);
    let back = loop {
        if let Some(result) = pending.wait_timeout(T) {
            break result.unwrap();
        }
    };
    assert_eq!(addr(&back), at);
}

/// Keeps what it is cast; answers an ask with the buffer it kept.
struct Keeper {
    kept: Vec<Vec<u8>>,
}

#[derive(Serialize, Deserialize)]
enum Keep {
    Put(Vec<u8>),
    Give,
    /// Replies with the address of the buffer it carries.
    Where(Vec<u8>),
    Crash,
}

impl Isolate for Keeper {
    type Args = Vec<u8>;
    type Message = Keep;
    type Reply = (usize, Vec<u8>);
    type Error = String;

    fn start(first: Vec<u8>, _: &mut Context<Self>) -> Result<Self, String> {
        Ok(Keeper { kept: vec![first] })
    }

    fn handle(&mut self, msg: Keep, _: &mut Context<Self>) -> Result<(usize, Vec<u8>), String> {
        match msg {
            Keep::Put(v) => {
                self.kept.push(v);
                Ok((0, Vec::new()))
            }
            Keep::Give => {
                let v = self.kept.pop().ok_or("nothing kept")?;
                Ok((addr(&v), v))
            }
            Keep::Where(v) => Ok((addr(&v), Vec::new())),
            Keep::Crash => panic!("asked to crash"),
        }
    }
}

#[test]
fn isolates_move_arguments_messages_and_replies() {
    let first = vec![1u8; 1024];
    let first_at = addr(&first);
    let keeper = Keeper::spawn(first).unwrap();
    assert_eq!(
        keeper
            .ask_timeout(Keep::Give, T)
            .map(|(at, v)| (at, addr(&v))),
        Ok((first_at, first_at)),
        "start arguments and replies move"
    );

    let payload = vec![2u8; BIG];
    let at = addr(&payload);
    keeper.cast(Keep::Put(payload)).unwrap();
    let (seen, back) = keeper.ask_timeout(Keep::Give, T).unwrap();
    assert_eq!((seen, addr(&back)), (at, at), "a cast moves");

    let payload = vec![3u8; BIG];
    let at = addr(&payload);
    let mut pending = keeper.ask_pending(Keep::Where(payload));
    assert_eq!(
        pending.wait_timeout(T).map(|r| r.map(|(a, _)| a)),
        Some(Ok(at))
    );
}

#[test]
fn copy_messages_copies() {
    let keeper = IsolateBuilder::new()
        .copy_messages(true)
        .spawn::<Keeper>(Vec::new())
        .unwrap();
    let payload = vec![4u8; 1 << 16];
    let at = addr(&payload);
    keeper.cast(Keep::Put(payload)).unwrap();
    let (seen, back) = keeper.ask_timeout(Keep::Give, T).unwrap();
    assert_ne!(seen, at, "the isolate got its own copy");
    assert_ne!(addr(&back), seen, "and the reply is a copy again");
    assert!(back.iter().all(|&b| b == 4));
}

#[test]
fn a_restart_keeps_the_moved_messages_queued_behind_the_crash() {
    let tree = Supervisor::builder()
        .restart_intensity(10, Duration::from_secs(5))
        .child(ChildSpec::worker::<Keeper>("keeper", Vec::new()).restart(Restart::Permanent))
        .spawn()
        .unwrap();
    let keeper = tree.worker::<Keeper>("keeper").unwrap();
    // Hold the isolate inside a handler so everything below queues up
    // behind the crash.
    let mut crash = keeper.ask_pending(Keep::Crash);
    let payloads: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 1 << 20]).collect();
    let addrs: Vec<usize> = payloads.iter().map(|p| addr(p)).collect();
    let mut asks: Vec<_> = payloads
        .into_iter()
        .map(|p| keeper.ask_pending(Keep::Where(p)))
        .collect();
    assert!(matches!(
        crash.wait_timeout(T),
        Some(Err(AskError::Panicked(_)))
    ));
    for (ask, at) in asks.iter_mut().zip(addrs) {
        assert_eq!(
            ask.wait_timeout(T).map(|r| r.map(|(a, _)| a)),
            Some(Ok(at)),
            "each queued message reaches the restarted isolate, unmoved"
        );
    }
    tree.stop();
    assert!(tree.join(T).is_some());
}

static FAIL_ONCE: AtomicBool = AtomicBool::new(true);

/// Returns its input (and reports it as progress); panics on the first
/// input of length 3.
struct Echo;

impl Worker for Echo {
    type Args = ();
    type Input = Vec<u8>;
    type Output = Vec<u8>;
    type Progress = Vec<u8>;
    type Error = String;

    fn start(_: ()) -> Result<Self, String> {
        Ok(Echo)
    }

    fn run(&mut self, v: Vec<u8>, task: &TaskContext<'_, Self>) -> Result<Vec<u8>, String> {
        if v.len() == 3 && FAIL_ONCE.swap(false, Ordering::SeqCst) {
            panic!("first try fails");
        }
        if v.len() == 4 {
            task.progress(v);
            return Ok(Vec::new());
        }
        Ok(v)
    }
}

#[test]
fn a_pool_moves_inputs_outputs_and_progress() {
    let pool = Pool::<Echo>::builder().workers(2).spawn(()).unwrap();
    let payload = vec![9u8; BIG];
    let at = addr(&payload);
    let back = pool.submit(payload).wait().unwrap();
    assert_eq!(addr(&back), at);

    let progress = vec![1u8, 2, 3, 4];
    let at = addr(&progress);
    let mut task = pool.submit(progress);
    assert_eq!(task.wait_timeout(T), Some(Ok(Vec::new())));
    let reported = task.progress();
    assert_eq!(reported.len(), 1);
    assert_eq!(addr(&reported[0]), at, "progress moves too");
}

#[test]
fn a_retried_task_gets_its_input_again() {
    let pool = Pool::<Echo>::builder().workers(1).spawn(()).unwrap();
    let task = pool.submit_task(Task::new(vec![5u8, 6, 7]).retries(2));
    assert_eq!(
        task.wait(),
        Ok(vec![5, 6, 7]),
        "the copy kept for the retry"
    );
    assert!(
        !FAIL_ONCE.load(Ordering::SeqCst),
        "the first attempt panicked"
    );
}

/// A reply port moved inside a message is the same port on the other side.
#[test]
fn ports_inside_moved_messages_work() {
    let (carrier, inbox) = port::unbounded::<(u32, SendPort<u32>)>();
    let (reply_to, answers) = port::unbounded::<u32>();
    carrier.send((21, reply_to)).unwrap();
    let (n, reply_to) = inbox.recv().unwrap();
    reply_to.send(n * 2).unwrap();
    assert_eq!(answers.recv_timeout(T), Ok(42));
}

/// Takes the buffer out of its `Transfer`, then panics the first time.
struct Taker;

static TAKER_FAILS: AtomicBool = AtomicBool::new(true);

impl Worker for Taker {
    type Args = ();
    type Input = isolates::Transfer;
    type Output = usize;
    type Progress = ();
    type Error = String;

    fn start(_: ()) -> Result<Self, String> {
        Ok(Taker)
    }

    fn run(&mut self, t: isolates::Transfer, _: &TaskContext<'_, Self>) -> Result<usize, String> {
        let buffer = t.into_vec();
        assert!(
            !TAKER_FAILS.swap(false, Ordering::SeqCst),
            "first try fails"
        );
        Ok(buffer.len())
    }
}

#[test]
fn an_input_with_a_transfer_gets_no_retry_rather_than_an_emptied_buffer() {
    let pool = Pool::<Taker>::builder().workers(1).spawn(()).unwrap();
    let task = pool.submit_task(Task::new(isolates::Transfer::new(vec![1; 1024])).retries(3));
    // The first run took the buffer: a retry could only see it empty.
    assert!(matches!(task.wait(), Err(isolates::TaskError::Panicked(_))));
    assert_eq!(
        pool.submit(isolates::Transfer::new(vec![1; 10])).wait(),
        Ok(10)
    );
}
