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
//! 6. On a follower, a revision of the leader that diverges from a local edit still waiting to be
//!    pushed changes nothing yet: the push settles it (the leader decides, rule 4). One that
//!    diverges from a local revision with nothing pending (the leader lost its copy) wins, and the
//!    local one is kept as a conflict record that is pushed to the leader.
//! 7. A follower's pending edit is settled by a revision of the leader that is it or descends
//!    from it: the edit is then part of the leader's history and leaves the outbox.
//!
//! Wall-clock time decides nothing here: `updated_at` is informative only.
//!
//! The rules are pure ([`Rules`]: what the store holds and what arrives in, a decision out, no
//! IO); the store makes each decision atomically (`folio_store::MergeRules`).

use serde_json::{Value, json};

use crate::store::item::{next_rev, now_rfc3339};
use crate::store::{Collection, Content, FeedAction, FeedMerge, Held, Item, MergeRules, PushMerge};

/// How an incoming revision relates to what the store holds of its item.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Relation<'a> {
    /// The receiver has no such item.
    Absent,
    /// Same revision.
    Same,
    /// The incoming revision descends from the local one (fast-forward).
    IncomingNewer,
    /// The local revision descends from the incoming one.
    LocalNewer,
    /// Neither descends from the other: the local item.
    Diverged(&'a Item),
}

/// Relates what the store holds of an item to an incoming revision of it.
pub fn relate<'a>(held: Held<'a>, incoming: &Item) -> Relation<'a> {
    match held {
        Held::Nothing => Relation::Absent,
        Held::Same => Relation::Same,
        Held::Other(l) if l.rev == incoming.rev => Relation::Same,
        Held::Other(l) if incoming.descends_from(&l.rev) => Relation::IncomingNewer,
        Held::Other(l) if l.descends_from(&incoming.rev) => Relation::LocalNewer,
        Held::Other(l) => Relation::Diverged(l),
    }
}

/// The conflict rules of the server `me` (which names itself in the conflict records it makes).
#[derive(Debug, Clone)]
pub struct Rules {
    pub me: String,
}

impl MergeRules for Rules {
    /// Rules 2–5 on the leader.
    fn on_push(&self, coll: Collection, held: Held<'_>, pushed: &Item) -> PushMerge {
        match relate(held, pushed) {
            Relation::Absent | Relation::IncomingNewer => PushMerge::Take,
            Relation::Same | Relation::LocalNewer => PushMerge::Keep,
            Relation::Diverged(winner) => PushMerge::Refuse {
                record: keeps_losers(coll)
                    .then(|| Box::new(conflict_record(coll, winner, pushed, &self.me))),
            },
        }
    }

