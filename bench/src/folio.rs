//! The Folio side of the benchmark: `folio` processes on loopback in FIXED mode.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::process::{Child, Command};

use super::{
    Args, Fanout, Figures, Pct, STALL, cpu_secs, free_port, http_client, in_scratch_dir, poll,
    rss_mb, scrape, spread, sustained, workbook,
};

const SECRET: &str = "folio-bench-shared-secret";
const PASSWORD: &str = "folio-bench-admin";

/// One `folio` process.
struct Server {
    name: String,
    url: String,
    args: Vec<String>,
    child: Child,
}

fn binary() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = me.with_file_name("folio");
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!(
            "{} not found: build it (cargo build --release)",
            bin.display()
        ))
    }
}

async fn spawn(root: &Path, name: &str, leader: Option<&str>) -> Result<Server, String> {
    let port = free_port();
    let mut args = vec![
        format!("server.listen=127.0.0.1:{port}"),
        format!("server.data_dir={}", root.join(name).display()),
        format!("server.id={name}"),
        "cluster.mode=FIXED".into(),
        format!("cluster.shared.secret={SECRET}"),
        "auth.admin.user=admin".into(),
        format!("auth.admin.password={PASSWORD}"),
        "log.level=warn".into(),
        "server.drain.grace=10ms".into(),
    ];
    if let Some(l) = leader {
        args.push(format!("cluster.fixed.leader={l}"));
    }
    let args: Vec<String> = args
        .into_iter()
        .flat_map(|a| ["--set".to_string(), a])
        .collect();
    let mut child = start(&args).await?;
    let url = format!("http://127.0.0.1:{port}/");
    wait_ready(&url, &mut child).await?;
    Ok(Server {
        name: name.into(),
        url,
        args,
        child,
    })
}

async fn start(args: &[String]) -> Result<Child, String> {
    Command::new(binary()?)
        .args(args)
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start folio: {e}"))
}

/// Waits until the server `child` at `url` answers ready; fails at once if it exits.
async fn wait_ready(url: &str, child: &mut Child) -> Result<(), String> {
    let http = http_client()?;
    poll(
        &format!("{url} to become ready"),
        Duration::from_millis(20),
        async || {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("the folio server for {url} exited ({status})"));
            }
            Ok(http
                .get(format!("{url}ready"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success()))
        },
    )
    .await
}

async fn stop(s: &mut Server) {
    if let Some(pid) = s.child.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), s.child.wait()).await;
}

async fn login(http: &reqwest::Client, url: &str) -> Result<String, String> {
    let v: Value = http
        .post(format!("{url}api/v1/login"))
        .json(&json!({"username": "admin", "password": PASSWORD}))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    v["token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("login failed: {v}"))
}

/// Waits until the session `token` (made on another server) has reached the server at `url`.
async fn accepted(http: &reqwest::Client, url: &str, token: &str) -> Result<(), String> {
    poll(
        &format!("{url} to accept the session"),
        Duration::from_millis(5),
        async || {
            let r = http
                .get(format!("{url}api/v1/me"))
                .bearer_auth(token)
                .send()
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            Ok(r.status().is_success())
        },
    )
    .await
}

/// Long-polls a server's change feed from `since` until `done` says so; answers the new cursor.
/// Fails when the feed brings nothing new for [`STALL`].
async fn follow_changes(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    mut since: u64,
    mut done: impl FnMut(&Value) -> bool,
) -> Result<u64, String> {
    let mut progress = Instant::now();
    loop {
        let v = changes_page(http, url, token, since, 10_000).await?;
        let next = v["next"].as_u64().unwrap_or(since);
        if next != since {
            progress = Instant::now();
        } else if progress.elapsed() > STALL {
            return Err(format!(
                "the change feed of {url} brought nothing new for {} s (at {since})",
                STALL.as_secs()
            ));
        }
        since = next;
        let mut finished = false;
        for c in v["changes"].as_array().into_iter().flatten() {
            finished |= done(c);
        }
        if finished {
            return Ok(since);
        }
    }
}

/// A series of the server's metrics; 0 when it cannot be read.
async fn metric(http: &reqwest::Client, url: &str, series: &str) -> f64 {
    scrape(http, &format!("{url}metrics"), series)
        .await
        .unwrap_or(0.0)
}

/// Imports `n` generated workbooks `prefix-0..n` into `url`, in chunks.
async fn import(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    prefix: &str,
    n: usize,
    size: usize,
) -> Result<(), String> {
    let chunk = 5000;
    let mut i = 0;
    while i < n {
        let mut body = String::from(
            "{\"folio_export\":1,\"server\":\"bench\",\"exported_at\":\"2026-01-01T00:00:00Z\"}\n",
        );
        for k in i..(i + chunk).min(n) {
            let w = workbook(&format!("{prefix}-{k}"), k, size);
            let rev = folio_store::item::next_rev(
                None,
                w["name"].as_str().unwrap_or(""),
                false,
                &w["content"],
            );
            let item = json!({"id": format!("{prefix}-{k}"), "name": w["name"], "content": w["content"], "rev": rev,
                "updated_at": "2026-01-01T00:00:00Z", "updated_by": "bench", "origin": "bench", "ancestors": []});
            body.push_str(&json!({"collection": "workbooks", "item": item}).to_string());
            body.push('\n');
        }
        let r = http
            .post(format!("{url}api/v1/import"))
            .bearer_auth(token)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!(
                "import failed: {}",
                r.text().await.unwrap_or_default()
            ));
        }
        i += chunk;
    }
    Ok(())
}

