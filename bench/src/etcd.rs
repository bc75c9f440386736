//! The etcd side of the benchmark: three `etcd` members (Debian's etcd-server) on loopback, driven
//! the way etcd's users drive it, through its gRPC API (`etcd-client`), or through its JSON
//! gateway (`/v3/kv/put`, `/v3/watch`, ...) for the row kept for continuity with earlier runs.
//! Same value bodies, sizes and client counts as the Folio side; "follower A" and "follower B" are
//! the two members that are not raft's leader, as Folio's are not its leader.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use etcd_client::{ConnectOptions, GetOptions, WatchOptions};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::sync::mpsc::UnboundedReceiver;

use super::{
    Args, Figures, Pct, Rate, STALL, free_port, http_client, in_scratch_dir, poll, rss_mb, scrape,
    spread, sustained, workbook,
};

/// How the benchmark talks to etcd.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Api {
    /// etcd's own gRPC API, through the `etcd-client` crate: how its users drive it.
    Grpc,
    /// The JSON gateway in front of it, as runs before 2026-12-03 measured.
    Gateway,
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Api::Grpc => "gRPC client",
            Api::Gateway => "JSON gateway",
        })
    }
}

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

fn b64(s: &str) -> String {
    B64.encode(s.as_bytes())
}

/// The end of the key range starting with `prefix`, for the gateway.
fn prefix_end(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    if let Some(last) = bytes.last_mut() {
        *last += 1;
    }
    B64.encode(bytes)
}

/// A gRPC connection of its own to the member at `url`.
async fn grpc(url: &str) -> Result<etcd_client::Client, String> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(STALL);
    etcd_client::Client::connect([url], Some(options))
        .await
        .map_err(|e| format!("etcd at {url}: {e}"))
}

/// A client of one member through one API (a gRPC connection of its own, or HTTP requests).
enum Conn {
    Grpc(Box<etcd_client::Client>),
    Gateway { http: reqwest::Client, url: String },
}

impl Conn {
    async fn open(api: Api, url: &str) -> Result<Conn, String> {
        match api {
            Api::Grpc => Ok(Conn::Grpc(Box::new(grpc(url).await?))),
            Api::Gateway => Ok(Conn::Gateway {
                http: http_client()?,
                url: url.into(),
            }),
        }
    }

    async fn put(&mut self, key: &str, value: String) -> Result<(), String> {
        match self {
            Conn::Grpc(c) => c
                .put(key, value, None)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Conn::Gateway { http, url } => {
                let body = json!({"key": b64(key), "value": B64.encode(value)});
                gateway_call(http, url, "kv/put", &body).await
            }
        }
    }

    /// Reads one key (serializable: this member's own copy; linearizable: confirmed with the
    /// leader); answers whether it was there.
    async fn get(&mut self, key: &str, linearizable: bool) -> Result<bool, String> {
        match self {
            Conn::Grpc(c) => {
                let options = (!linearizable).then(|| GetOptions::new().with_serializable());
                c.get(key, options)
                    .await
                    .map(|r| !r.kvs().is_empty())
                    .map_err(|e| e.to_string())
            }
            Conn::Gateway { http, url } => {
                let body = json!({"key": b64(key), "serializable": !linearizable});
                let v: Value = http
                    .post(format!("{url}/v3/kv/range"))
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?
                    .json()
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(v["kvs"].as_array().is_some_and(|k| !k.is_empty()))
            }
        }
    }

    /// How many keys under `prefix` this member holds (serializable); 0 when it cannot say.
    async fn count(&mut self, prefix: &str) -> u64 {
        match self {
            Conn::Grpc(c) => {
                let options = GetOptions::new()
                    .with_prefix()
                    .with_count_only()
                    .with_serializable();
                c.get(prefix, Some(options))
                    .await
                    .map(|r| r.count().max(0) as u64)
                    .unwrap_or(0)
            }
            Conn::Gateway { http, url } => {
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
        }
    }

    /// Streams the keys of events under `prefix` that this member delivers, once its watch is
    /// created.
    async fn watch(&mut self, prefix: &str) -> Result<UnboundedReceiver<String>, String> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        match self {
            Conn::Grpc(c) => {
                let mut stream = c
                    .watch(prefix, Some(WatchOptions::new().with_prefix()))
                    .await
                    .map_err(|e| e.to_string())?;
                // The first answer says the watch is created.
                stream.message().await.map_err(|e| e.to_string())?;
                tokio::spawn(async move {
                    while let Ok(Some(answer)) = stream.message().await {
                        for event in answer.events() {
                            if let Some(kv) = event.kv() {
                                let _ = tx.send(String::from_utf8_lossy(kv.key()).into_owned());
                            }
                        }
                    }
                });
            }
            Conn::Gateway { url, .. } => {
                let body = json!({"create_request": {"key": b64(prefix), "range_end": prefix_end(prefix)}});
                // No timeout: the stream lasts as long as the phase; each event is awaited with one.
                let mut resp = reqwest::Client::new()
                    .post(format!("{url}/v3/watch"))
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let mut buf = Vec::new();
                // The first line says the watch is created.
                while !buf.contains(&b'\n') {
                    match resp.chunk().await {
                        Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
                        _ => return Err("the watch ended before it was created".into()),
                    }
                }
                tokio::spawn(async move {
                    loop {
                        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                            let line: Vec<u8> = buf.drain(..=pos).collect();
                            let Ok(v) = serde_json::from_slice::<Value>(&line) else {
                                continue;
                            };
                            for e in v["result"]["events"].as_array().into_iter().flatten() {
                                let key = e["kv"]["key"]
                                    .as_str()
                                    .and_then(|k| B64.decode(k).ok())
                                    .unwrap_or_default();
                                let _ = tx.send(String::from_utf8_lossy(&key).into_owned());
                            }
                        }
                        match resp.chunk().await {
                            Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
                            _ => break,
                        }
                    }
                });
            }
        }
        Ok(rx)
    }

    /// Asks the cluster to add a member at `peer`.
    async fn member_add(&mut self, peer: &str) -> Result<(), String> {
        match self {
            Conn::Grpc(c) => c
                .member_add([peer], None)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Conn::Gateway { http, url } => {
                gateway_call(
                    http,
                    url,
                    "cluster/member/add",
                    &json!({"peerURLs": [peer]}),
                )
                .await
            }
        }
    }
}

