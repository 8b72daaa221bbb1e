//! The process's open-file budget, and how many partitions it leaves room for.
//!
//! Every segment keeps three files open (`.log`, `.index`, `.timeindex`), every connection
//! one socket. A broker asked to host more partitions than its open-file limit allows would
//! fail to open them and then fail every `accept` with "Too many open files", so: at start the
//! soft limit is raised to the hard limit ([`raise_limit`]); the broker registers how many
//! partition replicas the limit leaves room for ([`partition_capacity`]: one segment each,
//! after keeping `max.connections` (at most half the limit) plus [`FILES_RESERVED`] for
//! connections, listeners, checkpoints and the metadata log, shared by the brokers of one
//! process); and the controller refuses to place more on it (POLICY_VIOLATION, saying which
//! broker and why), so the partitions it hosts keep working.

use std::io;

/// Files each segment keeps open.
pub const FILES_PER_SEGMENT: u64 = 3;
/// Files kept back beyond connections: listeners, checkpoints, the metadata log, stdio.
pub const FILES_RESERVED: u64 = 256;
/// The soft limit is raised at most this far (Linux's default `nr_open`), even when the hard
/// limit is unlimited.
const LIMIT_CEILING: u64 = 1 << 20;

/// The open-file limit after [`raise_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit now.
    pub limit: u64,
    /// The soft limit before, if it was raised.
    pub raised_from: Option<u64>,
}

/// Raises the soft open-file limit to the hard one (Kafka's start script does this with
/// `ulimit`); keeps it where it is if that fails.
pub fn raise_limit() -> io::Result<OpenFiles> {
    let (soft, hard) = os::nofile()?;
    let target = hard.min(LIMIT_CEILING).max(soft);
    if target > soft && os::set_nofile(target, hard).is_ok() {
        return Ok(OpenFiles {
            limit: target,
            raised_from: Some(soft),
        });
    }
    Ok(OpenFiles {
        limit: soft,
        raised_from: None,
    })
}

/// The current soft open-file limit.
pub fn current_limit() -> io::Result<u64> {
    os::nofile().map(|(soft, _)| soft)
}

/// Partition replicas (of one segment each) that `limit` open files leave room for on one of
/// `brokers_in_process` brokers sharing the process, after `max_connections` sockets (at most
/// half the limit) and [`FILES_RESERVED`].
pub fn partition_capacity(limit: u64, max_connections: u64, brokers_in_process: u64) -> u64 {
    let reserved = max_connections.min(limit / 2) + FILES_RESERVED;
    limit.saturating_sub(reserved) / FILES_PER_SEGMENT / brokers_in_process.max(1)
}

#[allow(unsafe_code)]
mod os {
    use std::io;

    pub(super) fn nofile() -> io::Result<(u64, u64)> {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one `rlimit` through the valid pointer it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((limit.rlim_cur, limit.rlim_max))
    }

    pub(super) fn set_nofile(soft: u64, hard: u64) -> io::Result<()> {
        let limit = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: setrlimit reads one `rlimit` through the valid pointer it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_keeps_connections_and_a_reserve_back() {
        // The example: 20,000 files, 10,000 connections allowed (half the limit kept).
        assert_eq!(partition_capacity(20_000, 10_000, 1), (20_000 - 10_256) / 3);
        assert!(partition_capacity(20_000, 10_000, 1) < 10_000);
        // Few connections: most of the limit is for segments.
        assert_eq!(
            partition_capacity(1_000_000, 1_000, 1),
            (1_000_000 - 1_256) / 3
        );
        // Three brokers in one process share it.
        assert_eq!(partition_capacity(30_000, 100, 3), (30_000 - 356) / 3 / 3);
        assert_eq!(partition_capacity(100, 10_000, 1), 0);
    }

    #[test]
    fn raising_keeps_or_lifts_the_soft_limit() {
        let before = current_limit().unwrap();
        let raised = raise_limit().unwrap();
        assert!(raised.limit >= before);
        assert_eq!(current_limit().unwrap(), raised.limit);
    }
}
