//! OS wake-ups (`OsWake`): the systemd units, LaunchAgent and Task
//! Scheduler task are compared with golden files in `tests/golden/wake/`
//! (`ISOLATES_BLESS=1` rewrites them: review the diff); the systemd pair
//! passes `systemd-analyze verify` where the tool works (else the test
//! says why it skipped); a fake `systemctl` first on `PATH` (in a child
//! process of this test binary) records the calls of arming, re-arming and
//! removing a timer, of a work manager keeping it set, and of a machine
//! without a user systemd. The launchd and Task Scheduler definitions are
//! not loaded on their platforms here.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::wait_until;
use isolates::schedule::*;

const APP: &str = "org.example.reminders";
/// 2026-12-02T01:30:00.250Z: the units round it up to 01:30:01.
fn at() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_796_175_000_250)
}

/// 2126-12-02T01:30:00.250Z: a time to arm for that stays in the future
/// (`arm` moves a past time to a minute from now).
fn far() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(4_951_848_600_250)
}

fn golden_wake() -> OsWake {
    OsWake::new(
        APP,
        [
            "/usr/local/bin/reminders",
            "run",
            "--store",
            "/home/me/My Reminders/100% \"done\" $HOME.db",
        ],
    )
    .unwrap()
}

fn golden(name: &str, text: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/wake")
        .join(name);
    if std::env::var_os("ISOLATES_BLESS").is_some() {
        std::fs::write(&path, text).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (ISOLATES_BLESS=1 writes it)", path.display()));
    assert!(
        want == text,
        "{} differs from what OsWake writes now:\n{text}\n(ISOLATES_BLESS=1 rewrites it; review the diff)",
        path.display()
    );
}

#[test]
fn systemd_units_match_their_golden_files() {
    let units = golden_wake().systemd_units(at());
    assert_eq!(units.timer_name, "org.example.reminders-work.timer");
    assert_eq!(units.service_name, "org.example.reminders-work.service");
    golden(&units.timer_name, &units.timer);
    golden(&units.service_name, &units.service);
}

#[test]
fn the_launch_agent_matches_its_golden_file() {
    let now = at() - Duration::from_secs(3600);
    golden(
        "org.example.reminders.work.plist",
        &golden_wake().launchd_plist(at(), now),
    );
}

#[test]
fn the_scheduled_task_matches_its_golden_file() {
    let wake = OsWake::new(
        APP,
        [
            r"C:\Program Files\Reminders\reminders.exe",
            "run",
            "--store",
            r#"C:\Users\me\My Reminders\a "b" & c.db"#,
        ],
    )
    .unwrap();
    golden("org.example.reminders.work.xml", &wake.task_xml(at()));
    let utf16 = wake.task_xml_utf16(at());
    let units: Vec<u16> = utf16[2..]
        .chunks(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect();
    assert_eq!(String::from_utf16(&units).unwrap(), wake.task_xml(at()));
}

#[test]
fn ids_and_commands_that_cannot_be_written_are_refused() {
    for id in ["", "my app", "-x", ".x", "a/b", &"a".repeat(65)] {
        assert!(
            matches!(OsWake::new(id, ["/bin/a"]), Err(WakeError::Invalid(_))),
            "{id:?}"
        );
    }
    let none: [&str; 0] = [];
    assert!(matches!(OsWake::new(APP, none), Err(WakeError::Invalid(_))));
    let relative = OsWake::new(APP, ["reminders"]).unwrap_err();
    assert!(relative.to_string().contains("current_exe"), "{relative}");
    let newline = OsWake::new(APP, ["/bin/a", "x\nExecStartPost=/bin/rm"]).unwrap_err();
    assert!(
        newline.to_string().contains("control character"),
        "{newline}"
    );
}

/// `systemd-analyze verify` on units that start this test binary, if the
/// tool is here and works in this environment.
#[test]
fn generated_units_pass_systemd_analyze_verify() {
    let dir = TempDir::new("verify");
    let exe = std::env::current_exe().unwrap();
    let wake = OsWake::new(APP, [exe.to_str().unwrap(), "--run-due", "100%", "$HOME"]).unwrap();
    let units = wake.systemd_units(at());
    let timer = dir.0.join(&units.timer_name);
    let service = dir.0.join(&units.service_name);
    std::fs::write(&timer, &units.timer).unwrap();
    std::fs::write(&service, &units.service).unwrap();
    let out = match Command::new("systemd-analyze")
        .arg("verify")
        .args([&timer, &service])
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            println!("SKIPPED: systemd-analyze is not installed ({e}): install Debian's systemd");
            return;
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("Failed to initialize manager") {
        println!(
            "SKIPPED: systemd-analyze cannot run here: {}",
            stderr.trim()
        );
        return;
    }
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    // And it does refuse a broken timer: the check can fail.
    std::fs::write(
        &timer,
        units.timer.replace("OnCalendar=2026", "OnCalendar=20x6"),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args([&timer, &service])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a broken timer passed verify");
    println!("VERIFIED: the generated units pass systemd-analyze verify");
}

// ---- a fake systemctl on PATH, in a child process -------------------------

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "isolates-schedule-wake-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const CHILD: &str = "ISOLATES_TEST_WAKE_CHILD";

/// A `systemctl` that logs its arguments, one call a line, and fails
/// `daemon-reload` as a machine without a user bus does when `no-bus` is
/// in its directory.
fn fake_systemctl(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = format!(
        "#!/bin/sh\n\
         echo \"$*\" >> '{log}'\n\
         if [ -e '{dir}/no-bus' ] && [ \"$2\" = daemon-reload ]; then\n\
             echo 'Failed to connect to bus: No medium found' >&2\n\
             exit 1\n\
         fi\n\
         exit 0\n",
        log = dir.join("calls.log").display(),
        dir = dir.display(),
    );
    let path = bin.join("systemctl");
    std::fs::write(&path, script).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

fn calls(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("calls.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Runs the test `child_entry` in a child with the fake first on `PATH`
/// and `XDG_CONFIG_HOME` in `dir`; returns its stdout.
fn child(dir: &Path, what: &str) -> String {
    let bin = fake_systemctl(dir);
    let path = std::env::join_paths(
        std::iter::once(bin).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD, what)
        .env("PATH", path)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child {what}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn wake() -> OsWake {
    OsWake::new(APP, ["/usr/local/bin/reminders", "run"]).unwrap()
}

#[test]
fn child_entry() {
    let Ok(what) = std::env::var(CHILD) else {
        return; // run as a test of its own: nothing to do
    };
    match what.as_str() {
        "arm" => wake().arm(Some(far())).unwrap(),
        "rearm" => wake().arm(Some(far() + Duration::from_secs(60))).unwrap(),
        "disarm" => wake().arm(None).unwrap(),
        "no-bus" => {
            let err = wake().arm(Some(far())).unwrap_err();
            println!("ERROR {err}");
            assert!(matches!(err, WakeError::NoUserSystemd { .. }), "{err:?}");
        }
        "manager" => {
            let manager = WorkManager::builder(WorkStore::in_memory().unwrap())
                .handler_fn(
                    "ring",
                    |(): (), _: &WorkContext<'_>| WorkResult::Success(()),
                )
                .spawn()
                .unwrap();
            manager.wake_with_os(wake()).unwrap();
            let timer = Path::new(&std::env::var_os("XDG_CONFIG_HOME").unwrap())
                .join("systemd/user/org.example.reminders-work.timer");
            assert!(!timer.exists(), "nothing due: no timer");
            // 2127-01-01T00:00:00Z, then an earlier one.
            let first = UNIX_EPOCH + Duration::from_secs(4_954_435_200);
            manager
                .enqueue(WorkRequest::at("ring", first))
                .wait()
                .unwrap();
            let holds =
                |text: &str| std::fs::read_to_string(&timer).is_ok_and(|t| t.contains(text));
            assert!(wait_until(
                || holds("OnCalendar=2127-01-01 00:00:00 UTC"),
                Duration::from_secs(30)
            ));
            let earlier = first - Duration::from_secs(3600);
            manager
                .enqueue(WorkRequest::at("ring", earlier))
                .wait()
                .unwrap();
            assert!(wait_until(
                || holds("OnCalendar=2126-12-31 23:00:00 UTC"),
                Duration::from_secs(30)
            ));
            manager.cancel(WorkQuery::All).wait().unwrap();
            assert!(
                wait_until(|| !timer.exists(), Duration::from_secs(30)),
                "nothing due: removed"
            );
            // Set again; the shutdown sets it once more, whatever it was.
            manager
                .enqueue(WorkRequest::at("ring", first))
                .wait()
                .unwrap();
            assert!(wait_until(
                || holds("OnCalendar=2127-01-01 00:00:00 UTC"),
                Duration::from_secs(30)
            ));
            manager.stop();
            manager.join(Duration::MAX);
            assert!(
                holds("OnCalendar=2127-01-01 00:00:00 UTC"),
                "left set for the closed app"
            );
        }
        other => panic!("unknown child {other}"),
    }
    println!("CHILD OK");
}

#[test]
fn arming_writes_the_units_and_calls_systemctl() {
    let dir = TempDir::new("arm");
    let units = dir.0.join("config/systemd/user");
    assert!(child(&dir.0, "arm").contains("CHILD OK"));
    let timer = std::fs::read_to_string(units.join("org.example.reminders-work.timer")).unwrap();
    assert!(
        timer.contains("OnCalendar=2126-12-02 01:30:01 UTC\n"),
        "{timer}"
    );
    assert!(units.join("org.example.reminders-work.service").exists());
    let t = "org.example.reminders-work.timer";
    assert_eq!(
        calls(&dir.0),
        [
            "--user daemon-reload".to_owned(),
            format!("--user enable {t}"),
            format!("--user restart {t}"),
        ]
    );

    // Re-armed for another time: rewritten and restarted.
    child(&dir.0, "rearm");
    let timer = std::fs::read_to_string(units.join(t)).unwrap();
    assert!(
        timer.contains("OnCalendar=2126-12-02 01:31:01 UTC\n"),
        "{timer}"
    );
    assert_eq!(
        calls(&dir.0)[3..],
        [
            "--user daemon-reload".to_owned(),
            format!("--user enable {t}"),
            format!("--user restart {t}"),
        ]
    );

    // Nothing due: stopped, disabled, removed.
    child(&dir.0, "disarm");
    assert!(!units.join(t).exists());
    assert!(!units.join("org.example.reminders-work.service").exists());
    assert_eq!(
        calls(&dir.0)[6..],
        [
            format!("--user disable --now {t}"),
            "--user daemon-reload".to_owned(),
        ]
    );
    // And again: nothing to remove, no calls.
    child(&dir.0, "disarm");
    assert_eq!(calls(&dir.0).len(), 8);
}

#[test]
fn without_a_user_systemd_the_error_says_what_to_do() {
    let dir = TempDir::new("nobus");
    std::fs::write(dir.0.join("no-bus"), "").unwrap();
    let out = child(&dir.0, "no-bus");
    assert!(out.contains("CHILD OK"), "{out}");
    assert!(out.contains("Failed to connect to bus"), "{out}");
    assert!(out.contains("crontab -e"), "{out}");
    assert!(
        out.contains("* * * * * '/usr/local/bin/reminders' 'run'"),
        "{out}"
    );
    let units = dir.0.join("config/systemd/user");
    assert!(
        !units.join("org.example.reminders-work.timer").exists(),
        "removed again"
    );
    assert_eq!(calls(&dir.0), ["--user daemon-reload"]);
}

#[test]
fn a_manager_keeps_the_timer_at_its_next_due_work() {
    let dir = TempDir::new("manager");
    let out = child(&dir.0, "manager");
    assert!(out.contains("CHILD OK"), "{out}");
    let calls = calls(&dir.0);
    let t = "org.example.reminders-work.timer";
    let restarts = calls
        .iter()
        .filter(|c| **c == format!("--user restart {t}"))
        .count();
    // Two times, removed, set again, and set at shutdown.
    assert_eq!(restarts, 4, "{calls:?}");
    assert_eq!(
        calls.last().unwrap(),
        &format!("--user restart {t}"),
        "{calls:?}"
    );
    assert!(
        calls.contains(&format!("--user disable --now {t}")),
        "{calls:?}"
    );
}
