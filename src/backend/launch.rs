//! How a child process is launched: [`ProcessOptions`], shared by process
//! isolates, process pools and `process::run`, re-exported as
//! `isolates::process::ProcessOptions`.

use std::time::Duration;

/// How a process isolate's child runs: its memory limit, how a kill ends
/// it, how long it may take to start.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::process::ProcessOptions;
///
/// let options = ProcessOptions::new()
///     .max_memory(256 << 20)
///     .kill_grace(Duration::from_millis(100))
///     .start_timeout(Duration::from_secs(10));
/// assert_eq!(options.memory_limit(), Some(256 << 20));
/// ```
#[derive(Clone, Debug)]
pub struct ProcessOptions {
    pub(crate) max_memory: Option<u64>,
    pub(crate) kill_grace: Duration,
    pub(crate) start_timeout: Duration,
    pub(crate) stop_timeout: Duration,
    pub(crate) program: Option<(std::path::PathBuf, Vec<std::ffi::OsString>)>,
}

impl Default for ProcessOptions {
    fn default() -> Self {
        ProcessOptions {
            max_memory: None,
            kill_grace: Duration::ZERO,
            start_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(5),
            program: None,
        }
    }
}

impl ProcessOptions {
    /// What a child's spawn needs of these options.
    #[cfg(target_os = "linux")]
    pub(crate) fn launch(&self) -> crate::backend::process::parent::Launch<'_> {
        crate::backend::process::parent::Launch {
            program: self.program.as_ref(),
            max_memory: self.max_memory,
            kill_grace: self.kill_grace,
        }
    }

    /// No memory limit, an immediate SIGKILL, 30 s to start, 5 s to stop.
    ///
    /// # Examples
    ///
    /// ```
    /// let options = isolates::process::ProcessOptions::new();
    /// assert_eq!(options.memory_limit(), None);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Limits the child's address space to `bytes` (`RLIMIT_AS`), enforced
    /// by the kernel: an allocation beyond it fails, the child aborts, and
    /// the isolate exits
    /// [`Crash::OutOfMemory`](crate::Crash::OutOfMemory).
    ///
    /// It bounds address space, not resident memory: the executable, thread
    /// stacks (8 MiB reserved each) and allocator arenas count. Leave
    /// 64 MiB or more above what the isolate itself needs. (The child runs
    /// with `MALLOC_ARENA_MAX=2` under a limit, unless the environment sets
    /// it.)
    ///
    /// # Examples
    ///
    /// ```
    /// let options = isolates::process::ProcessOptions::new().max_memory(1 << 30);
    /// assert_eq!(options.memory_limit(), Some(1 << 30));
    /// ```
    pub fn max_memory(mut self, bytes: u64) -> Self {
        self.max_memory = Some(bytes);
        self
    }

    /// The memory limit set with [`max_memory`](Self::max_memory).
    ///
    /// # Examples
    ///
    /// See [`ProcessOptions`].
    pub fn memory_limit(&self) -> Option<u64> {
        self.max_memory
    }

    /// An immediate kill sends SIGTERM, then SIGKILL after `grace`; with no
    /// grace (the default) it sends SIGKILL at once.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let options = isolates::process::ProcessOptions::new().kill_grace(Duration::from_millis(50));
    /// # let _ = options;
    /// ```
    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace = grace;
        self
    }

    /// How long the child may take from spawn to a started isolate (its
    /// `start` included) before it is killed and the isolate exits
    /// [`Crash::Protocol`](crate::Crash::Protocol). Default 30 s.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let options = isolates::process::ProcessOptions::new().start_timeout(Duration::from_secs(5));
    /// # let _ = options;
    /// ```
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Starts `program` with `args` as the child instead of this executable
    /// again: for example a small helper binary of the same workspace, so
    /// that children do not map the whole application. It must call
    /// [`Registry::init`](crate::process::Registry::init) first thing in `main`, with the same
    /// registrations (and be built from the same code: the isolate types are
    /// matched by type identity).
    ///
    /// # Examples
    ///
    /// ```
    /// let options = isolates::process::ProcessOptions::new()
    ///     .program("/usr/local/bin/my-app-worker", ["--quiet"]);
    /// # let _ = options;
    /// ```
    pub fn program<S: Into<std::ffi::OsString>>(
        mut self,
        program: impl Into<std::path::PathBuf>,
        args: impl IntoIterator<Item = S>,
    ) -> Self {
        self.program = Some((program.into(), args.into_iter().map(Into::into).collect()));
        self
    }

    /// How long an isolate that exits (stopped, killed after its current
    /// message, its handles dropped) waits for its child to finish and exit
    /// before killing it. Default 5 s.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let options = isolates::process::ProcessOptions::new().stop_timeout(Duration::from_secs(1));
    /// # let _ = options;
    /// ```
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }
}
