//! A reminders CLI: it schedules reminders as alarms in a work store and
//! exits; a later headless run (started by an OS timer, cron, or by hand)
//! rings the ones that are due, even though no reminders process ran in
//! between. A reminder rings as a line on stdout, and as a desktop
//! notification where `notify-send` (Linux) or `osascript` (macOS) can show
//! one.
//!
//! ```text
//! cargo run --features bundled-sqlite --example reminders -- add +25m "take the bread out"
//! cargo run --features bundled-sqlite --example reminders -- add @1798761600 "happy new year" --skip-after 3600
//! cargo run --features bundled-sqlite --example reminders -- list
//! cargo run --features bundled-sqlite --example reminders -- run            # what the OS timer starts
//! cargo run --features bundled-sqlite --example reminders -- add +1h "stretch" --wake   # and set the OS timer
//! cargo run --features bundled-sqlite --example reminders -- --short        # CI: add, exit, ring from a later run
//! ```
//!
//! `--wake` keeps a systemd user timer (Linux), a LaunchAgent (macOS) or a
//! scheduled task (Windows) set for the next reminder, starting
//! `reminders run --wake`; without a user systemd it says so and prints the
//! crontab line to use instead. `--store PATH` picks the store (default: in
//! the temp directory).

use std::process::{Command, ExitCode};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use isolates::schedule::{
    MissedAlarm, OsWake, StoreError, WorkContext, WorkManager, WorkManagerBuilder, WorkRequest,
    WorkResult, WorkState, WorkStore,
};

const APP_ID: &str = "org.isolates.reminders";
/// The tag that carries a reminder's text.
const TEXT_TAG: &str = "text: ";

/// Rings a reminder: a line on stdout, and a notification where one can
/// be shown.
fn ring(text: String, _: &WorkContext<'_>) -> WorkResult<()> {
    println!("reminder: {text}");
    notify(&text);
    WorkResult::Success(())
}

/// A desktop notification through the platform's own tool, if it is there
/// and a desktop is: no library needed, and no failure if not.
fn notify(text: &str) {
    let shown = if cfg!(target_os = "macos") {
        let script = format!(
            "display notification {:?} with title \"Reminder\"",
            text.replace('\\', "")
        );
        Command::new("osascript").args(["-e", &script]).output()
    } else if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some()
    {
        Command::new("notify-send")
            .args(["--app-name=reminders", "Reminder", text])
            .output()
    } else {
        return;
    };
    if !shown.is_ok_and(|out| out.status.success()) {
        eprintln!("(no desktop notification: the line above is the reminder)");
    }
}

fn builder(store: WorkStore) -> WorkManagerBuilder {
    WorkManager::builder(store).handler_fn("remind", ring)
}

/// `+90s`, `+25m`, `+2h`, `+1d` from now, or `@<unix seconds>`.
fn parse_when(when: &str) -> Result<SystemTime, String> {
    if let Some(secs) = when.strip_prefix('@') {
        let secs: u64 = secs
            .parse()
            .map_err(|_| format!("{when:?}: @ takes Unix seconds"))?;
        return Ok(UNIX_EPOCH + Duration::from_secs(secs));
    }
    let Some(rest) = when.strip_prefix('+') else {
        return Err(format!(
            "{when:?}: say when as +90s, +25m, +2h, +1d or @<unix seconds>"
        ));
    };
    let split = rest.len().saturating_sub(1);
    let (n, unit) = rest.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{when:?}: a number comes after +"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("{when:?}: the unit is s, m, h or d")),
    };
    Ok(SystemTime::now() + Duration::from_secs(secs))
}

fn wake() -> Result<OsWake, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let exe = exe.to_str().ok_or("the executable's path is not UTF-8")?;
    let store = store_path();
    let store = store.to_str().ok_or("the store's path is not UTF-8")?;
    OsWake::new(APP_ID, [exe, "--store", store, "run", "--wake"]).map_err(|e| e.to_string())
}

fn store_path() -> std::path::PathBuf {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--store"
            && let Some(path) = args.next()
        {
            return path.into();
        }
    }
    std::env::temp_dir().join("isolates-reminders.db")
}

