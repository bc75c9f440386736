//! Save batching: users' saves that arrive while a group of saves is being written wait in a
//! queue and are then written together, in one store write (sharing its log sync). A written save
//! bound for the leader is handed to the immediate pusher ([`super::push::run_now`]) with the
//! channel on which the leader's verdict is to be answered.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::lock;
use crate::store::{Collection, EditRequest, Store, StoreError, Written};
use crate::wire::PushOutcome;

/// Where the leader's answer to a pushed save goes (`Err` when the push failed).
pub type PushReply = oneshot::Sender<Result<PushOutcome, ()>>;

/// A written save on its way to the leader.
pub struct ToPush {
    pub collection: Collection,
    pub written: Written,
    pub reply: PushReply,
}

/// The answer to a queued save (see [`Saves::enqueue`]).
pub type Saved = oneshot::Receiver<Result<Written, StoreError>>;

/// What a queued save was answered, its writer gone unanswering included.
pub fn answered(
    received: Result<Result<Written, StoreError>, oneshot::error::RecvError>,
) -> Result<Written, StoreError> {
    received.map_err(|_| StoreError::Task("the save was dropped unanswered".into()))?
}

/// The queue of saves waiting for the next group write; cheap to clone.
#[derive(Clone)]
pub struct Saves(Arc<Queue>);

struct Queue {
    store: Store,
    /// Saves waiting to be written, with where their answers go.
    queued: Mutex<Vec<Queued>>,
    /// Held while a group is written, so that saves queued meanwhile go together in the next.
    writing: tokio::sync::Mutex<()>,
    /// Written saves bound for the leader, for the immediate pusher.
    to_push: mpsc::UnboundedSender<ToPush>,
}

struct Queued {
    request: EditRequest,
    reply: oneshot::Sender<Result<Written, StoreError>>,
    /// Set when the written save is to be pushed to the leader at once.
    push: Option<PushReply>,
}

impl Saves {
    /// A queue writing into `store`, and the receiving end of the written saves bound for the
    /// leader.
    pub fn new(store: Store) -> (Saves, mpsc::UnboundedReceiver<ToPush>) {
        let (to_push, pushes) = mpsc::unbounded_channel();
        let queue = Queue {
            store,
            queued: Mutex::new(Vec::new()),
            writing: tokio::sync::Mutex::new(()),
            to_push,
        };
        (Saves(Arc::new(queue)), pushes)
    }

    /// Queues a save for the next group write (see [`Saves::write_queued`]) without writing it.
    /// With `push`, the written save is handed to the immediate pusher, which answers `push`
    /// with the leader's verdict (at once with `Err` when the pusher is gone).
    pub fn enqueue(&self, request: EditRequest, push: Option<PushReply>) -> Saved {
        let (reply, saved) = oneshot::channel();
        lock(&self.0.queued).push(Queued {
            request,
            reply,
            push,
        });
        saved
    }

    /// Whether saves wait for [`Saves::write_queued`].
    pub fn has_queued(&self) -> bool {
        !lock(&self.0.queued).is_empty()
    }

    /// Writes a save together with every save waiting beside it; not yet durable (see
    /// [`Store::durable_upto`]).
    pub async fn write(&self, request: EditRequest) -> Result<Written, StoreError> {
        let saved = self.enqueue(request, None);
        self.write_queued().await?;
        answered(saved.await)
    }

    /// Writes every queued save in one group and answers each; a save another call took is
    /// answered by that call. The answers are given where the store makes the write, so a caller
    /// that stops waiting leaves no save it took unanswered.
    pub async fn write_queued(&self) -> Result<(), StoreError> {
        if !self.has_queued() {
            return Ok(());
        }
        self.write_group().await;
        Ok(())
    }

    async fn write_group(&self) {
        let _writing = self.0.writing.lock().await;
        let taken = std::mem::take(&mut *lock(&self.0.queued));
        if taken.is_empty() {
            return;
        }
        let (requests, waiting): (Vec<_>, Vec<_>) = taken
            .into_iter()
            .map(|q| (q.request, (q.reply, q.push)))
            .unzip();
        let collections: Vec<Collection> = requests.iter().map(|r| r.coll).collect();
        let sink = self.0.to_push.clone();
        let answer_all = move |answers: Vec<Result<Written, StoreError>>| {
            let waiting = waiting.into_iter().zip(collections).zip(answers);
            for (((reply, push), collection), answer) in waiting {
                if let (Ok(written), Some(push)) = (&answer, push) {
                    let to_push = ToPush {
                        collection,
                        written: written.clone(),
                        reply: push,
                    };
                    if let Err(back) = sink.send(to_push) {
                        let _ = back.0.reply.send(Err(()));
                    }
                }
                let _ = reply.send(answer);
            }
        };
        self.0.store.write_edits_then(requests, answer_all).await;
    }
}
