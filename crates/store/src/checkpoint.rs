//! The write-ahead log's upkeep: making again, when the store opens, the logged writes sled does
//! not hold ([`redo_logged`]), and the background thread ([`log_keeper`]) that prepares spare log
//! files and checkpoints finished ones (a sled flush and sync, after which they can go). A
//! [`Keeper`] shared by every store handle stops that thread when the last handle goes, and
//! [`crate::Store::checkpoint_health`] tells whether checkpoints keep failing.

use std::path::Path;
use std::sync::{Mutex, Weak};

use crate::keys::{META, read_u64};
use crate::{Inner, Store, StoreError, journal, lock, wal};

/// Shared by every [`crate::Store`] handle: when the last one goes, stops the log's background
/// thread and waits for it, so that the store (and sled's lock on its directory) is released
/// then, not whenever a checkpoint in progress ends.
pub(crate) struct Keeper {
    pub(crate) jobs: std::sync::mpsc::Sender<LogJob>,
    pub(crate) thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Keeper {
    fn drop(&mut self) {
        let _ = self.jobs.send(LogJob::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Makes again, in order, the logged writes sled does not hold whole (those above the log
/// sequence number sled has); answers the number the next write gets.
pub(crate) fn redo_logged(dir: &Path, trees: &[sled::Tree]) -> Result<u64, StoreError> {
    let applied = read_u64(trees[META].get(wal::META_APPLIED)?);
    let mut last = applied;
    let mut redone = 0;
    wal::replay(&dir.join("wal"), applied, |lsn, payload| {
        if lsn > applied {
            if lsn != last + 1 {
                return Err(StoreError::Corrupt(format!(
                    "the store holds writes up to {applied} but its write-ahead log continues \
                     only from write {lsn}"
                )));
            }
            journal::apply(trees, journal::decode(payload, trees.len())?)?;
            redone += 1;
        }
        last = last.max(lsn);
        Ok(())
    })?;
    if redone > 0 {
        tracing::info!(
            writes = redone,
            "made again the logged writes the store did not hold"
        );
    }
    Ok(last + 1)
}

/// Work for [`log_keeper`].
pub(crate) enum LogJob {
    /// Make a spare log file (the current one is half full).
    Spare,
    /// A log file is finished: make its writes durable in sled and let it go.
    Checkpoint,
    /// The store is closing.
    Stop,
}

/// The log's background thread. For a spare, zero-fills a file the size of a log file. For a
/// checkpoint, flushes sled and syncs its files, then recycles one finished log file as the
/// spare (when there is none) and removes the others, their writes now durable in sled. Ends
/// with the store.
pub(crate) fn log_keeper(store: Weak<Inner>, jobs: std::sync::mpsc::Receiver<LogJob>) {
    while let Ok(job) = jobs.recv() {
        if let LogJob::Stop = job {
            return;
        }
        let Some(inner) = store.upgrade() else {
            return;
        };
        let wal_dir = inner.dir.join("wal");
        if let LogJob::Spare = job {
            let bytes = lock(&inner.wal).rotate_bytes();
            let made = wal::make_spare(&wal_dir, bytes).inspect_err(
                |e| tracing::warn!(error = %e, "cannot make a spare write-ahead log file"),
            );
            lock(&inner.wal).set_spare(made.ok());
            continue;
        }
        let retired = std::mem::take(&mut *lock(&inner.retired));
        if retired.is_empty() {
            continue;
        }
        let synced = inner
            .db
            .flush()
            .map_err(StoreError::from)
            .and_then(|_| wal::sync_sled(&inner.dir));
        let failures = note(&inner.checkpoints, &synced);
        match synced {
            Ok(()) => {
                for path in retired {
                    if !lock(&inner.wal).has_spare() {
                        match wal::recycle(&wal_dir, &path) {
                            Ok(spare) => {
                                lock(&inner.wal).set_spare(Some(spare));
                                continue;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot recycle a finished write-ahead log file")
                            }
                        }
                    }
                    if let Err(e) = std::fs::remove_file(&path) {
                        tracing::warn!(file = %path.display(), error = %e, "cannot remove a finished write-ahead log file");
                    }
                }
            }
            Err(e) => {
                // The files stay (a later checkpoint or the next start deals with them).
                tracing::error!(
                    error = %e,
                    failures,
                    "checkpoint failed; the write-ahead log is kept"
                );
                lock(&inner.retired).splice(0..0, retired);
            }
        }
    }
}

/// How the write-ahead log's checkpoints are going (see [`Store::checkpoint_health`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointHealth {
    /// Checkpoints that failed in a row, the latest included; 0 once one succeeds.
    pub consecutive_failures: u64,
    /// The latest failure's message while failures go on; `None` once a checkpoint succeeds.
    pub last_error: Option<String>,
}

impl Store {
    /// How the write-ahead log's checkpoints are going. While they fail, every finished log file
    /// is kept: the log grows without bound, and the next start replays all of it.
    pub fn checkpoint_health(&self) -> CheckpointHealth {
        lock(&self.inner.checkpoints).clone()
    }
}

/// Counts a checkpoint's outcome in `health`; answers the failures in a row now.
pub(crate) fn note(health: &Mutex<CheckpointHealth>, outcome: &Result<(), StoreError>) -> u64 {
    let mut health = lock(health);
    match outcome {
        Ok(()) => *health = CheckpointHealth::default(),
        Err(e) => {
            health.consecutive_failures += 1;
            health.last_error = Some(e.to_string());
        }
    }
    health.consecutive_failures
}
