//! Every partition log under one data directory, the recovery-point checkpoint and the
//! clean-shutdown marker (Kafka's `LogManager`, one log dir).
//!
//! # Files (in the data directory)
//! - `<topic>-<partition>/`: one [`PartitionLog`] each.
//! - `recovery-point-offset-checkpoint`: Kafka's checkpoint text format:
//!   ```text
//!   0                      version
//!   2                      number of entries
//!   orders 0 1234          topic partition offset
//!   orders 1 99
//!   ```
//! - `log-start-offset-checkpoint`: same format, each log's start offset (so a DeleteRecords
//!   that advanced it mid-segment survives a restart, as in Kafka).
//! - `cleaner-offset-checkpoint`: same format, each compacted log's first dirty offset (where
//!   its next compaction starts), as Kafka's log cleaner keeps it.
//! - `replication-offset-checkpoint`: same format, each partition's high watermark as the
//!   replica layer last reported it (Kafka's file of that name), so a restarted broker shows
//!   consumers the committed end at once instead of its log start.
//! - `.gregor_cleanshutdown`: written last by a clean [`LogManager::shutdown`], removed by
//!   [`LogManager::open`]. Present at open: every log's recovery point is its end (no scan).
//!
//! # Invariants
//! - Checkpoints are replaced atomically: written to `<name>.tmp`, fsynced, renamed over the
//!   old file, then the directory is fsynced. A crash leaves the old or the new file whole.
//! - A checkpoint never claims more than was flushed: it records each log's recovery point.
//! - At most one `PartitionLog` per partition is open: opens and removals of one partition are
//!   serialized, different partitions open (and recover) in parallel.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};

use tracing::{debug, error, info};

use super::partition_log::{LogConfig, PartitionLog};
use super::segment::{lock, read_lock, sync_dir, write_lock};
use super::LogError;

/// Kafka's name for the recovery-point checkpoint.
pub const RECOVERY_POINT_CHECKPOINT_FILE: &str = "recovery-point-offset-checkpoint";
/// Kafka's name for the log-start-offset checkpoint.
pub const LOG_START_OFFSET_CHECKPOINT_FILE: &str = "log-start-offset-checkpoint";
/// Kafka's name for the log cleaner's checkpoint of first dirty offsets.
pub const CLEANER_OFFSET_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";
/// Kafka's name for the high-watermark checkpoint.
pub const REPLICATION_OFFSET_CHECKPOINT_FILE: &str = "replication-offset-checkpoint";
/// The clean-shutdown marker.
pub const CLEAN_SHUTDOWN_FILE: &str = ".gregor_cleanshutdown";
/// The only checkpoint format version.
const CHECKPOINT_VERSION: i32 = 0;
/// Checkpoints larger than this are refused rather than read into memory.
const CHECKPOINT_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Kafka's limit on topic name length.
const TOPIC_NAME_BYTES_MAX: usize = 249;

type PartitionKey = (String, i32);

/// All partition logs of one data directory.
#[derive(Debug)]
pub struct LogManager {
    data_dir: PathBuf,
    /// Whether the marker was present at open.
    clean_shutdown: bool,
    /// Recovery points: read from the checkpoint at open, refreshed at each checkpoint.
    recovery_points: Mutex<HashMap<PartitionKey, i64>>,
    /// Log start offsets, likewise.
    log_start_offsets: Mutex<HashMap<PartitionKey, i64>>,
    /// The cleaner's first dirty offsets, likewise.
    cleaner_offsets: Mutex<HashMap<PartitionKey, i64>>,
    /// High watermarks: read from their checkpoint at open, replaced by each checkpoint.
    high_watermarks: Mutex<HashMap<PartitionKey, i64>>,
    logs: RwLock<HashMap<PartitionKey, Arc<PartitionLog>>>,
    /// Partitions being opened or removed right now: one at a time per partition, while
    /// different partitions open (and recover) in parallel and `get` never waits.
    busy: Mutex<HashSet<PartitionKey>>,
    busy_released: Condvar,
    /// Serializes checkpoint writes (they share the `.tmp` file).
    checkpoint_lock: Mutex<()>,
}

