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

/// This server's metrics; one registry per server, so several servers can share a process (tests).
pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram>,
    pub store_bytes: Gauge,
    pub items: Family<CollectionLabels, Gauge>,
    pub login_failures: Counter,
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
        Metrics {
            registry,
            requests,
            latency,
            store_bytes,
            items,
            login_failures,
        }
    }
}

/// Everything a handler can reach.
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub auth: Auth,
    pub lifecycle: Arc<Lifecycle>,
    pub metrics: Metrics,
    /// This server's id: the cluster id when clustered, else one made at first start.
    pub server_id: String,
}
