//! The follower's loop: long-poll the leader's change feed from a cursor (the leader's
//! incarnation and a sequence number), apply what arrives, and — when the cursor is unknown (a new
//! follower, or a leader whose store is not the one the cursor names) — reconcile by digest,
//! transferring only the items that differ.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::watch;

use super::{Replication, lock};
use crate::cluster::ClusterView;
use crate::cluster::remote::{Remote, RemoteError};
use crate::error::Code;
use crate::store::{Collection, Item};
use crate::wire::{ChangesAnswer, DigestAnswer, FeedChange, FetchAnswer, KeysAnswer};

const CURSOR: &str = "cursor";
/// Items per feed answer and per fetch.
pub const BATCH: usize = 256;

/// The leader's store this follower has applied up to `seq` of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub incarnation: String,
    pub seq: u64,
}

async fn load_cursor(sync: &Replication) -> Option<Cursor> {
    let raw = sync.store.meta_get(CURSOR).await.ok()??;
    let s = String::from_utf8(raw).ok()?;
    let (inc, seq) = s.rsplit_once(':')?;
    Some(Cursor {
        incarnation: inc.to_string(),
        seq: seq.parse().ok()?,
    })
}

fn cursor_value(c: &Cursor) -> Vec<u8> {
    format!("{}:{}", c.incarnation, c.seq).into_bytes()
}

async fn save_cursor(sync: &Replication, c: &Cursor) {
    if let Err(e) = sync.store.meta_set(CURSOR, cursor_value(c)).await {
        tracing::warn!(error = %e, "could not save the feed cursor");
    }
}

/// Runs until `shutdown` turns true.
pub async fn run(sync: Arc<Replication>, mut shutdown: watch::Receiver<bool>) {
    let mut views = sync.watch_view();
    let mut backoff = Duration::from_millis(50);
    // The leader followed last; a different one (or leading in between) means the cursor names
    // another store and this server may hold edits the new leader lacks: reconcile. Every wait
    // and call below ends when the view changes, so leading for a while is always seen here.
    let mut last: Option<Option<String>> = None;
    // The stored cursor, kept here between polls (None: read it from the store).
    let mut cursor: Option<Cursor> = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let view = sync.view();
        let current = if view.i_lead {
            Some(sync.me.clone())
        } else {
            view.leader.as_ref().map(|l| l.url.clone())
        };
        if current.is_some() {
            let now = current;
            if last.as_ref().is_some_and(|l| *l != now) {
                cursor = None;
                sync.leader_changed();
                if let Err(e) = sync.store.meta_delete(CURSOR).await {
                    tracing::warn!(error = %e, "cannot reset the feed cursor");
                }
            }
            last = Some(now);
        }
        let Some(leader) = sync.following() else {
            tokio::select! {
                _ = views.changed() => continue,
                _ = shutdown.changed() => return,
            }
        };
        let Some(peer) = sync.remote(&leader.url) else {
            return;
        };
        // A change of leader ends every call to the old one at once, but never the applying of
        // an answer: taking an item and its history is left whole.
        let step = tokio::select! {
            r = follow_once(&sync, &peer, &mut cursor, &mut views) => r,
            _ = shutdown.changed() => return,
        };
        match step {
            Ok(()) => backoff = Duration::from_millis(50),
            // Another leader meanwhile: the call's failure says nothing of the link.
            Err(_) if !following(&sync, &peer) => continue,
            Err(e) => {
                sync.metrics.poll_failures.inc();
                if e.is_unreachable() || e.is_refusal() {
                    sync.link_down(&peer, &e);
                } else {
                    // Not the link's doing (an answer this server could not use, or a store
                    // error of its own): the link keeps its state.
                    tracing::warn!(leader = %peer.base, error = %e, "following the leader failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                    _ = views.changed() => {}
                }
                backoff = (backoff * 2).min(sync.config.cluster.poll_interval);
            }
        }
    }
}

