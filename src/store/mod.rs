//! The embedded store on sled: per collection, one tree of current items and one of superseded
//! revisions (the bounded history; each body is stored once), then a change log with sequence
//! numbers (the leader's change feed reads it) and meta (incarnation, sequence counter, item
//! counts, keys).
//!
//! Every write goes through one writer lock and is either recorded whole before it is made (see
//! the `journal` module) or, when it holds many items, made in one sled transaction, so an item, its
//! history entry, its change-log entry and the counters change together or, after a crash, are
//! completed together when the store opens. Readers of the change log read only up to a
//! sequence number the store has published ([`Store::watch_seq`]), which it does once the whole
//! write is made. Every write is also appended to the store's write-ahead log (the `wal`
//! module) before it is made; a write is acknowledged only after [`Store::durable`] has seen
//! that log synced, and concurrent writers share one sync (group commit). Users' saves that
//! arrive together also share one write. Large sled calls run on the blocking pool, never on
//! the async runtime's threads.

pub mod item;
mod journal;
mod sync;
mod wal;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use serde_json::Value;

use crate::lock;
use item::{ANCESTORS_KEEP, next_rev, now_rfc3339};
pub use item::{Collection, Content, Item, Revision};
use journal::Op;
pub use sync::{Applied, Change, DIGEST_BUCKETS, PushOutcome};

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
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored record is unreadable: {0}")]
    Corrupt(String),
    #[error("write-ahead log: {0}")]
    Log(String),
    #[error("storage task failed: {0}")]
    Task(String),
}

impl StoreError {
    /// The same error for another of the writes it failed together with.
    fn again(&self) -> StoreError {
        match self {
            StoreError::Sled(e) => StoreError::Sled(e.clone()),
            other => StoreError::Task(other.to_string()),
        }
    }
}

/// A change a user (or a restore) makes to an item.
#[derive(Debug, Clone)]
pub struct Edit {
    pub name: String,
    pub content: Value,
    pub deleted: bool,
    pub author: String,
    pub origin: String,
}

/// What must hold for an edit to be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// Apply whatever the current state.
    None,
    /// The item must exist (not deleted) at exactly this revision (`If-Match`).
    Rev(String),
    /// The item must not exist or be deleted (create).
    Absent,
    /// The item must exist and not be deleted (update, delete).
    Live,
}

/// What an import does with an item whose local revision diverges from the imported one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportPolicy {
    /// The imported revision becomes current; the local one stays in history.
    Replace,
    /// Refuse the whole import.
    Fail,
}

/// What an import did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ImportReport {
    pub written: usize,
    pub unchanged: usize,
    /// `collection/id` of items kept because this server holds a newer descendant.
    pub newer_here: Vec<String>,
    /// `collection/id` of items whose diverging local revision was replaced.
    pub replaced: Vec<String>,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<Item>,
    /// Pass back as `after` to continue; `None` on the last page.
    pub next: Option<String>,
}

const META_SEQ: &[u8] = b"seq";
const META_INCARNATION: &[u8] = b"incarnation";
const N: usize = Collection::ALL.len();
const CHANGES: usize = 2 * N;
const META: usize = 2 * N + 1;
/// `collection/id` → current revision: small, so digests never read item bodies.
const INDEX: usize = 2 * N + 2;
/// `collection/id` → revision waiting to be pushed to the leader.
const OUTBOX: usize = 2 * N + 3;
/// The write in progress, recorded whole (see [`journal`]).
const JOURNAL: usize = 2 * N + 4;

/// Writes of this many items or more are made in one sled transaction rather than recorded (see
/// [`journal`]): a transaction's cost hardly depends on its size, while a record's grows with its
/// bytes, and sled holds on to more memory after many items inserted one by one.
const TRANSACTION_FROM: usize = 32;

/// Store calls on fewer items than this (recorded writes, short reads of the change log) may run
/// on the calling async thread (see [`Store::writing`]).
const INLINE_BELOW: usize = TRANSACTION_FROM;

/// Items an import writes per transaction: large transactions make sled hold on to memory long
/// after they commit, and each batch is all-or-nothing anyway.
const IMPORT_BATCH: usize = 256;

/// The writer lock held (see [`Inner::writer`]).
type Writer<'a> = std::sync::MutexGuard<'a, ()>;

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    _keeper: Arc<Keeper>,
}

