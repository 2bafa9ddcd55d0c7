//! The supervisor's thread: starting its children, restarting them by its
//! strategy within its restart intensity, and stopping them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel as cb;

use super::backoff::Backoff;
use super::events::SupervisionEvent;
use super::shared::{SupMsg, SupShared};
use super::spec::{ABANDON_AFTER, Child, ChildSpec, Restart, Shutdown, Strategy};
use crate::error::SpawnError;
use crate::isolate::{ExitReason, Leftover, Priority};

/// How a supervisor decides on restarts (from its builder).
pub(super) struct Policy {
    pub(super) strategy: Strategy,
    pub(super) intensity: u32,
    pub(super) period: Duration,
    pub(super) backoff: Backoff,
}

/// One child as its supervisor tracks it.
struct Slot {
    spec: ChildSpec,
    child: Box<dyn Child>,
    /// Increases with every start: exits of older incarnations are stale.
    generation: u64,
    running: bool,
    /// Ended for good (a temporary or a normally exited transient child).
    gone: bool,
    /// This child's restart times within the intensity window.
    recent: VecDeque<Instant>,
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
    /// Children waiting out their backoff: (due, index).
    due: Vec<(Instant, usize)>,
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
            let child = match (spec.factory)(&self.shared.registry) {
                Ok(child) => child,
                Err(e) => {
                    self.shutdown_all();
                    return Err(e);
                }
            };
            self.slots.push(Slot {
                spec,
                child,
                generation: 0,
                running: false,
                gone: false,
                recent: VecDeque::new(),
            });
            let index = self.slots.len() - 1;
            if let Err(e) = self.start_child(index) {
                self.shutdown_all();
                return Err(e);
            }
            let child = self.slots[index].spec.name.clone();
            self.shared.emit(SupervisionEvent::Started { child });
        }
        Ok(())
    }

    fn start_child(&mut self, index: usize) -> Result<(), SpawnError> {
        let slot = &mut self.slots[index];
        slot.generation += 1;
        let generation = slot.generation;
        let tx = self.shared.tx.clone();
        slot.child.start(Box::new(move |reason, leftover| {
            let _ = tx.send(SupMsg::Exited {
                index,
                generation,
                reason,
                leftover,
            });
        }))?;
        slot.running = true;
        Ok(())
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
                    index,
                    generation,
                    reason,
                    leftover,
                }) => {
                    if let Some(reason) = self.child_exited(index, generation, reason, leftover) {
                        return reason;
                    }
                }
            }
        }
    }

    /// Records an exit; decides what to restart. `Some` when giving up.
    fn child_exited(
        &mut self,
        index: usize,
        generation: u64,
        reason: ExitReason,
        leftover: Option<Leftover>,
    ) -> Option<ExitReason> {
        let slot = &mut self.slots[index];
        if generation != slot.generation {
            return None;
        }
        slot.running = false;
        slot.child.ended(leftover);
        let name = slot.spec.name.clone();
        self.shared.emit(SupervisionEvent::Exited {
            child: name.clone(),
            reason: reason.clone(),
        });
        let restart = match slot.spec.restart {
            Restart::Permanent => true,
            Restart::Transient => reason != ExitReason::Normal,
            Restart::Temporary => false,
        };
        if !restart {
            slot.gone = true;
            slot.child.close(reason);
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
            self.shared.emit(SupervisionEvent::GaveUp {
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
        let due = now + self.backoff.delay(attempt, random);
        for i in affected {
            if !self.slots[i].gone {
                self.due.push((due, i));
            }
        }
        self.restart_due()
    }

    /// Restarts the children whose backoff is over, in child order.
    fn restart_due(&mut self) -> Option<ExitReason> {
        let now = Instant::now();
        let mut ready: Vec<usize> = Vec::new();
        self.due.retain(|&(at, i)| {
            if at <= now {
                ready.push(i);
                false
            } else {
                true
            }
        });
        ready.sort_unstable();
        ready.dedup();
        for i in ready {
            if self.slots[i].gone || self.slots[i].running {
                continue;
            }
            let attempt = u32::try_from(self.slots[i].recent.len()).unwrap_or(u32::MAX);
            match self.start_child(i) {
                Ok(()) => {
                    let child = self.slots[i].spec.name.clone();
                    self.shared
                        .emit(SupervisionEvent::Restarted { child, attempt });
                }
                Err(e) => {
                    let why = ExitReason::Failed(format!(
                        "{}: could not restart {}: {e}",
                        self.shared.name, self.slots[i].spec.name
                    ));
                    self.shutdown_all();
                    self.shared.emit(SupervisionEvent::GaveUp {
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
                    index,
                    generation,
                    reason,
                    leftover,
                }) if index == i && generation == self.slots[i].generation => {
                    let slot = &mut self.slots[i];
                    slot.running = false;
                    slot.child.ended(leftover);
                    self.shared.emit(SupervisionEvent::Exited {
                        child: slot.spec.name.clone(),
                        reason,
                    });
                }
                // Another child's exit is handled in full by the main loop
                // (restart, intensity), after this wait.
                Some(other) => later.push(other),
            }
        };
        // Requeue what was not ours (other exits, a stop request) for the
        // main loop.
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
}
