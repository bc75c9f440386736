//! BULLY mode: the lowest id among running servers leads. The election rules are the pure
//! [`engine`]; this runtime does its IO: the join at start (ask the boot servers; a boot server
//! that hears nobody starts alone, any other server refuses to start), heartbeats to every known
//! member and probes of the boot servers and remembered members (so split clusters find each other
//! again), terms for each new leadership, and the published [`ClusterView`].

pub mod engine;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::remote::Remotes;
use super::{ClusterView, LeaderRef, Leadership, MemberInfo, Terms};
use crate::config::{Config, Mode};
use crate::lock;
use crate::metrics::Metrics;
use crate::store::Store;
pub use engine::{Beat, Node};
use engine::{Command, Engine, Event, Millis, Timing};

const META_MEMBERS: &str = "bully_members";

/// A heartbeat answer on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub struct BeatAnswer {
    pub term: u64,
    pub beat: Beat,
}

/// The BULLY leadership of one server.
pub struct Bully {
    engine: Mutex<Engine>,
    tx: watch::Sender<ClusterView>,
    epoch: Instant,
    started: SystemTime,
    timing: Timing,
    min_members: usize,
    terms: Arc<Terms>,
    store: Store,
    metrics: Arc<Metrics>,
    remotes: Arc<Remotes>,
    /// Versions peers reported on their calls.
    versions: Mutex<HashMap<String, String>>,
    /// The terms this server has led since it started, oldest first.
    led: Mutex<Vec<u64>>,
    /// Members that answer this server's heartbeats and refuse them, by URL.
    refusals: Mutex<Refusals>,
}

/// Members refusing this server's heartbeats, by URL.
#[derive(Default)]
struct Refusals {
    /// Why each refused the last heartbeat, while it does.
    current: HashMap<String, String>,
    /// The reason last logged for each, until one accepts a heartbeat again.
    logged: HashMap<String, String>,
}

/// Why a BULLY server cannot start.
#[derive(Debug, thiserror::Error)]
#[error(
    "no boot server answered (tried {tried}); this server ({url}) is not one of cluster.bully.boot, so it cannot start a cluster alone: start a boot server first"
)]
pub struct NoBootServer {
    pub tried: String,
    pub url: String,
}

