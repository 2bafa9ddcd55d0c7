//! macOS: a LaunchAgent, loaded with `launchctl`.

use std::time::SystemTime;

use super::utc::Utc;
use super::{OsWake, WakeError, io_error, remove, run, write, xml_escape};

impl OsWake {
    /// The LaunchAgent (macOS) that starts the command at `at`, `now`
    /// being the time it is loaded: `StartInterval` is the whole seconds
    /// between them (at least 1), as launchd has no absolute time and its
    /// calendar intervals are in local time. Named `<app id>.work`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use isolates::schedule::OsWake;
    ///
    /// let wake = OsWake::new("org.example.notes", ["/Applications/Notes.app/Contents/MacOS/notes", "--run-due"]).unwrap();
    /// let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
    /// let plist = wake.launchd_plist(now + Duration::from_secs(90), now);
    /// assert!(plist.contains("<key>StartInterval</key>\n    <integer>90</integer>"));
    /// assert!(plist.contains("<string>org.example.notes.work</string>"));
    /// ```
    pub fn launchd_plist(&self, at: SystemTime, now: SystemTime) -> String {
        let secs = Utc::ceil(at)
            .secs
            .saturating_sub(Utc::ceil(now).secs)
            .max(1);
        let args: String = self
            .command
            .iter()
            .map(|a| format!("        <string>{}</string>\n", xml_escape(a)))
            .collect();
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \
             \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
             <!-- Written by isolates (OsWake) for {id}; rewritten at every change. -->\n\
             <plist version=\"1.0\">\n\
             <dict>\n    \
                 <key>Label</key>\n    \
                 <string>{id}.work</string>\n    \
                 <key>ProgramArguments</key>\n    \
                 <array>\n{args}    </array>\n    \
                 <key>StartInterval</key>\n    \
                 <integer>{secs}</integer>\n    \
                 <key>RunAtLoad</key>\n    \
                 <false/>\n    \
                 <key>ProcessType</key>\n    \
                 <string>Background</string>\n\
             </dict>\n\
             </plist>\n",
            id = xml_escape(&self.app_id),
        )
    }

    pub(super) fn arm_launchd(
        &self,
        at: Option<SystemTime>,
        now: SystemTime,
    ) -> Result<(), WakeError> {
        let dir = self.home_dir(&["Library", "LaunchAgents"])?;
        let plist = dir.join(format!("{}.work.plist", self.app_id));
        let path = plist.to_string_lossy().into_owned();
        if plist.exists() {
            // Not loaded (a first run after a reboot) is fine.
            let _ = run("launchctl", &["unload", "-w", &path]);
        }
        let Some(at) = at else {
            return remove(&plist);
        };
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, &e))?;
        write(&plist, self.launchd_plist(at, now).as_bytes())?;
        run("launchctl", &["load", "-w", &path])
    }
}
