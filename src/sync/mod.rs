//! Synchronisation: a follower pushes each local edit to the leader at once (outbox → `push`),
//! follows the leader's change feed with long-polls (`follow`), reconciles by digest when its
//! cursor is unknown (`follow::reconcile`), and applies the conflict rules of [`resolve`]. The
//! invariants I1–I4 of the specification live here:
//! - I1: followers apply every change of the leader's feed; a new or reset follower reconciles.
//! - I2: an edit is acknowledged only once durable locally *with* its outbox entry; the outbox is
//!   drained until the leader has settled each edit; losers become conflict records.
//! - I3: the leader resolves pushes against its own current revision (rules in [`resolve`],
//!   applied atomically by the store's `accept_pushed`).
//! - I4: when the leader is unreachable a follower keeps serving, answers saves `202 pending`,
//!   logs the state change once, and drains the outbox when the leader is back.

pub mod clock;
pub mod follow;
pub mod push;
pub mod resolve;
pub mod saves;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::cluster::remote::{Remote, RemoteError, Remotes};
use crate::cluster::{ClusterView, LeaderRef, Leadership, Terms};
use crate::config::{Config, Mode};
use crate::lock;
use crate::metrics::{Metrics, PeerLabels, ServerLabels};
use crate::store::{Collection, Edit, EditRequest, Item, Precondition, Pushed, Store, StoreError};
use crate::wire::{self, Entry, PushAnswer, PushOutcome, PushRequest};
use clock::{ClockWarning, Clocks};
use saves::{Saves, ToPush, answered};

/// What became of a save, as the user is told (SPEC §2).
#[derive(Debug, Clone)]
pub enum SaveOutcome {
    /// The leader has it (or this server is the leader / stands alone).
    Committed,
    /// Durable here and queued; the leader could not be reached.
    Pending,
    /// The leader held a diverging edit: it won, and this edit is kept as `record`.
    Conflict {
        winner: Box<Item>,
        record: Option<Box<Item>>,
    },
}

/// What a follower knows about its leader.
#[derive(Debug, Clone, Default)]
pub struct FollowStatus {
    /// The leader's id, once it has answered.
    pub leader_id: Option<String>,
    /// The leader's latest sequence number, as of its last answer.
    pub leader_seq: u64,
    /// The leader's sequence number this follower has applied up to.
    pub applied: u64,
    /// When the leader last answered.
    pub last_contact: Option<SystemTime>,
    /// The leader's clock minus ours, measured at every token exchange and feed answer.
    pub clock_offset_ms: Option<i64>,
    /// When `clock_offset_ms` was measured.
    pub clock_measured: Option<std::time::Instant>,
    /// The leader's other followers, as it reported them.
    pub other_followers: Vec<wire::MemberSummary>,
    /// The base URL of the leader whose last feed answer said it takes pushed deltas.
    pub takes_deltas: Option<String>,
    /// The base URL of the leader this follower has caught up with since it began following
    /// it: its feed answered from this follower's cursor, or the two reconciled. Until then
    /// nothing is pushed to it, since what this server assumes the leader holds (the revision
    /// before each new save) may be wrong: it may have led itself meanwhile, or had its pushes
    /// accepted by a leader that has been replaced. Reconciliation queues every item this
    /// server holds newer or on a line of its own with its whole kept line.
    pub synced_with: Option<String>,
}

/// What a leader knows about one follower.
#[derive(Debug, Clone)]
pub struct FollowerInfo {
    /// The sequence number its last poll continued from.
    pub cursor: u64,
    /// When it last polled (or exchanged a token).
    pub last_contact: SystemTime,
    /// The Folio version it runs, as its calls state it.
    pub version: Option<String>,
    /// Its clock minus ours, measured at its token exchanges and polls.
    pub clock_offset_ms: Option<i64>,
}

/// A follower not heard from for this long has left: it is forgotten (cluster view, metrics).
pub const FORGET_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// How late past `cluster.poll.interval` a poll (or its answer) may come before the other server
/// counts as late; also how much longer than its wait a long-poll is given before it is abandoned.
pub const ANSWER_GRACE: Duration = Duration::from_secs(2);

/// What the last call to the leader found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Link {
    /// No call has ended yet.
    Unknown,
    /// It answered.
    Up,
    /// It did not answer: why.
    Unreachable(String),
    /// It answered and refused the call: why, as it said (status, code, message).
    Refusing(String),
}

