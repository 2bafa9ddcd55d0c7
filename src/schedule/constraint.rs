//! Conditions work waits for, and built-ins that read the real system.
//!
//! On Linux the built-ins read `/sys` and `/proc` (each can be pointed at
//! another root, which is how the tests fake a laptop on battery); on other
//! systems they always hold.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A condition a work waits for; the app registers each under a name with
/// [`WorkManagerBuilder::constraint`](super::WorkManagerBuilder::constraint)
/// and requests name them, so a stored schedule finds them again after a
/// restart.
///
/// The scheduler asks [`holds`](Self::holds) before it starts a work, and
/// again every poll interval while work waits for it.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use isolates::schedule::Constraint;
///
/// #[derive(Debug, Default)]
/// struct Flag(AtomicBool);
/// impl Constraint for Flag {
///     fn holds(&self) -> bool { self.0.load(Ordering::Relaxed) }
/// }
///
/// let wifi = Arc::new(Flag::default());
/// assert!(!wifi.holds());
/// wifi.0.store(true, Ordering::Relaxed);
/// assert!(wifi.holds());
/// ```
pub trait Constraint: Send + Sync + fmt::Debug + 'static {
    /// Whether the condition holds now. Keep it cheap; it must not block.
    fn holds(&self) -> bool;
}

impl<C: Constraint> Constraint for std::sync::Arc<C> {
    fn holds(&self) -> bool {
        (**self).holds()
    }
}

/// One power supply under `/sys/class/power_supply`.
struct Supply {
    kind: String,
    online: Option<bool>,
    status: Option<String>,
    capacity: Option<u32>,
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

fn supplies(root: &Path) -> Vec<Supply> {
    let Ok(dir) = fs::read_dir(root.join("sys/class/power_supply")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| {
            let p = entry.path();
            Some(Supply {
                kind: read_trimmed(&p.join("type"))?,
                online: read_trimmed(&p.join("online")).map(|s| s == "1"),
                status: read_trimmed(&p.join("status")),
                capacity: read_trimmed(&p.join("capacity")).and_then(|s| s.parse().ok()),
            })
        })
        .collect()
}

fn charging(s: &Supply) -> bool {
    matches!(s.status.as_deref(), Some("Charging" | "Full"))
}

/// Holds on AC power: a mains or USB supply is online, or a battery is
/// charging or full. A machine without batteries (a desktop, a server) is
/// on AC power.
///
/// # Examples
///
/// ```
/// use isolates::schedule::{Constraint, OnAcPower};
/// // An empty root has no batteries: that is a machine on mains.
/// let dir = std::env::temp_dir().join("isolates-doc-ac");
/// assert!(OnAcPower::with_root(&dir).holds());
/// ```
#[derive(Debug, Clone)]
pub struct OnAcPower {
    root: PathBuf,
}

impl Default for OnAcPower {
    fn default() -> Self {
        Self::with_root("/")
    }
}

impl OnAcPower {
    /// Reads `<root>/sys/class/power_supply` instead of the real one.
    ///
    /// # Examples
    ///
    /// See [`OnAcPower`].
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        OnAcPower { root: root.into() }
    }
}

impl Constraint for OnAcPower {
    fn holds(&self) -> bool {
        if !cfg!(target_os = "linux") {
            return true;
        }
        let all = supplies(&self.root);
        let batteries: Vec<_> = all.iter().filter(|s| s.kind == "Battery").collect();
        batteries.is_empty()
            || all.iter().any(|s| {
                matches!(s.kind.as_str(), "Mains" | "USB" | "USB_C") && s.online == Some(true)
            })
            || batteries.iter().any(|s| charging(s))
    }
}

/// Holds unless a battery is low: every battery is above `min_percent`
/// (default 15) or charging. No battery is never low.
///
/// # Examples
///
/// ```
/// use isolates::schedule::{BatteryNotLow, Constraint};
/// let dir = std::env::temp_dir().join("isolates-doc-battery");
/// assert!(BatteryNotLow::with_root(&dir).holds());
/// ```
#[derive(Debug, Clone)]
pub struct BatteryNotLow {
    root: PathBuf,
    min_percent: u32,
}