/// Posts `body` to the gateway's `/v3/{path}` at `url`; an error names the status and etcd's answer.
async fn gateway_call(
    http: &reqwest::Client,
    url: &str,
    path: &str,
    body: &Value,
) -> Result<(), String> {
    let r = http
        .post(format!("{url}/v3/{path}"))
        .json(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(format!(
            "{path}: {} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        ))
    }
}

/// Waits until `events` delivers `key`; fails when the watch stops or is silent for [`STALL`].
async fn seen(events: &mut UnboundedReceiver<String>, key: &str) -> Result<(), String> {
    loop {
        match tokio::time::timeout(STALL, events.recv()).await {
            Ok(Some(k)) if k == key => return Ok(()),
            Ok(Some(_)) => continue,
            _ => return Err(format!("the watch stopped before it delivered {key}")),
        }
    }
}

/// Bytes a member has received from the other members (`etcd_network_peer_received_bytes_total`
/// summed over senders).
async fn peer_bytes_received(http: &reqwest::Client, url: &str) -> Result<f64, String> {
    scrape(
        http,
        &format!("{url}/metrics"),
        "etcd_network_peer_received_bytes_total",
    )
    .await
}

/// The client URLs of the members that are not raft's leader now, in `members`' order.
async fn followers(members: &[Member]) -> Result<Vec<String>, String> {
    let mut leader = None;
    let mut ids = Vec::new();
    for m in members {
        let status = grpc(&m.client)
            .await?
            .status()
            .await
            .map_err(|e| format!("{}: {e}", m.client))?;
        leader = leader.or(Some(status.leader()).filter(|l| *l != 0));
        ids.push(status.header().map(|h| h.member_id()).unwrap_or(0));
    }
    let leader = leader.ok_or("no etcd member names a leader")?;
    Ok(members
        .iter()
        .zip(ids)
        .filter(|(_, id)| *id != leader)
        .map(|(m, _)| m.client.clone())
        .collect())
}

pub async fn run(args: &Args, api: Api) -> Result<Figures, String> {
    in_scratch_dir("folio-bench-etcd", async |root| {
        measure(args, api, root).await
    })
    .await
}

async fn measure(args: &Args, api: Api, root: &Path) -> Result<Figures, String> {
    let mut fig = Figures::default();
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let cluster: Vec<String> = (0..3)
        .map(|i| format!("e{}=http://127.0.0.1:{}", i + 1, ports[i].1))
        .collect();
    let mut members = Vec::new();
    for (i, (c, p)) in ports.iter().enumerate() {
        let name = format!("e{}", i + 1);
        members.push(spawn(root, &name, &cluster.join(","), "new", *c, *p).await?);
    }
    let http = http_client()?;
    for m in &mut members {
        healthy(&http, m).await?;
    }
    let (a, b) = match followers(&members).await?.as_slice() {
        [a, b, ..] => (a.clone(), b.clone()),
        _ => return Err("etcd has fewer than two followers".into()),
    };
    let value = |i: usize| workbook("w", i, args.size).to_string();

    // (a) a put on member A until B's watch delivers it.
    eprintln!(
        "  (a) {} sequential puts on member A, each until B's watch sees it",
        args.edits
    );
    let mut on_a = Conn::open(api, &a).await?;
    let mut events = Conn::open(api, &b).await?.watch("prop-").await?;
    let mut lat = Vec::new();
    for i in 0..(args.edits + 20) {
        let key = format!("prop-{}", i % 100);
        let t0 = Instant::now();
        on_a.put(&key, value(i)).await?;
        seen(&mut events, &key).await?;
        if i >= 20 {
            lat.push(t0.elapsed());
        }
    }
    fig.propagation = Pct::of(lat);

    if api == Api::Grpc {
        large_edit(args, &mut fig, &http, &mut on_a, &b).await?;
    }

    // (b) sustained puts through two members, each client with a connection of its own.
    eprintln!(
        "  (b) {} clients putting through two members for {} s",
        args.clients, args.seconds
    );
    let mut conns = Vec::new();
    for j in 0..args.clients {
        conns.push(Conn::open(api, [&a, &b][j % 2]).await?);
    }
    let size = args.size;
    let rate = sustained(conns, args.seconds, move |mut conn, j, k| async move {
        let key = format!("load-{j}-{}", k % 200);
        let ok = conn
            .put(&key, workbook("w", k, size).to_string())
            .await
            .is_ok();
        (conn, ok)
    })
    .await;
    (fig.writes_per_sec, fig.write_latency) = (rate.per_sec, rate.latency);

    // (c) a fourth member joins a cluster holding `catchup` values.
    eprintln!(
        "  (c) loading {} values, then a new member joins",
        args.catchup
    );
    let per = args.catchup.div_ceil(args.clients.max(1));
    let mut tasks = Vec::new();
    for j in 0..args.clients {
        let mut conn = Conn::open(api, &members[j % 3].client).await?;
        let (size, n) = (args.size, args.catchup);
        tasks.push(tokio::spawn(async move {
            for k in (j * per)..((j + 1) * per).min(n) {
                conn.put(&format!("cat-{k:06}"), workbook("w", k, size).to_string())
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
    while let Err(e) = on_a.member_add(&new_peer).await {
        attempts += 1;
        if attempts > 60 {
            return Err(format!("member add failed: {e}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut all_members = cluster.clone();
    all_members.push(format!("e4={new_peer}"));
    let t0 = Instant::now();
    let mut joined = spawn(root, "e4", &all_members.join(","), "existing", c4, p4).await?;
    let mut on_joined = Conn::open(api, &joined.client).await?;
    // etcd offers no "caught up" notification: its serializable count is read every 10 ms.
    let (mut held, mut progress) = (0, Instant::now());
    loop {
        let now = on_joined.count("cat-").await;
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

    if api == Api::Grpc {
        let urls: Vec<String> = members[..3].iter().map(|m| m.client.clone()).collect();
        fig.reads = Some(reads(args, &urls, false).await?);
        fig.linearizable_reads = Some(reads(args, &urls, true).await?);
    }
    for m in &mut members {
        let _ = m.child.kill().await;
    }
    Ok(fig)
}

/// (f): a value of `--large` bytes put on A; if etcd refuses it, the largest workbook it accepts
/// (found by halving the gap to 16 KiB); then one field of that workbook changes on A, timed until
/// B's watch delivers it, with the bytes B received from the other members meanwhile.
async fn large_edit(
    args: &Args,
    fig: &mut Figures,
    http: &reqwest::Client,
    on_a: &mut Conn,
    b: &str,
) -> Result<(), String> {
    eprintln!(
        "  (f) a one-field edit of a {} KiB value on member A, until B's watch sees it",
        args.large / 1024
    );
    let mut events = Conn::open(Api::Grpc, b).await?.watch("large").await?;
    let mut body = workbook("large", 1, args.large);
    if let Err(refused) = on_a.put("large", body.to_string()).await {
        fig.large_refused = Some(refused);
        let (mut lo, mut hi) = (0, args.large);
        while hi - lo > 16 << 10 {
            let mid = (lo + hi) / 2;
            let candidate = workbook("large", 1, mid);
            if on_a.put("large", candidate.to_string()).await.is_ok() {
                (lo, body) = (mid, candidate);
                seen(&mut events, "large").await?;
            } else {
                hi = mid;
            }
        }
        if lo == 0 {
            return Err("etcd accepted no large value".into());
        }
    } else {
        seen(&mut events, "large").await?;
    }
    fig.large_value_bytes = Some(body.to_string().len() as u64);
    let edited = folio_sample::edited(&body, "Revenue by region, this quarter").to_string();
    let before = peer_bytes_received(http, b).await?;
    let t0 = Instant::now();
    on_a.put("large", edited).await?;
    seen(&mut events, "large").await?;
    fig.large_edit_ms = Some(t0.elapsed().as_secs_f64() * 1000.0);
    let after = peer_bytes_received(http, b).await?;
    fig.large_edit_bytes = Some((after - before).max(0.0) as u64);
    Ok(())
}

/// (g): `clients` connections spread over the members at `urls`, each reading single values of
/// (c)'s for `seconds`.
async fn reads(args: &Args, urls: &[String], linearizable: bool) -> Result<Rate, String> {
    eprintln!(
        "  (g) {} clients reading single values ({}) through three members for {} s",
        args.clients,
        if linearizable {
            "linearizable"
        } else {
            "serializable"
        },
        args.seconds
    );
    let mut conns = Vec::new();
    for j in 0..args.clients {
        conns.push(Conn::open(Api::Grpc, &urls[j % urls.len()]).await?);
    }
    let n = args.catchup;
    Ok(
        sustained(conns, args.seconds, move |mut conn, j, k| async move {
            let key = format!("cat-{:06}", spread(j, k, n));
            let ok = conn.get(&key, linearizable).await == Ok(true);
            (conn, ok)
        })
        .await,
    )
}
