//! The follower's background pusher: drains the outbox to the leader in batches whenever it is
//! woken (a save that could not be pushed, the leader coming back, a conflict found while
//! following) and, while edits wait, at least every `cluster.poll.interval`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Sync;
use super::wire::Entry;

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
