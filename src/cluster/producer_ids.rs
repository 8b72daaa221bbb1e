//! Producer ids for idempotent producers (Kafka's `ProducerIdManager`, KIP-730): the broker
//! hands ids out of a block the controller granted it (`AllocateProducerIds`, committed through
//! the metadata quorum, so no id is ever granted twice, across brokers or restarts), and asks
//! for the next block in the background once 90% of the current one is used, so InitProducerId
//! rarely waits for the quorum.
//!
//! The allocation itself is injected (a function returning a future), so the bookkeeping is
//! tested without a quorum.

use std::future::Future;
use std::sync::{Arc, Mutex};

/// The share of a block used when the next one is asked for (Kafka's `PidPrefetchThreshold`).
const PREFETCH_AT_PERCENT: i64 = 90;

/// Ids granted and not yet handed out.
#[derive(Debug, Default)]
struct Blocks {
    /// `[next, end)` of the block in use.
    next: i64,
    end: i64,
    /// Where the block in use starts to be "mostly used".
    prefetch_at: i64,
    /// A block granted ahead, `[first, end)`.
    ahead: Option<(i64, i64)>,
    /// A background allocation is running.
    prefetching: bool,
}

impl Blocks {
    fn take(&mut self) -> Option<i64> {
        if self.next >= self.end {
            let (first, end) = self.ahead.take()?;
            self.start(first, end);
        }
        let id = self.next;
        self.next += 1;
        Some(id)
    }

    fn start(&mut self, first: i64, end: i64) {
        self.next = first;
        self.end = end;
        self.prefetch_at = first + (end - first) * PREFETCH_AT_PERCENT / 100;
    }

    fn add(&mut self, first: i64, count: i32) {
        let end = first.saturating_add(i64::from(count));
        if self.next >= self.end {
            self.start(first, end);
        } else {
            self.ahead = Some((first, end));
        }
    }

    /// Whether a background allocation should start now (and marks it started).
    fn should_prefetch(&mut self) -> bool {
        if self.prefetching || self.ahead.is_some() || self.next >= self.end {
            return false;
        }
        if self.next >= self.prefetch_at {
            self.prefetching = true;
            return true;
        }
        false
    }
}

/// This broker's supply of producer ids. See the module documentation.
#[derive(Debug, Default)]
pub struct ProducerIds {
    blocks: Mutex<Blocks>,
    /// Serialises allocations made while a request waits (one block, not one per waiter).
    allocating: tokio::sync::Mutex<()>,
}

impl ProducerIds {
    /// No ids yet: the first request allocates a block.
    pub fn new() -> ProducerIds {
        ProducerIds::default()
    }

    fn blocks(&self) -> std::sync::MutexGuard<'_, Blocks> {
        self.blocks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next unused producer id. `allocate` asks the controller for a block and returns
    /// (first id, count).
    pub async fn next<F, Fut, E>(self: &Arc<Self>, allocate: F) -> Result<i64, E>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(i64, i32), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let allocate = Arc::new(allocate);
        loop {
            let (id, prefetch) = {
                let mut blocks = self.blocks();
                let id = blocks.take();
                (id, blocks.should_prefetch())
            };
            if prefetch {
                let this = Arc::clone(self);
                let allocate = Arc::clone(&allocate);
                tokio::spawn(async move {
                    let granted = allocate().await;
                    let mut blocks = this.blocks();
                    blocks.prefetching = false;
                    match granted {
                        Ok((first, count)) => blocks.add(first, count),
                        Err(error) => {
                            tracing::warn!(%error, "prefetching a producer id block failed")
                        }
                    }
                });
            }
            if let Some(id) = id {
                return Ok(id);
            }
            let _allocating = self.allocating.lock().await;
            if let Some(id) = self.blocks().take() {
                return Ok(id);
            }
            let (first, count) = allocate().await?;
            tracing::debug!(first, count, "granted a producer id block");
            self.blocks().add(first, count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

    #[tokio::test]
    async fn ids_are_unique_and_the_next_block_is_fetched_ahead() {
        let granted = Arc::new(AtomicI64::new(0));
        let calls = Arc::new(AtomicUsize::new(0));
        let ids = Arc::new(ProducerIds::new());
        let allocate = {
            let granted = granted.clone();
            let calls = calls.clone();
            move || {
                let granted = granted.clone();
                let calls = calls.clone();
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, String>((granted.fetch_add(10, Ordering::SeqCst), 10))
                }
            }
        };
        let mut seen = Vec::new();
        for _ in 0..35 {
            seen.push(ids.next(allocate.clone()).await.expect("id"));
            // Let a background prefetch run.
            tokio::task::yield_now().await;
        }
        let expected: Vec<i64> = (0..35).collect();
        assert_eq!(seen, expected);
        // Four blocks for 35 ids: the first on demand, the others ahead of need.
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_failed_allocation_is_the_callers_error_and_is_retried_next_time() {
        let ids = Arc::new(ProducerIds::new());
        let failing = || async { Err::<(i64, i32), _>("no quorum".to_string()) };
        assert_eq!(ids.next(failing).await, Err("no quorum".to_string()));
        let working = || async { Ok::<_, String>((500, 2)) };
        assert_eq!(ids.next(working).await, Ok(500));
        assert_eq!(ids.next(working).await, Ok(501));
    }
}
