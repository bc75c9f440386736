//! The cluster protocol: the headers and version every server-to-server call carries, the proof
//! a server makes to obtain a server token, and the shapes that travel between servers on
//! `/cluster/v1/*`. Every answer carries the answering server's `term`, so the caller can adopt a
//! newer one or refuse a fenced leader.

use serde::{Deserialize, Serialize};

use crate::store::{Change, Collection, Item, Pushed, Revision};

/// The cluster protocol this build speaks.
pub const PROTOCOL: u32 = 1;
pub const PROTOCOL_HEADER: &str = "folio-protocol";
pub const TERM_HEADER: &str = "folio-term";
pub const VERSION_HEADER: &str = "folio-version";
/// The caller's clock (Unix milliseconds) when it sent the call, so that the receiver measures
/// the offset between the two at every call (earlier versions do not send it).
pub const NOW_HEADER: &str = "folio-now";
/// Sent by a follower that takes changes as deltas ([`Delta`]); earlier versions do not.
pub const DELTAS_HEADER: &str = "folio-deltas";
pub const CLUSTER_AUDIENCE: &str = "folio-cluster";
/// How far the timestamp of a proof answering no challenge (an earlier version's) may be from
/// this server's clock.
pub const PROOF_WINDOW_MS: u64 = 60_000;

/// What a server sends to obtain a token.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub id: String,
    pub nonce: String,
    pub ts_ms: u64,
    pub protocol: u32,
    pub proof: String,
    /// The id of the server the proof is meant for (absent from older versions' requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// The challenge from `POST /cluster/v1/challenge` that the proof answers (absent from
    /// older versions' requests, whose timestamp is judged against the receiver's clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<String>,
}

/// What `POST /cluster/v1/challenge` answers: a single-use challenge for the next token
/// request's proof to answer, so that no two clocks need agree.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChallengeAnswer {
    /// 32 hex digits; answerable once.
    pub challenge: String,
    /// The id of the server that issued it.
    pub server: String,
    /// How long it may be answered, as the issuing server measures time.
    pub expires_in_ms: u64,
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `theirs - ours` for two clock readings (Unix milliseconds), whatever values they hold.
pub fn offset_ms(theirs: u64, ours: u64) -> i64 {
    (i128::from(theirs) - i128::from(ours)).clamp(i64::MIN.into(), i64::MAX.into()) as i64
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// What a proof signs: the caller, a fresh nonce, the time, the protocol and, from this version
/// on, the server the proof is meant for (so it cannot be replayed on another).
pub(crate) fn message(
    id: &str,
    nonce: &str,
    ts_ms: u64,
    protocol: u32,
    audience: Option<&str>,
    challenge: Option<&str>,
) -> Vec<u8> {
    let mut m = format!("folio-server-token\n{protocol}\n{id}\n{nonce}\n{ts_ms}");
    if let Some(a) = audience {
        m.push_str("\nfor ");
        m.push_str(a);
    }
    if let Some(c) = challenge {
        m.push_str("\nanswering ");
        m.push_str(c);
    }
    m.into_bytes()
}

pub(crate) fn hmac_key(secret: &str) -> aws_lc_rs::hmac::Key {
    aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes())
}

/// A fresh token request proving knowledge of `secret`, meant for no server in particular (as
/// earlier versions make them).
pub fn make_request(secret: &str, id: &str) -> TokenRequest {
    make_request_for(secret, id, None)
}

/// A fresh token request proving knowledge of `secret`, bound to the server `audience` when
/// given: no other server accepts it.
pub fn make_request_for(secret: &str, id: &str, audience: Option<&str>) -> TokenRequest {
    proof(secret, id, audience, None)
}

/// A token request answering `challenge` (from `POST /cluster/v1/challenge` of the server
/// `audience`): judged by that server alone, whatever the two clocks say.
pub fn make_request_answering(
    secret: &str,
    id: &str,
    audience: Option<&str>,
    challenge: &str,
) -> TokenRequest {
    proof(secret, id, audience, Some(challenge))
}

impl TokenRequest {
    /// What the proof of this request signs.
    pub(crate) fn signed(&self) -> Vec<u8> {
        message(
            &self.id,
            &self.nonce,
            self.ts_ms,
            self.protocol,
            self.audience.as_deref(),
            self.challenge.as_deref(),
        )
    }
}