/// The replication service of one server: it saves users' edits (pushing them to the leader
/// from a follower), follows the leader's change feed, and keeps what each side knows of the
/// other for the cluster view. Shared by the handlers and the background workers.
pub struct Replication {
    /// This server's store.
    pub store: Store,
    pub config: Arc<Config>,
    /// This server's id.
    pub me: String,
    /// The terms (fencing) this server has seen.
    pub terms: Arc<Terms>,
    /// Who leads, per `cluster.mode`.
    pub leadership: Arc<dyn Leadership>,
    /// The latest leadership view, read without waiting.
    view: watch::Receiver<ClusterView>,
    pub metrics: Arc<Metrics>,
    /// Clients of the other servers (shared with the BULLY election).
    pub remotes: Arc<Remotes>,
    /// What the last call to the leader found; a std mutex, held only to read or flip it.
    link: Mutex<Link>,
    /// Clock offsets against the leader's beyond `cluster.clock.warn`.
    pub clocks: Clocks,
    /// Why the leader refused the last push, while it does (logged when that changes).
    push_refusal: Mutex<Option<String>>,
    /// Wakes the background pusher ([`push::run`]).
    pub push_kick: Notify,
    /// Users' saves waiting to be written together.
    pub saves: Saves,
    /// Wakes [`push::run_now`] when a save bound for the leader is queued.
    pub push_wake: Notify,
    /// Written saves bound for the leader, for [`push::run_now`] (until it starts).
    push_now_queue: Mutex<Option<mpsc::UnboundedReceiver<ToPush>>>,
    /// Follower side: what this server knows of its leader.
    pub status: Mutex<FollowStatus>,
    /// Leader side: the followers that poll this server, by id.
    pub followers: Mutex<BTreeMap<String, FollowerInfo>>,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl Replication {
    pub fn new(
        store: Store,
        config: Arc<Config>,
        me: String,
        terms: Arc<Terms>,
        leadership: Arc<dyn Leadership>,
        metrics: Arc<Metrics>,
        remotes: Arc<Remotes>,
    ) -> Replication {
        let view = leadership.view();
        if leadership.mode() != Mode::None {
            // What only a leader writes is written only while this server leads.
            let leads = leadership.view();
            store.fence_leading(Arc::new(move || leads.borrow().i_lead));
        }
        let (saves, queue) = Saves::new(store.clone());
        let clocks = Clocks::new(config.cluster.clock_warn);
        Replication {
            saves,
            store,
            config,
            me,
            terms,
            leadership,
            view,
            metrics,
            remotes,
            link: Mutex::new(Link::Unknown),
            clocks,
            push_refusal: Mutex::new(None),
            push_kick: Notify::new(),
            push_wake: Notify::new(),
            push_now_queue: Mutex::new(Some(queue)),
            status: Mutex::new(FollowStatus::default()),
            followers: Mutex::new(BTreeMap::new()),
        }
    }

    /// The receiving end of the saves waiting for an immediate push, for [`push::run_now`]
    /// (once).
    pub fn take_push_now_queue(&self) -> Option<mpsc::UnboundedReceiver<ToPush>> {
        lock(&self.push_now_queue).take()
    }

    /// The conflict rules of this server, for the store to apply.
    pub fn rules(&self) -> resolve::Rules {
        resolve::Rules {
            me: self.me.clone(),
        }
    }

    /// The current leadership view.
    pub fn view(&self) -> ClusterView {
        self.view.borrow().clone()
    }

    /// A receiver for leadership changes.
    pub fn watch_view(&self) -> watch::Receiver<ClusterView> {
        self.leadership.view()
    }

    /// The leader this server follows, if it follows one.
    pub fn following(&self) -> Option<LeaderRef> {
        let v = self.view();
        if v.i_lead { None } else { v.leader }
    }

    /// `standalone`, `leader` or `follower`.
    pub fn role(&self) -> &'static str {
        if self.leadership.mode() == Mode::None {
            "standalone"
        } else if self.view().i_lead {
            "leader"
        } else {
            "follower"
        }
    }

    /// The client of the server at `url`.
    pub fn remote(&self, url: &str) -> Option<Arc<Remote>> {
        self.remotes.get(url)
    }

    /// Records that the leader answered (`clock_ms`: its clock as its answer stated it, when it
    /// did); logs only when that changes.
    pub fn link_up(&self, peer: &Remote, clock_ms: Option<u64>) {
        let mut link = lock(&self.link);
        if *link != Link::Up {
            tracing::info!(leader = %peer.base, "leader reachable; synchronising");
            *link = Link::Up;
            self.push_kick.notify_one();
        }
        drop(link);
        let mut st = lock(&self.status);
        st.last_contact = Some(SystemTime::now());
        let hello = lock(&peer.hello).clone();
        if let Some(hello) = hello {
            st.leader_id = Some(hello.id);
            // A token exchange newer than the last measurement.
            if st.clock_measured.is_none_or(|at| at < hello.at) {
                st.clock_offset_ms = Some(hello.offset_ms);
                st.clock_measured = Some(hello.at);
            }
        }
        if let Some(theirs) = clock_ms {
            st.clock_offset_ms = Some(wire::offset_ms(theirs, wire::now_ms()));
            st.clock_measured = Some(std::time::Instant::now());
        }
        if let Some(offset) = st.clock_offset_ms {
            // Ours minus the leader's.
            self.clocks.note(&self.me, offset.saturating_neg());
        }
    }

