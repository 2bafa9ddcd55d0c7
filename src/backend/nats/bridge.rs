//! The bridge thread: a single-threaded tokio runtime on a thread of our
//! own, where the async NATS client runs. Callers on other threads hand it
//! futures ([`Bridge::spawn`]) or wait for one ([`Bridge::run`]); no
//! tokio type leaves this module's crate-private API.

use std::future::Future;
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;

use parking_lot::Mutex;

use crate::error::RemoteError;

pub(crate) struct Bridge {
    handle: tokio::runtime::Handle,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: ThreadId,
}

impl Bridge {
    /// Starts the thread and its runtime.
    pub(crate) fn start(name: &str) -> Result<Bridge, RemoteError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let thread = std::thread::Builder::new()
            .name(format!("{name}-nats"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
                let _ = tx.send(Ok((runtime.handle().clone(), stop_tx)));
                runtime.block_on(async {
                    let _ = stop_rx.await;
                });
                // Dropping the runtime here ends the tasks still on it.
            })
            .map_err(|e| RemoteError::Closed(format!("no thread for the NATS client: {e}")))?;
        let thread_id = thread.thread().id();
        match rx.recv() {
            Ok(Ok((handle, stop))) => Ok(Bridge {
                handle,
                stop: Mutex::new(Some(stop)),
                thread: Mutex::new(Some(thread)),
                thread_id,
            }),
            Ok(Err(why)) => Err(RemoteError::Closed(format!(
                "no runtime for the NATS client: {why}"
            ))),
            Err(_) => Err(RemoteError::Closed(
                "the NATS client's thread ended at start".into(),
            )),
        }
    }

    /// A handle to the runtime, for threads that start tasks on it often.
    pub(crate) fn handle(&self) -> tokio::runtime::Handle {
        self.handle.clone()
    }

    /// Runs `future` on the bridge.
    pub(crate) fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        drop(self.handle.spawn(future));
    }

    /// Runs `future` on the bridge and waits at most `timeout` for it.
    pub(crate) fn run<F>(&self, future: F, timeout: Duration) -> Result<F::Output, RemoteError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv_timeout(timeout).map_err(|e| match e {
            crossbeam_channel::RecvTimeoutError::Timeout => {
                RemoteError::Closed(format!("the NATS client did not answer within {timeout:?}"))
            }
            crossbeam_channel::RecvTimeoutError::Disconnected => {
                RemoteError::Closed("the NATS client's thread has stopped".into())
            }
        })
    }

    /// Stops the runtime (its tasks end) and, unless called on the bridge
    /// thread itself, waits for the thread.
    pub(crate) fn stop(&self) {
        if let Some(stop) = self.stop.lock().take() {
            let _ = stop.send(());
        }
        if std::thread::current().id() != self.thread_id
            && let Some(thread) = self.thread.lock().take()
        {
            let _ = thread.join();
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.stop();
    }
}
