//! A background sync, as an app would run it with `workmanager` or
//! `background_fetch`: a periodic fetch of a feed over HTTP (`ureq`) with
//! conditional requests (ETag and Last-Modified: an unchanged feed costs
//! one round trip and a 304), what it fetched kept on disk beside the
//! store, retries with backoff on transport errors and 5xx, and a network
//! constraint; its schedule is kept in an SQLite store. Run it twice: the
//! second run finds the schedule in the store and carries on (same work,
//! period count and history).
//!
//! Without `--url` it serves its own feed from a small HTTP server on
//! loopback, which changes the feed every other period and answers its
//! second request with a 503; `--short` (CI) checks that the 503 was
//! retried, that an unchanged period got a 304 and that the feed on disk
//! is the server's last.
//!
//! ```text
//! cargo run --release --features bundled-sqlite --example background_sync            # first run: schedules
//! cargo run --release --features bundled-sqlite --example background_sync            # second run: resumes
//! cargo run --release --features bundled-sqlite --example background_sync -- --short # CI: loopback feed, checked
//! cargo run --release --features bundled-sqlite --example background_sync -- --url https://blog.rust-lang.org/feed.xml --periods 2 --interval 60
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use isolates::Backoff;
use isolates::schedule::{
    Constraint, ExistingWork, NetworkAvailable, StorageNotLow, WorkContext, WorkManager, WorkQuery,
    WorkRequest, WorkResult, WorkState, WorkStore,
};
use serde::{Deserialize, Serialize};

/// What a run fetches, and where it keeps it.
#[derive(Debug, Serialize, Deserialize)]
struct Feed {
    url: String,
    /// The directory of the feed's body and its validators.
    dir: PathBuf,
}

/// What a run brought back.
#[derive(Debug, Serialize, Deserialize)]
struct Fetched {
    /// 200 (new content, stored) or 304 (unchanged).
    status: u16,
    /// The stored body's size.
    bytes: u64,
    /// `<item>`s in the stored body.
    items: u32,
    attempt: u32,
}

/// The validators of the stored body, as the server gave them: kept in
/// `validators`, one `name: value` a line.
#[derive(Debug, Default)]
struct Validators {
    etag: Option<String>,
    last_modified: Option<String>,
}

impl Validators {
    fn read(dir: &Path) -> Self {
        let text = std::fs::read_to_string(dir.join("validators")).unwrap_or_default();
        let get = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::to_owned)
        };
        Validators {
            etag: get("etag: "),
            last_modified: get("last-modified: "),
        }
    }

    fn text(&self) -> String {
        let mut out = String::new();
        for (name, value) in [("etag", &self.etag), ("last-modified", &self.last_modified)] {
            if let Some(v) = value {
                out.push_str(&format!("{name}: {v}\n"));
            }
        }
        out
    }
}

/// Writes `bytes` to `path` through a file renamed over it: a crash never
/// leaves half a feed.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
}

fn items(body: &[u8]) -> u32 {
    let text = String::from_utf8_lossy(body);
    u32::try_from(text.matches("<item>").count()).unwrap_or(u32::MAX)
}

