//! The Docker Compose deployment end to end: three Folio containers in BULLY mode behind HAProxy
//! with cookie affinity. Log in and save through the balancer; stop the leader's container and
//! keep working in the same session while a new leader is elected; bring it back and converge;
//! cut a container off the network and reconnect it; `down` removes everything.
//!
//! Needs Docker with docker-compose and the images `folio:latest` and `haproxy:2.6`
//! (`scripts/docker-build` makes them; `scripts/test` runs it first).

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

const SLOW: Duration = Duration::from_secs(120);

struct Compose {
    project: String,
    env_file: tempfile::NamedTempFile,
    /// HAProxy, the three servers, HAProxy's stats.
    ports: [u16; 5],
    secret: String,
    password: String,
    /// `-f` files: the base file, plus the TLS override when certificates are in use.
    files: Vec<&'static str>,
    certs: Option<tempfile::TempDir>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Compose {
    fn new(tag: &str) -> Compose {
        let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
        let mut env_file = tempfile::NamedTempFile::new().unwrap();
        use std::io::Write;
        writeln!(
            env_file,
            "CLUSTER_HEARTBEAT_INTERVAL=300ms\nCLUSTER_HEARTBEAT_TIMEOUT=1500ms\nCLUSTER_BULLY_STABILITY=3s\n\
             CLUSTER_POLL_INTERVAL=1s\nSERVER_DRAIN_GRACE=2s\nLOG_LEVEL=info",
        )
        .unwrap();
        let project = format!("foliotest{tag}{}", std::process::id());
        let ports = [
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        ];
        Compose {
            project,
            env_file,
            ports,
            secret: format!("secret-{}", uuid::Uuid::new_v4().simple()),
            password,
            files: vec!["docker-compose.yml"],
            certs: None,
        }
    }

    /// The same, with HTTPS everywhere (docker-compose.tls.yml and `scripts/compose-certs`).
    async fn with_tls(tag: &str) -> Compose {
        let mut c = Compose::new(tag);
        let dir = tempfile::tempdir().unwrap();
        succeeds(c.command("scripts/compose-certs").arg(dir.path())).await;
        c.files.push("docker-compose.tls.yml");
        c.certs = Some(dir);
        c
    }

    fn args(&self) -> Vec<String> {
        let mut a = vec!["-p".to_string(), self.project.clone()];
        for f in &self.files {
            a.push("-f".into());
            a.push(f.to_string());
        }
        a
    }

    fn https(&self) -> Option<reqwest::Client> {
        let dir = self.certs.as_ref()?;
        let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.path().join("ca.pem")).unwrap())
            .unwrap();
        Some(
            reqwest::Client::builder()
                .tls_certs_only([ca])
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        )
    }

    fn command(&self, program: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(program);
        c.current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("FOLIO_ENV_FILE", self.env_file.path())
            .env("FOLIO_SHARED_SECRET", &self.secret)
            .env("FOLIO_ADMIN_PASSWORD", &self.password)
            .env("FOLIO_PORT", self.ports[0].to_string())
            .env("FOLIO_1_PORT", self.ports[1].to_string())
            .env("FOLIO_2_PORT", self.ports[2].to_string())
            .env("FOLIO_3_PORT", self.ports[3].to_string())
            .env("FOLIO_STATS_PORT", self.ports[4].to_string());
        if let Some(d) = &self.certs {
            c.env("FOLIO_CERTS", d.path());
        }
        c
    }

    async fn compose(&self, args: &[&str]) -> String {
        let out = self
            .command("docker-compose")
            .args(self.args())
            .args(args)
            .output()
            .await
            .expect("docker-compose runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "docker-compose {args:?} failed: {text}"
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    async fn docker(&self, args: &[&str]) -> String {
        let out = self
            .command("docker")
            .args(args)
            .output()
            .await
            .expect("docker runs");
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn scheme(&self) -> &'static str {
        if self.certs.is_some() {
            "https"
        } else {
            "http"
        }
    }

    fn balancer(&self) -> String {
        format!("{}://127.0.0.1:{}/", self.scheme(), self.ports[0])
    }

    fn server(&self, n: usize) -> String {
        format!("{}://127.0.0.1:{}/", self.scheme(), self.ports[n])
    }

    async fn container(&self, service: &str) -> String {
        self.compose(&["ps", "-q", service])
            .await
            .trim()
            .to_string()
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        let mut c = std::process::Command::new("docker-compose");
        c.current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("FOLIO_ENV_FILE", self.env_file.path());
        if let Some(d) = &self.certs {
            c.env("FOLIO_CERTS", d.path());
        }
        let _ = c
            .args(self.args())
            .args(["down", "-v", "--remove-orphans", "-t", "5"])
            .output();
    }
}

/// A browser-like client of the balancer: keeps the cookies it is given (affinity and session).
struct Session {
    http: reqwest::Client,
    base: String,
    cookies: std::collections::BTreeMap<String, String>,
}

impl Session {
    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Answer, reqwest::Error> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("cookie", self.cookie_header());
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        for v in resp.headers().get_all("set-cookie") {
            if let Some((k, rest)) = v.to_str().unwrap_or("").split_once('=') {
                self.cookies.insert(
                    k.to_string(),
                    rest.split(';').next().unwrap_or("").to_string(),
                );
            }
        }
        Ok(answer(resp).await)
    }
}

