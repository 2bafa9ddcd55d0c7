//! How to reach a NATS server, shared by both sides of a pool over NATS:
//! the client (`PoolBuilder::nats`) and the worker (`remote::serve`), and
//! re-exported as `isolates::remote::NatsOptions`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Where the NATS server is, how to log in, and how the pool's queue
/// behaves. Both sides take one: [`PoolBuilder::nats`](crate::pool::PoolBuilder::nats)
/// and [`serve`](crate::remote::serve).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::remote::NatsOptions;
///
/// let options = NatsOptions::new("tls://nats.example.com:4222")
///     .token("s3cr3t")
///     .tls_root_certificates("/etc/nats/ca.pem")
///     .connect_timeout(Duration::from_secs(2))
///     .ack_wait(Duration::from_secs(60))
///     .in_flight(128);
/// assert_eq!(options.url(), "tls://nats.example.com:4222");
/// ```
#[derive(Clone)]
pub struct NatsOptions {
    pub(crate) url: String,
    pub(crate) auth: Auth,
    pub(crate) tls_required: bool,
    pub(crate) tls_roots: Vec<PathBuf>,
    pub(crate) tls_client: Option<(PathBuf, PathBuf)>,
    pub(crate) connect_timeout: Duration,
    pub(crate) disconnect_timeout: Duration,
    pub(crate) ack_wait: Duration,
    pub(crate) in_flight: usize,
    pub(crate) batch: usize,
    pub(crate) workers: usize,
}

#[derive(Clone)]
pub(crate) enum Auth {
    None,
    UserPassword(String, String),
    Token(String),
    Nkey(String),
}

impl fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secrets.
        let auth = match self.auth {
            Auth::None => "none",
            Auth::UserPassword(..) => "user and password",
            Auth::Token(_) => "token",
            Auth::Nkey(_) => "nkey",
        };
        f.debug_struct("NatsOptions")
            .field("url", &self.url)
            .field("auth", &auth)
            .field("tls_required", &self.tls_required)
            .field("connect_timeout", &self.connect_timeout)
            .field("disconnect_timeout", &self.disconnect_timeout)
            .field("ack_wait", &self.ack_wait)
            .field("in_flight", &self.in_flight)
            .field("batch", &self.batch)
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

impl From<&str> for NatsOptions {
    fn from(url: &str) -> Self {
        NatsOptions::new(url)
    }
}

impl NatsOptions {
    /// Options for the server at `url` (`nats://host:4222`, `tls://...`;
    /// several servers separated by commas), with no credentials.
    ///
    /// # Examples
    ///
    /// See [`NatsOptions`].
    pub fn new(url: impl Into<String>) -> Self {
        NatsOptions {
            url: url.into(),
            auth: Auth::None,
            tls_required: false,
            tls_roots: Vec::new(),
            tls_client: None,
            connect_timeout: Duration::from_secs(5),
            disconnect_timeout: Duration::from_secs(30),
            ack_wait: Duration::from_secs(30),
            in_flight: 64,
            batch: 32,
            // One per core, as `pool::default_workers`: this layer does
            // not see the pool.
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    /// The server's address as given.
    ///
    /// # Examples
    ///
    /// See [`NatsOptions`].
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Logs in with a user and password.
    ///
    /// # Examples
    ///
    /// ```
    /// let o = isolates::remote::NatsOptions::new("nats://127.0.0.1:4222").user_password("app", "pw");
    /// # let _ = o;
    /// ```
    pub fn user_password(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.auth = Auth::UserPassword(user.into(), password.into());
        self
    }

    /// Logs in with a token.
    ///
    /// # Examples
    ///
    /// See [`NatsOptions`].
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.auth = Auth::Token(token.into());
        self
    }

    /// Logs in with an nkey seed (`SU...`).
    ///
    /// # Examples
    ///
    /// ```
    /// let o = isolates::remote::NatsOptions::new("nats://127.0.0.1:4222")
    ///     .nkey("SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY");
    /// # let _ = o;
    /// ```
    pub fn nkey(mut self, seed: impl Into<String>) -> Self {
        self.auth = Auth::Nkey(seed.into());
        self
    }

    /// Requires TLS even if the server does not ask for it (a `tls://` URL
    /// requires it too).
    ///
    /// # Examples
    ///
    /// ```
    /// let o = isolates::remote::NatsOptions::new("nats://127.0.0.1:4222").tls_required(true);
    /// # let _ = o;
    /// ```
    pub fn tls_required(mut self, required: bool) -> Self {
        self.tls_required = required;
        self
    }

    /// Trusts the certificate authorities in this PEM file (besides the
    /// system's).
    ///
    /// # Examples
    ///
    /// See [`NatsOptions`].
    pub fn tls_root_certificates(mut self, pem: impl Into<PathBuf>) -> Self {
        self.tls_roots.push(pem.into());
        self
    }

    /// Presents this client certificate and key (PEM files) to a server
    /// that verifies clients.
    ///
    /// # Examples
    ///
    /// ```
    /// let o = isolates::remote::NatsOptions::new("tls://127.0.0.1:4222")
    ///     .tls_client_certificate("client.pem", "client-key.pem");
    /// # let _ = o;
    /// ```
    pub fn tls_client_certificate(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        self.tls_client = Some((cert.into(), key.into()));
        self
    }

    /// How long the first connection is tried before it fails with
    /// [`RemoteError::Unreachable`](crate::RemoteError::Unreachable) (default 5 s).
    ///
    /// # Examples
    ///
    /// See [`NatsOptions`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout.max(Duration::from_millis(10));
        self
    }

