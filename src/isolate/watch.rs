//! Monitors and links between isolates of any types, as OTP's: the table
//! each isolate keeps of who watches it, who it is linked to and the names
//! it is registered under, and what its end tells them.
//!
//! Every entry is taken out of a table under its lock exactly once: by
//! the end of the incarnation it is about (which then delivers it), or by
//! a `demonitor`/`unlink` (which then delivers nothing). That is what
//! makes each delivery happen once. Signals carry the incarnation they are
//! meant for, so one meant for an incarnation that has ended does not
//! reach a restarted one.

use std::fmt;
use std::sync::Weak;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::error::ExitReason;
use crate::port::SendPort;

/// An isolate watched (monitored, or linked to) has exited: delivered to
/// [`Isolate::down`](crate::Isolate::down), or to the port of
/// [`IsolateHandle::monitor_port`](crate::IsolateHandle::monitor_port).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use isolates::{Context, Down, ExitReason, Isolate, Priority};
/// # struct Echo;
/// # impl Isolate for Echo {
/// #     type Args = (); type Message = u8; type Reply = u8; type Error = String;
/// #     fn start(_: (), _: &mut Context<Self>) -> Result<Self, String> { Ok(Echo) }
/// #     fn handle(&mut self, m: u8, _: &mut Context<Self>) -> Result<u8, String> { Ok(m) }
/// # }
/// let echo = Echo::spawn(()).unwrap();
/// let (_monitor, downs) = echo.monitor_port();
/// echo.kill(Priority::Immediate);
/// let down: Down = downs.recv_timeout(Duration::from_secs(5)).unwrap();
/// assert_eq!((down.id, down.reason), (echo.id(), ExitReason::Killed));
/// assert!(down.monitor.is_some());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Down {
    /// The id of the isolate that exited ([`IsolateHandle::id`](crate::IsolateHandle::id)).
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Why it exited.
    pub reason: ExitReason,
    /// The monitor that fired; `None` when the `Down` comes from a link of
    /// an isolate that [traps exits](crate::Context::trap_exits).
    pub monitor: Option<MonitorRef>,
}

/// A monitor set with [`Context::monitor`](crate::Context::monitor) or
/// [`IsolateHandle::monitor_port`](crate::IsolateHandle::monitor_port):
/// names the [`Down`] it fires, and takes it off with
/// [`Context::demonitor`](crate::Context::demonitor).
///
/// # Examples
///
/// See [`Context::monitor`](crate::Context::monitor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MonitorRef {
    pub(super) id: u64,
    /// The isolate watched.
    pub(super) target: u64,
}

impl MonitorRef {
    /// The id of the isolate it watches.
    ///
    /// # Examples
    ///
    /// See [`Context::monitor`](crate::Context::monitor).
    pub fn target(&self) -> u64 {
        self.target
    }

    pub(super) fn new(target: u64) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        MonitorRef {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            target,
        }
    }
}

/// What an isolate's loop is told about the others.
pub(crate) struct Signal {
    /// The incarnation it is for.
    pub(super) incarnation: u64,
    pub(super) down: Down,
    /// From a link (the peer exited), not a monitor.
    pub(super) link: bool,
}

/// An isolate as the others see it, whatever its type.
pub(super) trait Peer: Send + Sync {
    fn id(&self) -> u64;
    fn name(&self) -> &str;
    fn watch(&self) -> &Watch;
    /// Delivers a signal to its loop, without waiting.
    fn signal(&self, signal: Signal);
}

/// Who a monitor tells.
enum Watcher {
    Isolate {
        peer: Weak<dyn Peer>,
        incarnation: u64,
    },
    Port(SendPort<Down>),
}

struct Monitor {
    monitor: MonitorRef,
    to: Watcher,
}

struct Link {
    peer: Weak<dyn Peer>,
    peer_id: u64,
    incarnation: u64,
}

#[derive(Default)]
struct Table {
    incarnation: u64,
    /// The current incarnation has ended (how), and none has started since.
    ended: Option<ExitReason>,
    monitors: Vec<Monitor>,
    links: Vec<Link>,
    names: Vec<String>,
}

/// One isolate's table.
#[derive(Default)]
pub(super) struct Watch {
    table: Mutex<Table>,
}

/// What an ended incarnation must tell and undo.
pub(super) struct Ended {
    /// The incarnation that ended: its peers' entries for it are undone,
    /// not those a later incarnation of the same isolate made.
    incarnation: u64,
    monitors: Vec<Monitor>,
    links: Vec<Link>,
    pub(super) names: Vec<String>,
}

impl Watch {
    /// A new incarnation starts: returns its number.
    pub(super) fn begin(&self) -> u64 {
        let mut table = self.table.lock();
        table.incarnation += 1;
        table.ended = None;
        table.incarnation
    }

    /// Adds a monitor of this isolate for an isolate; `Err` with the reason
    /// if the incarnation has ended already (the caller tells at once).
    pub(super) fn monitor(
        &self,
        monitor: MonitorRef,
        peer: Weak<dyn Peer>,
        incarnation: u64,
    ) -> Result<(), ExitReason> {
        self.add_monitor(Monitor {
            monitor,
            to: Watcher::Isolate { peer, incarnation },
        })
    }

    /// Adds a monitor that tells `port`; `Err` with the reason if the
    /// incarnation has ended already (the caller tells at once).
    pub(super) fn monitor_port(
        &self,
        monitor: MonitorRef,
        port: SendPort<Down>,
    ) -> Result<(), ExitReason> {
        self.add_monitor(Monitor {
            monitor,
            to: Watcher::Port(port),
        })
    }

