//! The store's side of synchronisation: the change feed (changes after a sequence number, and a
//! watch to long-poll on), the outbox of edits waiting for the leader, bucketed digests for
//! reconciliation, and the atomic application of the conflict rules (`sync::resolve`) to pushed
//! edits (on the leader) and to the leader's changes (on a follower).
//!
//! Durability: what the leader accepts from a push is flushed before it answers (the follower then
//! forgets its outbox entry). What a follower applies from the feed, and the settling of a push,
//! are not waited on: the leader holds those revisions durably and the follower's cursor and
//! outbox are written in the same ordered log, so after a crash the follower simply fetches or
//! pushes them again.

use serde::{Deserialize, Serialize};

use super::{
    CHANGES, Collection, Head, INDEX, INLINE_BELOW, Inner, Item, META, META_SEQ, OUTBOX, Op, Store,
    StoreError, Write, key_of, parse_change, parse_key, read_u64,
};
use crate::sync::resolve::{Relation, conflict_record, keeps_losers, relate};

/// Number of digest buckets an item key hashes into.
pub const DIGEST_BUCKETS: usize = 256;

/// One entry of the change feed: an item's current revision and where it sits in the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Change {
    pub seq: u64,
    pub collection: Collection,
    pub item: Item,
}

/// The leader's answer to one pushed edit.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case", try_from = "OutcomeFields")]
pub enum PushOutcome {
    /// The edit is (now) part of the leader's line of history.
    Accepted { rev: String },
    /// The leader held a diverging revision: it stays, and the edit is kept as `record`.
    Conflict {
        winner: Box<Item>,
        record: Box<Item>,
    },
    /// The leader held a diverging revision of a system item: it stays; no record is kept.
    Overruled { winner: Box<Item> },
}

/// [`PushOutcome`] as its fields arrive: an internally tagged enum would be buffered before it is
/// decoded, which item content (kept as JSON text) does not allow.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutcomeFields {
    outcome: String,
    rev: Option<String>,
    winner: Option<Box<Item>>,
    record: Option<Box<Item>>,
}

impl TryFrom<OutcomeFields> for PushOutcome {
    type Error = String;

    fn try_from(f: OutcomeFields) -> Result<PushOutcome, String> {
        match (f.outcome.as_str(), f.rev, f.winner, f.record) {
            ("accepted", Some(rev), None, None) => Ok(PushOutcome::Accepted { rev }),
            ("conflict", None, Some(winner), Some(record)) => {
                Ok(PushOutcome::Conflict { winner, record })
            }
            ("overruled", None, Some(winner), None) => Ok(PushOutcome::Overruled { winner }),
            (other, ..) => Err(format!("unexpected push outcome {other:?} or its fields")),
        }
    }
}

/// What applying the leader's changes did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub written: usize,
    pub skipped: usize,
    pub conflicts: usize,
}

fn sha(parts: &[&[u8]]) -> aws_lc_rs::digest::Digest {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    ctx.finish()
}

/// The bucket of an item key.
pub fn bucket_of(key: &[u8]) -> usize {
    sha(&[key]).as_ref()[0] as usize
}

/// An item's identity and revision, read without its content.
#[derive(Debug, Deserialize)]
pub struct ItemHead {
    pub id: String,
    pub rev: String,
    #[serde(default)]
    pub deleted: bool,
}

impl Inner {
    /// Up to `limit` change-log entries after `since` and at most `upto`, each made by `entry`
    /// from its sequence number, item and (when the entry carries them) the item's revision and
    /// deletion flag, and whether more follow. `entry` answers `None` for an item gone meanwhile.
    fn changes<R>(
        &self,
        since: u64,
        upto: u64,
        limit: usize,
        mut entry: impl FnMut(u64, Collection, String, Option<Head>) -> Result<Option<R>, StoreError>,
    ) -> Result<(Vec<R>, bool), StoreError> {
        let mut out = Vec::new();
        if since >= upto {
            return Ok((out, false));
        }
        let start = since.saturating_add(1).to_be_bytes();
        for kv in self.trees[CHANGES].range(start..=upto.to_be_bytes()) {
            let (k, v) = kv?;
            if out.len() == limit {
                return Ok((out, true));
            }
            let seq = read_u64(Some(k));
            let Some((collection, id, head)) = parse_change(&v) else {
                continue;
            };
            out.extend(entry(seq, collection, id, head)?);
        }
        Ok((out, false))
    }

