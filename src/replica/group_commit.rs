//! Group commit of a partition's fsyncs, exact across truncations and cancellation.
//!
//! A caller that needs offsets below `offset` on disk calls [`GroupCommit::flush_to`]. If no
//! fsync is running it starts one; otherwise it waits for the running one and, if that did not
//! cover it, starts the next. So one fsync covers every batch appended while the previous one
//! ran, and producers never queue one fsync each.
//!
//! Invariants:
//! - `durable_offset` never claims an offset the log does not hold on disk: it only rises with
//!   a flush that no truncation raced, and every truncation lowers it to the new log end
//!   ([`GroupCommit::note_truncation`]).
//! - A waiter whose target was truncated away while it waited fails ([`FlushError::Truncated`]):
//!   the offsets it wanted durable now belong to other records, or to none.
//! - Cancel-safe: the fsync runs on the blocking pool and records its own outcome, so a waiter
//!   dropped mid-wait (a produce whose connection closed) never leaves a flush marked running
//!   that no one finishes; later waiters carry on.
//! - A failed fsync fails every waiter that was waiting for it or arrives later: after a failed
//!   fsync the kernel may have dropped the dirty pages, so nothing may be acknowledged on the
//!   strength of a later fsync of the same file (the log is taken offline by the caller).

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::watch;

use crate::log::PartitionLog;

/// Truncations remembered for waiters that started before them. A waiter older than the
/// oldest remembered truncation fails conservatively.
const TRUNCATIONS_REMEMBERED: usize = 16;

/// Why [`GroupCommit::flush_to`] did not make its offsets durable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlushError {
    /// The log was truncated below the target while the caller waited.
    #[error("truncated to {to} while waiting for offset {wanted} to be flushed")]
    Truncated {
        /// The offset waited for.
        wanted: i64,
        /// The new log end.
        to: i64,
    },
    /// An fsync failed (or its task died).
    #[error("fsync failed: {0}")]
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FlushState {
    /// Every offset below this is on disk.
    durable_offset: i64,
    /// An fsync is running (started by some waiter, finished by the blocking task).
    running: bool,
    /// Bumped when an fsync finishes, successfully or not.
    generation: u64,
    /// The error of the last failed fsync, with its generation.
    failure: Option<(u64, String)>,
    /// Bumped by every truncation.
    truncations: u64,
    /// The latest truncations: (value of `truncations` after it, new log end).
    cuts: VecDeque<(u64, i64)>,
}

/// The fsync state of one partition log (see the module doc). Cheap to clone.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    state: Arc<watch::Sender<FlushState>>,
}

/// Clears `running` when the fsync task ends, however it ends (a panic in the flush included).
struct Finish {
    state: Arc<watch::Sender<FlushState>>,
    truncations_before: u64,
    outcome: Option<Result<i64, String>>,
}

impl Drop for Finish {
    fn drop(&mut self) {
        let outcome = self
            .outcome
            .take()
            .unwrap_or_else(|| Err("the fsync task ended without an outcome".to_string()));
        let truncations_before = self.truncations_before;
        self.state.send_modify(|s| {
            s.running = false;
            s.generation += 1;
            match &outcome {
                // A truncation raced the fsync: what it covered may be gone. The log's own
                // recovery point handles that race; here the mark is simply not raised, and a
                // waiter that still needs its offsets starts another fsync.
                Ok(point) if s.truncations == truncations_before => {
                    s.durable_offset = s.durable_offset.max(*point);
                }
                Ok(_) => {}
                Err(e) => s.failure = Some((s.generation, e.clone())),
            }
        });
    }
}

impl GroupCommit {
    /// A group commit for a log whose offsets below `durable_offset` are on disk.
    pub fn new(durable_offset: i64) -> GroupCommit {
        let (state, _) = watch::channel(FlushState {
            durable_offset,
            running: false,
            generation: 0,
            failure: None,
            truncations: 0,
            cuts: VecDeque::new(),
        });
        GroupCommit {
            state: Arc::new(state),
        }
    }

    /// Every offset below this is known to be on disk.
    pub fn durable_offset(&self) -> i64 {
        self.state.borrow().durable_offset
    }

    /// The log was truncated to `log_end` (call after the truncation): the durable mark comes
    /// down with it, and waiters for offsets above it fail.
    pub fn note_truncation(&self, log_end: i64) {
        self.state.send_modify(|s| {
            s.durable_offset = s.durable_offset.min(log_end);
            s.truncations += 1;
            let seq = s.truncations;
            s.cuts.push_back((seq, log_end));
            while s.cuts.len() > TRUNCATIONS_REMEMBERED {
                s.cuts.pop_front();
            }
        });
    }

    /// Records the outcome of an fsync made outside [`GroupCommit::flush_to`] (`flush.ms`,
    /// which runs on the blocking pool already): `flush` is called here, with the same
    /// truncation check.
    pub fn flush_now(
        &self,
        flush: impl FnOnce() -> Result<i64, String>,
    ) -> Result<i64, FlushError> {
        let truncations_before = self.state.borrow().truncations;
        let outcome = flush();
        self.state.send_modify(|s| match &outcome {
            Ok(point) if s.truncations == truncations_before => {
                s.durable_offset = s.durable_offset.max(*point);
            }
            Ok(_) => {}
            Err(e) => {
                s.generation += 1;
                s.failure = Some((s.generation, e.clone()));
            }
        });
        outcome.map_err(FlushError::Failed)
    }

