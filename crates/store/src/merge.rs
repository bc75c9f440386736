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

use std::collections::{HashMap, HashSet};

use crate::commit::Write;
use crate::item::{ANCESTORS_KEEP, Collection, Item, Revision, rev_generation};
use crate::journal::Op;
use crate::keys::{
    CHANGES, INDEX, META, META_RESYNC, OUTBOX, decode, encode, hist, hist_at, hist_key_of,
    hist_prefix, key_of, outbox_value, parse_key, parse_outbox, resync_key,
};
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    /// The item is read as a head (content `null` when its body is kept in history): the rules
    /// decide on revisions and ancestry, and a path that needs the body reads it again.
    fn holding_read(&self, coll: Collection, id: &str) -> Result<Holding, StoreError> {
        Ok(match self.get_head(coll, id)? {
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
            Holding::Same => self.get_head(coll, id),
            Holding::Other(item) => Ok(Some(*item)),
        }
    }

    fn outbox_rev(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.trees[OUTBOX]
            .get(key.as_bytes())?
            .map(|v| parse_outbox(&v).0))
    }

    /// Adds to `clears` the removal of an outbox entry if it still names `rev`; the caller
    /// holds the writer lock until it commits them. A newer local edit stays queued, its chain
    /// now starting above `rev` when `accepted` (the leader holds `rev`).
    fn clear_outbox(
        &self,
        key: &str,
        rev: &str,
        accepted: bool,
        clears: &mut Vec<Op>,
    ) -> Result<(), StoreError> {
        let Some(queued) = self.trees[OUTBOX].get(key.as_bytes())? else {
            return Ok(());
        };
        let (queued, _) = parse_outbox(&queued);
        if queued == rev {
            clears.push(Op::remove(OUTBOX, key.as_bytes()));
        } else if accepted {
            clears.push(Op::set(
                OUTBOX,
                key.as_bytes(),
                outbox_value(&queued, Some(rev)),
            ));
        }
        Ok(())
    }

    /// The revisions of `current`'s line this store still holds above `base` (the revision
    /// the leader is known to hold; all that are kept when unknown), oldest first and `current`
    /// last, each with its ancestors; `base` is added to every one's ancestors, so the leader
    /// sees them descend from what it holds however long the line grew meanwhile.
    pub(crate) fn chain(
        &self,
        coll: Collection,
        current: Item,
        base: Option<&str>,
    ) -> Result<Vec<Item>, StoreError> {
        let tree = &self.trees[hist(coll)];
        let mut chain = Vec::new();
        let mut reached = false;
        for (at, rev) in current.ancestors.iter().enumerate() {
            if Some(rev.as_str()) == base {
                reached = true;
                break;
            }
            // A revision no longer kept ends the chain: the older ones are pruned too.
            let Some(v) = tree.get(hist_key_of(&current.id, rev))? else {
                reached = true;
                break;
            };
            let r: Revision = decode(&v)?;
            chain.push(r.into_item(&current.id, current.ancestors[at + 1..].to_vec()));
        }
        if !reached {
            // The line grew past the ancestry an item carries: its older revisions above
            // `base` (all that are kept, when the leader's is unknown or it holds none) are
            // the kept ones of the generations between.
            let low = base.filter(|b| !b.is_empty()).map_or(0, rev_generation);
            let (low, high) = (
                low,
                chain
                    .last()
                    .map_or(current.generation(), |oldest: &Item| oldest.generation()),
            );
            // History keys sort by generation: read only those between, newest first, one a
            // generation (two of one generation are two lines: the chain ends there).
            let mut older: Vec<Revision> = Vec::new();
            let id = &current.id;
            let mut expected = high.saturating_sub(1);
            for kv in tree.range(hist_at(id, low + 1)..hist_at(id, high)).rev() {
                let r: Revision = decode(&kv?.1)?;
                if rev_generation(&r.rev) != expected {
                    break;
                }
                older.push(r);
                expected -= 1;
            }
            chain.extend(
                older
                    .into_iter()
                    .map(|r| r.into_item(&current.id, Vec::new())),
            );
        }
        chain.reverse();
        chain.push(current);
        // Each revision descends from the one before it, whose ancestry the item may not
        // carry any more.
        for at in 1..chain.len() {
            let before = &chain[at - 1];
            if chain[at].ancestors.first() != Some(&before.rev) {
                let mut ancestors = vec![before.rev.clone()];
                ancestors.extend(before.ancestors.iter().take(ANCESTORS_KEEP - 1).cloned());
                chain[at].ancestors = ancestors;
            }
        }
        if let Some(base) = base.filter(|b| !b.is_empty()) {
            for item in &mut chain {
                if !item.descends_from(base) {
                    item.ancestors.push(base.to_string());
                }
            }
        }
        Ok(chain)
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
            Pushed::Accepted => return self.clear_outbox(&key, pushed_rev, true, clears),
            Pushed::Lost { winner, record } => (*winner, record.map(|r| *r)),
        };
        let local = self.get_head(coll, id)?;
        let mut writes = Vec::new();
        let unchanged_since_push = local.as_ref().is_some_and(|l| l.rev == pushed_rev);
        if unchanged_since_push {
            // The loser leaves no history entry: its conflict record keeps it.
            writes.push(Write {
                history: false,
                ..Write::on(coll, winner, local)
            });
        }
        if let Some(r) = record {
            self.add_record(&mut writes, r, false)?;
        }
        self.write(writes)?;
        if unchanged_since_push {
            self.clear_outbox(&key, pushed_rev, false, clears)?;
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
            outbox,
            ..Write::on(Collection::Conflicts, record, None)
        });
        Ok(true)
    }
}

