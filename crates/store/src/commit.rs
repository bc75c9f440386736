//! How a write is made: the writer lock (completing first a write that failed part-way), the
//! planning of a group of item writes into changes of the trees (history, index, outbox, change
//! log, counters, sequence number), their logging in the write-ahead log and their making in
//! sled (recorded, in one transaction, or one by one), the pruning of old history, and group
//! commit: a write is acknowledged once a sync of the log covers it, and writers that wait
//! together share one sync.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::checkpoint::LogJob;
use crate::item::Revision;
use crate::item::{Collection, Item};
use crate::journal::{self, Op};
use crate::keys::{
    CHANGES, INDEX, JOURNAL, META, META_SEQ, N, OUTBOX, change_entry, count_key, decode, encode,
    encode_body, encode_head, hist, hist_at, hist_key, hist_prefix, idx, key_of, outbox_value,
    parse_outbox, read_u64,
};
use crate::{Inner, Store, StoreError, lock, wal};

/// Writes of this many items or more are made in one sled transaction rather than recorded (see
/// the `journal` module): a transaction's cost hardly depends on its size, while a record's
/// grows with its bytes, and sled holds on to more memory after many items inserted one by one.
pub(crate) const TRANSACTION_FROM: usize = 32;

/// The writer lock held (see [`Inner::writer`]).
pub(crate) type Writer<'a> = std::sync::MutexGuard<'a, ()>;

/// One item write of a group written together.
pub(crate) struct Write {
    pub(crate) coll: Collection,
    pub(crate) item: Item,
    pub(crate) prev: Option<Item>,
    /// Queue the new revision for pushing to the leader.
    pub(crate) outbox: bool,
    /// `prev` enters the item's history (it does not when it lost to `item`, a diverged
    /// revision of another server: a conflict record keeps it).
    pub(crate) history: bool,
}

impl Write {
    /// A write of `item` on top of `prev` (which enters history), not queued for the leader.
    pub(crate) fn on(coll: Collection, item: Item, prev: Option<Item>) -> Write {
        Write {
            coll,
            item,
            prev,
            outbox: false,
            history: true,
        }
    }
}

impl Store {
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
        let file: Arc<std::fs::File> = lock(&self.inner.sync_file).clone();
        self.blocking(move |inner| {
            file.sync_data()
                .map_err(|e| StoreError::Log(format!("sync in {}: {e}", inner.dir.display())))
        })
        .await?;
        self.inner.flushed.fetch_max(upto, Ordering::SeqCst);
        Ok(())
    }
}

impl Inner {
    /// Takes the writer lock, first completing a write that failed part-way (so what the caller
    /// reads to plan its own write is whole) and publishing the sequence number it reached.
    /// Whether this server leads (see [`crate::Store::fence_leading`]); ask with the writer
    /// lock held.
    pub(crate) fn leads(&self) -> bool {
        self.leads.get().is_none_or(|leads| leads())
    }

