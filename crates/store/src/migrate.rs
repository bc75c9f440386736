//! Brings a store written by an earlier version to the current layout when it opens: format 2
//! keeps each revision's body once, under the revision in the history tree, with the current
//! item's head (no body) in the item tree; earlier versions kept the current item whole there
//! and copied it into history when it was superseded.
//!
//! The migration is idempotent and safe to cut short: each batch's bodies reach the disk before
//! the heads that refer to them, an item already a head is skipped, and the format is recorded
//! last, so a store the migration did not finish is migrated again at its next start.
//!
//! Earlier versions did not keep the same history on every server, so each converted workbook
//! and data source is also marked for a history resync: a follower upgraded under load takes
//! its leader's history of each once it is caught up (and hands over, by pushing its lines, the
//! revisions only it kept).

use crate::StoreError;
use crate::item::{Collection, Item};
use crate::keys::{
    META, N, decode, encode_body, encode_head, hist, hist_key, idx, is_head, key_of, read_u64,
    resync_key,
};

/// The meta key of the store's layout version.
const META_FORMAT: &[u8] = b"format";
/// The layout this version writes.
pub(crate) const FORMAT: u64 = 2;
/// Items converted per batch.
const BATCH: usize = 1_000;

/// Converts the items of every collection that keeps history (`history_keep` above 1) to heads
/// with their bodies in history, unless the store is at [`FORMAT`] already; answers how many.
pub(crate) fn to_current(
    db: &sled::Db,
    trees: &[sled::Tree],
    history_keep: &[usize; N],
) -> Result<usize, StoreError> {
    if read_u64(trees[META].get(META_FORMAT)?) >= FORMAT {
        return Ok(0);
    }
    let mut moved = 0;
    for c in Collection::ALL {
        if history_keep[idx(c)] <= 1 {
            continue;
        }
        let mut pending: Vec<(sled::IVec, Item)> = Vec::with_capacity(BATCH);
        for kv in trees[idx(c)].iter() {
            let (k, v) = kv?;
            if is_head(&v) {
                continue;
            }
            pending.push((k, decode(&v)?));
            if pending.len() == BATCH {
                moved += convert(db, trees, c, std::mem::take(&mut pending))?;
            }
        }
        moved += convert(db, trees, c, pending)?;
    }
    trees[META].insert(META_FORMAT, &FORMAT.to_be_bytes())?;
    db.flush()?;
    if moved > 0 {
        tracing::info!(
            items = moved,
            "stored each current body once, under its revision"
        );
    }
    Ok(moved)
}

/// Writes the bodies of `items` into history and makes them durable, then makes the items heads.
fn convert(
    db: &sled::Db,
    trees: &[sled::Tree],
    c: Collection,
    items: Vec<(sled::IVec, Item)>,
) -> Result<usize, StoreError> {
    if items.is_empty() {
        return Ok(0);
    }
    let mut bodies = sled::Batch::default();
    let mut heads = sled::Batch::default();
    let mut marks = sled::Batch::default();
    let resync = matches!(c, Collection::Workbooks | Collection::Datasources);
    let n = items.len();
    for (k, mut item) in items {
        bodies.insert(hist_key(&item), encode_body(&item.revision()));
        if resync {
            marks.insert(resync_key(&key_of(c, &item.id)), Vec::<u8>::new());
        }
        heads.insert(k, encode_head(&mut item));
    }
    trees[hist(c)].apply_batch(bodies)?;
    trees[META].apply_batch(marks)?;
    db.flush()?;
    trees[idx(c)].apply_batch(heads)?;
    Ok(n)
}
