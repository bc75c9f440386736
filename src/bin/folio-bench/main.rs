//! `folio-bench`: the SPEC §8 benchmark. Starts a real three-server Folio cluster (FIXED mode,
//! separate `folio` processes on loopback) and measures, with 4 KB JSON workbooks:
//! (a) propagation of 1,000 sequential edits from follower A until readable on follower B,
//! observed through B's long-polled change feed; (b) sustained saves per second through both
//! followers with 16 clients for 10 s; (c) catch-up of a new follower joining 10,000 workbooks;
//! (d) bytes a follower receives when it returns after missing 1 change among 100,000;
//! (e) resident memory per server after (c) and at 100,000 workbooks;
//! (f) a one-field edit of a 2 MB workbook on follower A: bytes follower B receives and time
//! until B's change feed shows it.
//! `--peer etcd` runs (a)–(c) against a three-member etcd cluster (Debian's etcd-server) with the
//! same value size and client count and prints Folio/etcd ratios. Figures go to stdout as a
//! table and to a JSON file. It prints figures; it never fails on a timing.

mod etcd;
mod folio;

use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser, Clone)]
#[command(
    name = "folio-bench",
    about = "Benchmarks a local three-server Folio cluster (and optionally etcd)"
)]
pub struct Args {
    /// Also run (a)–(c) against a three-member etcd cluster and print ratios.
    #[arg(long, value_parser = ["etcd"])]
    peer: Option<String>,
    /// Where to write the figures as JSON.
    #[arg(long, default_value = "bench-results.json")]
    out: std::path::PathBuf,
    /// Edits measured in (a).
    #[arg(long, default_value_t = 1000)]
    edits: usize,
    /// Concurrent clients in (b).
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds of load in (b).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Workbooks the joining follower catches up with in (c).
    #[arg(long, default_value_t = 10_000)]
    catchup: usize,
    /// Workbooks in the store for (d) and (e).
    #[arg(long, default_value_t = 100_000)]
    total: usize,
    /// Bytes of each workbook's JSON.
    #[arg(long, default_value_t = 4096)]
    size: usize,
    /// Bytes of the large workbook's JSON in (f).
    #[arg(long, default_value_t = 2 << 20)]
    large: usize,
}

/// How long a wait (a request, a server starting, a follower catching up) may go without
/// progress before the benchmark stops with an error rather than hanging.
pub const STALL: Duration = Duration::from_secs(60);

/// An HTTP client with a pool for concurrent clients, each request bounded by [`STALL`].
pub fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(STALL)
        .build()
        .map_err(|e| e.to_string())
}

/// Calls `check` every `every` until it answers true (done) or an error (given up at once), for at
/// most [`STALL`]; then fails saying the benchmark waited for `what`.
pub async fn poll(
    what: &str,
    every: Duration,
    mut check: impl AsyncFnMut() -> Result<bool, String>,
) -> Result<(), String> {
    let until = Instant::now() + STALL;
    loop {
        if check().await? {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(format!("waited {} s for {what}", STALL.as_secs()));
        }
        tokio::time::sleep(every).await;
    }
}

/// Runs `measure` in a fresh directory under the system's temporary directory, removed afterwards.
pub async fn in_scratch_dir(
    name: &str,
    measure: impl AsyncFnOnce(&std::path::Path) -> Result<Figures, String>,
) -> Result<Figures, String> {
    let root = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    let result = measure(&root).await;
    let _ = std::fs::remove_dir_all(&root);
    result
}

/// A workbook body of about `size` bytes (4 KB by default), shaped like a real dashboard
/// definition (`folio-sample`), so compression and deltas are measured honestly.
pub fn workbook(name: &str, i: usize, size: usize) -> Value {
    folio_sample::workbook(name, i as u64, size)
}

/// Percentiles of latencies, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pct {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub n: usize,
}