    /// Rules 2–7 on a follower.
    fn on_feed(
        &self,
        coll: Collection,
        held: Held<'_>,
        pending: Option<&str>,
        incoming: &Item,
    ) -> FeedMerge {
        let skip = |settles_pending: bool| FeedMerge {
            action: FeedAction::Skip,
            settles_pending,
        };
        match relate(held, incoming) {
            Relation::Absent | Relation::IncomingNewer => FeedMerge {
                action: FeedAction::Take,
                settles_pending: pending.is_some_and(|p| incoming.descends_from(p)),
            },
            Relation::Same => skip(pending == Some(incoming.rev.as_str())),
            Relation::LocalNewer => skip(false),
            // The push of the pending edit settles it (rule 6).
            Relation::Diverged(_) if pending.is_some() => skip(false),
            Relation::Diverged(loser) => FeedMerge {
                action: FeedAction::Replace {
                    record: keeps_losers(coll)
                        .then(|| Box::new(conflict_record(coll, incoming, loser, &self.me))),
                },
                settles_pending: false,
            },
        }
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
        restored_from: None,
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
            restored_from: None,
        }
    }

    #[test]
    fn relations() {
        let base = item("1-a", &[]);
        let left = item("2-b", &["1-a"]);
        let right = item("2-c", &["1-a"]);
        assert_eq!(relate(Held::Nothing, &base), Relation::Absent);
        assert_eq!(relate(Held::Same, &base), Relation::Same);
        assert_eq!(relate(Held::Other(&base), &base), Relation::Same);
        assert_eq!(relate(Held::Other(&base), &left), Relation::IncomingNewer);
        assert_eq!(relate(Held::Other(&left), &base), Relation::LocalNewer);
        assert_eq!(
            relate(Held::Other(&left), &right),
            Relation::Diverged(&left)
        );
    }

    fn rules() -> Rules {
        Rules { me: "s1".into() }
    }

    /// A conflict record with the moment it was made left out (the only part of a decision that
    /// is not a function of its inputs).
    fn timeless<T: std::ops::DerefMut<Target = Item>>(mut record: T) -> T {
        record.updated_at.clear();
        record
    }

    fn record(coll: Collection, winner: &Item, loser: &Item) -> Box<Item> {
        timeless(Box::new(conflict_record(coll, winner, loser, "s1")))
    }

    #[test]
    fn pushed_revisions_are_decided_by_the_table() {
        let base = item("1-a", &[]);
        let left = item("2-b", &["1-a"]);
        let right = item("2-c", &["1-a"]);
        let wb = Collection::Workbooks;
        let ds = Collection::Datasources;
        #[rustfmt::skip]
        let table: Vec<(&str, Collection, Held, &Item, PushMerge)> = vec![
            ("new item", wb, Held::Nothing, &base, PushMerge::Take),
            ("held as is (index)", wb, Held::Same, &base, PushMerge::Keep),
            ("held as is (item)", wb, Held::Other(&base), &base, PushMerge::Keep),
            ("fast-forward", wb, Held::Other(&base), &left, PushMerge::Take),
            ("leader is newer", wb, Held::Other(&left), &base, PushMerge::Keep),
            ("diverged workbook", wb, Held::Other(&left), &right,
             PushMerge::Refuse { record: Some(record(wb, &left, &right)) }),
            ("diverged data source", ds, Held::Other(&left), &right,
             PushMerge::Refuse { record: Some(record(ds, &left, &right)) }),
            ("diverged user", Collection::Users, Held::Other(&left), &right,
             PushMerge::Refuse { record: None }),
            ("diverged session", Collection::Sessions, Held::Other(&left), &right,
             PushMerge::Refuse { record: None }),
            ("diverged conflict record", Collection::Conflicts, Held::Other(&left), &right,
             PushMerge::Refuse { record: None }),
        ];
        for (case, coll, held, pushed, want) in table {
            let got = match rules().on_push(coll, held, pushed) {
                PushMerge::Refuse { record } => PushMerge::Refuse {
                    record: record.map(timeless),
                },
                other => other,
            };
            assert_eq!(got, want, "{case}");
        }
    }

    /// A case of the feed's table: its name, the item's collection, what the follower holds and
    /// has pending, the leader's revision, and the decision.
    type FeedCase<'a> = (
        &'a str,
        Collection,
        Held<'a>,
        Option<&'a str>,
        &'a Item,
        FeedMerge,
    );

    #[test]
    fn revisions_of_the_feed_are_decided_by_the_table() {
        let base = item("1-a", &[]);
        let left = item("2-b", &["1-a"]);
        let right = item("2-c", &["1-a"]);
        let wb = Collection::Workbooks;
        let take = |settles_pending| FeedMerge {
            action: FeedAction::Take,
            settles_pending,
        };
        let skip = |settles_pending| FeedMerge {
            action: FeedAction::Skip,
            settles_pending,
        };
        let replace = |record| FeedMerge {
            action: FeedAction::Replace { record },
            settles_pending: false,
        };
        #[rustfmt::skip]
        let table: Vec<FeedCase> = vec![
            ("new item", wb, Held::Nothing, None, &base, take(false)),
            ("fast-forward", wb, Held::Other(&base), None, &left, take(false)),
            ("fast-forward over the pending edit", wb, Held::Other(&base), Some("1-a"), &left,
             take(true)),
            ("fast-forward past another pending edit", wb, Held::Other(&base), Some("1-z"),
             &left, take(false)),
            ("own pushed edit back (index)", wb, Held::Same, Some("1-a"), &base, skip(true)),
            ("held as is (index), other edit pending", wb, Held::Same, Some("2-b"), &base,
             skip(false)),
            ("held as is (index), nothing pending", wb, Held::Same, None, &base, skip(false)),
            ("held as is (item)", wb, Held::Other(&base), Some("1-a"), &base, skip(true)),
            ("follower is newer", wb, Held::Other(&left), Some("2-b"), &base, skip(false)),
            ("diverged, edit pending: the push settles it", wb, Held::Other(&left),
             Some("2-b"), &right, skip(false)),
            ("diverged workbook, nothing pending", wb, Held::Other(&left), None, &right,
             replace(Some(record(wb, &right, &left)))),
            ("diverged data source, nothing pending", Collection::Datasources,
             Held::Other(&left), None, &right,
             replace(Some(record(Collection::Datasources, &right, &left)))),
            ("diverged user, nothing pending", Collection::Users, Held::Other(&left), None,
             &right, replace(None)),
            ("diverged session, nothing pending", Collection::Sessions, Held::Other(&left),
             None, &right, replace(None)),
        ];
        for (case, coll, held, pending, incoming, want) in table {
            let mut got = rules().on_feed(coll, held, pending, incoming);
            if let FeedAction::Replace { record } = &mut got.action {
                *record = record.take().map(timeless);
            }
            assert_eq!(got, want, "{case}");
        }
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
