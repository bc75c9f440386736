//! `folio-bench`: the SPEC §8 benchmark. Starts a real three-server Folio cluster (FIXED mode,
//! separate `folio` processes on loopback) and measures, with 4 KB JSON workbooks:
//! (a) propagation of 1,000 sequential edits from follower A until readable on follower B,
//! observed through B's long-polled change feed; (b) sustained saves per second through both
//! followers with 16 clients for 10 s; (c) catch-up of a new follower joining 10,000 workbooks;
//! (d) bytes a follower receives when it returns after missing 1 change among 100,000;
//! (e) resident memory per server after (c) and at 100,000 workbooks;
//! (f) a one-field edit of a 2 MB workbook on follower A: bytes follower B receives and time
//! until B's change feed shows it; (g) reads per second of single workbooks, 16 clients over the
//! three servers; (h) fan-out: propagation and the leader's CPU and bytes per change with 2, 5
//! and 10 followers.
//! `--peer etcd` runs the same work against a three-member etcd cluster (Debian's etcd-server)
//! through etcd's gRPC client, and (a)–(c) once more through its JSON gateway, and prints
//! Folio/etcd ratios. Figures go to stdout as a table and to a JSON file. It prints figures; it
//! never fails on a timing.

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
    /// Also run the work against a three-member etcd cluster, through its gRPC client (and its
    /// JSON gateway for (a)–(c)), and print ratios.
    #[arg(long, value_parser = ["etcd"])]
    peer: Option<String>,
    /// Where to write the figures as JSON.
    #[arg(long, default_value = "bench-results.json")]
    out: std::path::PathBuf,
    /// Edits measured in (a).
    #[arg(long, default_value_t = 1000)]
    edits: usize,
    /// Concurrent clients in (b) and (g).
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds of load in (b) and of each read load in (g).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Workbooks the joining follower catches up with in (c); (g) reads them.
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
    /// Follower counts of the fan-out clusters in (h), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "2,5,10")]
    fanout: Vec<usize>,
    /// Edits measured at each follower count in (h).
    #[arg(long, default_value_t = 200)]
    fanout_edits: usize,
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
pub async fn in_scratch_dir<T>(
    name: &str,
    measure: impl AsyncFnOnce(&std::path::Path) -> Result<T, String>,
) -> Result<T, String> {
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

/// Reads per second and their latencies.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rate {
    pub per_sec: f64,
    pub latency: Pct,
}

impl Rate {
    pub fn json(&self) -> Value {
        json!({"per_sec": self.per_sec, "latency": self.latency.json()})
    }
}

/// (h) at one follower count.
#[derive(Debug, Clone, Default)]
pub struct Fanout {
    pub followers: usize,
    /// From the save on one follower until every other follower shows it.
    pub propagation: Pct,
    pub leader_cpu_secs_per_change: f64,
    /// Body bytes the followers received from the leader, per change.
    pub bytes_sent_per_change: f64,
}

