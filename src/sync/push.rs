//! The follower's pushers. [`run_now`] pushes users' saves as they are made: saves made while a
//! push is on its way go together in the next one, so concurrent saves share one request, one
//! leader transaction and one leader flush. [`run`] drains the outbox to the leader in batches
//! whenever it is woken (a save that could not be pushed, the leader coming back, a conflict found
//! while following) and, while edits wait, at least every `cluster.poll.interval`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::Sync;
use super::peer::Peer;
use super::wire::Entry;
use crate::store::PushOutcome;

/// A save waiting for its push: the leader's answer, or `Err` when the push failed.
pub struct Waiting {
    pub peer: Arc<Peer>,
    pub entry: Entry,
    pub reply: oneshot::Sender<Result<PushOutcome, ()>>,
}

/// Pushes waiting saves, one request at a time, each carrying every save that arrived while the
/// previous one was on its way (at most [`BATCH`], one edit per item). Runs until `shutdown`
/// turns true or the senders are gone.
pub async fn run_now(
    sync: Arc<Sync>,
    mut waiting: mpsc::UnboundedReceiver<Waiting>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut next: Option<Waiting> = None;
    loop {
        let first = match next.take() {
            Some(w) => w,
            None => tokio::select! {
                w = waiting.recv() => match w {
                    Some(w) => w,
                    None => return,
                },
                _ = shutdown.changed() => return,
            },
        };
        let peer = first.peer.clone();
        let mut keys = HashSet::from([(first.entry.collection, first.entry.item.id.clone())]);
        let mut batch = vec![first];
        while batch.len() < BATCH {
            let Ok(w) = waiting.try_recv() else {
                break;
            };
            // A second edit of an item, or one for another leader, starts the next push.
            if !Arc::ptr_eq(&w.peer, &peer)
                || !keys.insert((w.entry.collection, w.entry.item.id.clone()))
            {
                next = Some(w);
                break;
            }
            batch.push(w);
        }
        let (entries, replies): (Vec<Entry>, Vec<_>) =
            batch.into_iter().map(|w| (w.entry, w.reply)).unzip();
        match sync.push(&peer, entries).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(_) => {
                for reply in replies {
                    let _ = reply.send(Err(()));
                }
            }
        }
    }
}

/// Edits per push.
pub const BATCH: usize = 128;

/// Runs until `shutdown` turns true.
pub async fn run(sync: Arc<Sync>, mut shutdown: watch::Receiver<bool>) {
    let interval = sync.config.cluster.poll_interval;
    let mut delay = interval;
    loop {
        tokio::select! {
            _ = sync.push_kick.notified() => {}
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        let Some(leader) = sync.following() else {
            // Leading with enough members: the local store is the reference, nothing to push.
            if sync.view().i_lead && sync.leadership.can_commit() {
                match sync.store.clear_outbox_all().await {
                    Ok(n) if n > 0 => {
                        tracing::info!(edits = n, "leading: queued edits are committed here")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "cannot clear the outbox"),
                }
            }
            delay = interval;
            continue;
        };
        let Some(peer) = sync.peer(&leader.url) else {
            return;
        };
        loop {
            let batch = match sync.store.outbox(BATCH).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the outbox");
                    break;
                }
            };
            sync.metrics.outbox.set(batch.len() as i64);
            if batch.is_empty() {
                delay = interval;
                break;
            }
            let full = batch.len() == BATCH;
            let edits = batch
                .into_iter()
                .map(|(collection, item)| Entry { collection, item })
                .collect();
            match sync.push(&peer, edits).await {
                Ok(_) if full => continue,
                Ok(_) => {
                    delay = interval;
                    break;
                }
                Err(_) => {
                    delay = interval.min(Duration::from_secs(1));
                    break;
                }
            }
        }
    }
}
