//! FIXED-mode synchronisation between real servers: convergence (I1), nothing acknowledged lost
//! (I2), leader wins with the loser kept (I3), leader loss (I4), catch-up and reconciliation,
//! synchronised users and sessions.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::*;
use folio::store::Collection;

async fn content(s: &TestServer, token: &str, id: &str) -> Option<Value> {
    let a = s.get(&format!("api/v1/workbooks/{id}"), Some(token)).await;
    (a.status == 200).then(|| a.body["content"].clone())
}

#[tokio::test]
async fn i1_edits_on_every_server_converge() {
    let c = FixedCluster::start(2, &[]).await;
    let t = c.leader.admin().await;
    let mut ids = Vec::new();
    for (n, s) in c.all().into_iter().enumerate() {
        let tok = s.admin().await;
        for i in 0..5 {
            let w = s
                .create(
                    &tok,
                    "workbooks",
                    &format!("s{n}-{i}"),
                    json!({"n": n, "i": i}),
                )
                .await;
            assert_eq!(
                w["state"], "committed",
                "the leader is reachable, so every save is committed"
            );
            ids.push(w["id"].as_str().unwrap().to_string());
        }
        s.create(&tok, "datasources", &format!("ds{n}"), json!({"n": n}))
            .await;
    }
    c.converged().await;
    for s in c.all() {
        let tok = s.admin().await;
        let list = s.get("api/v1/workbooks?limit=100", Some(&tok)).await;
        assert_eq!(
            list.body["items"].as_array().unwrap().len(),
            15,
            "on {}",
            s.state().server_id
        );
    }
    // Deletions propagate as tombstones.
    let del = c.followers[0]
        .call(
            Method::DELETE,
            &format!("api/v1/workbooks/{}", ids[0]),
            Some(&c.followers[0].admin().await),
            None,
        )
        .await;
    assert_eq!(del.status, 200, "{}", del.text);
    c.converged().await;
    assert_eq!(
        c.leader
            .get(&format!("api/v1/workbooks/{}", ids[0]), Some(&t))
            .await
            .status,
        404
    );
    assert_eq!(
        c.leader.store().digest().await.unwrap().0,
        c.followers[1].store().digest().await.unwrap().0
    );
}

#[tokio::test]
async fn concurrent_saves_on_a_follower_share_pushes_and_are_all_committed() {
    let c = FixedCluster::start(2, &[]).await;
    let f = &c.followers[0];
    let tok = f.admin().await;
    // Six items saved four times each, all at once: pushes carry several saves, and saves of
    // one item arrive while an earlier one is on its way.
    let answers = save_at_once(f, &tok, "busy", 24, 6).await;
    for (_, a) in &answers {
        assert!(a.status == 200 || a.status == 201, "{}", a.text);
        assert_eq!(a.body["state"], "committed", "{}", a.text);
    }
    c.converged().await;
    in_leaders_history(&c, &answers).await;
    let lt = c.leader.admin().await;
    let conflicts = c.leader.get("api/v1/conflicts", Some(&lt)).await;
    assert_eq!(
        conflicts.body["items"],
        json!([]),
        "one server's edits never conflict"
    );
}

#[tokio::test]
async fn saves_on_a_follower_whose_leader_hangs_answer_pending_in_time_and_commit_later() {
    // cluster.push.timeout is 1s in test clusters.
    let c = FixedCluster::start(1, &[]).await;
    let f = &c.followers[0];
    let tok = f.admin().await;
    c.links[0].stall();
    // The first push hangs; the other saves (two of them of one item) queue behind it.
    let started = std::time::Instant::now();
    let answers = save_at_once(f, &tok, "hang", 6, 4).await;
    let waited = started.elapsed();
    for (_, a) in &answers {
        assert_eq!(a.status, 202, "{}", a.text);
        assert_eq!(a.body["state"], "pending", "{}", a.text);
    }
    assert!(
        waited < Duration::from_secs(4),
        "a save waits for a hung leader about cluster.push.timeout, not longer (waited {waited:?})"
    );
    c.links[0].restore();
    c.converged().await;
    in_leaders_history(&c, &answers).await;
}

