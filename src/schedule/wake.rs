//! OS wake-ups: a timer the operating system keeps, set for the next due
//! work, that starts the app's headless command
//! ([`WorkManagerBuilder::run_due`](super::WorkManagerBuilder::run_due))
//! while the app is closed, as Android's JobScheduler and AlarmManager
//! wake an app in the background.
//!
//! What each platform gets is in [`OsWake`]'s documentation.
//!
//! The three definitions are generated on every platform and tested as
//! golden files (`tests/golden/wake/`); only the systemd pair is loaded
//! and checked with `systemd-analyze verify` in CI, which runs on Linux:
//! the launchd and Task Scheduler paths are not exercised on their
//! platforms by CI.
//!
//! One file per platform (`systemd`, `launchd`, `schtasks`) writes its
//! definition and loads it; this one holds what they share.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use super::WorkManager;
use super::request::WorkQuery;

mod launchd;
mod schtasks;
mod systemd;
mod utc;

pub use systemd::SystemdUnits;

/// What went wrong setting an OS wake-up.
///
/// # Examples
///
/// ```
/// use isolates::schedule::{OsWake, WakeError};
///
/// let err = OsWake::new("my app", ["/usr/bin/true"]).unwrap_err();
/// assert!(matches!(err, WakeError::Invalid(_)));
/// assert!(err.to_string().contains("letters"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WakeError {
    /// The app id or the command cannot be written into a timer; the text
    /// says why.
    Invalid(String),
    /// Linux: there is no systemd user instance to keep the timer (no
    /// `systemctl`, or no user bus: a container, a system without
    /// systemd, a session without `loginctl enable-linger`). The unit
    /// files were removed again. Run the headless command from cron
    /// instead (the text gives the crontab line), or at the app's start.
    NoUserSystemd {
        /// What `systemctl` said.
        detail: String,
        /// The crontab line that runs the command every minute.
        crontab: String,
    },
    /// This platform has no OS wake-up here (not Linux, macOS or Windows).
    Unsupported,
    /// Writing or removing a file failed.
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// A tool (`systemctl`, `launchctl`, `schtasks`) failed.
    Command {
        /// The command line.
        command: String,
        /// Its exit status, or why it did not start.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
}

impl fmt::Display for WakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid(why) => write!(f, "the OS wake-up cannot be set: {why}"),
            Self::NoUserSystemd { detail, crontab } => write!(
                f,
                "there is no systemd user instance to keep the timer ({detail}); the unit files \
                 were removed: run the headless command from cron instead (`crontab -e`, add \
                 `{crontab}`), or run it when the app starts"
            ),
            Self::Unsupported => f.write_str(
                "this platform has no OS wake-up in isolates (Linux, macOS and Windows do): run \
                 the headless command from the platform's scheduler",
            ),
            Self::Io { path, detail } => write!(
                f,
                "{} could not be written or removed ({detail}): check the directory's \
                 permissions, or pick another with OsWake::dir",
                path.display()
            ),
            Self::Command {
                command,
                status,
                stderr,
            } => write!(
                f,
                "`{command}` failed ({status}): {}",
                stderr.trim().lines().next().unwrap_or("no message")
            ),
        }
    }
}

impl std::error::Error for WakeError {}