fn invalid_data(message: String) -> LogError {
    LogError::Io(io::Error::new(io::ErrorKind::InvalidData, message))
}

/// Kafka's legal topic names: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..` (this also keeps
/// a name from escaping the data directory).
fn is_valid_topic_name(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= TOPIC_NAME_BYTES_MAX
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

/// Parses Kafka's checkpoint text format. A missing file is an empty checkpoint.
fn read_checkpoint(path: &Path) -> Result<HashMap<PartitionKey, i64>, LogError> {
    let text = match File::open(path) {
        Ok(file) => {
            if file.metadata()?.len() > CHECKPOINT_BYTES_MAX {
                return Err(invalid_data(format!("{} is too large", path.display())));
            }
            let mut text = String::new();
            io::Read::read_to_string(&mut &file, &mut text)?;
            text
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(error) => return Err(error.into()),
    };
    let malformed = |what: &str| invalid_data(format!("malformed {}: {what}", path.display()));
    let mut lines = text.lines();
    let version: i32 = lines
        .next()
        .and_then(|line| line.trim().parse().ok())
        .ok_or_else(|| malformed("version line"))?;
    if version != CHECKPOINT_VERSION {
        return Err(malformed(&format!("unsupported version {version}")));
    }
    let count: usize = lines
        .next()
        .and_then(|line| line.trim().parse().ok())
        .ok_or_else(|| malformed("count line"))?;
    let mut entries = HashMap::new();
    for line in lines.by_ref().take(count) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [topic, partition, offset] = fields[..] else {
            return Err(malformed(&format!("entry {line:?}")));
        };
        let partition: i32 = partition
            .parse()
            .map_err(|_| malformed(&format!("partition in {line:?}")))?;
        let offset: i64 = offset
            .parse()
            .map_err(|_| malformed(&format!("offset in {line:?}")))?;
        entries.insert((topic.to_string(), partition), offset);
    }
    if entries.len() != count || lines.any(|line| !line.trim().is_empty()) {
        return Err(malformed(&format!("expected {count} entries")));
    }
    Ok(entries)
}

/// Writes `path` atomically: `<path>.tmp`, fsync, rename, fsync of the directory.
fn write_atomically(dir: &Path, name: &str, contents: &[u8]) -> Result<(), LogError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut file = File::create(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    Ok(())
}

/// Kafka's checkpoint text for `entries` (sorted, for stable files).
fn checkpoint_text(entries: &HashMap<PartitionKey, i64>) -> String {
    let mut sorted: Vec<(&PartitionKey, &i64)> = entries.iter().collect();
    sorted.sort();
    let mut text = format!("{CHECKPOINT_VERSION}\n{}\n", sorted.len());
    for ((topic, partition), offset) in sorted {
        text.push_str(&format!("{topic} {partition} {offset}\n"));
    }
    text
}

impl LogManager {
    /// Opens the data directory (creating it), reads the checkpoints, and consumes the
    /// clean-shutdown marker: from now on a crash is an unclean shutdown.
    pub fn open(data_dir: PathBuf) -> Result<LogManager, LogError> {
        fs::create_dir_all(&data_dir)?;
        let recovery_points = read_checkpoint(&data_dir.join(RECOVERY_POINT_CHECKPOINT_FILE))?;
        let log_start_offsets = read_checkpoint(&data_dir.join(LOG_START_OFFSET_CHECKPOINT_FILE))?;
        let cleaner_offsets = read_checkpoint(&data_dir.join(CLEANER_OFFSET_CHECKPOINT_FILE))?;
        let high_watermarks = read_checkpoint(&data_dir.join(REPLICATION_OFFSET_CHECKPOINT_FILE))?;
        let marker = data_dir.join(CLEAN_SHUTDOWN_FILE);
        let clean_shutdown = marker.exists();
        if clean_shutdown {
            fs::remove_file(&marker)?;
            sync_dir(&data_dir)?;
        }
        let previous_stop = if clean_shutdown {
            "clean"
        } else if recovery_points.is_empty() && log_start_offsets.is_empty() {
            "none (new data dir)"
        } else {
            "unclean: recovering from the checkpointed recovery points"
        };
        info!(
            data_dir = %data_dir.display(),
            previous_stop,
            checkpointed_partitions = recovery_points.len(),
            "opened log manager"
        );
        Ok(LogManager {
            data_dir,
            clean_shutdown,
            recovery_points: Mutex::new(recovery_points),
            log_start_offsets: Mutex::new(log_start_offsets),
            cleaner_offsets: Mutex::new(cleaner_offsets),
            high_watermarks: Mutex::new(high_watermarks),
            logs: RwLock::new(HashMap::new()),
            busy: Mutex::new(HashSet::new()),
            busy_released: Condvar::new(),
            checkpoint_lock: Mutex::new(()),
        })
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Whether the previous shutdown was clean (the marker was present at open).
    pub fn had_clean_shutdown(&self) -> bool {
        self.clean_shutdown
    }

    /// Waits until no one else is opening or removing `key`, then claims it until the guard
    /// drops.
    fn claim(&self, key: &PartitionKey) -> Claim<'_> {
        let mut busy = lock(&self.busy);
        while busy.contains(key) {
            busy = self
                .busy_released
                .wait(busy)
                .unwrap_or_else(PoisonError::into_inner);
        }
        busy.insert(key.clone());
        Claim {
            manager: self,
            key: key.clone(),
        }
    }

    fn partition_dir(&self, topic: &str, partition: i32) -> Result<PathBuf, LogError> {
        if !is_valid_topic_name(topic) || partition < 0 {
            return Err(LogError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid topic partition {topic:?} {partition}"),
            )));
        }
        Ok(self.data_dir.join(format!("{topic}-{partition}")))
    }

    /// The `<topic>-<partition>` directories on disk (topic names may contain `-`: the
    /// partition is after the last one), sorted.
    pub fn existing_partitions(&self) -> Result<Vec<(String, i32)>, LogError> {
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.data_dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_dir() {
                continue;
            }
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Some((topic, partition)) = name.rsplit_once('-') else {
                continue;
            };
            let Ok(partition) = partition.parse::<i32>() else {
                continue;
            };
            if partition >= 0 && is_valid_topic_name(topic) {
                found.push((topic.to_string(), partition));
            }
        }
        found.sort();
        Ok(found)
    }

    /// Opens or creates one partition log, recovering from the checkpointed recovery point
    /// (everything after a clean shutdown). If it is already open, applies `config` to it and
    /// returns it.
    pub fn open_log(
        &self,
        topic: &str,
        partition: i32,
        config: LogConfig,
    ) -> Result<Arc<PartitionLog>, LogError> {
        let dir = self.partition_dir(topic, partition)?;
        let key = (topic.to_string(), partition);
        let _claim = self.claim(&key);
        if let Some(log) = self.get(topic, partition) {
            log.set_config(config);
            return Ok(log);
        }
        let recovery_point = if self.clean_shutdown {
            i64::MAX
        } else {
            lock(&self.recovery_points).get(&key).copied().unwrap_or(0)
        };
        let log = PartitionLog::open(dir, config, recovery_point)?;
        let checkpointed_start = lock(&self.log_start_offsets).get(&key).copied();
        if let Some(start) = checkpointed_start {
            if start > log.log_start_offset() && start <= log.log_end_offset() {
                log.advance_log_start_offset(start)?;
            }
        }
        if let Some(first_dirty) = lock(&self.cleaner_offsets).get(&key).copied() {
            // Checked against the log's offsets when the cleaner uses it.
            log.restore_cleaner_checkpoint(first_dirty);
        }
        let log = Arc::new(log);
        write_lock(&self.logs).insert(key, Arc::clone(&log));
        debug!(topic, partition, "opened log");
        Ok(log)
    }

    /// The open log of a partition.
    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<PartitionLog>> {
        read_lock(&self.logs)
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    /// Deletes a partition's log from disk (open or not) and forgets its checkpoints.
    pub fn remove(&self, topic: &str, partition: i32) -> Result<(), LogError> {
        let dir = self.partition_dir(topic, partition)?;
        let key = (topic.to_string(), partition);
        let _claim = self.claim(&key);
        let log = write_lock(&self.logs).remove(&key);
        lock(&self.recovery_points).remove(&key);
        lock(&self.log_start_offsets).remove(&key);
        lock(&self.cleaner_offsets).remove(&key);
        lock(&self.high_watermarks).remove(&key);
        match log {
            Some(log) => log.delete_from_disk()?,
            None => match fs::remove_dir_all(&dir) {
                Ok(()) => sync_dir(&self.data_dir)?,
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(error.into()),
            },
        }
        debug!(topic, partition, "removed log");
        Ok(())
    }

    /// Writes the recovery-point checkpoint (and the log-start-offset checkpoint) for all open
    /// logs, keeping the entries of logs on disk that are not open. Atomic per file.
    pub fn checkpoint_recovery_points(&self) -> Result<(), LogError> {
        let _checkpoint = lock(&self.checkpoint_lock);
        let logs: Vec<(PartitionKey, Arc<PartitionLog>)> = read_lock(&self.logs)
            .iter()
            .map(|(key, log)| (key.clone(), Arc::clone(log)))
            .collect();
        let recovery_text = {
            let mut points = lock(&self.recovery_points);
            for (key, log) in &logs {
                points.insert(key.clone(), log.recovery_point());
            }
            checkpoint_text(&points)
        };
        let start_text = {
            let mut starts = lock(&self.log_start_offsets);
            for (key, log) in &logs {
                starts.insert(key.clone(), log.log_start_offset());
            }
            checkpoint_text(&starts)
        };
        write_atomically(
            &self.data_dir,
            RECOVERY_POINT_CHECKPOINT_FILE,
            recovery_text.as_bytes(),
        )?;
        write_atomically(
            &self.data_dir,
            LOG_START_OFFSET_CHECKPOINT_FILE,
            start_text.as_bytes(),
        )?;
        self.write_cleaner_checkpoint(&logs)
    }

    /// The high watermark last checkpointed for a partition, if any.
    pub fn checkpointed_high_watermark(&self, topic: &str, partition: i32) -> Option<i64> {
        lock(&self.high_watermarks)
            .get(&(topic.to_string(), partition))
            .copied()
    }

    /// Writes the high-watermark checkpoint: `current` replaces the entries it names; entries
    /// of partitions on disk but not hosted now are kept (as for the other checkpoints).
    pub fn checkpoint_high_watermarks(
        &self,
        current: impl IntoIterator<Item = ((String, i32), i64)>,
    ) -> Result<(), LogError> {
        let _checkpoint = lock(&self.checkpoint_lock);
        let text = {
            let mut marks = lock(&self.high_watermarks);
            marks.extend(current);
            checkpoint_text(&marks)
        };
        write_atomically(
            &self.data_dir,
            REPLICATION_OFFSET_CHECKPOINT_FILE,
            text.as_bytes(),
        )
    }

    /// Writes the cleaner's checkpoint (first dirty offsets of the logs cleaned so far),
    /// keeping the entries of logs on disk that are not open. Called after a cleaner run.
    pub fn checkpoint_cleaner_offsets(&self) -> Result<(), LogError> {
        let _checkpoint = lock(&self.checkpoint_lock);
        let logs: Vec<(PartitionKey, Arc<PartitionLog>)> = read_lock(&self.logs)
            .iter()
            .map(|(key, log)| (key.clone(), Arc::clone(log)))
            .collect();
        self.write_cleaner_checkpoint(&logs)
    }

    /// Under `checkpoint_lock`.
    fn write_cleaner_checkpoint(
        &self,
        logs: &[(PartitionKey, Arc<PartitionLog>)],
    ) -> Result<(), LogError> {
        let text = {
            let mut offsets = lock(&self.cleaner_offsets);
            for (key, log) in logs {
                if let Some(first_dirty) = log.cleaner_checkpoint() {
                    offsets.insert(key.clone(), first_dirty);
                }
            }
            checkpoint_text(&offsets)
        };
        write_atomically(
            &self.data_dir,
            CLEANER_OFFSET_CHECKPOINT_FILE,
            text.as_bytes(),
        )
    }

    /// Flushes and closes every log, writes the checkpoints, then the clean-shutdown marker.
    /// If any log fails to close, the marker is not written (the next start recovers).
    pub fn shutdown(&self) -> Result<(), LogError> {
        let logs: Vec<(PartitionKey, Arc<PartitionLog>)> = read_lock(&self.logs)
            .iter()
            .map(|(key, log)| (key.clone(), Arc::clone(log)))
            .collect();
        let mut first_error = None;
        for ((topic, partition), log) in &logs {
            if let Err(close_error) = log.close() {
                error!(topic, partition, error = %close_error, "failed to close log");
                first_error.get_or_insert(close_error);
            }
        }
        self.checkpoint_recovery_points()?;
        if let Some(close_error) = first_error {
            return Err(close_error);
        }
        write_atomically(&self.data_dir, CLEAN_SHUTDOWN_FILE, b"")?;
        info!(data_dir = %self.data_dir.display(), logs = logs.len(), "log manager shut down cleanly");
        Ok(())
    }
}

