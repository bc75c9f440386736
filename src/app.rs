//! The application state shared by every handler (configuration, store, auth, replication,
//! lifecycle, metrics, this server's identity) and the server's lifecycle. Only the HTTP layer
//! (`api`) and the wiring (`server`) read it; `api::create_app` builds the application over it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use actix_web::web;

use crate::auth::Auth;
use crate::config::Config;
use crate::metrics::Metrics;
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
pub struct Lifecycle {
    phase: AtomicU8,
    /// The server is on its way out (a stop was asked for): a drain can no longer be cancelled.
    leaving: std::sync::atomic::AtomicBool,
}

impl Lifecycle {
    pub fn get(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            0 => Phase::Starting,
            1 => Phase::Running,
            2 => Phase::Draining,
            _ => Phase::Stopping,
        }
    }

    /// Moves forward only: a draining server never becomes ready again by accident.
    pub fn advance(&self, to: Phase) {
        self.phase.fetch_max(to as u8, Ordering::SeqCst);
    }

    /// Marks the server as leaving (a stop was asked for), then drains it; answers whether it
    /// was draining already (an operator drained it before asking it to stop).
    pub fn leave(&self) -> bool {
        self.leaving.store(true, Ordering::SeqCst);
        let before = self
            .phase
            .fetch_max(Phase::Draining as u8, Ordering::SeqCst);
        before == Phase::Draining as u8
    }

    /// Cancels an operator's drain: DRAINING back to RUNNING, unless the server is leaving or
    /// is not draining; answers the phase it is in then.
    pub fn resume(&self) -> Result<Phase, Phase> {
        if self.leaving.load(Ordering::SeqCst) {
            return Err(self.get());
        }
        match self.phase.compare_exchange(
            Phase::Draining as u8,
            Phase::Running as u8,
            Ordering::SeqCst,
            Ordering::SeqCst,
        ) {
            Ok(_) => Ok(Phase::Running),
            Err(_) => Err(self.get()),
        }
    }
}

/// Everything a handler can reach.
pub struct AppState {
    /// The validated configuration (also registered alone, for the body extractors' limits).
    pub config: Arc<Config>,
    /// This server's store (a cheap handle).
    pub store: Store,
    /// User tokens and sessions (also read by the user extractors).
    pub auth: web::Data<Auth>,
    /// STARTING → RUNNING → DRAINING → STOPPING, shared with the server and its signal handler.
    pub lifecycle: Arc<Lifecycle>,
    /// This server's metrics (one registry per server, so tests can run several in a process).
    pub metrics: Arc<Metrics>,
    /// Terms (fencing) of this server.
    pub terms: Arc<crate::cluster::Terms>,
    /// Server-token issuer (`None` when stand-alone) and terms, as the server-token extractor
    /// reads them.
    pub servers: web::Data<crate::auth::server::ServerGate>,
    /// The BULLY election, in BULLY mode (heartbeats are handed to it).
    pub bully: Option<Arc<crate::cluster::bully::Bully>>,
    /// The pod list's leadership, in KUBERNETES mode.
    pub kubernetes: Option<Arc<crate::cluster::kubernetes::Kubernetes>>,
    /// Replication: saves, the leader's and followers' bookkeeping, the cluster view.
    pub sync: Arc<crate::sync::Replication>,
    /// Turns true when the server stops, so long-polls end at once.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// This server's id: the cluster id when clustered, else one made at first start.
    pub server_id: String,
}
