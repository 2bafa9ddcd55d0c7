//! The NATS JetStream transport, shared by the client side of a pool over
//! NATS (`pool/nats.rs`: a pool's slots publish tasks and wait for results)
//! and the worker side (`remote/serve.rs`: `remote::serve`). It knows
//! nothing of pools or workers: bytes, subjects and connections only.
//!
//! - [`bridge`]: one thread with a single-threaded tokio runtime;
//! - `options`: [`NatsOptions`], where the server is and how to log in;
//! - here: names, frames, connecting.
//!
//! Subjects of pool `name`: tasks on `isolates.<name>.tasks` (a JetStream
//! work-queue stream `ISOLATES_<name>`, durable consumer `workers`), in
//! batches: one message carries the tasks a client's slots handed over
//! close together; results as requests to
//! `isolates.<name>.results.<client>`, several in one message (the
//! client's reply is the worker's licence to acknowledge the batch once
//! all its results are confirmed); progress on
//! `isolates.<name>.progress.<client>`; cancellations on
//! `isolates.<name>.cancel`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::RemoteError;

pub(crate) mod bridge;
mod options;

use options::Auth;
pub use options::NatsOptions;

/// The subjects and stream of one pool.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub(crate) stream: String,
    pub(crate) tasks: String,
    prefix: String,
}

impl Names {
    pub(crate) fn new(name: &str) -> Result<Names, RemoteError> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(RemoteError::InvalidName(name.chars().take(80).collect()));
        }
        Ok(Names {
            stream: format!("ISOLATES_{name}"),
            tasks: format!("isolates.{name}.tasks"),
            prefix: format!("isolates.{name}"),
        })
    }

    pub(crate) fn results(&self, client: u64) -> String {
        format!("{}.results.{client:016x}", self.prefix)
    }

    pub(crate) fn progress(&self, client: u64) -> String {
        format!("{}.progress.{client:016x}", self.prefix)
    }

    pub(crate) fn cancel(&self) -> String {
        format!("{}.cancel", self.prefix)
    }
}

/// Frames: a 4-byte tag, then fixed little-endian fields, then the body.
pub(crate) mod frame {
    use crate::invoke::Answer;

    pub(crate) const TASKS: &[u8; 4] = b"ISb1";
    pub(crate) const RESULTS: &[u8; 4] = b"ISR1";
    pub(crate) const PROGRESS: &[u8; 4] = b"ISp1";
    pub(crate) const CANCEL: &[u8; 4] = b"ISc1";

    /// Result kinds.
    pub(crate) const VALUE: u8 = 0;
    pub(crate) const FAILED: u8 = 1;
    pub(crate) const PANICKED: u8 = 2;
    pub(crate) const BAD_INPUT: u8 = 3;
    pub(crate) const UNENCODABLE: u8 = 4;

    /// No deadline.
    pub(crate) const NO_DEADLINE: u64 = u64::MAX;

    /// The result kind of an invocation's outcome.
    pub(crate) fn kind(answer: Answer) -> u8 {
        match answer {
            Answer::Value => VALUE,
            Answer::Failed => FAILED,
            Answer::Panicked => PANICKED,
            Answer::BadInput => BAD_INPUT,
            Answer::Unencodable => UNENCODABLE,
        }
    }

    /// The outcome a result kind stands for, if it is one.
    pub(crate) fn answer(kind: u8) -> Option<Answer> {
        Some(match kind {
            VALUE => Answer::Value,
            FAILED => Answer::Failed,
            PANICKED => Answer::Panicked,
            BAD_INPUT => Answer::BadInput,
            UNENCODABLE => Answer::Unencodable,
            _ => return None,
        })
    }

    /// The most tasks (or results) one message carries: a batch that
    /// claims more is garbage.
    pub(crate) const MAX_BATCH: usize = 4096;

    /// A batch of tasks of one client: the client, how many, then each
    /// task's id, milliseconds left until its deadline, input length and
    /// input.
    pub(crate) struct Tasks {
        out: Vec<u8>,
        ids: Vec<u64>,
    }

    impl Tasks {
        pub(crate) fn new(client: u64) -> Tasks {
            let mut out = Vec::with_capacity(256);
            out.extend_from_slice(TASKS);
            out.extend_from_slice(&client.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            Tasks {
                out,
                ids: Vec::new(),
            }
        }

        pub(crate) fn push(&mut self, id: u64, deadline_ms: u64, input: &[u8]) {
            self.out.extend_from_slice(&id.to_le_bytes());
            self.out.extend_from_slice(&deadline_ms.to_le_bytes());
            self.out
                .extend_from_slice(&(input.len() as u32).to_le_bytes());
            self.out.extend_from_slice(input);
            self.ids.push(id);
        }

        pub(crate) fn len(&self) -> usize {
            self.ids.len()
        }

        pub(crate) fn bytes(&self) -> usize {
            self.out.len()
        }

        /// The message, and the ids of its tasks.
        pub(crate) fn finish(mut self) -> (Vec<u8>, Vec<u64>) {
            let count = (self.ids.len() as u32).to_le_bytes();
            self.out[12..16].copy_from_slice(&count);
            (self.out, self.ids)
        }
    }

