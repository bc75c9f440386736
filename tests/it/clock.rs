//! Clocks that disagree (SPEC §3: no guarantee depends on wall-clock time): FIXED followers whose
//! clocks are minutes off (libfaketime; their monotonic clocks left real) join the leader,
//! commit their saves there and receive the leader's, and a session made on the leader opens
//! them; a clock off by more than `cluster.clock.warn` is named wherever an operator looks,
//! until it is set right.

use std::time::Duration;

use serde_json::{Value, json};

use thirtyfour::prelude::*;

use crate::binary::{Proc, folio_binary, login};
use crate::browser::{Browser, UI};
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
                // And named as off, with the way it is off.
                let way = if expected > 0 { "ahead of" } else { "behind" };
                let named = view["clock_warnings"].as_array()?.iter().any(|w| {
                    w["server"] == id.as_str()
                        && w["offset_ms"]
                            .as_i64()
                            .is_some_and(|o| o.abs_diff(expected) < 5_000)
                        && w["message"].as_str().is_some_and(|m| m.contains(way))
                });
                (offset.abs_diff(expected) < 5_000 && named).then_some(())
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

/// What the server at `url` reports of clocks off the leader's: the warnings of its cluster
/// view and of its `/health` (server, offset, message), and its `folio_clock_off_seconds`
/// series (server, seconds).
async fn clock_reports(
    http: &reqwest::Client,
    url: &str,
    token: &str,
) -> Option<(
    Vec<(String, i64, String)>,
    Vec<(String, i64, String)>,
    Vec<(String, f64)>,
)> {
    let get = |path: &str| http.get(format!("{url}{path}")).bearer_auth(token).send();
    let warnings = |v: &Value| -> Option<Vec<(String, i64, String)>> {
        v["clock_warnings"]
            .as_array()?
            .iter()
            .map(|w| {
                Some((
                    w["server"].as_str()?.to_string(),
                    w["offset_ms"].as_i64()?,
                    w["message"].as_str()?.to_string(),
                ))
            })
            .collect()
    };
    let view: Value = get("api/v1/cluster").await.ok()?.json().await.ok()?;
    let health: Value = get("health").await.ok()?.json().await.ok()?;
    let text = get("metrics").await.ok()?.text().await.ok()?;
    let series = text
        .lines()
        .filter_map(|l| l.strip_prefix("folio_clock_off_seconds{server=\""))
        .filter_map(|l| {
            let (server, value) = l.split_once("\"} ")?;
            Some((server.to_string(), value.trim().parse().ok()?))
        })
        .collect();
    Some((warnings(&view)?, warnings(&health)?, series))
}

/// Waits until the servers at `urls` (with their sessions) report exactly one server's clock
/// off, `id`'s by `secs` seconds with `message`; or, with `secs` `None`, none at all.
async fn everyone_reports(
    http: &reqwest::Client,
    urls: &[(&str, &str)],
    id: &str,
    secs: Option<i64>,
    message: &str,
) {
    for (url, token) in urls {
        wait_for(
            &format!("{url} to report {id}'s clock off by {secs:?} s"),
            Duration::from_secs(30),
            || async {
                let (view, health, series) = clock_reports(http, url, token).await?;
                let Some(secs) = secs else {
                    return (view.is_empty() && health.is_empty() && series.is_empty())
                        .then_some(());
                };
                let near = |ms: i64| ms.abs_diff(secs * 1000) < 3_000;
                let told = |w: &Vec<(String, i64, String)>| {
                    w.len() == 1 && w[0].0 == id && near(w[0].1) && w[0].2 == message
                };
                (told(&view)
                    && told(&health)
                    && series.len() == 1
                    && series[0].0 == id
                    && near((series[0].1 * 1000.0) as i64))
                .then_some(())
            },
        )
        .await;
    }
}

/// A follower whose clock is 90 s ahead is named, with its offset, in both servers' cluster
/// views, `/health`, metrics and pages, and logged once by each; once its clock is set right,
/// every one of them says so within seconds, logged once more.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clock_off_is_named_everywhere_until_it_is_set_right() {
    let http = client();
    let lib = libfaketime();
    let leader_dir = tempfile::tempdir().unwrap();
    let a = args("leader", None);
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    let leader = Proc::start_as(leader_dir.path(), &refs, "leader");
    let on_leader = login(&http, &leader.url).await;

    // The follower's offset comes from a file, read again every second, so the test can set
    // its clock right while it runs.
    let dir = tempfile::tempdir().unwrap();
    let rc = dir.path().join("faketime.rc");
    std::fs::write(&rc, "+90\n").unwrap();
    let a = args("f", Some(&leader.url));
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    let follower = Proc::start_binary(
        &folio_binary(),
        dir.path(),
        &refs,
        "f",
        &[
            ("LD_PRELOAD", lib.as_str()),
            ("FAKETIME_TIMESTAMP_FILE", rc.to_str().unwrap()),
            ("FAKETIME_CACHE_DURATION", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    let on_follower = login(&http, &follower.url).await;
    committed_save(&http, &follower.url, &on_follower, "joined").await;

    let ahead = "f's clock is 90 s ahead of the leader's: fix its time source";
    let both = [
        (leader.url.as_str(), on_leader.as_str()),
        (follower.url.as_str(), on_follower.as_str()),
    ];
    everyone_reports(&http, &both, "f", Some(90), ahead).await;
    let b = Browser::start().await;
    b.login(&leader.url, ADMIN, ADMIN_PW).await;
    b.shows("#clock-alert", ahead).await;
    b.shows("#members .clock-off", "ms from the leader's").await;

    // Set right: every report clears, and the page's alert goes.
    std::fs::write(&rc, "+0\n").unwrap();
    everyone_reports(&http, &both, "f", None, "").await;
    wait_for("the page's clock alert to go", UI, || async {
        let e = b.d().find(By::Id("clock-alert")).await.ok()?;
        (!e.is_displayed().await.ok()?).then_some(())
    })
    .await;

    // Each server logged each change once, not at every measurement.
    let again = "f's clock agrees with the leader's again";
    for p in [&leader, &follower] {
        wait_for(
            "the change to be logged",
            Duration::from_secs(10),
            || async { (p.logged(again) > 0).then_some(()) },
        )
        .await;
        assert_eq!(p.logged(ahead), 1, "{} logs the offset once", p.url);
        assert_eq!(p.logged(again), 1, "{} logs the fix once", p.url);
    }
}
