//! What the harness asks of the OS: pinning a thread to a CPU, the process's
//! CPU clock, the load average, and busy processes that compete for the
//! cores. Linux only; elsewhere pinning is skipped and CPU time is unknown.

use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The hidden flag that turns the harness into one busy process.
pub(crate) const BUSY_FLAG: &str = "--busy-loop";

/// Two distinct CPUs this process may run on: one for the caller of a
/// round trip, one for the thread (or isolate) on the other side.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pinning {
    pub(crate) caller: usize,
    pub(crate) other: usize,
}

/// The first two CPUs this thread may run on, or `None` when there are
/// fewer than two (or the OS cannot say): pinning is then skipped.
pub(crate) fn pick_pinning() -> Option<Pinning> {
    #[cfg(target_os = "linux")]
    {
        use rustix::thread::{CpuSet, sched_getaffinity};
        let set = sched_getaffinity(None).ok()?;
        let mut cpus = (0..CpuSet::MAX_CPU).filter(|&cpu| set.is_set(cpu));
        let caller = cpus.next()?;
        let other = cpus.next()?;
        Some(Pinning { caller, other })
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// How a measure was pinned, for its note.
pub(crate) fn describe(pinning: Option<Pinning>, all_pinned: bool) -> String {
    match pinning {
        Some(p) if all_pinned => format!(
            "threads pinned: caller cpu{}, other cpu{}",
            p.caller, p.other
        ),
        Some(_) => "pinning failed: threads not pinned".into(),
        None => "not pinned: fewer than two cores available".into(),
    }
}

/// Pins the calling thread to `cpu`; whether it worked.
pub(crate) fn pin_current(cpu: usize) -> bool {
    #[cfg(target_os = "linux")]
    {
        use rustix::thread::{CpuSet, sched_setaffinity};
        let mut set = CpuSet::new();
        set.set(cpu);
        sched_setaffinity(None, &set).is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = cpu;
        false
    }
}

/// CPU time used so far by all threads of this process.
pub(crate) fn process_cpu() -> Option<Duration> {
    #[cfg(target_os = "linux")]
    {
        use rustix::time::{ClockId, clock_gettime};
        let t = clock_gettime(ClockId::ProcessCPUTime);
        Some(Duration::new(
            u64::try_from(t.tv_sec).ok()?,
            u32::try_from(t.tv_nsec).ok()?,
        ))
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// The 1-minute load average, for notes ("quiet" is only as quiet as the
/// machine was).
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// Busy processes (this binary with [`BUSY_FLAG`]), killed on drop.
pub(crate) struct BusyLoad {
    children: Vec<Child>,
}

impl BusyLoad {
    /// Starts `count` busy processes and returns once each one spins.
    pub(crate) fn start(count: usize) -> std::io::Result<BusyLoad> {
        let exe = std::env::current_exe()?;
        let mut load = BusyLoad {
            children: Vec::with_capacity(count),
        };
        for _ in 0..count {
            let child = Command::new(&exe)
                .arg(BUSY_FLAG)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()?;
            load.children.push(child);
        }
        for child in &mut load.children {
            let mut line = String::new();
            if let Some(out) = child.stdout.as_mut() {
                BufReader::new(out).read_line(&mut line)?;
            }
        }
        Ok(load)
    }

    pub(crate) fn len(&self) -> usize {
        self.children.len()
    }
}

impl Drop for BusyLoad {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
    }
}

/// The body of a busy process: spins at nice 0 until killed, until its
/// parent goes away (its stdin closes), or after ten minutes at most, so a
/// harness that dies never leaves spinners behind.
pub(crate) fn busy_loop() -> ! {
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    #[cfg(target_os = "linux")]
    {
        // Only lowers a positive nice where allowed; inherited otherwise.
        let _ = rustix::process::setpriority_process(None, 0);
    }
    let mut out = std::io::stdout();
    let _ = writeln!(out, "spinning");
    let _ = out.flush();
    let end = Instant::now() + Duration::from_secs(600);
    let mut x = 1u64;
    while Instant::now() < end {
        for _ in 0..100_000 {
            x = black_box(x.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(7));
        }
    }
    std::process::exit(0)
}
