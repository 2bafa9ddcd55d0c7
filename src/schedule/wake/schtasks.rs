//! Windows: a Task Scheduler task from an XML definition, created with
//! `schtasks`.

use std::time::SystemTime;

use super::utc::Utc;
use super::{OsWake, WakeError, run, write, xml_escape};

impl OsWake {
    /// The Task Scheduler task (Windows) that starts the command at `at`
    /// (UTC, rounded up to the second), with `StartWhenAvailable`: a start
    /// missed while the machine was off runs as soon as it can. `schtasks`
    /// reads it as UTF-16 ([`task_xml_utf16`](Self::task_xml_utf16)).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use isolates::schedule::OsWake;
    ///
    /// let wake = OsWake::new("org.example.notes", [r"C:\Program Files\Notes\notes.exe", "--run-due"]).unwrap();
    /// let xml = wake.task_xml(UNIX_EPOCH + Duration::from_secs(1_764_639_000));
    /// assert!(xml.contains("<StartBoundary>2025-12-02T01:30:00Z</StartBoundary>"));
    /// assert!(xml.contains(r"<Command>C:\Program Files\Notes\notes.exe</Command>"));
    /// assert!(xml.contains("<StartWhenAvailable>true</StartWhenAvailable>"));
    /// ```
    pub fn task_xml(&self, at: SystemTime) -> String {
        let args: Vec<String> = self.command[1..].iter().map(|a| windows_quote(a)).collect();
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-16\"?>\n\
             <!-- Written by isolates (OsWake) for {id}; rewritten at every change. -->\n\
             <Task version=\"1.2\" xmlns=\"http://schemas.microsoft.com/windows/2004/02/mit/task\">\n  \
               <RegistrationInfo>\n    \
                 <Description>Wakes {id} for its next scheduled work</Description>\n  \
               </RegistrationInfo>\n  \
               <Triggers>\n    \
                 <TimeTrigger>\n      \
                   <StartBoundary>{at}</StartBoundary>\n      \
                   <Enabled>true</Enabled>\n    \
                 </TimeTrigger>\n  \
               </Triggers>\n  \
               <Principals>\n    \
                 <Principal id=\"Author\">\n      \
                   <LogonType>InteractiveToken</LogonType>\n      \
                   <RunLevel>LeastPrivilege</RunLevel>\n    \
                 </Principal>\n  \
               </Principals>\n  \
               <Settings>\n    \
                 <StartWhenAvailable>true</StartWhenAvailable>\n    \
                 <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>\n    \
                 <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>\n    \
                 <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>\n    \
                 <ExecutionTimeLimit>PT10M</ExecutionTimeLimit>\n  \
               </Settings>\n  \
               <Actions Context=\"Author\">\n    \
                 <Exec>\n      \
                   <Command>{program}</Command>\n      \
                   <Arguments>{args}</Arguments>\n    \
                 </Exec>\n  \
               </Actions>\n\
             </Task>\n",
            id = xml_escape(&self.app_id),
            at = Utc::ceil(at).iso(),
            program = xml_escape(&self.command[0]),
            args = xml_escape(&args.join(" ")),
        )
    }

    /// [`task_xml`](Self::task_xml) as `schtasks` reads a file: UTF-16,
    /// little-endian, with a byte order mark.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::UNIX_EPOCH;
    /// # use isolates::schedule::OsWake;
    /// let wake = OsWake::new("a", ["/a"]).unwrap();
    /// assert_eq!(&wake.task_xml_utf16(UNIX_EPOCH)[..2], [0xFF, 0xFE]);
    /// ```
    pub fn task_xml_utf16(&self, at: SystemTime) -> Vec<u8> {
        let mut bytes = vec![0xFF, 0xFE];
        for unit in self.task_xml(at).encode_utf16() {
            bytes.extend_from_slice(&unit.to_le_bytes());
        }
        bytes
    }

    pub(super) fn arm_schtasks(&self, at: Option<SystemTime>) -> Result<(), WakeError> {
        let name = format!("{}.work", self.app_id);
        let Some(at) = at else {
            // Absent already is fine.
            let _ = run("schtasks", &["/Delete", "/TN", &name, "/F"]);
            return Ok(());
        };
        let dir = match &self.dir {
            Some(dir) => dir.clone(),
            None => std::env::temp_dir(),
        };
        let file = dir.join(format!("{name}.xml"));
        write(&file, &self.task_xml_utf16(at))?;
        let path = file.to_string_lossy().into_owned();
        let created = run("schtasks", &["/Create", "/TN", &name, "/XML", &path, "/F"]);
        if self.dir.is_none() {
            let _ = std::fs::remove_file(&file);
        }
        created
    }
}

/// One argument for `CommandLineToArgvW`: quoted when it holds a space, a
/// tab or a quote (or is empty), backslashes before a quote doubled.
fn windows_quote(arg: &str) -> String {
    if !arg.is_empty() && !arg.contains([' ', '\t', '"']) {
        return arg.to_owned();
    }
    let mut out = String::from("\"");
    let mut backslashes = 0;
    for c in arg.chars() {
        match c {
            '\\' => backslashes += 1,
            '"' => {
                out.extend(std::iter::repeat_n('\\', backslashes * 2 + 1));
                out.push('"');
                backslashes = 0;
            }
            c => {
                out.extend(std::iter::repeat_n('\\', backslashes));
                out.push(c);
                backslashes = 0;
            }
        }
    }
    out.extend(std::iter::repeat_n('\\', backslashes * 2));
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_quoted_for_command_line_to_argv() {
        assert_eq!(windows_quote("plain"), "plain");
        assert_eq!(windows_quote(""), "\"\"");
        assert_eq!(windows_quote(r#"a b"#), r#""a b""#);
        assert_eq!(windows_quote(r#"say "hi""#), r#""say \"hi\"""#);
        assert_eq!(
            windows_quote(r#"C:\dir with space\"#),
            r#""C:\dir with space\\""#
        );
    }
}
