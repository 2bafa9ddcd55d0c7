//! Isolates and pool tasks awaited from async code, on a tokio runtime that
//! has one thread: `Pending` (an isolate's reply) and `TaskHandle` (a pool
//! task) are futures woken by the reply itself, so awaiting them never
//! blocks the runtime.
//!
//! - asks to an isolate from many tokio tasks at once;
//! - `tokio::select!` between a pool task and a timer, cancelling the task
//!   when the timer wins;
//! - cancelling by dropping: a `TaskHandle` goes on running when dropped
//!   (on purpose: a result nobody waits for may still be wanted), so the
//!   recipe wraps it in a guard that cancels on drop, and `timeout` drops it;
//!   a dropped ask's reply is simply discarded;
//! - `join_all` over pool tasks;
//! - a ticker on the same runtime thread, whose lateness shows nothing
//!   blocked it.
//!
//! ```text
//! cargo run --release --example tokio_isolates              # primes below 10^7
//! cargo run --release --example tokio_isolates -- --short   # primes below 10^6, for CI
//! ```
//!
//! It checks its own answers and exits non-zero on a wrong one.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskCx, Poll};
use std::time::{Duration, Instant};

use isolates::pool::{Pool, TaskContext, TaskHandle, Worker};
use isolates::{AskError, Context, Isolate, IsolateBuilder, TaskError};
use serde::{Deserialize, Serialize};

/// Balances by account; the map never leaves the isolate.
struct Ledger {
    balances: HashMap<String, u64>,
}

#[derive(Serialize, Deserialize)]
enum Entry {
    Deposit {
        account: String,
        amount: u64,
    },
    Balance {
        account: String,
    },
    /// Stands for a slow handler (a disk flush): holds the isolate `ms`.
    Flush {
        ms: u64,
    },
}

impl Isolate for Ledger {
    type Args = ();
    type Message = Entry;
    type Reply = u64;
    type Error = String;

    fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> {
        Ok(Ledger {
            balances: HashMap::new(),
        })
    }

    fn handle(&mut self, entry: Entry, _: &mut Context<Self>) -> Result<u64, String> {
        match entry {
            Entry::Deposit { account, amount } => {
                let balance = self.balances.entry(account).or_default();
                *balance = balance
                    .checked_add(amount)
                    .ok_or_else(|| "the balance would overflow".to_string())?;
                Ok(*balance)
            }
            Entry::Balance { account } => Ok(self.balances.get(&account).copied().unwrap_or(0)),
            Entry::Flush { ms } => {
                std::thread::sleep(Duration::from_millis(ms));
                Ok(0)
            }
        }
    }
}

/// Counts the primes in a range, checking for a cancel as it goes.
struct Primes;

impl Worker for Primes {
    type Args = ();
    /// `[from, to)`.
    type Input = (u64, u64);
    type Output = u64;
    type Progress = ();
    type Error = String;

    fn start(_: ()) -> Result<Self, String> {
        Ok(Primes)
    }

    fn run(&mut self, (from, to): (u64, u64), task: &TaskContext<'_, Self>) -> Result<u64, String> {
        let mut count = 0;
        for n in from..to {
            if n.is_multiple_of(4096) && task.is_cancelled() {
                return Err(format!("cancelled at {n}"));
            }
            if is_prime(n) {
                count += 1;
            }
        }
        Ok(count)
    }
}

fn is_prime(n: u64) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let mut d = 3;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// A pool task that is cancelled when its future is dropped (by a
/// `timeout`, a lost `select!` branch, an aborted tokio task).
struct CancelOnDrop<W: Worker>(TaskHandle<W>);

impl<W: Worker> Future for CancelOnDrop<W> {
    type Output = Result<W::Output, TaskError<W::Error>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<Self::Output> {
        // `TaskHandle` is `Unpin`.
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<W: Worker> Drop for CancelOnDrop<W> {
    fn drop(&mut self) {
        // A no-op once the task has resolved.
        self.0.cancel();
    }
}

/// Fails the run with `message` unless `ok`.
fn check(ok: bool, message: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(message()) }
}

/// A task on the runtime's thread that wakes every 5 ms and keeps the
/// worst lateness: if anything blocked the thread, it shows here.
fn spawn_ticker(worst_late_us: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let period = Duration::from_millis(5);
        let mut next = Instant::now() + period;
        loop {
            tokio::time::sleep_until(next.into()).await;
            let late = Instant::now().saturating_duration_since(next);
            worst_late_us.fetch_max(late.as_micros() as u64, Ordering::Relaxed);
            next += period;
            if next < Instant::now() {
                next = Instant::now() + period;
            }
        }
    })
}

