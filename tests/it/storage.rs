//! A full data volume (issue: what operators read must be true): saves are refused plainly
//! before the volume fills, reads go on, the server starts on a full volume and writes again
//! once space is back, and nothing acknowledged is lost. On a tmpfs the test mounts (as root).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::harness::*;

const MIB: u64 = 1024 * 1024;

/// A small tmpfs mounted for one test, unmounted when dropped.
struct Volume {
    _outer: tempfile::TempDir,
    path: PathBuf,
}

impl Volume {
    fn mount(mib: u64) -> Volume {
        let outer = tempfile::tempdir().unwrap();
        let path = outer.path().join("vol");
        std::fs::create_dir(&path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mounting a tmpfs for the test (needs root, as CI runs)");
        Volume {
            _outer: outer,
            path,
        }
    }

    /// Bytes free, as `df` tells an operator.
    fn free(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().nth(1).unwrap().trim().parse().unwrap()
    }

    fn ballast(&self) -> PathBuf {
        self.path.join("ballast")
    }

    /// Grows the ballast file until at most `left` bytes are free (0: until the volume is full).
    fn fill_to(&self, left: u64) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.ballast())
            .unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while self.free() > left {
            let n = (self.free() - left).min(chunk.len() as u64) as usize;
            if f.write_all(&chunk[..n.max(1)]).is_err() {
                break;
            }
            f.sync_all().ok();
        }
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

async fn save(s: &TestServer, t: &str, id: &str) -> Answer {
    s.put_json(
        &format!("api/v1/workbooks/{id}"),
        Some(t),
        &json!({"name": id, "content": {"sheets": [{"title": id}]}}),
    )
    .await
}

fn reserve(dir: &Path) -> Option<u64> {
    std::fs::metadata(dir.join("data").join("reserve"))
        .ok()
        .map(|m| m.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_data_volume_is_told_plainly_and_survived() {
    let vol = Volume::mount(64);
    let opts = [("store.min_free.mb", "16")];
    let s = start_in(tempfile::tempdir_in(&vol.path).unwrap(), &opts).await;
    let data_dir = s.dir.path().join("data");
    assert_eq!(
        reserve(s.dir.path()),
        Some(4 * MIB),
        "a reserve of a quarter of store.min_free.mb"
    );
    let t = s.admin().await;
    let first = save(&s, &t, "before").await;
    assert!(first.status.is_success(), "{}", first.text);

    // Below store.min_free.mb: 507, naming the directory and the free space.
    vol.fill_to(8 * MIB);
    let refused = save(&s, &t, "refused").await;
    assert_eq!(refused.status, 507, "{}", refused.text);
    let e = &refused.body["error"];
    assert_eq!(e["code"], "insufficient_storage");
    let message = e["message"].as_str().unwrap();
    assert!(
        message.contains(data_dir.to_str().unwrap()) && message.contains("MiB free"),
        "{message}"
    );
    let free = e["free_bytes"].as_u64().unwrap();
    assert!(free < 16 * MIB && free > 4 * MIB, "{free}");
    assert_eq!(e["min_free_bytes"], 16 * MIB);

    // Reads, logins and what operators read go on, and say so.
    assert_eq!(s.get("api/v1/workbooks/before", Some(&t)).await.status, 200);
    assert_eq!(
        s.get("api/v1/workbooks/refused", Some(&t)).await.status,
        404
    );
    let t = s.admin().await;
    let health = s.get("health", None).await;
    assert_eq!(health.body["storage"]["writable"], false, "{}", health.text);
    assert_eq!(
        health.body["storage"]["data_dir"],
        data_dir.to_str().unwrap()
    );
    let told = health.body["storage"]["free_bytes"].as_u64().unwrap();
    let df = vol.free();
    assert!(told.abs_diff(df) < MIB, "health {told}, df {df}");
    assert_eq!(s.metric("folio_store_writable").await, 0.0);
    let gauge = s.metric("folio_data_free_bytes").await as u64;
    assert!(gauge.abs_diff(vol.free()) < MIB, "{gauge}");
    let view = s.get("api/v1/cluster", Some(&t)).await;
    assert_eq!(
        view.body["me"]["storage"]["writable"], false,
        "{}",
        view.text
    );

    // Restarted on a volume with no byte free: it gives up its reserve, starts, serves reads.
    let dir = s.stop().await;
    vol.fill_to(0);
    assert!(vol.free() < MIB, "{}", vol.free());
    let s = start_in(dir, &opts).await;
    assert_eq!(reserve(s.dir.path()), None, "the reserve was given up");
    let t = s.admin().await;
    assert_eq!(s.get("api/v1/workbooks/before", Some(&t)).await.status, 200);
    assert_eq!(save(&s, &t, "still-full").await.status, 507);
    assert_eq!(s.get("ready", None).await.status, 200, "reads are served");

    // Space back: saves resume without a restart, and the reserve comes back.
    std::fs::remove_file(vol.ballast()).unwrap();
    let again = save(&s, &t, "after").await;
    assert!(again.status.is_success(), "{}", again.text);
    assert_eq!(reserve(s.dir.path()), Some(4 * MIB));
    assert_eq!(
        s.get("health", None).await.body["storage"]["writable"],
        true
    );
    assert_eq!(s.metric("folio_store_writable").await, 1.0);
    for id in ["before", "after"] {
        let r = s.get(&format!("api/v1/workbooks/{id}"), Some(&t)).await;
        assert_eq!(r.status, 200, "{id}: {}", r.text);
    }
    for id in ["refused", "still-full"] {
        let r = s.get(&format!("api/v1/workbooks/{id}"), Some(&t)).await;
        assert_eq!(r.status, 404, "{id}: {}", r.text);
    }
    s.stop().await;
}