/// Shared by every [`Store`] handle: when the last one goes, stops the log's background thread
/// and waits for it, so that the store (and sled's lock on its directory) is released then, not
/// whenever a checkpoint in progress ends.
struct Keeper {
    jobs: std::sync::mpsc::Sender<LogJob>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Keeper {
    fn drop(&mut self) {
        let _ = self.jobs.send(LogJob::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Inner {
    db: sled::Db,
    /// The store's directory (sled's files, and the write-ahead log under `wal/`).
    dir: PathBuf,
    /// The write-ahead log, held by [`Inner::commit`] while it logs and makes a write, so the
    /// log and sled see writes in the same order.
    wal: std::sync::Mutex<wal::Wal>,
    /// The log file being appended to, for [`Store::durable_upto`] to sync without waiting for
    /// a write in progress.
    sync_file: std::sync::Mutex<Arc<std::fs::File>>,
    /// Log files a checkpoint may remove once sled's own files are synced.
    retired: std::sync::Mutex<Vec<PathBuf>>,
    /// Work for the log's background thread (see [`log_keeper`]).
    keeper: std::sync::Mutex<std::sync::mpsc::Sender<LogJob>>,
    /// items per collection, then history per collection, then changes, then meta.
    trees: Vec<sled::Tree>,
    history_keep: usize,
    /// Serialises writers so preconditions and revisions are computed on a stable state.
    write_lock: std::sync::Mutex<()>,
    /// Saves waiting to be written; whoever holds `write_lock` next writes them all together.
    pending: std::sync::Mutex<Vec<PendingSave>>,
    /// Where written saves bound for the leader go (the follower's pusher).
    push_sink: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<ToPush>>>,
    /// Bumped after every committed write of a user or a session (see
    /// [`Store::accounts_version`]).
    accounts: AtomicU64,
    /// Group commit: tickets handed to writes, and the highest ticket a finished log sync covers.
    written: AtomicU64,
    flushed: AtomicU64,
    flush_lock: tokio::sync::Mutex<()>,
    /// A recorded write failed part-way (a storage error): its record is completed by the next
    /// writer ([`Inner::writer`]) before it reads anything.
    unfinished: std::sync::atomic::AtomicBool,
    incarnation: String,
    /// The latest sequence number, for long-polls waiting on new changes.
    seq_tx: tokio::sync::watch::Sender<u64>,
}

/// One item write of a group written together.
struct Write {
    coll: Collection,
    item: Item,
    prev: Option<Item>,
    /// Queue the new revision for pushing to the leader.
    outbox: bool,
}

/// Where the leader's answer to a pushed save goes (`Err` when the push failed).
pub type PushReply = tokio::sync::oneshot::Sender<Result<PushOutcome, ()>>;

/// A written save on its way to the leader: handed to the push sink (see
/// [`Store::set_push_sink`]) by whichever writer wrote it.
pub struct ToPush {
    pub collection: Collection,
    pub item: Item,
    /// The store's [`Store::ticket`] once the save was written.
    pub ticket: u64,
    pub reply: PushReply,
}

/// The answer to a queued save: the item written, whether it replaced a live one, and the
/// store's [`Store::ticket`] once it was written (for [`Store::durable_upto`]).
pub type Saved = tokio::sync::oneshot::Receiver<Result<(Item, bool, u64), StoreError>>;

/// A user's save waiting for the next group write, and where its answers go.
struct PendingSave {
    coll: Collection,
    id: String,
    edit: Edit,
    pre: Precondition,
    queue: bool,
    reply: tokio::sync::oneshot::Sender<Result<(Item, bool, u64), StoreError>>,
    /// Set when the written save is to be pushed to the leader at once.
    push: Option<PushReply>,
}

fn key_of(coll: Collection, id: &str) -> String {
    format!("{}/{}", coll.as_str(), id)
}

fn parse_key(key: &[u8]) -> Option<(Collection, String)> {
    let s = std::str::from_utf8(key).ok()?;
    let (c, id) = s.split_once('/')?;
    Some((Collection::parse(c)?, id.to_string()))
}

/// A change-log entry: the item's `collection/id`, then its revision and deletion flag, NUL
/// separated, so that readers wanting only those (the user change feed) never read the item.
fn change_entry(key: &str, item: &Item) -> Vec<u8> {
    let mut v = Vec::with_capacity(key.len() + item.rev.len() + 3);
    v.extend_from_slice(key.as_bytes());
    v.push(0);
    v.extend_from_slice(item.rev.as_bytes());
    v.push(0);
    v.push(if item.deleted { b'1' } else { b'0' });
    v
}

/// An item's revision and whether it is deleted, as a change-log entry carries them.
type Head = (String, bool);

/// A change-log entry's item, and its revision and deletion flag when the entry carries them
/// (entries written by earlier versions hold the key alone).
fn parse_change(entry: &[u8]) -> Option<(Collection, String, Option<Head>)> {
    let mut parts = entry.split(|b| *b == 0);
    let (coll, id) = parse_key(parts.next()?)?;
    let head = match (parts.next(), parts.next()) {
        (Some(rev), Some(deleted)) => {
            Some((String::from_utf8(rev.to_vec()).ok()?, deleted == b"1"))
        }
        _ => None,
    };
    Some((coll, id, head))
}

fn idx(c: Collection) -> usize {
    Collection::ALL.iter().position(|x| *x == c).unwrap_or(0)
}

fn count_key(c: Collection) -> Vec<u8> {
    format!("count/{}", c.as_str()).into_bytes()
}

fn hist_prefix(id: &str) -> Vec<u8> {
    let mut k = id.as_bytes().to_vec();
    k.push(0);
    k
}

fn hist_key(item: &Item) -> Vec<u8> {
    let mut k = hist_prefix(&item.id);
    k.extend_from_slice(&item.generation().to_be_bytes());
    k.extend_from_slice(
        item.rev
            .split_once('-')
            .map(|(_, h)| h)
            .unwrap_or("")
            .as_bytes(),
    );
    k
}

/// What a queued save was answered (see [`Saved`]), its writer gone unanswering included.
pub fn answered(
    received: Result<Result<(Item, bool, u64), StoreError>, tokio::sync::oneshot::error::RecvError>,
) -> Result<(Item, bool, u64), StoreError> {
    received.map_err(|_| StoreError::Task("the save was dropped unanswered".into()))?
}

fn read_u64(v: Option<sled::IVec>) -> u64 {
    v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("stored records always serialise")
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub async fn open(
        dir: &Path,
        cache_bytes: u64,
        history_keep: usize,
    ) -> Result<Store, StoreError> {
        Self::open_with(dir, cache_bytes, history_keep, wal::ROTATE_BYTES).await
    }

    /// [`Store::open`], starting a new write-ahead log file every `rotate_bytes`.
    async fn open_with(
        dir: &Path,
        cache_bytes: u64,
        history_keep: usize,
        rotate_bytes: u64,
    ) -> Result<Store, StoreError> {
        let dir = dir.to_path_buf();
        let (keeper, jobs) = std::sync::mpsc::channel();
        let inner = tokio::task::spawn_blocking(move || -> Result<Inner, StoreError> {
            let db = sled::Config::new()
                .path(&dir)
                .cache_capacity(cache_bytes)
                .open()?;
            let mut trees = Vec::with_capacity(JOURNAL + 1);
            for c in Collection::ALL {
                trees.push(db.open_tree(format!("items/{}", c.as_str()))?);
            }
            for c in Collection::ALL {
                trees.push(db.open_tree(format!("history/{}", c.as_str()))?);
            }
            trees.push(db.open_tree("changes")?);
            trees.push(db.open_tree("meta")?);
            trees.push(db.open_tree("index")?);
            trees.push(db.open_tree("outbox")?);
            trees.push(db.open_tree("journal")?);
            let replayed = journal::replay(&trees, JOURNAL)?;
            if replayed > 0 {
                tracing::info!(
                    changes = replayed,
                    "completed a write interrupted by a stop"
                );
            }
            let next_lsn = redo_logged(&dir, &trees)?;
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
            Ok(Inner {
                seq_tx: tokio::sync::watch::Sender::new(last_seq),
                db,
                dir,
                sync_file: std::sync::Mutex::new(wal.file()),
                wal: std::sync::Mutex::new(wal),
                retired: std::sync::Mutex::new(Vec::new()),
                keeper: std::sync::Mutex::new(keeper),
                trees,
                history_keep,
                write_lock: std::sync::Mutex::new(()),
                pending: std::sync::Mutex::new(Vec::new()),
                push_sink: std::sync::Mutex::new(None),
                accounts: AtomicU64::new(0),
                written: AtomicU64::new(0),
                flushed: AtomicU64::new(0),
                flush_lock: tokio::sync::Mutex::new(()),
                unfinished: std::sync::atomic::AtomicBool::new(false),
                incarnation,
            })
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))??;
        let inner = Arc::new(inner);
        let weak = Arc::downgrade(&inner);
        let thread = std::thread::Builder::new()
            .name("folio-wal".into())
            .spawn(move || log_keeper(weak, jobs))
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

    /// A unique id of this store's life, made when it was created.
    pub fn incarnation(&self) -> &str {
        &self.inner.incarnation
    }

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

    /// A number that changes after every write of a user or a session, so whatever was read of
    /// them under one number is still current while it holds.
    pub fn accounts_version(&self) -> u64 {
        self.inner.accounts.load(Ordering::SeqCst)
    }

    /// The store's position in its write order: every write that has returned lies at or before
    /// it. Pass it to [`Store::durable_upto`] later to wait for exactly those writes.
    pub fn ticket(&self) -> u64 {
        self.inner.written.load(Ordering::SeqCst)
    }

    /// Waits until every write made before this call is on disk. Writers that arrive while a flush
    /// runs share the next one.
    pub async fn durable(&self) -> Result<(), StoreError> {
        self.durable_upto(self.ticket()).await
    }

    /// Waits until every write up to `ticket` (from [`Store::ticket`]) is on disk; answers at
    /// once when a flush since has covered it, so whoever flushes for a group of writes spares
    /// each of them its own flush.
    pub async fn durable_upto(&self, ticket: u64) -> Result<(), StoreError> {
        if self.inner.flushed.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        let _guard = self.inner.flush_lock.lock().await;
        if self.inner.flushed.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        // Writes count themselves once logged, so every write counted here is in the sync (an
        // older log file was synced before the current one started).
        let upto = self.inner.written.load(Ordering::SeqCst);
        let file = lock(&self.inner.sync_file).clone();
        self.blocking(move |inner| {
            file.sync_data()
                .map_err(|e| StoreError::Log(format!("sync in {}: {e}", inner.dir.display())))
        })
        .await?;
        self.inner.flushed.fetch_max(upto, Ordering::SeqCst);
        Ok(())
    }

    /// Applies a local edit (with `queue`, the new revision also enters the outbox, atomically, to
    /// be pushed to the leader) and answers the new current item and whether it replaced a live
    /// one, before it is on disk: the caller awaits [`Store::durable`] before acknowledging it.
    pub async fn write_edit(
        &self,
        coll: Collection,
        id: String,
        edit: Edit,
        pre: Precondition,
        queue: bool,
    ) -> Result<(Item, bool), StoreError> {
        let saved = self.enqueue_save(coll, id, edit, pre, queue, None);
        // Writes this save together with every save waiting beside it, unless a writer already
        // took it (which then answers it).
        self.write_pending().await?;
        let (item, replaced, _) = answered(saved.await)?;
        Ok((item, replaced))
    }

    /// Queues a save for the next group write (see [`Store::write_pending`]) without writing it.
    /// With `push`, the written save is handed to the push sink, which answers `push` with the
    /// leader's verdict (or at once with `Err` when there is no sink).
    pub fn enqueue_save(
        &self,
        coll: Collection,
        id: String,
        edit: Edit,
        pre: Precondition,
        queue: bool,
        push: Option<PushReply>,
    ) -> Saved {
        let (reply, saved) = tokio::sync::oneshot::channel();
        lock(&self.inner.pending).push(PendingSave {
            coll,
            id,
            edit,
            pre,
            queue,
            reply,
            push,
        });
        saved
    }

    /// Writes every queued save in one write (a second save of an item waits for the
    /// next call) and answers each. A save another writer has taken is answered by that writer.
    pub async fn write_pending(&self) -> Result<(), StoreError> {
        let queued = lock(&self.inner.pending).len();
        if queued == 0 {
            return Ok(());
        }
        self.with_writer(queued < INLINE_BELOW, |inner, writer| {
            inner.write_pending(writer);
            Ok(())
        })
        .await
    }

    /// Whether saves wait in the queue for [`Store::write_pending`].
    pub fn has_pending(&self) -> bool {
        !lock(&self.inner.pending).is_empty()
    }

    /// Sets where written saves bound for the leader go (see [`Store::enqueue_save`]).
    pub fn set_push_sink(&self, sink: tokio::sync::mpsc::UnboundedSender<ToPush>) {
        *lock(&self.inner.push_sink) = Some(sink);
    }

    /// The current item, tombstones included.
    pub async fn get(&self, coll: Collection, id: String) -> Result<Option<Item>, StoreError> {
        // One lookup: read on the calling thread (see [`Store::writing`]).
        self.inner.get(coll, &id)
    }

    /// The current item when it exists and is not deleted.
    pub async fn get_live(&self, coll: Collection, id: String) -> Result<Item, StoreError> {
        match self.get(coll, id).await? {
            Some(item) if !item.deleted => Ok(item),
            _ => Err(StoreError::NotFound),
        }
    }

    /// Live items in id order, starting after `after`.
    pub async fn list(
        &self,
        coll: Collection,
        after: Option<String>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        self.blocking(move |inner| inner.list(coll, after.as_deref(), limit))
            .await
    }

    /// The kept revisions of an item, newest first.
    pub async fn history(&self, coll: Collection, id: String) -> Result<Vec<Revision>, StoreError> {
        self.blocking(move |inner| inner.history(coll, &id)).await
    }

    /// One kept revision of an item.
    pub async fn revision(
        &self,
        coll: Collection,
        id: String,
        rev: String,
    ) -> Result<Revision, StoreError> {
        self.blocking(move |inner| {
            inner
                .history(coll, &id)?
                .into_iter()
                .find(|r| r.rev == rev)
                .ok_or(StoreError::NotFound)
        })
        .await
    }

    /// Live items per collection.
    pub async fn counts(&self) -> Result<Vec<(Collection, u64)>, StoreError> {
        self.blocking(|inner| {
            Collection::ALL
                .into_iter()
                .map(|c| Ok((c, read_u64(inner.trees[META].get(count_key(c))?))))
                .collect()
        })
        .await
    }

    /// The sequence number of the latest write (0 for an empty store).
    pub async fn last_seq(&self) -> Result<u64, StoreError> {
        self.blocking(|inner| Ok(read_u64(inner.trees[META].get(META_SEQ)?)))
            .await
    }

    /// Bytes the store occupies on disk.
    pub async fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.blocking(|inner| inner.db.size_on_disk().map_err(StoreError::from))
            .await
    }

    /// A small value in meta (keys, term, remembered members).
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

    /// Every item of the exported collections, tombstones included, in collection then id order.
    pub fn export_iter(
        &self,
    ) -> impl Iterator<Item = Result<(Collection, Item), StoreError>> + Send + 'static {
        let trees: Vec<(Collection, sled::Tree)> = Collection::ALL
            .into_iter()
            .filter(|c| c.exported())
            .map(|c| (c, self.inner.trees[idx(c)].clone()))
            .collect();
        trees.into_iter().flat_map(|(c, t)| {
            t.iter().map(move |kv| {
                let (_, v) = kv?;
                Ok((c, decode::<Item>(&v)?))
            })
        })
    }

    /// Writes imported items, in transactions of `IMPORT_BATCH` items once every item has been
    /// checked (so a refused import writes nothing, and an interrupted one completes when run
    /// again, since identical revisions are skipped). An item is written when this server does
    /// not have it or has an ancestor of it; identical revisions are skipped, and so are items this
    /// server holds newer descendants of. An item whose local revision diverges replaces it under
    /// [`ImportPolicy::Replace`] (the local revision stays readable in the item's history) and
    /// refuses the whole import under [`ImportPolicy::Fail`].
    pub async fn import(
        &self,
        items: Vec<(Collection, Item)>,
        policy: ImportPolicy,
    ) -> Result<ImportReport, StoreError> {
        let res = self
            .blocking(move |inner| inner.import(items, policy))
            .await?;
        self.durable().await?;
        Ok(res)
    }
}

impl Inner {
    fn get(&self, coll: Collection, id: &str) -> Result<Option<Item>, StoreError> {
        self.read_as(coll, id)
    }

    /// The current item `id` of `coll` decoded as `T` (the whole item, or only its head).
    fn read_as<T: serde::de::DeserializeOwned>(
        &self,
        coll: Collection,
        id: &str,
    ) -> Result<Option<T>, StoreError> {
        self.trees[idx(coll)]
            .get(id.as_bytes())?
            .map(|v| decode(&v))
            .transpose()
    }

    fn list(
        &self,
        coll: Collection,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let tree = &self.trees[idx(coll)];
        let iter = match after {
            Some(a) => tree.range::<&[u8], _>((
                std::ops::Bound::Excluded(a.as_bytes()),
                std::ops::Bound::Unbounded,
            )),
            None => tree.iter(),
        };
        let mut items = Vec::new();
        let mut more = false;
        for kv in iter {
            let (_, v) = kv?;
            let item: Item = decode(&v)?;
            if item.deleted {
                continue;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(item);
        }
        let next = if more {
            items.last().map(|i| i.id.clone())
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// The current revision, then the superseded ones the history tree keeps, newest first.
    fn history(&self, coll: Collection, id: &str) -> Result<Vec<Revision>, StoreError> {
        let tree = &self.trees[N + idx(coll)];
        let mut out: Vec<Revision> = self
            .get(coll, id)?
            .map(|c| c.revision())
            .into_iter()
            .collect();
        for kv in tree.scan_prefix(hist_prefix(id)).rev() {
            let (_, v) = kv?;
            let r: Revision = decode(&v)?;
            // Stores written by earlier versions also kept the current revision here.
            if out.first().is_none_or(|c| c.rev != r.rev) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Writes the waiting saves in one write (a second save of an item waits for the next
    /// one, so each precondition is checked against committed state) and answers each.
    fn write_pending(&self, writer: Result<Writer<'_>, StoreError>) {
        let taken = std::mem::take(&mut *lock(&self.pending));
        if taken.is_empty() {
            return;
        }
        let _g = match writer {
            Ok(g) => g,
            Err(e) => {
                for p in taken {
                    let _ = p.reply.send(Err(e.again()));
                }
                return;
            }
        };
        let mut keys = HashSet::new();
        let mut later = Vec::new();
        let mut writes = Vec::new();
        let mut replies = Vec::new();
        for p in taken {
            if writes.len() == IMPORT_BATCH || !keys.insert((p.coll, p.id.clone())) {
                later.push(p);
                continue;
            }
            match self.prepare(p.coll, &p.id, p.edit, &p.pre, p.queue) {
                Ok((write, replaced)) => {
                    writes.push(write);
                    replies.push((p.reply, replaced, p.push.map(|r| (p.coll, r))));
                }
                Err(e) => {
                    let _ = p.reply.send(Err(e));
                }
            }
        }
        if !later.is_empty() {
            // Each of these saves still has its own call of this function to come.
            lock(&self.pending).splice(0..0, later);
        }
        match self.write(writes) {
            Ok(items) => {
                let ticket = self.written.load(Ordering::SeqCst);
                let sink = lock(&self.push_sink).clone();
                for ((reply, replaced, push), item) in replies.into_iter().zip(items) {
                    if let Some((collection, push)) = push {
                        let to_push = ToPush {
                            collection,
                            item: item.clone(),
                            ticket,
                            reply: push,
                        };
                        let undelivered = match &sink {
                            Some(sink) => sink.send(to_push).err().map(|back| back.0),
                            None => Some(to_push),
                        };
                        if let Some(p) = undelivered {
                            let _ = p.reply.send(Err(()));
                        }
                    }
                    let _ = reply.send(Ok((item, replaced, ticket)));
                }
            }
            Err(e) => {
                for (reply, ..) in replies {
                    let _ = reply.send(Err(e.again()));
                }
            }
        }
    }

    /// The write a save makes on the current state, and whether it replaces a live item;
    /// refused when its precondition does not hold.
    fn prepare(
        &self,
        coll: Collection,
        id: &str,
        edit: Edit,
        pre: &Precondition,
        queue: bool,
    ) -> Result<(Write, bool), StoreError> {
        let current = self.get(coll, id)?;
        let live = current.as_ref().filter(|c| !c.deleted);
        match pre {
            Precondition::None => {}
            Precondition::Rev(r) => {
                if live.map(|c| &c.rev) != Some(r) {
                    return Err(StoreError::PreconditionFailed {
                        current: live.map(|c| c.rev.clone()),
                    });
                }
            }
            Precondition::Absent if live.is_some() => return Err(StoreError::AlreadyExists),
            Precondition::Live if live.is_none() => return Err(StoreError::NotFound),
            Precondition::Absent | Precondition::Live => {}
        }
        let parent = current.as_ref().map(|c| c.rev.as_str());
        let rev = next_rev(parent, &edit.name, edit.deleted, &edit.content);
        let ancestors = match &current {
            Some(c) => std::iter::once(c.rev.clone())
                .chain(c.ancestors.iter().cloned())
                .take(ANCESTORS_KEEP)
                .collect(),
            None => Vec::new(),
        };
        let item = Item {
            id: id.to_string(),
            name: edit.name,
            content: Content::of(&edit.content),
            rev,
            updated_at: now_rfc3339(),
            updated_by: edit.author,
            origin: edit.origin,
            deleted: edit.deleted,
            ancestors,
            seq: 0,
        };
        let replaced = live.is_some();
        Ok((
            Write {
                coll,
                item,
                prev: current,
                outbox: queue,
            },
            replaced,
        ))
    }

    fn import(
        &self,
        items: Vec<(Collection, Item)>,
        policy: ImportPolicy,
    ) -> Result<ImportReport, StoreError> {
        let _g = self.writer()?;
        let mut writes = Vec::new();
        let mut report = ImportReport::default();
        for (coll, item) in items {
            let key = format!("{}/{}", coll.as_str(), item.id);
            match self.get(coll, &item.id)? {
                None => writes.push(Write {
                    coll,
                    item,
                    prev: None,
                    outbox: false,
                }),
                Some(cur) if cur.rev == item.rev => report.unchanged += 1,
                Some(cur) if item.descends_from(&cur.rev) => writes.push(Write {
                    coll,
                    item,
                    prev: Some(cur),
                    outbox: false,
                }),
                Some(cur) if cur.descends_from(&item.rev) => report.newer_here.push(key),
                Some(cur) => {
                    report.replaced.push(key);
                    writes.push(Write {
                        coll,
                        item,
                        prev: Some(cur),
                        outbox: false,
                    });
                }
            }
        }
        if policy == ImportPolicy::Fail && !report.replaced.is_empty() {
            let shown: Vec<_> = report.replaced.iter().take(10).cloned().collect();
            return Err(StoreError::ImportConflict(format!(
                "{} item(s) differ from this server's own edits: {}",
                report.replaced.len(),
                shown.join(", ")
            )));
        }
        report.written = writes.len();
        let mut writes = writes.into_iter().peekable();
        while writes.peek().is_some() {
            self.write(writes.by_ref().take(IMPORT_BATCH).collect())?;
        }
        Ok(report)
    }

    /// Takes the writer lock, first completing a write that failed part-way (so what the caller
    /// reads to plan its own write is whole) and publishing the sequence number it reached.
    fn writer(&self) -> Result<Writer<'_>, StoreError> {
        self.finish_unfinished(lock(&self.write_lock))
    }

    /// [`Inner::writer`] when the lock is free at once; `None` when another writer holds it.
    fn try_writer(&self) -> Option<Result<Writer<'_>, StoreError>> {
        let g = match self.write_lock.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(self.finish_unfinished(g))
    }

    /// With the writer lock `g` held: completes a recorded write that failed part-way, if any.
    fn finish_unfinished<'a>(&self, g: Writer<'a>) -> Result<Writer<'a>, StoreError> {
        if self.unfinished.load(Ordering::SeqCst) {
            journal::replay(&self.trees, JOURNAL)?;
            self.unfinished.store(false, Ordering::SeqCst);
            self.seq_tx
                .send_replace(read_u64(self.trees[META].get(META_SEQ)?));
        }
        Ok(g)
    }

    /// Writes items with their history, change-log, index and outbox entries as one whole (a
    /// write a crash cuts short is completed when the store opens); callers hold the lock
    /// [`Inner::writer`] gives.
    fn write(&self, writes: Vec<Write>) -> Result<Vec<Item>, StoreError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let (ops, out, seq) = self.plan(&writes)?;
        let how = if writes.len() >= TRANSACTION_FROM {
            Commit::Transaction
        } else {
            Commit::Recorded
        };
        self.commit(ops, how)?;
        self.written.fetch_add(1, Ordering::SeqCst);
        if writes
            .iter()
            .any(|w| matches!(w.coll, Collection::Users | Collection::Sessions))
        {
            self.accounts.fetch_add(1, Ordering::SeqCst);
        }
        self.seq_tx.send_replace(seq);
        let mut pruned = HashSet::new();
        let mut prunes = Vec::new();
        for w in writes.iter().filter(|w| w.prev.is_some()) {
            if pruned.insert((w.coll, w.item.id.as_str())) {
                self.prune_history(w.coll, &w.item.id, w.item.generation(), &mut prunes)?;
            }
        }
        self.commit_changes(prunes)?;
        Ok(out)
    }

    /// The changes `writes` make to the trees, in the order they are made (a superseded
    /// revision enters history before the item changes; the change log and the sequence number
    /// come last, so whoever reads the sequence number finds every change up to it complete),
    /// the items as written and the last sequence number.
    fn plan(&self, writes: &[Write]) -> Result<(Vec<Op>, Vec<Item>, u64), StoreError> {
        let t = &self.trees;
        let mut seq = read_u64(t[META].get(META_SEQ)?);
        let mut deltas = [0i64; N];
        let mut ops = Vec::with_capacity(writes.len() * 6 + 2);
        let mut out = Vec::with_capacity(writes.len());
        for w in writes {
            let i = idx(w.coll);
            seq += 1;
            let mut item = w.item.clone();
            item.seq = seq;
            let key = key_of(w.coll, &item.id);
            if let Some(p) = w.prev.as_ref().filter(|p| p.rev != item.rev) {
                ops.push(Op::set(N + i, hist_key(p), encode(&p.revision())));
            }
            ops.push(Op::set(i, item.id.as_bytes(), encode(&item)));
            ops.push(Op::set(INDEX, key.as_bytes(), item.rev.as_bytes()));
            if w.outbox {
                ops.push(Op::set(OUTBOX, key.as_bytes(), item.rev.as_bytes()));
            }
            if let Some(p) = &w.prev {
                ops.push(Op::remove(CHANGES, p.seq.to_be_bytes()));
            }
            ops.push(Op::set(
                CHANGES,
                seq.to_be_bytes(),
                change_entry(&key, &item),
            ));
            let was_live = w.prev.as_ref().is_some_and(|p| !p.deleted);
            deltas[i] += i64::from(!item.deleted) - i64::from(was_live);
            out.push(item);
        }
        for c in Collection::ALL {
            let d = deltas[idx(c)];
            if d != 0 {
                let cur = read_u64(t[META].get(count_key(c))?) as i64;
                ops.push(Op::set(
                    META,
                    count_key(c),
                    ((cur + d).max(0) as u64).to_be_bytes(),
                ));
            }
        }
        ops.push(Op::set(META, META_SEQ, seq.to_be_bytes()));
        Ok((ops, out, seq))
    }

    /// Drops history older than the last `content.history.keep` revisions, the current one (of
    /// `generation`) included: a superseded revision stays while its generation is within that
    /// many of the current one (idempotent; a crash only leaves extra entries). Only the few
    /// entries to drop are read; their removals are added to `prunes`.
    fn prune_history(
        &self,
        coll: Collection,
        id: &str,
        generation: u64,
        prunes: &mut Vec<Op>,
    ) -> Result<(), StoreError> {
        let tree = &self.trees[N + idx(coll)];
        let keep = if coll == Collection::Sessions {
            0
        } else {
            self.history_keep.saturating_sub(1) as u64
        };
        let below = generation.saturating_sub(keep);
        if below <= 1 {
            // Generations start at 1: nothing is old enough yet.
            return Ok(());
        }
        let start = hist_prefix(id);
        let mut end = start.clone();
        end.extend_from_slice(&below.to_be_bytes());
        prunes.extend(
            tree.range(start..end)
                .filter_map(|kv| kv.ok().map(|(k, _)| Op::remove(N + idx(coll), k.to_vec()))),
        );
        Ok(())
    }

    /// Commits changes that each stand on their own ([`Commit::Plain`]) as one write, if any.
    fn commit_changes(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.commit(ops, Commit::Plain)?;
        self.written.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Logs `ops` in the write-ahead log, then makes them as `how` says, the log sequence
    /// number set in meta last (see the `wal` module). Writers that plan on the current state
    /// hold the writer lock around this; a lone meta value need not. A recorded write that
    /// fails part-way is completed by the next writer ([`Inner::writer`]); any other write that
    /// fails once logged may still be made when the store next opens, as if it had succeeded
    /// (it was never acknowledged).
    fn commit(&self, mut ops: Vec<Op>, how: Commit) -> Result<(), StoreError> {
        let mut log = lock(&self.wal);
        let lsn = log.next_lsn();
        ops.push(Op::set(META, wal::META_APPLIED, lsn.to_be_bytes()));
        log.append(lsn, &ops)?;
        match how {
            Commit::Transaction => journal::write_in_transaction(&self.trees, &ops)?,
            Commit::Recorded => {
                if let Err(e) = journal::write(&self.trees, JOURNAL, ops) {
                    self.unfinished.store(true, Ordering::SeqCst);
                    return Err(e);
                }
            }
            Commit::Plain => journal::apply(&self.trees, ops)?,
        }
        if log.wants_spare() {
            let _ = lock(&self.keeper).send(LogJob::Spare);
        }
        if log.full() {
            match log.rotate() {
                Ok(old) => {
                    *lock(&self.sync_file) = log.file();
                    drop(log);
                    lock(&self.retired).push(old);
                    let _ = lock(&self.keeper).send(LogJob::Checkpoint);
                }
                // The write is made and logged: the log goes on in the same file, and the next
                // write tries again.
                Err(e) => tracing::error!(error = %e, "cannot start a new write-ahead log file"),
            }
        }
        Ok(())
    }
}

/// How [`Inner::commit`] makes a write's changes in sled.
#[derive(Clone, Copy)]
enum Commit {
    /// Recorded whole first (see `journal`), for changes that must be seen together.
    Recorded,
    /// In one sled transaction, for large writes.
    Transaction,
    /// One by one: each change stands on its own (removing old history, a meta value).
    Plain,
}

/// Makes again, in order, the logged writes sled does not hold whole (those above the log
/// sequence number sled has); answers the number the next write gets.
fn redo_logged(dir: &Path, trees: &[sled::Tree]) -> Result<u64, StoreError> {
    let applied = read_u64(trees[META].get(wal::META_APPLIED)?);
    let mut last = applied;
    let mut redone = 0;
    wal::replay(&dir.join("wal"), |lsn, payload| {
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
enum LogJob {
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
fn log_keeper(store: Weak<Inner>, jobs: std::sync::mpsc::Receiver<LogJob>) {
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
                tracing::error!(error = %e, "checkpoint failed; the write-ahead log is kept");
                lock(&inner.retired).splice(0..0, retired);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn edit(name: &str) -> Edit {
        Edit {
            name: name.into(),
            content: json!({ "name": name }),
            deleted: false,
            author: "tester".into(),
            origin: "here".into(),
        }
    }

    async fn open(dir: &Path) -> Store {
        Store::open(dir, 1 << 20, 10).await.unwrap()
    }

    /// Makes a write (a new revision of `a` and a new item `b`, both queued for the leader) stop
    /// after its record and the first two of its changes reached the disk; answers the items it
    /// was to write.
    async fn cut_short(store: &Store) -> Vec<Item> {
        let wb = Collection::Workbooks;
        let inner = store.inner.clone();
        let (written, made) = tokio::task::spawn_blocking(move || {
            let _g = lock(&inner.write_lock);
            let writes = vec![
                inner
                    .prepare(wb, "a", edit("a2"), &Precondition::None, true)
                    .unwrap()
                    .0,
                inner
                    .prepare(wb, "b", edit("b1"), &Precondition::None, true)
                    .unwrap()
                    .0,
            ];
            let (ops, out, _) = inner.plan(&writes).unwrap();
            let made = ops.len();
            inner.trees[JOURNAL]
                .insert(journal::KEY, journal::encode(&ops))
                .unwrap();
            journal::apply(&inner.trees, ops.into_iter().take(2).collect()).unwrap();
            inner.db.flush().unwrap();
            (out, made)
        })
        .await
        .unwrap();
        assert!(made > 2, "the write makes more changes than the two made");
        written
    }

    /// A store holding `a`, then a write cut short as a storage error part-way through a recorded
    /// write leaves it (see [`cut_short`]); answers the items that write was to make.
    async fn failed_part_way(dir: &Path) -> (Store, Vec<Item>) {
        let store = open(dir).await;
        store
            .write_edit(
                Collection::Workbooks,
                "a".into(),
                edit("a1"),
                Precondition::None,
                false,
            )
            .await
            .unwrap();
        let written = cut_short(&store).await;
        store.inner.unfinished.store(true, Ordering::SeqCst);
        (store, written)
    }

    #[tokio::test]
    async fn a_write_that_failed_part_way_is_completed_before_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let (store, written) = failed_part_way(dir.path()).await;
        let wb = Collection::Workbooks;
        let (c, _) = store
            .write_edit(wb, "c".into(), edit("c1"), Precondition::None, false)
            .await
            .unwrap();
        assert_eq!(c.seq, written[1].seq + 1);
        let (changes, _) = store.changes_since(0, c.seq, 100).await.unwrap();
        let listed: Vec<(&str, &str)> = changes
            .iter()
            .map(|ch| (ch.item.id.as_str(), ch.item.rev.as_str()))
            .collect();
        assert_eq!(
            listed,
            vec![
                ("a", written[0].rev.as_str()),
                ("b", written[1].rev.as_str()),
                ("c", c.rev.as_str())
            ]
        );
        assert!(store.counts().await.unwrap().contains(&(wb, 3)));
        assert_eq!(store.outbox(10).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_save_after_a_write_that_failed_part_way_sees_that_write_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (store, written) = failed_part_way(dir.path()).await;
        let wb = Collection::Workbooks;
        // The cut-short write had not yet created `b`.
        assert!(store.get(wb, "b".into()).await.unwrap().is_none());

        // Refused against the completed write, though it changes nothing itself...
        let refused = store
            .write_edit(wb, "b".into(), edit("b2"), Precondition::Absent, false)
            .await;
        assert!(
            matches!(refused, Err(StoreError::AlreadyExists)),
            "{refused:?}"
        );
        // ...the completed write is published to the change feed at once.
        assert_eq!(*store.watch_seq().borrow(), written[1].seq);

        // A later save of `b` descends from the revision the completed write made.
        let (b2, _) = store
            .write_edit(wb, "b".into(), edit("b2"), Precondition::None, false)
            .await
            .unwrap();
        assert_eq!(b2.ancestors.first(), Some(&written[1].rev));
        let (changes, _) = store.changes_since(0, b2.seq, 100).await.unwrap();
        let ids: Vec<&str> = changes.iter().map(|c| c.item.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"], "one change-log entry per item");
    }

    /// One async thread only: a save that found the writer lock held and waited for it there
    /// would stop every other task until the holder let go.
    #[tokio::test(flavor = "current_thread")]
    async fn a_save_meeting_a_held_writer_lock_leaves_the_async_thread_free() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let wb = Collection::Workbooks;
        let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = {
            let inner = store.inner.clone();
            let released = released.clone();
            std::thread::spawn(move || {
                let _g = inner.writer().unwrap();
                held_tx.send(()).unwrap();
                // Bounded, so that a blocked thread fails the test instead of hanging it.
                let _ = release_rx.recv_timeout(std::time::Duration::from_secs(10));
                released.store(true, Ordering::SeqCst);
            })
        };
        held_rx.recv().unwrap();
        let save = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .write_edit(wb, "a".into(), edit("a1"), Precondition::None, false)
                    .await
            }
        });
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(store.get(wb, "a".into()).await.unwrap().is_none());
        assert!(
            !released.load(Ordering::SeqCst),
            "the async thread waited for the writer lock"
        );
        assert!(!save.is_finished());
        release_tx.send(()).unwrap();
        let (item, replaced) = save.await.unwrap().unwrap();
        assert_eq!((item.name.as_str(), replaced), ("a1", false));
        holder.join().unwrap();
    }

    #[tokio::test]
    async fn a_write_cut_short_is_completed_when_the_store_opens() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let wb = Collection::Workbooks;
        let (first, _) = store
            .write_edit(wb, "a".into(), edit("a1"), Precondition::None, false)
            .await
            .unwrap();
        store.durable().await.unwrap();

        let written = cut_short(&store).await;
        drop(store);

        let store = open(dir.path()).await;
        let a = store.get(wb, "a".into()).await.unwrap().unwrap();
        let b = store.get(wb, "b".into()).await.unwrap().unwrap();
        assert_eq!(
            (a.rev.as_str(), b.rev.as_str()),
            (written[0].rev.as_str(), written[1].rev.as_str())
        );
        let history: Vec<String> = store
            .history(wb, "a".into())
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.rev)
            .collect();
        assert_eq!(history, vec![a.rev.clone(), first.rev.clone()]);
        let seq = store.last_seq().await.unwrap();
        assert_eq!(seq, written[1].seq);
        let (changes, more) = store.changes_since(0, seq, 100).await.unwrap();
        let listed: Vec<(u64, &str)> = changes
            .iter()
            .map(|c| (c.seq, c.item.id.as_str()))
            .collect();
        assert_eq!(listed, vec![(a.seq, "a"), (b.seq, "b")]);
        assert!(!more);
        let counts = store.counts().await.unwrap();
        assert!(counts.contains(&(wb, 2)), "{counts:?}");
        let mut queued: Vec<(String, String)> = store
            .outbox(10)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, i)| (i.id, i.rev))
            .collect();
        queued.sort();
        assert_eq!(
            queued,
            vec![("a".into(), a.rev.clone()), ("b".into(), b.rev.clone())]
        );

        // Completed once: the record is gone, and the next write follows on.
        drop(store);
        let store = open(dir.path()).await;
        let (c, _) = store
            .write_edit(wb, "c".into(), edit("c1"), Precondition::None, false)
            .await
            .unwrap();
        assert_eq!(c.seq, seq + 1);
        assert_eq!(store.get(wb, "a".into()).await.unwrap().unwrap().rev, a.rev);
    }

    #[tokio::test]
    async fn large_and_small_writes_leave_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let wb = Collection::Workbooks;
        // One write of many saves (made in a transaction), then one of a single save (recorded).
        let many = TRANSACTION_FROM + 8;
        let saved: Vec<Saved> = (0..many)
            .map(|i| {
                let id = format!("w{i:02}");
                store.enqueue_save(wb, id.clone(), edit(&id), Precondition::None, true, None)
            })
            .collect();
        store.write_pending().await.unwrap();
        let mut seqs = Vec::new();
        for s in saved {
            seqs.push(answered(s.await).unwrap().0.seq);
        }
        assert_eq!(seqs, (1..=many as u64).collect::<Vec<_>>());
        let (one, _) = store
            .write_edit(wb, "w00".into(), edit("again"), Precondition::None, true)
            .await
            .unwrap();
        assert_eq!(one.seq, many as u64 + 1);
        store.durable().await.unwrap();
        drop(store);

        let store = open(dir.path()).await;
        let seq = store.last_seq().await.unwrap();
        assert_eq!(seq, many as u64 + 1);
        let (changes, _) = store.changes_since(0, seq, 1000).await.unwrap();
        assert_eq!(
            changes.len(),
            many,
            "one entry per item, the rewritten one moved to the end"
        );
        assert_eq!(
            changes.last().map(|c| c.item.rev.clone()),
            Some(one.rev.clone())
        );
        assert!(store.counts().await.unwrap().contains(&(wb, many as u64)));
        assert_eq!(store.outbox(1000).await.unwrap().len(), many);
        assert_eq!(store.history(wb, "w00".into()).await.unwrap().len(), 2);
    }

    /// Copies the write-ahead log files of the store in `from` into the store directory `to`.
    fn copy_log(from: &Path, to: &Path) {
        let (from, to) = (from.join("wal"), to.join("wal"));
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(&from).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }

    fn copy_dir(from: &Path, to: &Path) {
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                std::fs::create_dir_all(&target).unwrap();
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }

    async fn save(store: &Store, id: &str, name: &str) -> Item {
        let item = store
            .write_edit(
                Collection::Workbooks,
                id.into(),
                edit(name),
                Precondition::None,
                true,
            )
            .await
            .unwrap()
            .0;
        store.durable().await.unwrap();
        item
    }

    #[tokio::test]
    async fn acknowledged_writes_sled_lost_are_made_again_from_the_log() {
        // sled's files as they were before any write, beside the log of the writes made after:
        // what a machine that lost power can be left with, since sled does not sync its files.
        let (live, lost) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        drop(open(live.path()).await);
        copy_dir(live.path(), lost.path());
        let store = open(live.path()).await;
        save(&store, "a", "a1").await;
        let a2 = save(&store, "a", "a2").await;
        let b1 = save(&store, "b", "b1").await;
        store.meta_set("cursor", b"7".to_vec()).await.unwrap();
        store.durable().await.unwrap();
        std::fs::remove_dir_all(lost.path().join("wal")).unwrap();
        copy_log(live.path(), lost.path());
        drop(store);

        let store = open(lost.path()).await;
        let wb = Collection::Workbooks;
        assert_eq!(store.get_live(wb, "a".into()).await.unwrap().rev, a2.rev);
        assert_eq!(store.get_live(wb, "b".into()).await.unwrap().rev, b1.rev);
        assert_eq!(store.history(wb, "a".into()).await.unwrap().len(), 2);
        assert_eq!(store.last_seq().await.unwrap(), b1.seq);
        assert!(store.counts().await.unwrap().contains(&(wb, 2)));
        assert_eq!(store.outbox(10).await.unwrap().len(), 2);
        assert_eq!(store.meta_get("cursor").await.unwrap(), Some(b"7".to_vec()));
        // The log was taken into sled's files: opening again finds the same.
        drop(store);
        let store = open(lost.path()).await;
        assert_eq!(store.get_live(wb, "a".into()).await.unwrap().rev, a2.rev);
        assert_eq!(store.last_seq().await.unwrap(), b1.seq);
    }

    #[tokio::test]
    async fn logged_writes_sled_already_holds_are_not_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let old_log = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        save(&store, "a", "a1").await;
        // The log as it was after the first save: making it again would undo the second.
        copy_log(dir.path(), old_log.path());
        let a2 = save(&store, "a", "a2").await;
        drop(store);
        std::fs::remove_dir_all(dir.path().join("wal")).unwrap();
        copy_log(old_log.path(), dir.path());

        let store = open(dir.path()).await;
        let wb = Collection::Workbooks;
        assert_eq!(store.get_live(wb, "a".into()).await.unwrap().rev, a2.rev);
        assert_eq!(store.last_seq().await.unwrap(), a2.seq);
        let next = save(&store, "c", "c1").await;
        assert_eq!(next.seq, a2.seq + 1);
    }

