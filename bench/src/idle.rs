//! `idle_cpu`: CPU time a process spends while an idle isolate, an idle
//! pool of each mode and an idle work manager merely exist.
//!
//! It runs in a fresh child process (this binary with [`CHILD_FLAG`]), so
//! threads left by earlier measures do not count: the child measures a
//! window with none of the objects (its baseline), then starts them, gives
//! each one piece of work, lets them settle, and measures the same window.

use std::process::{Command, Stdio};
use std::time::Duration;

use isolates::Isolate;
use isolates::pool::Pool;
use isolates::schedule::{WorkContext, WorkManager, WorkRequest, WorkResult, WorkStore};

use super::sys::process_cpu;
use super::workload::{Echo, Spinner};
use super::{Measure, T};

/// The hidden flag that runs the measure in a child: `--idle-cpu-child
/// WINDOW_MS SETTLE_MS`.
pub(crate) const CHILD_FLAG: &str = "--idle-cpu-child";

pub(crate) fn idle_cpu(quick: bool) -> Measure {
    let (window_ms, settle_ms) = if quick { (1000, 500) } else { (3000, 1000) };
    let (base, ours, threads) = match child_figures(window_ms, settle_ms) {
        Ok(figures) => figures,
        Err(e) => panic!("idle_cpu: the child process failed: {e}"),
    };
    Measure {
        name: "idle_cpu",
        value: ours,
        unit: "ms",
        baseline: "the same window in a process with none of them",
        baseline_value: base,
        ratio: ours / base.max(f64::MIN_POSITIVE),
        goal: Some("value <= 1 ms"),
        note: Some(format!(
            "process CPU ms in a {} s window{} after {settle_ms} ms to settle: an idle isolate, \
             an idle pool (default builder), an idle rayon-mode pool, an idle work manager \
             (in-memory store, nothing due), each after one piece of work; {threads} threads; \
             value - baseline = {:.3} ms",
            window_ms / 1000,
            if quick {
                " (--quick; full runs: 3 s)"
            } else {
                ""
            },
            ours - base
        )),
    }
}

fn child_figures(window_ms: u64, settle_ms: u64) -> Result<(f64, f64, usize), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new(exe)
        .arg(CHILD_FLAG)
        .arg(window_ms.to_string())
        .arg(settle_ms.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("exited with {}", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("idle_cpu "))
        .ok_or_else(|| format!("no figures in its output {text:?}"))?;
    let mut fields = line.split_whitespace();
    let mut next = || -> Result<f64, String> {
        fields
            .next()
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("bad figures {line:?}"))
    };
    Ok((next()?, next()?, next()? as usize))
}

/// The child's side: prints `idle_cpu BASE_MS OURS_MS THREADS` and exits.
pub(crate) fn child(args: &[String]) -> ! {
    let arg = |i: usize, default: u64| {
        args.get(i)
            .and_then(|a| a.parse::<u64>().ok())
            .unwrap_or(default)
    };
    let window = Duration::from_millis(arg(0, 3000));
    let settle = Duration::from_millis(arg(1, 1000));
    // The process's own start-up settles first too.
    std::thread::sleep(settle);
    let base = cpu_ms_in(window);

    let echo = Echo::spawn(()).expect("spawn");
    echo.ask_timeout(1, T).expect("ask");
    let plain = Pool::<Spinner>::builder().spawn(()).expect("pool");
    plain.submit(1).wait().expect("task");
    let rayon = Pool::<Spinner>::builder()
        .rayon(true)
        .spawn(())
        .expect("rayon pool");
    rayon.submit(1).wait().expect("task");
    let manager = WorkManager::builder(WorkStore::in_memory().expect("store"))
        .handler_fn("noop", |n: u64, _: &WorkContext<'_>| WorkResult::Success(n))
        .spawn()
        .expect("manager");
    let enqueued = manager
        .enqueue(WorkRequest::once("noop").input(&1u64))
        .wait()
        .expect("enqueue");
    let finished = manager.wait_finished(enqueued.ids()[0], T);
    assert!(finished.is_some(), "the work did not finish");
    std::thread::sleep(settle);
    let ours = cpu_ms_in(window);
    let threads = thread_count();

    println!("idle_cpu {base} {ours} {threads}");
    manager.stop();
    plain.stop();
    rayon.stop();
    drop(echo);
    std::process::exit(0)
}

fn cpu_ms_in(window: Duration) -> f64 {
    let before = process_cpu();
    std::thread::sleep(window);
    match (before, process_cpu()) {
        (Some(a), Some(b)) => b.saturating_sub(a).as_secs_f64() * 1000.0,
        _ => f64::NAN,
    }
}

fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}