/// One long-poll (or a reconcile first, when the cursor is unknown); `known` is the stored
/// cursor, read from the store when `None` and kept up to date.
async fn follow_once(
    sync: &Replication,
    peer: &Remote,
    known: &mut Option<Cursor>,
    views: &mut watch::Receiver<crate::cluster::ClusterView>,
) -> Result<(), RemoteError> {
    let cursor = match known.take() {
        Some(c) => c,
        None => match load_cursor(sync).await {
            Some(c) => c,
            None => reconcile(sync, peer).await?,
        },
    };
    // Should this poll fail, the cursor is read again from the store.
    let wait = sync.config.cluster.poll_interval;
    let path = format!(
        "changes?incarnation={}&since={}&limit={BATCH}&wait_ms={}",
        cursor.incarnation,
        cursor.seq,
        wait.as_millis()
    );
    let poll = peer.call(
        reqwest::Method::GET,
        &path,
        None::<&()>,
        // A leader that is silent past this (paused, or cut off without a reset) is noticed.
        wait + super::ANSWER_GRACE,
    );
    let answer: Result<ChangesAnswer, _> = tokio::select! {
        a = poll => a,
        _ = views.changed() => {
            // Another leader (or none): follow from the stored cursor, or reconcile.
            return Ok(());
        }
    };
    let answer = match answer {
        Err(RemoteError::Refused {
            code: Some(Code::CursorReset),
            ..
        }) => {
            tracing::info!(leader = %peer.base, "the leader's store is not the one this follower knew; reconciling");
            *known = Some(reconcile(sync, peer).await?);
            return Ok(());
        }
        other => other?,
    };
    sync.link_up(peer, answer.now_ms);
    synced(sync, peer);
    let next = Cursor {
        incarnation: answer.incarnation,
        seq: answer.next,
    };
    if !answer.changes.is_empty() {
        sync.metrics
            .items_received
            .inc_by(answer.changes.len() as u64);
        let (items, refetched) = whole(sync, peer, answer.changes).await?;
        if !refetched.is_empty() {
            // Marked before the cursor passes them.
            mark_for_resync(sync, refetched).await;
        }
        let then = (next != cursor).then(|| (CURSOR, cursor_value(&next)));
        let applied = sync
            .store
            .apply_feed(items, sync.rules(), then)
            .await
            .map_err(|e| RemoteError::BadAnswer(e.to_string()))?;
        if applied.conflicts > 0 {
            sync.metrics.conflicts.inc_by(applied.conflicts as u64);
            sync.push_kick.notify_one();
        }
    } else if next != cursor {
        save_cursor(sync, &next).await;
    }
    *known = Some(next);
    {
        let mut st = lock(&sync.status);
        st.leader_seq = answer.leader_seq;
        st.applied = answer.next;
        st.last_contact = Some(SystemTime::now());
        st.other_followers = answer.members;
        st.takes_deltas = answer.takes_deltas.then(|| peer.base.to_string());
    }
    if !answer.more {
        // Caught up: histories marked as differing from the leader's are taken now.
        resync_histories(sync, peer).await;
    }
    Ok(())
}

/// The feed's items whole: a delta is applied to this server's copy of its base revision (or to
/// the revision before it in the same answer) and checked against the new revision's hash; an
/// item whose delta does not apply here (another revision held, or a delta that does not give
/// the revision) is fetched whole from the leader, and answered among the items whose history
/// is then taken from the leader.
async fn whole(
    sync: &Replication,
    peer: &Remote,
    changes: Vec<FeedChange>,
) -> Result<(Vec<(Collection, Item)>, Vec<(Collection, String)>), RemoteError> {
    let mut items: Vec<Option<(Collection, Item)>> = Vec::with_capacity(changes.len());
    let mut missing: Vec<(usize, Collection, String)> = Vec::new();
    // Where in `items` the last revision of each item is: a later revision's delta is based
    // on it, not on what the store holds yet.
    let mut last: HashMap<(Collection, String), usize> = HashMap::new();
    for c in changes {
        let key = (c.collection, c.item.id.clone());
        let previous = last.insert(key, items.len());
        let Some(delta) = c.delta else {
            items.push(Some((c.collection, c.item)));
            continue;
        };
        let local = match previous {
            Some(at) => items[at].as_ref().map(|(_, item)| item.clone()),
            None => sync
                .store
                .get(c.collection, c.item.id.clone())
                .await
                .map_err(|e| RemoteError::BadAnswer(e.to_string()))?,
        };
        let id = c.item.id.clone();
        match local.and_then(|local| delta.apply(&local, c.item)) {
            Some(item) => items.push(Some((c.collection, item))),
            None => {
                tracing::debug!(id = %id, "a delta did not apply here; fetching the item whole");
                sync.metrics.deltas_refetched.inc();
                missing.push((items.len(), c.collection, id));
                items.push(None);
            }
        }
    }
    if !missing.is_empty() {
        let keys: Vec<(Collection, &str)> =
            missing.iter().map(|(_, c, id)| (*c, id.as_str())).collect();
        let mut views = sync.watch_view();
        let got: FetchAnswer = unless_changed(
            &mut views,
            peer.call(
                reqwest::Method::POST,
                "fetch",
                Some(&json!({ "keys": keys })),
                Duration::from_secs(60),
            ),
        )
        .await?;
        for e in got.items {
            if let Some((at, ..)) = missing
                .iter()
                .find(|(_, c, id)| *c == e.collection && *id == e.item.id)
            {
                items[*at] = Some((e.collection, e.item));
            }
        }
    }
    // A revision fetched whole is the current one: the ones between are taken with the
    // leader's history.
    let refetched = missing.into_iter().map(|(_, c, id)| (c, id)).collect();
    Ok((items.into_iter().flatten().collect(), refetched))
}

