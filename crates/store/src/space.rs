//! Free space on the data volume. sled stops writing for good after one write fails for want
//! of space (it must be reopened), so the store refuses writes *before* the volume fills: item
//! writes while less than `min_free` is free, any write (sessions, meta values) below an eighth of
//! it. It also keeps a reserve file of a quarter of `min_free`, given up when the store opens on
//! a volume too full to open sled, so a server restarted on a full volume starts (read-only
//! until space returns) instead of refusing to.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::StoreError;

/// The reserve file, in the store's directory.
const RESERVE: &str = "reserve";

/// The data volume's free space, as the store watches it.
pub(crate) struct Space {
    dir: PathBuf,
    min_free: u64,
    /// The reserve file is in place.
    reserved: AtomicBool,
}

/// What the store knows of its volume's space (see [`crate::Store::space`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceReport {
    /// Bytes free for this process on the volume of the store's directory.
    pub free: u64,
    /// Bytes item writes keep free (`Options::min_free_bytes`).
    pub min_free: u64,
    /// Item writes are accepted (`free` is at least `min_free`).
    pub writable: bool,
}

/// Bytes free for an unprivileged writer on the volume holding `dir` (`None` if unknown).
fn available(dir: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

impl Space {
    /// Watches the volume of `dir`; before sled opens, gives up the reserve if the volume is too
    /// full to open on.
    pub fn open(dir: &Path, min_free: u64) -> Space {
        let space = Space {
            dir: dir.to_path_buf(),
            min_free,
            reserved: AtomicBool::new(dir.join(RESERVE).exists()),
        };
        if space.reserved.load(Ordering::SeqCst) && space.free() < space.floor() * 2 {
            match std::fs::remove_file(dir.join(RESERVE)) {
                Ok(()) => {
                    space.reserved.store(false, Ordering::SeqCst);
                    tracing::warn!(
                        dir = %dir.display(),
                        free = space.free(),
                        "the data volume is full: gave up the store's reserve file so it can open; saves are refused until space is freed"
                    );
                }
                Err(e) => tracing::warn!(error = %e, "cannot remove the store's reserve file"),
            }
        }
        space
    }

    /// Bytes free now (as good as unlimited when the volume cannot be asked).
    pub fn free(&self) -> u64 {
        available(&self.dir).unwrap_or(u64::MAX)
    }

    /// What any write keeps free.
    fn floor(&self) -> u64 {
        self.min_free / 8
    }

    fn reserve_bytes(&self) -> u64 {
        self.min_free / 4
    }

    pub fn report(&self) -> SpaceReport {
        let free = self.free();
        SpaceReport {
            free,
            min_free: self.min_free,
            writable: free >= self.min_free,
        }
    }

    /// Refuses a write when less than it needs is free: `min_free` for item writes, the floor
    /// for the rest. Once item writes are allowed again, puts the reserve back.
    pub fn check(&self, items: bool) -> Result<(), StoreError> {
        if self.min_free == 0 {
            return Ok(());
        }
        let need = if items { self.min_free } else { self.floor() };
        let free = self.free();
        if free < need {
            return Err(StoreError::Full {
                dir: self.dir.display().to_string(),
                free,
                need,
            });
        }
        if items && !self.reserved.load(Ordering::SeqCst) {
            self.make_reserve(free);
        }
        Ok(())
    }

    /// Writes the reserve file if there is room for it beside `min_free`.
    pub fn make_reserve(&self, free: u64) {
        let bytes = self.reserve_bytes();
        if self.min_free == 0 || free < self.min_free.saturating_add(bytes) {
            return;
        }
        if self.reserved.swap(true, Ordering::SeqCst) {
            return;
        }
        let path = self.dir.join(RESERVE);
        let made = std::fs::File::create(&path).and_then(|mut f| {
            // Written, not merely sized: a sparse file would reserve nothing.
            let chunk = vec![0u8; 1 << 20];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                f.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            f.sync_all()
        });
        if let Err(e) = made {
            let _ = std::fs::remove_file(&path);
            self.reserved.store(false, Ordering::SeqCst);
            tracing::warn!(error = %e, "cannot write the store's reserve file");
        }
    }
}
