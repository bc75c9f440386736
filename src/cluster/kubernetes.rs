//! KUBERNETES mode: the members are the pods the label selector returns from the API server
//! that are running, ready and have an IP; the one with the lowest name leads. The pod list is
//! read again every `cluster.kubernetes.refresh`, with the mounted service-account token (read
//! again each time, so projected-token rotation works) and CA.
//!
//! A pod's peer URL is `http(s)://<podIP>:<port>/<peer_path>`, the port being the first
//! `containerPort` of the container named `cluster.kubernetes.container_name`, or of the first
//! container. This server leads only once its own pod is listed as ready; until then it follows
//! the lowest ready pod (or waits), so a starting pod cannot form a second leader.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tokio::sync::watch;

use super::remote::{RemoteError, Remotes};
use super::{ClusterView, LeaderRef, Leadership, MemberInfo, SourceStatus, Terms};
use crate::config::{Config, Mode};
use crate::error::Code;
use crate::metrics::Metrics;

/// The parts of a `PodList` Folio reads.
#[derive(Debug, Deserialize)]
pub struct PodList {
    pub items: Vec<Pod>,
}

#[derive(Debug, Deserialize)]
pub struct Pod {
    pub metadata: PodMeta,
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(default)]
    pub status: PodStatus,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodMeta {
    pub name: String,
    #[serde(default)]
    pub deletion_timestamp: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PodSpec {
    #[serde(default)]
    pub containers: Vec<Container>,
}

#[derive(Debug, Deserialize)]
pub struct Container {
    pub name: String,
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    pub container_port: u16,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default, rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Deserialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
}

/// A pod that counts as a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub url: String,
}

/// How pods become members: selection and peer URLs.
#[derive(Debug, Clone)]
pub struct Selection {
    pub container: Option<String>,
    pub peer_path: String,
    pub https: bool,
}

impl Selection {
    /// Running, ready, IP-carrying, not-terminating pods with a port, sorted by name.
    pub fn members(&self, list: &PodList) -> Vec<Member> {
        let mut out: Vec<Member> = list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.status.phase.as_deref() == Some("Running"))
            .filter(|p| {
                p.status
                    .conditions
                    .iter()
                    .any(|c| c.kind == "Ready" && c.status == "True")
            })
            .filter_map(|p| {
                let ip = p.status.pod_ip.as_deref().filter(|ip| !ip.is_empty())?;
                let container = match &self.container {
                    Some(name) => p.spec.containers.iter().find(|c| c.name == *name)?,
                    None => p.spec.containers.first()?,
                };
                let port = container.ports.first()?.container_port;
                let host = if ip.contains(':') {
                    format!("[{ip}]")
                } else {
                    ip.to_string()
                };
                let path = self.peer_path.trim_matches('/');
                let path = if path.is_empty() {
                    "/".to_string()
                } else {
                    format!("/{path}/")
                };
                let scheme = if self.https { "https" } else { "http" };
                Some(Member {
                    name: p.metadata.name.clone(),
                    url: format!("{scheme}://{host}:{port}{path}"),
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// The view this server takes of a member list: lead when its own pod is the lowest ready one.
pub fn view_of(me: &str, members: &[Member]) -> ClusterView {
    match members.first() {
        Some(m) if m.name == me => ClusterView {
            i_lead: true,
            leader: Some(LeaderRef {
                id: Some(m.name.clone()),
                url: m.url.clone(),
            }),
        },
        Some(m) => ClusterView {
            i_lead: false,
            leader: Some(LeaderRef {
                id: Some(m.name.clone()),
                url: m.url.clone(),
            }),
        },
        None => ClusterView {
            i_lead: false,
            leader: None,
        },
    }
}

/// Why KUBERNETES mode cannot start.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error(
        "cluster.kubernetes.api_url is unset and KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are not in the environment"
    )]
    NoApiServer,
    #[error("cannot read {what} {path}: {reason}")]
    File {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("the API server's CA {path}: {reason}")]
    Ca { path: String, reason: String },
}

/// The KUBERNETES leadership of one server.
pub struct Kubernetes {
    me: String,
    api: String,
    namespace: String,
    selector: String,
    token_file: std::path::PathBuf,
    selection: Selection,
    http: reqwest::Client,
    refresh: Duration,
    tx: watch::Sender<ClusterView>,
    members: Mutex<(Vec<Member>, Option<SystemTime>)>,
    terms: Arc<Terms>,
    metrics: Arc<Metrics>,
    remotes: Arc<Remotes>,
    /// The last refresh's failure, while refreshes fail.
    failing: Mutex<Option<String>>,
    /// The terms this server has led since it started, oldest first.
    led: Mutex<Vec<u64>>,
}

/// A number below `n` that differs between servers and calls (for pauses that break ties).
fn rand_below(n: u64) -> u64 {
    u64::from(uuid::Uuid::new_v4().as_u128() as u32) % n.max(1)
}

fn read(what: &'static str, path: &Path) -> Result<String, KubeError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| KubeError::File {
            what,
            path: path.display().to_string(),
            reason: e.to_string(),
        })
}