async fn health(c: &Compose, url: &str) -> Option<Value> {
    let http = c.https().unwrap_or_else(client);
    let r = http
        .get(format!("{url}health"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

/// Waits until the reachable servers `ns` all name `leader` (a service name) and it leads.
async fn leader_is(c: &Compose, ns: &[usize], leader: &str) {
    wait_for(&format!("{leader} to lead"), SLOW, || async {
        for &n in ns {
            let h = health(c, &c.server(n)).await?;
            if h["leader"]["id"] != leader
                || (h["role"] == "leader") != (format!("folio-{n}") == leader)
            {
                return None;
            }
        }
        Some(())
    })
    .await
}

/// Waits until the servers `ns` list the same workbooks at the same revisions; answers them.
async fn converged(c: &Compose, token: &str, ns: &[usize]) -> Vec<(String, String)> {
    wait_for("the servers to converge", SLOW, || async {
        let mut first: Option<Vec<(String, String)>> = None;
        for &n in ns {
            let http = c.https().unwrap_or_else(client);
            let r = http
                .get(format!("{}api/v1/workbooks?limit=1000", c.server(n)))
                .bearer_auth(token)
                .send()
                .await
                .ok()?;
            let v: Value = r.json().await.ok()?;
            let mut items: Vec<(String, String)> = v["items"]
                .as_array()?
                .iter()
                .map(|i| {
                    (
                        i["id"].as_str().unwrap_or("").to_string(),
                        i["rev"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect();
            items.sort();
            if first.get_or_insert(items.clone()) != &items {
                return None;
            }
        }
        first
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_cluster_survives_the_leader_and_a_partition_behind_haproxy() {
    let c = Compose::new("e2e");
    c.compose(&["up", "-d"]).await;

    // Through the balancer: ready, log in, keep the affinity and session cookies, save.
    wait_for("HAProxy to route to a ready server", SLOW, || async {
        let r = client()
            .get(format!("{}ready", c.balancer()))
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    leader_is(&c, &[1, 2, 3], "folio-1").await;
    let mut s = Session {
        http: client(),
        base: c.balancer(),
        cookies: Default::default(),
    };
    let login = s
        .send(
            reqwest::Method::POST,
            "api/v1/login",
            Some(json!({"username": "admin", "password": c.password})),
        )
        .await
        .unwrap();
    assert_eq!(login.status, 200, "{}", login.text);
    let token = login.body["token"].as_str().unwrap().to_string();
    assert!(
        s.cookies.contains_key("FOLIO_SERVER"),
        "HAProxy set its affinity cookie: {:?}",
        s.cookies
    );
    assert!(s.cookies.contains_key("folio_session"));
    let mut saved = Vec::new();
    for i in 0..5 {
        let a = s
            .send(
                reqwest::Method::PUT,
                &format!("api/v1/workbooks/lb-{i}"),
                Some(json!({"name": "lb", "content": i})),
            )
            .await
            .unwrap();
        assert_eq!(a.status, 201, "{}", a.text);
        saved.push(format!("lb-{i}"));
    }
    converged(&c, &token, &[1, 2, 3]).await;

    // Stop the leader's container: the same browser session keeps working through the balancer.
    c.compose(&["stop", "folio-1"]).await;
    leader_is(&c, &[2, 3], "folio-2").await;
    let me = s
        .send(reqwest::Method::GET, "api/v1/me", None)
        .await
        .unwrap();
    assert_eq!(
        me.status, 200,
        "the session is valid cluster-wide: {}",
        me.text
    );
    for i in 0..5 {
        let id = format!("failover-{i}");
        // Until the new leader is known everywhere a save may be queued (202); it must commit soon.
        let deadline = tokio::time::Instant::now() + SLOW;
        loop {
            let a = s
                .send(
                    reqwest::Method::PUT,
                    &format!("api/v1/workbooks/{id}"),
                    Some(json!({"name": "f", "content": 1})),
                )
                .await;
            if let Ok(a) = a
                && a.status.is_success()
                && a.body["state"] == "committed"
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no committed save through the balancer after the failover"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        saved.push(id);
    }
    c.compose(&["start", "folio-1"]).await;
    leader_is(&c, &[1, 2, 3], "folio-1").await;
    let all = converged(&c, &token, &[1, 2, 3]).await;
    for id in &saved {
        assert!(
            all.iter().any(|(i, _)| i == id),
            "{id} was acknowledged and must be everywhere"
        );
    }

    // Partition folio-3 from the compose network, keep saving, reconnect: it converges.
    let net = format!("{}_folio", c.project);
    let f3 = c.container("folio-3").await;
    c.docker(&["network", "disconnect", &net, &f3]).await;
    for i in 0..3 {
        let a = s
            .send(
                reqwest::Method::PUT,
                &format!("api/v1/workbooks/split-{i}"),
                Some(json!({"name": "s", "content": i})),
            )
            .await
            .unwrap();
        assert!(a.status.is_success(), "{}", a.text);
        saved.push(format!("split-{i}"));
    }
    c.docker(&["network", "connect", "--alias", "folio-3", &net, &f3])
        .await;
    let all = converged(&c, &token, &[1, 2, 3]).await;
    for id in &saved {
        assert!(
            all.iter().any(|(i, _)| i == id),
            "{id} is on every server after the heal"
        );
    }

    // Down removes the containers, the network and the volumes it made.
    c.compose(&["down", "-v", "-t", "10"]).await;
    let label = format!("label=com.docker.compose.project={}", c.project);
    assert_eq!(c.docker(&["ps", "-aq", "--filter", &label]).await, "");
    assert_eq!(
        c.docker(&["volume", "ls", "-q", "--filter", &label]).await,
        ""
    );
    assert_eq!(
        c.docker(&["network", "ls", "-q", "--filter", &label]).await,
        ""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_cluster_over_https_end_to_end() {
    let c = Compose::with_tls("tls").await;
    c.compose(&["up", "-d"]).await;
    let https = c.https().unwrap();
    wait_for("HAProxy to route over HTTPS", SLOW, || async {
        let r = https
            .get(format!("{}ready", c.balancer()))
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    let plain = client()
        .get(format!("http://127.0.0.1:{}/ready", c.ports[0]))
        .send()
        .await;
    assert!(
        !plain.is_ok_and(|r| r.status().is_success()),
        "the balancer speaks HTTPS only"
    );
    leader_is(&c, &[1, 2, 3], "folio-1").await;
    let mut s = Session {
        http: https.clone(),
        base: c.balancer(),
        cookies: Default::default(),
    };
    let login = s
        .send(
            reqwest::Method::POST,
            "api/v1/login",
            Some(json!({"username": "admin", "password": c.password})),
        )
        .await
        .unwrap();
    assert_eq!(login.status, 200, "{}", login.text);
    let token = login.body["token"].as_str().unwrap().to_string();
    for i in 0..3 {
        let a = s
            .send(
                reqwest::Method::PUT,
                &format!("api/v1/workbooks/tls-{i}"),
                Some(json!({"name": "t", "content": i})),
            )
            .await
            .unwrap();
        assert_eq!(a.body["state"], "committed", "{}", a.text);
    }
    let all = converged(&c, &token, &[1, 2, 3]).await;
    assert_eq!(all.len(), 3);
    let view: Value = https
        .get(format!("{}api/v1/cluster", c.server(2)))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        view["leader"]["url"], "https://folio-1:8080/",
        "peers talk HTTPS: {view}"
    );
    c.compose(&["down", "-v", "-t", "10"]).await;
}

/// A copy of the checkout's files (tracked, or new and not ignored: no `.env`, no `target/`),
/// as a user who has just cloned it has them; `docker-compose` runs there under its own project
/// name and image tag, and everything it made is removed when this is dropped.
struct FreshCheckout {
    dir: tempfile::TempDir,
    project: String,
    image: String,
    ports: [u16; 5],
}

impl FreshCheckout {
    async fn new() -> FreshCheckout {
        let repo = env!("CARGO_MANIFEST_DIR");
        let files = succeeds(tokio::process::Command::new("git").current_dir(repo).args([
            "ls-files",
            "--cached",
            "--others",
            "--exclude-standard",
        ]))
        .await;
        let dir = tempfile::tempdir().unwrap();
        for f in String::from_utf8_lossy(&files.stdout).lines() {
            let from = std::path::Path::new(repo).join(f);
            if !from.is_file() {
                continue; // deleted in the working tree
            }
            let to = dir.path().join(f);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&from, &to).unwrap();
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        FreshCheckout {
            dir,
            project: format!("foliofresh{}", &id[..8]),
            image: format!("folio-fresh:{}", &id[..8]),
            ports: [
                free_port(),
                free_port(),
                free_port(),
                free_port(),
                free_port(),
            ],
        }
    }

    /// `docker-compose` in the copy, with no secret and no setting of the user's own: only
    /// where it publishes (free ports) and which image tag it builds.
    fn command(&self) -> std::process::Command {
        let mut c = std::process::Command::new("docker-compose");
        c.current_dir(self.dir.path())
            .env_remove("FOLIO_SHARED_SECRET")
            .env_remove("FOLIO_ADMIN_PASSWORD")
            .env_remove("FOLIO_ENV_FILE")
            .env("FOLIO_IMAGE", &self.image)
            .env("FOLIO_PORT", self.ports[0].to_string())
            .env("FOLIO_1_PORT", self.ports[1].to_string())
            .env("FOLIO_2_PORT", self.ports[2].to_string())
            .env("FOLIO_3_PORT", self.ports[3].to_string())
            .env("FOLIO_STATS_PORT", self.ports[4].to_string())
            .args(["-p", &self.project]);
        c
    }

    async fn run(&self, args: &[&str]) -> (bool, String) {
        let mut c = tokio::process::Command::from(self.command());
        let out = c.args(args).output().await.expect("docker-compose runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Names of the networks and volumes of this project that exist.
    async fn leftovers(&self) -> String {
        let mut found = String::new();
        for kind in ["network", "volume"] {
            let out = succeeds(tokio::process::Command::new("docker").args([
                kind,
                "ls",
                "-q",
                "--filter",
                &format!("name={}_", self.project),
            ]))
            .await;
            found.push_str(String::from_utf8_lossy(&out.stdout).trim());
        }
        found
    }
}

impl Drop for FreshCheckout {
    fn drop(&mut self) {
        let _ = self
            .command()
            .args(["down", "-v", "--remove-orphans", "-t", "5"])
            .output();
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", &self.image])
            .output();
    }
}

/// `docker-compose up` on a fresh checkout: without the release binary it stops saying what to
/// run (the network and volumes it made are reused by the next `up`); with it, it builds its own image (never pulling one), runs on
/// the example secrets while warning about them, names the balancer's address in each server's
/// banner, and shows on HAProxy's stats page (loopback) which servers it routes to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_up_works_on_a_fresh_checkout() {
    let fresh = FreshCheckout::new().await;
    let (ok, text) = fresh.run(&["up", "-d"]).await;
    assert!(!ok, "no binary yet: {text}");
    assert!(
        text.contains("run 'cargo build --release', then 'docker-compose up -d' again")
            && text.contains("scripts/compose-up"),
        "says what to run: {text}"
    );
    assert!(!text.contains("pull access denied"), "{text}");

    let binary = fresh.dir.path().join("target/release/folio");
    std::fs::create_dir_all(binary.parent().unwrap()).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/folio"),
        &binary,
    )
    .expect("the release binary (scripts/test builds it before the tests)");
    let (ok, text) = fresh.run(&["up", "-d"]).await;
    assert!(ok, "{text}");

    let balancer = format!("http://127.0.0.1:{}/", fresh.ports[0]);
    let http = client();
    let token = wait_for("a login through HAProxy", SLOW, || async {
        let r = http
            .post(format!("{balancer}api/v1/login"))
            .json(&json!({"username": "admin", "password": "change-me-now"}))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        v["token"].as_str().map(String::from)
    })
    .await;
    assert!(!token.is_empty());

    // HAProxy's stats, on loopback only: every server, and that it routes to it.
    let stats = format!("http://127.0.0.1:{}/;csv", fresh.ports[4]);
    wait_for("HAProxy to route to all three servers", SLOW, || async {
        let csv = http.get(&stats).send().await.ok()?.text().await.ok()?;
        let up = ["folio-1", "folio-2", "folio-3"].iter().all(|s| {
            csv.lines()
                .any(|l| l.starts_with(&format!("folio,{s},")) && l.contains(",UP,"))
        });
        up.then_some(())
    })
    .await;
    let (_, compose_file) = fresh.run(&["config"]).await;
    assert!(
        compose_file.contains(&format!("127.0.0.1:{}:8404", fresh.ports[4]))
            || compose_file.contains(&format!(
                "host_ip: 127.0.0.1\n        published: {}",
                fresh.ports[4]
            )),
        "stats published on loopback: {compose_file}"
    );

    let (_, logs) = fresh.run(&["logs", "--no-color", "folio-1"]).await;
    assert!(
        logs.contains(&format!("users reach it at {balancer}")),
        "the banner names the balancer: {logs}"
    );
    assert!(
        logs.contains("cluster.shared.secret is still the example value"),
        "warns about the example secret: {logs}"
    );
    let (ok, text) = fresh.run(&["down", "-v", "-t", "5"]).await;
    assert!(ok, "{text}");
    assert_eq!(
        fresh.leftovers().await,
        "",
        "`down -v` leaves nothing behind"
    );
}
