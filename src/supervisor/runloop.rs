//! The supervisor's thread: starting its children, restarting them by its
//! strategy within its restart intensity, and stopping them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel as cb;

use super::error::ChildError;
use super::events::SupervisionEvent;
use super::shared::{Call, Request, SupMsg, SupShared};
use super::spec::{ABANDON_AFTER, Child, ChildInfo, ChildSpec, Restart, Shutdown, Strategy};
use crate::Backoff;
use crate::error::ExitReason;
use crate::error::SpawnError;
use crate::isolate::{Leftover, Priority};

/// How a supervisor decides on restarts (from its builder).
pub(super) struct Policy {
    pub(super) strategy: Strategy,
    pub(super) intensity: u32,
    pub(super) period: Duration,
    pub(super) backoff: Backoff,
}

/// One child as its supervisor tracks it.
struct Slot {
    /// Stable while the child is here; indexes shift as children come and
    /// go.
    id: u64,
    spec: ChildSpec,
    child: Box<dyn Child>,
    /// Increases with every start: exits of older incarnations are stale.
    generation: u64,
    running: bool,
    /// Ended for good (a temporary or a normally exited transient child,
    /// one stopped by `terminate_child` or abandoned): `child` is closed,
    /// and only `restart_child` starts it again, from a fresh one.
    gone: bool,
    /// This child's restart times within the intensity window.
    recent: VecDeque<Instant>,
    /// Restarts by the supervisor since the child was added.
    restarts: u64,
}

impl Slot {
    fn new(id: u64, spec: ChildSpec, child: Box<dyn Child>) -> Self {
        Slot {
            id,
            spec,
            child,
            generation: 0,
            running: false,
            gone: false,
            recent: VecDeque::new(),
            restarts: 0,
        }
    }

    /// A temporary child's spec goes with it, as in OTP.
    fn forgotten(&self) -> bool {
        self.gone && self.spec.restart == Restart::Temporary
    }

    fn info(&self) -> ChildInfo {
        ChildInfo {
            name: self.spec.name.clone(),
            kind: self.spec.kind,
            restart: self.spec.restart,
            running: self.running,
            restarts: self.restarts,
        }
    }
}

/// The supervisor's thread.
pub(super) struct SupRun {
    shared: Arc<SupShared>,
    rx: cb::Receiver<SupMsg>,
    strategy: Strategy,
    intensity: u32,
    period: Duration,
    backoff: Backoff,
    specs: Vec<ChildSpec>,
    slots: Vec<Slot>,
    /// Restart times of all children within the window.
    restarts: VecDeque<Instant>,
    /// Children waiting out their backoff: (due, id).
    due: Vec<(Instant, u64)>,
    next_id: u64,
    rng: u64,
}

impl SupRun {
    pub(super) fn new(
        policy: Policy,
        specs: Vec<ChildSpec>,
        shared: Arc<SupShared>,
        rx: cb::Receiver<SupMsg>,
    ) -> Self {
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let seed = u64::from(clock)
            ^ (Arc::as_ptr(&shared) as u64).rotate_left(17)
            ^ 0x9E37_79B9_7F4A_7C15;
        SupRun {
            shared,
            rx,
            strategy: policy.strategy,
            intensity: policy.intensity,
            period: policy.period,
            backoff: policy.backoff,
            specs,
            slots: Vec::new(),
            restarts: VecDeque::new(),
            due: Vec::new(),
            next_id: 0,
            rng: seed | 1,
        }
    }

