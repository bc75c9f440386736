//! Backups: every exported item in collection then id order, and the import of a backup's
//! items, checked whole before anything is written, then written in batches.

use crate::commit::Write;
use crate::item::{Collection, Item};
use crate::keys::idx;
use crate::{Inner, Store, StoreError};

/// Items an import writes per transaction: large transactions make sled hold on to memory long
/// after they commit, and each batch is all-or-nothing anyway.
pub(crate) const IMPORT_BATCH: usize = 256;

/// What an import does with an item whose local revision diverges from the imported one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportPolicy {
    /// The imported revision becomes current; the local one stays in history.
    Replace,
    /// Refuse the whole import.
    Fail,
}

/// What an import did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ImportReport {
    pub written: usize,
    pub unchanged: usize,
    /// `collection/id` of items kept because this server holds a newer descendant.
    pub newer_here: Vec<String>,
    /// `collection/id` of items whose diverging local revision was replaced.
    pub replaced: Vec<String>,
}

impl Store {
    /// Every item of the exported collections, tombstones included, in collection then id order.
    pub fn export_iter(
        &self,
    ) -> impl Iterator<Item = Result<(Collection, Item), StoreError>> + Send + 'static {
        let trees: Vec<(Collection, sled::Tree)> = Collection::ALL
            .into_iter()
            .filter(|c| c.exported())
            .map(|c| (c, self.inner.trees[idx(c)].clone()))
            .collect();
        let inner = self.inner.clone();
        trees.into_iter().flat_map(move |(c, t)| {
            let inner = inner.clone();
            t.iter().filter_map(move |kv| {
                let read = || {
                    let (k, v) = kv?;
                    inner.current_of(c, &k, v)
                };
                read().transpose().map(|item| item.map(|i| (c, i)))
            })
        })
    }

    /// Writes imported items, in transactions of `IMPORT_BATCH` items once every item has been
    /// checked (so a refused import writes nothing, and an interrupted one completes when run
    /// again, since identical revisions are skipped). An item is written when this server does
    /// not have it or has an ancestor of it; identical revisions are skipped, and so are items this
    /// server holds newer descendants of. An item whose local revision diverges replaces it under
    /// [`ImportPolicy::Replace`] (the local revision stays readable in the item's history) and
    /// refuses the whole import under [`ImportPolicy::Fail`].
    pub async fn import(
        &self,
        items: Vec<(Collection, Item)>,
        policy: ImportPolicy,
    ) -> Result<ImportReport, StoreError> {
        let res = self
            .blocking(move |inner| inner.import(items, policy))
            .await?;
        self.durable().await?;
        Ok(res)
    }
}

impl Inner {
    fn import(
        &self,
        items: Vec<(Collection, Item)>,
        policy: ImportPolicy,
    ) -> Result<ImportReport, StoreError> {
        let _g = self.writer()?;
        let mut writes = Vec::new();
        let mut report = ImportReport::default();
        for (coll, item) in items {
            let key = format!("{}/{}", coll.as_str(), item.id);
            match self.get(coll, &item.id)? {
                None => writes.push(Write::on(coll, item, None)),
                Some(cur) if cur.rev == item.rev => report.unchanged += 1,
                Some(cur) if item.descends_from(&cur.rev) => {
                    writes.push(Write::on(coll, item, Some(cur)))
                }
                Some(cur) if cur.descends_from(&item.rev) => report.newer_here.push(key),
                Some(cur) => {
                    report.replaced.push(key);
                    // Not on the imported line, but kept: it stays readable in history.
                    writes.push(Write::on(coll, item, Some(cur)));
                }
            }
        }
        if policy == ImportPolicy::Fail && !report.replaced.is_empty() {
            let shown: Vec<_> = report.replaced.iter().take(10).cloned().collect();
            return Err(StoreError::ImportConflict(format!(
                "{} item(s) differ from this server's own edits: {}",
                report.replaced.len(),
                shown.join(", ")
            )));
        }
        report.written = writes.len();
        let mut writes = writes.into_iter().peekable();
        while writes.peek().is_some() {
            self.write(writes.by_ref().take(IMPORT_BATCH).collect())?;
        }
        Ok(report)
    }
}