/// `n` saves made at once on `server`, of the items `{prefix}-0` to `{prefix}-{items - 1}` in
/// turn; answers each item id with what its save was answered.
async fn save_at_once(
    server: &TestServer,
    token: &str,
    prefix: &str,
    n: usize,
    items: usize,
) -> Vec<(String, Answer)> {
    let saves = (0..n).map(|k| {
        let id = format!("{prefix}-{}", k % items);
        let body = json!({"name": id, "content": {"k": k}});
        async move {
            let a = server
                .put_json(&format!("api/v1/workbooks/{id}"), Some(token), &body)
                .await;
            (id, a)
        }
    });
    futures_util::future::join_all(saves).await
}

/// I2: each acknowledged save is the leader's current revision or an ancestor of it.
async fn in_leaders_history(c: &FixedCluster, answers: &[(String, Answer)]) {
    for (id, a) in answers {
        let current = c
            .leader
            .store()
            .get(Collection::Workbooks, id.clone())
            .await
            .unwrap()
            .unwrap();
        let rev = a.body["rev"].as_str().unwrap();
        assert!(
            current.descends_from(rev),
            "acknowledged revision {rev} of {id} is in the leader's line of history ({} after {:?})",
            current.rev,
            current.ancestors
        );
    }
}

#[tokio::test]
async fn a_session_made_on_one_server_is_valid_on_every_server() {
    let c = FixedCluster::start(2, &[]).await;
    let admin = c.leader.admin().await;
    c.leader.user_with_role(&admin, "erin", "editor").await;
    c.converged().await;
    let token = c.followers[0].login("erin", "erin-password").await;
    for s in c.all() {
        wait_for(
            "the session everywhere",
            Duration::from_secs(20),
            || async { (s.get("api/v1/me", Some(&token)).await.status == 200).then_some(()) },
        )
        .await;
    }
    // Logging out on another server ends it everywhere.
    assert_eq!(c.followers[1].logout(&token).await.status, 200);
    for s in c.all() {
        wait_for("the logout everywhere", Duration::from_secs(20), || async {
            (s.get("api/v1/me", Some(&token)).await.status == 401).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn a_session_not_yet_arrived_is_awaited_not_refused() {
    // A request may reach another server before the session its token names (a balancer that
    // moved the user right after the login): it waits for the session instead of answering 401.
    let c = FixedCluster::start(2, &[("cluster.push.timeout", "5s")]).await;
    let admin = c.leader.admin().await;
    c.leader.user_with_role(&admin, "erin", "editor").await;
    c.converged().await;
    c.links[1].stall();
    let token = c.followers[0].login("erin", "erin-password").await;
    let f2 = &c.followers[1];
    let mut me = std::pin::pin!(f2.get("api/v1/me", Some(&token)));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut me)
            .await
            .is_err(),
        "follower 2 answered before it could hold the session"
    );
    c.links[1].restore();
    let answer = me.await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["user"], "erin", "{}", answer.text);

    // A session that is gone (logged out) is refused at once, however new its token.
    assert_eq!(c.followers[0].logout(&token).await.status, 200);
    c.converged().await;
    let started = std::time::Instant::now();
    assert_eq!(f2.get("api/v1/me", Some(&token)).await.status, 401);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a tombstoned session is not awaited"
    );
}

