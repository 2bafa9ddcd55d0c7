//! The unique-name policy: what enqueueing under a unique name does to the
//! works already under it ([`ExistingWork`]), as Android's
//! `enqueueUniqueWork`. Pure, like the table it works on.

use super::error::WorkError;
use super::request::{Enqueued, ExistingWork, Spec, WorkId, WorkState};
use super::table::{REPLACED, Table};

/// Enqueues `stages` under unique name `name` at `now`, with `policy` for
/// the unfinished works already under it. `running_caller` is the work
/// whose run enqueues this, if the request comes from a running handler:
/// replaced from its own run, it is cancelled only when that run ends.
pub(super) fn enqueue_unique(
    table: &mut Table,
    stages: Vec<Vec<Spec>>,
    name: String,
    policy: ExistingWork,
    running_caller: Option<u64>,
    now: i64,
) -> Result<Enqueued, WorkError> {
    let existing = table.named(&name);
    let unfinished: Vec<u64> = existing
        .iter()
        .copied()
        .filter(|&id| table.get(id).is_some_and(|r| !r.state.is_finished()))
        .collect();
    let periodic = stages[0][0].periodic.is_some();
    let mut after = Vec::new();
    match resolve(table, policy, &existing) {
        ExistingWork::Keep if !unfinished.is_empty() => {
            return Ok(Enqueued::Kept(unfinished.into_iter().map(WorkId).collect()));
        }
        ExistingWork::Update if !unfinished.is_empty() => {
            let target = *unfinished.iter().max().expect("not empty");
            if table.get(target).is_some_and(|r| r.periodic.is_some()) != periodic {
                return Err(WorkError::Invalid(format!(
                    "{} under {name:?} is {} work; UPDATE cannot turn it into {} work: \
                     use REPLACE",
                    WorkId(target),
                    if periodic { "one-off" } else { "periodic" },
                    if periodic { "periodic" } else { "one-off" },
                )));
            }
            let spec = stages.into_iter().next().and_then(|s| s.into_iter().next());
            let spec = spec.expect("validated: one request");
            table.update_in_place(target, spec, now);
            return Ok(Enqueued::Updated(WorkId(target)));
        }
        ExistingWork::Append => {
            if let Some(&p) = unfinished
                .iter()
                .find(|&&id| table.get(id).is_some_and(|r| r.periodic.is_some()))
            {
                return Err(WorkError::Invalid(format!(
                    "{} under {name:?} is periodic work, which never finishes: nothing \
                     can run after it; use Keep or Replace",
                    WorkId(p)
                )));
            }
            after = table.leaves(&existing);
        }
        ExistingWork::Replace => {
            for id in unfinished {
                if running_caller == Some(id) {
                    table.retire(id);
                } else {
                    table.cancel_one(id, REPLACED, now);
                }
            }
            table.supersede(&name, &existing);
        }
        // Keep or Update with nothing unfinished: start fresh.
        _ => table.supersede(&name, &existing),
    }
    Ok(Enqueued::New(table.add_chain(
        stages,
        Some(name),
        after,
        now,
    )))
}