    /// Records that a call to the leader failed: it did not answer, or answered and refused
    /// (any other failure says nothing of the link); logs only when that changes (I4), or when
    /// the reason for a refusal does.
    pub fn link_down(&self, peer: &Remote, err: &RemoteError) {
        let mut link = lock(&self.link);
        let next = if err.is_unreachable() {
            Link::Unreachable(err.to_string())
        } else {
            Link::Refusing(err.to_string())
        };
        match (&*link, &next) {
            (Link::Unreachable(_), Link::Unreachable(_)) => {}
            (Link::Refusing(a), Link::Refusing(b)) if a == b => {}
            (_, Link::Unreachable(_)) => tracing::warn!(
                leader = %peer.base,
                error = %err,
                "leader unreachable; serving reads and writes alone, edits are queued and pushed when it returns"
            ),
            _ => tracing::warn!(
                leader = %peer.base,
                reason = %err,
                "the leader answers but refuses this server; serving reads and writes alone, edits are queued and pushed once it accepts them"
            ),
        }
        *link = next;
    }

    /// Forgets what this server knew of the leader it followed (its link, id, clock, other
    /// followers), when another leads (or this server does): what the cluster view, `/health`
    /// and the clock warnings say is then of the new leader only.
    pub fn leader_changed(&self) {
        *lock(&self.link) = Link::Unknown;
        *lock(&self.push_refusal) = None;
        let mut st = lock(&self.status);
        st.synced_with = None;
        st.leader_id = None;
        st.last_contact = None;
        st.clock_offset_ms = None;
        st.clock_measured = None;
        st.other_followers.clear();
        drop(st);
        self.clocks.forget();
    }

    /// Whether the leader answered the last call (`None` before the first call ended).
    pub fn link_is_up(&self) -> Option<bool> {
        match *lock(&self.link) {
            Link::Unknown => None,
            Link::Up => Some(true),
            _ => Some(false),
        }
    }

    /// Why the last call to the leader failed, while it fails.
    pub fn link_error(&self) -> Option<String> {
        match &*lock(&self.link) {
            Link::Unreachable(e) | Link::Refusing(e) => Some(e.clone()),
            Link::Unknown | Link::Up => None,
        }
    }

    /// Applies a user's edit: durable locally, then (on a follower) pushed to the leader at once.
    pub async fn save(
        &self,
        coll: Collection,
        id: String,
        edit: Edit,
        pre: Precondition,
    ) -> Result<(Item, SaveOutcome), StoreError> {
        let (item, outcome, _) = self.save_replacing(coll, id, edit, pre).await?;
        Ok((item, outcome))
    }

    /// [`Replication::save`], also answering whether the edit replaced a live item.
    pub async fn save_replacing(
        &self,
        coll: Collection,
        id: String,
        edit: Edit,
        pre: Precondition,
    ) -> Result<(Item, SaveOutcome, bool), StoreError> {
        let view = self.view();
        let clustered = self.leadership.mode() != Mode::None;
        let can_commit = !clustered || self.leadership.can_commit();
        let queue = clustered && (!view.i_lead || !can_commit);
        let push_now = queue
            && can_commit
            && !view.i_lead
            && view
                .leader
                .as_ref()
                .and_then(|l| self.remote(&l.url))
                .is_some();
        let request = EditRequest {
            coll,
            id,
            edit,
            pre,
            queue,
        };
        if !push_now {
            // Stand-alone or leading (committed here), or too few members to commit or no
            // leader known yet (durable here, pushed later).
            let written = self.saves.write(request).await?;
            self.store.durable_upto(written.ticket).await?;
            let (item, replaced) = (written.item, written.replaced);
            // Queued also when leadership moved on before the write (the store's fence).
            let outcome = if written.queued {
                self.push_kick.notify_one();
                SaveOutcome::Pending
            } else {
                SaveOutcome::Committed
            };
            return Ok((item, outcome, replaced));
        }
        // The save waits in the queue while the pusher's current push is on its way;
        // then the pusher writes every waiting save in one store write and pushes them together,
        // flushing once alongside the push. The save is answered only once it is durable here,
        // whatever the leader said, and waits for the pusher no longer than
        // `cluster.push.timeout` (then it writes itself, and is pushed later).
        let deadline = tokio::time::Instant::now() + self.config.cluster.push_timeout;
        let (push, pushed) = oneshot::channel();
        let mut saved = self.saves.enqueue(request, Some(push));
        self.push_wake.notify_one();
        let written = match tokio::time::timeout_at(deadline, &mut saved).await {
            Ok(received) => answered(received)?,
            Err(_) => {
                self.saves.write_queued().await?;
                answered(saved.await)?
            }
        };
        let (item, replaced, ticket) = (written.item, written.replaced, written.ticket);
        let pushed = match tokio::time::timeout_at(deadline, pushed).await {
            Ok(Ok(answered)) => answered,
            _ => Err(()),
        };
        self.store.durable_upto(ticket).await?;
        match pushed {
            Ok(outcome) => {
                let outcome = match outcome.settled() {
                    Pushed::Accepted => SaveOutcome::Committed,
                    Pushed::Lost { winner, record } => SaveOutcome::Conflict { winner, record },
                };
                Ok((item, outcome, replaced))
            }
            _ => {
                self.push_kick.notify_one();
                Ok((item, SaveOutcome::Pending, replaced))
            }
        }
    }

