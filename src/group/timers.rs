//! The coordinator's timers: one deadline per key, ordered by deadline.
//!
//! Invariant: `queue` and `deadlines` hold the same entries (`(deadline, key)` in one, `key →
//! deadline` in the other), so each key has at most one pending deadline and rescheduling a
//! key replaces it.

use std::collections::{BTreeSet, HashMap};

/// What a timer is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum TimerKey {
    /// A member's session (or a pending member's wait for its second JoinGroup, or a new
    /// member's join wait).
    Heartbeat { group_id: String, member_id: String },
    /// The end of a group's join phase (initial delay or rebalance timeout).
    Join { group_id: String },
    /// The deadline for every member of a new generation to send SyncGroup.
    Sync { group_id: String },
    /// The periodic offsets retention check.
    Retention,
}

/// Deadlines by key; see the module doc for the invariant.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    queue: BTreeSet<(i64, TimerKey)>,
    deadlines: HashMap<TimerKey, i64>,
}

impl Timers {
    /// Sets `key` to fire at `deadline_ms`, replacing its previous deadline.
    pub(crate) fn schedule(&mut self, key: TimerKey, deadline_ms: i64) {
        if let Some(old) = self.deadlines.insert(key.clone(), deadline_ms) {
            self.queue.remove(&(old, key.clone()));
        }
        self.queue.insert((deadline_ms, key));
    }

    /// Removes `key`'s deadline, if it has one.
    pub(crate) fn cancel(&mut self, key: &TimerKey) {
        if let Some(old) = self.deadlines.remove(key) {
            self.queue.remove(&(old, key.clone()));
        }
    }

    /// The earliest deadline.
    pub(crate) fn next_deadline(&self) -> Option<i64> {
        self.queue.first().map(|(deadline, _)| *deadline)
    }

    /// Removes and returns the earliest key whose deadline is at or before `now_ms`.
    pub(crate) fn pop_due(&mut self, now_ms: i64) -> Option<TimerKey> {
        let (deadline, _) = self.queue.first()?;
        if *deadline > now_ms {
            return None;
        }
        let (_, key) = self.queue.pop_first()?;
        self.deadlines.remove(&key);
        Some(key)
    }

    #[cfg(test)]
    pub(crate) fn deadline(&self, key: &TimerKey) -> Option<i64> {
        self.deadlines.get(key).copied()
    }

    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        assert_eq!(self.queue.len(), self.deadlines.len());
        for (deadline, key) in &self.queue {
            assert_eq!(self.deadlines.get(key), Some(deadline));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(group: &str) -> TimerKey {
        TimerKey::Join {
            group_id: group.to_string(),
        }
    }

    #[test]
    fn reschedule_replaces_and_pops_in_deadline_order() {
        let mut timers = Timers::default();
        timers.schedule(join("a"), 50);
        timers.schedule(join("b"), 20);
        timers.schedule(join("a"), 10);
        timers.check_invariants();
        assert_eq!(timers.next_deadline(), Some(10));
        assert_eq!(timers.pop_due(5), None);
        assert_eq!(timers.pop_due(30), Some(join("a")));
        assert_eq!(timers.pop_due(30), Some(join("b")));
        assert_eq!(timers.pop_due(30), None);
        assert_eq!(timers.next_deadline(), None);
        timers.check_invariants();
    }
}
