//! Test helpers: start a server in-process on 127.0.0.1:0 with its own data directory, log in,
//! call the API, snapshot the store, and wait for conditions with a deadline (never a fixed sleep).

#![allow(dead_code)]

use std::time::Duration;

use folio::config::Config;
use folio::server::Running;
use folio::store::Store;
use reqwest::{Method, StatusCode};
use serde_json::Value;

pub const ADMIN: &str = "admin";
pub const ADMIN_PW: &str = "admin-password-1";

/// A running in-process server with its own temporary data directory.
pub struct TestServer {
    pub running: Option<Running>,
    pub url: String,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

/// Starts a server with test defaults plus `overrides`.
pub async fn start(overrides: &[(&str, &str)]) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    start_in(dir, overrides).await
}

/// Starts a server on an existing data directory (to test restarts).
pub async fn start_in(dir: tempfile::TempDir, overrides: &[(&str, &str)]) -> TestServer {
    let data = dir.path().join("data");
    let data = data.to_str().unwrap().to_string();
    let mut all: Vec<(&str, &str)> = vec![
        ("server.listen", "127.0.0.1:0"),
        ("server.data_dir", &data),
        ("server.drain.grace", "10ms"),
        ("auth.admin.user", ADMIN),
        ("auth.admin.password", ADMIN_PW),
        ("store.cache.mb", "8"),
    ];
    all.extend_from_slice(overrides);
    let config = Config::with_overrides(&all).expect("test configuration is valid");
    let running = folio::server::start(config).await.expect("server starts");
    let url = running.base_url.clone();
    TestServer {
        running: Some(running),
        url,
        dir,
        http: client(),
    }
}

/// A client without cookies, so tests say exactly which credentials they send.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// An HTTP answer: status, headers and the body parsed as JSON (Null when it is not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Answer {
    /// Asserts the status and that the body is the JSON error shape; answers the error code.
    pub fn error(&self, status: u16) -> String {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        let code = self.body["error"]["code"].as_str();
        let msg = self.body["error"]["message"].as_str();
        assert!(
            code.is_some() && msg.is_some_and(|m| !m.is_empty()),
            "not a JSON error body: {}",
            self.text
        );
        code.unwrap().to_string()
    }
}

pub async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
        text,
    }
}

impl TestServer {
    pub fn store(&self) -> &Store {
        &self.running.as_ref().expect("running").state.store
    }

    pub fn state(&self) -> &folio::app::AppState {
        &self.running.as_ref().expect("running").state
    }

    /// Logs in and answers the bearer token.
    pub async fn login(&self, user: &str, password: &str) -> String {
        let a = self
            .post_json(
                "api/v1/login",
                None,
                &serde_json::json!({"username": user, "password": password}),
            )
            .await;
        assert_eq!(a.status, 200, "login failed: {}", a.text);
        a.body["token"].as_str().unwrap().to_string()
    }

    pub async fn admin(&self) -> String {
        self.login(ADMIN, ADMIN_PW).await
    }