impl Kubernetes {
    /// Checks the API address and the mounted files, then reads the pod list once.
    pub async fn start(
        config: &Config,
        terms: Arc<Terms>,
        metrics: Arc<Metrics>,
        remotes: Arc<Remotes>,
    ) -> Result<Arc<Kubernetes>, KubeError> {
        let c = &config.cluster;
        let api = match &c.kubernetes_api_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => {
                let host =
                    std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| KubeError::NoApiServer)?;
                let port =
                    std::env::var("KUBERNETES_SERVICE_PORT").map_err(|_| KubeError::NoApiServer)?;
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host
                };
                format!("https://{host}:{port}")
            }
        };
        let namespace = read("the namespace file", &c.kubernetes_namespace_file)?;
        read("the service-account token", &c.kubernetes_token_file)?;
        let ca_path = c.kubernetes_ca_file.display().to_string();
        let pem = std::fs::read(&c.kubernetes_ca_file).map_err(|e| KubeError::Ca {
            path: ca_path.clone(),
            reason: e.to_string(),
        })?;
        let ca = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| KubeError::Ca {
            path: ca_path.clone(),
            reason: e.to_string(),
        })?;
        let http = reqwest::Client::builder()
            .tls_certs_only(ca)
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| KubeError::Ca {
                path: ca_path,
                reason: e.to_string(),
            })?;
        let k = Arc::new(Kubernetes {
            me: c.kubernetes_id.clone().unwrap_or_default(),
            api,
            namespace,
            selector: c.kubernetes_label_selector.clone().unwrap_or_default(),
            token_file: c.kubernetes_token_file.clone(),
            selection: Selection {
                container: c.kubernetes_container_name.clone(),
                peer_path: c.kubernetes_peer_path.clone(),
                https: config.server.tls.is_some(),
            },
            http,
            refresh: c.kubernetes_refresh,
            tx: watch::Sender::new(ClusterView {
                i_lead: false,
                leader: None,
            }),
            members: Mutex::new((Vec::new(), None)),
            terms,
            metrics,
            remotes,
            failing: Mutex::new(None),
            led: Mutex::new(Vec::new()),
        });
        k.refresh_once().await;
        Ok(k)
    }

    async fn pods(&self) -> Result<PodList, String> {
        let token =
            read("the service-account token", &self.token_file).map_err(|e| e.to_string())?;
        let mut url = reqwest::Url::parse(&format!(
            "{}/api/v1/namespaces/{}/pods",
            self.api, self.namespace
        ))
        .map_err(|e| e.to_string())?;
        url.query_pairs_mut()
            .append_pair("labelSelector", &self.selector);
        let resp = self
            .http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            let msg: String = body.chars().take(300).collect();
            return Err(format!("the API server answered {status}: {msg}"));
        }
        resp.json::<PodList>()
            .await
            .map_err(|e| format!("unreadable pod list: {e}"))
    }

    /// Reads the pod list and publishes the resulting view.
    pub async fn refresh_once(&self) {
        match self.pods().await {
            Ok(list) => {
                if crate::lock(&self.failing).take().is_some() {
                    tracing::info!("the Kubernetes API server answers again");
                }
                let members = self.selection.members(&list);
                let view = view_of(&self.me, &members);
                *crate::lock(&self.members) = (members, Some(SystemTime::now()));
                self.publish(view).await;
            }
            Err(e) => {
                let mut f = crate::lock(&self.failing);
                if f.is_none() {
                    tracing::warn!(error = %e, "cannot list the pods; keeping the last known members");
                }
                *f = Some(e);
            }
        }
    }

    async fn publish(&self, view: ClusterView) {
        let (changed, became_leader) = {
            let old = self.tx.borrow();
            (*old != view, view.i_lead && !old.i_lead)
        };
        if !changed {
            return;
        }
        if became_leader {
            match self.take_term().await {
                Ok(t) => {
                    crate::lock(&self.led).push(t);
                    tracing::info!(term = t, "leading (lowest ready pod)");
                }
                Err(e) => tracing::error!(error = %e, "cannot persist the new term"),
            }
        } else if let Some(l) = &view.leader {
            tracing::info!(leader = ?l.id, "following");
        }
        if view.leader.is_some()
            && self.tx.borrow().leader.as_ref().map(|l| &l.id)
                != view.leader.as_ref().map(|l| &l.id)
        {
            self.metrics.leader_changes.inc();
        }
        self.tx.send_replace(view);
    }

    /// The terms this server has led since it started, oldest first.
    pub fn led(&self) -> Vec<u64> {
        crate::lock(&self.led).clone()
    }

    /// Takes a new term for this server's leadership that no other listed pod holds: each pod
    /// grants it (adopting it, so it grants it to nobody else) or refuses it with its own, newer
    /// term, which this server adopts before claiming the next one. A pod that does not answer
    /// cannot object (it learns the term from this server's calls). Two pods that claim one term
    /// at once both lose it and claim again after a random pause; after a few rounds this server
    /// takes the next term without asking.
    async fn take_term(&self) -> Result<u64, crate::store::StoreError> {
        const ROUNDS: u32 = 5;
        for round in 0..ROUNDS {
            let term = self.terms.current() + 1;
            let peers: Vec<String> = crate::lock(&self.members)
                .0
                .iter()
                .filter(|m| m.name != self.me)
                .map(|m| m.url.clone())
                .collect();
            let claims =
                peers
                    .iter()
                    .filter_map(|url| self.remotes.get(url))
                    .map(|peer| async move {
                        peer.call::<serde_json::Value>(
                            reqwest::Method::POST,
                            "term",
                            Some(&serde_json::json!({ "term": term })),
                            Duration::from_secs(1),
                        )
                        .await
                    });
            let mut refused = false;
            for answer in futures_util::future::join_all(claims).await {
                if let Err(RemoteError::Refused {
                    code: Some(Code::TermTaken),
                    details,
                    ..
                }) = answer
                {
                    refused = true;
                    if let Some(t) = details["term"].as_u64() {
                        self.terms.observe(t).await?;
                    }
                }
            }
            if !refused && self.terms.observe(term).await? {
                return Ok(term);
            }
            let pause = 20 + rand_below(100) * u64::from(round + 1);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        tracing::warn!(
            rounds = ROUNDS,
            "other pods kept claiming the same terms; taking the next one"
        );
        self.terms.bump().await
    }

    /// Refreshes the pod list until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(self.refresh);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.refresh_once().await,
                _ = shutdown.changed() => return,
            }
        }
    }
}

