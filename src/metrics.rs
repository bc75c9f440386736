//! This server's Prometheus metrics: the registry, every series Folio exports and their labels.
//! A leaf: it knows nothing of the rest of the server.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

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
    /// The other server's id.
    pub peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    /// A server's id (this one or another).
    pub server: String,
}

/// This server's metrics; one registry per server, so several servers can share a process (tests).
pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram>,
    pub store_bytes: Gauge,
    pub data_free_bytes: Gauge,
    pub store_writable: Gauge,
    pub checkpoint_failures: Gauge,
    pub deltas_refetched: Counter,
    pub items: Family<CollectionLabels, Gauge>,
    pub login_failures: Counter,
    pub push_failures: Counter,
    pub poll_failures: Counter,
    pub conflicts: Counter,
    pub leader_changes: Counter,
    pub items_received: Counter,
    pub peer_bytes: Counter,
    pub outbox: Gauge,
    /// Set when scraped, like the three families below (see `Replication::refresh_metrics`).
    pub term: Gauge,
    pub follower_lag: Family<PeerLabels, Gauge>,
    pub clock_offset: Family<PeerLabels, Gauge<f64, AtomicU64>>,
    pub last_contact: Family<PeerLabels, Gauge<f64, AtomicU64>>,
    /// Servers whose clocks are further from the leader's than `cluster.clock.warn`.
    pub clock_off: Family<ServerLabels, Gauge<f64, AtomicU64>>,
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
        let data_free_bytes = Gauge::default();
        registry.register(
            "data_free_bytes",
            "bytes free on the data volume",
            data_free_bytes.clone(),
        );
        let store_writable = Gauge::default();
        registry.register(
            "store_writable",
            "1 while saves are accepted, 0 while the data volume has less free than store.min_free.mb",
            store_writable.clone(),
        );
        let checkpoint_failures = Gauge::default();
        registry.register(
            "store_checkpoint_failures",
            "checkpoints of the store that failed in a row (0 once one succeeds); while they fail, the write-ahead log is kept and grows",
            checkpoint_failures.clone(),
        );
        let deltas_refetched = Counter::default();
        registry.register(
            "deltas_refetched",
            "changes received as a delta that did not apply here and were fetched whole",
            deltas_refetched.clone(),
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
            data_free_bytes,
            store_writable,
            checkpoint_failures,
            deltas_refetched,
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
            clock_off: Family::default(),
            last_contact: Family::default(),
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
            "changes a follower has yet to apply: the leader's head minus the position it last polled from (leader view)",
            self.follower_lag.clone(),
        );
        r.register(
            "clock_offset_seconds",
            "clock offset of another server, theirs minus ours, measured at every exchange with it",
            self.clock_offset.clone(),
        );
        r.register(
            "clock_off_seconds",
            "clock of each server further from the leader's than cluster.clock.warn, minus the leader's (no series while every clock is within it)",
            self.clock_off.clone(),
        );
        r.register(
            "peer_last_contact_seconds",
            "seconds since this server last heard from another server (a follower's poll, the leader's answer)",
            self.last_contact.clone(),
        );
        self
    }
}
