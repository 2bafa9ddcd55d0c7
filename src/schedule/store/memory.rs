//! The store in memory ([`WorkStore::in_memory`]): each work's record in
//! a map by id, beside the indexes the SQLite store keeps as columns and
//! tables (`query.rs`): enqueued works in (due, id) order, works by unique
//! name, works by tag. A write clones the changed records in: nothing is
//! encoded, and no SQL runs on the scheduler's thread.
//!
//! It answers every read as the SQLite store does for the same writes
//! (the tests below put both through the same writes and compare); it
//! has no unreadable rows, no migrations and no lock, since nothing else
//! can reach it.
//!
//! [`WorkStore::in_memory`]: super::WorkStore::in_memory

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use parking_lot::RwLock;

use super::query::{DueKey, DuePage, with_implicit_tag};
use super::{Opening, Record, StoreError};
use crate::schedule::request::{WorkQuery, WorkState};

/// The works of a store in memory, shared by the scheduler (which writes)
/// and the manager's readers.
pub(crate) type Shared = Arc<RwLock<Memory>>;

/// See the module docs.
#[derive(Default)]
pub(crate) struct Memory {
    /// Boxed: a record is large, and a map's nodes move what they hold.
    rows: BTreeMap<u64, Box<Record>>,
    /// The (due, id) of every enqueued work.
    due: BTreeSet<DueKey>,
    unique: HashMap<String, BTreeSet<u64>>,
    /// Every tag of every work, its handler's name included (the name is a
    /// tag of each work, stored among its tags or not).
    tags: HashMap<String, BTreeSet<u64>>,
    /// The highest id ever written: ids are never reused.
    top: u64,
}

/// Where an enqueued work stands in the due order; `None` for the others.
fn due_key(rec: &Record) -> Option<DueKey> {
    (rec.state == WorkState::Enqueued).then_some((rec.next_run_at, rec.id))
}

/// The tags a work is found by: its own, and its handler's name.
fn tags_of(rec: &Record) -> impl Iterator<Item = &str> {
    let own = rec.tags.iter().map(String::as_str);
    let handler = (!rec.tags.contains(&rec.handler)).then_some(rec.handler.as_str());
    own.chain(handler)
}

fn link(index: &mut HashMap<String, BTreeSet<u64>>, key: &str, id: u64) {
    match index.get_mut(key) {
        Some(ids) => {
            ids.insert(id);
        }
        None => {
            index.insert(key.to_owned(), BTreeSet::from([id]));
        }
    }
}

fn unlink(index: &mut HashMap<String, BTreeSet<u64>>, key: &str, id: u64) {
    if let Some(ids) = index.get_mut(key) {
        ids.remove(&id);
        if ids.is_empty() {
            index.remove(key);
        }
    }
}

impl Memory {
    /// Writes `puts` and deletes `deletes`, all or nothing.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] for an id the SQLite store could not hold either
    /// (above `i64::MAX`): nothing is written.
    pub(super) fn write(&mut self, puts: &[&Record], deletes: &[u64]) -> Result<(), StoreError> {
        if let Some(rec) = puts.iter().find(|r| i64::try_from(r.id).is_err()) {
            return Err(StoreError::Io(format!(
                "work {} has an id past the last a store can hold",
                rec.id
            )));
        }
        for &rec in puts {
            self.put(Box::new(rec.clone()));
        }
        for &id in deletes {
            self.delete(id);
        }
        Ok(())
    }

    fn put(&mut self, rec: Box<Record>) {
        let id = rec.id;
        self.top = self.top.max(id);
        let old = self.rows.insert(id, rec);
        let new = &self.rows[&id];
        let (old_due, old_unique, old_tags) = match &old {
            Some(old) => (due_key(old), old.unique.as_deref(), Some(old)),
            None => (None, None, None),
        };
        if old_due != due_key(new) {
            if let Some(key) = old_due {
                self.due.remove(&key);
            }
            if let Some(key) = due_key(new) {
                self.due.insert(key);
            }
        }
        if old_unique != new.unique.as_deref() {
            if let Some(name) = old_unique {
                unlink(&mut self.unique, name, id);
            }
            if let Some(name) = &new.unique {
                link(&mut self.unique, name, id);
            }
        }
        let retag = old_tags.is_none_or(|old| old.tags != new.tags || old.handler != new.handler);
        if retag {
            for tag in old_tags.into_iter().flat_map(|old| tags_of(old)) {
                unlink(&mut self.tags, tag, id);
            }
            for tag in tags_of(new) {
                link(&mut self.tags, tag, id);
            }
        }
    }

