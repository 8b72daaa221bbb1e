//! The Raft log of the metadata quorum, on disk.
//!
//! Files in the quorum directory (`<data-dir>/metadata-quorum/`):
//! - `raft.log`: the entries, each a frame `[u32 length][u32 CRC-32C][JSON entry]` (big
//!   endian). Appends are written and `fdatasync`ed before openraft is told they are flushed,
//!   so a vote or an acknowledgement never counts an entry a crash could lose. On open, a torn
//!   or corrupt tail (a crash mid-append) is cut off at the last whole frame.
//! - `vote.json`, `committed.json`, `purged.json`: small documents replaced atomically
//!   (temporary file, fsync, rename, fsync of the directory).
//!
//! Entries stay in memory too (the metadata log is small and a snapshot bounds it): reads
//! never touch the disk. Truncation cuts the file at the first removed frame; purging records
//! the purged id first and rewrites the file without the purged prefix once that prefix is
//! large.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{LogId, RaftLogReader, StorageError, StorageIOError, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::types::TypeConfig;

type Entry = openraft::Entry<TypeConfig>;

const LOG_FILE: &str = "raft.log";
const VOTE_FILE: &str = "vote.json";
const COMMITTED_FILE: &str = "committed.json";
const PURGED_FILE: &str = "purged.json";
/// The largest entry frame accepted when reading the log back.
const MAX_FRAME_BYTES: usize = 64 << 20;
/// Rewrite `raft.log` once this many purged entries sit at its front.
const REWRITE_AFTER_PURGED: u64 = 1024;
const FRAME_HEADER: usize = 8;

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    file: File,
    file_len: u64,
    /// Index -> (entry, offset of its frame in `raft.log`).
    entries: BTreeMap<u64, (Entry, u64)>,
    vote: Option<Vote<u64>>,
    committed: Option<LogId<u64>>,
    last_purged: Option<LogId<u64>>,
    /// Purged entries still in the file.
    purged_in_file: u64,
}

/// The file-backed Raft log. Cloning shares it (openraft's log reader is a clone).
#[derive(Debug, Clone)]
pub struct FileLogStore {
    inner: Arc<Mutex<Inner>>,
}

fn read_json<T: DeserializeOwned>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    super::write_atomically(path, &bytes)
}

fn frame(entry: &Entry) -> std::io::Result<Vec<u8>> {
    let payload = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
    let len = u32::try_from(payload.len())
        .map_err(|_| std::io::Error::other("log entry larger than 4 GiB"))?;
    let mut out = Vec::with_capacity(FRAME_HEADER + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Parses whole frames from `bytes`; returns the entries with their offsets and the length of
/// the valid prefix.
fn parse_frames(bytes: &[u8]) -> (Vec<(Entry, u64)>, u64) {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while bytes.len() - pos >= FRAME_HEADER {
        let len = u32::from_be_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]])
            as usize;
        let crc = u32::from_be_bytes([
            bytes[pos + 4],
            bytes[pos + 5],
            bytes[pos + 6],
            bytes[pos + 7],
        ]);
        let start = pos + FRAME_HEADER;
        if len > MAX_FRAME_BYTES || bytes.len() - start < len {
            break;
        }
        let payload = &bytes[start..start + len];
        if crc32c::crc32c(payload) != crc {
            break;
        }
        match serde_json::from_slice::<Entry>(payload) {
            Ok(entry) => out.push((entry, pos as u64)),
            Err(_) => break,
        }
        pos = start + len;
    }
    (out, pos as u64)
}

