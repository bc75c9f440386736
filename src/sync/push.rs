//! The follower's pushers. [`run_now`] pushes users' saves as they are made: saves made while a
//! push is on its way wait in the save queue ([`super::saves`]), and when it is answered they are written in one
//! store write and go together in the next push, so concurrent saves share one local write, one
//! local flush (made alongside the push), one request, one write on the leader and one leader
//! flush. [`run`] drains the outbox to the leader in batches whenever it is woken (a save that
//! could not be pushed, the leader coming back, a conflict found while following) and, while
//! edits wait, at least every `cluster.poll.interval`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::Replication;
use super::saves::ToPush;
use crate::wire::{Entry, PushOutcome};

/// Writes the saves queued for the leader and pushes them, one request at a time, each carrying
/// every save written since the previous one was sent (at most [`BATCH`], one edit per item: a
/// second edit of an item goes in the next push). Runs until `shutdown` turns true or the save
/// queue is gone.
pub async fn run_now(
    sync: Arc<Replication>,
    mut written: mpsc::UnboundedReceiver<ToPush>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut next: Option<ToPush> = None;
    loop {
        // Saves queued while the last push was on its way are written at once; otherwise wait
        // for a save to be queued.
        if next.is_none() && !sync.saves.has_queued() {
            tokio::select! {
                _ = sync.push_wake.notified() => {}
                w = written.recv() => match w {
                    Some(w) => next = Some(w),
                    None => return,
                },
                _ = shutdown.changed() => return,
            }
        }
        // Every save queued meanwhile is written now, in one store write; each written save
        // bound for the leader comes back on `written`.
        if let Err(e) = sync.saves.write_queued().await {
            tracing::error!(error = %e, "cannot write queued saves");
        }
        let Some(first) = next.take().or_else(|| written.try_recv().ok()) else {
            continue;
        };
        let mut keys = HashSet::from([(first.collection, first.written.item.id.clone())]);
        let mut batch = vec![first];
        while batch.len() < BATCH {
            let Ok(w) = written.try_recv() else {
                break;
            };
            if !keys.insert((w.collection, w.written.item.id.clone())) {
                next = Some(w);
                break;
            }
            batch.push(w);
        }
        let peer = sync
            .following()
            .and_then(|l| sync.remote(&l.url))
            .filter(|peer| sync.synced_with(peer));
        let Some(peer) = peer else {
            // No leader to push to any more, or not caught up with it yet: the saves stay
            // queued in the outbox.
            for w in batch {
                let _ = w.reply.send(Err(()));
            }
            continue;
        };
        let ticket = batch.iter().map(|w| w.written.ticket).max().unwrap_or(0);
        // Each save goes with the revisions of its item the leader lacks (earlier saves of it
        // still queued); its answer is the leader's verdict on the last of them.
        let mut entries = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for w in batch {
            let item = w.written.item;
            let (chain, whole) = match sync.store.pending_line(w.collection, item.clone()).await {
                Ok(line) => line,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the revisions queued before a save; pushing it alone");
                    (vec![item], false)
                }
            };
            entries.extend(Entry::line(w.collection, chain, whole));
            replies.push((entries.len() - 1, w.reply));
        }
        // One local flush for the whole batch, overlapping the push; each save still confirms
        // its own durability (at once when this flush covered it, by flushing when it failed).
        let (_, pushed) = tokio::join!(sync.store.durable_upto(ticket), sync.push(&peer, entries));
        match pushed {
            Ok(mut outcomes) => {
                for (at, reply) in replies {
                    let outcome = std::mem::replace(
                        &mut outcomes[at],
                        PushOutcome::Accepted { rev: String::new() },
                    );
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(_) => {
                for (_, reply) in replies {
                    let _ = reply.send(Err(()));
                }
            }
        }
    }
}

/// Edits per push.
pub const BATCH: usize = 128;

/// Runs until `shutdown` turns true.
pub async fn run(sync: Arc<Replication>, mut shutdown: watch::Receiver<bool>) {
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
        let Some(peer) = sync.remote(&leader.url) else {
            return;
        };
        if !sync.synced_with(&peer) {
            // Woken again once caught up with the leader.
            delay = interval;
            continue;
        }
        loop {
            let batch = match sync.store.outbox_lines(BATCH).await {
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
            // Items with earlier revisions queued come as chains: more entries than items.
            let full = batch.len() >= BATCH;
            let edits = batch
                .into_iter()
                .flat_map(|(collection, chain, whole)| Entry::line(collection, chain, whole))
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
