//! How the store lays out its sled trees and encodes their keys and values: which tree holds
//! what, item keys (`collection/id`), history keys (id, generation, hash), change-log entries,
//! counters and the JSON encoding of stored records.

use crate::StoreError;
use crate::item::{Collection, Item};

/// The number of collections; the trees come in this order: items per collection, history per
/// collection, then the single trees below.
pub(crate) const N: usize = Collection::ALL.len();
/// Sequence number → change-log entry (see [`change_entry`]).
pub(crate) const CHANGES: usize = 2 * N;
/// Small values: incarnation, sequence counter, item counts, the log's applied LSN and the
/// callers' own values ([`crate::Store::meta_get`]).
pub(crate) const META: usize = 2 * N + 1;
/// `collection/id` → current revision: small, so digests never read item bodies.
pub(crate) const INDEX: usize = 2 * N + 2;
/// `collection/id` → revision waiting to be pushed to the leader.
pub(crate) const OUTBOX: usize = 2 * N + 3;
/// The write in progress, recorded whole (see the `journal` module).
pub(crate) const JOURNAL: usize = 2 * N + 4;

/// The sled tree names, in the order of the indices above.
pub(crate) fn tree_names() -> Vec<String> {
    let mut names = Vec::with_capacity(JOURNAL + 1);
    names.extend(
        Collection::ALL
            .iter()
            .map(|c| format!("items/{}", c.as_str())),
    );
    names.extend(
        Collection::ALL
            .iter()
            .map(|c| format!("history/{}", c.as_str())),
    );
    names.extend(["changes", "meta", "index", "outbox", "journal"].map(String::from));
    names
}

/// The meta key of the latest sequence number.
pub(crate) const META_SEQ: &[u8] = b"seq";
/// The meta key of the store's incarnation.
pub(crate) const META_INCARNATION: &[u8] = b"incarnation";
/// The prefix of the meta keys marking items whose history is to be taken from the leader.
pub(crate) const META_RESYNC: &str = "resync/";

/// The meta key marking the item `key` for a history resync.
pub(crate) fn resync_key(key: &str) -> Vec<u8> {
    format!("{META_RESYNC}{key}").into_bytes()
}

/// The tree of current items of `c`.
pub(crate) fn idx(c: Collection) -> usize {
    Collection::ALL.iter().position(|x| *x == c).unwrap_or(0)
}

/// The tree of superseded revisions of `c`.
pub(crate) fn hist(c: Collection) -> usize {
    N + idx(c)
}

/// `collection/id`: the key of the index, outbox and change log.
pub(crate) fn key_of(coll: Collection, id: &str) -> String {
    format!("{}/{}", coll.as_str(), id)
}

pub(crate) fn parse_key(key: &[u8]) -> Option<(Collection, String)> {
    let s = std::str::from_utf8(key).ok()?;
    let (c, id) = s.split_once('/')?;
    Some((Collection::parse(c)?, id.to_string()))
}

/// A change-log entry: the item's `collection/id`, then its revision and deletion flag, NUL
/// separated, so that readers wanting only those (the user change feed) never read the item.
pub(crate) fn change_entry(key: &str, item: &Item) -> Vec<u8> {
    let mut v = Vec::with_capacity(key.len() + item.rev.len() + 3);
    v.extend_from_slice(key.as_bytes());
    v.push(0);
    v.extend_from_slice(item.rev.as_bytes());
    v.push(0);
    v.push(if item.deleted { b'1' } else { b'0' });
    v
}

/// An item's revision and whether it is deleted, as a change-log entry carries them.
pub(crate) type Head = (String, bool);