/// A timer the OS keeps for an app's next due work: when it fires, the OS
/// starts `command`, the app's headless mode, which calls
/// [`run_due`](super::WorkManagerBuilder::run_due) and exits.
/// [`WorkManager::wake_with_os`] keeps it set while the app runs;
/// [`arm`](Self::arm) sets it from the headless command.
///
/// - Linux: a systemd **user** timer and service pair in
///   `$XDG_CONFIG_HOME/systemd/user` (default `~/.config/systemd/user`),
///   `OnCalendar=` the due time in UTC with `Persistent=true` (a time
///   missed while the machine was off fires at the next boot or login),
///   loaded with `systemctl --user daemon-reload`, `enable` and `restart`.
///   Enabled, the timer starts with the user's session: at login, or at
///   boot with `loginctl enable-linger $USER` (what `startOnBoot` means).
/// - macOS: a LaunchAgent in `~/Library/LaunchAgents`, `StartInterval`
///   seconds from now (launchd runs an interval missed during sleep on
///   wake), loaded with `launchctl unload`/`load -w`. LaunchAgents load at
///   login.
/// - Windows: a Task Scheduler task from an XML definition, a
///   `TimeTrigger` at the due time in UTC with `StartWhenAvailable` (a
///   missed start runs as soon as it can), created with `schtasks /Create
///   /XML /F`.
///
/// The three definitions are generated on every platform and tested as
/// golden files (`tests/golden/wake/`); only the systemd pair is loaded,
/// and checked with `systemd-analyze verify`, in CI (Linux): the launchd
/// and Task Scheduler paths are not exercised on their platforms by CI.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use isolates::schedule::OsWake;
///
/// let wake = OsWake::new("org.example.notes", ["/usr/bin/notes", "--run-due"]).unwrap();
/// let at = UNIX_EPOCH + Duration::from_secs(1_764_639_000); // 2025-12-02 01:30 UTC
/// let units = wake.systemd_units(at);
/// assert_eq!(units.timer_name, "org.example.notes-work.timer");
/// assert!(units.timer.contains("OnCalendar=2025-12-02 01:30:00 UTC\n"));
/// assert!(units.timer.contains("Persistent=true\n"));
/// assert!(units.service.contains("ExecStart=\"/usr/bin/notes\" \"--run-due\"\n"));
/// ```
#[derive(Debug, Clone)]
pub struct OsWake {
    app_id: String,
    command: Vec<String>,
    dir: Option<PathBuf>,
    retry_after: Duration,
}