    /// xorshift64*: jitter needs no more.
    fn random(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    pub(super) fn start_children(&mut self) -> Result<(), SpawnError> {
        for spec in std::mem::take(&mut self.specs) {
            let index = match self.add_slot(spec) {
                Ok(index) => index,
                Err(e) => {
                    self.shutdown_all();
                    return Err(e);
                }
            };
            if let Err(e) = self.start_child(index) {
                self.shutdown_all();
                return Err(e);
            }
            let child = self.slots[index].spec.name.clone();
            self.emit(SupervisionEvent::Started { child });
        }
        Ok(())
    }

    /// Builds `spec`'s child (registering its handle) as the last child,
    /// not started; its index.
    fn add_slot(&mut self, spec: ChildSpec) -> Result<usize, SpawnError> {
        let child = (spec.factory)(&self.shared.registry)?;
        self.next_id += 1;
        self.slots.push(Slot::new(self.next_id, spec, child));
        Ok(self.slots.len() - 1)
    }

    fn start_child(&mut self, index: usize) -> Result<(), SpawnError> {
        let slot = &mut self.slots[index];
        slot.generation += 1;
        let (id, generation) = (slot.id, slot.generation);
        let tx = self.shared.tx.clone();
        slot.child.start(Box::new(move |reason, leftover| {
            let _ = tx.send(SupMsg::Exited {
                id,
                generation,
                reason,
                leftover,
            });
        }))?;
        slot.running = true;
        Ok(())
    }

    /// The index of the child with this id, if it is still here.
    fn position(&self, id: u64) -> Option<usize> {
        self.slots.iter().position(|slot| slot.id == id)
    }

    /// The index of the child called `name`.
    fn find(&self, name: &str) -> Result<usize, ChildError> {
        self.slots
            .iter()
            .position(|slot| !slot.forgotten() && slot.spec.name == name)
            .ok_or_else(|| ChildError::NotFound {
                name: name.to_owned(),
                children: self
                    .slots
                    .iter()
                    .filter(|slot| !slot.forgotten())
                    .map(|slot| slot.spec.name.clone())
                    .collect(),
            })
    }

    /// Shows the children to [`Supervisor::children`](super::Supervisor::children).
    fn publish(&self) {
        let children = self
            .slots
            .iter()
            .filter(|slot| !slot.forgotten())
            .map(Slot::info)
            .collect();
        *self.shared.children.lock() = children;
    }

    /// Tells the listeners, after publishing the children: whoever sees an
    /// event sees the children at least as they were when it happened.
    fn emit(&self, event: SupervisionEvent) {
        self.publish();
        self.shared.emit(event);
    }

    /// Removes the specs of temporary children that ended, with their
    /// names. Only between messages: indexes shift.
    fn prune(&mut self) {
        if !self.slots.iter().any(Slot::forgotten) {
            return;
        }
        let mut registry = self.shared.registry.lock();
        self.slots.retain(|slot| {
            if slot.forgotten() {
                registry.remove(&slot.spec.name);
                false
            } else {
                true
            }
        });
    }

    pub(super) fn serve(&mut self) -> ExitReason {
        loop {
            let next_due = self.due.iter().map(|(at, _)| *at).min();
            let msg = match next_due {
                Some(at) => match self.rx.recv_deadline(at) {
                    Ok(msg) => Some(msg),
                    Err(cb::RecvTimeoutError::Timeout) => None,
                    Err(cb::RecvTimeoutError::Disconnected) => return ExitReason::Normal,
                },
                // The shared record holds a sender: never disconnected.
                None => self.rx.recv().ok(),
            };
            match msg {
                None => {
                    if let Some(reason) = self.restart_due() {
                        return reason;
                    }
                }
                Some(SupMsg::Stop) => {
                    self.shutdown_all();
                    return ExitReason::Normal;
                }
                Some(SupMsg::Exited {
                    id,
                    generation,
                    reason,
                    leftover,
                }) => {
                    if let Some(reason) = self.child_exited(id, generation, reason, leftover) {
                        return reason;
                    }
                }
                Some(SupMsg::Call(call)) => self.handle_call(call),
            }
            self.prune();
            self.publish();
        }
    }

    /// Drops what is still queued once the supervisor has exited: the
    /// [`Pending`](crate::Pending)s of requests in it resolve as
    /// [`ChildError::Exited`].
    pub(super) fn discard_queue(&self) {
        while self.rx.try_recv().is_ok() {}
    }

    /// Records an exit; decides what to restart. `Some` when giving up.
    fn child_exited(
        &mut self,
        id: u64,
        generation: u64,
        reason: ExitReason,
        leftover: Option<Leftover>,
    ) -> Option<ExitReason> {
        // A deleted child, an older incarnation, or one already handled
        // (an abandoned child that exits after all).
        let index = self.position(id)?;
        let slot = &mut self.slots[index];
        if generation != slot.generation || !slot.running {
            return None;
        }
        slot.running = false;
        slot.child.ended(leftover);
        let name = slot.spec.name.clone();
        let restart = match slot.spec.restart {
            Restart::Permanent => true,
            Restart::Transient => reason != ExitReason::Normal,
            Restart::Temporary => false,
        };
        if !restart {
            slot.gone = true;
            slot.child.close(reason.clone());
        }
        self.emit(SupervisionEvent::Exited {
            child: name.clone(),
            reason: reason.clone(),
        });
        if !restart {
            return None;
        }
        // Intensity: one more restart within the window is allowed only up
        // to the limit.
        let now = Instant::now();
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.period)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() >= self.intensity as usize {
            let why = ExitReason::Failed(format!(
                "{}: restart intensity reached ({} in {:?}); last exit of {name}: {reason}",
                self.shared.name, self.intensity, self.period
            ));
            // The child that exited is closed with its own reason.
            self.slots[index].gone = true;
            self.slots[index].child.close(reason);
            self.shutdown_all();
            self.emit(SupervisionEvent::GaveUp {
                reason: why.clone(),
            });
            return Some(why);
        }
        self.restarts.push_back(now);
        let affected: Vec<usize> = match self.strategy {
            Strategy::OneForOne => vec![index],
            Strategy::OneForAll => (0..self.slots.len()).collect(),
            Strategy::RestForOne => (index..self.slots.len()).collect(),
        };
        // Stop the running siblings in reverse order; temporary ones end.
        for &i in affected.iter().rev() {
            if i != index && self.slots[i].running {
                self.stop_child(i, false);
                if self.slots[i].spec.restart == Restart::Temporary {
                    self.slots[i].gone = true;
                    self.slots[i].child.close(ExitReason::Killed);
                }
            }
        }
        for &i in &affected {
            let slot = &mut self.slots[i];
            while slot
                .recent
                .front()
                .is_some_and(|t| now.duration_since(*t) > self.period)
            {
                slot.recent.pop_front();
            }
            if !slot.gone {
                slot.recent.push_back(now);
            }
        }
        // One delay for the whole wave, from the child that exited, so the
        // wave restarts together, in child order.
        let attempt = u32::try_from(self.slots[index].recent.len()).unwrap_or(u32::MAX);
        let random = self.random();
        let due = now + self.backoff.delay_with(attempt, random);
        for i in affected {
            if !self.slots[i].gone {
                self.due.push((due, self.slots[i].id));
            }
        }
        self.restart_due()
    }