/// Signs `req` again after its fields changed (a test's proof from a clock far off).
pub fn resign(secret: &str, req: &mut TokenRequest) {
    req.proof = hex(aws_lc_rs::hmac::sign(&hmac_key(secret), &req.signed()).as_ref());
}

fn proof(secret: &str, id: &str, audience: Option<&str>, challenge: Option<&str>) -> TokenRequest {
    let mut n = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut n);
    let mut req = TokenRequest {
        id: id.into(),
        nonce: hex(&n),
        ts_ms: now_ms(),
        protocol: PROTOCOL,
        proof: String::new(),
        audience: audience.map(str::to_string),
        challenge: challenge.map(str::to_string),
    };
    resign(secret, &mut req);
    req
}

/// An item of a collection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub collection: Collection,
    pub item: Item,
    /// In a fetch asked `history`: the revisions the item's history keeps, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Revision>,
    /// In a push to a leader that takes them: the item's content as a [`Delta`] from an earlier
    /// revision (the one before it in the same push, or one the leader holds); `content` is
    /// then `null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<Delta>,
    /// In a push: the first revision of the item's whole kept line (the pusher does not know
    /// what the leader holds of it), taken even where it starts above a revision the leader
    /// lacks (absent from earlier versions, which never refuse such gaps).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub whole: bool,
}

impl Entry {
    pub fn new(collection: Collection, item: Item) -> Entry {
        Entry {
            collection,
            item,
            history: Vec::new(),
            delta: None,
            whole: false,
        }
    }

    /// The entries pushing `chain`, an item's revisions oldest first; `whole` when it is the
    /// item's whole kept line.
    pub fn line(collection: Collection, chain: Vec<Item>, whole: bool) -> Vec<Entry> {
        let mut out: Vec<Entry> = chain
            .into_iter()
            .map(|i| Entry::new(collection, i))
            .collect();
        if let Some(first) = out.first_mut() {
            first.whole = whole;
        }
        out
    }
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
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

impl PushOutcome {
    /// The answer for the pushed revision `rev`, given what the leader's store did with it.
    pub fn of(rev: String, pushed: Pushed) -> PushOutcome {
        match pushed {
            Pushed::Accepted => PushOutcome::Accepted { rev },
            Pushed::Lost {
                winner,
                record: Some(record),
            } => PushOutcome::Conflict { winner, record },
            Pushed::Lost {
                winner,
                record: None,
            } => PushOutcome::Overruled { winner },
        }
    }

    /// What the follower's store settles for this answer.
    pub fn settled(self) -> Pushed {
        match self {
            PushOutcome::Accepted { .. } => Pushed::Accepted,
            PushOutcome::Conflict { winner, record } => Pushed::Lost {
                winner,
                record: Some(record),
            },
            PushOutcome::Overruled { winner } => Pushed::Lost {
                winner,
                record: None,
            },
        }
    }
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
    pub changes: Vec<FeedChange>,
    /// The other followers the leader knows, so every follower can show the whole cluster.
    #[serde(default)]
    pub members: Vec<MemberSummary>,
    /// The leader takes pushed edits as deltas (earlier versions do not say so, and do not).
    #[serde(default)]
    pub takes_deltas: bool,
    /// The leader's clock (Unix milliseconds) when it answered, so that a follower measures its
    /// offset at every poll (earlier versions do not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now_ms: Option<u64>,
}

/// A change on the leader's feed: the item whole, or, for a follower that takes deltas when that
/// is smaller, the item without its content and a [`Delta`] from its parent revision.
#[derive(Debug, Serialize, Deserialize)]
pub struct FeedChange {
    pub seq: u64,
    pub collection: Collection,
    pub item: Item,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<Delta>,
}

impl From<Change> for FeedChange {
    fn from(c: Change) -> FeedChange {
        FeedChange {
            seq: c.seq,
            collection: c.collection,
            item: c.item,
            delta: None,
        }
    }
}

/// Content larger than this (bytes of JSON) may travel as a [`Delta`].
pub const DELTA_FROM: usize = 4096;

/// A revision's content as a JSON Patch (RFC 6902) against the content of revision `base`; the
/// result is checked against the new revision's hash, which covers the content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delta {
    pub base: String,
    pub patch: json_patch::Patch,
}