/// One fetch: a conditional GET; 200 stores the body and its validators,
/// 304 keeps what is stored, 5xx and transport errors retry with backoff,
/// other statuses fail this period.
fn fetch(feed: Feed, work: &WorkContext<'_>) -> WorkResult<Fetched> {
    if work.is_stopped() {
        return WorkResult::Retry;
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(20)))
        .http_status_as_error(false)
        .build()
        .into();
    let known = Validators::read(&feed.dir);
    let mut request = agent.get(&feed.url);
    if let Some(etag) = &known.etag {
        request = request.header("If-None-Match", etag);
    }
    if let Some(date) = &known.last_modified {
        request = request.header("If-Modified-Since", date);
    }
    let mut response = match request.call() {
        Ok(response) => response,
        Err(e) => {
            println!("  fetch failed ({e}): retrying after the backoff");
            return WorkResult::Retry;
        }
    };
    let status = response.status().as_u16();
    let body_path = feed.dir.join("feed.xml");
    match status {
        304 => {
            let body = std::fs::read(&body_path).unwrap_or_default();
            WorkResult::Success(Fetched {
                status,
                bytes: body.len() as u64,
                items: items(&body),
                attempt: work.attempt(),
            })
        }
        200 => {
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let validators = Validators {
                etag: header("etag"),
                last_modified: header("last-modified"),
            };
            let body = match response
                .body_mut()
                .with_config()
                .limit(16 << 20)
                .read_to_vec()
            {
                Ok(body) => body,
                Err(e) => {
                    println!("  reading the feed failed ({e}): retrying");
                    return WorkResult::Retry;
                }
            };
            let stored = std::fs::create_dir_all(&feed.dir)
                .and_then(|()| write_atomic(&body_path, &body))
                .and_then(|()| {
                    write_atomic(&feed.dir.join("validators"), validators.text().as_bytes())
                });
            if let Err(e) = stored {
                return WorkResult::Failure(format!("the feed could not be stored: {e}"));
            }
            WorkResult::Success(Fetched {
                status,
                bytes: body.len() as u64,
                items: items(&body),
                attempt: work.attempt(),
            })
        }
        500..=599 => {
            println!("  the server answered {status}: retrying after the backoff");
            WorkResult::Retry
        }
        other => WorkResult::Failure(format!("the server answered {other}")),
    }
}

// ---- the loopback feed server -----------------------------------------

/// What the loopback server did, for the short mode's checks.
#[derive(Default)]
struct Served {
    requests: AtomicU32,
    unavailable: AtomicU32,
    not_modified: AtomicU32,
    version: AtomicU32,
}

/// The feed's version for the `n`-th request (from 1): 1 for the first
/// three, then a new version every other request, so periods alternate
/// between a new feed and an unchanged one.
fn version_for(n: u32) -> u32 {
    if n < 4 { 1 } else { 1 + (n - 2) / 2 }
}

/// Serves the feed on 127.0.0.1 (a port the OS picks) from a thread;
/// returns its URL.
fn serve(served: Arc<Served>) -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/feed.xml", listener.local_addr()?);
    std::thread::Builder::new()
        .name("loopback-feed".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(e) = answer(stream, &served) {
                    eprintln!("loopback feed: {e}");
                }
            }
        })?;
    Ok(url)
}

