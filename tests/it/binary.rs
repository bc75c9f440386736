//! The real `folio` binary: durability across `kill -9`, and SIGTERM draining while a request is
//! still in flight.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::harness::*;

/// A `folio` process on 127.0.0.1:0 with its data in `dir`.
pub(crate) struct Proc {
    child: Child,
    pub(crate) url: String,
    /// Every line the process wrote to stderr (its log).
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// The `folio` binary the tests start: this build's, or another build's to show a test fails
/// there (`FOLIO_TEST_BINARY`).
pub(crate) fn folio_binary() -> String {
    std::env::var("FOLIO_TEST_BINARY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_folio").to_string())
}

impl Proc {
    /// How many lines of its log so far contain `text`.
    pub(crate) fn logged(&self, text: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(text))
            .count()
    }

    pub(crate) fn start(dir: &std::path::Path, extra: &[&str]) -> Proc {
        Proc::start_as(dir, extra, "folio")
    }

    /// [`Proc::start`], its log lines echoed with `label` (which server wrote them).
    pub(crate) fn start_as(dir: &std::path::Path, extra: &[&str], label: &str) -> Proc {
        Proc::start_binary(&folio_binary(), dir, extra, label, &[])
    }

    /// [`Proc::start_as`] with the binary at `bin` (an earlier build, in the upgrade test) and
    /// these environment variables besides.
    pub(crate) fn start_binary(
        bin: &str,
        dir: &std::path::Path,
        extra: &[&str],
        label: &str,
        env: &[(&str, &str)],
    ) -> Proc {
        let data = dir.join("data");
        let mut cmd = Command::new(bin);
        cmd.envs(env.iter().copied());
        cmd.current_dir(dir)
            .args([
                "--set",
                "server.listen=127.0.0.1:0",
                "--set",
                &format!("server.data_dir={}", data.display()),
            ])
            .args(extra)
            .env("AUTH_ADMIN_USER", ADMIN)
            .env("AUTH_ADMIN_PASSWORD", ADMIN_PW)
            .env("LOG_LEVEL", "info")
            .env("LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("folio starts");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = log.clone();
        let label = label.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[{label}] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("Folio is running at ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("folio announces its URL");
        Proc { child, url, log }
    }

    pub(crate) fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Stops the process as an operator would (SIGTERM: it drains, then exits) and waits for it
    /// to exit (60 s at most, then it is killed).
    pub(crate) async fn stop(mut self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "SIGTERM to {}", self.pid());
        let url = self.url.clone();
        wait_for(
            &format!("folio {url} to exit after SIGTERM"),
            Duration::from_secs(60),
            || {
                let exited = self.child.try_wait().ok().flatten().is_some();
                async move { exited.then_some(()) }
            },
        )
        .await;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A session on the server at `url` as the administrator, unless it cannot be had (the server
/// is down or answers otherwise).
pub(crate) async fn try_login(http: &reqwest::Client, url: &str) -> Option<String> {
    let r = http
        .post(format!("{url}api/v1/login"))
        .json(&json!({"username": ADMIN, "password": ADMIN_PW}))
        .send()
        .await
        .ok()?;
    let v: serde_json::Value = r.json().await.ok()?;
    Some(v["token"].as_str()?.to_string())
}

pub(crate) async fn login(http: &reqwest::Client, url: &str) -> String {
    try_login(http, url)
        .await
        .expect("the administrator logs in")
}

#[tokio::test]
async fn an_acknowledged_save_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let http = client();
    let mut acknowledged = Vec::new();
    {
        let p = Proc::start(dir.path(), &[]);
        let t = login(&http, &p.url).await;
        for i in 0..20 {
            let r = http
                .put(format!("{}api/v1/workbooks/durable-{i}", p.url))
                .bearer_auth(&t)
                .json(&json!({"name": format!("d{i}"), "content": {"i": i}}))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
            let rev = r.json::<serde_json::Value>().await.unwrap()["rev"]
                .as_str()
                .unwrap()
                .to_string();
            acknowledged.push(rev);
        }
        // kill -9 right after the last 2xx: Drop sends SIGKILL.
    }
    let p = Proc::start(dir.path(), &[]);
    let t = login(&http, &p.url).await;
    for (i, rev) in acknowledged.iter().enumerate() {
        let r = http
            .get(format!("{}api/v1/workbooks/durable-{i}", p.url))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "save {i} lost");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(&body["rev"], rev);
        assert_eq!(body["content"], json!({"i": i}));
    }
}

/// Saves made by several clients at once, with `kill -9` landing while they are being written:
/// after the restart each item, its history, the change feed and the item count agree, and every
/// acknowledged save is there.
#[tokio::test]
async fn a_kill_9_amid_concurrent_saves_leaves_every_write_whole() {
    const WRITERS: usize = 8;
    const IDS: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let http = client();
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    {
        let p = Proc::start(dir.path(), &[]);
        let t = login(&http, &p.url).await;
        let (enough_tx, mut enough) = tokio::sync::watch::channel(0usize);
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let (http, url, t, acked, enough_tx) = (
                http.clone(),
                p.url.clone(),
                t.clone(),
                acked.clone(),
                enough_tx.clone(),
            );
            writers.push(tokio::spawn(async move {
                // Bounded: the process is killed long before a writer runs out.
                for i in 0..2_000usize {
                    let id = format!("k{w}-{}", i % IDS);
                    let body = json!({"name": id, "content": {"i": i, "pad": "x".repeat(2_000)}});
                    let Ok(r) = http
                        .put(format!("{url}api/v1/workbooks/{id}"))
                        .bearer_auth(&t)
                        .json(&body)
                        .send()
                        .await
                    else {
                        return;
                    };
                    if !r.status().is_success() {
                        return;
                    }
                    let Ok(v) = r.json::<serde_json::Value>().await else {
                        return;
                    };
                    let rev = v["rev"].as_str().unwrap().to_string();
                    let n = {
                        let mut a = acked.lock().unwrap();
                        a.push((id, rev));
                        a.len()
                    };
                    enough_tx.send_replace(n);
                }
            }));
        }
        tokio::time::timeout(Duration::from_secs(60), enough.wait_for(|n| *n >= 300))
            .await
            .expect("300 saves acknowledged within a minute")
            .unwrap();
        // kill -9 while the writers are still saving: Drop sends SIGKILL.
        drop(p);
        for w in writers {
            let _ = w.await;
        }
    }

    let p = Proc::start(dir.path(), &[]);
    let t = login(&http, &p.url).await;
    let get = |path: String| {
        let (http, t) = (http.clone(), t.clone());
        async move {
            let r = http.get(path).bearer_auth(&t).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        }
    };
    let listed: serde_json::Value =
        serde_json::from_str(&get(format!("{}api/v1/workbooks?limit=1000", p.url)).await).unwrap();
    // (id, revision) of each entry of an answer's list.
    let id_revs = |answer: &serde_json::Value, list: &str| -> Vec<(String, String)> {
        answer[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let field = |f: &str| i[f].as_str().unwrap().to_string();
                (field("id"), field("rev"))
            })
            .collect()
    };
    let current: std::collections::HashMap<String, String> =
        id_revs(&listed, "items").into_iter().collect();
    assert_eq!(
        current.len(),
        WRITERS * IDS,
        "every item written is listed once"
    );

    // The change feed lists every revision each item keeps, oldest first, ending at the current
    // one: the same revisions as the item's history, in the same order.
    let feed: serde_json::Value =
        serde_json::from_str(&get(format!("{}api/v1/changes?since=0&limit=1000", p.url)).await)
            .unwrap();
    assert_eq!(feed["more"], false, "the whole feed in one page");
    let mut in_feed: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (id, rev) in id_revs(&feed, "changes") {
        in_feed.entry(id).or_default().push(rev);
    }
    assert_eq!(in_feed.len(), current.len(), "every item is in the feed");
    for (id, revs) in &in_feed {
        assert_eq!(
            revs.last(),
            current.get(id),
            "{id} ends at its current revision"
        );
        let history: serde_json::Value =
            serde_json::from_str(&get(format!("{}api/v1/workbooks/{id}/history", p.url)).await)
                .unwrap();
        let mut kept: Vec<String> = history["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["rev"].as_str().unwrap().to_string())
            .collect();
        kept.reverse();
        assert_eq!(revs, &kept, "{id}: the feed and the history agree");
    }

    // The item count agrees with the listing.
    let metrics = get(format!("{}metrics", p.url)).await;
    let count = metrics
        .lines()
        .find(|l| l.starts_with("folio_items{collection=\"workbooks\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .map(|n| n.trim().to_string());
    assert_eq!(count, Some(current.len().to_string()), "{metrics}");

    // Each item's last acknowledged save is its current revision or in its history (later,
    // unacknowledged saves may have superseded it), and each history starts at the current
    // revision.
    let acked = acked.lock().unwrap().clone();
    for id in current.keys() {
        let h: serde_json::Value =
            serde_json::from_str(&get(format!("{}api/v1/workbooks/{id}/history", p.url)).await)
                .unwrap();
        let revs: Vec<&str> = h["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["rev"].as_str().unwrap())
            .collect();
        assert_eq!(
            revs.first().copied(),
            Some(current[id].as_str()),
            "{id}: {revs:?}"
        );
        let last_acked = acked
            .iter()
            .rev()
            .find(|(i, _)| i == id)
            .map(|(_, r)| r.as_str());
        if let Some(rev) = last_acked {
            assert!(
                revs.contains(&rev),
                "{id}: acknowledged {rev} lost; history {revs:?}"
            );
        }
    }
}

#[tokio::test]
async fn sigterm_drains_and_lets_an_in_flight_request_finish() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Proc::start(dir.path(), &["--set", "server.drain.grace=300ms"]);
    let http = client();
    let t = login(&http, &p.url).await;

    // Start a save whose body arrives in two parts.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|c| (c, rx))
    }));
    let uploader = client();
    let url = format!("{}api/v1/workbooks/in-flight", p.url);
    let token = t.clone();
    let upload = tokio::spawn(async move {
        uploader
            .put(url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
    });
    tx.send(Ok(br#"{"name": "in flight", "#.to_vec()))
        .await
        .unwrap();

    let status = Command::new("kill")
        .args(["-TERM", &p.pid()])
        .status()
        .unwrap();
    assert!(status.success());
    let url = p.url.clone();
    wait_for(
        "DRAINING then a closed listener",
        Duration::from_secs(20),
        || {
            let http = client();
            let url = url.clone();
            async move {
                http.get(format!("{url}health"))
                    .send()
                    .await
                    .is_err()
                    .then_some(())
            }
        },
    )
    .await;
    // The listener is closed, but the request already in flight completes.
    tx.send(Ok(br#""content": {"ok": true}}"#.to_vec()))
        .await
        .unwrap();
    drop(tx);
    let resp = upload
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(resp.status(), 201);
    let code = tokio::task::spawn_blocking(move || p.child.wait().unwrap().code())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "a drained server exits cleanly");

    let p = Proc::start(dir.path(), &[]);
    let t = login(&http, &p.url).await;
    let r = http
        .get(format!("{}api/v1/workbooks/in-flight", p.url))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the in-flight save was durable");
}

#[tokio::test]
async fn sigterm_makes_ready_answer_503_during_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let p = Proc::start(dir.path(), &["--set", "server.drain.grace=3s"]);
    let http = client();
    assert_eq!(
        http.get(format!("{}ready", p.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    Command::new("kill")
        .args(["-TERM", &p.pid()])
        .status()
        .unwrap();
    let url = p.url.clone();
    let body: serde_json::Value = wait_for("ready 503", Duration::from_secs(10), || {
        let http = http.clone();
        let url = url.clone();
        async move {
            let r = http.get(format!("{url}ready")).send().await.ok()?;
            if r.status() == 503 {
                r.json().await.ok()
            } else {
                None
            }
        }
    })
    .await;
    assert_eq!(body["error"]["lifecycle"], "DRAINING");
}

/// Arguments that make the binary a FIXED follower of `leader_url`.
fn follower_args(id: &str, leader_url: &str) -> Vec<String> {
    [
        ("cluster.mode", "FIXED"),
        ("cluster.shared.secret", SECRET),
        ("cluster.fixed.leader", leader_url),
        ("cluster.poll.interval", "300ms"),
        ("cluster.push.timeout", "500ms"),
        ("server.id", id),
    ]
    .iter()
    .flat_map(|(k, v)| ["--set".to_string(), format!("{k}={v}")])
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i2_a_follower_killed_after_acknowledging_loses_nothing() {
    let leader = start(&cluster_overrides("leader", &[])).await;
    let (other, _other_link) = FixedCluster::follower_of(&leader, "f2", &[]).await;
    let link = crate::proxy::LinkProxy::start(leader.addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let args = follower_args("fb", &link.url());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let http = client();

    // Committed, then kill -9 at once.
    let committed = {
        let p = Proc::start(dir.path(), &args);
        let t = login(&http, &p.url).await;
        let r = http
            .put(format!("{}api/v1/workbooks/acked", p.url))
            .bearer_auth(&t)
            .json(&json!({"name": "a", "content": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["state"], "committed");
        body["rev"].as_str().unwrap().to_string()
    };

    // Pending (leader unreachable), then kill -9 after the 202.
    link.cut();
    let pending = {
        let p = Proc::start(dir.path(), &args);
        let t = login(&http, &p.url).await;
        let r = http
            .put(format!("{}api/v1/workbooks/queued", p.url))
            .bearer_auth(&t)
            .json(&json!({"name": "q", "content": 2}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["state"], "pending");
        // While the leader stays away, the follower says so once, not once per poll.
        wait_for("several failed polls", Duration::from_secs(30), || async {
            (metric_at(&http, &p.url, "folio_poll_failures_total").await >= 5.0).then_some(())
        })
        .await;
        let log = p.log.lock().unwrap().clone();
        let unreachable = log
            .iter()
            .filter(|l| l.contains("leader unreachable"))
            .count();
        assert_eq!(unreachable, 1, "the state change is logged once: {log:#?}");
        assert!(
            !log.iter().any(|l| l.contains(SECRET)),
            "the secret never reaches a log line"
        );
        body["rev"].as_str().unwrap().to_string()
    };

    // Restart; the link heals; both edits reach every server.
    link.restore();
    let _p = Proc::start(dir.path(), &args);
    let tl = leader.admin().await;
    let to = other.admin().await;
    for (id, rev) in [("acked", &committed), ("queued", &pending)] {
        for (s, t) in [(&leader, &tl), (&other, &to)] {
            wait_for(
                &format!("{id} on {}", s.state().server_id),
                Duration::from_secs(30),
                || async {
                    let a = s.get(&format!("api/v1/workbooks/{id}"), Some(t)).await;
                    (a.status == 200 && a.body["rev"] == rev.as_str()).then_some(())
                },
            )
            .await;
        }
    }
}

#[tokio::test]
async fn a_non_boot_bully_server_with_no_boot_server_up_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    // Two addresses where nothing listens.
    let closed: Vec<String> = (0..2)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/folio", l.local_addr().unwrap())
        })
        .collect();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_folio"))
        .current_dir(dir.path())
        .args([
            "--set",
            "server.listen=127.0.0.1:0",
            "--set",
            "server.data_dir=data",
        ])
        .env("CLUSTER_MODE", "BULLY")
        .env("CLUSTER_SHARED_SECRET", SECRET)
        .env("CLUSTER_BULLY_ID", "panopticon-3")
        .env("CLUSTER_BULLY_BIND", "http://127.0.0.1:9/folio")
        .env("CLUSTER_BULLY_BOOT", closed.join(","))
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for url in &closed {
        assert!(err.contains(&format!("{url}/")), "names {url}: {err}");
    }
    assert!(err.contains("boot server"), "{err}");
}