    /// Creates a user with a role and answers their token.
    pub async fn user_with_role(&self, admin: &str, name: &str, role: &str) -> String {
        let pw = format!("{name}-password");
        let a = self
            .post_json(
                "api/v1/users",
                Some(admin),
                &serde_json::json!({"username": name, "password": pw, "role": role}),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
        self.login(name, &pw).await
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        answer(req.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.call(Method::GET, path, token, None).await
    }

    /// Ends the session of `token` (`POST api/v1/logout`).
    pub async fn logout(&self, token: &str) -> Answer {
        self.call(Method::POST, "api/v1/logout", Some(token), None)
            .await
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Answer {
        self.call(Method::POST, path, token, Some(body)).await
    }

    pub async fn put_json(&self, path: &str, token: Option<&str>, body: &Value) -> Answer {
        self.call(Method::PUT, path, token, Some(body)).await
    }

    /// Posts a JSON-lines export to `api/v1/import{query}`.
    pub async fn import(&self, token: &str, query: &str, dump: impl Into<reqwest::Body>) -> Answer {
        let resp = self
            .http
            .post(format!("{}api/v1/import{query}", self.url))
            .bearer_auth(token)
            .header("content-type", "application/x-ndjson")
            .body(dump)
            .send()
            .await
            .expect("request sent");
        answer(resp).await
    }

    /// Creates a workbook and answers its JSON.
    pub async fn create(&self, token: &str, coll: &str, name: &str, content: Value) -> Value {
        let a = self
            .post_json(
                &format!("api/v1/{coll}"),
                Some(token),
                &serde_json::json!({"name": name, "content": content}),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
        a.body
    }

    /// Everything a user could observe having changed: the change-log position and every
    /// exported item with its revision and body.
    pub async fn snapshot(&self) -> (u64, Vec<String>) {
        let store = self.store().clone();
        let seq = store.last_seq().await.unwrap();
        let items = tokio::task::spawn_blocking(move || {
            store
                .export_iter()
                .map(|r| {
                    let (c, i) = r.unwrap();
                    format!("{}/{} {} {}", c.as_str(), i.id, i.rev, i.content)
                })
                .collect()
        })
        .await
        .unwrap();
        (seq, items)
    }

    /// Stops the server and answers its data directory (for restarts).
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
        self.dir
    }
}

/// Polls `check` until it answers `Some` or the deadline passes (then panics with `what`).
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// The shared secret of test clusters.
pub const SECRET: &str = "test-cluster-secret";

/// A FIXED cluster: a leader and followers, each follower reaching the leader through a
/// [`LinkProxy`] the test can cut.
pub struct FixedCluster {
    pub leader: TestServer,
    pub followers: Vec<TestServer>,
    pub links: Vec<crate::proxy::LinkProxy>,
}

/// The configuration every member of a test cluster shares.
pub fn cluster_overrides<'a>(id: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v = vec![
        ("cluster.mode", "FIXED"),
        ("cluster.shared.secret", SECRET),
        ("cluster.poll.interval", "1s"),
        ("cluster.push.timeout", "1s"),
        ("server.id", id),
    ];
    v.extend_from_slice(extra);
    v
}

impl FixedCluster {
    /// Starts a leader and `n` followers.
    pub async fn start(n: usize, extra: &[(&str, &str)]) -> FixedCluster {
        let leader = start(&cluster_overrides("leader", extra)).await;
        let mut followers = Vec::new();
        let mut links = Vec::new();
        for i in 0..n {
            let (f, link) = Self::follower_of(&leader, &format!("f{}", i + 1), extra).await;
            followers.push(f);
            links.push(link);
        }
        FixedCluster {
            leader,
            followers,
            links,
        }
    }

    /// Starts one follower of `leader` behind a new link.
    pub async fn follower_of(
        leader: &TestServer,
        id: &str,
        extra: &[(&str, &str)],
    ) -> (TestServer, crate::proxy::LinkProxy) {
        let link = crate::proxy::LinkProxy::start(leader.running.as_ref().unwrap().addr).await;
        let url = link.url();
        let mut o = cluster_overrides(id, extra);
        o.push(("cluster.fixed.leader", &url));
        (start(&o).await, link)
    }

    pub fn all(&self) -> Vec<&TestServer> {
        std::iter::once(&self.leader)
            .chain(self.followers.iter())
            .collect()
    }

    /// Waits until every server holds identical content (ids, revisions and bodies, users and
    /// conflict records included) and identical store digests.
    pub async fn converged(&self) {
        converged(&self.all()).await
    }
}

/// Waits until all `servers` hold identical content and digests.
pub async fn converged(servers: &[&TestServer]) {
    wait_for("convergence", Duration::from_secs(30), || async {
        let first = servers[0].snapshot().await.1;
        let digest = servers[0].store().digest().await.unwrap().0;
        for s in &servers[1..] {
            if s.snapshot().await.1 != first || s.store().digest().await.unwrap().0 != digest {
                return None;
            }
        }
        Some(())
    })
    .await
}

impl TestServer {
    /// A metric's value from `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        metric_at(&self.http, &self.url, name).await
    }

    /// The bound address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.running.as_ref().unwrap().addr
    }
}

