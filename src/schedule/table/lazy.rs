//! What the table holds: not every stored work.
//!
//! Enqueued work due far ahead need not be in memory until its time
//! comes: the table holds every enqueued work up to its *horizon*, a
//! (due, id) key, and those after it stay in the store alone, to be
//! loaded a page at a time when the clock reaches the horizon (the core
//! asks the store for them). A stored work is held while anything
//! refers to it: work that is not enqueued (running, blocked, finished)
//! stays held, as does enqueued work in a chain (with prerequisites or
//! dependents) or not yet written. Queries that must see every work
//! (cancelling, a unique name's policy) bring the stored ones in for the
//! turn ([`fault_in`](Table::fault_in)); they leave again after the
//! write.

use std::collections::HashSet;
use std::ops::Bound;

use super::{REPLACED, Table};
use crate::schedule::request::WorkState;
use crate::schedule::store::Record;

/// How many enqueued works are loaded from the store at a time, by due
/// time; the table holds about this many to a few times this many
/// enqueued works that could leave.
pub(in crate::schedule) const PAGE: usize = 4096;

impl Table {
    /// Sets where the held enqueued works end (see the module
    /// documentation): `None` when every enqueued work is held.
    pub(in crate::schedule) fn set_horizon(&mut self, horizon: Option<(i64, u64)>) {
        self.horizon = horizon;
    }

    /// The (due, id) of the last enqueued work held in order, if works
    /// after it may be stored and not held: they are loaded once the
    /// clock reaches its due time.
    pub(in crate::schedule) fn horizon(&self) -> Option<(i64, u64)> {
        self.horizon
    }

    /// Works whose rows have no columns yet: written again at the next
    /// write, with their tags, so that queries of the store find them.
    pub(in crate::schedule) fn reindex(&mut self, ids: &[u64]) {
        for &id in ids {
            if self.records.contains_key(&id) {
                self.dirty.insert(id);
                self.retag.insert(id, true);
            }
        }
    }

    /// Takes in the next page of enqueued works from the store, loaded
    /// at `now`, and the horizon after it.
    pub(in crate::schedule) fn take_page(
        &mut self,
        records: Vec<Record>,
        horizon: Option<(i64, u64)>,
        now: i64,
    ) {
        self.horizon = horizon;
        let deleted: HashSet<u64> = self.deleted.iter().copied().collect();
        for rec in records {
            if !self.records.contains_key(&rec.id) && !deleted.contains(&rec.id) {
                self.admit(rec, now);
            }
        }
    }

    /// Holds stored works a query reaches, read at `now`, for this turn:
    /// after the next write they leave again unless they must stay.
    pub(in crate::schedule) fn fault_in(&mut self, records: Vec<Record>, now: i64) {
        let deleted: HashSet<u64> = self.deleted.iter().copied().collect();
        for rec in records {
            if !self.records.contains_key(&rec.id) && !deleted.contains(&rec.id) {
                self.faulted.push(rec.id);
                self.admit(rec, now);
            }
        }
    }

    /// Adds a record loaded from the store at `now`: work a crash
    /// interrupted is enqueued again, work that replaced itself during an
    /// interrupted run is cancelled.
    pub(super) fn admit(&mut self, mut rec: Record, now: i64) {
        // Stored before works carried their handler's name as a tag.
        if !rec.tags.contains(&rec.handler) {
            rec.tags.insert(0, rec.handler.clone());
        }
        if rec.retire && !rec.state.is_finished() {
            // It replaced itself, and its last run was interrupted.
            rec.state = WorkState::Cancelled;
            rec.finished_at = Some(now);
            rec.failure = Some(REPLACED.to_owned());
            self.dirty.insert(rec.id);
        } else if rec.state == WorkState::Running {
            // Interrupted by a crash or a kill: it runs again.
            rec.state = WorkState::Enqueued;
            rec.next_run_at = rec.next_run_at.min(now);
            rec.progress = None;
            self.dirty.insert(rec.id);
        }
        self.insert(rec);
    }

    /// Whether held work `rec` may leave memory: enqueued after the
    /// horizon, written, and in no chain.
    fn evictable(&self, rec: &Record) -> bool {
        rec.state == WorkState::Enqueued
            && !rec.retire
            && rec.prerequisites.is_empty()
            && !self.dirty.contains(&rec.id)
            && self.dependents.get(&rec.id).is_none_or(Vec::is_empty)
            && self.horizon.is_some_and(|h| (rec.next_run_at, rec.id) > h)
    }

    /// Lets held work `id` go: it stays in the store alone.
    fn evict(&mut self, id: u64) {
        let Some(rec) = self.records.remove(&id) else {
            return;
        };
        self.due.remove(&(rec.next_run_at, id));
        self.dependents.remove(&id);
        if let Some(name) = &rec.unique
            && let Some(ids) = self.unique.get_mut(name)
        {
            ids.retain(|&i| i != id);
            if ids.is_empty() {
                self.unique.remove(name);
            }
        }
    }

    /// After a write: the works written, or read in for a query, that
    /// need not stay held leave memory; if too many enqueued works are
    /// held, the horizon comes nearer first.
    pub(super) fn release(&mut self, written: Vec<u64>) {
        if self.due.len() > self.trim_at {
            self.trim();
        }
        let faulted = std::mem::take(&mut self.faulted);
        for id in written.into_iter().chain(faulted) {
            if self.records.get(&id).is_some_and(|r| self.evictable(r)) {
                self.evict(id);
            }
        }
    }

    /// Brings the horizon to the [`PAGE`]th held enqueued work, and lets
    /// the works after it go that may.
    fn trim(&mut self) {
        if let Some(&h) = self.due.iter().nth(PAGE - 1) {
            self.horizon = Some(self.horizon.map_or(h, |old| old.min(h)));
            let beyond: Vec<u64> = self
                .due
                .range((Bound::Excluded(h), Bound::Unbounded))
                .map(|&(_, id)| id)
                .collect();
            for id in beyond {
                if self.records.get(&id).is_some_and(|r| self.evictable(r)) {
                    self.evict(id);
                }
            }
        }
        // What stays (chains, unwritten work) is not looked at again until
        // the held works double.
        self.trim_at = (self.due.len() * 2).max(2 * PAGE);
    }
}
