//! Nothing acknowledged is lost under leader changes (SPEC §4, I1 and I2): three real `folio`
//! processes in BULLY or KUBERNETES mode take saves with `If-Match` on every server while the
//! test cuts servers off (the leader, and the follower with the highest id), pauses the leader
//! (`SIGSTOP`) and kills servers (`kill -9`), in an order the run's seed picks. Once the faults
//! end and the servers converge, every server lists the same histories and conflict records, and
//! every save any server answered 200 or 202 is in one of them.
//!
//! `FOLIO_FAULT_SEED` repeats a run; every run prints its seed.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::binary::Proc;
use crate::harness::*;
use crate::histories::{
    Phase, Urls, Writers, again_while_too_slow, assert_every_ack_kept, identical_listings,
    more_acks,
};
use crate::kube_api::FakeApi;
use crate::proxy::LinkProxy;

/// How long a leader change may take under load.
const ELECTION: Duration = Duration::from_secs(60);

/// A small deterministic generator (xorshift), so a seed repeats a run's choices.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The time of day (UTC, to the millisecond), to line the faults up with the servers' logs.
fn now_utc() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

fn seed() -> u64 {
    let seed = std::env::var("FOLIO_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos() as u64
        });
    eprintln!("fault run seed: FOLIO_FAULT_SEED={seed}");
    seed
}

/// How the servers find their leader.
enum Mode {
    Bully,
    Kubernetes(FakeApi),
}

/// One server: a real process listening on its own loopback address, reached by its peers
/// through a front the test can cut (and from which it blocks the server's own address, so a
/// partition cuts both ways); clients reach it directly.
struct Node {
    id: String,
    ip: IpAddr,
    front: LinkProxy,
    dir: tempfile::TempDir,
    proc: Option<Proc>,
}

struct Cluster {
    nodes: Vec<Node>,
    mode: Mode,
    urls: Urls,
}

impl Cluster {
    async fn new(mode: Mode) -> Cluster {
        let mut nodes = Vec::new();
        // Each mode's test has addresses of its own, so the two can run side by side.
        let first = match mode {
            Mode::Bully => 60,
            Mode::Kubernetes(_) => 70,
        };
        for i in 0..3 {
            let ip: IpAddr = format!("127.0.0.{}", first + i).parse().unwrap();
            // Pointed at the server once it listens.
            let front = LinkProxy::start(SocketAddr::new(ip, 9)).await;
            let id = match mode {
                Mode::Bully => format!("folio-{}", i + 1),
                Mode::Kubernetes(_) => format!("folio-{i}"),
            };
            nodes.push(Node {
                id,
                ip,
                front,
                dir: tempfile::tempdir().unwrap(),
                proc: None,
            });
        }
        let urls = Arc::new((0..3).map(|_| Mutex::new(String::new())).collect());
        Cluster { nodes, mode, urls }
    }

    fn args(&self, i: usize) -> Vec<String> {
        let n = &self.nodes[i];
        let mut a: Vec<(String, String)> = vec![
            ("server.listen".into(), format!("{}:0", n.ip)),
            ("cluster.shared.secret".into(), SECRET.into()),
            ("cluster.source_address".into(), n.ip.to_string()),
            ("cluster.poll.interval".into(), "1s".into()),
            ("cluster.push.timeout".into(), "1s".into()),
            ("content.history.keep".into(), "1000".into()),
        ];
        match &self.mode {
            Mode::Bully => {
                let boot = self.nodes[..2]
                    .iter()
                    .map(|n| n.front.url())
                    .collect::<Vec<_>>()
                    .join(",");
                a.extend([
                    ("cluster.mode".into(), "BULLY".into()),
                    ("cluster.bully.id".into(), n.id.clone()),
                    ("cluster.bully.bind".into(), n.front.url()),
                    ("cluster.bully.boot".into(), boot),
                    ("cluster.heartbeat.interval".into(), "150ms".into()),
                    ("cluster.heartbeat.timeout".into(), "800ms".into()),
                    ("cluster.bully.stability".into(), "2s".into()),
                ]);
            }
            Mode::Kubernetes(api) => a.extend(api.overrides(&n.id)),
        }
        a.into_iter()
            .flat_map(|(k, v)| ["--set".to_string(), format!("{k}={v}")])
            .collect()
    }

