//! Shared application state handed to every handler: configuration, store, auth, lifecycle and
//! metrics, plus this server's identity.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::auth::Auth;
use crate::config::Config;
use crate::store::Store;

/// Where a server is in its life (SPEC §2): only `Running` is ready for traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Starting = 0,
    Running = 1,
    Draining = 2,
    Stopping = 3,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "STARTING",
            Phase::Running => "RUNNING",
            Phase::Draining => "DRAINING",
            Phase::Stopping => "STOPPING",
        }
    }
}

/// The current [`Phase`], shared between the server, handlers and the signal handler.
#[derive(Debug, Default)]
pub struct Lifecycle(AtomicU8);

impl Lifecycle {
    pub fn get(&self) -> Phase {
        match self.0.load(Ordering::SeqCst) {
            0 => Phase::Starting,
            1 => Phase::Running,
            2 => Phase::Draining,
            _ => Phase::Stopping,
        }
    }
    /// Moves forward only: a draining server never becomes ready again by accident.
    pub fn advance(&self, to: Phase) {
        self.0.fetch_max(to as u8, Ordering::SeqCst);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CollectionLabels {
    pub collection: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: String,
}

/// This server's metrics; one registry per server, so several servers can share a process (tests).
pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram>,
    pub store_bytes: Gauge,
    pub items: Family<CollectionLabels, Gauge>,
    pub login_failures: Counter,
    pub push_failures: Counter,
    pub poll_failures: Counter,
    pub conflicts: Counter,
    pub leader_changes: Counter,
    pub items_received: Counter,
    pub peer_bytes: Counter,
    pub outbox: Gauge,
    pub term: Gauge,
    pub follower_lag: Family<PeerLabels, Gauge>,
    pub clock_offset: Family<PeerLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.0005, 2.0, 16))) as fn() -> Histogram,
        );
        let store_bytes = Gauge::default();
        let items = Family::<CollectionLabels, Gauge>::default();
        let login_failures = Counter::default();
        let mut registry = Registry::with_prefix("folio");
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        registry.register(
            "store_size_bytes",
            "bytes the store occupies on disk",
            store_bytes.clone(),
        );
        registry.register("items", "live items per collection", items.clone());
        registry.register(
            "login_failures",
            "failed login attempts",
            login_failures.clone(),
        );
        let m = Metrics {
            registry,
            requests,
            latency,
            store_bytes,
            items,
            login_failures,
            push_failures: Counter::default(),
            poll_failures: Counter::default(),
            conflicts: Counter::default(),
            leader_changes: Counter::default(),
            items_received: Counter::default(),
            peer_bytes: Counter::default(),
            outbox: Gauge::default(),
            term: Gauge::default(),
            follower_lag: Family::default(),
            clock_offset: Family::default(),
        };
        m.register_cluster()
    }
}

impl Metrics {
    fn register_cluster(mut self) -> Self {
        let r = &mut self.registry;
        r.register(
            "push_failures",
            "pushes to the leader that failed",
            self.push_failures.clone(),
        );
        r.register(
            "poll_failures",
            "change-feed polls that failed",
            self.poll_failures.clone(),
        );
        r.register(
            "conflicts",
            "conflicts recorded (leader won, loser kept)",
            self.conflicts.clone(),
        );
        r.register(
            "leader_changes",
            "times the leader changed",
            self.leader_changes.clone(),
        );
        r.register(
            "peer_bytes_received",
            "body bytes received in answers from other servers",
            self.peer_bytes.clone(),
        );
        r.register(
            "sync_items_received",
            "items received from the leader",
            self.items_received.clone(),
        );
        r.register(
            "outbox_items",
            "local edits waiting to be pushed",
            self.outbox.clone(),
        );
        r.register("term", "current leadership term", self.term.clone());
        r.register(
            "follower_lag_changes",
            "changes a follower has yet to apply (leader view)",
            self.follower_lag.clone(),
        );
        r.register(
            "clock_offset_ms",
            "clock offset of a peer, theirs minus ours",
            self.clock_offset.clone(),
        );
        self
    }
}

/// Everything a handler can reach.
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub auth: Auth,
    pub lifecycle: Arc<Lifecycle>,
    pub metrics: Arc<Metrics>,
    /// Terms (fencing) of this server.
    pub terms: Arc<crate::cluster::Terms>,
    /// Server-token issuer; `None` when stand-alone.
    pub server_tokens: Option<crate::auth::server::ServerTokens>,
    /// The BULLY election, in BULLY mode (heartbeats are handed to it).
    pub bully: Option<Arc<crate::cluster::bully::Bully>>,
    /// Synchronisation and the cluster view.
    pub sync: Arc<crate::sync::Sync>,
    /// Turns true when the server stops, so long-polls end at once.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// This server's id: the cluster id when clustered, else one made at first start.
    pub server_id: String,
}
