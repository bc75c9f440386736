//! Folio's embedded store on sled: per collection, one tree of current items and one of superseded
//! revisions (the bounded history), then a change log with sequence numbers (the change feed reads
//! it), an index of current revisions, the outbox of edits waiting for the leader, and meta. It
//! knows no HTTP, token or cluster: the conflict rules it applies are handed in by its caller
//! ([`MergeRules`]).
//!
//! The house, one room a line:
//! - [`item`]: the stored shape of an item, its revisions and the revision rule `N-HASH`.
//! - `keys`: which tree holds what, and how keys and values are encoded.
//! - `edit`: users' edits (preconditions, new revisions), many written in one write.
//! - `read`: single items, listings, history, counts.
//! - `feed`: the change feed, its long-poll watch, digests and items by key.
//! - `merge`: the outbox, and other servers' revisions merged as the caller's rules decide.
//! - `import`: backups out and in.
//! - `commit`: the writer lock, planning a write, logging and making it, group commit.
//! - `journal`: how a write to several trees is made whole in sled.
//! - `wal`: the write-ahead log that makes an acknowledged write survive a power loss.
//! - `checkpoint`: replaying the log at open, and its background upkeep.
//!
//! Every write goes through one writer lock and is either recorded whole before it is made (see
//! `journal`) or, when it holds many items, made in one sled transaction, so an item, its history
//! entry, its change-log entry and the counters change together or, after a crash, are completed
//! together when the store opens. Readers of the change log read only up to a sequence number the
//! store has published ([`Store::watch_seq`]), which it does once the whole write is made. Every
//! write is also appended to the write-ahead log before it is made; a write is acknowledged only
//! after [`Store::durable`] has seen that log synced, and concurrent writers share one sync (group
//! commit). Large sled calls run on the blocking pool, never on the async runtime's threads.

mod checkpoint;
mod commit;
mod edit;
mod feed;
mod import;
pub mod item;
mod journal;
mod keys;
mod merge;
mod migrate;
mod read;
mod space;
mod wal;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

pub use checkpoint::CheckpointHealth;
pub use edit::{Edit, EditRequest, Precondition, Written};
pub use feed::{Change, DIGEST_BUCKETS, ItemHead, bucket_of};
pub use import::{ImportPolicy, ImportReport};
pub use item::{Collection, Content, Item, Revision};
pub use merge::{Applied, FeedAction, FeedMerge, Gaps, Held, MergeRules, PushMerge, Pushed};
pub use read::Page;
pub use space::SpaceReport;

use checkpoint::{Keeper, LogJob};
use commit::Writer;
use journal::Op;
use keys::{JOURNAL, META, META_INCARNATION, META_SEQ, N, read_u64};

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("revision mismatch: current revision is {current:?}")]
    PreconditionFailed { current: Option<String> },
    #[error("an item with this id already exists")]
    AlreadyExists,
    #[error("import refused: {0}")]
    ImportConflict(String),
    /// Another process holds the store's directory (sled's lock on it).
    #[error("another process is using the store (its lock is held)")]
    Locked,
    #[error("storage error: {0}")]
    Sled(sled::Error),
    #[error("stored record is unreadable: {0}")]
    Corrupt(String),
    #[error("write-ahead log: {0}")]
    Log(String),
    #[error("storage task failed: {0}")]
    Task(String),
    /// The data volume has less free space than the write needs (see the `space` module).
    #[error(
        "the data volume holding {dir} has {:.1} MiB free, and this write needs {:.1} MiB free there (store.min_free.mb for content, an eighth of it for sessions and settings): free space there, or lower store.min_free.mb",
        mib(*free),
        mib(*need)
    )]
    Full { dir: String, free: u64, need: u64 },
    /// A write failed for want of space despite the margin (another program filled the volume).
    #[error("no space left on the data volume: {0}")]
    NoSpace(String),
    /// Pushed lines of these items start above a revision this store lacks (see [`Gaps`]).
    #[error("pushed revisions skip revisions this store lacks")]
    LineGap(Vec<(Collection, String)>),
    /// A write only a leader makes (taking a push), when this server no longer leads (see
    /// [`Store::fence_leading`]).
    #[error("this server no longer leads")]
    NotLeading,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl From<sled::Error> for StoreError {
    /// A write sled could not make for want of space is told as such (see the `space` module).
    fn from(e: sled::Error) -> StoreError {
        match e {
            sled::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
                StoreError::NoSpace(io.to_string())
            }
            other => StoreError::Sled(other),
        }
    }
}