/// Marks items whose history is to be taken from the leader.
async fn mark_for_resync(sync: &Replication, keys: Vec<(Collection, String)>) {
    if let Err(e) = sync.store.mark_history_resync(keys).await {
        tracing::warn!(error = %e, "could not mark items for a history resync");
    }
}

/// Applies fetched items (the leader wins) and makes their histories the leader's; the keys
/// asked for that the leader does not hold have no history to take.
async fn apply_with_history(
    sync: &Replication,
    peer: &Remote,
    asked: &[(Collection, String)],
    got: FetchAnswer,
) -> Result<(), RemoteError> {
    if !following(sync, peer) {
        return Err(RemoteError::Unreachable("the leader changed".into()));
    }
    // Counted before they are applied, so whoever sees the items also sees the count.
    sync.metrics.items_received.inc_by(got.items.len() as u64);
    let mut items = Vec::with_capacity(got.items.len());
    let mut histories = Vec::with_capacity(got.items.len());
    for e in got.items {
        histories.push((
            e.collection,
            e.item.id.clone(),
            e.item.rev.clone(),
            e.history,
        ));
        items.push((e.collection, e.item));
    }
    let store = |e: crate::store::StoreError| RemoteError::BadAnswer(e.to_string());
    // Marked first: should the history not be taken below (the item changed meanwhile, or an
    // error), it is taken when the feed is next caught up, never left with a gap.
    sync.store
        .mark_history_resync(
            histories
                .iter()
                .map(|(c, id, ..)| (*c, id.clone()))
                .collect(),
        )
        .await
        .map_err(store)?;
    sync.store
        .apply_feed(items, sync.rules(), None)
        .await
        .map_err(store)?;
    let held: HashSet<(Collection, &str)> = histories
        .iter()
        .map(|(c, id, _, _)| (*c, id.as_str()))
        .collect();
    let absent = asked
        .iter()
        .filter(|(c, id)| !held.contains(&(*c, id.as_str())))
        .cloned()
        .collect();
    sync.store
        .replace_histories(histories, absent)
        .await
        .map_err(store)?;
    Ok(())
}

/// Takes the leader's history of the items marked for it (an edit here lost, or revisions
/// arrived whole, or the item came by reconciliation: see `Store::history_resyncs`), a batch at
/// a time, every marked item once; an item that cannot take it yet (it changed meanwhile)
/// keeps its mark for the next time the feed is caught up.
pub async fn resync_histories(sync: &Replication, peer: &Remote) {
    let mut views = sync.watch_view();
    let mut after = None;
    loop {
        let keys = match sync.store.history_resyncs(after.as_ref(), BATCH) {
            Ok(keys) if keys.is_empty() => return,
            Ok(keys) => keys,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the items marked for a history resync");
                return;
            }
        };
        let got: Result<FetchAnswer, _> = unless_changed(
            &mut views,
            peer.call(
                reqwest::Method::POST,
                "fetch",
                Some(&json!({ "keys": keys, "history": true })),
                Duration::from_secs(60),
            ),
        )
        .await;
        let done = match got {
            Ok(got) => apply_with_history(sync, peer, &keys, got).await,
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            tracing::warn!(leader = %peer.base, error = %e, "could not take the leader's history of items whose edits lost or arrived whole");
            return;
        }
        after = keys.last().cloned();
    }
}