    /// Restarts the children whose backoff is over, in child order.
    fn restart_due(&mut self) -> Option<ExitReason> {
        let now = Instant::now();
        let mut ready: Vec<u64> = Vec::new();
        self.due.retain(|&(at, id)| {
            if at <= now {
                ready.push(id);
                false
            } else {
                true
            }
        });
        let mut ready: Vec<usize> = ready
            .into_iter()
            .filter_map(|id| self.position(id))
            .collect();
        ready.sort_unstable();
        ready.dedup();
        for i in ready {
            if self.slots[i].gone || self.slots[i].running {
                continue;
            }
            let attempt = u32::try_from(self.slots[i].recent.len()).unwrap_or(u32::MAX);
            match self.start_child(i) {
                Ok(()) => {
                    self.slots[i].restarts += 1;
                    let child = self.slots[i].spec.name.clone();
                    self.emit(SupervisionEvent::Restarted { child, attempt });
                }
                Err(e) => {
                    let why = ExitReason::Failed(format!(
                        "{}: could not restart {}: {e}",
                        self.shared.name, self.slots[i].spec.name
                    ));
                    self.shutdown_all();
                    self.emit(SupervisionEvent::GaveUp {
                        reason: why.clone(),
                    });
                    return Some(why);
                }
            }
        }
        None
    }

    /// Stops child `i` by its shutdown policy and waits for its exit
    /// (abandoning it after a while if `final_stop`). Other messages that
    /// arrive meanwhile are handled after.
    fn stop_child(&mut self, i: usize, final_stop: bool) {
        let (first, wait_first) = match self.slots[i].spec.shutdown {
            Shutdown::Immediate => (Priority::Immediate, ABANDON_AFTER),
            Shutdown::Timeout(t) => (Priority::AfterCurrent, t),
        };
        self.slots[i].child.stop(first);
        if self.wait_exit(i, wait_first) {
            return;
        }
        if first == Priority::AfterCurrent {
            self.slots[i].child.stop(Priority::Immediate);
            if self.wait_exit(i, ABANDON_AFTER) {
                return;
            }
        }
        if final_stop {
            tracing::warn!(target: "isolates", supervisor = %self.shared.name,
                child = %self.slots[i].spec.name, "abandoning a child that does not stop");
            self.slots[i].running = false;
            self.slots[i].gone = true;
            self.slots[i].child.close(ExitReason::Killed);
        } else {
            // A restart needs the old incarnation gone: keep waiting, as
            // long as it takes, without waking to say so again.
            tracing::warn!(target: "isolates", supervisor = %self.shared.name,
                child = %self.slots[i].spec.name, "a child does not stop; waiting for it");
            self.wait_exit(i, Duration::MAX);
        }
    }