impl StoreError {
    /// The same error for another of the writes it failed together with.
    fn again(&self) -> StoreError {
        match self {
            StoreError::Sled(e) => StoreError::Sled(e.clone()),
            StoreError::Full { dir, free, need } => StoreError::Full {
                dir: dir.clone(),
                free: *free,
                need: *need,
            },
            StoreError::NoSpace(e) => StoreError::NoSpace(e.clone()),
            other => StoreError::Task(other.to_string()),
        }
    }
}

/// How a store is opened.
#[derive(Debug, Clone)]
pub struct Options {
    /// Bytes of sled's page cache.
    pub cache_bytes: u64,
    /// Revisions kept per item, the current one included.
    pub history_keep: usize,
    /// Collections whose superseded revisions are not kept at all.
    pub without_history: Vec<Collection>,
    /// Free bytes item writes keep on the data volume (0: no check; see the `space` module).
    pub min_free_bytes: u64,
}

/// Store calls on fewer items than this (recorded writes, short reads of the change log) may run
/// on the calling async thread (see [`Store::writing`]).
const INLINE_BELOW: usize = commit::TRANSACTION_FROM;

/// Locks a mutex, carrying on with its data when a holder panicked: every mutex here guards state
/// that is whole between statements.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    _keeper: Arc<Keeper>,
}

/// The store's state, shared by every handle and by the log's background thread.
struct Inner {
    db: sled::Db,
    /// The store's directory (sled's files, and the write-ahead log under `wal/`).
    dir: PathBuf,
    /// The data volume's free space.
    space: space::Space,
    /// The write-ahead log, held by [`Inner::commit`] while it logs and makes a write, so the
    /// log and sled see writes in the same order.
    wal: Mutex<wal::Wal>,
    /// The log file being appended to, for [`Store::durable_upto`] to sync without waiting for
    /// a write in progress.
    sync_file: Mutex<Arc<std::fs::File>>,
    /// Log files a checkpoint may remove once sled's own files are synced.
    retired: Mutex<Vec<PathBuf>>,
    /// Work for the log's background thread (see [`checkpoint::log_keeper`]).
    keeper: Mutex<std::sync::mpsc::Sender<LogJob>>,
    /// How that thread's checkpoints are going (see [`Store::checkpoint_health`]).
    checkpoints: Mutex<CheckpointHealth>,
    /// The trees, in the order `keys` gives them indices.
    trees: Vec<sled::Tree>,
    /// Revisions kept per item of each collection (indexed like the item trees).
    history_keep: [usize; N],
    /// Serialises writers so preconditions and revisions are computed on a stable state.
    write_lock: Mutex<()>,
    /// Per collection, bumped after every committed write of its items (see
    /// [`Store::writes_to`]).
    writes_to: [AtomicU64; N],
    /// Group commit: tickets handed to writes, and the highest ticket a finished log sync covers.
    written: AtomicU64,
    flushed: AtomicU64,
    /// Held by whoever syncs the log, so writers that arrive meanwhile share the next sync.
    flush_lock: tokio::sync::Mutex<()>,
    /// A recorded write failed part-way (a storage error): its record is completed by the next
    /// writer ([`Inner::writer`]) before it reads anything.
    unfinished: AtomicBool,
    /// A unique id of this store's life (see [`Store::incarnation`]).
    incarnation: String,
    /// The latest sequence number, for long-polls waiting on new changes.
    seq_tx: tokio::sync::watch::Sender<u64>,
    /// Whether this server leads, asked under the writer lock (see [`Store::fence_leading`]);
    /// unset on a server that stands alone.
    leads: std::sync::OnceLock<LeadCheck>,
}

/// Whether this server leads right now (see [`Store::fence_leading`]).
pub type LeadCheck = Arc<dyn Fn() -> bool + Send + Sync>;