    /// One task of a batch: its id, milliseconds left until its deadline,
    /// and input.
    pub(crate) type BatchTask<'a> = (u64, u64, &'a [u8]);

    /// A batch's client and its tasks; `None` unless
    /// the whole message is well formed.
    pub(crate) fn parse_tasks(bytes: &[u8]) -> Option<(u64, Vec<BatchTask<'_>>)> {
        let rest = bytes.strip_prefix(TASKS)?;
        let (client, rest) = split_u64(rest)?;
        let (count, mut rest) = split_u32(rest)?;
        let count = count as usize;
        if count == 0 || count > MAX_BATCH {
            return None;
        }
        let mut tasks = Vec::with_capacity(count);
        for _ in 0..count {
            let (id, after) = split_u64(rest)?;
            let (deadline, after) = split_u64(after)?;
            let (len, after) = split_u32(after)?;
            let (input, after) = after.split_at_checked(len as usize)?;
            tasks.push((id, deadline, input));
            rest = after;
        }
        rest.is_empty().then_some((client, tasks))
    }

    /// Results for one client: how many, then each task's id, result
    /// kind, body length and body.
    pub(crate) fn results(results: &[(u64, u8, Vec<u8>)]) -> Vec<u8> {
        let size: usize = results.iter().map(|(_, _, body)| 13 + body.len()).sum();
        let mut out = Vec::with_capacity(8 + size);
        out.extend_from_slice(RESULTS);
        out.extend_from_slice(&(results.len() as u32).to_le_bytes());
        for (id, kind, body) in results {
            out.extend_from_slice(&id.to_le_bytes());
            out.push(*kind);
            out.extend_from_slice(&(body.len() as u32).to_le_bytes());
            out.extend_from_slice(body);
        }
        out
    }

    /// The results a message carries; `None` unless it is well formed.
    pub(crate) fn parse_results(bytes: &[u8]) -> Option<Vec<(u64, u8, &[u8])>> {
        let (count, mut rest) = split_u32(bytes.strip_prefix(RESULTS)?)?;
        let count = count as usize;
        if count > MAX_BATCH {
            return None;
        }
        let mut results = Vec::with_capacity(count);
        for _ in 0..count {
            let (id, after) = split_u64(rest)?;
            let (&kind, after) = after.split_first()?;
            let (len, after) = split_u32(after)?;
            let (body, after) = after.split_at_checked(len as usize)?;
            results.push((id, kind, body));
            rest = after;
        }
        rest.is_empty().then_some(results)
    }

    pub(crate) fn progress(id: u64, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + body.len());
        out.extend_from_slice(PROGRESS);
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(body);
        out
    }

    pub(crate) fn parse_progress(bytes: &[u8]) -> Option<(u64, &[u8])> {
        split_u64(bytes.strip_prefix(PROGRESS)?)
    }

    pub(crate) fn cancel(client: u64, id: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(20);
        out.extend_from_slice(CANCEL);
        out.extend_from_slice(&client.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
        out
    }

    pub(crate) fn parse_cancel(bytes: &[u8]) -> Option<(u64, u64)> {
        let (client, rest) = split_u64(bytes.strip_prefix(CANCEL)?)?;
        let (id, _) = split_u64(rest)?;
        Some((client, id))
    }

    fn split_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
        let (head, rest) = bytes.split_first_chunk::<8>()?;
        Some((u64::from_le_bytes(*head), rest))
    }

    fn split_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
        let (head, rest) = bytes.split_first_chunk::<4>()?;
        Some((u32::from_le_bytes(*head), rest))
    }
}

pub(crate) use super::encode;

/// Whether the connection is up, and since when it is down.
#[derive(Debug, Default)]
pub(crate) struct Link {
    down_since: Mutex<Option<Instant>>,
    /// Told each time the connection goes down or comes back.
    pub(crate) changed: tokio::sync::Notify,
}

impl Link {
    /// How long the server has been unreachable, if it is.
    pub(crate) fn down_for(&self) -> Option<Duration> {
        self.down_since.lock().map(|t| t.elapsed())
    }
}