/// A change-log entry's item, and its revision and deletion flag when the entry carries them
/// (entries written by earlier versions hold the key alone).
pub(crate) fn parse_change(entry: &[u8]) -> Option<(Collection, String, Option<Head>)> {
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

/// The meta key counting the live items of `c`.
pub(crate) fn count_key(c: Collection) -> Vec<u8> {
    format!("count/{}", c.as_str()).into_bytes()
}

/// The prefix of every history key of item `id`.
pub(crate) fn hist_prefix(id: &str) -> Vec<u8> {
    let mut k = id.as_bytes().to_vec();
    k.push(0);
    k
}

/// A superseded revision's history key: the item's id, its generation (big-endian, so keys sort
/// by age) and its hash.
pub(crate) fn hist_key(item: &Item) -> Vec<u8> {
    hist_key_of(&item.id, &item.rev)
}

/// The history key of revision `rev` of item `id`.
pub(crate) fn hist_key_of(id: &str, rev: &str) -> Vec<u8> {
    let mut k = hist_prefix(id);
    k.extend_from_slice(&crate::item::rev_generation(rev).to_be_bytes());
    k.extend_from_slice(rev.split_once('-').map(|(_, h)| h).unwrap_or("").as_bytes());
    k
}

/// Where the history keys of `id` at `generation` begin (keys sort by generation).
pub(crate) fn hist_at(id: &str, generation: u64) -> Vec<u8> {
    let mut k = hist_prefix(id);
    k.extend_from_slice(&generation.to_be_bytes());
    k
}

/// The revision `N-HASH` a history key names, given the key without its item prefix.
pub(crate) fn rev_of_hist_key(rest: &[u8]) -> Option<String> {
    let (generation, hash) = rest.split_first_chunk::<8>()?;
    Some(format!(
        "{}-{}",
        u64::from_be_bytes(*generation),
        std::str::from_utf8(hash).ok()?
    ))
}

/// An outbox entry: the pending revision, and the revision the leader was last known to hold
/// (where the chain of pending revisions starts), NUL separated.
pub(crate) fn outbox_value(rev: &str, base: Option<&str>) -> Vec<u8> {
    let mut v = rev.as_bytes().to_vec();
    if let Some(b) = base {
        v.push(0);
        v.extend_from_slice(b.as_bytes());
    }
    v
}

/// An outbox entry's pending revision and base (see [`outbox_value`]; entries written by
/// earlier versions hold the revision alone, their base unknown).
pub(crate) fn parse_outbox(v: &[u8]) -> (String, Option<String>) {
    let text = String::from_utf8_lossy(v);
    match text.split_once('\0') {
        Some((rev, base)) => (rev.to_string(), Some(base.to_string())),
        None => (text.into_owned(), None),
    }
}

/// A big-endian counter (0 when absent or malformed).
pub(crate) fn read_u64(v: Option<sled::IVec>) -> u64 {
    v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

/// Decodes a stored record in any of its forms: JSON (as earlier versions wrote every record),
/// an item's head ([`encode_head`]) or a compressed record ([`encode_body`]).
pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |e: serde_json::Error| StoreError::Corrupt(e.to_string());
    match bytes.split_first() {
        Some((&HEAD, rest)) => serde_json::from_slice(rest).map_err(corrupt),
        Some((&ZSTD, rest)) => {
            let json = zstd::bulk::decompress(rest, MAX_BODY)
                .map_err(|e| StoreError::Corrupt(format!("a compressed record: {e}")))?;
            serde_json::from_slice(&json).map_err(corrupt)
        }
        _ => serde_json::from_slice(bytes).map_err(corrupt),
    }
}

/// The first byte of an item's head: the current item without its body, which is kept once,
/// under its revision in the history tree.
pub(crate) const HEAD: u8 = b'H';
/// The first byte of a zstd-compressed record.
const ZSTD: u8 = b'Z';
/// Records from this size on are compressed when that saves at least an eighth: a large
/// dashboard definition shrinks to about a fifth, while compressing every small one would cost
/// each save more CPU than the disk it saves is worth (measured with folio-bench's 4 KB bodies).
const COMPRESS_FROM: usize = 16 * 1024;
/// The largest record a compressed one may expand to.
const MAX_BODY: usize = 1 << 30;

/// Whether a stored item is a head, its body kept in the history tree.
pub(crate) fn is_head(bytes: &[u8]) -> bool {
    bytes.first() == Some(&HEAD)
}

/// An item's head: the item, its content left out (`null`); the content is taken out for the
/// encoding and put back, so a large body is not copied.
pub(crate) fn encode_head(item: &mut crate::item::Item) -> Vec<u8> {
    let content = std::mem::replace(&mut item.content, crate::item::Content::null());
    let mut out = vec![HEAD];
    out.extend(encode(item));
    item.content = content;
    out
}

/// A revision with its body as the history tree keeps it: compressed (zstd) when that pays.
pub(crate) fn encode_body(r: &crate::item::Revision) -> Vec<u8> {
    let json = encode(r);
    if json.len() >= COMPRESS_FROM
        && let Ok(packed) = zstd::bulk::compress(&json, 3)
        && packed.len() + 1 < json.len() - json.len() / 8
    {
        let mut out = Vec::with_capacity(packed.len() + 1);
        out.push(ZSTD);
        out.extend(packed);
        return out;
    }
    json
}

pub(crate) fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("stored records always serialise")
}