impl Bully {
    /// Joins the cluster: asks the boot servers for the members and the leader. A boot server
    /// that hears from nobody starts alone; a non-boot server refuses to start.
    pub async fn join(
        config: &Config,
        me: Node,
        store: Store,
        terms: Arc<Terms>,
        remotes: Arc<Remotes>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Bully>, NoBootServer> {
        let c = &config.cluster;
        let heartbeat = c.heartbeat_interval.as_millis() as Millis;
        let timing = Timing {
            heartbeat,
            timeout: c.heartbeat_timeout.as_millis() as Millis,
            stability: c.bully_stability.as_millis() as Millis,
        };
        let remembered: Vec<String> = store
            .meta_get(META_MEMBERS)
            .await
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or_default();
        let probes: Vec<String> = c
            .bully_boot
            .iter()
            .cloned()
            .chain(remembered.iter().cloned())
            .collect();
        let epoch = Instant::now();
        let mut engine = Engine::new(me.clone(), timing, 0, terms.current(), probes);
        let is_boot = c.bully_boot.contains(&me.url);
        let mut tried = Vec::new();
        let mut answered = false;
        let mut first = Vec::new();
        for url in c
            .bully_boot
            .iter()
            .chain(remembered.iter())
            .filter(|u| **u != me.url)
        {
            let Some(peer) = remotes.get(url) else {
                continue;
            };
            let body = serde_json::to_value(engine.beat(0)).unwrap_or_default();
            let timeout = Duration::from_millis(heartbeat.max(1000) * 2);
            match peer
                .call::<BeatAnswer>(reqwest::Method::POST, "heartbeat", Some(&body), timeout)
                .await
            {
                Ok(a) => {
                    let now = epoch.elapsed().as_millis() as Millis;
                    first.extend(engine.handle(Event::Heard { beat: a.beat, now }));
                    answered = true;
                }
                Err(e) => {
                    tracing::info!(url = %url, error = %e, "no answer while joining");
                    if c.bully_boot.contains(url) {
                        // What each boot server did, so a refused start says why.
                        tried.push(format!("{url} ({e})"));
                    }
                }
            }
        }
        if !answered && !is_boot {
            return Err(NoBootServer {
                tried: tried.join(", "),
                url: me.url,
            });
        }
        if !answered {
            tracing::info!(tried = %tried.join(", "), "no other boot server answered; starting as the only member");
        }
        let (tx, _) = watch::channel(ClusterView {
            i_lead: false,
            leader: None,
        });
        let bully = Arc::new(Bully {
            engine: Mutex::new(engine),
            tx,
            epoch,
            started: SystemTime::now(),
            timing,
            min_members: c.bully_min_members,
            terms,
            store,
            metrics,
            remotes,
            versions: Mutex::new(HashMap::new()),
            refusals: Mutex::new(Refusals::default()),
            led: Mutex::new(Vec::new()),
        });
        let sends = bully.apply(first).await;
        bully.dispatch(sends);
        Ok(bully)
    }

    fn now(&self) -> Millis {
        self.epoch.elapsed().as_millis() as Millis
    }

    fn at(&self, ms: Millis) -> SystemTime {
        self.started + Duration::from_millis(ms)
    }

    /// Carries out the engine's commands; answers the URLs to send heartbeats to.
    async fn apply(&self, cmds: Vec<Command>) -> Vec<String> {
        let mut sends = Vec::new();
        for c in cmds {
            match c {
                Command::Send { url } => sends.push(url),
                Command::Adopt { term } => {
                    if let Err(e) = self.terms.observe(term).await {
                        tracing::error!(error = %e, "cannot persist the term");
                    }
                }
                Command::Lead { term } => {
                    if let Err(e) = self.terms.observe(term).await {
                        tracing::error!(error = %e, "cannot persist the new term");
                    }
                    let me = lock(&self.engine).me().clone();
                    lock(&self.led).push(term);
                    tracing::info!(term, "leading");
                    self.publish(ClusterView {
                        i_lead: true,
                        leader: Some(LeaderRef {
                            id: Some(me.id),
                            url: me.url,
                        }),
                    });
                }
                Command::Follow { leader } => {
                    match &leader {
                        Some(l) => tracing::info!(leader = %l.id, "following"),
                        None => tracing::info!("waiting for a leader"),
                    }
                    let leader = leader.map(|n| LeaderRef {
                        id: Some(n.id),
                        url: n.url,
                    });
                    self.publish(ClusterView {
                        i_lead: false,
                        leader,
                    });
                }
                Command::Remember { urls } => {
                    let v = serde_json::to_vec(&urls).unwrap_or_default();
                    if let Err(e) = self.store.meta_set(META_MEMBERS, v).await {
                        tracing::warn!(error = %e, "cannot remember the members");
                    }
                }
            }
        }
        sends
    }

    fn publish(&self, view: ClusterView) {
        let changed_leader = {
            let old = self.tx.borrow();
            old.leader.as_ref().map(|l| &l.id) != view.leader.as_ref().map(|l| &l.id)
                && view.leader.is_some()
        };
        if changed_leader {
            self.metrics.leader_changes.inc();
        }
        self.tx.send_replace(view);
    }

    /// Starts or stops draining: a draining server leaves leadership to the others at once and
    /// takes no part in elections until it stops draining (the engine's rule 6).
    pub async fn set_draining(self: &Arc<Self>, draining: bool) {
        if draining {
            tracing::info!("draining: leaving leadership to the other members");
        }
        let now = self.now();
        self.step(Event::Draining { draining, now }).await;
    }

    /// The terms this server has led since it started, oldest first.
    pub fn led(&self) -> Vec<u64> {
        lock(&self.led).clone()
    }

    /// Handles a heartbeat another server sent; answers ours (after persisting any term it
    /// granted).
    pub async fn heard(self: &Arc<Self>, beat: Beat, version: Option<String>) -> Beat {
        if let Some(v) = version {
            lock(&self.versions).insert(beat.from.id.clone(), v);
        }
        let now = self.now();
        self.step(Event::Heard { beat, now }).await;
        lock(&self.engine).beat(self.now())
    }

    /// Feeds one event to the engine and carries out what it asks.
    async fn step(self: &Arc<Self>, event: Event) {
        let cmds = lock(&self.engine).handle(event);
        let sends = self.apply(cmds).await;
        self.dispatch(sends);
    }

    /// Sends this server's heartbeat to each of `urls`; each answer, or its failure, goes back to
    /// the engine (rule 7 counts them).
    fn dispatch(self: &Arc<Self>, urls: Vec<String>) {
        if urls.is_empty() {
            return;
        }
        let beat = lock(&self.engine).beat(self.now());
        let standing = beat.standing;
        let body = serde_json::to_value(&beat).unwrap_or_default();
        let timeout = Duration::from_millis(self.timing.heartbeat).max(Duration::from_millis(500));
        for url in urls {
            let me = self.clone();
            let body = body.clone();
            tokio::spawn(async move {
                let answer = match me.remotes.get(&url) {
                    Some(peer) => peer
                        .call::<BeatAnswer>(
                            reqwest::Method::POST,
                            "heartbeat",
                            Some(&body),
                            timeout,
                        )
                        .await
                        .map_err(|e| e.is_refusal().then(|| e.to_string())),
                    None => Err(None),
                };
                me.note_refusal(
                    &url,
                    match &answer {
                        Ok(_) => Some(None),
                        Err(Some(why)) => Some(Some(why.clone())),
                        Err(None) => None,
                    },
                );
                let now = me.now();
                let event = match answer {
                    Ok(a) => Event::Answered {
                        url,
                        standing,
                        beat: a.beat,
                        now,
                    },
                    Err(_) => Event::Unanswered { url, standing, now },
                };
                me.step(event).await;
            });
        }
    }

    /// Records how the member at `url` answered this server's last heartbeat: `Some(Some(why))`
    /// it refused, `Some(None)` it accepted, `None` no answer. A refusal is logged when its
    /// reason differs from the last one logged, which only an accepted heartbeat clears.
    fn note_refusal(&self, url: &str, outcome: Option<Option<String>>) {
        let mut refusals = lock(&self.refusals);
        match outcome {
            Some(Some(why)) => {
                if refusals.logged.get(url) != Some(&why) {
                    tracing::warn!(peer = %url, reason = %why, "a member answers but refuses this server's heartbeats");
                    refusals.logged.insert(url.to_string(), why.clone());
                }
                refusals.current.insert(url.to_string(), why);
            }
            Some(None) => {
                refusals.current.remove(url);
                if refusals.logged.remove(url).is_some() {
                    tracing::info!(peer = %url, "a member accepts this server's heartbeats again");
                }
            }
            // Unanswered: not refusing now, but no reason to log it again either.
            None => {
                refusals.current.remove(url);
            }
        }
    }

    /// The heartbeat loop; runs until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let period = Duration::from_millis(self.timing.heartbeat);
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.changed() => return,
            }
            let now = self.now();
            let term = self.terms.current();
            self.step(Event::Tick { now, term }).await;
        }
    }
}

