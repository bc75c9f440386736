//! Users' edits: the precondition an edit must meet, the new revision it makes, and the writing
//! of many edits in one write (each item once per write; a second edit of an item goes in the
//! write after, so each precondition is checked against committed state).

use std::collections::HashSet;

use serde_json::Value;

use crate::commit::{Write, Writer};
use crate::import::IMPORT_BATCH;
use crate::item::{ANCESTORS_KEEP, Collection, Content, Item, next_rev, now_rfc3339};
use crate::{INLINE_BELOW, Inner, Store, StoreError};

/// A change a user (or a restore) makes to an item.
#[derive(Debug, Clone)]
pub struct Edit {
    pub name: String,
    pub content: Value,
    pub deleted: bool,
    pub author: String,
    pub origin: String,
    /// The earlier revision this edit restores, if it is a restore.
    pub restored_from: Option<String>,
}

/// What must hold for an edit to be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// Apply whatever the current state.
    None,
    /// The item must exist (not deleted) at exactly this revision (`If-Match`).
    Rev(String),
    /// The item must not exist or be deleted (create).
    Absent,
    /// The item must exist and not be deleted (update, delete).
    Live,
}

/// An edit of one item, ready to be written.
#[derive(Debug, Clone)]
pub struct EditRequest {
    pub coll: Collection,
    pub id: String,
    pub edit: Edit,
    pub pre: Precondition,
    /// The new revision also enters the outbox, in the same write, to be pushed to the leader.
    pub queue: bool,
}

/// A written edit.
#[derive(Debug, Clone)]
pub struct Written {
    /// The item as written (its new revision and sequence number).
    pub item: Item,
    /// Whether it replaced a live item.
    pub replaced: bool,
    /// The store's [`Store::ticket`] once it was written, for [`Store::durable_upto`].
    pub ticket: u64,
    /// It entered the outbox, to be pushed to the leader: asked to, or meant to be committed
    /// here by a server that no longer leads (see [`Store::fence_leading`]).
    pub queued: bool,
}

impl Store {
    /// Applies one edit and answers the new current item and whether it replaced a live one,
    /// before it is on disk: the caller awaits [`Store::durable`] before acknowledging it.
    pub async fn write_edit(
        &self,
        coll: Collection,
        id: String,
        edit: Edit,
        pre: Precondition,
        queue: bool,
    ) -> Result<(Item, bool), StoreError> {
        let request = EditRequest {
            coll,
            id,
            edit,
            pre,
            queue,
        };
        let written = self.write_edits(vec![request]).await.pop();
        let written =
            written.unwrap_or_else(|| Err(StoreError::Task("the edit was not answered".into())))?;
        Ok((written.item, written.replaced))
    }

    /// Writes `edits` together, in as few writes as their items allow, and answers each in order
    /// (refused when its precondition does not hold); none is on disk until
    /// [`Store::durable_upto`] its ticket.
    pub async fn write_edits(&self, edits: Vec<EditRequest>) -> Vec<Result<Written, StoreError>> {
        let n = edits.len();
        let (tx, rx) = std::sync::mpsc::channel();
        self.write_edits_then(edits, move |answers| {
            let _ = tx.send(answers);
        })
        .await;
        rx.try_recv().unwrap_or_else(|_| {
            (0..n)
                .map(|_| Err(StoreError::Task("the edits were not answered".into())))
                .collect()
        })
    }

    /// [`Store::write_edits`], handing the answers to `then` where the write is made (on the
    /// calling thread, or on the blocking pool), so they are delivered even when the caller stops
    /// waiting: whoever writes a group of users' saves answers every one of them.
    pub async fn write_edits_then(
        &self,
        edits: Vec<EditRequest>,
        then: impl FnOnce(Vec<Result<Written, StoreError>>) + Send + 'static,
    ) {
        if edits.is_empty() {
            then(Vec::new());
            return;
        }
        let small = edits.len() < INLINE_BELOW;
        let written = self
            .with_writer(small, move |inner, writer| {
                then(inner.write_edits(writer, edits));
                Ok(())
            })
            .await;
        if let Err(e) = written {
            tracing::error!(error = %e, "a group of edits could not be written");
        }
    }
}