impl Store {
    /// Fences the writes only a leader makes with `leads`, asked under the writer lock: while
    /// it answers false, a save meant to be committed here enters the outbox (pending, see
    /// [`Written::queued`]) and a push is refused with [`StoreError::NotLeading`]. With
    /// [`Store::barrier`] after leadership moves on, whatever this server wrote as leader is in
    /// the store before it compares itself with the next leader, and nothing it writes later
    /// is committed as if it still led. Set once; a store without it stands alone.
    pub fn fence_leading(&self, leads: LeadCheck) {
        let _ = self.inner.leads.set(leads);
    }

    /// Waits until no write is in progress: every write begun before is in the store.
    pub async fn barrier(&self) -> Result<(), StoreError> {
        self.writing(false, |_, _| Ok(())).await
    }

    /// Opens (or creates) the store in `dir`.
    pub async fn open(dir: &Path, options: Options) -> Result<Store, StoreError> {
        Self::open_with(dir, options, wal::ROTATE_BYTES).await
    }

    /// [`Store::open`], starting a new write-ahead log file every `rotate_bytes`.
    async fn open_with(
        dir: &Path,
        options: Options,
        rotate_bytes: u64,
    ) -> Result<Store, StoreError> {
        let dir = dir.to_path_buf();
        let (keeper, jobs) = std::sync::mpsc::channel();
        let inner = tokio::task::spawn_blocking(move || -> Result<Inner, StoreError> {
            std::fs::create_dir_all(&dir).map_err(|e| match e.kind() {
                std::io::ErrorKind::StorageFull => StoreError::NoSpace(e.to_string()),
                _ => StoreError::Sled(sled::Error::Io(e)),
            })?;
            let space = space::Space::open(&dir, options.min_free_bytes);
            let db = sled::Config::new()
                .path(&dir)
                .cache_capacity(options.cache_bytes)
                .open()
                .map_err(|e| match e {
                    // sled words a lock held elsewhere as an error of its own making.
                    sled::Error::Io(io)
                        if io.kind() == std::io::ErrorKind::WouldBlock
                            || io.to_string().starts_with("could not acquire lock") =>
                    {
                        StoreError::Locked
                    }
                    sled::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
                        StoreError::NoSpace(io.to_string())
                    }
                    other => StoreError::Sled(other),
                })?;
            let trees = keys::tree_names()
                .into_iter()
                .map(|name| db.open_tree(name))
                .collect::<Result<Vec<_>, _>>()?;
            let replayed = journal::replay(&trees, JOURNAL)?;
            if replayed > 0 {
                tracing::info!(
                    changes = replayed,
                    "completed a write interrupted by a stop"
                );
            }
            let next_lsn = checkpoint::redo_logged(&dir, &trees)?;
            let history_keep = Collection::ALL.map(|c| {
                if options.without_history.contains(&c) {
                    0
                } else {
                    options.history_keep
                }
            });
            // Before the old log goes: a migration cut short starts again from it.
            migrate::to_current(&db, &trees, &history_keep)?;
            let meta = &trees[META];
            let incarnation = match meta.get(META_INCARNATION)? {
                Some(v) => String::from_utf8_lossy(&v).into_owned(),
                None => {
                    let v = uuid::Uuid::new_v4().to_string();
                    meta.insert(META_INCARNATION, v.as_bytes())?;
                    v
                }
            };
            // Whatever opening changed is in sled's files before the old log goes.
            db.flush()?;
            wal::sync_sled(&dir)?;
            let wal_dir = dir.join("wal");
            wal::remove_all(&wal_dir)?;
            let wal = wal::Wal::create(&wal_dir, next_lsn, rotate_bytes)?;
            let last_seq = read_u64(meta.get(META_SEQ)?);
            space.make_reserve(space.free());
            Ok(Inner {
                seq_tx: tokio::sync::watch::Sender::new(last_seq),
                db,
                dir,
                space,
                sync_file: Mutex::new(wal.file()),
                wal: Mutex::new(wal),
                retired: Mutex::new(Vec::new()),
                keeper: Mutex::new(keeper),
                checkpoints: Mutex::default(),
                trees,
                history_keep,
                write_lock: Mutex::new(()),
                writes_to: Default::default(),
                written: AtomicU64::new(0),
                flushed: AtomicU64::new(0),
                flush_lock: tokio::sync::Mutex::new(()),
                unfinished: AtomicBool::new(false),
                incarnation,
                leads: std::sync::OnceLock::new(),
            })
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))??;
        let inner = Arc::new(inner);
        let weak = Arc::downgrade(&inner);
        let thread = std::thread::Builder::new()
            .name("folio-wal".into())
            .spawn(move || checkpoint::log_keeper(weak, jobs))
            .map_err(|e| StoreError::Task(format!("cannot start the log's thread: {e}")))?;
        let keeper = Keeper {
            jobs: lock(&inner.keeper).clone(),
            thread: Some(thread),
        };
        Ok(Store {
            inner,
            _keeper: Arc::new(keeper),
        })
    }

    /// The data volume's free space and whether item writes are accepted.
    pub fn space(&self) -> SpaceReport {
        self.inner.space.report()
    }

    /// How many holders of this store there are (this handle included): handles, and blocking
    /// tasks under way that outlived the call that started them. The store closes, and releases
    /// its directory, when the last goes.
    pub fn handles(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// A unique id of this store's life, made when it was created.
    pub fn incarnation(&self) -> &str {
        &self.inner.incarnation
    }

    /// Runs `f` on the blocking pool.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Runs the read `f` on the calling thread when it is `small` (a few lookups: sparing two
    /// thread hand-offs), else on the blocking pool.
    async fn reading<T, F>(&self, small: bool, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        if small {
            return f(&self.inner);
        }
        self.blocking(f).await
    }

    /// Runs `f` with the writer lock held. A `small` call (a few items, no flush: sled's inserts
    /// of them take microseconds) runs on the calling thread when the lock is free at once,
    /// sparing two thread hand-offs; otherwise, or while another writer holds the lock, it runs
    /// on the blocking pool, so an async worker never waits for a large write.
    async fn writing<T, F>(&self, small: bool, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner, Writer<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.with_writer(small, move |inner, writer| f(inner, writer?))
            .await
    }

    /// [`Store::writing`], handing `f` the outcome of taking the lock (an unfinished write
    /// that could not be completed is an error) for callers that answer it themselves.
    async fn with_writer<T, F>(&self, small: bool, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner, Result<Writer<'_>, StoreError>) -> Result<T, StoreError> + Send + 'static,
    {
        if small && let Some(writer) = self.inner.try_writer() {
            return f(&self.inner, writer);
        }
        self.blocking(move |inner| f(inner, inner.writer())).await
    }

    /// A small value in meta (keys, term, remembered members, the feed cursor).
    pub async fn meta_get(&self, key: &'static str) -> Result<Option<Vec<u8>>, StoreError> {
        self.blocking(move |inner| Ok(inner.trees[META].get(key.as_bytes())?.map(|v| v.to_vec())))
            .await
    }

    /// Sets a meta value (not waited on for durability: callers that need it call `durable`).
    pub async fn meta_set(&self, key: &'static str, value: Vec<u8>) -> Result<(), StoreError> {
        self.blocking(move |inner| {
            inner.commit_changes(vec![Op::set(META, key.as_bytes(), value)])?;
            Ok(())
        })
        .await
    }

    /// Removes a meta value.
    pub async fn meta_delete(&self, key: &'static str) -> Result<(), StoreError> {
        self.blocking(move |inner| {
            inner.commit_changes(vec![Op::remove(META, key.as_bytes())])?;
            Ok(())
        })
        .await
    }

    /// Sets a meta value only if it is unset; returns the value that is now stored. Durable.
    pub async fn meta_init(
        &self,
        key: &'static str,
        value: Vec<u8>,
    ) -> Result<Vec<u8>, StoreError> {
        let stored = self
            .writing(false, move |inner, _g| {
                if let Some(current) = inner.trees[META].get(key.as_bytes())? {
                    return Ok(current.to_vec());
                }
                inner.commit_changes(vec![Op::set(META, key.as_bytes(), value.clone())])?;
                Ok(value)
            })
            .await?;
        self.durable().await?;
        Ok(stored)
    }
}

#[cfg(test)]
mod tests;
