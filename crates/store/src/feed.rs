//! The change feed and what reconciliation reads: changes after a sequence number (whole items,
//! or only their heads, read from the change log itself), a watch of the latest sequence number
//! to long-poll on, bucketed digests of every item's revision, and items by key.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::item::{ANCESTORS_KEEP, Collection, Item, Revision, rev_generation};
use crate::keys::{
    CHANGES, Head, INDEX, META, META_SEQ, decode, hist, hist_key_of, hist_prefix, parse_change,
    parse_key, read_u64, rev_of_hist_key,
};
use crate::{INLINE_BELOW, Inner, Store, StoreError};

/// Number of digest buckets an item key hashes into.
pub const DIGEST_BUCKETS: usize = 256;

/// One entry of the change feed: a revision of an item (every revision history keeps has its
/// entry) and where it sits in the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Change {
    pub seq: u64,
    pub collection: Collection,
    pub item: Item,
}

/// An item's identity and revision, read without its content.
#[derive(Debug, Deserialize)]
pub struct ItemHead {
    pub id: String,
    pub rev: String,
    #[serde(default)]
    pub deleted: bool,
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
}

impl Inner {
    /// Revision `rev` of an item as the change feed carries it: the current item, or a
    /// superseded revision from history with its ancestors. `None` when it is kept no more.
    /// Without `rev` (change-log entries of earlier versions), the current item.
    fn revision_at(
        &self,
        coll: Collection,
        id: &str,
        rev: Option<String>,
    ) -> Result<Option<Item>, StoreError> {
        let Some(current) = self.get(coll, id)? else {
            return Ok(None);
        };
        let Some(rev) = rev.filter(|r| *r != current.rev) else {
            return Ok(Some(current));
        };
        let tree = &self.trees[hist(coll)];
        let key = hist_key_of(id, &rev);
        let Some(v) = tree.get(&key)? else {
            return Ok(None);
        };
        // Its ancestors: the kept revisions below it (a revision in the change log is on the
        // item's line: one that lost is written without an entry), read from their keys,
        // then those of the current item's older than the oldest kept.
        let mut ancestors: Vec<String> = Vec::new();
        let prefix = hist_prefix(id);
        for k in tree
            .range(prefix.clone()..key)
            .keys()
            .rev()
            .take(ANCESTORS_KEEP)
        {
            ancestors.extend(rev_of_hist_key(&k?[prefix.len()..]));
        }
        let oldest = ancestors
            .last()
            .map_or(rev_generation(&rev), |a| rev_generation(a));
        let older = current
            .ancestors
            .iter()
            .filter(|a| rev_generation(a) < oldest)
            .take(ANCESTORS_KEEP.saturating_sub(ancestors.len()))
            .cloned()
            .collect::<Vec<_>>();
        ancestors.extend(older);
        Ok(Some(decode::<Revision>(&v)?.into_item(id, ancestors)))
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
            inner.changes(since, upto, limit, |seq, collection, id, head| {
                Ok(inner
                    .revision_at(collection, &id, head.map(|(rev, _)| rev))?
                    .map(|item| Change {
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
            let wanted: HashSet<usize> = buckets.into_iter().collect();
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
}