impl Inner {
    /// Writes `edits` with the writer lock `writer` (or answers each its error): every item once
    /// per write, at most [`IMPORT_BATCH`] items a write.
    fn write_edits(
        &self,
        writer: Result<Writer<'_>, StoreError>,
        edits: Vec<EditRequest>,
    ) -> Vec<Result<Written, StoreError>> {
        let _g = match writer {
            Ok(g) => g,
            Err(e) => return edits.iter().map(|_| Err(e.again())).collect(),
        };
        let mut answers: Vec<Option<Result<Written, StoreError>>> =
            edits.iter().map(|_| None).collect();
        // A save meant to be committed here waits for the leader instead once this server no
        // longer leads.
        let follows = !self.leads();
        let mut remaining: Vec<(usize, EditRequest)> = edits.into_iter().enumerate().collect();
        while !remaining.is_empty() {
            let mut keys = HashSet::new();
            let mut later = Vec::new();
            let mut writes = Vec::new();
            let mut made = Vec::new();
            for (i, e) in remaining {
                if writes.len() == IMPORT_BATCH || !keys.insert((e.coll, e.id.clone())) {
                    later.push((i, e));
                    continue;
                }
                let queued = e.queue || follows;
                match self.prepare(e.coll, &e.id, e.edit, &e.pre, queued) {
                    Ok((write, replaced)) => {
                        writes.push(write);
                        made.push((i, replaced, queued));
                    }
                    Err(err) => answers[i] = Some(Err(err)),
                }
            }
            match self.write(writes) {
                Ok(items) => {
                    let ticket = self.written.load(std::sync::atomic::Ordering::SeqCst);
                    for ((i, replaced, queued), item) in made.into_iter().zip(items) {
                        answers[i] = Some(Ok(Written {
                            item,
                            replaced,
                            ticket,
                            queued,
                        }));
                    }
                }
                Err(err) => {
                    for (i, _, _) in made {
                        answers[i] = Some(Err(err.again()));
                    }
                }
            }
            remaining = later;
        }
        answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(StoreError::Task("the edit was not answered".into()))))
            .collect()
    }

    /// The write a save makes on the current state, and whether it replaces a live item;
    /// refused when its precondition does not hold.
    pub(crate) fn prepare(
        &self,
        coll: Collection,
        id: &str,
        edit: Edit,
        pre: &Precondition,
        queue: bool,
    ) -> Result<(Write, bool), StoreError> {
        // Its revision, ancestry and flags: the body is not needed.
        let current = self.get_head(coll, id)?;
        let live = current.as_ref().filter(|c| !c.deleted);
        match pre {
            Precondition::None => {}
            Precondition::Rev(r) => {
                if live.map(|c| &c.rev) != Some(r) {
                    return Err(StoreError::PreconditionFailed {
                        current: live.map(|c| c.rev.clone()),
                    });
                }
            }
            Precondition::Absent if live.is_some() => return Err(StoreError::AlreadyExists),
            Precondition::Live if live.is_none() => return Err(StoreError::NotFound),
            Precondition::Absent | Precondition::Live => {}
        }
        let parent = current.as_ref().map(|c| c.rev.as_str());
        let rev = next_rev(parent, &edit.name, edit.deleted, &edit.content);
        let ancestors = match &current {
            Some(c) => std::iter::once(c.rev.clone())
                .chain(c.ancestors.iter().cloned())
                .take(ANCESTORS_KEEP)
                .collect(),
            None => Vec::new(),
        };
        let item = Item {
            id: id.to_string(),
            name: edit.name,
            content: Content::of(&edit.content),
            rev,
            updated_at: now_rfc3339(),
            updated_by: edit.author,
            origin: edit.origin,
            deleted: edit.deleted,
            ancestors,
            seq: 0,
            restored_from: edit.restored_from,
        };
        let replaced = live.is_some();
        Ok((
            Write {
                coll,
                item,
                prev: current,
                outbox: queue,
                history: true,
            },
            replaced,
        ))
    }
}