/// Waits until `url` holds `expected` workbooks, following its change feed from the start.
async fn holds(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    expected: usize,
) -> Result<u64, String> {
    let mut seen = std::collections::HashSet::new();
    follow_changes(http, url, token, 0, |c| {
        if c["collection"] == "workbooks" && c["deleted"] != true {
            seen.insert(c["id"].as_str().unwrap_or("").to_string());
        }
        seen.len() >= expected
    })
    .await
}

pub async fn run(args: &Args) -> Result<Figures, String> {
    let mut fig = in_scratch_dir("folio-bench", async |root| measure(args, root).await).await?;
    for &n in &args.fanout {
        eprintln!(
            "  (h) a leader and {n} followers: {} edits on one follower, each until every other follower shows it",
            args.fanout_edits
        );
        let h = in_scratch_dir("folio-bench-fanout", async |root| {
            fanout(args, n, root).await
        })
        .await?;
        fig.fanout.push(h);
    }
    Ok(fig)
}

/// (h): a leader and `n` followers; edits on the first follower, each timed until every other
/// follower's change feed shows it (with one follower, the leader's), while the leader's CPU time
/// and the bytes its followers receive from it are counted.
async fn fanout(args: &Args, n: usize, root: &Path) -> Result<Fanout, String> {
    let leader = spawn(root, "leader", None).await?;
    let mut followers = Vec::new();
    for i in 0..n.max(1) {
        followers.push(spawn(root, &format!("follower-{i}"), Some(&leader.url)).await?);
    }
    let http = http_client()?;
    let token = login(&http, &leader.url).await?;
    for s in &followers {
        accepted(&http, &s.url, &token).await?;
    }
    let writer = followers[0].url.clone();
    let watched: Vec<String> = if followers.len() > 1 {
        followers[1..].iter().map(|s| s.url.clone()).collect()
    } else {
        vec![leader.url.clone()]
    };
    let mut cursors = Vec::new();
    for url in &watched {
        cursors.push(last_seq(&http, url, &token).await?);
    }
    let received = async |http: &reqwest::Client| {
        let mut sum = 0.0;
        for s in &followers {
            sum += metric(http, &s.url, "folio_peer_bytes_received_total").await;
        }
        sum
    };
    let warmup = 10;
    let (mut lat, mut cpu0, mut bytes0) = (Vec::new(), 0.0, 0.0);
    let leader_pid = leader.child.id().unwrap_or(0);
    for i in 0..(args.fanout_edits + warmup) {
        if i == warmup {
            (cpu0, bytes0) = (cpu_secs(leader_pid), received(&http).await);
        }
        let id = format!("fan-{}", i % 100);
        let body = workbook(&id, i, args.size);
        let t0 = Instant::now();
        let rev = save(&http, &writer, &token, &id, &body).await?;
        let waits = watched.iter().zip(&cursors).map(|(url, &since)| {
            let (http, token, id, rev) = (&http, &token, &id, &rev);
            async move {
                follow_changes(http, url, token, since, |c| {
                    c["id"] == id.as_str() && c["rev"] == rev.as_str()
                })
                .await
            }
        });
        let results = futures_util::future::join_all(waits).await;
        for (cursor, r) in cursors.iter_mut().zip(results) {
            *cursor = r?;
        }
        if i >= warmup {
            lat.push(t0.elapsed());
        }
    }
    let edits = args.fanout_edits.max(1) as f64;
    let h = Fanout {
        followers: n,
        propagation: Pct::of(lat),
        leader_cpu_secs_per_change: (cpu_secs(leader_pid) - cpu0) / edits,
        bytes_sent_per_change: (received(&http).await - bytes0) / edits,
    };
    for mut s in followers.into_iter().rev() {
        stop(&mut s).await;
    }
    let mut leader = leader;
    stop(&mut leader).await;
    Ok(h)
}