impl Default for BatteryNotLow {
    fn default() -> Self {
        Self::with_root("/")
    }
}

impl BatteryNotLow {
    /// Reads `<root>/sys/class/power_supply` instead of the real one.
    ///
    /// # Examples
    ///
    /// See [`BatteryNotLow`].
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        BatteryNotLow {
            root: root.into(),
            min_percent: 15,
        }
    }

    /// Low means at or below `percent`.
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::schedule::BatteryNotLow;
    /// let c = BatteryNotLow::default().min_percent(30);
    /// # let _ = c;
    /// ```
    pub fn min_percent(mut self, percent: u32) -> Self {
        self.min_percent = percent;
        self
    }
}

impl Constraint for BatteryNotLow {
    fn holds(&self) -> bool {
        if !cfg!(target_os = "linux") {
            return true;
        }
        supplies(&self.root)
            .iter()
            .filter(|s| s.kind == "Battery")
            .all(|s| charging(s) || s.capacity.is_none_or(|c| c > self.min_percent))
    }
}

/// CPU counters from the first line of `/proc/stat`: (idle, total).
fn cpu_times(root: &Path) -> Option<(u64, u64)> {
    let stat = fs::read_to_string(root.join("proc/stat")).ok()?;
    let line = stat.lines().next()?;
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let values: Vec<u64> = fields.filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    let total = values.iter().take(8).sum();
    Some((idle, total))
}

/// Holds while the system is mostly idle: the CPUs were idle at least
/// `min_idle` (default 0.5) of the time over the last window (default
/// 10 s, measured between checks).
///
/// The first check, with no window yet, reads the 1-minute load average
/// from `/proc/loadavg` instead: idle means load per CPU below
/// `1 − min_idle`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::schedule::{Constraint, SystemIdle};
/// let idle = SystemIdle::default().min_idle(0.25).window(Duration::from_secs(5));
/// let _ = idle.holds(); // reads the real /proc
/// ```
#[derive(Debug)]
pub struct SystemIdle {
    root: PathBuf,
    min_idle: f64,
    window: Duration,
    /// The sample that starts the current window, and the verdict of
    /// the window before.
    last: Mutex<Option<Sample>>,
}

/// When CPU times were read, the (idle, total) ticks, and the verdict.
type Sample = (Instant, (u64, u64), bool);

impl Default for SystemIdle {
    fn default() -> Self {
        Self::with_root("/")
    }
}

impl SystemIdle {
    /// Reads `<root>/proc` instead of the real one.
    ///
    /// # Examples
    ///
    /// See [`SystemIdle`].
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        SystemIdle {
            root: root.into(),
            min_idle: 0.5,
            window: Duration::from_secs(10),
            last: Mutex::new(None),
        }
    }

    /// The idle share (0 to 1) that counts as idle.
    ///
    /// # Examples
    ///
    /// See [`SystemIdle`].
    pub fn min_idle(mut self, share: f64) -> Self {
        self.min_idle = share.clamp(0.0, 1.0);
        self
    }

    /// The window the idle share is measured over.
    ///
    /// # Examples
    ///
    /// See [`SystemIdle`].
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    fn load_says_idle(&self) -> bool {
        let load = read_trimmed(&self.root.join("proc/loadavg")).and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|l| l.parse::<f64>().ok())
        });
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        load.is_none_or(|l| l / cpus < 1.0 - self.min_idle)
    }
}

impl Constraint for SystemIdle {
    fn holds(&self) -> bool {
        if !cfg!(target_os = "linux") {
            return true;
        }
        let Some(now_times) = cpu_times(&self.root) else {
            return self.load_says_idle();
        };
        let now = Instant::now();
        let mut last = self.last.lock();
        let verdict = match *last {
            // Inside the window: the verdict of the last full window.
            Some((at, _, verdict)) if now.duration_since(at) < self.window => return verdict,
            Some((_, (idle0, total0), _)) => {
                let idle = now_times.0.saturating_sub(idle0);
                let total = now_times.1.saturating_sub(total0);
                total == 0 || idle as f64 / total as f64 >= self.min_idle
            }
            None => self.load_says_idle(),
        };
        *last = Some((now, now_times, verdict));
        verdict
    }
}

