//! The works, their states and the transitions between them: a pure
//! record table.
//!
//! The table holds the records of the works it must (see [`lazy`]: not
//! every stored work) and the indexes over them (what waits on what, the
//! unique names, the order works are due in), and
//! moves works from state to state. It does no I/O, starts no threads and
//! reads no clock: each transition takes the time it needs, and the table
//! notes what it changed for the scheduler to apply: the records to write
//! and to delete ([`pending`](Table::pending), [`written_for`](Table::written_for)),
//! and the runs to stop ([`take_halts`](Table::take_halts)).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use super::clock::dur_ms;
use super::request::{
    Alarm, InputMerger, MissedAlarm, Spec, WorkId, WorkInfo, WorkQuery, WorkState,
};
use super::store::Record;
use crate::codec::{Bincode, Codec};

/// The least time (on the work clock, ms) between two looks for finished
/// work to delete; a look happens only once some may be deleted.
const PRUNE_EVERY: i64 = 60_000;
/// Why work replaced under its unique name was cancelled.
pub(super) const REPLACED: &str = "replaced by new work under its unique name";
/// Why a run whose constraints stopped holding was stopped.
const CONSTRAINTS_LOST: &str = "its constraints stopped holding during the run; it runs again once \
                                they hold";

/// The settings the transitions follow.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// How long finished work is kept.
    pub(super) keep_finished: Duration,
    /// The least wait before a retry, whatever a stored backoff says.
    pub(super) min_backoff: Duration,
    /// The largest input made from prerequisites' outputs.
    pub(super) data_limit: usize,
}

/// What a written turn changed, to publish.
pub(super) struct Written {
    /// The works changed, as they are now.
    pub(super) changed: Vec<WorkInfo>,
    /// The works deleted (the tests read them; the store deletes them
    /// from [`Table::pending`]).
    #[cfg(test)]
    pub(super) deleted: Vec<u64>,
    /// The last state of works deleted this turn because new work under
    /// their unique name superseded them: their watchers get it.
    pub(super) gone: Vec<WorkInfo>,
}

/// Every work, by id, with its indexes and the changes not yet written.
pub(super) struct Table {
    limits: Limits,
    records: HashMap<u64, Box<Record>>,
    /// Prerequisite → the works waiting for it.
    dependents: HashMap<u64, Vec<u64>>,
    unique: HashMap<String, Vec<u64>>,
    /// Enqueued works by earliest start.
    due: BTreeSet<(i64, u64)>,
    next_id: u64,
    /// Works changed since the last write.
    dirty: HashSet<u64>,
    /// Works deleted since the last write.
    deleted: Vec<u64>,
    /// See [`Written::gone`].
    gone: Vec<WorkInfo>,
    /// Works whose run, if one is in progress, must be told to stop.
    halts: Vec<u64>,
    /// When finished work may first be deleted, on the work clock
    /// (`i64::MAX`: none is waiting to be).
    prune_at: i64,
    /// When finished work was last looked at for deleting.
    pruned_at: i64,
    /// Works whose prerequisites changed, to decide (see
    /// [`resolve_dependents`](Self::resolve_dependents)), with the time.
    cascade: Vec<(u64, i64)>,
    /// Whether a cascade is being worked through.
    cascading: bool,
    /// See [`lazy`]: enqueued works after this (due, id) may be stored
    /// and not held; `None`: every enqueued work is held.
    horizon: Option<(i64, u64)>,
    /// Works whose tags the next write puts (new works, changed tags),
    /// with whether the store may hold tag rows of theirs to delete first
    /// (not for new works).
    retag: HashMap<u64, bool>,
    /// Works read in from the store for this turn ([`Table::fault_in`]).
    faulted: Vec<u64>,
    /// How many held enqueued works make the table bring its horizon
    /// nearer.
    trim_at: usize,
}

impl Table {
    /// An empty table whose next work gets id `next_id`.
    pub(super) fn new(limits: Limits, next_id: u64) -> Self {
        Table {
            limits,
            records: HashMap::new(),
            dependents: HashMap::new(),
            unique: HashMap::new(),
            due: BTreeSet::new(),
            next_id,
            dirty: HashSet::new(),
            deleted: Vec::new(),
            gone: Vec::new(),
            halts: Vec::new(),
            // The first turn looks at the work loaded from the store.
            prune_at: i64::MIN,
            pruned_at: i64::MIN,
            cascade: Vec::new(),
            cascading: false,
            horizon: None,
            retag: HashMap::new(),
            faulted: Vec::new(),
            trim_at: 2 * lazy::PAGE,
        }
    }

