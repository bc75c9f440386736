//! The benchmark command (SPEC §8) at a small scale: it starts its own three-server cluster on
//! loopback (and, with `--peer etcd`, a three-member etcd cluster) and writes every figure.
//! Timings are never asserted, only that each figure was measured and is coherent.

use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folio_bench_measures_every_figure_of_a_small_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("figures.json");
    let (edits, items, size) = (5, 60, 512);
    let run = crate::harness::succeeds(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_folio-bench"))
            .args([
                "--edits",
                &edits.to_string(),
                "--seconds",
                "1",
                "--clients",
                "2",
            ])
            .args(["--catchup", "40", "--total", &items.to_string()])
            .args(["--size", &size.to_string(), "--large", "262144", "--out"])
            .arg(&out),
    )
    .await;
    let table = String::from_utf8_lossy(&run.stdout);
    for row in [
        "(a) propagation p99",
        "(b) durable writes/s",
        "(c) catch-up",
        "(d) bytes",
        "(f) bytes",
        "(f) that edit",
    ] {
        assert!(table.contains(row), "the table has {row}: {table}");
    }
    let figures: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let f = &figures["folio"];
    assert_eq!(f["propagation"]["n"], edits, "{f}");
    assert!(f["propagation"]["p99_ms"].as_f64().unwrap() > 0.0, "{f}");
    assert!(f["writes_per_sec"].as_f64().unwrap() > 0.0, "{f}");
    assert!(f["write_latency"]["n"].as_u64().unwrap() > 0, "{f}");
    assert!(f["catchup_secs"].as_f64().unwrap() > 0.0, "{f}");
    // (d): the returning follower was sent the one change, not the store's content again.
    let bytes = f["reconnect_bytes"].as_u64().unwrap();
    assert!(
        bytes > 0 && bytes < (items * size) as u64,
        "{bytes} bytes to a follower missing 1 change of {items} items of {size} bytes"
    );
    // (f): the edit of the large workbook crossed as a delta, not whole.
    let large = f["large_edit_bytes"].as_u64().unwrap();
    assert!(large > 0 && large < 65_536, "(f): {large} bytes");
    assert!(f["large_edit_ms"].as_f64().unwrap() > 0.0, "{f}");
    for key in ["rss_after_catchup_mb", "rss_at_total_mb"] {
        let servers = f[key].as_array().unwrap();
        assert_eq!(servers.len(), 4, "{key}: {f}");
        assert!(
            servers.iter().all(|s| s[1].as_f64().unwrap() > 0.0),
            "{key}: {f}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folio_bench_with_peer_etcd_measures_both_and_prints_ratios() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("figures.json");
    let edits = 5;
    let run = crate::harness::succeeds(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_folio-bench"))
            .args(["--peer", "etcd", "--edits", &edits.to_string()])
            .args(["--seconds", "1", "--clients", "2", "--catchup", "40"])
            .args([
                "--total", "60", "--size", "512", "--large", "262144", "--out",
            ])
            .arg(&out),
    )
    .await;
    let table = String::from_utf8_lossy(&run.stdout);
    let p99 = table
        .lines()
        .find(|l| l.starts_with("(a) propagation p99"))
        .unwrap_or_else(|| panic!("no (a) p99 row: {table}"));
    assert!(
        p99.matches(" ms").count() == 2,
        "Folio's and etcd's figures: {p99}"
    );
    let figures: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let e = &figures["etcd"];
    assert_eq!(e["propagation"]["n"], edits, "{e}");
    assert!(e["writes_per_sec"].as_f64().unwrap() > 0.0, "{e}");
    assert!(e["write_latency"]["n"].as_u64().unwrap() > 0, "{e}");
    assert!(e["catchup_secs"].as_f64().unwrap() > 0.0, "{e}");
    assert_eq!(
        e["rss_after_catchup_mb"].as_array().unwrap().len(),
        4,
        "{e}"
    );
    for ratio in ["propagation_p99", "writes_per_sec", "catchup"] {
        let r = figures["ratios"][ratio].as_f64();
        assert!(r.is_some_and(|r| r > 0.0), "{ratio}: {}", figures["ratios"]);
    }
}