/// Holds while the network is up: a default route exists
/// (`/proc/net/route` or `/proc/net/ipv6_route`) and an interface other
/// than loopback is up (`/sys/class/net/*/operstate`).
///
/// # Examples
///
/// ```
/// use isolates::schedule::{Constraint, NetworkAvailable};
/// let dir = std::env::temp_dir().join("isolates-doc-net");
/// assert!(!NetworkAvailable::with_root(&dir).holds()); // nothing there: offline
/// ```
#[derive(Debug, Clone)]
pub struct NetworkAvailable {
    root: PathBuf,
}

impl Default for NetworkAvailable {
    fn default() -> Self {
        Self::with_root("/")
    }
}

impl NetworkAvailable {
    /// Reads `<root>/proc` and `<root>/sys` instead of the real ones.
    ///
    /// # Examples
    ///
    /// See [`NetworkAvailable`].
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        NetworkAvailable { root: root.into() }
    }

    fn default_route(&self) -> bool {
        let v4 = fs::read_to_string(self.root.join("proc/net/route")).unwrap_or_default();
        let v4 = v4.lines().skip(1).any(|l| {
            let f: Vec<_> = l.split_whitespace().collect();
            f.len() > 2 && f[1] == "00000000" && f[0] != "lo"
        });
        let v6 = fs::read_to_string(self.root.join("proc/net/ipv6_route")).unwrap_or_default();
        let v6 = v6.lines().any(|l| {
            let f: Vec<_> = l.split_whitespace().collect();
            f.len() >= 10
                && f[0] == "00000000000000000000000000000000"
                && f[1] == "00"
                && f[9] != "lo"
        });
        v4 || v6
    }

    fn interface_up(&self) -> bool {
        let Ok(dir) = fs::read_dir(self.root.join("sys/class/net")) else {
            return false;
        };
        dir.flatten().any(|e| {
            e.file_name() != "lo"
                && matches!(
                    read_trimmed(&e.path().join("operstate")).as_deref(),
                    Some("up" | "unknown")
                )
        })
    }
}

impl Constraint for NetworkAvailable {
    fn holds(&self) -> bool {
        if !cfg!(target_os = "linux") {
            return true;
        }
        self.default_route() && self.interface_up()
    }
}

/// Holds while the file system holding `path` has more than `min_free`
/// bytes available (default: the current directory, 512 MiB).
///
/// # Examples
///
/// ```
/// use isolates::schedule::{Constraint, StorageNotLow};
/// assert!(StorageNotLow::new(std::env::temp_dir(), 1).holds());
/// assert!(!StorageNotLow::new(std::env::temp_dir(), u64::MAX).holds());
/// ```
#[derive(Debug, Clone)]
pub struct StorageNotLow {
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    path: PathBuf,
    min_free: u64,
}

impl Default for StorageNotLow {
    fn default() -> Self {
        Self::new(".", 512 << 20)
    }
}

impl StorageNotLow {
    /// Watches the file system of `path`, wanting over `min_free` bytes.
    ///
    /// # Examples
    ///
    /// See [`StorageNotLow`].
    pub fn new(path: impl Into<PathBuf>, min_free: u64) -> Self {
        StorageNotLow {
            path: path.into(),
            min_free,
        }
    }

    /// Bytes available to this process on the file system, if known.
    ///
    /// # Examples
    ///
    /// ```
    /// use isolates::schedule::StorageNotLow;
    /// # #[cfg(target_os = "linux")]
    /// assert!(StorageNotLow::new("/", 0).available().is_some());
    /// ```
    pub fn available(&self) -> Option<u64> {
        #[cfg(target_os = "linux")]
        {
            let st = rustix::fs::statvfs(&self.path).ok()?;
            Some(st.f_bavail.saturating_mul(st.f_frsize))
        }
        #[cfg(not(target_os = "linux"))]
        {
            None
        }
    }
}

impl Constraint for StorageNotLow {
    fn holds(&self) -> bool {
        self.available().is_none_or(|free| free > self.min_free)
    }
}