    /// Whether the current revision of `key` is `rev`, read from the index without decoding the
    /// item.
    fn holds_rev(&self, key: &str, rev: &str) -> Result<bool, StoreError> {
        Ok(self.trees[INDEX]
            .get(key.as_bytes())?
            .is_some_and(|r| r.as_ref() == rev.as_bytes()))
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

    /// Settles the leader's answer to one pushed edit, adding the outbox entries it clears to
    /// `clears`; the caller holds the writer lock.
    fn settle_push(
        &self,
        coll: Collection,
        id: &str,
        pushed_rev: &str,
        outcome: PushOutcome,
        clears: &mut Vec<Op>,
    ) -> Result<(), StoreError> {
        let key = key_of(coll, id);
        let (winner, record) = match outcome {
            PushOutcome::Accepted { .. } => return self.clear_outbox(&key, pushed_rev, clears),
            PushOutcome::Conflict { winner, record } => (*winner, Some(*record)),
            PushOutcome::Overruled { winner } => (*winner, None),
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
    /// A receiver that sees the latest sequence number change (for long-polls).
    pub fn watch_seq(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.seq_tx.subscribe()
    }

    /// Up to `limit` changes after `since` and at most `upto`, in log order, and whether more
    /// follow. Pass a value [`Store::watch_seq`] has shown: changes up to it are complete, while
    /// later ones may still be in the making.
    pub async fn changes_since(
        &self,
        since: u64,
        upto: u64,
        limit: usize,
    ) -> Result<(Vec<Change>, bool), StoreError> {
        let read = move |inner: &Inner| {
            inner.changes(since, upto, limit, |seq, collection, id, _| {
                Ok(inner.read_as(collection, &id)?.map(|item| Change {
                    seq,
                    collection,
                    item,
                }))
            })
        };
        // A few changes (a long-poll answered as they come) are read on the calling thread.
        self.reading(upto.saturating_sub(since) < INLINE_BELOW as u64, read)
            .await
    }

    /// Like [`Store::changes_since`], with only each item's id, revision and deletion flag, read
    /// from the change log itself (for the user change feed, which shows no content): item bodies
    /// are neither read nor brought into the store's cache.
    pub async fn change_heads(
        &self,
        since: u64,
        limit: usize,
    ) -> Result<(Vec<(u64, Collection, ItemHead)>, bool), StoreError> {
        let upto = *self.inner.seq_tx.borrow();
        let read = move |inner: &Inner| {
            inner.changes(since, upto, limit, |seq, c, id, head| {
                Ok(match head {
                    Some((rev, deleted)) => Some((seq, c, ItemHead { id, rev, deleted })),
                    // An entry written by an earlier version: the item says.
                    None => inner.read_as(c, &id)?.map(|h| (seq, c, h)),
                })
            })
        };
        self.reading(upto.saturating_sub(since) < INLINE_BELOW as u64, read)
            .await
    }

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

    /// How many edits wait to be pushed.
    pub async fn outbox_len(&self) -> Result<usize, StoreError> {
        self.blocking(|inner| Ok(inner.trees[OUTBOX].len())).await
    }

    /// One digest per bucket over every item's key and revision, plus the sequence number it
    /// reflects at least.
    pub async fn digest(&self) -> Result<(Vec<String>, u64), StoreError> {
        self.blocking(|inner| {
            let seq = read_u64(inner.trees[META].get(META_SEQ)?);
            let mut acc = vec![[0u8; 16]; DIGEST_BUCKETS];
            for kv in inner.trees[INDEX].iter() {
                let (k, rev) = kv?;
                let d = sha(&[&k, b"\n", &rev]);
                let b = &mut acc[bucket_of(&k)];
                for (x, y) in b.iter_mut().zip(d.as_ref()) {
                    *x ^= y;
                }
            }
            let hex = acc
                .iter()
                .map(|b| b.iter().map(|x| format!("{x:02x}")).collect())
                .collect();
            Ok((hex, seq))
        })
        .await
    }

    /// `(collection, id, rev)` of every item in the given buckets.
    pub async fn bucket_keys(
        &self,
        buckets: Vec<usize>,
    ) -> Result<Vec<(Collection, String, String)>, StoreError> {
        self.blocking(move |inner| {
            let wanted: std::collections::HashSet<usize> = buckets.into_iter().collect();
            let mut out = Vec::new();
            for kv in inner.trees[INDEX].iter() {
                let (k, rev) = kv?;
                if wanted.contains(&bucket_of(&k))
                    && let Some((c, id)) = parse_key(&k)
                {
                    out.push((c, id, String::from_utf8_lossy(&rev).into_owned()));
                }
            }
            Ok(out)
        })
        .await
    }

    /// Current items for the given keys (missing ones are left out).
    pub async fn fetch(
        &self,
        keys: Vec<(Collection, String)>,
    ) -> Result<Vec<(Collection, Item)>, StoreError> {
        self.blocking(move |inner| {
            let mut out = Vec::with_capacity(keys.len());
            for (c, id) in keys {
                if let Some(item) = inner.get(c, &id)? {
                    out.push((c, item));
                }
            }
            Ok(out)
        })
        .await
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

    /// Leader: resolves pushed edits (fast-forward, or leader wins with a conflict record).
    pub async fn accept_pushed(
        &self,
        items: Vec<(Collection, Item)>,
        me: String,
    ) -> Result<Vec<PushOutcome>, StoreError> {
        let small = items.len() < INLINE_BELOW;
        let out = self
            .writing(small, move |inner, _g| {
                let mut writes = Vec::new();
                let mut outcomes = Vec::with_capacity(items.len());
                let mut seen = std::collections::HashSet::new();
                for (coll, item) in items {
                    if !seen.insert(key_of(coll, &item.id)) {
                        outcomes.push(PushOutcome::Accepted { rev: item.rev });
                        continue;
                    }
                    let local = inner.get(coll, &item.id)?;
                    match relate(local.as_ref(), &item) {
                        Relation::Absent | Relation::IncomingNewer => {
                            outcomes.push(PushOutcome::Accepted {
                                rev: item.rev.clone(),
                            });
                            writes.push(Write {
                                coll,
                                item,
                                prev: local,
                                outbox: false,
                            });
                        }
                        Relation::Same | Relation::LocalNewer => {
                            outcomes.push(PushOutcome::Accepted { rev: item.rev })
                        }
                        Relation::Diverged => {
                            let winner = local.expect("diverged implies a local item");
                            if keeps_losers(coll) {
                                let record = conflict_record(coll, &winner, &item, &me);
                                inner.add_record(&mut writes, record.clone(), false)?;
                                outcomes.push(PushOutcome::Conflict {
                                    winner: Box::new(winner),
                                    record: Box::new(record),
                                });
                            } else {
                                outcomes.push(PushOutcome::Overruled {
                                    winner: Box::new(winner),
                                });
                            }
                        }
                    }
                }
                inner.write(writes)?;
                Ok(outcomes)
            })
            .await?;
        self.durable().await?;
        Ok(out)
    }

    /// Follower: settles the leader's answers to edits pushed as `(collection, id, pushed
    /// revision)`, in push order. An error leaves the unsettled edits queued.
    pub async fn settle_pushes(
        &self,
        answers: Vec<((Collection, String, String), PushOutcome)>,
    ) -> Result<(), StoreError> {
        let small = answers.len() < INLINE_BELOW;
        self.writing(small, move |inner, _g| {
            let mut clears = Vec::new();
            let settled = answers
                .into_iter()
                .try_for_each(|((coll, id, pushed_rev), outcome)| {
                    inner.settle_push(coll, &id, &pushed_rev, outcome, &mut clears)
                });
            // What was settled before an error stays settled.
            inner.commit_changes(clears)?;
            settled
        })
        .await
    }

    /// Follower: applies the leader's changes. A diverging local revision with a push pending is
    /// left for the push to settle; one without (the leader lost its copy) loses to the leader and
    /// is kept as a conflict record that is pushed to the leader. `then` is a meta value set
    /// right after them in the same ordered log (the feed cursor they bring this follower to), so
    /// it is never recovered without them.
    pub async fn apply_feed(
        &self,
        items: Vec<(Collection, Item)>,
        me: String,
        then: Option<(&'static str, Vec<u8>)>,
    ) -> Result<Applied, StoreError> {
        let small = items.len() < INLINE_BELOW;
        let applied = self
            .writing(small, move |inner, _g| {
                let mut writes = Vec::new();
                let mut done = Applied::default();
                let mut cleared = Vec::new();
                let mut seen = std::collections::HashSet::new();
                for (coll, item) in items {
                    let key = key_of(coll, &item.id);
                    if !seen.insert(key.clone()) {
                        continue;
                    }
                    let pending = inner.outbox_rev(&key)?;
                    // Most often this server already holds the revision (its own pushed edit
                    // coming back): settled from the index, without reading the item.
                    if inner.holds_rev(&key, &item.rev)? {
                        if let Some(p) = pending.filter(|p| *p == item.rev) {
                            cleared.push((key, p));
                        }
                        done.skipped += 1;
                        continue;
                    }
                    let local = inner.get(coll, &item.id)?;
                    match relate(local.as_ref(), &item) {
                        Relation::Absent | Relation::IncomingNewer => {
                            if let Some(p) = pending.filter(|p| item.descends_from(p)) {
                                cleared.push((key, p));
                            }
                            done.written += 1;
                            writes.push(Write {
                                coll,
                                item,
                                prev: local,
                                outbox: false,
                            });
                        }
                        Relation::Same => {
                            if let Some(p) = pending.filter(|p| *p == item.rev) {
                                cleared.push((key, p));
                            }
                            done.skipped += 1;
                        }
                        Relation::LocalNewer => done.skipped += 1,
                        Relation::Diverged if pending.is_some() => done.skipped += 1,
                        Relation::Diverged => {
                            let loser = local.expect("diverged implies a local item");
                            if keeps_losers(coll)
                                && inner.add_record(
                                    &mut writes,
                                    conflict_record(coll, &item, &loser, &me),
                                    true,
                                )?
                            {
                                done.conflicts += 1;
                            }
                            done.written += 1;
                            writes.push(Write {
                                coll,
                                item,
                                prev: Some(loser),
                                outbox: false,
                            });
                        }
                    }
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
            .await?;
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Content;
    use serde_json::json;

    fn item(rev: &str) -> Box<Item> {
        Box::new(Item {
            id: "w1".into(),
            name: "n".into(),
            content: Content::of(&json!({"b": [1, {"c": "x"}], "a": null})),
            rev: rev.into(),
            updated_at: "2026-01-01T00:00:00.000Z".into(),
            updated_by: "u".into(),
            origin: "s".into(),
            deleted: false,
            ancestors: vec![],
            seq: 3,
        })
    }

    #[test]
    fn push_outcomes_travel_with_their_items_intact() {
        let outcomes = vec![
            PushOutcome::Accepted { rev: "2-a".into() },
            PushOutcome::Conflict {
                winner: item("2-b"),
                record: item("1-c"),
            },
            PushOutcome::Overruled {
                winner: item("3-d"),
            },
        ];
        let text = serde_json::to_string(&outcomes).unwrap();
        let back: Vec<PushOutcome> = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), text);
        match &back[1] {
            PushOutcome::Conflict { winner, .. } => {
                assert_eq!(
                    winner.content.value(),
                    json!({"b": [1, {"c": "x"}], "a": null})
                )
            }
            other => panic!("decoded as {other:?}"),
        }
        let bad = r#"{"outcome":"accepted","winner":null}"#;
        assert!(serde_json::from_str::<PushOutcome>(bad).is_err());
    }
}
