//! The conflict rules, written down once and used by the leader (for pushed edits) and by
//! followers (for the leader's change feed).
//!
//! 1. Revisions form lines of history: an item remembers its recent ancestors, so of two
//!    revisions of an item, one *descends* from the other when it lists it (or is it).
//! 2. An incoming revision that descends from the local one (or an item the receiver lacks) is a
//!    fast-forward: it is written as it is, with its revision, so every server ends with
//!    byte-identical items.
//! 3. An incoming revision the local one already descends from changes nothing.
//! 4. Two revisions that do not descend from each other have *diverged*. The leader's revision
//!    wins (I3). For workbooks and data sources the losing revision is kept as a conflict record —
//!    a normal, synchronised item of the `conflicts` collection — so nothing acknowledged is lost
//!    (I2). For system collections (users, sessions, conflicts) the leader's revision wins without
//!    a record.
//! 5. A conflict record's id is derived from the item and the losing revision, so a retried push
//!    (the answer lost on the way) finds the record it already made instead of making another.
//!
//! Wall-clock time decides nothing here: `updated_at` is informative only.

use serde_json::{Value, json};

use crate::store::item::{next_rev, now_rfc3339};
use crate::store::{Collection, Content, Item};

/// How an incoming revision relates to the local one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// The receiver has no such item.
    Absent,
    /// Same revision.
    Same,
    /// The incoming revision descends from the local one (fast-forward).
    IncomingNewer,
    /// The local revision descends from the incoming one.
    LocalNewer,
    /// Neither descends from the other.
    Diverged,
}

/// Relates a local item (if any) to an incoming one.
pub fn relate(local: Option<&Item>, incoming: &Item) -> Relation {
    match local {
        None => Relation::Absent,
        Some(l) if l.rev == incoming.rev => Relation::Same,
        Some(l) if incoming.descends_from(&l.rev) => Relation::IncomingNewer,
        Some(l) if l.descends_from(&incoming.rev) => Relation::LocalNewer,
        Some(_) => Relation::Diverged,
    }
}

/// Whether a diverged loser in this collection is kept as a conflict record.
pub fn keeps_losers(coll: Collection) -> bool {
    matches!(coll, Collection::Workbooks | Collection::Datasources)
}

/// The id of the conflict record for `loser` of item `id`.
pub fn conflict_id(coll: Collection, id: &str, loser_rev: &str) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(format!("{}/{id}/{loser_rev}", coll.as_str()).as_bytes());
    let d = ctx.finish();
    let hex: String = d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("c-{hex}")
}

/// The conflict record keeping `loser`, which lost to `winner`.
pub fn conflict_record(coll: Collection, winner: &Item, loser: &Item, detected_by: &str) -> Item {
    let content: Value = json!({
        "collection": coll.as_str(),
        "item_id": loser.id,
        "winner_rev": winner.rev,
        "loser": {
            "rev": loser.rev,
            "name": loser.name,
            "content": loser.content,
            "deleted": loser.deleted,
            "updated_at": loser.updated_at,
            "updated_by": loser.updated_by,
            "origin": loser.origin,
        },
    });
    let name = loser.name.clone();
    Item {
        id: conflict_id(coll, &loser.id, &loser.rev),
        rev: next_rev(None, &name, false, &content),
        name,
        content: Content::of(&content),
        updated_at: now_rfc3339(),
        updated_by: loser.updated_by.clone(),
        origin: detected_by.to_string(),
        deleted: false,
        ancestors: Vec::new(),
        seq: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(rev: &str, ancestors: &[&str]) -> Item {
        Item {
            id: "w".into(),
            name: "n".into(),
            content: Content::of(&json!(rev)),
            rev: rev.into(),
            updated_at: String::new(),
            updated_by: "u".into(),
            origin: "s".into(),
            deleted: false,
            ancestors: ancestors.iter().map(|a| a.to_string()).collect(),
            seq: 0,
        }
    }

    #[test]
    fn relations() {
        let base = item("1-a", &[]);
        let left = item("2-b", &["1-a"]);
        let right = item("2-c", &["1-a"]);
        assert_eq!(relate(None, &base), Relation::Absent);
        assert_eq!(relate(Some(&base), &base), Relation::Same);
        assert_eq!(relate(Some(&base), &left), Relation::IncomingNewer);
        assert_eq!(relate(Some(&left), &base), Relation::LocalNewer);
        assert_eq!(relate(Some(&left), &right), Relation::Diverged);
    }

    #[test]
    fn conflict_records_are_stable_per_loser() {
        let w = item("2-b", &["1-a"]);
        let l = item("2-c", &["1-a"]);
        let a = conflict_record(Collection::Workbooks, &w, &l, "s1");
        let b = conflict_record(Collection::Workbooks, &w, &l, "s2");
        assert_eq!(a.id, b.id);
        assert_eq!(a.rev, b.rev, "a retried push finds the same record");
        assert_eq!(a.content.value()["loser"]["rev"], "2-c");
        assert!(crate::ids::is_valid_id(&a.id));
    }
}
