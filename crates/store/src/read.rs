//! Reads: single items (on the calling thread: one lookup), listings in id order, an item's
//! kept revisions, counts and sizes.

use std::sync::atomic::Ordering;

use crate::item::{Collection, Item, Revision};
use crate::keys::{
    META, META_SEQ, count_key, decode, hist, hist_key_of, hist_prefix, idx, is_head, read_u64,
};
use crate::{Inner, ItemHead, Store, StoreError};

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<Item>,
    /// Pass back as `after` to continue; `None` on the last page.
    pub next: Option<String>,
}

impl Store {
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
        self.blocking(move |inner| inner.list(coll, after.as_deref(), limit, false))
            .await
    }

    /// Deleted items (their tombstones) in id order, starting after `after`.
    pub async fn list_deleted(
        &self,
        coll: Collection,
        after: Option<String>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        self.blocking(move |inner| inner.list(coll, after.as_deref(), limit, true))
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
            if let Some(current) = inner.get(coll, &id)?
                && current.rev == rev
            {
                return Ok(current.revision());
            }
            match inner.trees[hist(coll)].get(hist_key_of(&id, &rev))? {
                Some(v) => decode(&v),
                None => Err(StoreError::NotFound),
            }
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

    /// A number that grows after every committed write of an item of `coll`, so whatever was
    /// read of that collection under one number is still current while it holds.
    pub fn writes_to(&self, coll: Collection) -> u64 {
        self.inner.writes_to[idx(coll)].load(Ordering::SeqCst)
    }
}

impl Inner {
    pub(crate) fn get(&self, coll: Collection, id: &str) -> Result<Option<Item>, StoreError> {
        match self.trees[idx(coll)].get(id.as_bytes())? {
            Some(v) => self.current_of(coll, id.as_bytes(), v),
            None => Ok(None),
        }
    }

    /// The item the value `v` read under key `id` of `coll`'s item tree holds ([`Inner::item_of`]).
    /// A write may replace the item between the read of its head and of its body and take away
    /// the body it named (a losing revision, a pruned one): the head is then read again, and
    /// the item is `None` if it went meanwhile.
    pub(crate) fn current_of(
        &self,
        coll: Collection,
        id: &[u8],
        mut v: sled::IVec,
    ) -> Result<Option<Item>, StoreError> {
        for _ in 0..3 {
            match self.item_of(coll, &v) {
                Err(StoreError::Corrupt(e)) => match self.trees[idx(coll)].get(id)? {
                    Some(again) if again != v => v = again,
                    Some(_) => return Err(StoreError::Corrupt(e)),
                    None => return Ok(None),
                },
                other => return other.map(Some),
            }
        }
        self.item_of(coll, &v).map(Some)
    }

    /// The current item `id` of `coll` without reading its body when it is stored as a head
    /// (its content is then `null`): for writers that need its revision, ancestry and flags.
    pub(crate) fn get_head(&self, coll: Collection, id: &str) -> Result<Option<Item>, StoreError> {
        self.trees[idx(coll)]
            .get(id.as_bytes())?
            .map(|v| decode(&v))
            .transpose()
    }

    /// The item a stored value of `coll`'s item tree holds: whole (as earlier versions and
    /// collections without history keep it), or a head whose body is read from history.
    pub(crate) fn item_of(&self, coll: Collection, v: &[u8]) -> Result<Item, StoreError> {
        let mut item: Item = decode(v)?;
        if is_head(v) {
            let Some(body) = self.trees[hist(coll)].get(hist_key_of(&item.id, &item.rev))? else {
                return Err(StoreError::Corrupt(format!(
                    "the body of {}/{} at {} is missing",
                    coll.as_str(),
                    item.id,
                    item.rev
                )));
            };
            item.content = decode::<Revision>(&body)?.content;
        }
        Ok(item)
    }

    /// The current item `id` of `coll` decoded as `T` (the whole item, or only its head).
    pub(crate) fn read_as<T: serde::de::DeserializeOwned>(
        &self,
        coll: Collection,
        id: &str,
    ) -> Result<Option<T>, StoreError> {
        self.trees[idx(coll)]
            .get(id.as_bytes())?
            .map(|v| decode(&v))
            .transpose()
    }

    pub(crate) fn list(
        &self,
        coll: Collection,
        after: Option<&str>,
        limit: usize,
        deleted: bool,
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
            let (k, v) = kv?;
            let head: ItemHead = decode(&v)?;
            if head.deleted != deleted {
                continue;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.extend(self.current_of(coll, &k, v)?);
        }
        let next = if more {
            items.last().map(|i| i.id.clone())
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// The current revision, then the superseded ones the history tree keeps, newest first.
    pub(crate) fn history(&self, coll: Collection, id: &str) -> Result<Vec<Revision>, StoreError> {
        let tree = &self.trees[hist(coll)];
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
}