impl FileLogStore {
    /// Opens (creating if needed) the log in `dir`.
    pub fn open(dir: &Path) -> std::io::Result<FileLogStore> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(LOG_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let (frames, valid) = parse_frames(&bytes);
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&path)?;
        if valid < bytes.len() as u64 {
            tracing::warn!(
                path = %path.display(),
                valid,
                len = bytes.len(),
                "metadata log has a torn or corrupt tail; cutting it off"
            );
            file.set_len(valid)?;
            file.sync_all()?;
        }
        let last_purged: Option<LogId<u64>> = read_json(&dir.join(PURGED_FILE))?;
        let purged_index = last_purged.map(|l| l.index);
        let mut entries = BTreeMap::new();
        let mut purged_in_file = 0;
        for (entry, offset) in frames {
            if purged_index.is_some_and(|p| entry.log_id.index <= p) {
                purged_in_file += 1;
                continue;
            }
            entries.insert(entry.log_id.index, (entry, offset));
        }
        let inner = Inner {
            dir: dir.to_path_buf(),
            file,
            file_len: valid,
            entries,
            vote: read_json(&dir.join(VOTE_FILE))?,
            committed: read_json(&dir.join(COMMITTED_FILE))?,
            last_purged,
            purged_in_file,
        };
        Ok(FileLogStore {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    // The error type is openraft's, fixed by the traits this serves.
    #[allow(clippy::result_large_err)]
    fn lock(&self) -> Result<MutexGuard<'_, Inner>, StorageError<u64>> {
        self.inner.lock().map_err(|_| {
            StorageIOError::read_logs(&std::io::Error::other("log lock poisoned")).into()
        })
    }
}

impl Inner {
    fn append(&mut self, entries: Vec<Entry>) -> std::io::Result<()> {
        let mut buf = Vec::new();
        let mut offsets = Vec::with_capacity(entries.len());
        for entry in &entries {
            offsets.push(self.file_len + buf.len() as u64);
            buf.extend_from_slice(&frame(entry)?);
        }
        use std::io::{Seek, SeekFrom};
        self.file.seek(SeekFrom::Start(self.file_len))?;
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        self.file_len += buf.len() as u64;
        for (entry, offset) in entries.into_iter().zip(offsets) {
            self.entries.insert(entry.log_id.index, (entry, offset));
        }
        Ok(())
    }

    /// Removes the entries at and after `index`.
    fn truncate(&mut self, index: u64) -> std::io::Result<()> {
        let Some(offset) = self.entries.range(index..).next().map(|(_, (_, o))| *o) else {
            return Ok(());
        };
        self.file.set_len(offset)?;
        self.file.sync_all()?;
        self.file_len = offset;
        self.entries.split_off(&index);
        Ok(())
    }

    fn purge(&mut self, log_id: LogId<u64>) -> std::io::Result<()> {
        write_json(&self.dir.join(PURGED_FILE), &log_id)?;
        self.last_purged = Some(log_id);
        let kept = self.entries.split_off(&(log_id.index + 1));
        self.purged_in_file += self.entries.len() as u64;
        self.entries = kept;
        if self.purged_in_file >= REWRITE_AFTER_PURGED {
            self.rewrite()?;
        }
        Ok(())
    }

    /// Writes the live entries to a new file and renames it over the old one.
    fn rewrite(&mut self) -> std::io::Result<()> {
        let path = self.dir.join(LOG_FILE);
        let mut buf = Vec::new();
        let mut offsets = Vec::with_capacity(self.entries.len());
        for (index, (entry, _)) in &self.entries {
            offsets.push((*index, buf.len() as u64));
            buf.extend_from_slice(&frame(entry)?);
        }
        super::write_atomically(&path, &buf)?;
        self.file = OpenOptions::new().read(true).write(true).open(&path)?;
        self.file_len = buf.len() as u64;
        for (index, offset) in offsets {
            if let Some((_, o)) = self.entries.get_mut(&index) {
                *o = offset;
            }
        }
        self.purged_in_file = 0;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for FileLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<u64>> {
        let inner = self.lock()?;
        Ok(inner
            .entries
            .range(range)
            .map(|(_, (e, _))| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for FileLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let inner = self.lock()?;
        let last = inner.entries.values().next_back().map(|(e, _)| e.log_id);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last.or(inner.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        let mut inner = self.lock()?;
        write_json(&inner.dir.join(VOTE_FILE), vote).map_err(|e| StorageIOError::write_vote(&e))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        Ok(self.lock()?.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        let mut inner = self.lock()?;
        write_json(&inner.dir.join(COMMITTED_FILE), &committed)
            .map_err(|e| StorageIOError::write(&e))?;
        inner.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        Ok(self.lock()?.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let result = self.lock()?.append(entries);
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let storage = StorageIOError::write_logs(&e);
                callback.log_io_completed(Err(e));
                Err(storage.into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.lock()?
            .truncate(log_id.index)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.lock()?
            .purge(log_id)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
