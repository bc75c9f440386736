//! The benchmark command (SPEC §8) at a small scale: it starts its own three-server Folio cluster
//! on loopback (and, with `--peer etcd`, three-member etcd clusters driven through gRPC and the
//! JSON gateway) and writes every figure. Timings are never asserted, only that each figure was
//! measured and is coherent. The `folio` binary it starts is the workspace's, built beside it
//! (`cargo nextest run --workspace`).

use serde_json::Value;

/// The small scale both tests run at: 5 edits in (a), 2 clients for 1 s, 40 workbooks to catch up.
const SMALL: &[&str] = &[
    "--edits",
    "5",
    "--seconds",
    "1",
    "--clients",
    "2",
    "--catchup",
    "40",
];

/// Runs `folio-bench` with the groups of arguments `args` and a figures file; asserts it
/// succeeds; answers its table and figures.
async fn bench(args: &[&[&str]]) -> (String, Value) {
    let args = args.concat();
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_folio-bench"));
    let folio = exe.with_file_name("folio");
    assert!(
        folio.exists(),
        "{} is missing: run the tests of the whole workspace (cargo nextest run --workspace)",
        folio.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("figures.json");
    let run = tokio::process::Command::new(exe)
        .args(&args)
        .arg("--out")
        .arg(&out)
        .output()
        .await
        .unwrap();
    assert!(
        run.status.success(),
        "folio-bench {args:?}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let figures = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    (String::from_utf8_lossy(&run.stdout).into_owned(), figures)
}

fn positive(v: &Value, what: &str) {
    assert!(v.as_f64().is_some_and(|x| x > 0.0), "{what}: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folio_bench_measures_every_figure_of_a_small_cluster() {
    let (items, size) = (60, 512);
    let (table, figures) = bench(&[
        SMALL,
        &["--total", &items.to_string(), "--size", &size.to_string()],
        &[
            "--large",
            "262144",
            "--fanout",
            "2,3",
            // Enough saves that the leader's CPU time, counted in clock ticks, is more than none.
            "--fanout-edits",
            "12",
        ],
    ])
    .await;
    for row in [
        "(a) propagation p99",
        "(b) durable writes/s",
        "(c) catch-up",
        "(d) bytes",
        "(f) bytes",
        "(f) that edit",
        "(g) reads/s",
        "(h) 2 followers: propagation p99",
        "(h) 3 followers: leader CPU per change",
        "(h) 3 followers: leader bytes per change",
    ] {
        assert!(table.contains(row), "the table has {row}: {table}");
    }
    let f = &figures["folio"];
    assert_eq!(f["propagation"]["n"], 5, "{f}");
    positive(&f["propagation"]["p99_ms"], "(a)");
    positive(&f["writes_per_sec"], "(b)");
    positive(&f["write_latency"]["n"], "(b) latencies");
    positive(&f["catchup_secs"], "(c)");
    // (d): the returning follower was sent the one change, not the store's content again.
    let bytes = f["reconnect_bytes"].as_u64().unwrap();
    assert!(
        bytes > 0 && bytes < (items * size) as u64,
        "{bytes} bytes to a follower missing 1 change of {items} items of {size} bytes"
    );
    // (f): the edit of the large workbook crossed as a delta, not whole.
    let large = f["large_edit_bytes"].as_u64().unwrap();
    assert!(large > 0 && large < 65_536, "(f): {large} bytes");
    positive(&f["large_edit_ms"], "(f) time");
    positive(&f["large_value_bytes"], "(f) size");
    positive(&f["reads"]["per_sec"], "(g)");
    for key in ["rss_after_catchup_mb", "rss_at_total_mb"] {
        let servers = f[key].as_array().unwrap();
        assert_eq!(servers.len(), 4, "{key}: {f}");
        assert!(
            servers.iter().all(|s| s[1].as_f64().unwrap() > 0.0),
            "{key}: {f}"
        );
    }
    // (h): one entry per follower count, each with every edit timed and the leader's costs.
    let fanout = f["fanout"].as_array().unwrap();
    assert_eq!(fanout.len(), 2, "{f}");
    for (h, n) in fanout.iter().zip([2, 3]) {
        assert_eq!(h["followers"], n, "{h}");
        assert_eq!(h["propagation"]["n"], 12, "{h}");
        positive(&h["leader_cpu_secs_per_change"], "(h) CPU");
        positive(&h["bytes_sent_per_change"], "(h) bytes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folio_bench_with_peer_etcd_measures_both_and_prints_ratios() {
    // (f) at 2 MiB: above etcd's default request limit, so the refusal and the search for the
    // largest value it accepts run too.
    let (table, figures) = bench(&[
        &["--peer", "etcd"],
        SMALL,
        &["--total", "60", "--size", "512", "--large", "2097152"],
        &["--fanout", "2", "--fanout-edits", "2"],
    ])
    .await;
    // Folio's figure, etcd's through gRPC and its ratio, through the gateway and its ratio.
    let cells = |label: &str| -> Vec<String> {
        let row = table
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no {label} row: {table}"));
        [(47, 61), (62, 76), (77, 85), (86, 100), (101, 109)]
            .iter()
            .map(|&(from, to)| row.get(from..to).unwrap_or("").trim().to_string())
            .collect()
    };
    let measured = |c: &str| !c.is_empty() && c != "-";
    for label in [
        "(a) propagation p99",
        "(b) durable writes/s",
        "(c) catch-up",
    ] {
        let c = cells(label);
        assert!(c.iter().all(|c| measured(c)), "{label}: {c:?}");
    }
    for label in [
        "(f) that edit until visible",
        "(g) reads/s",
        "(g) read latency p99",
    ] {
        let c = cells(label);
        assert!(c[..3].iter().all(|c| measured(c)), "{label}: {c:?}");
    }
    assert!(table.contains("etcd refused a 2048 KiB value"), "{table}");
    for (system, e) in [
        ("gRPC", &figures["etcd"]),
        ("gateway", &figures["etcd_gateway"]),
    ] {
        assert_eq!(e["propagation"]["n"], 5, "{system}: {e}");
        positive(&e["writes_per_sec"], system);
        positive(&e["write_latency"]["n"], system);
        positive(&e["catchup_secs"], system);
        assert_eq!(
            e["rss_after_catchup_mb"].as_array().unwrap().len(),
            4,
            "{system}: {e}"
        );
    }
    let e = &figures["etcd"];
    // (f): etcd refused 2 MiB and took the edit of the largest body it accepts, whole.
    assert!(
        e["large_refused"].as_str().is_some_and(|m| !m.is_empty()),
        "{e}"
    );
    let accepted = e["large_value_bytes"].as_u64().unwrap();
    assert!(accepted > 1 << 20 && accepted < 2 << 20, "{accepted}");
    assert!(
        e["large_edit_bytes"].as_u64().unwrap() > accepted / 2,
        "{e}"
    );
    positive(&e["large_edit_ms"], "etcd (f)");
    positive(&e["reads"]["per_sec"], "etcd (g) serializable");
    positive(&e["linearizable_reads"]["per_sec"], "etcd (g) linearizable");
    for ratios in ["ratios", "ratios_gateway"] {
        for ratio in ["propagation_p99", "writes_per_sec", "catchup"] {
            positive(&figures[ratios][ratio], &format!("{ratios}.{ratio}"));
        }
    }
    for ratio in ["large_edit_ms", "reads_per_sec"] {
        positive(&figures["ratios"][ratio], ratio);
    }
}
