//! Named failure probes for the log's disk I/O (Redpanda's idea): a test arms a fault for the
//! segments under one directory, and the next write or fsync there fails with EIO, as a
//! failing disk would. Unarmed, each probe costs one atomic load.
//!
//! Probes exist for what a real filesystem error is hard to provoke on demand: `EIO` on write
//! and a failed `fsync` (whose pages the kernel may already have dropped). A full disk
//! (ENOSPC) is tested with a real size-limited filesystem instead.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// What fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Writes to segment files (appends).
    Write,
    /// `fsync` of segment files.
    Fsync,
}

static ARMED: AtomicBool = AtomicBool::new(false);
static FAULTS: Mutex<Vec<(PathBuf, Fault)>> = Mutex::new(Vec::new());

/// Makes every later `fault` operation on segments under `dir` fail with EIO, until
/// [`clear`].
pub fn inject(dir: &Path, fault: Fault) {
    let mut faults = FAULTS.lock().unwrap_or_else(|e| e.into_inner());
    faults.push((dir.to_path_buf(), fault));
    ARMED.store(true, Ordering::Release);
}

/// Disarms every fault under `dir`.
pub fn clear(dir: &Path) {
    let mut faults = FAULTS.lock().unwrap_or_else(|e| e.into_inner());
    faults.retain(|(armed, _)| !armed.starts_with(dir) && !dir.starts_with(armed));
    ARMED.store(!faults.is_empty(), Ordering::Release);
}

/// The probe: EIO if `fault` is armed for `path`.
pub(crate) fn check(path: &Path, fault: Fault) -> io::Result<()> {
    if !ARMED.load(Ordering::Acquire) {
        return Ok(());
    }
    let faults = FAULTS.lock().unwrap_or_else(|e| e.into_inner());
    if faults
        .iter()
        .any(|(dir, armed)| *armed == fault && path.starts_with(dir))
    {
        return Err(io::Error::from_raw_os_error(libc::EIO));
    }
    Ok(())
}