#[tokio::test]
async fn i3_leader_wins_and_the_loser_is_kept_everywhere() {
    let c = FixedCluster::start(2, &[]).await;
    let (f1, f2) = (&c.followers[0], &c.followers[1]);
    let (t1, t2) = (f1.admin().await, f2.admin().await);
    let w = f1
        .create(&t1, "workbooks", "shared", json!({"v": "base"}))
        .await;
    let id = w["id"].as_str().unwrap().to_string();
    c.converged().await;

    // f2 is cut off; both followers edit the same base.
    c.links[1].cut();
    let a = f1
        .put_json(
            &format!("api/v1/workbooks/{id}"),
            Some(&t1),
            &json!({"name": "shared", "content": {"v": "from f1"}}),
        )
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["state"], "committed");
    let b = f2
        .put_json(
            &format!("api/v1/workbooks/{id}"),
            Some(&t2),
            &json!({"name": "shared", "content": {"v": "from f2"}}),
        )
        .await;
    assert_eq!(b.status, 202, "{}", b.text);
    assert_eq!(b.body["state"], "pending");
    let losing_rev = b.body["rev"].as_str().unwrap().to_string();
    c.links[1].restore();

    // The leader held f1's edit first: it is current everywhere, f2's edit is a conflict record.
    c.converged().await;
    for s in c.all() {
        let tok = s.admin().await;
        assert_eq!(content(s, &tok, &id).await, Some(json!({"v": "from f1"})));
        let list = s.get("api/v1/conflicts", Some(&tok)).await;
        let items = list.body["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "on {}: {}", s.state().server_id, list.text);
        assert_eq!(items[0]["item_id"], id.as_str());
        assert_eq!(items[0]["loser"]["rev"], losing_rev.as_str());
        assert_eq!(items[0]["loser"]["content"], json!({"v": "from f2"}));
    }
    assert!(c.leader.metric("folio_conflicts_total").await >= 1.0);

    // Restore the loser from f2: it becomes a new edit on top of the winner, everywhere.
    let conflict_id = f2.get("api/v1/conflicts", Some(&t2)).await.body["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let detail = f2
        .get(&format!("api/v1/conflicts/{conflict_id}"), Some(&t2))
        .await;
    assert_eq!(
        detail.body["current"]["content"],
        json!({"v": "from f1"}),
        "the winner is shown beside the loser"
    );
    let r = f2
        .call(
            Method::POST,
            &format!("api/v1/conflicts/{conflict_id}/restore"),
            Some(&t2),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["state"], "committed");
    c.converged().await;
    for s in c.all() {
        let tok = s.admin().await;
        assert_eq!(content(s, &tok, &id).await, Some(json!({"v": "from f2"})));
        assert_eq!(
            s.get("api/v1/conflicts", Some(&tok)).await.body["items"],
            json!([]),
            "restored conflicts are dismissed"
        );
    }
}

#[tokio::test]
async fn a_save_racing_a_newer_leader_revision_answers_409_with_the_winner() {
    let c = FixedCluster::start(2, &[("cluster.poll.interval", "20s")]).await;
    let (f1, f2) = (&c.followers[0], &c.followers[1]);
    let (t1, t2) = (f1.admin().await, f2.admin().await);
    let w = f1.create(&t1, "workbooks", "race", json!(0)).await;
    let id = w["id"].as_str().unwrap().to_string();
    let base = w["rev"].as_str().unwrap().to_string();
    c.converged().await;
    // Keep f2 from hearing about f1's next edit: cut its link until its feed backs off.
    c.links[1].cut();
    wait_for("f2's feed to back off", Duration::from_secs(30), || async {
        (f2.metric("folio_poll_failures_total").await >= 7.0).then_some(())
    })
    .await;
    let a = f1
        .put_json(
            &format!("api/v1/workbooks/{id}"),
            Some(&t1),
            &json!({"name": "race", "content": 1}),
        )
        .await;
    assert_eq!(a.status, 200);
    let winner = a.body["rev"].as_str().unwrap().to_string();
    c.links[1].restore();
    let stale = answer(
        f2.http
            .put(format!("{}api/v1/workbooks/{id}", f2.url))
            .bearer_auth(&t2)
            .header("if-match", format!("\"{base}\""))
            .json(&json!({"name": "race", "content": 2}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(stale.error(409), "conflict");
    assert_eq!(stale.body["error"]["winner_rev"], winner.as_str());
    let record = stale.body["error"]["conflict_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        f2.get(&format!("api/v1/workbooks/{id}"), Some(&t2))
            .await
            .body["content"],
        1,
        "the winner is current on f2 at once"
    );
    let rec = f2
        .get(&format!("api/v1/conflicts/{record}"), Some(&t2))
        .await;
    assert_eq!(rec.body["loser"]["content"], 2);
}

#[tokio::test]
async fn i4_followers_outlive_the_leader_and_catch_up() {
    let mut c = FixedCluster::start(2, &[]).await;
    let t1 = c.followers[0].admin().await;
    let t2 = c.followers[1].admin().await;
    let before = c.followers[0]
        .create(&t1, "workbooks", "before", json!(1))
        .await;
    c.converged().await;

    let dir = std::mem::replace(&mut c.leader, start(&[]).await)
        .stop()
        .await;
    let mut pending = Vec::new();
    for (i, (s, t)) in [(&c.followers[0], &t1), (&c.followers[1], &t2)]
        .into_iter()
        .enumerate()
    {
        let h = s.get("health", None).await;
        assert_eq!(h.body["role"], "follower");
        let w = s
            .post_json(
                "api/v1/workbooks",
                Some(t),
                &json!({"name": format!("while down {i}"), "content": i}),
            )
            .await;
        assert_eq!(w.status, 202, "{}", w.text);
        assert_eq!(w.body["state"], "pending");
        pending.push(w.body["id"].as_str().unwrap().to_string());
        // Reads keep working.
        assert_eq!(
            s.get(
                &format!("api/v1/workbooks/{}", before["id"].as_str().unwrap()),
                Some(t)
            )
            .await
            .status,
            200
        );
    }
    wait_for(
        "followers to see the leader gone",
        Duration::from_secs(20),
        || async {
            let h = c.followers[0].get("health", None).await;
            (h.body["leader_reachable"] == false).then_some(())
        },
    )
    .await;

    // The leader returns (on another port: the links follow it).
    let leader = start_in(dir, &cluster_overrides("leader", &[])).await;
    for l in &c.links {
        l.retarget(leader.addr());
    }
    c.leader = leader;
    c.converged().await;
    let tl = c.leader.admin().await;
    for id in &pending {
        assert_eq!(
            c.leader
                .get(&format!("api/v1/workbooks/{id}"), Some(&tl))
                .await
                .status,
            200,
            "pending edit {id} reached the leader"
        );
    }
    for f in &c.followers {
        assert_eq!(f.store().outbox_len().await.unwrap(), 0, "outbox drained");
        let h = f.get("health", None).await;
        assert_eq!(h.body["leader_reachable"], true);
        assert_eq!(h.body["leader"]["id"], "leader");
    }
}

#[tokio::test]
async fn a_new_follower_catches_up_and_a_missed_change_costs_only_itself() {
    let leader = start(&cluster_overrides("leader", &[])).await;
    let t = leader.admin().await;
    let mut dump =
        String::from("{\"folio_export\":1,\"server\":\"gen\",\"exported_at\":\"now\"}\n");
    for i in 0..1000 {
        let content = json!({"i": i, "pad": "x".repeat(200)});
        let rev = folio::store::item::next_rev(None, &format!("w{i}"), false, &content);
        let item = json!({"id": format!("w{i:04}"), "name": format!("w{i}"), "content": content, "rev": rev,
            "updated_at": "2026-01-01T00:00:00Z", "updated_by": "gen", "origin": "gen", "ancestors": []});
        dump.push_str(&json!({"collection": "workbooks", "item": item}).to_string());
        dump.push('\n');
    }
    let imported = leader.import(&t, "", dump).await;
    assert_eq!(imported.status, 200, "{}", imported.text);

    let (f, link) = FixedCluster::follower_of(&leader, "newcomer", &[]).await;
    converged(&[&leader, &f]).await;
    let full = link.bytes_down();
    let received = f.metric("folio_sync_items_received_total").await;
    assert!(
        received >= 1000.0,
        "the newcomer received every item: {received}"
    );

    link.cut();
    wait_for(
        "the follower to notice the cut",
        Duration::from_secs(20),
        || async { (f.get("health", None).await.body["leader_reachable"] == false).then_some(()) },
    )
    .await;
    let one = leader
        .put_json(
            "api/v1/workbooks/w0500",
            Some(&t),
            &json!({"name": "w500", "content": "changed"}),
        )
        .await;
    assert_eq!(one.status, 200);
    let base = link.bytes_down();
    link.restore();
    converged(&[&leader, &f]).await;
    let after = f.metric("folio_sync_items_received_total").await;
    assert_eq!(after - received, 1.0, "only the missed change was received");
    let delta = link.bytes_down() - base;
    assert!(
        delta < 16 * 1024 && delta * 20 < full,
        "the missed change cost {delta} bytes; the whole catch-up cost {full}"
    );
}

#[tokio::test]
async fn a_follower_with_divergent_content_reconciles_by_digest() {
    // A stand-alone server with its own content becomes a follower: only differing items move,
    // the leader's versions win, and the follower's diverging edits are kept as conflicts.
    let leader = start(&cluster_overrides("leader", &[])).await;
    let tl = leader.admin().await;
    for i in 0..50 {
        leader
            .put_json(
                &format!("api/v1/workbooks/common-{i}"),
                Some(&tl),
                &json!({"name": "c", "content": i}),
            )
            .await;
    }
    leader
        .put_json(
            "api/v1/workbooks/common-7",
            Some(&tl),
            &json!({"name": "c", "content": "leader edit"}),
        )
        .await;
    let dir = {
        let solo = start(&[]).await;
        let ts = solo.admin().await;
        for i in 0..50 {
            solo.put_json(
                &format!("api/v1/workbooks/common-{i}"),
                Some(&ts),
                &json!({"name": "c", "content": i}),
            )
            .await;
        }
        solo.put_json(
            "api/v1/workbooks/common-7",
            Some(&ts),
            &json!({"name": "c", "content": "solo edit"}),
        )
        .await;
        solo.put_json(
            "api/v1/workbooks/solo-only",
            Some(&ts),
            &json!({"name": "mine", "content": "only here"}),
        )
        .await;
        solo.stop().await
    };
    let link = crate::proxy::LinkProxy::start(leader.addr()).await;
    let url = link.url();
    let mut o = cluster_overrides("joiner", &[]);
    o.push(("cluster.fixed.leader", &url));
    let f = start_in(dir, &o).await;
    converged(&[&leader, &f]).await;
    assert_eq!(
        leader
            .get("api/v1/workbooks/solo-only", Some(&tl))
            .await
            .body["content"],
        "only here",
        "local-only items are pushed"
    );
    let conflicts = leader.get("api/v1/conflicts", Some(&tl)).await;
    let items = conflicts.body["items"].as_array().unwrap();
    assert!(
        items
            .iter()
            .any(|c| c["item_id"] == "common-7" && c["loser"]["content"] == "solo edit"),
        "{}",
        conflicts.text
    );
    assert_eq!(
        f.get("api/v1/workbooks/common-7", Some(&tl)).await.body["content"],
        "leader edit",
        "the leader's edit wins"
    );
    // The 49 identical items did not travel: far fewer than 50 items were received.
    assert!(f.metric("folio_sync_items_received_total").await < 20.0);
}

#[tokio::test]
async fn the_local_change_feed_long_polls_until_a_change_arrives() {
    let c = FixedCluster::start(2, &[]).await;
    let (f1, f2) = (&c.followers[0], &c.followers[1]);
    let (t1, t2) = (f1.admin().await, f2.admin().await);
    let head = f2.get("api/v1/changes", Some(&t2)).await.body["next"]
        .as_u64()
        .unwrap();
    let url = format!("{}api/v1/changes?since={head}&wait_ms=20000", f2.url);
    let http = f2.http.clone();
    let t = t2.clone();
    let waiting =
        tokio::spawn(
            async move { answer(http.get(url).bearer_auth(t).send().await.unwrap()).await },
        );
    let w = f1.create(&t1, "workbooks", "watched", json!(1)).await;
    let got = waiting.await.unwrap();
    assert_eq!(got.status, 200);
    let ids: Vec<&str> = got.body["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![w["id"].as_str().unwrap()], "{}", got.text);
    assert_eq!(
        f2.get("api/v1/changes?since=0&limit=0", Some(&t2))
            .await
            .error(400),
        "invalid_limit",
        "limits outside 1 to 1000 are refused, as the lists refuse them"
    );
    assert_eq!(
        f2.get("api/v1/changes?since=x", Some(&t2)).await.error(400),
        "invalid_query"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_command_prints_every_member() {
    let c = FixedCluster::start(2, &[]).await;
    c.converged().await;
    let out = folio_ok(&["cluster", "status", "--url", &c.leader.url]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("mode FIXED") && text.contains("leader leader"),
        "{text}"
    );
    for id in ["leader *", "f1", "f2"] {
        assert!(text.lines().any(|l| l.starts_with(id)), "{id} in:\n{text}");
    }
    assert!(
        text.contains("follower") && text.contains("reachable"),
        "{text}"
    );
}

/// A leader gone silent (the connection stays open, nothing comes back: a paused process) is
/// told by its follower within seconds: not reachable, cannot commit; and the leader's view
/// tells the silent follower the same way. Both come back once the link does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_views_say_a_silent_member_is_not_reachable_within_seconds() {
    let c = FixedCluster::start(2, &[]).await;
    c.converged().await;
    let (f1, f2) = (&c.followers[0], &c.followers[1]);
    let tl = c.leader.admin().await;
    let t1 = f1.login(ADMIN, ADMIN_PW).await;
    let t2 = f2.login(ADMIN, ADMIN_PW).await;
    wait_for(
        "f1 to see its leader reachable",
        Duration::from_secs(20),
        || async { (health_of(f1, &t1, "leader").await == "reachable").then_some(()) },
    )
    .await;

    c.links[0].stall();
    // Well within the old 15 s long-poll timeout (the cluster polls every second).
    let deadline = Duration::from_secs(8);
    wait_for("f1 to see its leader silent", deadline, || async {
        let h = f1.get("health", None).await.body;
        let view = f1.get("api/v1/cluster", Some(&t1)).await.body;
        let leader = health_of(f1, &t1, "leader").await;
        (h["leader_reachable"] == false
            && h["can_commit"] == false
            && view["can_commit"] == false
            && leader != "reachable")
            .then_some(())
    })
    .await;
    // Still ready: it serves reads and queues saves (README, Operations).
    assert_eq!(f1.get("ready", None).await.status, 200);
    // What f1 last heard of f2 came through the leader, so it is no longer vouched for.
    assert_eq!(health_of(f1, &t1, "f2").await, "unknown");
    wait_for("the leader to see f1 silent", deadline, || async {
        (health_of(&c.leader, &tl, "f1").await != "reachable").then_some(())
    })
    .await;
    wait_for(
        "f2 to hear from the leader that f1 is silent",
        deadline,
        || async { (health_of(f2, &t2, "f1").await == "unreachable").then_some(()) },
    )
    .await;
    assert_eq!(health_of(f2, &t2, "leader").await, "reachable");

    c.links[0].restore();
    wait_for(
        "f1 to hear its leader again",
        Duration::from_secs(20),
        || async {
            let h = f1.get("health", None).await.body;
            (h["leader_reachable"] == true
                && h["can_commit"] == true
                && health_of(f1, &t1, "leader").await == "reachable")
                .then_some(())
        },
    )
    .await;
    wait_for(
        "the leader to hear f1 again",
        Duration::from_secs(20),
        || async { (health_of(&c.leader, &tl, "f1").await == "reachable").then_some(()) },
    )
    .await;
}

/// A large workbook crosses to a follower compressed (zstd), counted as it crossed the wire by
/// `folio_peer_bytes_received_total`; answers that carry a token are never compressed.
#[tokio::test]
async fn a_large_workbook_reaches_a_follower_compressed() {
    let c = FixedCluster::start(1, &[]).await;
    let (leader, follower) = (&c.leader, &c.followers[0]);
    let t = leader.admin().await;
    let body = folio_sample::workbook("big", 1, 2 << 20);
    let size = serde_json::to_vec(&body).unwrap().len() as f64;
    c.converged().await;
    let before = follower.metric("folio_peer_bytes_received_total").await;
    let w = leader
        .put_json("api/v1/workbooks/big", Some(&t), &body)
        .await;
    assert!(w.status.is_success(), "{}", w.text);
    c.converged().await;
    let received = follower.metric("folio_peer_bytes_received_total").await - before;
    assert!(
        received < size / 3.0,
        "the follower received {received} bytes for a {size}-byte workbook"
    );
    // A login answer (a token beside the user name sent) is left uncompressed.
    let r = leader
        .http
        .post(format!("{}api/v1/login", leader.url))
        .header("accept-encoding", "zstd, gzip")
        .json(&json!({"username": ADMIN, "password": ADMIN_PW}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-encoding"], "identity");
    // A large read is compressed for a browser that asks.
    let r = leader
        .http
        .get(format!("{}api/v1/workbooks/big", leader.url))
        .bearer_auth(&t)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
}

/// A one-field edit of a 2 MB workbook made on one follower reaches the leader as a JSON Patch
/// against the revision it holds, and the other follower the same way: under 64 KB each way
/// (issue: deltas on the wire).
#[tokio::test]
async fn a_small_edit_of_a_large_workbook_reaches_the_other_follower_as_a_delta() {
    // Bytes are measured here, not time: a debug build may take a while over 2 MB of JSON.
    let c = FixedCluster::start(2, &[("cluster.push.timeout", "20s")]).await;
    let (a, b) = (&c.followers[0], &c.followers[1]);
    let t = a.admin().await;
    let body = folio_sample::workbook("big", 2, 2 << 20);
    let w = a.put_json("api/v1/workbooks/big", Some(&t), &body).await;
    assert_eq!(w.body["state"], "committed", "{}", w.text);
    c.converged().await;

    let before = b.metric("folio_peer_bytes_received_total").await;
    let sent_before = c.links[0].bytes_up();
    let edit = folio_sample::edited(&body, "Revenue by region, this quarter");
    let w = a
        .call(Method::PUT, "api/v1/workbooks/big", Some(&t), Some(&edit))
        .await;
    assert_eq!(w.body["state"], "committed", "{}", w.text);
    let sent = c.links[0].bytes_up() - sent_before;
    assert!(sent < 64 * 1024, "follower A sent {sent} bytes to push it");
    c.converged().await;
    let received = b.metric("folio_peer_bytes_received_total").await - before;
    assert!(
        received < 64.0 * 1024.0,
        "follower B received {received} bytes"
    );
    assert_eq!(b.metric("folio_deltas_refetched_total").await, 0.0);
    let tb = b.admin().await;
    let got = b.get("api/v1/workbooks/big", Some(&tb)).await;
    assert_eq!(got.body["content"], edit["content"]);
}

#[tokio::test]
async fn an_item_edited_150_times_while_the_leader_is_away_fast_forwards_with_every_revision() {
    // More edits than an item's ancestry list holds (100): the leader must still see the
    // follower's line descend from what it holds, not a conflict.
    let c = FixedCluster::start(2, &[("content.history.keep", "200")]).await;
    let t1 = c.followers[0].admin().await;
    let made = c.followers[0]
        .create(&t1, "workbooks", "long line", json!(0))
        .await;
    let id = made["id"].as_str().unwrap().to_string();
    c.converged().await;

    c.links[0].cut();
    let mut revs = vec![made["rev"].as_str().unwrap().to_string()];
    for i in 1..=150 {
        let a = c.followers[0]
            .put_json(
                &format!("api/v1/workbooks/{id}"),
                Some(&t1),
                &json!({"name": "long line", "content": i}),
            )
            .await;
        assert!(a.status == 200 || a.status == 202, "{}", a.text);
        revs.push(a.body["rev"].as_str().unwrap().to_string());
    }
    c.links[0].restore();
    c.converged().await;

    let mut expected = revs.clone();
    expected.reverse();
    for (n, s) in c.all().into_iter().enumerate() {
        let t = s.admin().await;
        let h = s
            .get(&format!("api/v1/workbooks/{id}/history"), Some(&t))
            .await;
        let listed: Vec<&str> = h.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["rev"].as_str().unwrap())
            .collect();
        assert_eq!(
            listed,
            expected,
            "every revision, newest first, on server {n} (0 leads): {} of {}",
            listed.len(),
            expected.len()
        );
        let conflicts = s.get("api/v1/conflicts", Some(&t)).await;
        assert_eq!(
            conflicts.body["items"],
            json!([]),
            "a fast-forward, not a conflict, on server {n}"
        );
    }
}

/// A follower's pushed delta whose base the leader no longer keeps is refused, and the follower
/// pushes the edit whole at once: here it lost to the leader's newer edits, and its conflict
/// record keeps its whole body (issue: a corrupt delta falls back to the whole body).
#[tokio::test]
async fn a_pushed_delta_the_leader_cannot_apply_is_sent_whole() {
    let c = FixedCluster::start(
        1,
        &[
            ("content.history.keep", "2"),
            ("cluster.push.timeout", "20s"),
        ],
    )
    .await;
    let (leader, f) = (&c.leader, &c.followers[0]);
    let (tl, tf) = (leader.admin().await, f.admin().await);
    let body = folio_sample::workbook("big", 4, 256 << 10);
    let w = leader
        .put_json("api/v1/workbooks/big", Some(&tl), &body)
        .await;
    assert!(w.status.is_success(), "{}", w.text);
    c.converged().await;

    // Cut off, the follower edits the revision both hold; meanwhile the leader edits it twice,
    // and keeps only its last two revisions: the follower's base is gone there.
    c.links[0].cut();
    let mine = folio_sample::edited(&body, "The follower's title");
    let p = f.put_json("api/v1/workbooks/big", Some(&tf), &mine).await;
    assert_eq!(p.status, 202, "{}", p.text);
    for title in ["Leader one", "Leader two"] {
        let e = folio_sample::edited(&body, title);
        let a = leader.put_json("api/v1/workbooks/big", Some(&tl), &e).await;
        assert!(a.status.is_success(), "{}", a.text);
    }
    c.links[0].restore();
    c.converged().await;
    // The delta was tried, and refused.
    let refused = leader
        .metric(r#"folio_http_requests_total{route="/cluster/v1/push",method="POST",status="409"}"#)
        .await;
    assert!(refused >= 1.0, "a push was refused 409 ({refused})");

    let conflicts = leader.get("api/v1/conflicts", Some(&tl)).await;
    let items = conflicts.body["items"].as_array().unwrap();
    let record = items
        .iter()
        .find(|r| r["loser"]["rev"] == p.body["rev"])
        .unwrap_or_else(|| {
            panic!(
                "the follower's edit is a conflict record: {}",
                conflicts.text
            )
        });
    assert_eq!(
        record["loser"]["content"], mine["content"],
        "the record keeps the follower's whole body"
    );
}
