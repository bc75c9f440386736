//! Ends expired sessions: every minute (and once at start) the server that leads — or stands
//! alone — tombstones the sessions whose expiry has passed, and the tombstones reach every server
//! like any other change. Tokens of an expired session are refused anyway; this keeps the
//! `sessions` collection from growing without bound.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{SessionRecord, unix_now};
use crate::store::{Collection, Edit, Precondition};
use crate::sync::Replication;

/// How often expired sessions are looked for.
pub const PERIOD: Duration = Duration::from_secs(60);

/// Tombstones every expired session once; answers how many.
pub async fn sweep(sync: &Replication) -> usize {
    let now = unix_now();
    end_sessions(sync, "folio", |_, record| {
        record.is_none_or(|r| r.expires <= now)
    })
    .await
}

/// Tombstones, as `author`, every live session for which `ends(id, record)` holds (`record` is
/// `None` when unreadable); answers how many. The tombstones reach every server.
pub async fn end_sessions(
    sync: &Replication,
    author: &str,
    ends: impl Fn(&str, Option<&SessionRecord>) -> bool,
) -> usize {
    let mut ended = 0;
    let mut after = None;
    loop {
        let page = match sync
            .store
            .list(Collection::Sessions, after.take(), 500)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list sessions");
                return ended;
            }
        };
        for item in &page.items {
            let record = item.content.parse::<SessionRecord>().ok();
            if !ends(&item.id, record.as_ref()) {
                continue;
            }
            let edit = Edit {
                name: item.name.clone(),
                content: serde_json::Value::Null,
                deleted: true,
                author: author.into(),
                origin: sync.me.clone(),
                restored_from: None,
            };
            if sync
                .save(
                    Collection::Sessions,
                    item.id.clone(),
                    edit,
                    Precondition::Rev(item.rev.clone()),
                )
                .await
                .is_ok()
            {
                ended += 1;
            }
        }
        match page.next {
            Some(n) => after = Some(n),
            None => return ended,
        }
    }
}

/// Sweeps every `period` while this server leads or stands alone, until `shutdown`.
pub async fn run(sync: Arc<Replication>, period: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        if sync.view().i_lead {
            let n = sweep(&sync).await;
            if n > 0 {
                tracing::info!(sessions = n, "ended expired sessions");
            }
        }
    }
}
