//! The etcd side of the benchmark: three `etcd` members (Debian's etcd-server) on loopback, driven
//! through etcd's JSON gateway (`/v3/kv/put`, `/v3/watch`, `/v3/kv/range`,
//! `/v3/cluster/member/add`) with the same value size and client count as Folio.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use super::{
    Args, Figures, Pct, STALL, free_port, http_client, in_scratch_dir, poll, rss_mb, sustained,
    workbook,
};

struct Member {
    name: String,
    client: String,
    child: Child,
    /// Where the member's own messages go.
    log: std::path::PathBuf,
}

impl Member {
    /// An error naming the member and the end of its log, once it has exited.
    fn exited(&mut self) -> Option<String> {
        let status = self.child.try_wait().ok()??;
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(5)..];
        Some(format!(
            "etcd member {} exited ({status}): {}",
            self.name,
            tail.join(" | ")
        ))
    }
}

fn b64(s: &str) -> String {
    B64.encode(s.as_bytes())
}

/// The end of the key range starting with `prefix`.
fn prefix_end(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    if let Some(last) = bytes.last_mut() {
        *last += 1;
    }
    B64.encode(bytes)
}

async fn spawn(
    root: &Path,
    name: &str,
    cluster: &str,
    state: &str,
    client: u16,
    peer: u16,
) -> Result<Member, String> {
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let log = root.join(format!("{name}.log"));
    let stderr = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let child = Command::new("etcd")
        .args([
            "--name",
            name,
            "--data-dir",
            &root.join(name).display().to_string(),
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
            "--initial-cluster",
            cluster,
            "--initial-cluster-state",
            state,
            "--initial-cluster-token",
            "folio-bench",
            "--logger",
            "zap",
            "--log-level",
            "error",
        ])
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start etcd (apt-get install etcd-server): {e}"))?;
    Ok(Member {
        name: name.into(),
        client: client_url,
        child,
        log,
    })
}

/// Waits until `member` answers healthy; fails at once if it exits.
async fn healthy(http: &reqwest::Client, member: &mut Member) -> Result<(), String> {
    let url = member.client.clone();
    poll(
        &format!("etcd at {url} to become healthy"),
        Duration::from_millis(20),
        async || {
            if let Some(e) = member.exited() {
                return Err(e);
            }
            Ok(match http.get(format!("{url}/health")).send().await {
                Ok(r) => r.json::<Value>().await.is_ok_and(|v| v["health"] == "true"),
                Err(_) => false,
            })
        },
    )
    .await
}

async fn put(http: &reqwest::Client, url: &str, key: &str, value: &str) -> Result<(), String> {
    let r = http
        .post(format!("{url}/v3/kv/put"))
        .json(&json!({"key": b64(key), "value": b64(value)}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(format!("put failed: {}", r.status()))
    }
}

async fn count(http: &reqwest::Client, url: &str, prefix: &str) -> u64 {
    let body = json!({"key": b64(prefix), "range_end": prefix_end(prefix), "count_only": true, "serializable": true});
    match http
        .post(format!("{url}/v3/kv/range"))
        .json(&body)
        .send()
        .await
    {
        Ok(r) => r
            .json::<Value>()
            .await
            .ok()
            .and_then(|v| v["count"].as_str().and_then(|c| c.parse().ok()))
            .unwrap_or(0),
        Err(_) => 0,
    }
}

/// Streams the keys of events under `prefix` seen by the member at `url`.
async fn watch(
    url: &str,
    prefix: &str,
) -> Result<tokio::sync::mpsc::UnboundedReceiver<String>, String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let body = json!({"create_request": {"key": b64(prefix), "range_end": prefix_end(prefix)}});
    // No timeout: the stream lasts as long as the phase; each event is awaited with one.
    let mut resp = reqwest::Client::new()
        .post(format!("{url}/v3/watch"))
        .json(&body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let mut buf = Vec::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                    for e in v["result"]["events"].as_array().into_iter().flatten() {
                        let key = e["kv"]["key"]
                            .as_str()
                            .and_then(|k| B64.decode(k).ok())
                            .unwrap_or_default();
                        let _ = tx.send(String::from_utf8_lossy(&key).into_owned());
                    }
                }
            }
        }
    });
    Ok(rx)
}

pub async fn run(args: &Args) -> Result<Figures, String> {
    in_scratch_dir("folio-bench-etcd", async |root| measure(args, root).await).await
}