impl Leadership for Kubernetes {
    fn mode(&self) -> Mode {
        Mode::Kubernetes
    }

    fn view(&self) -> watch::Receiver<ClusterView> {
        self.tx.subscribe()
    }

    fn members(&self) -> Vec<MemberInfo> {
        let (members, _) = self
            .members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let leader = members.first().map(|m| m.name.clone());
        members
            .into_iter()
            .filter(|m| m.name != self.me)
            .map(|m| MemberInfo {
                leader: leader.as_ref() == Some(&m.name),
                id: m.name,
                url: Some(m.url),
                alive: true,
                // Being listed says nothing of reaching it: the view tells from what this
                // server heard.
                last_contact: None,
                version: None,
                refusal: None,
            })
            .collect()
    }

    fn source_status(&self) -> Option<SourceStatus> {
        let at = crate::lock(&self.members).1;
        Some(SourceStatus {
            name: "the Kubernetes API server",
            error: crate::lock(&self.failing).clone(),
            last_success: at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(
        name: &str,
        phase: &str,
        ready: bool,
        ip: Option<&str>,
        containers: &[(&str, Option<u16>)],
    ) -> serde_json::Value {
        serde_json::json!({
            "metadata": {"name": name},
            "spec": {"containers": containers.iter().map(|(n, p)| serde_json::json!({
                "name": n, "ports": p.map(|p| vec![serde_json::json!({"containerPort": p, "protocol": "TCP"})]).unwrap_or_default()
            })).collect::<Vec<_>>()},
            "status": {"phase": phase, "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        })
    }

    #[test]
    fn only_running_ready_pods_with_an_ip_and_a_port_count() {
        let list: PodList = serde_json::from_value(serde_json::json!({"items": [
            pod("folio-2", "Running", true, Some("10.0.0.2"), &[("sidecar", Some(9000)), ("folio", Some(8080))]),
            pod("folio-0", "Running", false, Some("10.0.0.1"), &[("folio", Some(8080))]),
            pod("folio-1", "Running", true, Some("10.0.0.3"), &[("folio", Some(8080))]),
            pod("folio-3", "Pending", true, Some("10.0.0.4"), &[("folio", Some(8080))]),
            pod("folio-4", "Running", true, None, &[("folio", Some(8080))]),
            pod("folio-5", "Running", true, Some("fd00::5"), &[("folio", None)]),
        ]}))
        .unwrap();
        let first = Selection {
            container: None,
            peer_path: "folio/".into(),
            https: false,
        };
        let m = first.members(&list);
        assert_eq!(
            m.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            vec!["folio-1", "folio-2"]
        );
        assert_eq!(
            m[1].url, "http://10.0.0.2:9000/folio/",
            "first container's port"
        );
        let named = Selection {
            container: Some("folio".into()),
            peer_path: "/".into(),
            https: true,
        };
        assert_eq!(named.members(&list)[1].url, "https://10.0.0.2:8080/");
        assert!(view_of("folio-1", &m).i_lead);
        let v = view_of("folio-2", &m);
        assert!(!v.i_lead && v.leader.unwrap().id.as_deref() == Some("folio-1"));
        assert_eq!(view_of("folio-0", &[]).leader, None);
    }
}
