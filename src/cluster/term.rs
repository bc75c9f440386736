//! Terms (fencing): every leadership has a term number, persisted and never going backwards.
//! Every server-to-server call carries the caller's term; a call from an older term is refused
//! (409 `stale_term`, naming the current term) and a newer term is adopted. A leader starting a
//! leadership takes a new term, so a paused or partitioned old leader cannot overwrite the content
//! of the new one.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{ApiError, Code};
use crate::store::{Store, StoreError};

const META_TERM: &str = "term";

/// This server's current term.
pub struct Terms {
    current: AtomicU64,
    store: Store,
    lock: tokio::sync::Mutex<()>,
}

impl Terms {
    /// Loads the persisted term (0 for a new store).
    pub async fn load(store: Store) -> Result<Terms, StoreError> {
        let t = store
            .meta_get(META_TERM)
            .await?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        Ok(Terms {
            current: AtomicU64::new(t),
            store,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    pub fn current(&self) -> u64 {
        self.current.load(Ordering::SeqCst)
    }

    async fn persist(&self, t: u64) -> Result<(), StoreError> {
        self.store
            .meta_set(META_TERM, t.to_be_bytes().to_vec())
            .await?;
        self.store.durable().await
    }

    /// Adopts `t` if it is newer; answers whether it was. Durable before it answers.
    pub async fn observe(&self, t: u64) -> Result<bool, StoreError> {
        if t <= self.current() {
            return Ok(false);
        }
        let _g = self.lock.lock().await;
        if t <= self.current() {
            return Ok(false);
        }
        self.persist(t).await?;
        self.current.store(t, Ordering::SeqCst);
        tracing::info!(term = t, "adopted a newer term");
        Ok(true)
    }

    /// Starts a new term (a new leadership) and answers it.
    pub async fn bump(&self) -> Result<u64, StoreError> {
        let _g = self.lock.lock().await;
        let t = self.current() + 1;
        self.persist(t).await?;
        self.current.store(t, Ordering::SeqCst);
        Ok(t)
    }

    /// Fencing for an incoming call: refuses an older term, adopts a newer one.
    pub async fn check_incoming(&self, t: u64) -> Result<(), ApiError> {
        let mine = self.current();
        if t < mine {
            return Err(ApiError::new(
                Code::StaleTerm,
                format!("the call carries term {t}, older than this server's term {mine}"),
            )
            .with_details(serde_json::json!({ "term": mine })));
        }
        self.observe(t).await?;
        Ok(())
    }
}