impl Pct {
    pub fn of(mut v: Vec<Duration>) -> Pct {
        if v.is_empty() {
            return Pct::default();
        }
        v.sort();
        let at = |q: f64| {
            let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
            v[i].as_secs_f64() * 1000.0
        };
        Pct {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: at(1.0),
            n: v.len(),
        }
    }
    pub fn json(&self) -> Value {
        json!({"p50_ms": self.p50, "p90_ms": self.p90, "p99_ms": self.p99, "max_ms": self.max, "n": self.n})
    }
}

/// What one system measured.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub propagation: Pct,
    pub writes_per_sec: f64,
    pub write_latency: Pct,
    pub catchup_secs: f64,
    pub rss_after_catchup_mb: Vec<(String, f64)>,
    pub reconnect_bytes: Option<u64>,
    pub rss_at_total_mb: Vec<(String, f64)>,
    /// (f): bytes the other follower received for the edit, and milliseconds until it saw it.
    pub large_edit_bytes: Option<u64>,
    pub large_edit_ms: Option<f64>,
}

impl Figures {
    fn json(&self) -> Value {
        json!({
            "propagation": self.propagation.json(),
            "writes_per_sec": self.writes_per_sec,
            "write_latency": self.write_latency.json(),
            "catchup_secs": self.catchup_secs,
            "rss_after_catchup_mb": self.rss_after_catchup_mb,
            "reconnect_bytes": self.reconnect_bytes,
            "rss_at_total_mb": self.rss_at_total_mb,
            "large_edit_bytes": self.large_edit_bytes,
            "large_edit_ms": self.large_edit_ms,
        })
    }
}

/// Phase (b): `clients` tasks call `op(client, n)` back to back for `seconds`, client `j` against
/// `targets[j % targets.len()]`; the throughput and latencies of the calls that succeeded fill
/// `fig`.
pub async fn sustained<F, Fut>(
    fig: &mut Figures,
    clients: usize,
    seconds: u64,
    targets: &[String],
    op: F,
) where
    F: Fn(String, usize, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for j in 0..clients {
        let target = targets[j % targets.len()].clone();
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut k = 0usize;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                if op(target.clone(), j, k).await {
                    lat.push(t0.elapsed());
                }
                k += 1;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    fig.writes_per_sec = all.len() as f64 / seconds as f64;
    fig.write_latency = Pct::of(all);
}

/// Resident memory of a process, in MiB.
pub fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.to_string())
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    json!({"cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "cpu": cpu, "memory_gib": (mem * 10.0).round() / 10.0,
           "os": std::fs::read_to_string("/etc/debian_version").map(|v| format!("Debian {}", v.trim())).unwrap_or_default()})
}