/// One server of a BULLY test cluster: reachable at a stable front address (a proxy, since the
/// server itself listens on port 0 of its own loopback address), and talking to its peers from
/// that loopback address, so the test can cut it off from everyone.
pub struct BullyNode {
    pub id: String,
    pub ip: std::net::IpAddr,
    /// Where the server listens (the same across restarts).
    pub listen: std::net::SocketAddr,
    pub front: crate::proxy::LinkProxy,
    pub server: Option<TestServer>,
    pub dir: Option<tempfile::TempDir>,
}

/// A BULLY cluster of `n` servers, the first `boot` of them boot servers (as in the reference
/// example: two boot servers and one more).
pub struct BullyCluster {
    pub nodes: Vec<BullyNode>,
    pub boot: String,
    pub extra: Vec<(String, String)>,
}

impl BullyCluster {
    pub async fn new(n: usize, boot: usize, extra: &[(&str, &str)]) -> BullyCluster {
        let mut nodes = Vec::new();
        for i in 0..n {
            let ip: std::net::IpAddr = format!("127.0.0.{}", 30 + i).parse().unwrap();
            // A fixed address for the server, so that its front reaches it as soon as it listens
            // (and finds nobody there before, as a real peer would).
            let listen = std::net::TcpListener::bind((ip, 0))
                .unwrap()
                .local_addr()
                .unwrap();
            let front = crate::proxy::LinkProxy::start(listen).await;
            nodes.push(BullyNode {
                id: format!("folio-{}", i + 1),
                ip,
                listen,
                front,
                server: None,
                dir: None,
            });
        }
        let boot = nodes[..boot]
            .iter()
            .map(|n| n.front.url())
            .collect::<Vec<_>>()
            .join(",");
        let extra = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        BullyCluster { nodes, boot, extra }
    }

    fn overrides(&self, i: usize) -> Vec<(String, String)> {
        let n = &self.nodes[i];
        let mut o: Vec<(String, String)> = [
            ("server.listen", n.listen.to_string()),
            ("cluster.mode", "BULLY".into()),
            ("cluster.shared.secret", SECRET.into()),
            ("cluster.bully.id", n.id.clone()),
            ("cluster.bully.bind", n.front.url()),
            ("cluster.bully.boot", self.boot.clone()),
            ("cluster.source_address", n.ip.to_string()),
            ("cluster.heartbeat.interval", "150ms".into()),
            ("cluster.heartbeat.timeout", "800ms".into()),
            ("cluster.bully.stability", "2s".into()),
            ("cluster.poll.interval", "1s".into()),
            ("cluster.push.timeout", "1s".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        o.extend(self.extra.iter().cloned());
        o
    }

    /// Server `i`'s configuration, on its old data directory after a stop.
    fn config(&mut self, i: usize) -> (Config, tempfile::TempDir) {
        let dir = self.nodes[i]
            .dir
            .take()
            .unwrap_or_else(|| tempfile::tempdir().unwrap());
        let data = dir.path().join("data").to_str().unwrap().to_string();
        let mut o = self.overrides(i);
        o.push(("server.data_dir".into(), data));
        o.extend([
            ("server.drain.grace".into(), "10ms".into()),
            ("auth.admin.user".into(), ADMIN.into()),
            ("auth.admin.password".into(), ADMIN_PW.into()),
            ("store.cache.mb".into(), "8".into()),
        ]);
        let refs: Vec<(&str, &str)> = o.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let config = Config::with_overrides(&refs).expect("valid test configuration");
        (config, dir)
    }

    fn started(
        &mut self,
        i: usize,
        dir: tempfile::TempDir,
        result: Result<folio::server::Running, folio::server::StartError>,
    ) -> Result<(), String> {
        match result {
            Ok(running) => {
                let url = running.base_url.clone();
                self.nodes[i].server = Some(TestServer {
                    running: Some(running),
                    url,
                    dir,
                    http: client(),
                });
                Ok(())
            }
            Err(e) => {
                self.nodes[i].dir = Some(dir);
                Err(e.to_string())
            }
        }
    }

    /// Starts server `i` (on its old data directory after a stop); the error of a refused start.
    pub async fn try_start(&mut self, i: usize) -> Result<(), String> {
        let (config, dir) = self.config(i);
        let result = folio::server::start(config).await;
        self.started(i, dir, result)
    }

    /// Starts the servers `which` all at once, each `stagger` after the one before it.
    pub async fn start_together(&mut self, which: &[usize], stagger: Duration) {
        let starts: Vec<_> = which
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                let (config, dir) = self.config(i);
                async move {
                    tokio::time::sleep(stagger * k as u32).await;
                    (i, dir, folio::server::start(config).await)
                }
            })
            .collect();
        for (i, dir, result) in futures_util::future::join_all(starts).await {
            self.started(i, dir, result).expect("server starts");
        }
    }