impl OsWake {
    /// A wake-up for the app `app_id` (letters, digits, `.`, `_`, `-`; at
    /// most 64; it names the timer, the LaunchAgent and the task) that
    /// starts `command` (an absolute program path, then its arguments:
    /// typically `std::env::current_exe()` and the flag of the headless
    /// mode).
    ///
    /// # Errors
    ///
    /// [`WakeError::Invalid`] for an id or command that cannot be written
    /// into a timer: empty, other characters, a relative program path,
    /// control characters in an argument.
    ///
    /// # Examples
    ///
    /// See [`OsWake`].
    pub fn new<S: Into<String>>(
        app_id: &str,
        command: impl IntoIterator<Item = S>,
    ) -> Result<Self, WakeError> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if app_id.is_empty()
            || app_id.len() > 64
            || !app_id.chars().all(ok_char)
            || app_id.starts_with(['.', '-'])
        {
            return Err(WakeError::Invalid(format!(
                "the app id {app_id:?} must be 1 to 64 letters, digits, '.', '_' or '-', not \
                 starting with '.' or '-' (e.g. \"org.example.app\")"
            )));
        }
        let command: Vec<String> = command.into_iter().map(Into::into).collect();
        let Some(program) = command.first() else {
            return Err(WakeError::Invalid(
                "the command is empty: give the program's absolute path first".to_owned(),
            ));
        };
        if !looks_absolute(program) {
            return Err(WakeError::Invalid(format!(
                "the program {program:?} is not an absolute path: the OS starts it from \
                 anywhere (pass std::env::current_exe())"
            )));
        }
        if let Some(arg) = command.iter().find(|a| a.chars().any(char::is_control)) {
            return Err(WakeError::Invalid(format!(
                "the argument {arg:?} holds a control character (a newline?), which no timer \
                 definition can carry"
            )));
        }
        Ok(OsWake {
            app_id: app_id.to_owned(),
            command,
            dir: None,
            retry_after: Duration::from_secs(60),
        })
    }

    /// Where the timer's files go, instead of the platform's place
    /// (tests, or a system-wide install).
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::schedule::OsWake;
    /// let wake = OsWake::new("org.example.a", ["/bin/a"]).unwrap().dir("/tmp/units");
    /// # let _ = wake;
    /// ```
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// How long after now the timer is set when the next due work is due
    /// already (it waits on a constraint, or on a handler the headless
    /// command does not register): a wake-up at once would start the
    /// command again and again. Default 1 minute; at least 1 second.
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::schedule::OsWake;
    /// let wake = OsWake::new("org.example.a", ["/bin/a"]).unwrap()
    ///     .retry_after(std::time::Duration::from_secs(900));
    /// # let _ = wake;
    /// ```
    pub fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = wait.max(Duration::from_secs(1));
        self
    }

    /// Sets the OS timer for `next` (the earliest due work, e.g.
    /// [`DueRun::next_due`](super::DueRun::next_due)), or removes it when
    /// `next` is `None`: nothing is due. A `next` already past sets it
    /// [`retry_after`](Self::retry_after) from now; one within the next
    /// second, a second from now. Blocks while the
    /// platform's tool runs (tens of milliseconds): call it from the
    /// headless command or a worker thread, not a UI thread.
    ///
    /// # Errors
    ///
    /// [`WakeError::NoUserSystemd`] (Linux without a user systemd),
    /// [`WakeError::Io`], [`WakeError::Command`],
    /// [`WakeError::Unsupported`] elsewhere.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::{Duration, SystemTime};
    /// use isolates::schedule::{OsWake, WakeError};
    ///
    /// let exe = std::env::current_exe().unwrap();
    /// let wake = OsWake::new("org.example.notes", [exe.to_str().unwrap(), "--run-due"]).unwrap();
    /// match wake.arm(Some(SystemTime::now() + Duration::from_secs(3600))) {
    ///     Ok(()) => {}
    ///     Err(e @ WakeError::NoUserSystemd { .. }) => eprintln!("{e}"),
    ///     Err(e) => panic!("{e}"),
    /// }
    /// wake.arm(None).unwrap(); // nothing due: the timer goes
    /// ```
    pub fn arm(&self, next: Option<SystemTime>) -> Result<(), WakeError> {
        let now = SystemTime::now();
        // Not within the second: a timer started after its only time
        // passed may never fire.
        let soonest = now + Duration::from_secs(1);
        let at = next.map(|t| {
            if t > now {
                t.max(soonest)
            } else {
                now + self.retry_after
            }
        });
        if cfg!(target_os = "linux") {
            self.arm_systemd(at)
        } else if cfg!(target_os = "macos") {
            self.arm_launchd(at, now)
        } else if cfg!(windows) {
            self.arm_schtasks(at)
        } else {
            Err(WakeError::Unsupported)
        }
    }

    /// The crontab line that runs the command every minute: the fallback
    /// where no user systemd runs.
    ///
    /// # Examples
    ///
    /// ```
    /// # use isolates::schedule::OsWake;
    /// let wake = OsWake::new("a", ["/usr/bin/notes", "--run-due"]).unwrap();
    /// assert_eq!(wake.crontab_line(), "* * * * * '/usr/bin/notes' '--run-due'");
    /// ```
    pub fn crontab_line(&self) -> String {
        // cron ends the command at an unescaped `%` (the rest is its
        // stdin) and turns `\%` into `%` before the shell sees it.
        let args: Vec<String> = self
            .command
            .iter()
            .map(|a| sh_quote(a).replace('%', r"\%"))
            .collect();
        format!("* * * * * {}", args.join(" "))
    }

    fn home_dir(&self, below: &[&str]) -> Result<PathBuf, WakeError> {
        if let Some(dir) = &self.dir {
            return Ok(dir.clone());
        }
        let home = std::env::var_os("HOME")
            .or_else(|| std::env::var_os("USERPROFILE"))
            .ok_or_else(|| {
                WakeError::Invalid(
                    "no HOME to put the timer in: set one, or use OsWake::dir".to_owned(),
                )
            })?;
        Ok(below.iter().fold(PathBuf::from(home), |p, d| p.join(d)))
    }
}