async fn measure(args: &Args, root: &Path) -> Result<Figures, String> {
    let mut fig = Figures::default();
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let cluster: Vec<String> = (0..3)
        .map(|i| format!("e{}=http://127.0.0.1:{}", i + 1, ports[i].1))
        .collect();
    let mut members = Vec::new();
    for (i, (c, p)) in ports.iter().take(3).enumerate() {
        members.push(
            spawn(
                root,
                &format!("e{}", i + 1),
                &cluster.join(","),
                "new",
                *c,
                *p,
            )
            .await?,
        );
    }
    let http = http_client()?;
    for m in &mut members {
        healthy(&http, m).await?;
    }
    let (a, b) = (members[1].client.clone(), members[2].client.clone());
    let value = |i: usize| workbook("w", i, args.size).to_string();

    // (a) a put on member A until B's watch delivers it.
    eprintln!(
        "  (a) {} sequential puts on member A, each until B's watch sees it",
        args.edits
    );
    let mut events = watch(&b, "prop-").await?;
    let mut lat = Vec::new();
    for i in 0..(args.edits + 20) {
        let key = format!("prop-{}", i % 100);
        let t0 = Instant::now();
        put(&http, &a, &key, &value(i)).await?;
        loop {
            match tokio::time::timeout(STALL, events.recv()).await {
                Ok(Some(k)) if k == key => break,
                Ok(Some(_)) => continue,
                _ => return Err("the watch stopped".into()),
            }
        }
        if i >= 20 {
            lat.push(t0.elapsed());
        }
    }
    fig.propagation = Pct::of(lat);

    // (b) sustained puts through two members.
    eprintln!(
        "  (b) {} clients putting through two members for {} s",
        args.clients, args.seconds
    );
    let (http2, size) = (http.clone(), args.size);
    let targets = [a.clone(), b.clone()];
    sustained(
        &mut fig,
        args.clients,
        args.seconds,
        &targets,
        move |url, j, k| {
            let http = http2.clone();
            async move {
                put(
                    &http,
                    &url,
                    &format!("load-{j}-{}", k % 200),
                    &workbook("w", k, size).to_string(),
                )
                .await
                .is_ok()
            }
        },
    )
    .await;

    // (c) a fourth member joins a cluster holding `catchup` values.
    eprintln!(
        "  (c) loading {} values, then a new member joins",
        args.catchup
    );
    let per = args.catchup.div_ceil(args.clients);
    let mut tasks = Vec::new();
    for j in 0..args.clients {
        let http = http.clone();
        let url = members[j % 3].client.clone();
        let size = args.size;
        let n = args.catchup;
        tasks.push(tokio::spawn(async move {
            for k in (j * per)..((j + 1) * per).min(n) {
                put(
                    &http,
                    &url,
                    &format!("cat-{k:06}"),
                    &workbook("w", k, size).to_string(),
                )
                .await?;
            }
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    // The new member's ports are found only now, so nothing else took them in the meantime.
    let (c4, p4) = (free_port(), free_port());
    let new_peer = format!("http://127.0.0.1:{p4}");
    // etcd refuses to add a member while it judges the cluster unhealthy (right after heavy
    // load): ask again for a while.
    let mut attempts = 0;
    loop {
        let r = http
            .post(format!("{a}/v3/cluster/member/add"))
            .json(&json!({"peerURLs": [new_peer]}))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status().is_success() {
            break;
        }
        attempts += 1;
        if attempts > 60 {
            return Err(format!(
                "member add failed: {}",
                r.text().await.unwrap_or_default()
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut all_members = cluster.clone();
    all_members.push(format!("e4={new_peer}"));
    let t0 = Instant::now();
    let mut joined = spawn(root, "e4", &all_members.join(","), "existing", c4, p4).await?;
    // etcd offers no "caught up" notification: its serializable count is read every 10 ms.
    let (mut held, mut progress) = (0, Instant::now());
    loop {
        let now = count(&http, &joined.client, "cat-").await;
        if now >= args.catchup as u64 {
            break;
        }
        if let Some(e) = joined.exited() {
            return Err(e);
        }
        if now > held {
            (held, progress) = (now, Instant::now());
        } else if progress.elapsed() > STALL {
            return Err(format!(
                "the new etcd member held {held} of {} values and took no more for {} s",
                args.catchup,
                STALL.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    fig.catchup_secs = t0.elapsed().as_secs_f64();
    members.push(joined);
    for m in &members {
        fig.rss_after_catchup_mb
            .push((m.name.clone(), rss_mb(m.child.id().unwrap_or(0))));
    }
    for m in &mut members {
        let _ = m.child.kill().await;
    }
    Ok(fig)
}