    /// Starts server `i` on its data directory and points its front (and, in KUBERNETES, its
    /// pod's address) at it.
    fn start(&mut self, i: usize) {
        let args = self.args(i);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let p = Proc::start_as(self.nodes[i].dir.path(), &refs, &self.nodes[i].id);
        let addr: SocketAddr = p
            .url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap();
        self.nodes[i].front.retarget(addr);
        if let Mode::Kubernetes(api) = &self.mode {
            api.place(&self.nodes[i].id, self.nodes[i].front.addr);
        }
        *self.urls[i].lock().unwrap() = p.url.clone();
        self.nodes[i].proc = Some(p);
        self.relist();
    }

    /// `kill -9` of server `i` (dropping its process kills it); in KUBERNETES its pod is no
    /// longer ready, as its readiness probe would soon say.
    fn kill(&mut self, i: usize) {
        self.nodes[i].proc = None;
        self.relist();
    }

    /// In KUBERNETES, the API server lists the pods whose server runs.
    fn relist(&self) {
        if let Mode::Kubernetes(api) = &self.mode {
            let running: Vec<&str> = self
                .nodes
                .iter()
                .filter(|n| n.proc.is_some())
                .map(|n| n.id.as_str())
                .collect();
            api.list(&running);
        }
    }

    fn signal(&self, i: usize, signal: &str) {
        let pid = self.nodes[i].proc.as_ref().unwrap().pid();
        let ok = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {signal} {pid}");
    }

    /// Cuts server `i` off from the others, both ways (clients still reach it).
    fn partition(&self, i: usize) {
        self.nodes[i].front.cut();
        for (j, n) in self.nodes.iter().enumerate() {
            if j != i {
                n.front.block(self.nodes[i].ip);
            }
        }
    }

    fn heal(&self, i: usize) {
        self.nodes[i].front.restore();
        for n in &self.nodes {
            n.front.unblock(self.nodes[i].ip);
        }
    }

    fn url(&self, i: usize) -> String {
        self.urls[i].lock().unwrap().clone()
    }

    /// Waits until every server in `group` names the same leader, which leads; answers it.
    async fn one_leader(&self, group: &[usize]) -> usize {
        let http = client();
        wait_for(&format!("one leader among {group:?}"), ELECTION, || async {
            let mut named = None;
            let mut leaders = 0;
            for &i in group {
                let h: Value = http
                    .get(format!("{}health", self.url(i)))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                let id = h["leader"]["id"].as_str()?.to_string();
                if named.get_or_insert(id.clone()) != &id {
                    return None;
                }
                leaders += usize::from(h["role"] == "leader");
            }
            let idx = self
                .nodes
                .iter()
                .position(|n| Some(&n.id) == named.as_ref())?;
            (leaders == 1 && group.contains(&idx)).then_some(idx)
        })
        .await
    }
}

/// The faults a run goes through, in an order its seed picks.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// The leader cut off from both followers for a while (it goes on taking saves alone).
    PartitionLeader,
    /// The follower with the highest id cut off for a while.
    PartitionHighest,
    /// The leader paused (`SIGSTOP`) for a while, then resumed.
    PauseLeader,
    /// `kill -9` of a follower amid saves, then a restart.
    KillFollower,
    /// `kill -9` of the leader amid saves, then a restart.
    KillLeader,
}