/// How far ahead the OS timer is kept while a work runs (see
/// [`WorkManager::wake_with_os`]).
const RUNNING_BACKSTOP: Duration = Duration::from_secs(10 * 60);

impl WorkManager {
    /// Keeps an OS timer ([`OsWake`]) set for this manager's next due
    /// work, and removes it when none is enqueued or running (while a work
    /// runs the timer stays at most 10 minutes ahead, moved on as the run
    /// lasts, so that a headless run takes up a run the app's end cut
    /// short): while the app runs its manager runs the work itself, and
    /// once it is closed (or killed) the OS starts `wake`'s command, the
    /// app's headless mode, at the right time. Sets the timer now, then again on a thread of its own
    /// whenever the next due time changes, and once more when the manager
    /// stops; its [`join`](Self::join) waits for that last one. A timer that
    /// fires while the app runs starts the headless command, which finds
    /// the store held ([`StoreError::Locked`](super::StoreError::Locked))
    /// and exits: the app runs the work.
    ///
    /// The first setting blocks while the platform's tool runs (tens of
    /// milliseconds): call this at start-up, not each frame. Later updates
    /// that fail are logged (`tracing`, target `isolates`).
    ///
    /// # Errors
    ///
    /// As [`OsWake::arm`], for the first setting; nothing is kept updated
    /// then.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use isolates::schedule::*;
    ///
    /// let path = "reminders.db";
    /// let manager = WorkManager::builder(WorkStore::open(path).unwrap())
    ///     .handler_fn("ring", |text: String, _: &WorkContext<'_>| {
    ///         println!("{text}");
    ///         WorkResult::Success(())
    ///     })
    ///     .spawn()
    ///     .unwrap();
    /// let exe = std::env::current_exe().unwrap();
    /// let wake = OsWake::new("org.example.reminders", [exe.to_str().unwrap(), "run"]).unwrap();
    /// if let Err(e) = manager.wake_with_os(wake) {
    ///     eprintln!("reminders will only ring while the app runs: {e}");
    /// }
    /// ```
    pub fn wake_with_os(&self, wake: OsWake) -> Result<(), WakeError> {
        // The store says when the next work is due (an index lookup); the
        // watch only says when to ask again, so nothing is kept per work.
        let (registered, in_place) = crate::oneshot::oneshot();
        let watch = self.watch_changes(WorkQuery::All, registered);
        let reader = std::sync::Arc::clone(&self.shared.reader);
        let next_due = move || match reader.next_due() {
            Ok(at) => Some(at.map(super::clock::from_ms)),
            Err(e) => {
                tracing::warn!(target: "isolates", error = %e,
                    "the work store could not be read for the next due work");
                None
            }
        };
        let mut armed = next_due().flatten();
        wake.arm(armed)?;
        let running = self.shared.live.enter();
        std::thread::Builder::new()
            .name("isolates-wake".into())
            .spawn(move || {
                let _running = running;
                // While a work runs, nothing may be enqueued, yet should the
                // app be killed the run is lost unless a headless run takes
                // it up (a start enqueues interrupted runs again): the timer
                // is kept at most `RUNNING_BACKSTOP` ahead, moved on while
                // the run lasts.
                let rearm = |armed: &mut Option<SystemTime>, running: bool| {
                    let Some(next) = next_due() else {
                        return;
                    };
                    let next = if running {
                        let now = SystemTime::now();
                        let backstop = match *armed {
                            // Set already and not due soon: kept, not
                            // rewritten at each change a run makes (a
                            // progress report, say); the wait below looks
                            // every quarter of `RUNNING_BACKSTOP`, so it is
                            // moved on before it comes due.
                            Some(at)
                                if at >= now + RUNNING_BACKSTOP / 2
                                    && at <= now + RUNNING_BACKSTOP =>
                            {
                                at
                            }
                            _ => now + RUNNING_BACKSTOP,
                        };
                        Some(next.map_or(backstop, |n| n.min(backstop)))
                    } else {
                        next
                    };
                    if next != *armed {
                        *armed = next;
                        if let Err(e) = wake.arm(next) {
                            tracing::warn!(target: "isolates", error = %e,
                                "the OS wake-up could not be updated");
                        }
                    }
                };
                let mut running: std::collections::HashSet<super::WorkId> =
                    std::collections::HashSet::new();
                let note = |running: &mut std::collections::HashSet<super::WorkId>,
                            info: super::WorkInfo| {
                    if info.state == super::WorkState::Running {
                        running.insert(info.id);
                    } else {
                        running.remove(&info.id);
                    }
                };
                // A change written before the watch was in place is read
                // once it is.
                if in_place.recv_until(None).is_ok() {
                    rearm(&mut armed, false);
                }
                // Ends when the manager stops (the watch's sender goes).
                loop {
                    let recheck = (!running.is_empty())
                        .then(|| std::time::Instant::now() + RUNNING_BACKSTOP / 4);
                    match watch.next_or_quiet(recheck) {
                        super::watch::Next::Stopped => break,
                        super::watch::Next::Quiet => {}
                        super::watch::Next::Change(first) => {
                            note(&mut running, *first);
                            for info in watch.drain() {
                                note(&mut running, info);
                            }
                        }
                    }
                    rearm(&mut armed, !running.is_empty());
                }
                // The manager stopped: set the timer once more, whatever
                // it was. A timer that fired while the app ran (and found
                // the store held) is spent, and work due already (waiting
                // on a constraint) is not a change the watch would show.
                if let Some(next) = next_due()
                    && let Err(e) = wake.arm(next)
                {
                    tracing::warn!(target: "isolates", error = %e,
                        "the OS wake-up could not be set at shutdown");
                }
            })
            .map_err(|e| WakeError::Command {
                command: "spawn isolates-wake".to_owned(),
                status: "no thread".to_owned(),
                stderr: e.to_string(),
            })?;
        Ok(())
    }
}