    /// Takes in the records loaded from the store at `now`: work a crash
    /// interrupted is enqueued again, work that replaced itself during an
    /// interrupted run is cancelled, and blocked work whose prerequisites
    /// were decided before the last stop is decided.
    pub(super) fn load(&mut self, records: Vec<Record>, now: i64) {
        for rec in records {
            self.admit(rec, now);
        }
        // A prerequisite may have finished (or become unreadable) without
        // its dependents being decided before the last stop.
        let mut blocked: Vec<u64> = self
            .records
            .values()
            .filter(|r| r.state == WorkState::Blocked)
            .map(|r| r.id)
            .collect();
        blocked.sort_unstable();
        for id in blocked {
            self.resolve_blocked(id, now);
        }
    }

    // ---- reading ---------------------------------------------------------

    /// Work `id`'s record.
    pub(super) fn get(&self, id: u64) -> Option<&Record> {
        self.records.get(&id).map(|r| &**r)
    }

    /// Every record held, in no order.
    #[cfg(test)]
    pub(super) fn records(&self) -> impl Iterator<Item = &Record> {
        self.records.values().map(|r| &**r)
    }

    /// The enqueued works as (earliest start, id), earliest first.
    pub(super) fn due(&self) -> impl Iterator<Item = (i64, u64)> + '_ {
        self.due.iter().copied()
    }

    /// The works under unique name `name`, finished or not.
    pub(super) fn named(&self, name: &str) -> Vec<u64> {
        self.unique
            .get(name)
            .map(|ids| {
                ids.iter()
                    .copied()
                    .filter(|id| self.records.contains_key(id))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Works among `ids` that no other work among them waits for.
    pub(super) fn leaves(&self, ids: &[u64]) -> Vec<u64> {
        let set: HashSet<u64> = ids.iter().copied().collect();
        ids.iter()
            .copied()
            .filter(|id| {
                self.dependents
                    .get(id)
                    .is_none_or(|ds| !ds.iter().any(|d| set.contains(d)))
            })
            .collect()
    }

    /// How long alarm work due at `at` missed its time by, at `now`, if
    /// that is past its [`MissedAlarm::SkipAfter`] window: it is skipped.
    pub(super) fn missed_alarm(rec: &Record, at: i64, now: i64) -> Option<(Duration, Duration)> {
        let Some(Alarm {
            missed: MissedAlarm::SkipAfter(window),
            ..
        }) = rec.alarm
        else {
            return None;
        };
        let late = now.saturating_sub(at);
        (late > dur_ms(window)).then(|| (Duration::from_millis(late.unsigned_abs()), window))
    }

    // ---- the store's side ------------------------------------------------

    /// Whether nothing changed since the last write.
    pub(super) fn is_clean(&self) -> bool {
        self.dirty.is_empty() && self.deleted.is_empty()
    }

    /// What the next write puts and deletes, and the works whose tags it
    /// puts.
    pub(super) fn pending(&self) -> (impl Iterator<Item = &Record>, &[u64], &HashMap<u64, bool>) {
        let records = &self.records;
        let puts = self
            .dirty
            .iter()
            .filter_map(|id| records.get(id).map(|r| &**r));
        (puts, &self.deleted, &self.retag)
    }

    /// Marks [`pending`](Self::pending) written; returns what it changed.
    #[cfg(test)]
    pub(super) fn written(&mut self) -> Written {
        self.written_for(true)
    }

    /// Marks [`pending`](Self::pending) written; returns what it changed,
    /// with the changed works' infos if `infos` (someone watches). The
    /// works that need not stay in memory leave it ([`lazy`]).
    pub(super) fn written_for(&mut self, infos: bool) -> Written {
        let ids: Vec<u64> = self.dirty.drain().collect();
        self.retag.clear();
        let changed = if infos {
            ids.iter()
                .filter_map(|id| self.records.get(id).map(|r| r.info()))
                .collect()
        } else {
            Vec::new()
        };
        let written = Written {
            changed,
            #[cfg(test)]
            deleted: std::mem::take(&mut self.deleted),
            gone: std::mem::take(&mut self.gone),
        };
        self.deleted.clear();
        self.release(ids);
        written
    }

    /// The works whose run, if one is in progress, must be told to stop.
    pub(super) fn take_halts(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.halts)
    }

    // ---- indexes ---------------------------------------------------------

    /// Adds a record to the indexes.
    fn insert(&mut self, rec: Record) {
        for &p in &rec.prerequisites {
            self.dependents.entry(p).or_default().push(rec.id);
        }
        if let Some(name) = &rec.unique {
            self.unique.entry(name.clone()).or_default().push(rec.id);
        }
        if rec.state == WorkState::Enqueued {
            self.due.insert((rec.next_run_at, rec.id));
        }
        self.records.insert(rec.id, Box::new(rec));
    }

    /// Changes a record, keeping the due index right and marking it for
    /// the store.
    fn update(&mut self, id: u64, f: impl FnOnce(&mut Record)) {
        let Some(rec) = self.records.get_mut(&id) else {
            return;
        };
        let was_finished = rec.state.is_finished();
        if rec.state == WorkState::Enqueued {
            self.due.remove(&(rec.next_run_at, id));
        }
        f(rec);
        // Progress is the run's: gone when the run ends (Android clears it
        // when a work finishes).
        if rec.state != WorkState::Running {
            rec.progress = None;
        }
        if rec.state == WorkState::Enqueued {
            self.due.insert((rec.next_run_at, id));
        }
        let finished = !was_finished && rec.state.is_finished();
        self.dirty.insert(id);
        if finished {
            self.arm_prune(id);
        }
    }

    /// Removes work `id` from the indexes and, at the next write, from the
    /// store and the snapshots; a change made this turn still reaches its
    /// watchers.
    fn delete(&mut self, id: u64) {
        let Some(rec) = self.records.remove(&id) else {
            return;
        };
        if rec.state == WorkState::Enqueued {
            self.due.remove(&(rec.next_run_at, id));
        }
        for p in &rec.prerequisites {
            if let Some(ds) = self.dependents.get_mut(p) {
                ds.retain(|&d| d != id);
            }
        }
        self.dependents.remove(&id);
        if self.dirty.remove(&id) {
            self.gone.push(rec.info());
        }
        self.deleted.push(id);
    }

    // ---- enqueueing ------------------------------------------------------

    /// Adds `stages` as new works at `now`, each stage waiting on the one
    /// before, the first on `after`; under unique name `name` if given.
    pub(super) fn add_chain(
        &mut self,
        stages: Vec<Vec<Spec>>,
        name: Option<String>,
        after: Vec<u64>,
        now: i64,
    ) -> Vec<WorkId> {
        let mut ids = Vec::new();
        let mut prev = after;
        for stage in stages {
            let mut this = Vec::new();
            for spec in stage {
                let id = self.next_id;
                self.next_id += 1;
                let rec = new_record(id, spec, name.clone(), prev.clone(), now);
                self.insert(rec);
                self.dirty.insert(id);
                self.retag.insert(id, false);
                if !prev.is_empty() {
                    self.resolve_blocked(id, now);
                }
                this.push(id);
                ids.push(WorkId(id));
            }
            prev = this;
        }
        ids
    }

    /// Makes way for new work under `name`: the works `ids` that had it
    /// are deleted, as Android deletes the works that REPLACE (or KEEP and
    /// APPEND_OR_REPLACE over finished work) supersede. Unfinished ones
    /// were cancelled first, and their watchers get that last change; one
    /// replaced from its own run only loses the name, and is cancelled
    /// when that run ends.
    pub(super) fn supersede(&mut self, name: &str, ids: &[u64]) {
        self.unique.remove(name);
        for &id in ids {
            if self.records.get(&id).is_some_and(|r| r.retire) {
                self.update(id, |r| r.unique = None);
            } else {
                self.delete(id);
            }
        }
    }

    /// Marks running work `id` as replaced from its own run: it is
    /// cancelled when that run ends ([`end_retired`](Self::end_retired)).
    pub(super) fn retire(&mut self, id: u64) {
        self.update(id, |r| r.retire = true);
    }

    /// Whether work `id` replaced itself during its run.
    pub(super) fn is_retiring(&self, id: u64) -> bool {
        self.records.get(&id).is_some_and(|r| r.retire)
    }

    /// Ends work `id`, replaced from its own run, now that the run ended.
    pub(super) fn end_retired(&mut self, id: u64, now: i64) {
        self.cancel_one(id, REPLACED, now);
    }

    /// Changes unfinished work `id` to what `spec` asks, in place (UPDATE).
    pub(super) fn update_in_place(&mut self, id: u64, spec: Spec, now: i64) {
        self.retag.entry(id).or_insert(true);
        if self
            .records
            .get(&id)
            .is_some_and(|r| r.state == WorkState::Enqueued)
        {
            // A run handed out that has not started carries the old
            // request: it is taken back, and the work runs as updated.
            self.halts.push(id);
        }
        self.update(id, |r| {
            r.handler = spec.handler;
            if spec.input.is_some() {
                r.input = spec.input;
            }
            r.tags = spec.tags;
            r.constraints = spec.constraints;
            r.backoff = spec.backoff;
            r.time_limit = spec.time_limit;
            r.input_merger = spec.input_merger;
            r.initial_delay = spec.initial_delay;
            r.periodic = spec.periodic;
            r.alarm = spec.alarm;
            if r.state == WorkState::Enqueued && r.retries == 0 {
                r.next_run_at = match r.periodic {
                    // Keeps its timing: same period, new window.
                    Some((interval, flex)) => {
                        r.period_start.saturating_add(interval.saturating_sub(flex))
                    }
                    None => match r.alarm {
                        // An alarm moves to its new time.
                        Some(alarm) => alarm.at.max(now),
                        None => r
                            .enqueued_at
                            .saturating_add(r.initial_delay)
                            .max(now.min(r.next_run_at)),
                    },
                };
            }
        });
    }

    // ---- chains ----------------------------------------------------------

    /// Decides the fate of the works waiting on `id`, and of the works
    /// waiting on those, with a work list rather than recursion: a chain of
    /// any length (user-sized data) takes no more stack than one link.
    /// Called while a cascade is under way, it adds to that cascade's list.
    fn resolve_dependents(&mut self, id: u64, now: i64) {
        if let Some(ds) = self.dependents.get(&id) {
            // Reversed: popped in order, as the recursion visited them.
            self.cascade.extend(ds.iter().rev().map(|&d| (d, now)));
        }
        if self.cascading {
            return;
        }
        self.cascading = true;
        while let Some((d, at)) = self.cascade.pop() {
            self.resolve_blocked(d, at);
        }
        self.cascading = false;
    }

    /// Decides a blocked work's fate from its prerequisites.
    fn resolve_blocked(&mut self, id: u64, now: i64) {
        let Some(rec) = self.records.get(&id) else {
            return;
        };
        if rec.state != WorkState::Blocked {
            return;
        }
        // A missing prerequisite is an unreadable row (finished work is
        // pruned only once its dependents finished): keep waiting.
        let Some(states) = rec
            .prerequisites
            .iter()
            .map(|p| self.records.get(p).map(|r| (*p, r.state)))
            .collect::<Option<Vec<(u64, WorkState)>>>()
        else {
            return;
        };
        // A failed prerequisite before a cancelled one, as Android's
        // `EnqueueRunnable` decides a dependent of both.
        if let Some((p, _)) = states.iter().find(|(_, s)| *s == WorkState::Failed) {
            let why = format!("its prerequisite {} failed", WorkId(*p));
            self.fail(id, why, now, now);
        } else if let Some((p, _)) = states.iter().find(|(_, s)| *s == WorkState::Cancelled) {
            let why = format!("its prerequisite {} was cancelled", WorkId(*p));
            self.cancel_one(id, &why, now);
        } else if states.iter().all(|(_, s)| *s == WorkState::Succeeded) {
            let merged = match rec.input {
                Some(_) => None,
                None => match self.merged_input(rec) {
                    Ok(input) => Some(input),
                    Err(why) => {
                        self.fail(id, why, now, now);
                        return;
                    }
                },
            };
            self.update(id, |r| {
                if r.input.is_none() {
                    r.input = merged;
                }
                r.state = WorkState::Enqueued;
                r.enqueued_at = now;
                r.next_run_at = first_run(r.alarm.as_ref(), r.initial_delay, now);
            });
        }
    }

    /// The input of `rec`, whose prerequisites all succeeded, made from
    /// their outputs as its merger says; an error if it is over the data
    /// limit.
    fn merged_input(&self, rec: &Record) -> Result<Vec<u8>, String> {
        let outputs: Vec<&[u8]> = rec
            .prerequisites
            .iter()
            .map(|p| {
                self.records
                    .get(p)
                    .and_then(|r| r.output.as_deref())
                    .unwrap_or_default()
            })
            .collect();
        let input = match rec.input_merger {
            // Whole values overwrite: the one listed last wins.
            InputMerger::Overwriting => outputs.last().copied().unwrap_or_default().to_vec(),
            // A sequence is its length then its elements: the outputs, as
            // encoded, make a `Vec` of them.
            InputMerger::ArrayCreating => {
                let mut bytes = Vec::new();
                Bincode::new()
                    .encode(&(outputs.len() as u64), &mut bytes)
                    .map_err(|e| format!("the merged input could not be encoded: {e}"))?;
                for output in outputs {
                    bytes.extend_from_slice(output);
                }
                bytes
            }
        };
        if input.len() > self.limits.data_limit {
            return Err(format!(
                "the merged outputs of its prerequisites are {} bytes, over the data limit of {}",
                input.len(),
                self.limits.data_limit
            ));
        }
        Ok(input)
    }

    // ---- cancelling ------------------------------------------------------

    /// Cancels the unfinished works `query` selects and the works chained
    /// after them, and the unfinished works chained after the finished
    /// ones it selects; returns how many were cancelled.
    pub(super) fn cancel(&mut self, query: &WorkQuery, now: i64) -> usize {
        let (mut targets, mut done): (Vec<u64>, Vec<u64>) = self
            .records
            .values()
            .filter(|r| r.selected_by(query))
            .map(|r| r.id)
            .partition(|id| !self.records[id].state.is_finished());
        targets.sort_unstable();
        done.sort_unstable();
        let before = self.count_finished(WorkState::Cancelled);
        for id in targets {
            self.cancel_one(id, "cancelled", now);
        }
        for id in done {
            self.cancel_downstream(id, now);
        }
        self.count_finished(WorkState::Cancelled) - before
    }

    /// Cancels the unfinished works that wait, directly or down a chain,
    /// on finished work `id`, which stays as it finished: Android's cancel
    /// of a succeeded prerequisite cancels what waits on it.
    fn cancel_downstream(&mut self, id: u64, now: i64) {
        let why = format!(
            "{} was cancelled after it finished, and this work waited on it",
            WorkId(id)
        );
        let mut stack: Vec<u64> = self.dependents.get(&id).cloned().unwrap_or_default();
        let mut seen = HashSet::new();
        while let Some(d) = stack.pop() {
            if !seen.insert(d) {
                continue;
            }
            match self.records.get(&d) {
                // Finished too: look further down.
                Some(r) if r.state.is_finished() => {
                    stack.extend(self.dependents.get(&d).into_iter().flatten().copied());
                }
                // Cancels the rest of its chain too.
                Some(_) => self.cancel_one(d, &why, now),
                None => {}
            }
        }
    }

    fn count_finished(&self, state: WorkState) -> usize {
        self.records.values().filter(|r| r.state == state).count()
    }

    /// Cancels one unfinished work (its run, if any, is to be stopped)
    /// and, after it, the works waiting on it.
    pub(super) fn cancel_one(&mut self, id: u64, why: &str, now: i64) {
        let Some(rec) = self.records.get(&id) else {
            return;
        };
        if rec.state.is_finished() {
            return;
        }
        self.halts.push(id);
        self.update(id, |r| {
            r.state = WorkState::Cancelled;
            r.finished_at = Some(now);
            if why != "cancelled" {
                r.failure = Some(why.to_owned());
            }
        });
        self.resolve_dependents(id, now);
    }

    // ---- running ---------------------------------------------------------

    /// Work `id` starts a run: returns its record.
    pub(super) fn start(&mut self, id: u64) -> Option<&Record> {
        self.update(id, |r| {
            r.state = WorkState::Running;
            r.attempts = r.attempts.saturating_add(1);
        });
        self.get(id)
    }

    /// Stores progress `bytes` of work `id`'s run.
    pub(super) fn progress(&mut self, id: u64, bytes: Vec<u8>) {
        self.update(id, |r| r.progress = Some(bytes));
    }

    /// Work `id` goes back in line as it was: its run was interrupted
    /// (shutdown) or never ran.
    pub(super) fn requeue(&mut self, id: u64) {
        self.update(id, |r| r.state = WorkState::Enqueued);
    }

    /// Work `id`'s constraints stopped holding during its run: it goes
    /// back to enqueued, to run again once they hold.
    pub(super) fn constraints_lost(&mut self, id: u64) {
        self.update(id, |r| {
            r.state = WorkState::Enqueued;
            r.failure = Some(CONSTRAINTS_LOST.to_owned());
        });
    }

    /// A run that started at `ran_at` succeeded.
    pub(super) fn succeed(&mut self, id: u64, output: Vec<u8>, now: i64, ran_at: i64) {
        self.conclude(id, Ok(output), now, ran_at);
    }

    /// Work `id` runs again after its backoff (at least the minimum).
    pub(super) fn retry(&mut self, id: u64, why: Option<String>, now: i64) {
        let min = self.limits.min_backoff;
        self.update(id, |r| {
            r.retries = r.retries.saturating_add(1);
            r.state = WorkState::Enqueued;
            let wait = r.backoff.delay_after(r.retries).max(min);
            r.next_run_at = now.saturating_add(dur_ms(wait));
            r.failure = why;
        });
    }

    /// Fails one-off work and its dependents; periodic work waits for its
    /// next period.
    /// `ran_at`: when the failed run started (`now` for work that did not
    /// run).
    pub(super) fn fail(&mut self, id: u64, why: String, now: i64, ran_at: i64) {
        self.conclude(id, Err(why), now, ran_at);
    }

    /// Ends a run (or, for `Err`, a work that cannot run): one-off work
    /// finishes, periodic work moves to its next period; then the works
    /// waiting on it are decided.
    fn conclude(&mut self, id: u64, outcome: Result<Vec<u8>, String>, now: i64, ran_at: i64) {
        let Some(rec) = self.records.get(&id) else {
            return;
        };
        if rec.state.is_finished() {
            return;
        }
        let periodic = rec.periodic.is_some();
        self.halts.push(id);
        self.update(id, |r| {
            r.retries = 0;
            let state = match outcome {
                Ok(output) => {
                    r.output = Some(output);
                    r.failure = None;
                    WorkState::Succeeded
                }
                Err(why) => {
                    r.failure = Some(why);
                    WorkState::Failed
                }
            };
            if periodic {
                next_period(r, ran_at);
            } else {
                r.state = state;
                r.finished_at = Some(now);
            }
        });
        self.resolve_dependents(id, now);
    }

    // ---- pruning ---------------------------------------------------------

    /// Work `id` just finished: it may be deleted once kept long enough,
    /// and so may its finished prerequisites, which may have waited only
    /// for it.
    fn arm_prune(&mut self, id: u64) {
        let keep = dur_ms(self.limits.keep_finished);
        let Some(rec) = self.records.get(&id) else {
            return;
        };
        let deletable = |r: &Record| {
            r.finished_at
                .filter(|_| r.state.is_finished())
                .map(|f| f.saturating_add(keep))
        };
        let prerequisites = rec
            .prerequisites
            .iter()
            .filter_map(|p| self.records.get(p).and_then(|r| deletable(r)));
        if let Some(at) = deletable(rec).into_iter().chain(prerequisites).min() {
            self.prune_at = self.prune_at.min(at);
        }
    }

    /// Deletes finished work older than the retention, once nothing
    /// unfinished waits on it.
    ///
    /// It looks only once some finished work may be deleted
    /// ([`arm_prune`](Self::arm_prune)), at most every [`PRUNE_EVERY`],
    /// and then knows when the next may be: an idle manager does not wake
    /// for it.
    pub(super) fn prune(&mut self, now: i64) {
        if now < self.prune_look() {
            return;
        }
        self.pruned_at = now;
        let keep = dur_ms(self.limits.keep_finished);
        let mut old = Vec::new();
        let mut next = i64::MAX;
        for r in self.records.values() {
            let Some(at) = r
                .finished_at
                .filter(|_| r.state.is_finished())
                .map(|f| f.saturating_add(keep))
            else {
                continue;
            };
            // Work that unfinished work waits on stays; the last of those
            // to finish arms the next look.
            let waited_on = self.dependents.get(&r.id).is_some_and(|ds| {
                ds.iter()
                    .any(|d| self.records.get(d).is_some_and(|r| !r.state.is_finished()))
            });
            if waited_on {
                continue;
            }
            if at <= now {
                old.push(r.id);
            } else {
                next = next.min(at);
            }
        }
        self.prune_at = next;
        for id in old {
            let Some(rec) = self.records.remove(&id) else {
                continue;
            };
            if let Some(name) = &rec.unique
                && let Some(ids) = self.unique.get_mut(name)
            {
                ids.retain(|&i| i != id);
                if ids.is_empty() {
                    self.unique.remove(name);
                }
            }
            self.dependents.remove(&id);
            self.dirty.remove(&id);
            self.deleted.push(id);
        }
    }

    /// When [`prune`](Self::prune) looks next, if `prune_at` is not
    /// `i64::MAX`.
    fn prune_look(&self) -> i64 {
        self.prune_at
            .max(self.pruned_at.saturating_add(PRUNE_EVERY))
    }

    /// When [`prune`](Self::prune) looks next, on the work clock; `None`
    /// while no finished work waits to be deleted.
    pub(super) fn next_prune(&self) -> Option<i64> {
        (self.prune_at != i64::MAX).then(|| self.prune_look())
    }
}

/// A new work's record, blocked if it has prerequisites.
fn new_record(
    id: u64,
    spec: Spec,
    unique: Option<String>,
    prerequisites: Vec<u64>,
    now: i64,
) -> Record {
    let start = first_run(spec.alarm.as_ref(), spec.initial_delay, now);
    let next_run_at = match spec.periodic {
        Some((interval, flex)) => start.saturating_add(interval.saturating_sub(flex)),
        None => start,
    };
    Record {
        id,
        handler: spec.handler,
        state: if prerequisites.is_empty() {
            WorkState::Enqueued
        } else {
            WorkState::Blocked
        },
        input: spec.input,
        output: None,
        progress: None,
        tags: spec.tags,
        unique,
        periodic: spec.periodic,
        period_start: start,
        initial_delay: spec.initial_delay,
        enqueued_at: now,
        backoff: spec.backoff,
        constraints: spec.constraints,
        time_limit: spec.time_limit,
        attempts: 0,
        retries: 0,
        periods: 0,
        next_run_at,
        finished_at: None,
        prerequisites,
        failure: None,
        retire: false,
        input_merger: spec.input_merger,
        alarm: spec.alarm,
    }
}

/// When a work that becomes enqueued at `now` first runs: an alarm at its
/// time (at once if that passed), other work after its initial delay.
fn first_run(alarm: Option<&Alarm>, initial_delay: i64, now: i64) -> i64 {
    match alarm {
        Some(alarm) => alarm.at.max(now),
        None => now.saturating_add(initial_delay),
    }
}

/// Moves periodic work, whose run started at `ran_at`, to its next period:
/// at most one run per period, and, as Android schedules it, the next run
/// no sooner than one interval after the last one started. A run on time
/// (at the start of its flex window) keeps the periods where they were; a
/// late run (the process was down, the work waited for a constraint or a
/// worker) pushes them: the periods missed are skipped, and the next run
/// comes one interval after the late one. The run attempt count starts
/// again each period.
fn next_period(r: &mut Record, ran_at: i64) {
    let Some((interval, flex)) = r.periodic else {
        return;
    };
    let interval = interval.max(1);
    // Saturating: a stored row may hold any value an i64 holds.
    let offset = interval.saturating_sub(flex).max(0);
    let on_grid = r
        .period_start
        .saturating_add(interval)
        .saturating_add(offset);
    let next_run_at = on_grid.max(ran_at.saturating_add(interval));
    r.period_start = next_run_at.saturating_sub(offset);
    r.periods = r.periods.saturating_add(1);
    r.attempts = 0;
    r.state = WorkState::Enqueued;
    r.next_run_at = next_run_at;
}

mod lazy;
pub(super) use lazy::PAGE;

#[cfg(test)]
pub(super) mod tests;