fn row(name: &str, folio: String, etcd: Option<String>, ratio: Option<f64>, target: &str) {
    println!(
        "{name:<44} {folio:>16} {:>16} {:>10}  {target}",
        etcd.unwrap_or_else(|| "-".into()),
        ratio
            .map(|r| format!("{r:.2}"))
            .unwrap_or_else(|| "-".into())
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = Args::parse();
    let started = Instant::now();
    eprintln!("folio-bench: Folio cluster (FIXED, three processes on loopback)");
    let f = match folio::run(&args).await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("folio-bench: {e}");
            std::process::exit(1);
        }
    };
    let e = match args.peer.as_deref() {
        Some("etcd") => {
            eprintln!("folio-bench: etcd cluster (three members on loopback)");
            match etcd::run(&args).await {
                Ok(e) => Some(e),
                Err(err) => {
                    eprintln!("folio-bench: etcd: {err}");
                    std::process::exit(1);
                }
            }
        }
        _ => None,
    };
    println!();
    println!(
        "{:<44} {:>16} {:>16} {:>10}  target",
        "measure", "Folio", "etcd", "Folio/etcd"
    );
    let ms = |v: f64| format!("{v:.2} ms");
    let ratio = |a: f64, b: Option<f64>| b.filter(|b| *b > 0.0).map(|b| a / b);
    // A row of milliseconds, with etcd's figure and the ratio when there is one.
    let ms_row = |label: &str, ours: f64, theirs: Option<f64>, target: &str| {
        row(label, ms(ours), theirs.map(ms), ratio(ours, theirs), target)
    };
    let p = &f.propagation;
    let ep = e.as_ref().map(|e| e.propagation);
    ms_row("(a) propagation p50", p.p50, ep.map(|x| x.p50), "");
    ms_row("(a) propagation p90", p.p90, ep.map(|x| x.p90), "");
    ms_row(
        "(a) propagation p99",
        p.p99,
        ep.map(|x| x.p99),
        "ratio <= 1",
    );
    ms_row("(a) propagation max", p.max, ep.map(|x| x.max), "");
    let ew = e.as_ref().map(|e| e.writes_per_sec);
    row(
        &format!("(b) durable writes/s ({} clients)", args.clients),
        format!("{:.0}", f.writes_per_sec),
        ew.map(|x| format!("{x:.0}")),
        ratio(f.writes_per_sec, ew),
        "ratio >= 2",
    );
    let el = e.as_ref().map(|e| e.write_latency);
    ms_row(
        "(b) save latency p50",
        f.write_latency.p50,
        el.map(|x| x.p50),
        "",
    );
    ms_row(
        "(b) save latency p99",
        f.write_latency.p99,
        el.map(|x| x.p99),
        "",
    );
    let ec = e.as_ref().map(|e| e.catchup_secs);
    row(
        &format!("(c) catch-up of {} workbooks", args.catchup),
        format!("{:.2} s", f.catchup_secs),
        ec.map(|x| format!("{x:.2} s")),
        ratio(f.catchup_secs, ec),
        "ratio <= 1",
    );
    row(
        &format!("(d) bytes after missing 1 of {}", args.total),
        f.reconnect_bytes
            .map(|b| format!("{b} B"))
            .unwrap_or_else(|| "-".into()),
        None,
        None,
        "< 65536 B",
    );
    for (who, mb) in &f.rss_after_catchup_mb {
        row(
            &format!("(e) RSS after (c), {who}"),
            format!("{mb:.1} MiB"),
            None,
            None,
            "",
        );
    }
    if let Some(e) = &e {
        for (who, mb) in &e.rss_after_catchup_mb {
            row(
                &format!("(e) etcd RSS after (c), {who}"),
                "-".into(),
                Some(format!("{mb:.1} MiB")),
                None,
                "",
            );
        }
    }
    for (who, mb) in &f.rss_at_total_mb {
        row(
            &format!("(e) RSS at {} workbooks, {who}", args.total),
            format!("{mb:.1} MiB"),
            None,
            None,
            "< 100 MiB",
        );
    }
    row(
        &format!("(f) bytes for a 1-field edit of {} KiB", args.large / 1024),
        f.large_edit_bytes
            .map(|b| format!("{b} B"))
            .unwrap_or_else(|| "-".into()),
        None,
        None,
        "< 65536 B",
    );
    ms_row(
        "(f) that edit until visible on B",
        f.large_edit_ms.unwrap_or(f64::NAN),
        None,
        "",
    );
    let report = json!({
        "machine": machine(),
        "parameters": {"edits": args.edits, "clients": args.clients, "seconds": args.seconds, "catchup": args.catchup, "total": args.total, "size": args.size, "large": args.large},
        "folio": f.json(),
        "etcd": e.as_ref().map(Figures::json),
        "ratios": {
            "propagation_p99": ratio(p.p99, ep.map(|x| x.p99)),
            "writes_per_sec": ratio(f.writes_per_sec, ew),
            "catchup": ratio(f.catchup_secs, ec),
        },
        "wall_secs": started.elapsed().as_secs_f64(),
    });
    match std::fs::write(
        &args.out,
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    ) {
        Ok(()) => println!("\nfigures written to {}", args.out.display()),
        Err(err) => eprintln!("folio-bench: cannot write {}: {err}", args.out.display()),
    }
}