    pub async fn start(&mut self, i: usize) {
        self.try_start(i).await.expect("server starts");
    }

    /// Stops server `i`, keeping its data for a restart.
    pub async fn stop(&mut self, i: usize) {
        let s = self.nodes[i].server.take().expect("running");
        self.nodes[i].dir = Some(s.stop().await);
    }

    pub fn server(&self, i: usize) -> &TestServer {
        self.nodes[i].server.as_ref().expect("running")
    }

    /// Cuts server `i` off from every other server, both ways.
    pub fn partition(&self, i: usize) {
        self.nodes[i].front.cut();
        for (j, n) in self.nodes.iter().enumerate() {
            if j != i {
                n.front.block(self.nodes[i].ip);
            }
        }
    }

    pub fn heal(&self, i: usize) {
        self.nodes[i].front.restore();
        for n in &self.nodes {
            n.front.unblock(self.nodes[i].ip);
        }
    }

    /// Waits until every server in `group` names the same leader, which leads; answers its index.
    pub async fn one_leader(&self, group: &[usize], deadline: Duration) -> usize {
        wait_for(&format!("one leader among {group:?}"), deadline, || async {
            let mut named = None;
            let mut leaders = 0;
            for &i in group {
                let h = self.server(i).get("health", None).await;
                let id = h.body["leader"]["id"].as_str()?.to_string();
                if named.get_or_insert(id.clone()) != &id {
                    return None;
                }
                if h.body["role"] == "leader" {
                    leaders += 1;
                }
            }
            let id = named?;
            let idx = self.nodes.iter().position(|n| n.id == id)?;
            (leaders == 1 && group.contains(&idx)).then_some(idx)
        })
        .await
    }

    /// Waits until every server in `group` names server `expected` as the leader, and it leads.
    pub async fn leader_is(&self, group: &[usize], expected: usize, deadline: Duration) {
        wait_for(
            &format!("{} to lead {group:?}", self.nodes[expected].id),
            deadline,
            || async {
                for &i in group {
                    let h = self.server(i).get("health", None).await;
                    if h.body["leader"]["id"] != self.nodes[expected].id.as_str() {
                        return None;
                    }
                    if (h.body["role"] == "leader") != (i == expected) {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await
    }

    /// Waits until the servers in `group` hold identical content.
    pub async fn converged(&self, group: &[usize]) {
        let servers: Vec<&TestServer> = group.iter().map(|i| self.server(*i)).collect();
        converged(&servers).await
    }
}

/// A metric's value from the `/metrics` of the server at `url` (0 when absent).
pub async fn metric_at(http: &reqwest::Client, url: &str, name: &str) -> f64 {
    let text = http
        .get(format!("{url}metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Runs `cmd` to its end, asserts that it succeeds and answers its output.
pub async fn succeeds(cmd: &mut tokio::process::Command) -> std::process::Output {
    let out = cmd.output().await.unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs the `folio` binary with `args` (the admin password in `FOLIO_PASSWORD`), asserts that it
/// succeeds and answers its output.
pub async fn folio_ok(args: &[&str]) -> std::process::Output {
    succeeds(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_folio"))
            .args(args)
            .env("FOLIO_PASSWORD", ADMIN_PW),
    )
    .await
}

/// The health a server's cluster view gives the member `id` (empty when it lists no such member).
pub async fn health_of(s: &TestServer, token: &str, id: &str) -> String {
    let view = s.get("api/v1/cluster", Some(token)).await.body;
    view["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .map(|m| m["health"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}
