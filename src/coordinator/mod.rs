//! The coordinators' runtimes: the I/O side of state machines that live elsewhere.
//!
//! - [`group`]: [`GroupService`] runs [`crate::group::GroupCoordinator`] (which does no I/O)
//!   against the real world: the clock, a timer task, the `__consumer_offsets` partitions this
//!   broker leads (appends, the wait for them to be committed, replay on becoming leader), and
//!   the requests waiting for a response.
//!
//! The transaction coordinator will get its runtime here too.

pub mod group;

pub use group::{GroupService, OFFSETS_TOPIC};
