//! Membership and leadership: which server leads and where a follower finds it. Leadership is a
//! *view* published on a `tokio::sync::watch` channel; the sync layer follows it and the handlers
//! only read it. Each mode implements [`Leadership`]:
//! - NONE: this server stands alone (it "leads" a cluster of one and follows nobody);
//! - FIXED: the leader is configured (`cluster.fixed.leader` on followers, blank on the leader);
//! - BULLY: elected, the lowest running id leads ([`bully`]);
//! - KUBERNETES: the ready pod with the lowest name leads ([`kubernetes`]).
//!
//! Terms (fencing) live in [`term`].

pub mod bully;
pub mod kubernetes;
pub mod remote;
pub mod term;

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::{Config, Mode};
pub use term::Terms;

/// Where a follower finds its leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderRef {
    /// Known once the leader has answered.
    pub id: Option<String>,
    /// Base URL including the context path, ending in `/`.
    pub url: String,
}

/// What this server believes about leadership right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// This server leads (in NONE mode: stands alone).
    pub i_lead: bool,
    /// The leader to follow, when this server does not lead.
    pub leader: Option<LeaderRef>,
}

/// Another member as a leadership source knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: String,
    pub url: Option<String>,
    /// BULLY: heard within the heartbeat timeout. KUBERNETES: listed as a ready pod (which says
    /// nothing of whether this server can reach it: see `last_contact`).
    pub alive: bool,
    pub leader: bool,
    /// When this server last heard from the member, when the source itself hears from members
    /// (BULLY's heartbeats); `None` when it only lists them (KUBERNETES), in which case what this
    /// server heard through synchronisation tells.
    pub last_contact: Option<std::time::SystemTime>,
    pub version: Option<String>,
    /// Why it refused this server's last call to it, when it answered and refused (BULLY's
    /// heartbeats); `None` while it accepts them, or does not answer at all.
    pub refusal: Option<String>,
}

/// How the outside source of membership answers (KUBERNETES: the API server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceStatus {
    /// What the source is, e.g. "the Kubernetes API server".
    pub name: &'static str,
    /// The last attempt's failure, while the source fails.
    pub error: Option<String>,
    /// When the source last answered.
    pub last_success: Option<std::time::SystemTime>,
}

/// A source of [`ClusterView`]s.
pub trait Leadership: Send + Sync {
    fn mode(&self) -> Mode;
    fn view(&self) -> watch::Receiver<ClusterView>;
    /// Whether enough members are reachable to commit writes (BULLY `min_members`).
    fn can_commit(&self) -> bool {
        true
    }
    /// The other members this source knows of (empty when it does not track members).
    fn members(&self) -> Vec<MemberInfo> {
        Vec::new()
    }
    /// How an outside source of membership answers, for modes that have one.
    fn source_status(&self) -> Option<SourceStatus> {
        None
    }
}

/// NONE and FIXED: a view that never changes.
struct Fixed {
    mode: Mode,
    tx: watch::Sender<ClusterView>,
}

impl Leadership for Fixed {
    fn mode(&self) -> Mode {
        self.mode
    }
    fn view(&self) -> watch::Receiver<ClusterView> {
        self.tx.subscribe()
    }
}

/// The leadership of NONE and FIXED modes (their views never change).
pub fn fixed(config: &Config) -> Arc<dyn Leadership> {
    let view = match (config.cluster.mode, &config.cluster.fixed_leader) {
        (Mode::Fixed, Some(url)) => ClusterView {
            i_lead: false,
            leader: Some(LeaderRef {
                id: None,
                url: url.clone(),
            }),
        },
        _ => ClusterView {
            i_lead: true,
            leader: None,
        },
    };
    Arc::new(Fixed {
        mode: config.cluster.mode,
        tx: watch::Sender::new(view),
    })
}
