//! Merging other servers' revisions, atomically: the outbox of edits waiting for the leader, the
//! leader's acceptance of pushed revisions, a follower's settling of the leader's verdicts and its
//! application of the leader's change feed. The store knows no conflict rule: what to do with
//! each incoming revision is decided by the caller's [`MergeRules`] (pure functions of what the
//! store holds and what arrives), and the store makes that decision with everything it implies
//! (history, conflict record, outbox, change log) as one write.
//!
//! Durability: what the leader accepts from a push is synced before it answers (the follower then
//! forgets its outbox entry). What a follower applies from the feed, and the settling of a push,
//! are not waited on: the leader holds those revisions durably and the follower's cursor and
//! outbox are written in the same ordered log, so after a crash the follower simply fetches or
//! pushes them again.

use std::collections::HashSet;

use crate::commit::Write;
use crate::item::{Collection, Item};
use crate::journal::Op;
use crate::keys::{INDEX, META, OUTBOX, key_of, parse_key};
use crate::{INLINE_BELOW, Inner, Store, StoreError};

/// What the store holds of an item when a revision of it arrives.
#[derive(Debug, Clone, Copy)]
pub enum Held<'a> {
    /// No such item, not even a tombstone.
    Nothing,
    /// Exactly the arriving revision (known from the index; the item itself is not read).
    Same,
    /// Another revision of the item.
    Other(&'a Item),
}

/// The leader's decision on one pushed revision.
#[derive(Debug, Clone, PartialEq)]
pub enum PushMerge {
    /// The pushed revision becomes current (the held one, if any, goes to history).
    Take,
    /// Nothing changes: the store holds the pushed revision or a descendant of it.
    Keep,
    /// The held revision stays current and the pushed one loses; `record`, a conflict record
    /// keeping it, is written unless the store holds it already.
    Refuse { record: Option<Box<Item>> },
}

/// A follower's decision on one revision of the leader's change feed.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedMerge {
    pub action: FeedAction,
    /// The item's outbox entry (the pending revision the rules were shown) is settled by this
    /// revision and goes, if it still names that revision.
    pub settles_pending: bool,
}

/// What a follower does with one revision of the leader's change feed.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedAction {
    /// The leader's revision becomes current (the held one, if any, goes to history).
    Take,
    /// The leader's revision replaces a diverged held one; `record`, a conflict record keeping
    /// the held one, is written (unless the store holds it) and queued for the leader.
    Replace { record: Option<Box<Item>> },
    /// Nothing changes.
    Skip,
}

/// The conflict rules the store applies, decided by the caller: pure functions of what the store
/// holds and what arrives.
pub trait MergeRules: Send + 'static {
    /// On the leader: what becomes of `pushed`, a follower's revision of an item of `coll`.
    fn on_push(&self, coll: Collection, held: Held<'_>, pushed: &Item) -> PushMerge;
    /// On a follower: what becomes of `incoming`, the leader's revision of an item of `coll`,
    /// given the revision of it this follower still has `pending` for the leader, if any.
    fn on_feed(
        &self,
        coll: Collection,
        held: Held<'_>,
        pending: Option<&str>,
        incoming: &Item,
    ) -> FeedMerge;
}

/// What the leader did with a pushed revision.
#[derive(Debug, Clone, PartialEq)]
pub enum Pushed {
    /// The revision is (now) part of the leader's line of history.
    Accepted,
    /// The revision lost to `winner`, which stays current; `record` keeps it, when the rules
    /// keep losers.
    Lost {
        winner: Box<Item>,
        record: Option<Box<Item>>,
    },
}

/// What applying the leader's changes did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub written: usize,
    pub skipped: usize,
    pub conflicts: usize,
}

/// [`Held`], owning the item read.
enum Holding {
    Nothing,
    Same,
    Other(Box<Item>),
}

impl Holding {
    fn view(&self) -> Held<'_> {
        match self {
            Holding::Nothing => Held::Nothing,
            Holding::Same => Held::Same,
            Holding::Other(item) => Held::Other(item.as_ref()),
        }
    }
}

impl Inner {
    /// What the store holds of `id` against the arriving revision `rev`: the index answers
    /// without reading the item when it is that very revision (most often a follower's own
    /// pushed edit coming back).
    fn holding(&self, coll: Collection, id: &str, rev: &str) -> Result<Holding, StoreError> {
        let key = key_of(coll, id);
        let same = self.trees[INDEX]
            .get(key.as_bytes())?
            .is_some_and(|r| r.as_ref() == rev.as_bytes());
        if same {
            return Ok(Holding::Same);
        }
        self.holding_read(coll, id)
    }

    /// What the store holds of `id`, read from the item itself (for arrivals that are seldom the
    /// held revision, such as pushes, where asking the index first would be a lookup more).
    fn holding_read(&self, coll: Collection, id: &str) -> Result<Holding, StoreError> {
        Ok(match self.get(coll, id)? {
            Some(item) => Holding::Other(Box::new(item)),
            None => Holding::Nothing,
        })
    }