    pub(crate) fn writer(&self) -> Result<Writer<'_>, StoreError> {
        self.finish_unfinished(lock(&self.write_lock))
    }

    /// [`Inner::writer`] when the lock is free at once; `None` when another writer holds it.
    pub(crate) fn try_writer(&self) -> Option<Result<Writer<'_>, StoreError>> {
        let g = match self.write_lock.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(self.finish_unfinished(g))
    }

    /// With the writer lock `g` held: completes a recorded write that failed part-way, if any.
    pub(crate) fn finish_unfinished<'a>(&self, g: Writer<'a>) -> Result<Writer<'a>, StoreError> {
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
    pub(crate) fn write(&self, writes: Vec<Write>) -> Result<Vec<Item>, StoreError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        self.space
            .check(writes.iter().any(|w| w.coll != Collection::Sessions))?;
        let (ops, out, seq) = self.plan(&writes)?;
        let how = if writes.len() >= TRANSACTION_FROM {
            Commit::Transaction
        } else {
            Commit::Recorded
        };
        self.commit(ops, how)?;
        self.written.fetch_add(1, Ordering::SeqCst);
        let mut touched = [false; N];
        for w in &writes {
            touched[idx(w.coll)] = true;
        }
        for (i, _) in touched.iter().enumerate().filter(|(_, t)| **t) {
            self.writes_to[i].fetch_add(1, Ordering::SeqCst);
        }
        self.seq_tx.send_replace(seq);
        // Each item's history is pruned by its newest revision in the write: a write can hold
        // several revisions of one item (a line arriving from the leader, oldest first).
        let mut newest: HashMap<(Collection, &str), u64> = HashMap::new();
        for w in writes.iter().filter(|w| w.prev.is_some()) {
            let at = newest.entry((w.coll, w.item.id.as_str())).or_default();
            *at = (*at).max(w.item.generation());
        }
        let mut prunes = Vec::new();
        for ((coll, id), generation) in newest {
            self.prune_history(coll, id, generation, &mut prunes)?;
        }
        self.commit_changes(prunes)?;
        Ok(out)
    }

    /// The changes `writes` make to the trees, in the order they are made (a superseded
    /// revision enters history before the item changes; the change log and the sequence number
    /// come last, so whoever reads the sequence number finds every change up to it complete),
    /// the items as written and the last sequence number.
    pub(crate) fn plan(&self, writes: &[Write]) -> Result<(Vec<Op>, Vec<Item>, u64), StoreError> {
        let t = &self.trees;
        let mut seq = read_u64(t[META].get(META_SEQ)?);
        let mut deltas = [0i64; N];
        let mut ops = Vec::with_capacity(writes.len() * 6 + 2);
        let mut out = Vec::with_capacity(writes.len());
        // Sequence numbers given in this write, for a later write of the same item in it (a
        // chain of revisions) whose `prev` was written here.
        let mut given: HashMap<String, u64> = HashMap::new();
        for w in writes {
            let i = idx(w.coll);
            seq += 1;
            let mut item = w.item.clone();
            item.seq = seq;
            let key = key_of(w.coll, &item.id);
            // Where the collection keeps history, each revision's body is written once, under
            // the revision in the history tree, and the item tree holds the current item's head:
            // superseding a revision then writes no body again. A superseded revision kept in
            // history keeps its change-log entry, so the change feed carries every revision;
            // one not kept loses both.
            let with_history = self.history_keep[i] > 1;
            if let Some(p) = &w.prev {
                let seq = given.get(&key).copied().unwrap_or(p.seq);
                if p.rev != item.rev {
                    if !(w.history && with_history) {
                        if with_history {
                            ops.push(Op::remove(hist(w.coll), hist_key(p)));
                        }
                        ops.push(Op::remove(CHANGES, seq.to_be_bytes()));
                    }
                } else {
                    ops.push(Op::remove(CHANGES, seq.to_be_bytes()));
                }
            }
            if with_history {
                ops.push(Op::set(
                    hist(w.coll),
                    hist_key(&item),
                    encode_body(&item.revision()),
                ));
                let head = encode_head(&mut item);
                ops.push(Op::set(i, item.id.as_bytes(), head));
            } else {
                ops.push(Op::set(i, item.id.as_bytes(), encode(&item)));
            }
            ops.push(Op::set(INDEX, key.as_bytes(), item.rev.as_bytes()));
            if w.outbox {
                // The chain of pending revisions starts above the revision the leader was last
                // known to hold: kept from the entry already queued, else the one superseded.
                let base = match t[OUTBOX].get(key.as_bytes())? {
                    Some(queued) => parse_outbox(&queued).1,
                    None => Some(w.prev.as_ref().map(|p| p.rev.clone()).unwrap_or_default()),
                };
                ops.push(Op::set(
                    OUTBOX,
                    key.as_bytes(),
                    outbox_value(&item.rev, base.as_deref()),
                ));
            }
            given.insert(key.clone(), seq);
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
    pub(crate) fn prune_history(
        &self,
        coll: Collection,
        id: &str,
        generation: u64,
        prunes: &mut Vec<Op>,
    ) -> Result<(), StoreError> {
        let tree = &self.trees[hist(coll)];
        let keep = self.history_keep[idx(coll)].saturating_sub(1) as u64;
        let below = generation.saturating_sub(keep);
        if below <= 1 {
            // Generations start at 1: nothing is old enough yet.
            return Ok(());
        }
        for kv in tree.range(hist_prefix(id)..hist_at(id, below)) {
            let (k, v) = kv?;
            prunes.push(Op::remove(hist(coll), k.to_vec()));
            // Its change-log entry goes with it (revisions kept by earlier versions had none).
            let seq = decode::<Revision>(&v).map(|r| r.seq).unwrap_or(0);
            if seq > 0 {
                prunes.push(Op::remove(CHANGES, seq.to_be_bytes()));
            }
        }
        Ok(())
    }

    /// Commits changes that each stand on their own ([`Commit::Plain`]) as one write, if any.
    pub(crate) fn commit_changes(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.space.check(false)?;
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
    pub(crate) fn commit(&self, mut ops: Vec<Op>, how: Commit) -> Result<(), StoreError> {
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
pub(crate) enum Commit {
    /// Recorded whole first (see `journal`), for changes that must be seen together.
    Recorded,
    /// In one sled transaction, for large writes.
    Transaction,
    /// One by one: each change stands on its own (removing old history, a meta value).
    Plain,
}