/// Runs `program args`, waiting for it; its failure as a [`WakeError`].
fn run(program: &str, args: &[&str]) -> Result<(), WakeError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| WakeError::Command {
            command: command.clone(),
            status: format!("could not start: {e}"),
            stderr: String::new(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(WakeError::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

fn io_error(path: &Path, e: &std::io::Error) -> WakeError {
    WakeError::Io {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

/// Writes `bytes` to `path` through a file beside it, renamed over it: a
/// reader (systemd, launchd) never sees half a file.
fn write(path: &Path, bytes: &[u8]) -> Result<(), WakeError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(|e| io_error(&tmp, &e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_error(path, &e))
}

fn remove(path: &Path) -> Result<(), WakeError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(path, &e)),
        _ => Ok(()),
    }
}

/// Whether `program` is an absolute path on Unix (`/...`) or Windows
/// (`C:\...`, `\\server\...`), whatever the platform this runs on: the
/// definitions of each platform are written (and tested) everywhere.
fn looks_absolute(program: &str) -> bool {
    let drive = match program.as_bytes() {
        [letter, b':', sep, ..] => letter.is_ascii_alphabetic() && matches!(sep, b'\\' | b'/'),
        _ => false,
    };
    drive || program.starts_with('/') || program.starts_with(r"\\")
}

/// One argument for a POSIX shell: single-quoted.
fn sh_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_quoted_for_a_shell_and_xml() {
        assert_eq!(sh_quote("it's"), r#"'it'\''s'"#);
        assert_eq!(xml_escape(r#"<a & 'b'>"#), "&lt;a &amp; &apos;b&apos;&gt;");
    }
}