    /// Waits until every offset below `offset` of `log` is on disk (see the module doc).
    pub async fn flush_to(&self, log: &Arc<PartitionLog>, offset: i64) -> Result<(), FlushError> {
        let mut state = self.state.subscribe();
        let (start_truncations, start_generation) = {
            let s = state.borrow_and_update();
            (s.truncations, s.generation)
        };
        loop {
            let start_flush = {
                let s = state.borrow_and_update();
                if let Some(to) = truncated_below(&s, start_truncations, offset) {
                    return Err(FlushError::Truncated { wanted: offset, to });
                }
                if s.durable_offset >= offset {
                    return Ok(());
                }
                if let Some((generation, e)) = &s.failure {
                    if *generation > start_generation || s.generation > start_generation {
                        return Err(FlushError::Failed(e.clone()));
                    }
                }
                !s.running
            };
            if start_flush && self.claim() {
                self.spawn_flush(log.clone());
            }
            if state.changed().await.is_err() {
                return Err(FlushError::Failed("partition closed".to_string()));
            }
        }
    }

    /// Marks an fsync running, unless one already is. True if this caller must start it.
    fn claim(&self) -> bool {
        self.state.send_if_modified(|s| {
            if s.running {
                false
            } else {
                s.running = true;
                true
            }
        })
    }

    /// Runs one fsync on the blocking pool; it records its own outcome (see [`Finish`]).
    fn spawn_flush(&self, log: Arc<PartitionLog>) {
        let mut finish = Finish {
            state: self.state.clone(),
            truncations_before: self.state.borrow().truncations,
            outcome: None,
        };
        tokio::task::spawn_blocking(move || {
            finish.outcome = Some(log.flush().map_err(|e| e.to_string()));
            drop(finish);
        });
    }
}

/// The new log end of a truncation after `since` that cut below `offset`; a waiter older than
/// every remembered truncation gets the oldest one's end (conservatively).
fn truncated_below(s: &FlushState, since: u64, offset: i64) -> Option<i64> {
    if s.truncations == since {
        return None;
    }
    let remembered_from = s.cuts.front().map_or(u64::MAX, |(seq, _)| *seq);
    if since + 1 < remembered_from {
        return Some(s.cuts.front().map_or(-1, |(_, to)| *to));
    }
    s.cuts
        .iter()
        .filter(|(seq, _)| *seq > since)
        .map(|(_, to)| *to)
        .find(|to| *to < offset)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::log::batch::testing::batch;
    use crate::log::LogConfig;

    fn log(dir: &std::path::Path) -> Arc<PartitionLog> {
        Arc::new(PartitionLog::open(dir.to_path_buf(), LogConfig::default(), 0).expect("open"))
    }

    /// A waiter dropped while its fsync runs leaves nothing stuck: the next waiter's flush
    /// completes.
    #[tokio::test]
    async fn a_dropped_waiter_never_blocks_later_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(dir.path());
        let commit = GroupCommit::new(0);
        log.append(batch(0, 5, 1), 1, 0).unwrap();
        {
            let mut first = Box::pin(commit.flush_to(&log, 5));
            // Polled once: it claimed the flush and started it, then it is dropped.
            assert!(futures::poll!(&mut first).is_pending());
        }
        log.append(batch(0, 5, 1), 1, 0).unwrap();
        let second = tokio::time::timeout(Duration::from_secs(10), commit.flush_to(&log, 10));
        assert_eq!(second.await.expect("the second flush finished"), Ok(()));
        assert_eq!(log.recovery_point(), 10);
        assert_eq!(commit.durable_offset(), 10);
    }

    /// After a truncation the mark is down: offsets written again are really fsynced before a
    /// waiter for them returns.
    #[tokio::test]
    async fn the_durable_mark_goes_down_with_a_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(dir.path());
        let commit = GroupCommit::new(0);
        for _ in 0..5 {
            log.append(batch(0, 2, 1), 1, 0).unwrap();
        }
        commit.flush_to(&log, 10).await.unwrap();
        log.truncate_to(4).unwrap();
        commit.note_truncation(log.log_end_offset());
        assert_eq!(commit.durable_offset(), 4);
        for _ in 0..3 {
            log.append(batch(0, 2, 2), 1, 1).unwrap();
        }
        assert_eq!(log.log_end_offset(), 10);
        assert_eq!(log.recovery_point(), 4);
        commit.flush_to(&log, 10).await.unwrap();
        assert_eq!(log.recovery_point(), 10, "the new records were fsynced");
    }

    /// A waiter whose target is truncated away while it waits fails, even though the fsync
    /// it started covered the offsets before the truncation.
    #[tokio::test]
    async fn a_waiter_whose_target_was_truncated_away_fails() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(dir.path());
        let commit = GroupCommit::new(0);
        for _ in 0..5 {
            log.append(batch(0, 2, 1), 1, 0).unwrap();
        }
        let mut waiter = Box::pin(commit.flush_to(&log, 10));
        assert!(futures::poll!(&mut waiter).is_pending());
        // Its fsync completes, then the log is truncated below its target.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while log.recovery_point() < 10 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        log.truncate_to(6).unwrap();
        commit.note_truncation(log.log_end_offset());
        assert_eq!(
            waiter.await,
            Err(FlushError::Truncated { wanted: 10, to: 6 })
        );
        // A target below the cut is still fine.
        commit.flush_to(&log, 6).await.unwrap();
    }

    #[test]
    fn old_waiters_fail_conservatively_when_the_history_is_gone() {
        let commit = GroupCommit::new(100);
        for to in 0..(TRUNCATIONS_REMEMBERED as i64 + 4) {
            commit.note_truncation(1000 - to);
        }
        let s = commit.state.borrow();
        assert!(truncated_below(&s, 0, 5).is_some());
        assert_eq!(truncated_below(&s, s.truncations, 5), None);
        assert_eq!(truncated_below(&s, s.truncations - 1, 5), None);
        assert!(truncated_below(&s, s.truncations - 1, 2000).is_some());
    }
}