    #[tokio::test]
    async fn finished_log_files_go_once_sled_holds_their_writes() {
        let dir = tempfile::tempdir().unwrap();
        let wal_files = || {
            std::fs::read_dir(dir.path().join("wal"))
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .ends_with(".log")
                })
                .count()
        };
        // A tiny limit: nearly every write finishes a log file.
        let store = Store::open_with(dir.path(), 1 << 20, 10, 512)
            .await
            .unwrap();
        let mut last = None;
        for i in 0..40 {
            last = Some(save(&store, &format!("w{}", i % 8), &format!("n{i}")).await);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while wal_files() > 1 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(wal_files(), 1, "checkpoints let every finished file go");
        assert!(
            dir.path().join("wal/spare").exists(),
            "one was kept as the spare"
        );
        drop(store);

        let store = open(dir.path()).await;
        let wb = Collection::Workbooks;
        let last = last.unwrap();
        assert_eq!(
            store.get_live(wb, last.id.clone()).await.unwrap().rev,
            last.rev
        );
        assert_eq!(store.last_seq().await.unwrap(), last.seq);
        assert!(store.counts().await.unwrap().contains(&(wb, 8)));
    }

    #[tokio::test]
    async fn the_change_log_gives_heads_without_reading_items_and_reads_older_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let a = save(&store, "a", "a1").await;
        let b = save(&store, "b", "b1").await;
        let gone = store
            .write_edit(
                Collection::Workbooks,
                "b".into(),
                Edit {
                    deleted: true,
                    ..edit("b1")
                },
                Precondition::Live,
                false,
            )
            .await
            .unwrap()
            .0;
        assert_ne!(gone.rev, b.rev);
        let heads = |store: Store| async move {
            let (heads, more) = store.change_heads(0, 10).await.unwrap();
            assert!(!more);
            heads
                .into_iter()
                .map(|(_, c, h)| (c, h.id, h.rev, h.deleted))
                .collect::<Vec<_>>()
        };
        let wb = Collection::Workbooks;
        let expected = vec![
            (wb, "a".to_string(), a.rev.clone(), false),
            (wb, "b".to_string(), gone.rev.clone(), true),
        ];
        assert_eq!(heads(store.clone()).await, expected);

        // With the item bodies unreadable, the heads still come from the change log alone.
        let trees = store.inner.trees.clone();
        for id in ["a", "b"] {
            trees[idx(wb)].insert(id, b"not an item".to_vec()).unwrap();
        }
        assert_eq!(heads(store.clone()).await, expected);

        // An entry an earlier version wrote (the key alone) is read through its item.
        for id in ["a", "b"] {
            let item = if id == "a" { &a } else { &gone };
            trees[idx(wb)].insert(id, encode(item)).unwrap();
        }
        let (seq, _) = trees[CHANGES].first().unwrap().unwrap();
        trees[CHANGES].insert(seq, b"workbooks/a".to_vec()).unwrap();
        assert_eq!(heads(store.clone()).await, expected);
        let (changes, _) = store.changes_since(0, 10, 10).await.unwrap();
        let revs: Vec<_> = changes.iter().map(|c| c.item.rev.clone()).collect();
        assert_eq!(revs, [a.rev.clone(), gone.rev.clone()]);
    }
}