async fn measure(args: &Args, root: &Path) -> Result<Figures, String> {
    let mut fig = Figures::default();
    let leader = spawn(root, "leader", None).await?;
    let a = spawn(root, "follower-a", Some(&leader.url)).await?;
    let mut b = spawn(root, "follower-b", Some(&leader.url)).await?;
    let http = http_client()?;
    let token = login(&http, &leader.url).await?;
    for s in [&a, &b] {
        accepted(&http, &s.url, &token).await?;
    }

    // (a) propagation A -> B, observed through B's long-polled change feed.
    eprintln!(
        "  (a) {} sequential edits on follower A, each until readable on follower B",
        args.edits
    );
    let watch = http_client()?;
    let mut cursor = last_seq(&watch, &b.url, &token).await?;
    let mut lat = Vec::with_capacity(args.edits);
    for i in 0..(args.edits + 20) {
        let id = format!("prop-{}", i % 100);
        let body = workbook(&id, i, args.size);
        let t0 = Instant::now();
        let rev = save(&http, &a.url, &token, &id, &body).await?;
        cursor = follow_changes(&watch, &b.url, &token, cursor, |c| {
            c["id"] == id.as_str() && c["rev"] == rev.as_str()
        })
        .await?;
        if i >= 20 {
            lat.push(t0.elapsed());
        }
    }
    fig.propagation = Pct::of(lat);

    // (f) a one-field edit of a large workbook made on A, until B's change feed shows it.
    eprintln!(
        "  (f) a one-field edit of a {} KiB workbook on follower A, until visible on B",
        args.large / 1024
    );
    let large = workbook("large", 1, args.large);
    fig.large_value_bytes = Some(large.to_string().len() as u64);
    let rev = save(&http, &a.url, &token, "large", &large).await?;
    cursor = follow_changes(&watch, &b.url, &token, cursor, |c| {
        c["id"] == "large" && c["rev"] == rev.as_str()
    })
    .await?;
    let before = metric(&http, &b.url, "folio_peer_bytes_received_total").await;
    let edited = folio_sample::edited(&large, "Revenue by region, this quarter");
    let t0 = Instant::now();
    let rev = save(&http, &a.url, &token, "large", &edited).await?;
    follow_changes(&watch, &b.url, &token, cursor, |c| {
        c["id"] == "large" && c["rev"] == rev.as_str()
    })
    .await?;
    fig.large_edit_ms = Some(t0.elapsed().as_secs_f64() * 1000.0);
    let after = metric(&http, &b.url, "folio_peer_bytes_received_total").await;
    fig.large_edit_bytes = Some((after - before).max(0.0) as u64);

    // (b) sustained durable saves through both followers.
    eprintln!(
        "  (b) {} clients saving through both followers for {} s",
        args.clients, args.seconds
    );
    let (http2, token2, size) = (http.clone(), token.clone(), args.size);
    let targets = (0..args.clients)
        .map(|j| [&a.url, &b.url][j % 2].clone())
        .collect();
    let rate = sustained(targets, args.seconds, move |url, j, k| {
        let (http, token) = (http2.clone(), token2.clone());
        async move {
            let id = format!("load-{j}-{}", k % 200);
            let body = workbook(&id, k, size);
            let ok = match http
                .put(format!("{url}api/v1/workbooks/{id}"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
            {
                Ok(r) => {
                    r.status().is_success()
                        && r.json::<Value>()
                            .await
                            .is_ok_and(|v| v["state"] == "committed")
                }
                Err(_) => false,
            };
            (url, ok)
        }
    })
    .await;
    (fig.writes_per_sec, fig.write_latency) = (rate.per_sec, rate.latency);

    // (c) a new follower joins a cluster holding `catchup` workbooks.
    eprintln!("  (c) a new follower joins {} workbooks", args.catchup);
    import(&http, &leader.url, &token, "cat", args.catchup, args.size).await?;
    let expected =
        metric(&http, &leader.url, "folio_items{collection=\"workbooks\"}").await as usize;
    // The cluster holds them once the followers do too (as an etcd put is committed by a quorum
    // and etcd adds a member only to a cluster it judges healthy): the join is timed alone.
    for s in [&a, &b] {
        holds(&http, &s.url, &token, expected).await?;
    }
    let t0 = Instant::now();
    let c = spawn(root, "follower-c", Some(&leader.url)).await?;
    accepted(&http, &c.url, &token).await?;
    holds(&http, &c.url, &token, expected).await?;
    fig.catchup_secs = t0.elapsed().as_secs_f64();
    for s in [&leader, &a, &b, &c] {
        fig.rss_after_catchup_mb
            .push((s.name.clone(), rss_mb(s.child.id().unwrap_or(0))));
    }

    // (g) reads of single workbooks through the three servers of (a)-(b).
    eprintln!(
        "  (g) {} clients reading single workbooks through the three servers for {} s",
        args.clients, args.seconds
    );
    let (http2, token2, n) = (http.clone(), token.clone(), args.catchup);
    let targets = (0..args.clients)
        .map(|j| [&leader.url, &a.url, &b.url][j % 3].clone())
        .collect();
    fig.reads = Some(
        sustained(targets, args.seconds, move |url, j, k| {
            let (http, token) = (http2.clone(), token2.clone());
            async move {
                let id = format!("cat-{}", spread(j, k, n));
                let ok = match http
                    .get(format!("{url}api/v1/workbooks/{id}"))
                    .bearer_auth(&token)
                    .send()
                    .await
                {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                (url, ok)
            }
        })
        .await,
    );

    // (d) a follower returns after missing one change among `total`.
    if args.total > expected {
        eprintln!("  (d) growing to {} workbooks", args.total);
        import(
            &http,
            &leader.url,
            &token,
            "bulk",
            args.total - expected,
            args.size,
        )
        .await?;
    }
    let total = metric(&http, &leader.url, "folio_items{collection=\"workbooks\"}").await as usize;
    for s in [&a, &b, &c] {
        holds(&http, &s.url, &token, total).await?;
    }
    eprintln!("  (d) follower B stops, one change is made, B returns");
    let last = last_seq(&http, &b.url, &token).await?;
    stop(&mut b).await;
    let r = http
        .put(format!("{}api/v1/workbooks/bulk-7", leader.url))
        .bearer_auth(&token)
        .json(&workbook("bulk-7", 7_000_007, args.size))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let rev = r.json::<Value>().await.map_err(|e| e.to_string())?["rev"]
        .as_str()
        .unwrap_or("")
        .to_string();
    b.child = start(&b.args).await?;
    wait_ready(&b.url, &mut b.child).await?;
    follow_changes(&http, &b.url, &token, last, |c| {
        c["id"] == "bulk-7" && c["rev"] == rev.as_str()
    })
    .await?;
    fig.reconnect_bytes =
        Some(metric(&http, &b.url, "folio_peer_bytes_received_total").await as u64);

    // (e) resident memory at `total` workbooks.
    for s in [&leader, &a, &b, &c] {
        fig.rss_at_total_mb
            .push((s.name.clone(), rss_mb(s.child.id().unwrap_or(0))));
    }
    for mut s in [c, b, a, leader] {
        stop(&mut s).await;
    }
    Ok(fig)
}

/// Saves workbook `id` on the server at `url`; answers the revision.
async fn save(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    id: &str,
    body: &Value,
) -> Result<String, String> {
    let r = http
        .put(format!("{url}api/v1/workbooks/{id}"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!(
            "save of {id} failed: {}",
            r.text().await.unwrap_or_default()
        ));
    }
    Ok(r.json::<Value>().await.map_err(|e| e.to_string())?["rev"]
        .as_str()
        .unwrap_or("")
        .to_string())
}

/// The server's latest change-log position.
async fn last_seq(http: &reqwest::Client, url: &str, token: &str) -> Result<u64, String> {
    let mut since = 0;
    loop {
        let v = changes_page(http, url, token, since, 0).await?;
        let next = v["next"].as_u64().unwrap_or(since);
        if v["more"] != true || next == since {
            return Ok(next);
        }
        since = next;
    }
}

/// One answer of a server's change feed after `since`, waiting up to `wait_ms` for a change.
async fn changes_page(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    since: u64,
    wait_ms: u64,
) -> Result<Value, String> {
    let r = http
        .get(format!(
            "{url}api/v1/changes?since={since}&limit=1000&wait_ms={wait_ms}"
        ))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| format!("change feed of {url}: {e}"))?;
    let status = r.status();
    let body = r
        .text()
        .await
        .map_err(|e| format!("change feed of {url}: {e}"))?;
    if !status.is_success() {
        return Err(format!("change feed of {url}: {status} {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("change feed of {url}: {e}: {body}"))
}