    /// Pushes edits to the leader and settles each answer locally. Large items go as deltas
    /// to a leader that takes them, and whole again should it not hold a delta's base.
    pub async fn push(
        &self,
        peer: &Remote,
        edits: Vec<Entry>,
    ) -> Result<Vec<PushOutcome>, RemoteError> {
        let takes_deltas = lock(&self.status).takes_deltas.as_deref() == Some(peer.base.as_str());
        let deltas = if takes_deltas {
            self.as_deltas(&edits).await
        } else {
            None
        };
        let call = |body: PushRequest| async move {
            let answer: Result<PushAnswer, _> = peer
                .call(
                    reqwest::Method::POST,
                    // A chain above a revision the leader lacks is refused, not taken with a gap.
                    "push?gaps=refuse",
                    Some(&body),
                    self.config.cluster.push_timeout,
                )
                .await;
            answer
        };
        let keys: Vec<(Collection, String, String)> = edits
            .iter()
            .map(|e| (e.collection, e.item.id.clone(), e.item.rev.clone()))
            .collect();
        let answer = match deltas {
            Some(deltas) => match call(PushRequest { edits: deltas }).await {
                Err(RemoteError::Refused {
                    code: Some(crate::error::Code::DeltaBaseMissing),
                    ..
                }) => call(PushRequest { edits }).await,
                other => other,
            },
            None => call(PushRequest { edits }).await,
        };
        let answer = match answer {
            Ok(a) => a,
            Err(RemoteError::Refused {
                code: Some(crate::error::Code::LineGap),
                details,
                ..
            }) => {
                // What this server assumed the leader holds of these items is wrong: their
                // whole kept lines go next (the outbox holds every edit meanwhile).
                // Every item of the push when the answer does not say which.
                let items: Vec<(Collection, String)> =
                    serde_json::from_value(details["items"].clone()).unwrap_or_else(|_| {
                        keys.iter().map(|(c, id, _)| (*c, id.clone())).collect()
                    });
                tracing::info!(leader = %peer.base, items = items.len(), "the leader lacks revisions before pushed ones; pushing those items' whole lines");
                match self.store.queue_for_push(items).await {
                    Ok(_) => self.push_kick.notify_one(),
                    // Tried again at the next interval.
                    Err(e) => {
                        tracing::error!(error = %e, "cannot queue whole lines for the leader")
                    }
                }
                return Err(RemoteError::BadAnswer("line gap".into()));
            }
            Err(e) => {
                self.metrics.push_failures.inc();
                if e.is_unreachable() {
                    self.link_down(peer, &e);
                } else {
                    // Logged when the reason changes, not at every attempt.
                    let why = e.to_string();
                    let mut last = lock(&self.push_refusal);
                    if last.as_deref() != Some(why.as_str()) {
                        tracing::warn!(leader = %peer.base, error = %why, "push refused");
                        *last = Some(why);
                    }
                }
                return Err(e);
            }
        };
        *lock(&self.push_refusal) = None;
        self.link_up(peer, None);
        if answer.outcomes.len() != keys.len() {
            return Err(RemoteError::BadAnswer(
                "push answered a different number of outcomes".into(),
            ));
        }
        let conflicts = answer
            .outcomes
            .iter()
            .filter(|o| matches!(o, PushOutcome::Conflict { .. }))
            .count();
        self.metrics.conflicts.inc_by(conflicts as u64);
        if !self.synced_with(peer) {
            // A leader replaced while the push was on its way: its verdicts settle nothing (the
            // edits stay queued for the next one).
            return Err(RemoteError::Fenced {
                theirs: answer.term,
                ours: self.terms.current(),
            });
        }
        let answers = keys
            .into_iter()
            .zip(answer.outcomes.iter().cloned().map(PushOutcome::settled))
            .collect();
        match self.store.settle_pushes(answers).await {
            Ok(lost) if !lost.is_empty() => follow::resync_histories(self, peer).await,
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "could not settle pushed edits; they stay queued")
            }
        }
        Ok(answer.outcomes)
    }

    /// `edits` with the content of large items as deltas from the revision before them (the
    /// edit before in the same push, else the parent revision, which this store keeps); `None`
    /// when no delta is smaller than the content it stands for.
    async fn as_deltas(&self, edits: &[Entry]) -> Option<Vec<Entry>> {
        let mut out = Vec::with_capacity(edits.len());
        let mut any = false;
        for (at, e) in edits.iter().enumerate() {
            let before = at
                .checked_sub(1)
                .map(|b| &edits[b].item)
                .filter(|b| edits[at - 1].collection == e.collection && b.id == e.item.id);
            match parent_delta(&self.store, e.collection, &e.item, before).await {
                Some(delta) => {
                    any = true;
                    let mut item = e.item.clone();
                    item.content = crate::store::Content::null();
                    out.push(Entry {
                        delta: Some(delta),
                        whole: e.whole,
                        ..Entry::new(e.collection, item)
                    });
                }
                None => out.push(e.clone()),
            }
        }
        any.then_some(out)
    }

    /// Records a follower's poll (leader side).
    pub fn saw_follower(&self, id: &str, cursor: u64, version: Option<String>) {
        let mut f = lock(&self.followers);
        let e = f.entry(id.to_string()).or_insert(FollowerInfo {
            cursor,
            last_contact: SystemTime::now(),
            version: None,
            clock_offset_ms: None,
        });
        e.cursor = cursor;
        e.last_contact = SystemTime::now();
        if version.is_some() {
            e.version = version;
        }
    }

    /// Records another server's clock offset (theirs minus ours) seen at its token exchange or
    /// poll; a leader logs a follower whose clock is off once per change.
    pub fn saw_clock(&self, id: &str, offset_ms: i64) {
        if self.view().i_lead {
            self.clocks.note(id, offset_ms);
        }
        let mut f = lock(&self.followers);
        let e = f.entry(id.to_string()).or_insert(FollowerInfo {
            cursor: 0,
            last_contact: SystemTime::now(),
            version: None,
            clock_offset_ms: None,
        });
        e.clock_offset_ms = Some(offset_ms);
    }

    /// Brings the metrics that describe other servers up to what this server knows now; called
    /// when `/metrics` is scraped, so a follower that stopped polling shows its lag growing and
    /// its last contact ageing at once. The term; per follower this server knows (as leader):
    /// lag (head minus the position it last polled from), seconds since it last polled, clock
    /// offset; per leader this server follows: seconds since it last answered, clock offset.
    /// Followers that left (no longer members, or silent for [`FORGET_AFTER`]) are forgotten,
    /// and their series go with them.
    pub fn refresh_metrics(&self) {
        let m = &self.metrics;
        m.term.set(self.terms.current() as i64);
        self.forget_departed();
        let head = *self.store.watch_seq().borrow();
        let i_lead = self.view().i_lead;
        let ago = |t: SystemTime| t.elapsed().map_or(0.0, |d| d.as_secs_f64());
        let label = |id: &str| PeerLabels {
            peer: id.to_string(),
        };
        m.follower_lag.clear();
        m.last_contact.clear();
        m.clock_offset.clear();
        m.clock_off.clear();
        for w in self.clock_warnings() {
            m.clock_off
                .get_or_create(&ServerLabels { server: w.server })
                .set(w.offset_ms as f64 / 1000.0);
        }
        for (id, f) in lock(&self.followers).iter() {
            if i_lead {
                m.follower_lag
                    .get_or_create(&label(id))
                    .set(head.saturating_sub(f.cursor) as i64);
            }
            m.last_contact
                .get_or_create(&label(id))
                .set(ago(f.last_contact));
            if let Some(offset) = f.clock_offset_ms {
                m.clock_offset
                    .get_or_create(&label(id))
                    .set(offset as f64 / 1000.0);
            }
        }
        if self.following().is_some() {
            let st = lock(&self.status);
            if let Some(id) = &st.leader_id {
                if let Some(t) = st.last_contact {
                    m.last_contact.get_or_create(&label(id)).set(ago(t));
                }
                if let Some(offset) = st.clock_offset_ms {
                    m.clock_offset
                        .get_or_create(&label(id))
                        .set(offset as f64 / 1000.0);
                }
            }
        }
    }

    /// Forgets the followers that left: those the leadership source (BULLY, KUBERNETES) no
    /// longer lists as members, and any not heard from for [`FORGET_AFTER`].
    fn forget_departed(&self) {
        let members: Vec<String> = self
            .leadership
            .members()
            .into_iter()
            .map(|m| m.id)
            .collect();
        lock(&self.followers).retain(|id, f| {
            let silent = f.last_contact.elapsed().is_ok_and(|d| d > FORGET_AFTER);
            !silent && (members.is_empty() || members.contains(id))
        });
    }

    /// Whether this follower has caught up with `peer` since it began following it (see
    /// [`FollowStatus::synced_with`]): only then are edits pushed to it.
    pub fn synced_with(&self, peer: &Remote) -> bool {
        lock(&self.status).synced_with.as_deref() == Some(peer.base.as_str())
    }

    /// Whether this follower has caught up with the leader it follows (see
    /// [`FollowStatus::synced_with`]).
    pub fn synced(&self) -> bool {
        self.following()
            .and_then(|l| self.remote(&l.url))
            .is_some_and(|peer| self.synced_with(&peer))
    }

    /// The followers this leader knows, for its followers' cluster views.
    pub fn follower_summaries(&self) -> Vec<wire::MemberSummary> {
        let head = *self.store.watch_seq().borrow();
        lock(&self.followers)
            .iter()
            .map(|(id, f)| wire::MemberSummary {
                id: id.clone(),
                last_contact: rfc3339(f.last_contact),
                lag: head.saturating_sub(f.cursor),
                version: f.version.clone(),
                reachable: self.health_since(Some(f.last_contact)) == "reachable",
                clock_offset_ms: f.clock_offset_ms,
            })
            .collect()
    }

    /// Changes this follower has yet to apply, as far as it knows.
    pub fn lag(&self) -> u64 {
        if self.following().is_none() {
            return 0;
        }
        let st = lock(&self.status);
        st.leader_seq.saturating_sub(st.applied)
    }

    /// The leader as this server sees it: `{"id", "url"}` (null when none is known yet).
    pub fn leader_json(&self) -> Value {
        let v = self.view();
        match (v.i_lead, v.leader) {
            (true, _) => json!({ "id": self.me, "url": self.my_url() }),
            (false, Some(l)) => {
                json!({ "id": l.id.or(lock(&self.status).leader_id.clone()), "url": l.url })
            }
            (false, None) => Value::Null,
        }
    }

    fn my_url(&self) -> Option<String> {
        let v = self.view();
        if v.i_lead {
            v.leader
                .map(|l| l.url)
                .or(self.config.cluster.bully_bind.clone())
        } else {
            self.config.cluster.bully_bind.clone()
        }
    }

    /// How long after it was last heard another server still counts as reachable: a follower
    /// polls, and a leader answers a poll, at least every `cluster.poll.interval`, give or take
    /// [`ANSWER_GRACE`].
    pub fn silence_limit(&self) -> Duration {
        self.config.cluster.poll_interval + ANSWER_GRACE
    }

    /// What this server can say of another it last heard at `last`: `reachable` within the
    /// [`Replication::silence_limit`], `late` within three times it, else `unreachable`.
    fn health_since(&self, last: Option<SystemTime>) -> &'static str {
        let limit = self.silence_limit();
        match last.map(|t| t.elapsed().unwrap_or_default()) {
            Some(d) if d <= limit => "reachable",
            Some(d) if d <= limit * 3 => "late",
            _ => "unreachable",
        }
    }

    /// When the leader this server follows last answered (RFC 3339), if ever.
    pub fn leader_last_contact(&self) -> Option<String> {
        lock(&self.status).last_contact.map(rfc3339)
    }

    /// The leader's health as this follower heard it (`st` is its status): `refusing` while
    /// it answers and refuses, `unreachable` once a call went unanswered, else by how long ago
    /// it last answered.
    pub fn leader_health(&self, st: &FollowStatus) -> &'static str {
        match &*lock(&self.link) {
            Link::Refusing(_) => "refusing",
            Link::Unreachable(_) => "unreachable",
            Link::Unknown | Link::Up => self.health_since(st.last_contact),
        }
    }

    /// The leader's health as this follower heard it last (see [`Replication::leader_health`]).
    pub fn leader_link(&self) -> &'static str {
        let st = lock(&self.status).clone();
        self.leader_health(&st)
    }

    /// Each server's clock minus the leader's, as far as this server knows: on the leader, every
    /// follower's as measured at its polls and token exchanges; on a follower, its own and the
    /// other followers' as the leader last reported them.
    pub fn clock_offsets(&self) -> Vec<(String, i64)> {
        if self.view().i_lead {
            return lock(&self.followers)
                .iter()
                .filter_map(|(id, f)| Some((id.clone(), f.clock_offset_ms?)))
                .collect();
        }
        if self.following().is_none() {
            return Vec::new();
        }
        let st = lock(&self.status);
        let mut out: Vec<(String, i64)> = st
            .other_followers
            .iter()
            .filter(|p| p.id != self.me)
            .filter_map(|p| Some((p.id.clone(), p.clock_offset_ms?)))
            .collect();
        if let Some(offset) = st.clock_offset_ms {
            out.push((self.me.clone(), offset.saturating_neg()));
        }
        out
    }

    /// The servers whose clocks are further from the leader's than `cluster.clock.warn`.
    pub fn clock_warnings(&self) -> Vec<ClockWarning> {
        let offsets = self.clock_offsets();
        self.clocks
            .warnings(offsets.iter().map(|(id, off)| (id.as_str(), *off)))
    }

    /// Whether the leader this server follows answered its last call, within the silence limit.
    pub fn leader_reachable(&self) -> bool {
        self.link_is_up() == Some(true)
            && self.health_since(lock(&self.status).last_contact) == "reachable"
    }

    /// Whether a save here can be committed now: this server leads (with enough members), or it
    /// follows a leader it can reach.
    pub fn can_commit(&self) -> bool {
        self.leadership.can_commit() && (self.view().i_lead || self.leader_reachable())
    }

    /// How the outside source of membership answers (KUBERNETES: the API server), null in the
    /// modes without one: whether its last answer was good, its error while it fails, and when
    /// it last answered.
    pub fn membership_source(&self) -> Value {
        match self.leadership.source_status() {
            Some(s) => json!({
                "name": s.name,
                "ok": s.error.is_none(),
                "error": s.error,
                "last_success": s.last_success.map(rfc3339),
            }),
            None => Value::Null,
        }
    }

    /// The cluster as this server sees it, for `/api/v1/cluster` and the admin page.
    /// This server's data volume: its free space, what saves keep free, whether they are
    /// accepted (see `store.min_free.mb`).
    pub fn storage_json(&self) -> Value {
        let s = self.store.space();
        let c = self.store.checkpoint_health();
        json!({
            "data_dir": self.store.dir().display().to_string(),
            "free_bytes": s.free,
            "min_free_bytes": s.min_free,
            "writable": s.writable,
            // Checkpoints failing in a row: the write-ahead log is kept, and grows, meanwhile.
            "checkpoint_failures": c.consecutive_failures,
            "checkpoint_error": c.last_error,
        })
    }

    pub fn cluster_json(&self, lifecycle: &str) -> Value {
        let role = self.role();
        let health = |up: bool| if up { "reachable" } else { "unreachable" };
        let mut members = vec![Member {
            id: Some(self.me.clone()),
            url: self.my_url(),
            role,
            is_self: true,
            health: lifecycle.to_string(),
            last_contact: Some(rfc3339(SystemTime::now())),
            lag: Some(self.lag()),
            version: Some(env!("CARGO_PKG_VERSION").to_string()),
            clock_offset_ms: Some(0),
            reason: None,
        }];
        let link_error = self.link_error();
        let known = self.leadership.members();
        let followers = lock(&self.followers).clone();
        let head = *self.store.watch_seq().borrow();
        let st = lock(&self.status).clone();
        if !known.is_empty() {
            // BULLY and KUBERNETES: the leadership source knows every member.
            let i_lead = self.view().i_lead;
            let leader_heard = self.leader_reachable();
            for m in known {
                // What this server heard of the member: the source's own contact (BULLY's
                // heartbeats), else its polls (on the leader) or answers (from the leader), else
                // what the leader last reported of it.
                let (health_word, last) = match m.last_contact {
                    Some(t) if !m.alive && m.refusal.is_some() => ("refusing", Some(rfc3339(t))),
                    Some(t) => (health(m.alive), Some(rfc3339(t))),
                    None if !m.alive && m.refusal.is_some() => ("refusing", None),
                    None if i_lead => {
                        let heard = followers.get(&m.id).map(|f| f.last_contact);
                        (self.health_since(heard), heard.map(rfc3339))
                    }
                    None if m.leader => (self.leader_health(&st), st.last_contact.map(rfc3339)),
                    None => match st.other_followers.iter().find(|p| p.id == m.id) {
                        Some(p) if leader_heard => {
                            (health(p.reachable), Some(p.last_contact.clone()))
                        }
                        Some(p) => ("unknown", Some(p.last_contact.clone())),
                        None => ("unknown", None),
                    },
                };
                let f = followers.get(&m.id);
                let role = match (m.leader, m.alive) {
                    (true, _) => "leader",
                    (false, true) => "follower",
                    (false, false) => "gone",
                };
                let reason = match health_word {
                    "refusing" => m.refusal.clone(),
                    _ if m.leader && !i_lead && health_word != "reachable" => link_error.clone(),
                    _ => None,
                };
                members.push(Member {
                    reason,
                    lag: match (role, f) {
                        ("follower", Some(f)) if i_lead => Some(head.saturating_sub(f.cursor)),
                        ("leader", _) => Some(0),
                        _ => None,
                    },
                    version: m.version.or(f.and_then(|f| f.version.clone())),
                    // The leader's as this follower measures it at every poll, else what its
                    // token exchanges measured.
                    clock_offset_ms: if m.leader && !i_lead {
                        st.clock_offset_ms.or(f.and_then(|f| f.clock_offset_ms))
                    } else {
                        f.and_then(|f| f.clock_offset_ms)
                    },
                    id: Some(m.id),
                    url: m.url,
                    role,
                    is_self: false,
                    health: health_word.into(),
                    last_contact: last,
                });
            }
        } else if let Some(l) = self.following() {
            // A FIXED follower: the leader, and the other followers as the leader reported them.
            let leader_heard = self.leader_reachable();
            members.push(Member {
                id: st.leader_id.clone().or(l.id),
                url: Some(l.url),
                role: "leader",
                is_self: false,
                health: self.leader_health(&st).into(),
                last_contact: st.last_contact.map(rfc3339),
                lag: Some(0),
                version: None,
                clock_offset_ms: st.clock_offset_ms,
                reason: link_error.clone(),
            });
            for p in st.other_followers.iter().filter(|p| p.id != self.me) {
                members.push(Member {
                    id: Some(p.id.clone()),
                    url: None,
                    role: "follower",
                    is_self: false,
                    // As the leader last reported, which says nothing once it is silent.
                    health: if leader_heard {
                        health(p.reachable).into()
                    } else {
                        "unknown".into()
                    },
                    last_contact: Some(p.last_contact.clone()),
                    lag: Some(p.lag),
                    version: p.version.clone(),
                    clock_offset_ms: p.clock_offset_ms,
                    reason: None,
                });
            }
        } else {
            // A FIXED leader: the followers that poll it.
            for (id, f) in &followers {
                members.push(Member {
                    id: Some(id.clone()),
                    url: None,
                    role: "follower",
                    is_self: false,
                    health: self.health_since(Some(f.last_contact)).into(),
                    last_contact: Some(rfc3339(f.last_contact)),
                    lag: Some(head.saturating_sub(f.cursor)),
                    version: f.version.clone(),
                    clock_offset_ms: f.clock_offset_ms,
                    reason: None,
                });
            }
        }
        json!({
            "mode": self.leadership.mode().as_str(),
            "membership_source": self.membership_source(),
            "term": self.terms.current(),
            "me": { "id": self.me, "role": role, "storage": self.storage_json() },
            "leader": self.leader_json(),
            "can_commit": self.can_commit(),
            "members": members,
            "clock_warn_ms": self.clocks.warn_ms(),
            "clock_warnings": self.clock_warnings(),
        })
    }
}