/// What one system measured; `None` where the system or the API was not measured that way.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub propagation: Pct,
    pub writes_per_sec: f64,
    pub write_latency: Pct,
    pub catchup_secs: f64,
    pub rss_after_catchup_mb: Vec<(String, f64)>,
    pub reconnect_bytes: Option<u64>,
    pub rss_at_total_mb: Vec<(String, f64)>,
    /// (f): bytes of the workbook edited, bytes the other follower received for the edit, and
    /// milliseconds until it saw it.
    pub large_value_bytes: Option<u64>,
    pub large_edit_bytes: Option<u64>,
    pub large_edit_ms: Option<f64>,
    /// (f), etcd: what it answered to a value of `--large` bytes, when it refused it.
    pub large_refused: Option<String>,
    /// (g): reads of single workbooks (etcd: serializable), and etcd's linearizable reads.
    pub reads: Option<Rate>,
    pub linearizable_reads: Option<Rate>,
    pub fanout: Vec<Fanout>,
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
            "large_value_bytes": self.large_value_bytes,
            "large_edit_bytes": self.large_edit_bytes,
            "large_edit_ms": self.large_edit_ms,
            "large_refused": self.large_refused,
            "reads": self.reads.map(|r| r.json()),
            "linearizable_reads": self.linearizable_reads.map(|r| r.json()),
            "fanout": self.fanout.iter().map(|f| json!({
                "followers": f.followers,
                "propagation": f.propagation.json(),
                "leader_cpu_secs_per_change": f.leader_cpu_secs_per_change,
                "bytes_sent_per_change": f.bytes_sent_per_change,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Phases (b) and (g): one task per element of `clients` calls `op(state, j, k)` back to back for
/// `seconds` (`state` is that client's own: a server's URL, a connection), each call answering the
/// state back and whether it succeeded; answers the rate and latencies of the calls that succeeded.
pub async fn sustained<S, F, Fut>(clients: Vec<S>, seconds: u64, op: F) -> Rate
where
    S: Send + 'static,
    F: Fn(S, usize, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = (S, bool)> + Send,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (j, mut state) in clients.into_iter().enumerate() {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut k = 0usize;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let (back, ok) = op(state, j, k).await;
                state = back;
                if ok {
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
    Rate {
        per_sec: all.len() as f64 / seconds as f64,
        latency: Pct::of(all),
    }
}

/// Processor time (user and system) a process has used so far, in seconds.
pub fn cpu_secs(pid: u32) -> f64 {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces): state is the first, utime
            // and stime the 12th and 13th (fields 14 and 15 of proc(5)).
            let rest = s.rsplit_once(')')?.1.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
        })
        .unwrap_or(0.0);
    ticks / clock_ticks()
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`; 100 where it cannot be asked).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The `k`th of `n` items client `j` reads in (g): a stride through all of them, different per
/// client.
pub fn spread(j: usize, k: usize, n: usize) -> usize {
    (j * 7919 + k * 104_729) % n.max(1)
}

/// The sum of the samples whose line in the Prometheus text at `url` starts with `series` (a
/// name, or a name and its labels).
pub async fn scrape(http: &reqwest::Client, url: &str, series: &str) -> Result<f64, String> {
    let text = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .text()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
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

/// One line of the table: Folio's figure, etcd's through gRPC and through the JSON gateway, each
/// with Folio's ratio to it, and the target.
struct Table;

impl Table {
    fn header() {
        println!(
            "{:<46} {:>14} {:>14} {:>8} {:>14} {:>8}  target",
            "measure", "Folio", "etcd (gRPC)", "ratio", "etcd (gateway)", "ratio"
        );
    }

    fn row(name: &str, cells: [Option<String>; 3], ratios: [Option<f64>; 2], target: &str) {
        let [ours, grpc, gateway] = cells.map(|c| c.unwrap_or_else(|| "-".into()));
        // Ratios far below 1 (bytes of a delta against a whole value) keep two significant digits.
        let [r1, r2] = ratios.map(|r| match r {
            Some(r) if r < 0.1 => format!("{r:.1e}"),
            Some(r) => format!("{r:.2}"),
            None => "-".into(),
        });
        println!("{name:<46} {ours:>14} {grpc:>14} {r1:>8} {gateway:>14} {r2:>8}  {target}");
    }

    /// A row of one figure on each system, `show` formatting it; ratios are Folio's over etcd's.
    fn of(name: &str, values: [Option<f64>; 3], show: impl Fn(f64) -> String, target: &str) {
        Table::row(
            name,
            values.map(|v| v.map(&show)),
            [ratio(values[0], values[1]), ratio(values[0], values[2])],
            target,
        );
    }
}

/// Folio's figure over etcd's, when both were measured.
fn ratio(ours: Option<f64>, theirs: Option<f64>) -> Option<f64> {
    match (ours, theirs) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() => Some(a / b),
        _ => None,
    }
}

fn ms(v: f64) -> String {
    format!("{v:.2} ms")
}

fn whole(v: f64) -> String {
    format!("{v:.0}")
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
    let (e, gw) = match args.peer.as_deref() {
        Some("etcd") => {
            let mut both = Vec::new();
            for api in [etcd::Api::Grpc, etcd::Api::Gateway] {
                eprintln!("folio-bench: etcd cluster (three members on loopback), {api}");
                match etcd::run(&args, api).await {
                    Ok(e) => both.push(e),
                    Err(err) => {
                        eprintln!("folio-bench: etcd ({api}): {err}");
                        std::process::exit(1);
                    }
                }
            }
            let gw = both.pop();
            (both.pop(), gw)
        }
        _ => (None, None),
    };
    println!();
    Table::header();
    let each = |pick: &dyn Fn(&Figures) -> Option<f64>| {
        [Some(&f), e.as_ref(), gw.as_ref()].map(|x| x.and_then(pick))
    };
    for (label, pick, target) in [
        ("p50", (|p: &Pct| p.p50) as fn(&Pct) -> f64, ""),
        ("p90", |p| p.p90, ""),
        ("p99", |p| p.p99, "ratio <= 1"),
        ("max", |p| p.max, ""),
    ] {
        Table::of(
            &format!("(a) propagation {label}"),
            each(&|x| Some(pick(&x.propagation))),
            ms,
            target,
        );
    }
    Table::of(
        &format!("(b) durable writes/s ({} clients)", args.clients),
        each(&|x| Some(x.writes_per_sec)),
        whole,
        "ratio >= 2",
    );
    Table::of(
        "(b) save latency p50",
        each(&|x| Some(x.write_latency.p50)),
        ms,
        "",
    );
    Table::of(
        "(b) save latency p99",
        each(&|x| Some(x.write_latency.p99)),
        ms,
        "",
    );
    Table::of(
        &format!("(c) catch-up of {} workbooks", args.catchup),
        each(&|x| Some(x.catchup_secs)),
        |v| format!("{v:.2} s"),
        "ratio <= 1",
    );
    Table::of(
        &format!("(d) bytes after missing 1 of {}", args.total),
        [f.reconnect_bytes.map(|b| b as f64), None, None],
        |b| format!("{b:.0} B"),
        "< 65536 B",
    );
    let mib = |v: f64| format!("{v:.1} MiB");
    for (who, mb) in &f.rss_after_catchup_mb {
        Table::of(
            &format!("(e) RSS after (c), {who}"),
            [Some(*mb), None, None],
            mib,
            "",
        );
    }
    if let Some(e) = &e {
        for (who, mb) in &e.rss_after_catchup_mb {
            Table::of(
                &format!("(e) etcd RSS after (c), {who}"),
                [None, Some(*mb), None],
                mib,
                "",
            );
        }
    }
    for (who, mb) in &f.rss_at_total_mb {
        Table::of(
            &format!("(e) RSS at {} workbooks, {who}", args.total),
            [Some(*mb), None, None],
            mib,
            "< 100 MiB",
        );
    }
    let kib = |v: f64| format!("{:.0} KiB", v / 1024.0);
    Table::row(
        "(f) size of the large workbook edited",
        [
            f.large_value_bytes,
            e.as_ref().and_then(|e| e.large_value_bytes),
            None,
        ]
        .map(|b| b.map(|b| kib(b as f64))),
        [None, None],
        "",
    );
    Table::of(
        "(f) bytes B received for its 1-field edit",
        each(&|x| x.large_edit_bytes.map(|b| b as f64)),
        |b| format!("{b:.0} B"),
        "Folio < 65536 B",
    );
    Table::of(
        "(f) that edit until visible on B",
        each(&|x| x.large_edit_ms),
        ms,
        "ratio < 1",
    );
    if let Some(refused) = e.as_ref().and_then(|e| e.large_refused.as_ref()) {
        println!(
            "    etcd refused a {} KiB value: {refused}",
            args.large / 1024
        );
    }
    Table::of(
        &format!("(g) reads/s ({} clients; etcd serializable)", args.clients),
        each(&|x| x.reads.map(|r| r.per_sec)),
        whole,
        "ratio >= 2",
    );
    Table::of(
        "(g) read latency p99",
        each(&|x| x.reads.map(|r| r.latency.p99)),
        ms,
        "",
    );
    Table::of(
        "(g) etcd linearizable reads/s",
        each(&|x| x.linearizable_reads.map(|r| r.per_sec)),
        whole,
        "",
    );
    for h in &f.fanout {
        let n = h.followers;
        Table::of(
            &format!("(h) {n} followers: propagation p50"),
            [Some(h.propagation.p50), None, None],
            ms,
            "",
        );
        Table::of(
            &format!("(h) {n} followers: propagation p99"),
            [Some(h.propagation.p99), None, None],
            ms,
            "",
        );
        Table::of(
            &format!("(h) {n} followers: leader CPU per change"),
            [Some(h.leader_cpu_secs_per_change * 1000.0), None, None],
            ms,
            "",
        );
        Table::of(
            &format!("(h) {n} followers: leader bytes per change"),
            [Some(h.bytes_sent_per_change), None, None],
            |b| format!("{b:.0} B"),
            "",
        );
    }
    let ratios = |other: Option<&Figures>| {
        let o = |pick: &dyn Fn(&Figures) -> Option<f64>| ratio(pick(&f), other.and_then(pick));
        json!({
            "propagation_p99": o(&|x| Some(x.propagation.p99)),
            "writes_per_sec": o(&|x| Some(x.writes_per_sec)),
            "catchup": o(&|x| Some(x.catchup_secs)),
            "large_edit_ms": o(&|x| x.large_edit_ms),
            "reads_per_sec": o(&|x| x.reads.map(|r| r.per_sec)),
        })
    };
    let report = json!({
        "machine": machine(),
        "parameters": {"edits": args.edits, "clients": args.clients, "seconds": args.seconds, "catchup": args.catchup,
            "total": args.total, "size": args.size, "large": args.large, "fanout": args.fanout, "fanout_edits": args.fanout_edits},
        "folio": f.json(),
        "etcd": e.as_ref().map(Figures::json),
        "etcd_gateway": gw.as_ref().map(Figures::json),
        "ratios": ratios(e.as_ref()),
        "ratios_gateway": ratios(gw.as_ref()),
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
