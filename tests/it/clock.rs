//! Clocks that disagree (SPEC §3: no guarantee depends on wall-clock time): FIXED followers whose
//! clocks are minutes off (libfaketime; their monotonic clocks left real) join the leader,
//! commit their saves there and receive the leader's, and a session made on the leader opens
//! them.

use std::time::Duration;

use serde_json::{Value, json};

use crate::binary::{Proc, folio_binary, login};
use crate::harness::*;
use crate::histories::args;

/// Debian's libfaketime (package `faketime`, which `scripts/test-deps` installs).
fn libfaketime() -> String {
    std::fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(Result::ok)
        .map(|d| d.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists())
        .expect("libfaketime (Debian package faketime) is installed")
        .display()
        .to_string()
}

/// Saves `id` on the server at `url` until one save is answered 200 committed; answers its
/// revision.
async fn committed_save(http: &reqwest::Client, url: &str, token: &str, id: &str) -> String {
    wait_for(
        &format!("a save of {id} on {url} answered committed"),
        Duration::from_secs(60),
        || async {
            let r = http
                .put(format!("{url}api/v1/workbooks/{id}"))
                .bearer_auth(token)
                .json(&json!({"name": id, "content": {"at": url}}))
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())?;
            let v: Value = r.json().await.ok()?;
            Some(v["rev"].as_str()?.to_string())
        },
    )
    .await
}

/// Waits until the server at `url` holds `id` at `rev`.
async fn holds(http: &reqwest::Client, url: &str, token: &str, id: &str, rev: &str) {
    wait_for(
        &format!("{url} to hold {id} at {rev}"),
        Duration::from_secs(60),
        || async {
            let r = http
                .get(format!("{url}api/v1/workbooks/{id}"))
                .bearer_auth(token)
                .send()
                .await
                .ok()?;
            let v: Value = r.json().await.ok()?;
            (v["rev"] == rev).then_some(())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn followers_whose_clocks_are_minutes_off_sync_both_ways() {
    let http = client();
    let lib = libfaketime();
    let leader_dir = tempfile::tempdir().unwrap();
    let a = args("leader", None);
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    let leader = Proc::start_as(leader_dir.path(), &refs, "leader");
    let on_leader = login(&http, &leader.url).await;
    // Seconds off the real time: ten minutes ahead, ten behind, a minute and a half ahead.
    for (k, off) in ["+600", "-600", "+90"].into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let id = format!("f{k}");
        let a = args(&id, Some(&leader.url));
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        let follower = Proc::start_binary(
            &folio_binary(),
            dir.path(),
            &refs,
            &id,
            &[
                ("LD_PRELOAD", lib.as_str()),
                ("FAKETIME", off),
                ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ],
        );
        let f = &follower.url;

        // A save on the follower is committed: the leader holds it.
        let on_follower = login(&http, f).await;
        let rev = committed_save(&http, f, &on_follower, &format!("from-{id}")).await;
        holds(&http, &leader.url, &on_leader, &format!("from-{id}"), &rev).await;
        // A save on the leader reaches the follower.
        let rev = committed_save(&http, &leader.url, &on_leader, &format!("to-{id}")).await;
        holds(&http, f, &on_follower, &format!("to-{id}"), &rev).await;
        // Its clock is off indeed, as the leader measured it.
        let expected: i64 = off.parse::<i64>().unwrap() * 1000;
        wait_for(
            &format!("the leader to measure {id}'s clock {off} s off"),
            Duration::from_secs(30),
            || async {
                let view: Value = http
                    .get(format!("{}api/v1/cluster", leader.url))
                    .bearer_auth(&on_leader)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                let member = view["members"]
                    .as_array()?
                    .iter()
                    .find(|m| m["id"] == id.as_str())?;
                let offset = member["clock_offset_ms"].as_i64()?;
                (offset.abs_diff(expected) < 5_000).then_some(())
            },
        )
        .await;
        // A session made on the leader opens the follower.
        wait_for(
            &format!("the leader's session to open {id}"),
            Duration::from_secs(30),
            || async {
                let r = http
                    .get(format!("{f}api/v1/me"))
                    .bearer_auth(&on_leader)
                    .send()
                    .await
                    .ok()?;
                (r.status() == 200).then_some(())
            },
        )
        .await;
    }
}