impl Store {
    /// The items waiting to be pushed, oldest key order, at most `limit`: each as the chain of
    /// its revisions the leader lacks (see [`Store::pending_chain`]), oldest first, so the
    /// revisions of an item follow each other.
    pub async fn outbox(&self, limit: usize) -> Result<Vec<(Collection, Item)>, StoreError> {
        Ok(self
            .outbox_lines(limit)
            .await?
            .into_iter()
            .flat_map(|(c, chain, _)| chain.into_iter().map(move |i| (c, i)))
            .collect())
    }

    /// [`Store::outbox`] item by item: each item's chain, and whether it is the item's whole
    /// kept line (what the leader holds of it is unknown, see [`Gaps`]).
    pub async fn outbox_lines(
        &self,
        limit: usize,
    ) -> Result<Vec<(Collection, Vec<Item>, bool)>, StoreError> {
        self.blocking(move |inner| {
            let mut out = Vec::new();
            for kv in inner.trees[OUTBOX].iter() {
                let (k, v) = kv?;
                let Some((c, id)) = parse_key(&k) else {
                    continue;
                };
                if let Some(item) = inner.get(c, &id)? {
                    let base = parse_outbox(&v).1;
                    let whole = base.is_none();
                    out.push((c, inner.chain(c, item, base.as_deref())?, whole));
                }
                if out.len() == limit {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    /// The revisions of `item` (just written, and queued for the leader) to push, oldest first
    /// and `item` last: those above the revision the leader was last known to hold, so every
    /// revision acknowledged here reaches the leader, even one superseded before its push.
    pub async fn pending_chain(
        &self,
        coll: Collection,
        item: Item,
    ) -> Result<Vec<Item>, StoreError> {
        Ok(self.pending_line(coll, item).await?.0)
    }

    /// [`Store::pending_chain`], and whether it is the item's whole kept line (what the leader
    /// holds of it is unknown, see [`Gaps`]).
    pub async fn pending_line(
        &self,
        coll: Collection,
        item: Item,
    ) -> Result<(Vec<Item>, bool), StoreError> {
        let queued = self.inner.trees[OUTBOX].get(key_of(coll, &item.id).as_bytes())?;
        let base = match queued.map(|q| parse_outbox(&q)) {
            Some((rev, base)) if rev == item.rev => base,
            // Pushed and settled meanwhile, or edited again: this revision alone.
            _ => return Ok((vec![item], false)),
        };
        if base.as_deref() == Some(item.ancestors.first().map_or("", String::as_str)) {
            // The usual case: the only revision the leader lacks.
            return Ok((vec![item], false));
        }
        let whole = base.is_none();
        let chain = self
            .blocking(move |inner| inner.chain(coll, item, base.as_deref()))
            .await?;
        Ok((chain, whole))
    }

    /// Empties the outbox: this server now leads, so its store is the reference. Clears
    /// nothing once it no longer leads (see [`Store::fence_leading`]).
    pub async fn clear_outbox_all(&self) -> Result<usize, StoreError> {
        self.blocking(|inner| {
            let _g = inner.writer()?;
            if !inner.leads() {
                return Ok(0);
            }
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
                        // What the leader holds of it is unknown: every kept revision goes.
                        ops.push(Op::set(
                            OUTBOX,
                            key_of(c, &id),
                            outbox_value(&item.rev, None),
                        ));
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
    /// became of each; with [`Gaps::Refuse`], a chain that would be taken but starts above a
    /// revision this store lacks fails the whole push with [`StoreError::LineGap`], writing
    /// nothing. The revisions of an item that follow each other form its chain (oldest
    /// first, see [`Store::pending_chain`]): the rules decide on the newest, and when it is taken
    /// every revision of the chain this store lacks is written, in order, so each enters
    /// history. A later chain of an item already seen in the same push is answered accepted and
    /// not written.
    pub async fn accept_pushed(
        &self,
        items: Vec<(Collection, Item)>,
        rules: impl MergeRules,
        gaps: Gaps,
    ) -> Result<Vec<Pushed>, StoreError> {
        let small = items.len() < INLINE_BELOW;
        let out = self
            .writing(small, move |inner, _g| {
                if !inner.leads() {
                    return Err(StoreError::NotLeading);
                }
                let mut writes = Vec::new();
                let mut verdicts = Vec::with_capacity(items.len());
                let mut seen = HashSet::new();
                let mut gapped = Vec::new();
                // Items taken with revisions missing below the pushed line.
                let mut holes = Vec::new();
                for (coll, chain) in chains(items) {
                    let Some(newest) = chain.last() else {
                        continue;
                    };
                    let id = newest.id.clone();
                    if !seen.insert(key_of(coll, &id)) {
                        verdicts.extend(chain.iter().map(|_| Pushed::Accepted));
                        continue;
                    }
                    let held = inner.holding_read(coll, &id)?;
                    // A line longer than the ancestry an item carries: the newest revision
                    // descends from the one held here when the chain holds it (or descends from
                    // it), and is held already when this store's history keeps it.
                    let mut extended = None;
                    if let Held::Other(h) = held.view()
                        && h.rev != newest.rev
                        && !newest.descends_from(&h.rev)
                        && !h.descends_from(&newest.rev)
                    {
                        if chain
                            .iter()
                            .any(|i| i.rev == h.rev || i.descends_from(&h.rev))
                        {
                            let mut n = newest.clone();
                            n.ancestors.push(h.rev.clone());
                            extended = Some(n);
                        } else if inner.trees[hist(coll)]
                            .contains_key(hist_key_of(&id, &newest.rev))?
                        {
                            verdicts.extend(chain.iter().map(|_| Pushed::Accepted));
                            continue;
                        }
                    }
                    match rules.on_push(coll, held.view(), extended.as_ref().unwrap_or(newest)) {
                        PushMerge::Keep => verdicts.extend(chain.iter().map(|_| Pushed::Accepted)),
                        PushMerge::Take => {
                            verdicts.extend(chain.iter().map(|_| Pushed::Accepted));
                            let mut prev = inner.held_item(coll, &id, held)?;
                            if gaps.refused(coll, &id, &chain[0], prev.as_ref()) {
                                gapped.push((coll, id));
                                continue;
                            }
                            // A line taken whole that starts above the revision after the one
                            // held here: revisions between are missing here (the pusher lacked
                            // them too, or they were pruned there). Once this server follows
                            // again it takes its next leader's history of the item.
                            if starts_above(&chain[0], prev.as_ref()) {
                                holes.push((coll, id.clone()));
                            }
                            for item in chain {
                                // Revisions up to the one held are held already.
                                if prev
                                    .as_ref()
                                    .is_some_and(|p| item.generation() <= p.generation())
                                {
                                    continue;
                                }
                                writes.push(Write::on(coll, item.clone(), prev.replace(item)));
                            }
                        }
                        PushMerge::Refuse { record } => {
                            // The chain's earlier revisions were acknowledged too: each that
                            // diverges from the held revision is kept by a record of its own,
                            // unless this store's history keeps it (a revision of the line both
                            // share, older than the ancestry an item carries).
                            let mut earlier = Vec::with_capacity(chain.len() - 1);
                            for item in &chain[..chain.len() - 1] {
                                let kept = inner.trees[hist(coll)]
                                    .contains_key(hist_key_of(&id, &item.rev))?;
                                earlier.push(if kept {
                                    PushMerge::Keep
                                } else {
                                    rules.on_push(coll, held.view(), item)
                                });
                            }
                            // The winner goes back whole to the follower.
                            drop(held);
                            let Some(winner) = inner.get(coll, &id)? else {
                                return Err(StoreError::Task(format!(
                                    "the merge rules refused {}/{id} against no held revision",
                                    coll.as_str(),
                                )));
                            };
                            if let Some(r) = &record {
                                inner.add_record(&mut writes, (**r).clone(), false)?;
                            }
                            for verdict in earlier {
                                verdicts.push(match verdict {
                                    // Held already, in the winner's line.
                                    PushMerge::Keep => Pushed::Accepted,
                                    PushMerge::Refuse { record } => {
                                        if let Some(r) = &record {
                                            inner.add_record(&mut writes, (**r).clone(), false)?;
                                        }
                                        Pushed::Lost {
                                            winner: Box::new(winner.clone()),
                                            record,
                                        }
                                    }
                                    PushMerge::Take => Pushed::Lost {
                                        winner: Box::new(winner.clone()),
                                        record: None,
                                    },
                                });
                            }
                            verdicts.push(Pushed::Lost {
                                winner: Box::new(winner),
                                record,
                            });
                        }
                    }
                }
                if !gapped.is_empty() {
                    return Err(StoreError::LineGap(gapped));
                }
                // Marked first: a mark without the line only costs a resync that changes
                // nothing.
                if !holes.is_empty() {
                    inner.commit_changes(resync_marks(&holes))?;
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
    /// error leaves the unsettled edits queued. Answers the items whose edits lost: their
    /// history here holds the losing line, the leader's the winning one (see
    /// [`Store::replace_histories`]).
    pub async fn settle_pushes(
        &self,
        verdicts: Vec<((Collection, String, String), Pushed)>,
    ) -> Result<Vec<(Collection, String)>, StoreError> {
        let small = verdicts.len() < INLINE_BELOW;
        self.writing(small, move |inner, _g| {
            // Items whose edit lost are marked first: whatever happens next, their histories
            // are taken from the leader in the end (see [`Store::history_resyncs`]).
            let mut lost: Vec<(Collection, String)> = verdicts
                .iter()
                .filter(|(_, verdict)| matches!(verdict, Pushed::Lost { .. }))
                .map(|((coll, id, _), _)| (*coll, id.clone()))
                .collect();
            lost.dedup();
            inner.commit_changes(resync_marks(&lost))?;
            let mut clears = Vec::new();
            let settled = verdicts
                .into_iter()
                .try_for_each(|((coll, id, pushed_rev), verdict)| {
                    inner.settle_push(coll, &id, &pushed_rev, verdict, &mut clears)
                });
            // What was settled before an error stays settled.
            inner.commit_changes(clears)?;
            settled.map(|()| lost)
        })
        .await
    }

    /// Follower: applies the leader's changes as `rules` decide, in order: revisions of one
    /// item follow each other as its line did. `then` is a meta value set right after them in
    /// the same ordered log (the feed cursor they bring this follower to), so it is never
    /// recovered without them.
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
            let mut resync = Vec::new();
            let mut cleared = Vec::new();
            // How many revisions of each item are still to come, and the last one written.
            let mut to_come: HashMap<String, usize> = HashMap::new();
            for (coll, item) in &items {
                *to_come.entry(key_of(*coll, &item.id)).or_default() += 1;
            }
            let mut written: HashMap<String, Item> = HashMap::new();
            for (coll, item) in items {
                let key = key_of(coll, &item.id);
                let later = to_come.get_mut(&key).map_or(0, |n| {
                    *n -= 1;
                    *n
                });
                let pending = inner.outbox_rev(&key)?;
                let held = match written.remove(&key) {
                    Some(w) => Holding::Other(Box::new(w)),
                    None => inner.holding(coll, &item.id, &item.rev)?,
                };
                let mut merge = rules.on_feed(coll, held.view(), pending.as_deref(), &item);
                if let (FeedAction::Replace { record }, Holding::Other(h)) = (&merge.action, &held)
                {
                    if inner.trees[hist(coll)].contains_key(hist_key_of(&item.id, &item.rev))? {
                        // Held already and superseded here since: its line is this store's,
                        // though the item's ancestry may be too short to tell.
                        merge = FeedMerge {
                            action: FeedAction::Skip,
                            settles_pending: false,
                        };
                    } else if record.is_some() && h.content.get() == "null" && !h.deleted {
                        // The record keeps the held revision's body: decide again on it whole.
                        if let Some(whole) = inner.get(coll, &item.id)? {
                            merge =
                                rules.on_feed(coll, Held::Other(&whole), pending.as_deref(), &item);
                        }
                    }
                }
                if merge.settles_pending
                    && let Some(p) = pending
                {
                    cleared.push((key.clone(), p));
                }
                let (record, history) = match merge.action {
                    FeedAction::Skip => {
                        done.skipped += 1;
                        if later > 0
                            && let Holding::Other(w) = held
                        {
                            written.insert(key, *w);
                        }
                        continue;
                    }
                    FeedAction::Take => (None, true),
                    FeedAction::Replace { record } => {
                        // Its history here holds the losing line, the leader's the winning one.
                        resync.push((coll, item.id.clone()));
                        (record, false)
                    }
                };
                if let Some(r) = record
                    && inner.add_record(&mut writes, *r, true)?
                {
                    done.conflicts += 1;
                }
                done.written += 1;
                let prev = inner.held_item(coll, &item.id, held)?;
                if history
                    && prev
                        .as_ref()
                        .is_some_and(|p| item.generation() > p.generation() + 1)
                {
                    // Revisions between the one held here and this one never came (the leader
                    // took them whole, with a history): take the leader's history once caught up.
                    resync.push((coll, item.id.clone()));
                }
                if later > 0 {
                    written.insert(key, item.clone());
                }
                writes.push(Write {
                    history,
                    ..Write::on(coll, item, prev)
                });
            }
            // Marked before the writes that make their histories differ from the leader's.
            inner.commit_changes(resync_marks(&resync))?;
            inner.write(writes)?;
            let mut after = Vec::new();
            for (key, rev) in cleared {
                inner.clear_outbox(&key, &rev, false, &mut after)?;
            }
            if let Some((key, value)) = then {
                after.push(Op::set(META, key.as_bytes(), value));
            }
            inner.commit_changes(after)?;
            Ok(done)
        })
        .await
    }

    /// Current items for the given keys with the revisions their history keeps, oldest first
    /// (missing items are left out).
    pub async fn fetch_with_history(
        &self,
        keys: Vec<(Collection, String)>,
    ) -> Result<Vec<(Collection, Item, Vec<Revision>)>, StoreError> {
        self.blocking(move |inner| {
            let mut out = Vec::with_capacity(keys.len());
            for (c, id) in keys {
                if let Some(item) = inner.get(c, &id)? {
                    let mut kept = inner.history(c, &id)?;
                    kept.retain(|r| r.rev != item.rev);
                    kept.reverse();
                    out.push((c, item, kept));
                }
            }
            Ok(out)
        })
        .await
    }

    /// Marks items whose history is to be taken from the leader (see
    /// [`Store::history_resyncs`]): their revisions here came otherwise than one by one.
    pub async fn mark_history_resync(
        &self,
        keys: Vec<(Collection, String)>,
    ) -> Result<(), StoreError> {
        self.blocking(move |inner| inner.commit_changes(resync_marks(&keys)))
            .await
    }

    /// Up to `limit` items marked for a history resync: their history here may differ from
    /// the leader's (an edit here lost, or revisions arrived whole), until
    /// [`Store::replace_histories`] makes it the leader's.
    /// Marks are answered in key order, from after `after` when given (to go on past items
    /// that could not take it yet).
    pub fn history_resyncs(
        &self,
        after: Option<&(Collection, String)>,
        limit: usize,
    ) -> Result<Vec<(Collection, String)>, StoreError> {
        let meta = &self.inner.trees[META];
        let marks = match after {
            Some((c, id)) => meta.range::<Vec<u8>, _>((
                std::ops::Bound::Excluded(resync_key(&key_of(*c, id))),
                std::ops::Bound::Unbounded,
            )),
            None => meta.range::<&[u8], _>(META_RESYNC.as_bytes()..),
        };
        let mut out = Vec::new();
        for kv in marks
            .take_while(|kv| {
                kv.as_ref()
                    .map_or(true, |(k, _)| k.starts_with(META_RESYNC.as_bytes()))
            })
            .take(limit)
        {
            let (k, _) = kv?;
            if let Some(key) = k.strip_prefix(META_RESYNC.as_bytes())
                && let Some(parsed) = parse_key(key)
            {
                out.push(parsed);
            }
        }
        Ok(out)
    }

    /// Follower: makes the history of each item the leader's, given as `(collection, id, the
    /// leader's current revision, its kept revisions)`: revisions this store lacks are added,
    /// others removed, and the item's resync mark goes. Skipped (the mark stays) for an item
    /// whose current revision here is another, or that has an edit waiting for the leader (its
    /// history holds revisions the leader is yet to have). The marks of `absent`, items the
    /// leader does not hold, go too.
    pub async fn replace_histories(
        &self,
        histories: Vec<(Collection, String, String, Vec<Revision>)>,
        absent: Vec<(Collection, String)>,
    ) -> Result<usize, StoreError> {
        self.writing(false, move |inner, _g| {
            let mut ops: Vec<Op> = absent
                .iter()
                .map(|(c, id)| Op::remove(META, resync_key(&key_of(*c, id))))
                .collect();
            let mut changed = 0;
            for (coll, id, rev, kept) in histories {
                let key = key_of(coll, &id);
                let current = inner.trees[INDEX].get(key.as_bytes())?;
                if current.is_none_or(|c| c.as_ref() != rev.as_bytes())
                    || inner.trees[OUTBOX].contains_key(key.as_bytes())?
                {
                    continue;
                }
                ops.push(Op::remove(META, resync_key(&key)));
                let tree = hist(coll);
                let mut wanted: HashMap<Vec<u8>, Revision> = kept
                    .into_iter()
                    .filter(|r| r.rev != rev)
                    .map(|r| (hist_key_of(&id, &r.rev), r))
                    .collect();
                let before = ops.len();
                let here = hist_key_of(&id, &rev);
                for kv in inner.trees[tree].scan_prefix(hist_prefix(&id)) {
                    let (k, v) = kv?;
                    // The current revision's own entry holds its body.
                    if wanted.remove(k.as_ref()).is_some() || k.as_ref() == here.as_slice() {
                        continue;
                    }
                    ops.push(Op::remove(tree, k.to_vec()));
                    let seq = decode::<Revision>(&v).map(|r| r.seq).unwrap_or(0);
                    if seq > 0 {
                        ops.push(Op::remove(CHANGES, seq.to_be_bytes()));
                    }
                }
                for (k, mut r) in wanted {
                    // Not in this store's change log: it came whole, not as a change.
                    r.seq = 0;
                    ops.push(Op::set(tree, k, encode(&r)));
                }
                if ops.len() > before {
                    changed += 1;
                }
            }
            inner.commit_changes(ops)?;
            Ok(changed)
        })
        .await
    }
}

/// The meta entries marking `keys` for a history resync (see [`Store::history_resyncs`]).
fn resync_marks(keys: &[(Collection, String)]) -> Vec<Op> {
    keys.iter()
        .map(|(c, id)| Op::set(META, resync_key(&key_of(*c, id)), Vec::new()))
        .collect()
}

/// What a leader does with a pushed chain that would be taken but starts above a revision it
/// lacks (a *gap*: the pusher assumed the leader held the revision before the chain, and it
/// does not, because another leader took it and was replaced, or the pusher led meanwhile).
#[derive(Debug, Clone)]
pub enum Gaps {
    /// Take it as it is (how earlier versions push: they do not resend).
    Fill,
    /// Refuse the push, so the pusher sends each such item's whole kept line; the lines in
    /// the set are whole already (their oldest revisions are gone everywhere) and are taken.
    Refuse(HashSet<(Collection, String)>),
}

/// Whether a pushed line starting at `first` starts above the revision after `held` (this
/// store's revision of the item), so that revisions between are missing here.
fn starts_above(first: &Item, held: Option<&Item>) -> bool {
    match held {
        Some(h) => first.generation() > h.generation() + 1,
        None => !first.ancestors.is_empty(),
    }
}

impl Gaps {
    /// Whether the chain of `coll/id` starting at `first` is refused, `held` being this
    /// store's revision of the item.
    fn refused(&self, coll: Collection, id: &str, first: &Item, held: Option<&Item>) -> bool {
        let Gaps::Refuse(whole) = self else {
            return false;
        };
        starts_above(first, held) && !whole.contains(&(coll, id.to_string()))
    }
}

/// Pushed revisions grouped into chains: the revisions of an item that follow each other.
fn chains(items: Vec<(Collection, Item)>) -> Vec<(Collection, Vec<Item>)> {
    let mut out: Vec<(Collection, Vec<Item>)> = Vec::new();
    for (coll, item) in items {
        match out.last_mut() {
            Some((c, chain)) if *c == coll && chain.last().is_some_and(|l| l.id == item.id) => {
                chain.push(item)
            }
            _ => out.push((coll, vec![item])),
        }
    }
    out
}