    /// How long a client waits for a lost server to come back before the
    /// tasks on the wire resolve
    /// [`TaskError::WorkerLost`](crate::TaskError::WorkerLost) (default
    /// 30 s). The connection is tried again all the while; tasks still in
    /// the client's queue wait for it.
    ///
    /// # Examples
    ///
    /// ```
    /// let o = isolates::remote::NatsOptions::new("nats://127.0.0.1:4222")
    ///     .disconnect_timeout(std::time::Duration::from_secs(60));
    /// # let _ = o;
    /// ```
    pub fn disconnect_timeout(mut self, timeout: Duration) -> Self {
        self.disconnect_timeout = timeout;
        self
    }

    /// How long a worker may hold a task without a sign of life before
    /// JetStream hands it to another worker (default 30 s). Running tasks
    /// send a sign every third of it, so only a dead or cut-off worker
    /// loses its tasks. The first client or worker to set up the pool's
    /// queue fixes it.
    ///
    /// # Examples
    ///
    /// See [`NatsOptions`].
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait.max(Duration::from_millis(100));
        self
    }

    /// Client: how many tasks may be on the wire at once (default 64);
    /// the rest wait in the pool's queue, in priority order. The pool
    /// itself has one worker thread, which hands tasks over.
    ///
    /// # Examples
    ///
    /// See [`NatsOptions`].
    pub fn in_flight(mut self, tasks: usize) -> Self {
        self.in_flight = tasks.max(1);
        self
    }

    /// Client: the most tasks one message to the workers carries (default
    /// 32, at most 4,096). Tasks handed over while earlier ones are being
    /// sent go together: one stored message, one delivery and one
    /// acknowledgement for the lot, and their results come back several
    /// to a message. A task alone is sent at once, never held back for a
    /// batch to fill. One worker process takes a whole batch and runs its
    /// tasks on its own threads: for long tasks spread over many worker
    /// processes, a small batch (1 for none) balances the load better.
    ///
    /// # Examples
    ///
    /// ```
    /// let o = isolates::remote::NatsOptions::new("nats://127.0.0.1:4222").batch(1);
    /// # let _ = o;
    /// ```
    pub fn batch(mut self, tasks: usize) -> Self {
        self.batch = tasks.clamp(1, 4096);
        self
    }

    /// Worker ([`serve`](crate::remote::serve)): how many tasks run at once in this process,
    /// each on a thread with its own worker state (default one per core).
    ///
    /// # Examples
    ///
    /// ```
    /// let o = isolates::remote::NatsOptions::new("nats://127.0.0.1:4222").workers(4);
    /// # let _ = o;
    /// ```
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }
}