/// One member in the cluster view.
#[derive(serde::Serialize)]
struct Member {
    id: Option<String>,
    url: Option<String>,
    role: &'static str,
    #[serde(rename = "self")]
    is_self: bool,
    health: String,
    last_contact: Option<String>,
    lag: Option<u64>,
    version: Option<String>,
    /// Its clock minus this server's (the leader's, on a follower for the other followers).
    clock_offset_ms: Option<i64>,
    /// Why this server's calls to it fail, while they do: it refuses them (`health` is
    /// `refusing`), or does not answer.
    reason: Option<String>,
}

/// The content of `item` (a workbook or data source of more than [`wire::DELTA_FROM`] bytes)
/// as a delta from its parent revision, when that is smaller: the parent is `before` (the
/// revision before it in the same push) when it is that revision, else read from `store`.
pub async fn parent_delta(
    store: &Store,
    coll: Collection,
    item: &Item,
    before: Option<&Item>,
) -> Option<wire::Delta> {
    let parent = item.ancestors.first()?;
    if item.deleted || item.content.get().len() <= wire::DELTA_FROM {
        return None;
    }
    let base = match before.filter(|b| b.rev == *parent) {
        Some(b) => b.content.value(),
        None => store
            .revision(coll, item.id.clone(), parent.clone())
            .await
            .ok()
            .filter(|r| !r.deleted)?
            .content
            .value(),
    };
    wire::Delta::between(parent, &base, item)
}