async fn run(mode: Mode, phase: Phase) {
    let mut rng = Rng::new(seed());
    let mut c = Cluster::new(mode).await;
    for i in 0..3 {
        c.start(i);
    }
    c.one_leader(&[0, 1, 2]).await;

    let writers = Writers::start(&c.urls, 4, true);
    let acks = writers.acks.clone();
    more_acks(&acks, 100, "100 saves", |_| true).await;

    let mut faults = vec![
        Fault::PartitionLeader,
        Fault::PartitionHighest,
        Fault::PauseLeader,
        Fault::KillFollower,
        Fault::KillLeader,
        Fault::PartitionLeader,
    ];
    for k in (1..faults.len()).rev() {
        faults.swap(k, rng.below(k as u64 + 1) as usize);
    }
    eprintln!("faults in this run: {faults:?}");
    for fault in faults {
        let leader = c.one_leader(&[0, 1, 2]).await;
        let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
        let hold = Duration::from_millis(2_000 + rng.below(4_000));
        eprintln!(
            "{} fault {fault:?} (leader {}) for {hold:?}, from acknowledgement #{}",
            now_utc(),
            c.nodes[leader].id,
            acks.lock().unwrap().len()
        );
        match fault {
            Fault::PartitionLeader => {
                c.partition(leader);
                more_acks(&acks, 10, "saves on the cut-off leader", |a| {
                    a.server == leader
                })
                .await;
                more_acks(&acks, 10, "saves on the other side", |a| a.server != leader).await;
                tokio::time::sleep(hold).await;
                c.heal(leader);
            }
            Fault::PartitionHighest => {
                c.partition(2);
                more_acks(&acks, 10, "saves on the cut-off server", |a| a.server == 2).await;
                tokio::time::sleep(hold).await;
                more_acks(&acks, 10, "saves on the other side", |a| a.server != 2).await;
                c.heal(2);
            }
            Fault::PauseLeader => {
                c.signal(leader, "-STOP");
                tokio::time::sleep(hold).await;
                more_acks(&acks, 10, "saves while the leader is paused", |a| {
                    a.server != leader
                })
                .await;
                c.signal(leader, "-CONT");
            }
            Fault::KillFollower => {
                let f = others[rng.below(2) as usize];
                eprintln!("killing {}", c.nodes[f].id);
                c.kill(f);
                more_acks(&acks, 10, "saves while a follower is down", |a| {
                    a.server != f
                })
                .await;
                c.start(f);
                more_acks(&acks, 10, "saves on the restarted follower", |a| {
                    a.server == f
                })
                .await;
            }
            Fault::KillLeader => {
                c.kill(leader);
                more_acks(&acks, 10, "saves while the leader is down", |a| {
                    a.server != leader
                })
                .await;
                tokio::time::sleep(hold).await;
                c.start(leader);
                more_acks(&acks, 10, "saves on the restarted leader", |a| {
                    a.server == leader
                })
                .await;
            }
        }
        eprintln!("{} fault {fault:?} ends", now_utc());
        more_acks(&acks, 30, "saves after the fault", |_| true).await;
    }
    writers.stop().await;
    phase.checking();
    c.one_leader(&[0, 1, 2]).await;
    let http = client();
    let urls: Vec<String> = (0..3).map(|i| c.url(i)).collect();
    let listed = identical_listings(&http, &urls).await;
    let acks = acks.lock().unwrap().clone();
    let pending = acks.iter().filter(|a| a.status == 202).count();
    eprintln!(
        "{} acknowledged saves ({pending} of them 202), {} items, {} conflict records, {} revisions listed per server",
        acks.len(),
        listed.histories.len(),
        listed.conflicts.len(),
        listed.histories.values().map(Vec::len).sum::<usize>()
    );
    assert_every_ack_kept(&listed, &acks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bully_leader_changes_with_kills_pauses_and_partitions_lose_no_acknowledged_save() {
    again_while_too_slow(|phase| run(Mode::Bully, phase)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubernetes_leader_changes_with_kills_pauses_and_partitions_lose_no_acknowledged_save() {
    again_while_too_slow(|phase| async move {
        run(Mode::Kubernetes(FakeApi::start().await), phase).await
    })
    .await;
}