/// Compares bucket digests with the leader and transfers only the items that differ: the
/// leader's differing items are applied here (leader wins); items the leader lacks, or holds older
/// revisions of, are queued for pushing. Answers the cursor to follow from.
pub async fn reconcile(sync: &Replication, peer: &Remote) -> Result<Cursor, RemoteError> {
    lock(&sync.status).synced_with = None;
    // Whatever this server wrote while it led (a push it was deciding, a save it was
    // committing as leadership moved on) is in the store before it is compared; later such
    // writes wait for the leader instead (the store's fence).
    sync.store
        .barrier()
        .await
        .map_err(|e| RemoteError::BadAnswer(e.to_string()))?;
    let mut views = sync.watch_view();
    let timeout = Duration::from_secs(60);
    let theirs: DigestAnswer = unless_changed(
        &mut views,
        peer.call(reqwest::Method::GET, "digest", None::<&()>, timeout),
    )
    .await?;
    let (mine, _) = sync
        .store
        .digest()
        .await
        .map_err(|e| RemoteError::BadAnswer(e.to_string()))?;
    let differing: Vec<usize> = (0..mine.len())
        .filter(|i| theirs.buckets.get(*i) != Some(&mine[*i]))
        .collect();
    let mut fetched = 0usize;
    if !differing.is_empty() {
        let keys: KeysAnswer = unless_changed(
            &mut views,
            peer.call(
                reqwest::Method::POST,
                "keys",
                Some(&json!({ "buckets": differing })),
                timeout,
            ),
        )
        .await?;
        let ours = sync
            .store
            .bucket_keys(differing.clone())
            .await
            .map_err(|e| RemoteError::BadAnswer(e.to_string()))?;
        let ours: HashMap<(Collection, String), String> = ours
            .into_iter()
            .map(|(c, id, rev)| ((c, id), rev))
            .collect();
        let wanted: Vec<(Collection, String)> = keys
            .keys
            .iter()
            .filter(|(c, id, rev)| ours.get(&(*c, id.clone())) != Some(rev))
            .map(|(c, id, _)| (*c, id.clone()))
            .collect();
        // The next batch is fetched while this one is applied, so the leader's reads and this
        // server's writes overlap.
        let bodies: Vec<serde_json::Value> = wanted
            .chunks(BATCH)
            .map(|chunk| json!({ "keys": chunk, "history": true }))
            .collect();
        let mut batches = futures_util::stream::iter(bodies)
            .map(|body: serde_json::Value| async move {
                peer.call::<FetchAnswer>(reqwest::Method::POST, "fetch", Some(&body), timeout)
                    .await
            })
            .buffered(2);
        loop {
            let next = tokio::select! {
                next = batches.next() => next,
                _ = views.changed() => {
                    return Err(RemoteError::Unreachable("the leader changed".into()));
                }
            };
            let Some(got) = next else {
                break;
            };
            let mut got = got?;
            fetched += got.items.len();
            // An item whose revision here the leader's does not descend from (this server
            // edited it meanwhile, perhaps leading alone) keeps its line: it is pushed below,
            // and the leader keeps every revision of it, fast-forwarded or as conflict records.
            // Taking the leader's item and history here would lose all but its current one.
            let mut fast_forwards = Vec::with_capacity(got.items.len());
            for e in got.items {
                let local = sync
                    .store
                    .get(e.collection, e.item.id.clone())
                    .await
                    .map_err(|e| RemoteError::BadAnswer(e.to_string()))?;
                // (A line longer than the ancestry an item carries: the leader's history
                // keeps this server's revision.)
                if local.is_none_or(|l| {
                    e.item.rev == l.rev
                        || e.item.descends_from(&l.rev)
                        || e.history.iter().any(|r| r.rev == l.rev)
                }) {
                    fast_forwards.push(e);
                }
            }
            got.items = fast_forwards;
            apply_with_history(sync, peer, &[], got).await?;
        }
        // Whatever still differs is newer here or unknown to the leader: push it.
        let theirs_map: HashMap<(Collection, String), String> = keys
            .keys
            .into_iter()
            .map(|(c, id, rev)| ((c, id), rev))
            .collect();
        let after = sync
            .store
            .bucket_keys(differing)
            .await
            .map_err(|e| RemoteError::BadAnswer(e.to_string()))?;
        let to_push: Vec<(Collection, String)> = after
            .into_iter()
            .filter(|(c, id, rev)| theirs_map.get(&(*c, id.clone())) != Some(rev))
            .map(|(c, id, _)| (c, id))
            .collect();
        if !to_push.is_empty() {
            sync.store
                .queue_for_push(to_push)
                .await
                .map_err(|e| RemoteError::BadAnswer(e.to_string()))?;
            sync.push_kick.notify_one();
        }
    }
    tracing::info!(leader = %peer.base, buckets = theirs.buckets.len(), fetched, "reconciled with the leader");
    let cursor = Cursor {
        incarnation: theirs.incarnation,
        seq: theirs.seq,
    };
    save_cursor(sync, &cursor).await;
    synced(sync, peer);
    Ok(cursor)
}

/// Whether this server still follows `peer`.
fn following(sync: &Replication, peer: &Remote) -> bool {
    sync.following()
        .and_then(|l| sync.remote(&l.url))
        .is_some_and(|p| p.base == peer.base)
}

/// `call` to the leader, ended early when the view changes (another leader, or none): the
/// answer of a leader this server no longer follows is not applied.
async fn unless_changed<T>(
    views: &mut watch::Receiver<ClusterView>,
    call: impl std::future::Future<Output = Result<T, RemoteError>>,
) -> Result<T, RemoteError> {
    tokio::select! {
        r = call => r,
        _ = views.changed() => Err(RemoteError::Unreachable("the leader changed".into())),
    }
}

/// Notes that this follower caught up with `peer` (see [`super::FollowStatus::synced_with`]), and
/// wakes the pusher the first time.
fn synced(sync: &Replication, peer: &Remote) {
    let first = {
        let mut st = lock(&sync.status);
        let first = st.synced_with.as_deref() != Some(peer.base.as_str());
        st.synced_with = Some(peer.base.to_string());
        first
    };
    if first {
        sync.push_kick.notify_one();
    }
}