    fn delete(&mut self, id: u64) {
        let Some(old) = self.rows.remove(&id) else {
            return;
        };
        if let Some(key) = due_key(&old) {
            self.due.remove(&key);
        }
        if let Some(name) = &old.unique {
            unlink(&mut self.unique, name, id);
        }
        for tag in tags_of(&old) {
            unlink(&mut self.tags, tag, id);
        }
    }

    /// The works of `ids` as the scheduler holds them: with their
    /// handler's name as a tag.
    fn records<'a>(&self, ids: impl IntoIterator<Item = &'a u64>) -> Vec<Record> {
        ids.into_iter()
            .filter_map(|id| {
                self.rows
                    .get(id)
                    .map(|r| with_implicit_tag(Record::clone(r)))
            })
            .collect()
    }

    /// Every work as written, by id.
    pub(super) fn load(&self) -> Vec<Record> {
        self.rows.values().map(|r| Record::clone(r)).collect()
    }

    /// The works `query` selects, by id.
    pub(super) fn select(&self, query: &WorkQuery) -> Vec<Record> {
        let mut found = match query {
            WorkQuery::Id(id) => self.records([&id.0]),
            WorkQuery::Tag(tag) => self.records(self.tags.get(tag).into_iter().flatten()),
            WorkQuery::UniqueName(name) => {
                self.records(self.unique.get(name).into_iter().flatten())
            }
            WorkQuery::All => self.records(self.rows.keys()),
        };
        found.retain(|r| r.selected_by(query));
        found
    }

    /// The enqueued works `query` selects, in no order.
    pub(super) fn enqueued(&self, query: &WorkQuery) -> Vec<Record> {
        match query {
            WorkQuery::All => self.records(self.due.iter().map(|(_, id)| id)),
            query => {
                let mut found = self.select(query);
                found.retain(|r| r.state == WorkState::Enqueued);
                found
            }
        }
    }

    /// As the SQLite store's `due_after`: at most `n` enqueued works after
    /// `after` (from the first if `None`), and the last one's key when
    /// there may be more.
    pub(super) fn due_after(&self, after: Option<DueKey>, n: usize) -> DuePage {
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let keys: Vec<&DueKey> = self.due.range((from, Bound::Unbounded)).take(n).collect();
        let last = keys.last().map(|&&key| key);
        let records = self.records(keys.into_iter().map(|(_, id)| id));
        let more = if records.len() < n { None } else { last };
        (records, more)
    }

    /// What a manager loads when it starts (see [`Opening`]).
    pub(super) fn opening(&self, page: usize) -> Opening {
        let mut records: Vec<Record> = self
            .rows
            .values()
            .filter(|r| r.state != WorkState::Enqueued)
            .map(|r| with_implicit_tag(Record::clone(r)))
            .collect();
        let (due, horizon) = self.due_after(None, page);
        records.extend(due);
        Opening {
            records,
            horizon,
            ..Opening::default()
        }
    }

    /// When the earliest enqueued work is due.
    pub(super) fn next_due(&self) -> Option<i64> {
        self.due.first().map(|&(due, _)| due)
    }

    /// The highest id ever written.
    pub(super) fn max_id(&self) -> u64 {
        self.top
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::super::WorkStore;
    use super::super::tests::TempStore;
    use super::*;
    use crate::schedule::request::WorkId;
    use crate::schedule::table::tests::{spec, table};

    /// A readable work as the table makes it.
    fn base() -> Record {
        let mut t = table();
        t.add_chain(vec![vec![spec("a")]], None, Vec::new(), 0);
        let (mut puts, _, _) = t.pending();
        puts.next().cloned().expect("a new work")
    }

    const HANDLERS: [&str; 3] = ["a", "b", "x"];
    const TAGS: [&str; 4] = ["a", "b", "x", "y"];
    const STATES: [WorkState; 6] = [
        WorkState::Enqueued,
        WorkState::Running,
        WorkState::Succeeded,
        WorkState::Failed,
        WorkState::Blocked,
        WorkState::Cancelled,
    ];

    /// One put: id, handler, state (mostly enqueued), due, extra tags
    /// (a bit each), whether its handler is among its tags, unique name.
    type Put = (u64, usize, usize, i64, u8, bool, Option<u8>);

    fn record(base: &Record, &(id, handler, state, due, tags, own, unique): &Put) -> Record {
        let mut rec = base.clone();
        rec.id = id;
        rec.handler = HANDLERS[handler].to_owned();
        rec.state = STATES.get(state).copied().unwrap_or(WorkState::Enqueued);
        rec.next_run_at = due;
        rec.tags = TAGS
            .iter()
            .enumerate()
            .filter(|&(i, _)| tags & (1 << i) != 0)
            .map(|(_, t)| (*t).to_owned())
            .filter(|t| *t != rec.handler)
            .collect();
        if own {
            rec.tags.insert(0, rec.handler.clone());
        }
        rec.unique = unique.map(|u| format!("u{u}"));
        rec
    }

    fn shown(mut records: Vec<Record>) -> String {
        records.sort_by_key(|r| r.id);
        format!("{records:?}")
    }

    fn queries() -> Vec<WorkQuery> {
        let mut all: Vec<WorkQuery> = (0..=13).map(|id| WorkQuery::Id(WorkId(id))).collect();
        all.extend(
            TAGS.iter()
                .chain(["z"].iter())
                .map(|t| WorkQuery::Tag((*t).into())),
        );
        all.extend((0..3).map(|u| WorkQuery::UniqueName(format!("u{u}"))));
        all.push(WorkQuery::All);
        all
    }

    /// Every read the scheduler and the manager make, from both stores.
    fn assert_same(file: &WorkStore, memory: &WorkStore) {
        for q in queries() {
            let (f, m) = (file.select(&q).unwrap(), memory.select(&q).unwrap());
            assert_eq!(format!("{f:?}"), format!("{m:?}"), "select {q:?}");
            let (f, m) = (file.enqueued(&q).unwrap(), memory.enqueued(&q).unwrap());
            assert_eq!(shown(f), shown(m), "enqueued {q:?}");
            let (f, m) = (file.reader().unwrap(), memory.reader().unwrap());
            let (f, m) = (f.infos(&q).unwrap(), m.infos(&q).unwrap());
            assert_eq!(format!("{f:?}"), format!("{m:?}"), "infos {q:?}");
        }
        let (f, m) = (file.reader().unwrap(), memory.reader().unwrap());
        assert_eq!(f.next_due().unwrap(), m.next_due().unwrap(), "next due");
        assert_eq!(
            format!("{:?}", file.load().unwrap().0),
            format!("{:?}", memory.load().unwrap().0),
            "load"
        );
        // Paging through the enqueued works, three at a time.
        let (f, m) = (file.opening(3).unwrap(), memory.opening(3).unwrap());
        assert_eq!(format!("{:?}", f.records), format!("{:?}", m.records));
        assert_eq!(f.horizon, m.horizon, "opening's horizon");
        let mut at = f.horizon;
        while let Some(after) = at {
            let (f, m) = (
                file.due_after(after, 3).unwrap(),
                memory.due_after(after, 3).unwrap(),
            );
            assert_eq!(format!("{f:?}"), format!("{m:?}"), "due after {after:?}");
            at = f.1;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// The same writes into a file store and a store in memory: every
        /// read answers the same.
        #[test]
        fn a_store_in_memory_reads_as_a_file_store(
            turns in prop::collection::vec(
                (
                    prop::collection::vec(
                        (1u64..=12, 0usize..3, 0usize..9, -2i64..3, any::<u8>(), any::<bool>(),
                         prop::option::of(0u8..3)),
                        0..6,
                    ),
                    prop::collection::vec(1u64..=12, 0..3),
                ),
                1..8,
            )
        ) {
            let temp = TempStore::new();
            let mut file = WorkStore::open(&temp.0).unwrap();
            let mut memory = WorkStore::in_memory().unwrap();
            let base = base();
            let mut stored = std::collections::HashSet::new();
            let mut top = 0;
            for (puts, deletes) in &turns {
                let records: Vec<Record> = puts.iter().map(|p| record(&base, p)).collect();
                // A work new to the store has no tag rows yet; a stored
                // one may have some.
                let retag: HashMap<u64, bool> =
                    records.iter().map(|r| (r.id, stored.contains(&r.id))).collect();
                file.write(&records, deletes, &retag).unwrap();
                memory.write(&records, deletes, &HashMap::new()).unwrap();
                for r in &records {
                    stored.insert(r.id);
                    top = top.max(r.id);
                }
                for id in deletes {
                    stored.remove(id);
                }
                assert_same(&file, &memory);
            }
            let (f, m) = (file.max_id().unwrap(), memory.max_id().unwrap());
            prop_assert_eq!(m, top);
            prop_assert!(f >= m, "the file store keeps ids ahead: {} < {}", f, m);
        }
    }

    #[test]
    fn an_id_no_store_can_hold_is_refused_and_nothing_is_written() {
        let mut memory = WorkStore::in_memory().unwrap();
        let mut ok = base();
        ok.id = 5;
        let mut bad = base();
        bad.id = u64::MAX;
        let err = memory.write([&ok, &bad], &[], &HashMap::new()).unwrap_err();
        assert!(
            matches!(err, StoreError::Io(ref why) if why.contains("id")),
            "{err:?}"
        );
        assert!(memory.works().unwrap().is_empty());
        assert_eq!(memory.max_id().unwrap(), 0);
    }
}