impl Leadership for Bully {
    fn mode(&self) -> Mode {
        Mode::Bully
    }

    fn view(&self) -> watch::Receiver<ClusterView> {
        self.tx.subscribe()
    }

    fn can_commit(&self) -> bool {
        lock(&self.engine).alive_members(self.now()).len() >= self.min_members
    }

    fn members(&self) -> Vec<MemberInfo> {
        let now = self.now();
        let e = lock(&self.engine);
        let alive: Vec<String> = e.alive_members(now).into_iter().map(|n| n.id).collect();
        let leader = e.following().map(|n| n.id.clone());
        let versions = lock(&self.versions);
        let refusals = lock(&self.refusals);
        let mut members: Vec<MemberInfo> = e
            .known()
            .into_iter()
            .map(|(n, heard)| MemberInfo {
                alive: alive.contains(&n.id),
                leader: leader.as_ref() == Some(&n.id),
                last_contact: heard.map(|ms| self.at(ms)),
                version: versions.get(&n.id).cloned(),
                refusal: refusals.current.get(&n.url).cloned(),
                id: n.id,
                url: Some(n.url),
            })
            .collect();
        // Servers that refuse this one before it ever heard them (a remembered or boot
        // address): named as they named themselves in their challenge answers.
        for (url, why) in refusals.current.iter() {
            if members
                .iter()
                .any(|m| m.url.as_deref() == Some(url.as_str()))
            {
                continue;
            }
            let named = self.remotes.get(url).and_then(|r| r.named());
            if let Some(id) =
                named.filter(|id| *id != e.me().id && members.iter().all(|m| m.id != *id))
            {
                members.push(MemberInfo {
                    id,
                    url: Some(url.clone()),
                    alive: false,
                    leader: false,
                    last_contact: None,
                    version: None,
                    refusal: Some(why.clone()),
                });
            }
        }
        members
    }
}