/// A random 64-bit id for a client (subjects of its results).
pub(crate) fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// Connects, with the options' credentials and TLS, within the connect
/// timeout; `link` follows the connection's state afterwards.
pub(crate) async fn connect(
    options: &NatsOptions,
    name: String,
    link: Arc<Link>,
) -> Result<async_nats::Client, RemoteError> {
    let mut connect = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(options.connect_timeout)
        .require_tls(options.tls_required)
        .event_callback(move |event| {
            let link = Arc::clone(&link);
            async move {
                match event {
                    async_nats::Event::Disconnected => {
                        link.down_since.lock().get_or_insert_with(Instant::now);
                        link.changed.notify_one();
                    }
                    async_nats::Event::Connected => {
                        *link.down_since.lock() = None;
                        link.changed.notify_one();
                    }
                    _ => {}
                }
            }
        });
    connect = match &options.auth {
        Auth::None => connect,
        Auth::UserPassword(user, password) => {
            connect.user_and_password(user.clone(), password.clone())
        }
        Auth::Token(token) => connect.token(token.clone()),
        Auth::Nkey(seed) => connect.nkey(seed.clone()),
    };
    for root in &options.tls_roots {
        connect = connect.add_root_certificates(root.clone());
    }
    if let Some((cert, key)) = &options.tls_client {
        connect = connect.add_client_certificate(cert.clone(), key.clone());
    }
    let unreachable = |why: String| RemoteError::Unreachable {
        url: options.url.clone(),
        waited: options.connect_timeout,
        why,
    };
    // The client's own timeout covers one attempt per address; this one
    // bounds the whole call.
    let attempt = tokio::time::timeout(
        options.connect_timeout + Duration::from_secs(1),
        connect.connect(options.url.as_str()),
    );
    match attempt.await {
        Err(_) => Err(unreachable("timed out".into())),
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => {
            use async_nats::ConnectErrorKind as K;
            Err(match e.kind() {
                K::Authentication | K::AuthorizationViolation => {
                    RemoteError::Unauthorized(e.to_string())
                }
                K::Tls => RemoteError::Tls(e.to_string()),
                K::ServerParse => RemoteError::Unreachable {
                    url: options.url.clone(),
                    waited: Duration::ZERO,
                    why: format!("not a server address: {e}"),
                },
                _ => unreachable(e.to_string()),
            })
        }
    }
}

/// Finds or creates the pool's work-queue stream.
pub(crate) async fn stream(
    js: &async_nats::jetstream::Context,
    names: &Names,
) -> Result<async_nats::jetstream::stream::Stream, RemoteError> {
    use async_nats::jetstream::stream;
    js.get_or_create_stream(stream::Config {
        name: names.stream.clone(),
        subjects: vec![names.tasks.clone()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map_err(|e| RemoteError::JetStream(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::frame;

    #[test]
    fn a_batch_of_tasks_reads_back_whole() {
        let mut batch = frame::Tasks::new(7);
        batch.push(1, frame::NO_DEADLINE, b"one");
        batch.push(2, 500, b"");
        assert_eq!(batch.len(), 2);
        let (bytes, ids) = batch.finish();
        assert_eq!(ids, [1, 2]);
        let (client, tasks) = frame::parse_tasks(&bytes).unwrap();
        assert_eq!(client, 7);
        assert_eq!(
            tasks,
            [(1, frame::NO_DEADLINE, &b"one"[..]), (2, 500, &b""[..])]
        );
    }

    #[test]
    fn a_malformed_batch_is_refused_whole() {
        let mut batch = frame::Tasks::new(7);
        batch.push(1, 0, b"abc");
        batch.push(2, 0, b"def");
        let (bytes, _) = batch.finish();
        // Cut short, one byte too many, a count past the limit, none.
        assert!(frame::parse_tasks(&bytes[..bytes.len() - 1]).is_none());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(frame::parse_tasks(&longer).is_none());
        let mut many = bytes.clone();
        many[12..16].copy_from_slice(&(frame::MAX_BATCH as u32 + 1).to_le_bytes());
        assert!(frame::parse_tasks(&many).is_none());
        let mut none = bytes.clone();
        none[12..16].copy_from_slice(&0u32.to_le_bytes());
        assert!(frame::parse_tasks(&none).is_none());
        // An input length past the message.
        let mut huge = bytes;
        huge[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(frame::parse_tasks(&huge).is_none());
    }

    #[test]
    fn results_read_back_whole_or_not_at_all() {
        let results = vec![
            (1, frame::VALUE, b"x".to_vec()),
            (9, frame::FAILED, Vec::new()),
        ];
        let bytes = frame::results(&results);
        assert_eq!(
            frame::parse_results(&bytes).unwrap(),
            [(1, frame::VALUE, &b"x"[..]), (9, frame::FAILED, &b""[..])]
        );
        assert!(frame::parse_results(&bytes[..bytes.len() - 1]).is_none());
        assert!(frame::parse_results(b"ISR1").is_none());
    }
}