/// `policy`, with APPEND_OR_REPLACE decided: it appends to the works
/// `existing` under the name unless one of their leaves failed or was
/// cancelled, and then replaces them.
fn resolve(table: &Table, policy: ExistingWork, existing: &[u64]) -> ExistingWork {
    if policy != ExistingWork::AppendOrReplace {
        return policy;
    }
    let broken = table.leaves(existing).into_iter().any(|id| {
        table
            .get(id)
            .is_some_and(|r| matches!(r.state, WorkState::Failed | WorkState::Cancelled))
    });
    if broken {
        ExistingWork::Replace
    } else {
        ExistingWork::Append
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::table::tests::{spec, state, table};

    fn one(handler: &str) -> Vec<Vec<Spec>> {
        vec![vec![spec(handler)]]
    }

    fn ids(e: &Enqueued) -> Vec<u64> {
        e.ids().iter().map(|id| id.0).collect()
    }

    /// Enqueues `stages` under "n" with `policy`, from no running work.
    fn put(t: &mut Table, policy: ExistingWork, stages: Vec<Vec<Spec>>) -> Vec<u64> {
        let e = enqueue_unique(t, stages, "n".to_owned(), policy, None, 0).unwrap();
        ids(&e)
    }

    #[test]
    fn keep_keeps_unfinished_work_and_starts_fresh_over_finished() {
        let mut t = table();
        let old = put(&mut t, ExistingWork::Keep, one("a"));
        let e = enqueue_unique(
            &mut t,
            one("b"),
            "n".to_owned(),
            ExistingWork::Keep,
            None,
            0,
        );
        assert_eq!(e, Ok(Enqueued::Kept(vec![WorkId(old[0])])));
        assert_eq!(t.records().count(), 1);

        t.succeed(old[0], Vec::new(), 1, 0);
        t.written();
        let new = put(&mut t, ExistingWork::Keep, one("b"));
        assert!(t.get(old[0]).is_none(), "superseded work is deleted");
        assert_eq!(t.written().deleted, old);
        assert_eq!(t.named("n"), new);
    }

    #[test]
    fn replace_cancels_and_deletes_the_old_work_and_stops_its_run() {
        let mut t = table();
        let old = put(&mut t, ExistingWork::Replace, one("a"));
        t.start(old[0]);
        t.written();
        t.take_halts();
        let new = put(&mut t, ExistingWork::Replace, one("b"));
        assert!(t.get(old[0]).is_none());
        assert_eq!(t.take_halts(), old, "its run is to be stopped");
        let written = t.written();
        assert_eq!(written.deleted, old);
        // Its watchers see it cancelled before it goes.
        assert_eq!(written.gone.len(), 1);
        assert_eq!(written.gone[0].state, WorkState::Cancelled);
        assert_eq!(written.gone[0].failure.as_deref(), Some(REPLACED));
        assert_eq!(state(&t, new[0]), WorkState::Enqueued);
    }

    #[test]
    fn replace_from_its_own_run_retires_the_work_when_the_run_ends() {
        let mut t = table();
        let old = put(&mut t, ExistingWork::Replace, one("a"));
        t.start(old[0]);
        t.take_halts();
        let e = enqueue_unique(
            &mut t,
            one("a"),
            "n".to_owned(),
            ExistingWork::Replace,
            Some(old[0]),
            0,
        )
        .unwrap();
        assert!(t.take_halts().is_empty(), "its own run goes on");
        let rec = t.get(old[0]).expect("kept until its run ends");
        assert_eq!((rec.state, rec.unique.clone()), (WorkState::Running, None));
        assert!(t.is_retiring(old[0]));
        assert_eq!(t.named("n"), ids(&e));

        t.succeed(old[0], Vec::new(), 5, 0);
        t.end_retired(old[0], 5);
        // It succeeded: finished work stays as it finished.
        assert_eq!(state(&t, old[0]), WorkState::Succeeded);
    }

    #[test]
    fn append_chains_after_the_leaves_and_refuses_periodic_work() {
        let mut t = table();
        let first = put(
            &mut t,
            ExistingWork::Append,
            vec![vec![spec("a")], vec![spec("b")]],
        );
        let next = put(&mut t, ExistingWork::Append, one("c"));
        let rec = t.get(next[0]).unwrap();
        assert_eq!(rec.prerequisites, vec![first[1]], "after the chain's leaf");
        assert_eq!(rec.state, WorkState::Blocked);

        let mut u = table();
        let mut tick = spec("tick");
        tick.periodic = Some((60_000, 60_000));
        put(&mut u, ExistingWork::Keep, vec![vec![tick]]);
        let e = enqueue_unique(
            &mut u,
            one("c"),
            "n".to_owned(),
            ExistingWork::Append,
            None,
            0,
        );
        assert!(matches!(e, Err(WorkError::Invalid(why)) if why.contains("never finishes")));
    }

    #[test]
    fn append_or_replace_replaces_only_a_broken_chain() {
        let mut t = table();
        let first = put(&mut t, ExistingWork::AppendOrReplace, one("a"));
        let appended = put(&mut t, ExistingWork::AppendOrReplace, one("b"));
        assert_eq!(t.get(appended[0]).unwrap().prerequisites, first);

        t.fail(first[0], "no".to_owned(), 1, 0);
        assert_eq!(state(&t, appended[0]), WorkState::Failed);
        let fresh = put(&mut t, ExistingWork::AppendOrReplace, one("c"));
        assert!(t.get(fresh[0]).unwrap().prerequisites.is_empty());
        assert!(t.get(first[0]).is_none() && t.get(appended[0]).is_none());
        assert_eq!(t.named("n"), fresh);
    }

    #[test]
    fn update_changes_the_newest_unfinished_work_in_place() {
        let mut t = table();
        let old = put(&mut t, ExistingWork::Keep, one("a"));
        let mut changed = spec("b");
        changed.input = Some(vec![9]);
        changed.initial_delay = 700;
        let e = enqueue_unique(
            &mut t,
            vec![vec![changed]],
            "n".to_owned(),
            ExistingWork::Update,
            None,
            100,
        );
        assert_eq!(e, Ok(Enqueued::Updated(WorkId(old[0]))));
        let rec = t.get(old[0]).unwrap();
        assert_eq!(
            (rec.handler.as_str(), rec.input.clone()),
            ("b", Some(vec![9]))
        );
        assert_eq!(rec.next_run_at, 700, "its delay counts from its enqueue");

        let mut tick = spec("tick");
        tick.periodic = Some((60_000, 60_000));
        let e = enqueue_unique(
            &mut t,
            vec![vec![tick]],
            "n".to_owned(),
            ExistingWork::Update,
            None,
            100,
        );
        assert!(matches!(e, Err(WorkError::Invalid(why)) if why.contains("use REPLACE")));
    }
}