    /// The item held, read now when [`Holding::Same`] did not read it.
    fn held_item(
        &self,
        coll: Collection,
        id: &str,
        h: Holding,
    ) -> Result<Option<Item>, StoreError> {
        match h {
            Holding::Nothing => Ok(None),
            Holding::Same => self.get(coll, id),
            Holding::Other(item) => Ok(Some(*item)),
        }
    }

    fn outbox_rev(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.trees[OUTBOX]
            .get(key.as_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Adds to `clears` the removal of an outbox entry if it still names `rev` (a newer local
    /// edit stays queued); the caller holds the writer lock until it commits them.
    fn clear_outbox(&self, key: &str, rev: &str, clears: &mut Vec<Op>) -> Result<(), StoreError> {
        let queued = self.trees[OUTBOX].get(key.as_bytes())?;
        if queued.is_some_and(|q| q.as_ref() == rev.as_bytes()) {
            clears.push(Op::remove(OUTBOX, key.as_bytes()));
        }
        Ok(())
    }

    /// Settles the leader's verdict on one pushed edit, adding the outbox entries it clears to
    /// `clears`; the caller holds the writer lock.
    fn settle_push(
        &self,
        coll: Collection,
        id: &str,
        pushed_rev: &str,
        verdict: Pushed,
        clears: &mut Vec<Op>,
    ) -> Result<(), StoreError> {
        let key = key_of(coll, id);
        let (winner, record) = match verdict {
            Pushed::Accepted => return self.clear_outbox(&key, pushed_rev, clears),
            Pushed::Lost { winner, record } => (*winner, record.map(|r| *r)),
        };
        let local = self.get(coll, id)?;
        let mut writes = Vec::new();
        let unchanged_since_push = local.as_ref().is_some_and(|l| l.rev == pushed_rev);
        if unchanged_since_push {
            writes.push(Write {
                coll,
                item: winner,
                prev: local,
                outbox: false,
            });
        }
        if let Some(r) = record {
            self.add_record(&mut writes, r, false)?;
        }
        self.write(writes)?;
        if unchanged_since_push {
            self.clear_outbox(&key, pushed_rev, clears)?;
        }
        Ok(())
    }

    /// Adds a conflict record to `writes` unless the store already has it.
    fn add_record(
        &self,
        writes: &mut Vec<Write>,
        record: Item,
        outbox: bool,
    ) -> Result<bool, StoreError> {
        if self.get(Collection::Conflicts, &record.id)?.is_some() {
            return Ok(false);
        }
        writes.push(Write {
            coll: Collection::Conflicts,
            item: record,
            prev: None,
            outbox,
        });
        Ok(true)
    }
}

impl Store {
    /// The items waiting to be pushed (their current revisions), oldest key order, at most `limit`.
    pub async fn outbox(&self, limit: usize) -> Result<Vec<(Collection, Item)>, StoreError> {
        self.blocking(move |inner| {
            let mut out = Vec::new();
            for kv in inner.trees[OUTBOX].iter() {
                let (k, _) = kv?;
                let Some((c, id)) = parse_key(&k) else {
                    continue;
                };
                if let Some(item) = inner.get(c, &id)? {
                    out.push((c, item));
                }
                if out.len() == limit {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    /// Empties the outbox: this server now leads, so its store is the reference.
    pub async fn clear_outbox_all(&self) -> Result<usize, StoreError> {
        self.blocking(|inner| {
            let _g = inner.writer()?;
            let mut ops = Vec::new();
            for kv in inner.trees[OUTBOX].iter() {
                ops.push(Op::remove(OUTBOX, kv?.0.to_vec()));
            }
            let n = ops.len();
            inner.commit_changes(ops)?;
            Ok(n)
        })
        .await
    }

    /// Whether an edit of this item waits to be pushed to the leader (one lookup, made on the
    /// calling thread).
    pub fn is_queued(&self, coll: Collection, id: &str) -> Result<bool, StoreError> {
        Ok(self.inner.trees[OUTBOX]
            .get(key_of(coll, id).as_bytes())?
            .is_some())
    }

    /// How many edits wait to be pushed.
    pub async fn outbox_len(&self) -> Result<usize, StoreError> {
        self.blocking(|inner| Ok(inner.trees[OUTBOX].len())).await
    }

    /// Puts existing items into the outbox (after a reconcile found the leader lacks them).
    pub async fn queue_for_push(
        &self,
        keys: Vec<(Collection, String)>,
    ) -> Result<usize, StoreError> {
        let n = self
            .blocking(move |inner| {
                let _g = inner.writer()?;
                let mut ops = Vec::new();
                for (c, id) in keys {
                    if let Some(item) = inner.get(c, &id)? {
                        ops.push(Op::set(OUTBOX, key_of(c, &id), item.rev));
                    }
                }
                let n = ops.len();
                inner.commit_changes(ops)?;
                Ok(n)
            })
            .await?;
        self.durable().await?;
        Ok(n)
    }

    /// Leader: merges pushed revisions as `rules` decide, in one durable write, and answers what
    /// became of each (a second revision of an item in the same push is answered accepted and
    /// not written).
    pub async fn accept_pushed(
        &self,
        items: Vec<(Collection, Item)>,
        rules: impl MergeRules,
    ) -> Result<Vec<Pushed>, StoreError> {
        let small = items.len() < INLINE_BELOW;
        let out = self
            .writing(small, move |inner, _g| {
                let mut writes = Vec::new();
                let mut verdicts = Vec::with_capacity(items.len());
                let mut seen = HashSet::new();
                for (coll, item) in items {
                    if !seen.insert(key_of(coll, &item.id)) {
                        verdicts.push(Pushed::Accepted);
                        continue;
                    }
                    let held = inner.holding_read(coll, &item.id)?;
                    match rules.on_push(coll, held.view(), &item) {
                        PushMerge::Keep => verdicts.push(Pushed::Accepted),
                        PushMerge::Take => {
                            verdicts.push(Pushed::Accepted);
                            let prev = inner.held_item(coll, &item.id, held)?;
                            writes.push(Write {
                                coll,
                                item,
                                prev,
                                outbox: false,
                            });
                        }
                        PushMerge::Refuse { record } => {
                            let Some(winner) = inner.held_item(coll, &item.id, held)? else {
                                return Err(StoreError::Task(format!(
                                    "the merge rules refused {}/{} against no held revision",
                                    coll.as_str(),
                                    item.id
                                )));
                            };
                            if let Some(r) = &record {
                                inner.add_record(&mut writes, (**r).clone(), false)?;
                            }
                            verdicts.push(Pushed::Lost {
                                winner: Box::new(winner),
                                record,
                            });
                        }
                    }
                }
                inner.write(writes)?;
                Ok(verdicts)
            })
            .await?;
        self.durable().await?;
        Ok(out)
    }

    /// Follower: settles the leader's verdicts on edits pushed as `(collection, id, pushed
    /// revision)`, in push order: an accepted edit leaves the outbox; an edit that lost is
    /// replaced by the winner unless edited again since, and its conflict record is written. An
    /// error leaves the unsettled edits queued.
    pub async fn settle_pushes(
        &self,
        verdicts: Vec<((Collection, String, String), Pushed)>,
    ) -> Result<(), StoreError> {
        let small = verdicts.len() < INLINE_BELOW;
        self.writing(small, move |inner, _g| {
            let mut clears = Vec::new();
            let settled = verdicts
                .into_iter()
                .try_for_each(|((coll, id, pushed_rev), verdict)| {
                    inner.settle_push(coll, &id, &pushed_rev, verdict, &mut clears)
                });
            // What was settled before an error stays settled.
            inner.commit_changes(clears)?;
            settled
        })
        .await
    }

    /// Follower: applies the leader's changes as `rules` decide (a second revision of an item in
    /// the same call is skipped). `then` is a meta value set right after them in the same
    /// ordered log (the feed cursor they bring this follower to), so it is never recovered
    /// without them.
    pub async fn apply_feed(
        &self,
        items: Vec<(Collection, Item)>,
        rules: impl MergeRules,
        then: Option<(&'static str, Vec<u8>)>,
    ) -> Result<Applied, StoreError> {
        let small = items.len() < INLINE_BELOW;
        self.writing(small, move |inner, _g| {
            let mut writes = Vec::new();
            let mut done = Applied::default();
            let mut cleared = Vec::new();
            let mut seen = HashSet::new();
            for (coll, item) in items {
                let key = key_of(coll, &item.id);
                if !seen.insert(key.clone()) {
                    continue;
                }
                let pending = inner.outbox_rev(&key)?;
                let held = inner.holding(coll, &item.id, &item.rev)?;
                let merge = rules.on_feed(coll, held.view(), pending.as_deref(), &item);
                if merge.settles_pending
                    && let Some(p) = pending
                {
                    cleared.push((key, p));
                }
                let record = match merge.action {
                    FeedAction::Skip => {
                        done.skipped += 1;
                        continue;
                    }
                    FeedAction::Take => None,
                    FeedAction::Replace { record } => record,
                };
                if let Some(r) = record
                    && inner.add_record(&mut writes, *r, true)?
                {
                    done.conflicts += 1;
                }
                done.written += 1;
                let prev = inner.held_item(coll, &item.id, held)?;
                writes.push(Write {
                    coll,
                    item,
                    prev,
                    outbox: false,
                });
            }
            inner.write(writes)?;
            let mut after = Vec::new();
            for (key, rev) in cleared {
                inner.clear_outbox(&key, &rev, &mut after)?;
            }
            if let Some((key, value)) = then {
                after.push(Op::set(META, key.as_bytes(), value));
            }
            inner.commit_changes(after)?;
            Ok(done)
        })
        .await
    }
}
