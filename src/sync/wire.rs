//! The shapes that travel between servers on `/cluster/v1/*`. Every answer carries the answering
//! server's `term`, so the caller can adopt a newer one or refuse a fenced leader.

use serde::{Deserialize, Serialize};

use crate::store::{Change, Collection, Item, PushOutcome};

/// An item of a collection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub collection: Collection,
    pub item: Item,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TokenAnswer {
    pub token: String,
    pub server: String,
    pub incarnation: String,
    pub term: u64,
    pub now_ms: u64,
    pub expires_in: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    pub edits: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PushAnswer {
    pub term: u64,
    pub outcomes: Vec<PushOutcome>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ChangesAnswer {
    pub term: u64,
    pub incarnation: String,
    /// The leader's latest sequence number when it answered.
    pub leader_seq: u64,
    /// Where the next request continues from.
    pub next: u64,
    pub more: bool,
    pub changes: Vec<Change>,
    /// The other followers the leader knows, so every follower can show the whole cluster.
    #[serde(default)]
    pub members: Vec<MemberSummary>,
}

/// A follower as its leader sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberSummary {
    pub id: String,
    pub last_contact: String,
    pub lag: u64,
    pub version: Option<String>,
    pub reachable: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DigestAnswer {
    pub term: u64,
    pub incarnation: String,
    /// The change-log position the digest reflects at least.
    pub seq: u64,
    pub buckets: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysRequest {
    pub buckets: Vec<usize>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct KeysAnswer {
    pub term: u64,
    pub keys: Vec<(Collection, String, String)>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchRequest {
    pub keys: Vec<(Collection, String)>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FetchAnswer {
    pub term: u64,
    pub items: Vec<Entry>,
}