fn answer(stream: TcpStream, served: &Served) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut if_none_match = None;
    let mut line = String::new();
    reader.read_line(&mut line)?; // the request line
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("if-none-match")
        {
            if_none_match = Some(value.trim().to_owned());
        }
    }
    let n = served.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let version = version_for(n);
    served.version.store(version, Ordering::SeqCst);
    let etag = format!("\"v{version}\"");
    // A fixed date per version: 2025-01-0{version}.
    let modified = format!("Wed, 0{} Jan 2025 00:00:00 GMT", version.min(9));
    let mut out = stream;
    if n == 2 {
        served.unavailable.fetch_add(1, Ordering::SeqCst);
        let body = "busy, try again";
        return write!(
            out,
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: {}\r\nRetry-After: 1\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
    }
    if if_none_match.as_deref() == Some(etag.as_str()) {
        served.not_modified.fetch_add(1, Ordering::SeqCst);
        return write!(
            out,
            "HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nLast-Modified: {modified}\r\n\
             Connection: close\r\n\r\n"
        );
    }
    let items: String = (1..=version + 2)
        .map(|i| format!("<item><title>post {i} of version {version}</title></item>"))
        .collect();
    let body = format!("<rss><channel><title>loopback v{version}</title>{items}</channel></rss>");
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nContent-Length: {}\r\n\
         ETag: {etag}\r\nLast-Modified: {modified}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The network constraint for a loopback feed: loopback needs no network.
#[derive(Debug)]
struct Loopback;

impl Constraint for Loopback {
    fn holds(&self) -> bool {
        true
    }
}

// ---- the app ----------------------------------------------------------

fn ago(t: SystemTime) -> String {
    match t.duration_since(SystemTime::now()) {
        Ok(d) => format!("in {:.1} s", d.as_secs_f64()),
        Err(e) => format!("{:.1} s ago", e.duration().as_secs_f64()),
    }
}

fn die(why: &str) -> ! {
    eprintln!("background_sync: {why}");
    std::process::exit(1);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut store_path = std::env::temp_dir().join("isolates-background-sync.db");
    let mut periods = 3u64;
    let mut fresh = false;
    let mut short = false;
    let mut url = None;
    let mut interval = Duration::from_secs(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--store" => {
                store_path = args
                    .next()
                    .unwrap_or_else(|| die("--store takes a path"))
                    .into()
            }
            "--periods" => {
                periods = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| die("--periods takes a number"))
            }
            "--interval" => {
                interval = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .map(Duration::from_secs)
                    .unwrap_or_else(|| die("--interval takes whole seconds"))
            }
            "--url" => url = Some(args.next().unwrap_or_else(|| die("--url takes a URL"))),
            "--fresh" => fresh = true,
            "--short" => short = true,
            other => die(&format!(
                "unknown argument {other:?} (--store PATH, --periods N, --interval SECONDS, \
                 --url URL, --fresh, --short)"
            )),
        }
    }
    if short {
        // A store of its own, fresh, and enough periods to see a 200, the
        // 503 retried, a 304 and a changed feed.
        store_path =
            std::env::temp_dir().join(format!("isolates-sync-short-{}.db", std::process::id()));
        fresh = true;
        periods = periods.max(4);
        if url.is_some() {
            die("--short serves its own feed: leave out --url");
        }
    }
    let feed_dir = {
        let mut d = store_path.clone().into_os_string();
        d.push(".feed");
        PathBuf::from(d)
    };
    if fresh {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = store_path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
        let _ = std::fs::remove_dir_all(&feed_dir);
    }

    let served = Arc::new(Served::default());
    let loopback = url.is_none();
    let url = match url {
        Some(url) => url,
        None => serve(Arc::clone(&served)).unwrap_or_else(|e| die(&format!("loopback: {e}"))),
    };
    let store = WorkStore::open(&store_path).unwrap_or_else(|e| die(&e.to_string()));
    // The constraints: a network (none needed for loopback), and enough free
    // space for what the sync downloads.
    let space = StorageNotLow::new(std::env::temp_dir(), 16 << 20);
    println!(
        "store {} | feed {url} | kept in {} | storage_not_low holds: {}",
        store_path.display(),
        feed_dir.display(),
        space.holds()
    );
    let builder = WorkManager::builder(store)
        .handler_fn("fetch", fetch)
        .constraint("storage_not_low", space)
        .min_interval(Duration::from_millis(500))
        .min_backoff(Duration::from_millis(200));
    let builder = if loopback {
        builder.constraint("network", Loopback)
    } else {
        builder.constraint("network", NetworkAvailable::default())
    };
    let manager = builder.spawn().unwrap_or_else(|e| die(&e.to_string()));

    let existing = manager.infos(&WorkQuery::UniqueName("sync".into()));
    match existing.first() {
        Some(w) => println!(
            "resumed from the store: {} ({:?}), {} periods done, {} runs in this period, next run {}",
            w.id,
            w.state,
            w.periods,
            w.run_attempts,
            w.next_run_at.map_or("now".into(), ago)
        ),
        None => println!("first start: nothing in the store, scheduling the sync"),
    }
    let sync = WorkRequest::periodic("fetch", interval)
        .input(&Feed {
            url: url.clone(),
            dir: feed_dir.clone(),
        })
        .tag("sync")
        .constraint("network")
        .constraint("storage_not_low")
        .backoff(Backoff::linear(Duration::from_millis(200)))
        .time_limit(Duration::from_secs(30));
    // Update: a schedule found in the store keeps its timing and history,
    // and takes this start's feed (a loopback server's port changes).
    let id = manager
        .enqueue_unique("sync", ExistingWork::Update, sync)
        .wait()
        .unwrap_or_else(|e| die(&format!("the sync could not be scheduled: {e}")))
        .ids()[0];
    let start = manager.info(id).map_or(0, |w| w.periods);
    let target = start + periods;
    println!("running until {id} has done {target} periods (ctrl-c stops; the store keeps it)");

    let watch = manager.watch(WorkQuery::Id(id));
    let mut last = None;
    let (mut got_200, mut got_304, mut retried) = (0, 0, 0);
    let limit = interval.saturating_mul(u32::try_from(periods).unwrap_or(u32::MAX) + 2);
    let deadline = std::time::Instant::now() + limit.max(Duration::from_secs(60));
    while std::time::Instant::now() < deadline {
        let Some(w) = watch.next_timeout(Duration::from_millis(100)) else {
            continue;
        };
        let shown = (w.state, w.periods, w.retries);
        if last != Some(shown) {
            last = Some(shown);
            let out = w.output::<Fetched>().and_then(Result::ok);
            match w.state {
                WorkState::Running => println!("  run {} started", w.run_attempts),
                WorkState::Enqueued if w.retries > 0 => {
                    retried += 1;
                    println!(
                        "  run {} asked to retry ({} in a row): next {}",
                        w.run_attempts,
                        w.retries,
                        w.next_run_at.map_or("now".into(), ago)
                    )
                }
                WorkState::Enqueued if w.periods == start => println!(
                    "  waiting for the first run: {}",
                    w.next_run_at.map_or("now".into(), ago)
                ),
                WorkState::Enqueued => {
                    let said = match &out {
                        Some(f) if f.status == 304 => {
                            got_304 += 1;
                            format!("304 not modified, {} items kept", f.items)
                        }
                        Some(f) => {
                            got_200 += 1;
                            format!("{} new: {} items, {} bytes", f.status, f.items, f.bytes)
                        }
                        None => "failed".to_owned(),
                    };
                    println!(
                        "  period {} done ({said}, attempt {}): next {}",
                        w.periods,
                        out.map_or(0, |f| f.attempt),
                        w.next_run_at.map_or("now".into(), ago)
                    )
                }
                other => println!("  {other:?}"),
            }
        }
        if w.periods >= target && w.state == WorkState::Enqueued {
            break;
        }
    }
    let w = manager.info(id).expect("the sync is stored");
    manager.stop();
    manager.join(Duration::MAX);
    if w.periods < target {
        die(&format!("the sync did not reach {target} periods in time"));
    }
    println!(
        "stopped with {} periods and {} runs stored; run again to resume from {}",
        w.periods,
        w.run_attempts,
        store_path.display()
    );
    if short {
        let on_disk = std::fs::read_to_string(feed_dir.join("feed.xml")).unwrap_or_default();
        let last = served.version.load(Ordering::SeqCst);
        println!(
            "loopback server: {} requests, {} answered 503, {} answered 304; feed v{last}",
            served.requests.load(Ordering::SeqCst),
            served.unavailable.load(Ordering::SeqCst),
            served.not_modified.load(Ordering::SeqCst),
        );
        let checks = [
            (retried >= 1, "the 503 was retried"),
            (
                served.unavailable.load(Ordering::SeqCst) == 1,
                "one request failed with 503",
            ),
            (got_304 >= 1, "an unchanged period was answered by a 304"),
            (got_200 >= 2, "a changed feed was fetched again"),
            (
                on_disk.contains(&format!("loopback v{last}")),
                "the feed on disk is the server's last",
            ),
        ];
        let _ = std::fs::remove_dir_all(&feed_dir);
        for suffix in ["", "-wal", "-shm"] {
            let mut p = store_path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
        for (ok, what) in checks {
            if !ok {
                die(&format!("short mode: expected that {what}"));
            }
            println!("ok: {what}");
        }
    }
}
