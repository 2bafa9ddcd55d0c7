//! Linux: a systemd user timer and service pair, loaded with `systemctl
//! --user`.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::utc::Utc;
use super::{OsWake, WakeError, io_error, remove, run, write};

/// The systemd unit pair for an [`OsWake`]: a timer and the service it
/// starts.
///
/// # Examples
///
/// See [`OsWake::systemd_units`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SystemdUnits {
    /// The timer's file name (`<app id>-work.timer`).
    pub timer_name: String,
    /// The timer unit.
    pub timer: String,
    /// The service's file name (`<app id>-work.service`).
    pub service_name: String,
    /// The service unit: a one-shot run of the command.
    pub service: String,
}

impl OsWake {
    /// The systemd timer and service that start the command at `at` (in
    /// UTC, rounded up to the second: never early).
    ///
    /// # Examples
    ///
    /// See [`OsWake`].
    pub fn systemd_units(&self, at: SystemTime) -> SystemdUnits {
        let base = format!("{}-work", self.app_id);
        let exec: Vec<String> = self.command.iter().map(|a| systemd_quote(a)).collect();
        let service = format!(
            "# Written by isolates (OsWake) for {id}; rewritten at every change.\n\
             [Unit]\n\
             Description=Scheduled work of {id} (headless run)\n\
             \n\
             [Service]\n\
             Type=oneshot\n\
             ExecStart={exec}\n",
            id = self.app_id,
            exec = exec.join(" "),
        );
        let timer = format!(
            "# Written by isolates (OsWake) for {id}; rewritten at every change.\n\
             [Unit]\n\
             Description=Wakes {id} for its next scheduled work\n\
             \n\
             [Timer]\n\
             OnCalendar={at} UTC\n\
             Persistent=true\n\
             AccuracySec=1s\n\
             Unit={base}.service\n\
             \n\
             [Install]\n\
             WantedBy=timers.target\n",
            id = self.app_id,
            at = Utc::ceil(at).systemd(),
        );
        SystemdUnits {
            timer_name: format!("{base}.timer"),
            timer,
            service_name: format!("{base}.service"),
            service,
        }
    }

    fn systemd_dir(&self) -> Result<PathBuf, WakeError> {
        match (&self.dir, std::env::var_os("XDG_CONFIG_HOME")) {
            (None, Some(config)) if Path::new(&config).is_absolute() => {
                Ok(PathBuf::from(config).join("systemd").join("user"))
            }
            _ => self.home_dir(&[".config", "systemd", "user"]),
        }
    }

    pub(super) fn arm_systemd(&self, at: Option<SystemTime>) -> Result<(), WakeError> {
        let dir = self.systemd_dir()?;
        let units = self.systemd_units(at.unwrap_or(UNIX_EPOCH));
        let (timer, service) = (dir.join(&units.timer_name), dir.join(&units.service_name));
        let systemctl = |args: &[&str]| run("systemctl", &[&["--user"], args].concat());
        let Some(_) = at else {
            // Nothing due: stop and remove the timer, if there is one.
            if !timer.exists() && !service.exists() {
                return Ok(());
            }
            let stopped = systemctl(&["disable", "--now", &units.timer_name]);
            remove(&timer)?;
            remove(&service)?;
            systemctl(&["daemon-reload"])?;
            return stopped;
        };
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, &e))?;
        write(&service, units.service.as_bytes())?;
        write(&timer, units.timer.as_bytes())?;
        if let Err(e) = systemctl(&["daemon-reload"]) {
            remove(&timer)?;
            remove(&service)?;
            let detail = match e {
                WakeError::Command { status, stderr, .. } => {
                    let said = stderr.trim().lines().next().unwrap_or("").to_owned();
                    if said.is_empty() { status } else { said }
                }
                other => other.to_string(),
            };
            return Err(WakeError::NoUserSystemd {
                detail,
                crontab: self.crontab_line(),
            });
        }
        systemctl(&["enable", &units.timer_name])?;
        // Restart, not start: a running timer would keep its old time.
        systemctl(&["restart", &units.timer_name])
    }
}

/// One argument of a systemd `ExecStart=`: double-quoted, with `\` and `"`
/// escaped, and `%` (specifiers) and `$` (variables) doubled.
fn systemd_quote(arg: &str) -> String {
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('"');
    for c in arg.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_arguments_are_quoted() {
        assert_eq!(
            systemd_quote(r#"a "b" 100% $HOME\"#),
            r#""a \"b\" 100%% $$HOME\\""#
        );
    }
}