    fn add_monitor(&self, monitor: Monitor) -> Result<(), ExitReason> {
        let mut table = self.table.lock();
        if let Some(reason) = &table.ended {
            return Err(reason.clone());
        }
        // Isolates that went away are forgotten as new watchers come, so a
        // long-lived isolate watched by many short-lived ones does not keep
        // them all. (A port is kept until `demonitor` or the end.)
        table.monitors.retain(|m| match &m.to {
            Watcher::Isolate { peer, .. } => peer.strong_count() > 0,
            Watcher::Port(_) => true,
        });
        table.monitors.push(monitor);
        Ok(())
    }

    /// Takes a monitor off; whether it was there (not yet fired).
    pub(super) fn demonitor(&self, monitor: &MonitorRef) -> bool {
        let mut table = self.table.lock();
        let before = table.monitors.len();
        table.monitors.retain(|m| m.monitor != *monitor);
        table.monitors.len() != before
    }

    /// Takes the link to `peer_id` off; whether it was there.
    pub(super) fn unlink(&self, peer_id: u64) -> bool {
        let mut table = self.table.lock();
        let before = table.links.len();
        table.links.retain(|l| l.peer_id != peer_id);
        table.links.len() != before
    }

    /// Takes off the link to incarnation `incarnation` of `peer_id` (which
    /// ended); whether it was there. A link a later incarnation of that
    /// peer made stays.
    fn unlink_ended(&self, peer_id: u64, incarnation: u64) -> bool {
        let mut table = self.table.lock();
        let before = table.links.len();
        table
            .links
            .retain(|l| l.peer_id != peer_id || l.incarnation != incarnation);
        table.links.len() != before
    }

    /// Adds `name` to the names to forget when the incarnation ends; `false`
    /// if it has ended.
    pub(super) fn add_name(&self, name: &str) -> bool {
        let mut table = self.table.lock();
        if table.ended.is_some() {
            return false;
        }
        table.names.push(name.to_owned());
        true
    }

    /// Forgets a name (unregistered).
    pub(super) fn remove_name(&self, name: &str) {
        self.table.lock().names.retain(|n| n != name);
    }

    /// The incarnation ended with `reason`: takes what must be told.
    pub(super) fn end(&self, reason: &ExitReason) -> Ended {
        let mut table = self.table.lock();
        table.ended = Some(reason.clone());
        Ended {
            incarnation: table.incarnation,
            monitors: std::mem::take(&mut table.monitors),
            links: std::mem::take(&mut table.links),
            names: std::mem::take(&mut table.names),
        }
    }
}

/// Links `a` (running incarnation `a_incarnation`) and `b`, both ways; if
/// `b`'s incarnation has ended, nothing is linked and its reason comes
/// back (`a` is told at once, as OTP's link to a dead process).
///
/// Both tables are locked, in the order of the isolates' ids, so two links
/// set up at once cannot deadlock, and an end of `b` sees both entries or
/// neither.
pub(super) fn link(
    a: &std::sync::Arc<dyn Peer>,
    a_incarnation: u64,
    b: &std::sync::Arc<dyn Peer>,
) -> Result<(), ExitReason> {
    let (first, second) = if a.id() < b.id() { (a, b) } else { (b, a) };
    let mut first_table = first.watch().table.lock();
    let mut second_table = second.watch().table.lock();
    let (a_table, b_table) = if a.id() < b.id() {
        (&mut *first_table, &mut *second_table)
    } else {
        (&mut *second_table, &mut *first_table)
    };
    if let Some(reason) = &b_table.ended {
        return Err(reason.clone());
    }
    // Linking twice is linking once, as in OTP.
    if a_table.links.iter().any(|l| l.peer_id == b.id()) {
        return Ok(());
    }
    a_table.links.push(Link {
        peer: std::sync::Arc::downgrade(b),
        peer_id: b.id(),
        incarnation: b_table.incarnation,
    });
    b_table.links.push(Link {
        peer: std::sync::Arc::downgrade(a),
        peer_id: a.id(),
        incarnation: a_incarnation,
    });
    Ok(())
}

/// Tells the monitors and links of `me`'s ended incarnation. A link whose
/// peer no longer lists `me` was undone (unlinked, or the peer ended
/// first and took it): the peer is not told.
pub(super) fn tell(me: &dyn Peer, ended: Ended, reason: &ExitReason) {
    let down = |monitor| Down {
        id: me.id(),
        name: me.name().to_owned(),
        reason: reason.clone(),
        monitor,
    };
    for Monitor { monitor, to } in ended.monitors {
        match to {
            Watcher::Isolate { peer, incarnation } => {
                if let Some(peer) = peer.upgrade() {
                    peer.signal(Signal {
                        incarnation,
                        down: down(Some(monitor)),
                        link: false,
                    });
                }
            }
            // Never waits: an unbounded port (as `monitor_port` makes).
            Watcher::Port(port) => {
                let _ = port.try_send(down(Some(monitor)));
            }
        }
    }
    for link in ended.links {
        let Some(peer) = link.peer.upgrade() else {
            continue;
        };
        if peer.watch().unlink_ended(me.id(), ended.incarnation) {
            peer.signal(Signal {
                incarnation: link.incarnation,
                down: down(None),
                link: true,
            });
        }
    }
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signal")
            .field("incarnation", &self.incarnation)
            .field("down", &self.down)
            .field("link", &self.link)
            .finish()
    }
}