    /// Waits up to `timeout` for child `i`'s current incarnation to exit.
    fn wait_exit(&mut self, i: usize, timeout: Duration) -> bool {
        let deadline = crate::time::deadline_after(timeout);
        let mut later = Vec::new();
        let done = loop {
            if !self.slots[i].running {
                break true;
            }
            let msg = match deadline {
                Some(d) => self.rx.recv_deadline(d).ok(),
                None => self.rx.recv().ok(),
            };
            match msg {
                None => break false,
                Some(SupMsg::Exited {
                    id,
                    generation,
                    reason,
                    leftover,
                }) if id == self.slots[i].id && generation == self.slots[i].generation => {
                    let slot = &mut self.slots[i];
                    slot.running = false;
                    slot.child.ended(leftover);
                    let child = slot.spec.name.clone();
                    self.emit(SupervisionEvent::Exited { child, reason });
                }
                // Another child's exit is handled in full by the main loop
                // (restart, intensity), after this wait.
                Some(other) => later.push(other),
            }
        };
        // Requeue what was not ours (other exits, a stop request, a call)
        // for the main loop.
        for msg in later {
            let _ = self.shared.tx.send(msg);
        }
        done
    }

    /// Stops every running child in reverse order and ends them all.
    fn shutdown_all(&mut self) {
        self.due.clear();
        for i in (0..self.slots.len()).rev() {
            if self.slots[i].running {
                self.stop_child(i, true);
            }
            if !self.slots[i].gone {
                self.slots[i].gone = true;
                self.slots[i].child.close(ExitReason::Killed);
            }
        }
    }

    /// Serves a request from a handle and answers it, once what it changed
    /// is published.
    fn handle_call(&mut self, call: Call) {
        self.prune();
        let (request, answer) = call.into_parts();
        let result = match request {
            Request::Start(spec) => self.add_child(spec),
            Request::Terminate(name) => self.terminate(&name),
            Request::Restart(name) => self.restart(&name),
            Request::Delete(name) => self.delete(&name),
        };
        self.prune();
        self.publish();
        answer.send(result);
    }

    /// `start_child`: a new last child, started now.
    fn add_child(&mut self, spec: ChildSpec) -> Result<(), ChildError> {
        let name = spec.name.clone();
        if self.find(&name).is_ok() {
            return Err(ChildError::AlreadyPresent { name });
        }
        let index = self
            .add_slot(spec)
            .map_err(|error| ChildError::StartFailed {
                name: name.clone(),
                error,
            })?;
        if let Err(error) = self.start_child(index) {
            // Not added: its handle, if someone took it, reports the exit.
            let mut slot = self.slots.remove(index);
            slot.child
                .close(ExitReason::Failed(format!("could not start: {error}")));
            self.shared.registry.lock().remove(&name);
            return Err(ChildError::StartFailed { name, error });
        }
        self.emit(SupervisionEvent::Started { child: name });
        Ok(())
    }

    /// `terminate_child`: stopped by its shutdown policy, not restarted.
    fn terminate(&mut self, name: &str) -> Result<(), ChildError> {
        let i = self.find(name)?;
        let id = self.slots[i].id;
        // Waiting out its backoff: it stays stopped.
        self.due.retain(|&(_, due)| due != id);
        if self.slots[i].running {
            self.stop_child(i, true);
        }
        let slot = &mut self.slots[i];
        if !slot.gone {
            slot.gone = true;
            slot.child.close(ExitReason::Killed);
        }
        Ok(())
    }

    /// Whether child `i` runs or is about to be restarted.
    fn active(&self, i: usize) -> bool {
        let slot = &self.slots[i];
        slot.running || self.due.iter().any(|&(_, id)| id == slot.id)
    }

    /// `restart_child`: a terminated child started again, fresh.
    fn restart(&mut self, name: &str) -> Result<(), ChildError> {
        let i = self.find(name)?;
        if self.active(i) {
            return Err(ChildError::Running {
                name: name.to_owned(),
            });
        }
        let failed = |error| ChildError::StartFailed {
            name: name.to_owned(),
            error,
        };
        if self.slots[i].gone {
            // Its last child is closed (handles to it report the exit): a
            // fresh one, whose handle replaces it under this name.
            let fresh = (self.slots[i].spec.factory)(&self.shared.registry).map_err(failed)?;
            self.slots[i].child = fresh;
            self.slots[i].gone = false;
        }
        if let Err(error) = self.start_child(i) {
            let slot = &mut self.slots[i];
            slot.gone = true;
            slot.child
                .close(ExitReason::Failed(format!("could not start: {error}")));
            return Err(failed(error));
        }
        self.emit(SupervisionEvent::Started {
            child: name.to_owned(),
        });
        Ok(())
    }

    /// `delete_child`: a stopped child's spec removed.
    fn delete(&mut self, name: &str) -> Result<(), ChildError> {
        let i = self.find(name)?;
        if self.active(i) {
            return Err(ChildError::Running {
                name: name.to_owned(),
            });
        }
        let mut slot = self.slots.remove(i);
        if !slot.gone {
            slot.child.close(ExitReason::Killed);
        }
        self.shared.registry.lock().remove(name);
        self.emit(SupervisionEvent::Deleted {
            child: name.to_owned(),
        });
        Ok(())
    }
}