impl Delta {
    /// The delta from `base` (a parent revision's content) to `item`'s content, when its JSON is
    /// less than half the size of the content's.
    pub fn between(base_rev: &str, base: &serde_json::Value, item: &Item) -> Option<Delta> {
        let new = item.content.value();
        let patch = json_patch::diff(base, &new);
        let size = serde_json::to_vec(&patch).ok()?.len();
        (size * 2 < item.content.get().len()).then(|| Delta {
            base: base_rev.to_string(),
            patch,
        })
    }

    /// `item` whole again: the delta applied to `local` (which must be revision `base`), checked
    /// against `item`'s revision. `None` when it does not apply or does not give that revision
    /// (the caller then fetches the item whole).
    pub fn apply(&self, local: &Item, mut item: Item) -> Option<Item> {
        if local.rev != self.base {
            return None;
        }
        let mut content = local.content.value();
        json_patch::patch(&mut content, &self.patch.0).ok()?;
        let rev =
            crate::store::item::next_rev(Some(&self.base), &item.name, item.deleted, &content);
        if rev != item.rev {
            return None;
        }
        item.content = crate::store::Content::of(&content);
        Some(item)
    }
}

/// A follower as its leader sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberSummary {
    pub id: String,
    pub last_contact: String,
    pub lag: u64,
    pub version: Option<String>,
    pub reachable: bool,
    /// Its clock minus the leader's (earlier versions do not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<i64>,
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
    /// Answer each item with the revisions its history keeps.
    #[serde(default)]
    pub history: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FetchAnswer {
    pub term: u64,
    pub items: Vec<Entry>,
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
            restored_from: None,
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

    #[test]
    fn push_outcomes_say_what_the_store_did_and_back() {
        let verdicts = [
            Pushed::Accepted,
            Pushed::Lost {
                winner: item("2-b"),
                record: Some(item("1-c")),
            },
            Pushed::Lost {
                winner: item("3-d"),
                record: None,
            },
        ];
        for verdict in verdicts {
            let outcome = PushOutcome::of("2-a".into(), verdict.clone());
            assert_eq!(outcome.settled(), verdict);
        }
    }

    /// Revision `rev`'s successor holding `content`, as an editor would make it.
    fn edited(parent: &Item, content: serde_json::Value) -> Item {
        let mut next = parent.clone();
        next.rev = crate::store::item::next_rev(Some(&parent.rev), &parent.name, false, &content);
        next.ancestors = vec![parent.rev.clone()];
        next.content = Content::of(&content);
        next
    }

    #[test]
    fn a_delta_rebuilds_the_revision_and_anything_else_is_refused() {
        let big = json!({"sheets": (0..200).map(|i| json!({"title": format!("sheet {i}"), "n": i})).collect::<Vec<_>>()});
        let base = *item("1-00000000000000000000000000000000");
        let base = edited(&base, big.clone());
        let mut changed = big.clone();
        changed["sheets"][7]["title"] = json!("renamed");
        let next = edited(&base, changed.clone());
        let delta = Delta::between(&base.rev, &big, &next).expect("one field: a small delta");
        assert!(serde_json::to_vec(&delta).unwrap().len() < 200);
        let mut sent = next.clone();
        sent.content = Content::null();

        let rebuilt = delta
            .apply(&base, sent.clone())
            .expect("applies to its base");
        assert_eq!(rebuilt.content.value(), changed);
        assert_eq!(rebuilt.rev, next.rev);

        // Held revision is not the base: refused (the item is then fetched whole).
        let other = edited(&base, json!({"other": true}));
        assert!(delta.apply(&other, sent.clone()).is_none());
        // A corrupt delta: an operation that cannot apply, or one that gives other content.
        let mut broken = delta.clone();
        broken.patch =
            serde_json::from_value(json!([{"op": "remove", "path": "/nowhere/9"}])).unwrap();
        assert!(broken.apply(&base, sent.clone()).is_none());
        let mut wrong = delta.clone();
        wrong.patch = serde_json::from_value(
            json!([{"op": "replace", "path": "/sheets/7/title", "value": "other"}]),
        )
        .unwrap();
        assert!(
            wrong.apply(&base, sent).is_none(),
            "checked against the revision's hash"
        );
        // A whole change is no larger as a delta when most of it changed.
        assert!(Delta::between(&base.rev, &big, &edited(&base, json!({"x": 1}))).is_none());
    }
}