fn show(t: SystemTime) -> String {
    match t.duration_since(SystemTime::now()) {
        Ok(d) => format!("in {:.0} s", d.as_secs_f64()),
        Err(e) => format!("{:.0} s ago", e.duration().as_secs_f64()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut rest: Vec<&str> = Vec::new();
    let (mut wake_os, mut skip_after, mut budget) = (false, None, Duration::from_secs(30));
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--store" => {
                it.next();
            }
            "--wake" => wake_os = true,
            "--short" => return short(),
            "--skip-after" => match it.next().and_then(|s| s.parse().ok()) {
                Some(secs) => skip_after = Some(Duration::from_secs(secs)),
                None => return fail("--skip-after takes seconds"),
            },
            "--budget" => match it.next().and_then(|s| s.parse().ok()) {
                Some(secs) => budget = Duration::from_secs(secs),
                None => return fail("--budget takes seconds"),
            },
            other => rest.push(other),
        }
    }
    let result = match rest.as_slice() {
        ["add", when, text @ ..] if !text.is_empty() => {
            add(when, &text.join(" "), skip_after, wake_os)
        }
        ["list"] => list(),
        ["run"] => run(budget, wake_os),
        _ => Err(
            "usage: reminders [--store PATH] add <+90s|+25m|+2h|+1d|@unix> <text> \
                  [--skip-after SECS] [--wake] | list | run [--budget SECS] [--wake] | --short"
                .to_owned(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(why: &str) -> ExitCode {
    eprintln!("reminders: {why}");
    ExitCode::FAILURE
}

fn open() -> Result<WorkStore, String> {
    // Another reminders command may hold the store for a moment.
    WorkStore::open_timeout(store_path(), Duration::from_secs(10)).map_err(|e| e.to_string())
}

fn add(when: &str, text: &str, skip_after: Option<Duration>, wake_os: bool) -> Result<(), String> {
    let at = parse_when(when)?;
    let manager = builder(open()?).spawn().map_err(|e| e.to_string())?;
    // The text goes in a tag too, for `list` (a work's input is its
    // handler's alone).
    let mut request = WorkRequest::at("remind", at)
        .input(text)
        .tag(&format!("{TEXT_TAG}{text}"));
    if let Some(window) = skip_after {
        request = request.if_missed(MissedAlarm::SkipAfter(window));
    }
    let id = manager
        .enqueue(request)
        .wait()
        .map_err(|e| e.to_string())?
        .ids()[0];
    println!("reminder {id} set, due {}", show(at));
    if wake_os && let Err(e) = manager.wake_with_os(wake()?) {
        eprintln!("reminders: no OS wake-up, run `reminders run` yourself: {e}");
    }
    // Closes the store: the reminder waits there for a later run.
    manager.stop();
    manager.join(Duration::MAX);
    Ok(())
}

fn list() -> Result<(), String> {
    let store = open()?;
    for info in store.works().map_err(|e| e.to_string())? {
        let when = match (info.state, info.next_run_at) {
            (WorkState::Enqueued, Some(at)) => format!("due {}", show(at)),
            (state, _) => format!("{state:?}").to_lowercase(),
        };
        let text = info
            .tags
            .iter()
            .find_map(|t| t.strip_prefix(TEXT_TAG))
            .unwrap_or("");
        println!("{:>4}  {when:<16} {text}", info.id.to_string());
    }
    Ok(())
}

fn run(budget: Duration, wake_os: bool) -> Result<(), String> {
    let store = match WorkStore::open(store_path()) {
        Ok(store) => store,
        Err(StoreError::Locked { .. }) => {
            // The app (or another run) holds the store and rings its own
            // reminders: nothing to do here.
            println!("the store is in use: its owner rings the reminders");
            return Ok(());
        }
        Err(e) => return Err(e.to_string()),
    };
    let report = builder(store).run_due(budget).map_err(|e| e.to_string())?;
    println!(
        "rang {} reminder(s){}; next {}",
        report
            .ran
            .iter()
            .filter(|i| i.state == WorkState::Succeeded)
            .count(),
        if report.stopped.is_empty() {
            String::new()
        } else {
            format!(", {} stopped by the budget", report.stopped.len())
        },
        report.next_due.map_or("none".to_owned(), show),
    );
    if wake_os && let Err(e) = wake()?.arm(report.next_due) {
        eprintln!("reminders: the OS wake-up could not be set: {e}");
    }
    Ok(())
}

/// CI's short mode: schedules two reminders in a fresh store with one
/// process, exits it, and has a later process ring the one that is due.
fn short() -> ExitCode {
    let dir = std::env::temp_dir().join(format!("isolates-reminders-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return fail(&format!("{}: {e}", dir.display()));
    }
    let store = dir.join("reminders.db");
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return fail(&e.to_string()),
    };
    let me = |args: &[&str]| -> Result<String, String> {
        let out = Command::new(&exe)
            .arg("--store")
            .arg(&store)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        print!("{stdout}");
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "`reminders {}` failed: {}",
                args.join(" "),
                out.status
            ))
        }
    };
    let check = || -> Result<(), String> {
        let due = SystemTime::now() + Duration::from_secs(1);
        println!("$ reminders add +1s \"stretch your legs\"; add +1h \"tea\"");
        me(&["add", "+1s", "stretch your legs"])?;
        me(&["add", "+1h", "tea"])?;
        // No reminders process runs now. Wait for the first one's time.
        while let Ok(left) = due.duration_since(SystemTime::now()) {
            std::thread::sleep(left + Duration::from_millis(5));
        }
        println!("$ reminders run   (as the OS timer would start it)");
        let out = me(&["run", "--budget", "30"])?;
        if !out.contains("reminder: stretch your legs") {
            return Err("the due reminder did not ring".to_owned());
        }
        if out.contains("reminder: tea") {
            return Err("a reminder rang an hour early".to_owned());
        }
        println!("$ reminders run   (again: nothing is due)");
        let again = me(&["run", "--budget", "30"])?;
        if again.contains("reminder:") {
            return Err("a reminder rang twice".to_owned());
        }
        let listed = me(&["list"])?;
        if !(listed.contains("succeeded") && listed.contains("due in")) {
            return Err("the store does not show one rung and one waiting".to_owned());
        }
        Ok(())
    };
    let result = check();
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(()) => {
            println!("reminders: ok (scheduled, exited, rung by a later run, once)");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}