/// A partition claimed by [`LogManager::claim`]; released on drop (also on error paths).
struct Claim<'a> {
    manager: &'a LogManager,
    key: PartitionKey,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut busy: MutexGuard<'_, HashSet<PartitionKey>> = lock(&self.manager.busy);
        busy.remove(&self.key);
        drop(busy);
        self.manager.busy_released.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::testing::batch;

    fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 2000,
            ..LogConfig::default()
        }
    }

    #[test]
    fn log_types_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<LogManager>();
        assert_send_sync::<PartitionLog>();
        assert_send_sync::<crate::log::LogError>();
        assert_send_sync::<crate::log::segment::Segment>();
    }

    #[test]
    fn checkpoint_format_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut entries = HashMap::new();
        entries.insert(("orders".to_string(), 0), 1234);
        entries.insert(("my-topic-1".to_string(), 7), 0);
        let text = checkpoint_text(&entries);
        assert_eq!(text, "0\n2\nmy-topic-1 7 0\norders 0 1234\n");
        write_atomically(dir.path(), "cp", text.as_bytes()).expect("write");
        assert_eq!(
            read_checkpoint(&dir.path().join("cp")).expect("read"),
            entries
        );
        assert!(!dir.path().join("cp.tmp").exists());
        for bad in [
            "1\n0\n",
            "0\n2\nt 0 1\n",
            "0\nx\n",
            "0\n1\nt zero 1\n",
            "0\n1\nt 0\n",
        ] {
            fs::write(dir.path().join("bad"), bad).expect("write");
            assert!(
                read_checkpoint(&dir.path().join("bad")).is_err(),
                "{bad:?} should be rejected"
            );
        }
        assert!(read_checkpoint(&dir.path().join("missing"))
            .expect("missing is empty")
            .is_empty());
    }

    #[test]
    fn lists_partitions_and_rejects_bad_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let manager = LogManager::open(dir.path().to_path_buf()).expect("open");
        manager.open_log("a-b-c", 3, config()).expect("open log");
        manager.open_log("plain", 0, config()).expect("open log");
        fs::create_dir(dir.path().join("not_a_partition")).expect("mkdir");
        assert_eq!(
            manager.existing_partitions().expect("list"),
            vec![("a-b-c".to_string(), 3), ("plain".to_string(), 0)]
        );
        assert!(manager.open_log("..", 0, config()).is_err());
        assert!(manager.open_log("a/b", 0, config()).is_err());
        assert!(manager.open_log("t", -1, config()).is_err());
        let log = manager.get("plain", 0).expect("open");
        let again = manager.open_log("plain", 0, config()).expect("again");
        assert!(Arc::ptr_eq(&log, &again));
        manager.remove("plain", 0).expect("remove");
        assert!(manager.get("plain", 0).is_none());
        assert!(!dir.path().join("plain-0").exists());
        // Removing a log that is on disk but not open.
        fs::create_dir(dir.path().join("other-2")).expect("mkdir");
        manager.remove("other", 2).expect("remove");
        assert!(!dir.path().join("other-2").exists());
    }

    #[test]
    fn opens_in_parallel_once_per_partition() {
        let dir = tempfile::tempdir().expect("tempdir");
        let manager = LogManager::open(dir.path().to_path_buf()).expect("open");
        let logs: Vec<Arc<PartitionLog>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let manager = &manager;
                    scope.spawn(move || manager.open_log("t", i % 2, config()).expect("open"))
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().expect("thread"))
                .collect()
        });
        for (i, log) in logs.iter().enumerate() {
            assert!(Arc::ptr_eq(log, &logs[i % 2]));
        }
        assert_eq!(manager.existing_partitions().expect("list").len(), 2);
    }

    #[test]
    fn clean_shutdown_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let manager = LogManager::open(dir.path().to_path_buf()).expect("open");
            assert!(!manager.had_clean_shutdown());
            let log = manager.open_log("t", 0, config()).expect("log");
            for i in 0..30 {
                log.append(batch(0, 2, 1000 + i), 5000, 0).expect("append");
            }
            log.advance_log_start_offset(41).expect("advance");
            manager.shutdown().expect("shutdown");
            assert!(dir.path().join(CLEAN_SHUTDOWN_FILE).exists());
            assert!(
                log.append(batch(0, 1, 1), 1, 0).is_err(),
                "closed after shutdown"
            );
        }
        let text = fs::read_to_string(dir.path().join(RECOVERY_POINT_CHECKPOINT_FILE))
            .expect("checkpoint");
        assert_eq!(text, "0\n1\nt 0 60\n");
        let manager = LogManager::open(dir.path().to_path_buf()).expect("reopen");
        assert!(manager.had_clean_shutdown());
        assert!(!dir.path().join(CLEAN_SHUTDOWN_FILE).exists());
        let log = manager.open_log("t", 0, config()).expect("log");
        assert_eq!(log.log_end_offset(), 60);
        assert_eq!(log.recovery_point(), 60);
        assert_eq!(log.log_start_offset(), 41);
        let read = log.read(41, 1 << 20, i64::MAX, true).expect("read");
        assert!(!read.is_empty());
    }

    #[test]
    fn unclean_open_recovers_from_the_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let segment_path;
        {
            let manager = LogManager::open(dir.path().to_path_buf()).expect("open");
            let log = manager.open_log("t", 0, config()).expect("log");
            for i in 0..10 {
                log.append(batch(0, 1, i), 5000, 0).expect("append");
            }
            log.flush().expect("flush");
            manager.checkpoint_recovery_points().expect("checkpoint");
            for i in 0..10 {
                log.append(batch(0, 1, 100 + i), 5000, 0).expect("append");
            }
            let last_base = *log.segment_base_offsets().last().expect("segment");
            segment_path = log.dir().join(format!("{last_base:020}.log"));
            // Crash: no shutdown, no marker. Tear the last batch.
        }
        let length = fs::metadata(&segment_path).expect("meta").len();
        fs::OpenOptions::new()
            .write(true)
            .open(&segment_path)
            .expect("open")
            .set_len(length - 5)
            .expect("tear");
        let text = fs::read_to_string(dir.path().join(RECOVERY_POINT_CHECKPOINT_FILE))
            .expect("checkpoint");
        assert_eq!(text, "0\n1\nt 0 10\n");
        let manager = LogManager::open(dir.path().to_path_buf()).expect("reopen");
        assert!(!manager.had_clean_shutdown());
        let log = manager.open_log("t", 0, config()).expect("log");
        assert_eq!(log.log_end_offset(), 19);
        assert_eq!(log.recovery_point(), 10);
        assert_eq!(log.flush().expect("flush"), 19);
    }
}