async fn run(short: bool) -> Result<(), String> {
    let worst_late_us = Arc::new(AtomicU64::new(0));
    let ticker = spawn_ticker(Arc::clone(&worst_late_us));
    let started = Instant::now();

    // 1. Asks from many tokio tasks at once. Each awaits its `Pending`; the
    //    isolate's thread wakes exactly that task when it replies.
    let ledger = IsolateBuilder::new()
        .name("ledger")
        .spawn::<Ledger>(())
        .map_err(|e| format!("the ledger did not start: {e}"))?;
    let depositors: Vec<_> = (1..=100u64)
        .map(|i| {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                let account = format!("acct-{}", i % 4);
                ledger
                    .ask_pending(Entry::Deposit { account, amount: i })
                    .await
            })
        })
        .collect();
    for depositor in depositors {
        depositor
            .await
            .map_err(|e| format!("a depositor task failed: {e}"))?
            .map_err(|e| format!("a deposit failed: {e}"))?;
    }
    let mut total = 0;
    for k in 0..4 {
        total += ledger
            .ask_pending(Entry::Balance {
                account: format!("acct-{k}"),
            })
            .await
            .map_err(|e| format!("a balance ask failed: {e}"))?;
    }
    check(total == 5050, || {
        format!("the four balances add up to {total}, not 5050")
    })?;
    println!("100 tokio tasks deposited 1..=100 through one isolate: balances add up to {total}");

    // 2. An ask dropped by a timeout: the isolate still handles it (its reply
    //    is discarded), and the next ask queues behind it, in order.
    let flush = tokio::time::timeout(
        Duration::from_millis(20),
        ledger.ask_pending(Entry::Flush { ms: 300 }),
    )
    .await;
    check(flush.is_err(), || {
        "the 300 ms flush answered within 20 ms".into()
    })?;
    let balance = ledger
        .ask_pending(Entry::Balance {
            account: "acct-0".into(),
        })
        .await;
    // 4 + 8 + ... + 100
    check(balance == Ok(1300), || {
        format!("acct-0 after the dropped ask: {balance:?}, not Ok(1300)")
    })?;
    println!("an ask dropped after 20 ms; the next ask answered after it: acct-0 = 1300");

    // 3. `select!` between a pool task and a timer; the loser is cancelled.
    let pool = Pool::<Primes>::builder()
        .name("primes")
        .workers(2)
        .spawn(())
        .map_err(|e| format!("the pool did not start: {e}"))?;
    let mut endless = pool.submit((0, u64::MAX));
    tokio::select! {
        result = &mut endless => return Err(format!("an endless task finished: {result:?}")),
        () = tokio::time::sleep(Duration::from_millis(50)) => {
            check(endless.cancel(), || "the endless task had already resolved".into())?;
        }
    }
    let result = (&mut endless).await;
    check(result == Err(TaskError::Cancelled), || {
        format!("a cancelled task gave {result:?}")
    })?;
    println!("select!: the 50 ms timer won, the task was cancelled: {result:?}");

    // 4. Cancelling by dropping: `timeout` drops the guard, which cancels.
    let dropped = tokio::time::timeout(
        Duration::from_millis(50),
        CancelOnDrop(pool.submit((0, u64::MAX))),
    )
    .await;
    check(dropped.is_err(), || {
        "an endless task finished within 50 ms".into()
    })?;
    // Both workers are free again once they notice (they check every 4096
    // numbers); a worker still busy with either would stall what follows.
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.stats().busy > 0 {
        check(Instant::now() < deadline, || {
            format!("cancelled tasks still running: {:?}", pool.stats())
        })?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("timeout dropped a cancel-on-drop task: both workers are free again");

    // 5. `join_all` over pool tasks: the primes below a limit, in chunks.
    let (limit, expected) = if short {
        (1_000_000, 78_498)
    } else {
        (10_000_000, 664_579)
    };
    let chunks = 16;
    let tasks = (0..chunks).map(|i| pool.submit((limit * i / chunks, limit * (i + 1) / chunks)));
    let begun = Instant::now();
    let counts = futures::future::join_all(tasks).await;
    let mut primes = 0;
    for count in counts {
        primes += count.map_err(|e| format!("a chunk failed: {e}"))?;
    }
    check(primes == expected, || {
        format!("{primes} primes below {limit}, not {expected}")
    })?;
    println!(
        "join_all over {chunks} pool tasks: {primes} primes below {limit} in {:?}",
        begun.elapsed()
    );

    // 6. An ask from inside a spawned task that also awaits a pool task: the
    //    two kinds of future mix freely.
    let (ledger2, pool2) = (ledger.clone(), pool.clone());
    let mixed = tokio::spawn(async move {
        let primes = pool2.submit((0, 1_000)).await?;
        let balance = ledger2
            .ask_pending(Entry::Deposit {
                account: "primes".into(),
                amount: primes,
            })
            .await
            .map_err(|e: AskError<String>| TaskError::Failed(e.to_string()))?;
        Ok::<u64, TaskError<String>>(balance)
    })
    .await
    .map_err(|e| format!("the mixed task failed: {e}"))?;
    check(mixed == Ok(168), || {
        format!("the primes below 1000 deposited: {mixed:?}, not Ok(168)")
    })?;
    println!("a tokio task awaited a pool task, then an ask: {mixed:?}");

    ticker.abort();
    let worst = Duration::from_micros(worst_late_us.load(Ordering::Relaxed));
    println!(
        "the runtime's one thread stayed free: a 5 ms ticker on it was at most {worst:?} late over {:?}",
        started.elapsed()
    );
    // Blocking on any of the above would stall the ticker for the whole
    // wait (300 ms for the flush, seconds for the primes); 250 ms leaves
    // room for a descheduled process on a busy machine.
    check(worst < Duration::from_millis(250), || {
        format!("the runtime's thread was blocked: the ticker ran {worst:?} late")
    })?;
    pool.stop();
    Ok(())
}

fn main() -> ExitCode {
    let mut short = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--short" => short = true,
            other => {
                eprintln!("unknown argument {other:?}; use --short for the quick run");
                return ExitCode::from(2);
            }
        }
    }
    // One thread runs every task: a blocking call anywhere would stall all.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: the tokio runtime did not start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(short)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(problem) => {
            eprintln!("error: {problem}");
            ExitCode::FAILURE
        }
    }
}
