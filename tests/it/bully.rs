//! BULLY mode between real servers: the reference example's start orders, leader loss and
//! return, partitions fenced by term, split-brain healing, and `min_members`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

const ELECTION: Duration = Duration::from_secs(20);

async fn put(s: &TestServer, id: &str, content: Value) -> Answer {
    let t = s.admin().await;
    s.put_json(
        &format!("api/v1/workbooks/{id}"),
        Some(&t),
        &json!({"name": id, "content": content}),
    )
    .await
}

async fn content(s: &TestServer, id: &str) -> Value {
    let t = s.admin().await;
    s.get(&format!("api/v1/workbooks/{id}"), Some(&t))
        .await
        .body["content"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_reference_example_starts_in_either_order() {
    // A non-boot server refuses to start while no boot server is up, naming what it tried.
    let mut c = BullyCluster::new(3, 2, &[]).await;
    let err = c
        .try_start(2)
        .await
        .expect_err("a non-boot server must not start alone");
    assert!(
        err.contains(&c.nodes[0].front.url()) && err.contains(&c.nodes[1].front.url()),
        "{err}"
    );
    assert!(err.contains("boot"), "{err}");
    assert!(err.contains("unreachable"), "why each failed: {err}");

    // Boot server #2 first: it starts alone and leads.
    c.start(1).await;
    c.leader_is(&[1], 1, ELECTION).await;
    // Then #1: it joins, and after the stability window the lowest id leads.
    c.start(0).await;
    c.leader_is(&[0, 1], 0, ELECTION).await;
    // The non-boot server joins once a boot server is up.
    c.start(2).await;
    c.leader_is(&[0, 1, 2], 0, ELECTION).await;
    let a = put(c.server(2), "from-3", json!(3)).await;
    assert_eq!(a.body["state"], "committed", "{}", a.text);
    c.converged(&[0, 1, 2]).await;
    let t = c.server(1).admin().await;
    let view = c.server(1).get("api/v1/cluster", Some(&t)).await;
    assert_eq!(view.body["mode"], "BULLY");
    assert_eq!(view.body["leader"]["id"], "folio-1");
    assert_eq!(
        view.body["members"].as_array().unwrap().len(),
        3,
        "{}",
        view.text
    );

    // The other order: #1 first, then #2.
    let mut d = BullyCluster::new(3, 2, &[]).await;
    d.start(0).await;
    d.start(1).await;
    d.start(2).await;
    d.leader_is(&[0, 1, 2], 0, ELECTION).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_leader_is_replaced_and_takes_over_again_when_it_returns() {
    let mut c = BullyCluster::new(3, 2, &[]).await;
    for i in 0..3 {
        c.start(i).await;
    }
    c.leader_is(&[0, 1, 2], 0, ELECTION).await;
    let term_before = c.server(1).state().terms.current();
    assert_eq!(
        put(c.server(2), "before", json!(1)).await.body["state"],
        "committed"
    );
    c.converged(&[0, 1, 2]).await;

    c.stop(0).await;
    c.leader_is(&[1, 2], 1, ELECTION).await;
    assert!(
        c.server(1).state().terms.current() > term_before,
        "a new leadership takes a new term"
    );
    let mut acked = Vec::new();
    for i in 0..5 {
        let a = put(c.server(2), &format!("during-{i}"), json!(i)).await;
        assert!(a.status.is_success(), "{}", a.text);
        acked.push(format!("during-{i}"));
    }
    c.converged(&[1, 2]).await;
    assert!(c.server(1).metric("folio_leader_changes_total").await >= 1.0);

    c.start(0).await;
    c.leader_is(&[0, 1, 2], 0, ELECTION).await;
    c.converged(&[0, 1, 2]).await;
    for id in acked.iter().chain(std::iter::once(&"before".to_string())) {
        for i in 0..3 {
            assert_ne!(
                content(c.server(i), id).await,
                Value::Null,
                "{id} lost on server {i}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_leader_is_fenced_and_its_writes_come_back_as_conflicts() {
    let mut c = BullyCluster::new(3, 2, &[]).await;
    for i in 0..3 {
        c.start(i).await;
    }
    c.leader_is(&[0, 1, 2], 0, ELECTION).await;
    put(c.server(0), "shared", json!("base")).await;
    c.converged(&[0, 1, 2]).await;

    c.partition(0);
    c.leader_is(&[1, 2], 1, ELECTION).await;
    let new_term = c.server(1).state().terms.current();
    // Both sides edit the same item, and the old leader makes an edit of its own.
    assert!(
        put(c.server(2), "shared", json!("new cluster"))
            .await
            .status
            .is_success()
    );
    assert!(
        put(c.server(0), "shared", json!("old leader"))
            .await
            .status
            .is_success()
    );
    assert!(
        put(c.server(0), "only-old", json!("kept"))
            .await
            .status
            .is_success()
    );

    c.heal(0);
    c.converged(&[0, 1, 2]).await;
    let leader = c.one_leader(&[0, 1, 2], ELECTION).await;
    c.converged(&[0, 1, 2]).await;
    for i in 0..3 {
        let s = c.server(i);
        assert_eq!(
            content(s, "shared").await,
            json!("new cluster"),
            "the new cluster's content stands on {i}"
        );
        assert_eq!(
            content(s, "only-old").await,
            json!("kept"),
            "the old leader's other edit survives on {i}"
        );
        let t = s.admin().await;
        let conflicts = s.get("api/v1/conflicts", Some(&t)).await;
        assert!(
            conflicts.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["loser"]["content"] == "old leader"),
            "the old leader's edit is a conflict record on {i}: {}",
            conflicts.text
        );
    }
    assert!(c.server(leader).state().terms.current() >= new_term);
    // In the end the lowest id leads again.
    c.leader_is(&[0, 1, 2], 0, ELECTION).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn split_brain_heals_when_a_boot_server_returns() {
    // The reference's caveat: both boot servers go down, the non-boot server leads, then a boot
    // server returns. Folio makes it one cluster again, whether the returning server remembers the
    // members (it joins at once) or comes back empty (the leader's probes find it).
    for wiped in [false, true] {
        let mut c = BullyCluster::new(3, 2, &[]).await;
        for i in 0..3 {
            c.start(i).await;
        }
        c.leader_is(&[0, 1, 2], 0, ELECTION).await;
        put(c.server(0), "early", json!(1)).await;
        c.converged(&[0, 1, 2]).await;
        c.stop(0).await;
        c.stop(1).await;
        c.leader_is(&[2], 2, ELECTION).await;
        assert!(
            put(c.server(2), "while-alone", json!("by 3"))
                .await
                .status
                .is_success()
        );
        if wiped {
            c.nodes[0].dir = None;
        }
        c.start(0).await;
        c.leader_is(&[0, 2], 0, ELECTION).await;
        c.converged(&[0, 2]).await;
        assert_eq!(
            content(c.server(0), "while-alone").await,
            json!("by 3"),
            "wiped={wiped}"
        );
        assert_eq!(
            content(c.server(0), "early").await,
            json!(1),
            "wiped={wiped}"
        );
        c.start(1).await;
        c.leader_is(&[0, 1, 2], 0, ELECTION).await;
        c.converged(&[0, 1, 2]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn below_min_members_writes_wait_as_pending() {
    let mut c = BullyCluster::new(3, 2, &[("cluster.bully.min_members", "2")]).await;
    for i in 0..3 {
        c.start(i).await;
    }
    c.leader_is(&[0, 1, 2], 0, ELECTION).await;
    c.partition(0);
    c.leader_is(&[1, 2], 1, ELECTION).await;
    // Alone, the old leader keeps serving reads but does not fork the content.
    wait_for(
        "the lone server to notice it is alone",
        ELECTION,
        || async {
            let t = c.server(0).admin().await;
            let v = c.server(0).get("api/v1/cluster", Some(&t)).await;
            (v.body["can_commit"] == false).then_some(())
        },
    )
    .await;
    let a = put(c.server(0), "lonely", json!("queued")).await;
    let t = c.server(0).admin().await;
    assert_eq!(
        a.status,
        202,
        "{} / {}",
        a.text,
        c.server(0).get("api/v1/cluster", Some(&t)).await.text
    );
    assert_eq!(a.body["state"], "pending");
    // The majority side commits.
    assert_eq!(
        put(c.server(2), "majority", json!(2)).await.body["state"],
        "committed"
    );
    c.heal(0);
    c.converged(&[0, 1, 2]).await;
    for i in 0..3 {
        assert_eq!(
            content(c.server(i), "lonely").await,
            json!("queued"),
            "the queued edit arrives on {i}"
        );
        assert_eq!(content(c.server(i), "majority").await, json!(2));
    }
}

/// A drained leader hands leadership over at once (the next id leads, with a new term), so saves
/// keep committing while it is on its way out; cancelled, it takes part again and, once stable,
/// leads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drained_leader_hands_leadership_over_at_once() {
    let mut c = BullyCluster::new(3, 2, &[]).await;
    for i in 0..3 {
        c.start(i).await;
    }
    c.leader_is(&[0, 1, 2], 0, ELECTION).await;
    let term_before = c.server(1).state().terms.current();
    let t0 = c.server(0).admin().await;

    let drained = c
        .server(0)
        .call(reqwest::Method::POST, "api/v1/drain", Some(&t0), None)
        .await;
    assert_eq!(drained.status, 202, "{}", drained.text);
    // Well before the heartbeat timeout would have replaced a silent leader.
    c.leader_is(&[0, 1, 2], 1, Duration::from_secs(5)).await;
    assert!(c.server(1).state().terms.current() > term_before);
    for s in [1, 2, 0] {
        let a = put(c.server(s), &format!("after-drain-{s}"), json!(s)).await;
        assert_eq!(a.body["state"], "committed", "{}", a.text);
    }
    c.converged(&[0, 1, 2]).await;

    let back = c
        .server(0)
        .call(reqwest::Method::DELETE, "api/v1/drain", Some(&t0), None)
        .await;
    assert_eq!(back.status, 200, "{}", back.text);
    c.leader_is(&[0, 1, 2], 0, ELECTION).await;
}

/// A BULLY member restarted with another shared secret: the other answers and refuses its
/// heartbeats and it refuses theirs, and each shows the other as `refusing`, with the reason,
/// never as unreachable; restarted with the cluster's secret, it is `reachable` again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_that_refuses_is_shown_refusing_with_its_reason() {
    let mut c = BullyCluster::new(2, 2, &[]).await;
    c.start_together(&[0, 1], Duration::ZERO).await;
    c.one_leader(&[0, 1], ELECTION).await;
    c.stop(1).await;
    c.extra.push((
        "cluster.shared.secret".into(),
        "not-this-clusters-secret".into(),
    ));
    c.start(1).await;
    c.extra.pop();
    let why = "does not match this cluster's shared secret";
    for (i, other) in [(0, "folio-2"), (1, "folio-1")] {
        let s = c.server(i);
        let t = s.admin().await;
        let m = wait_for(
            &format!("{} to show {other} refusing", c.nodes[i].id),
            ELECTION,
            || async {
                let view = s.get("api/v1/cluster", Some(&t)).await.body;
                view["members"]
                    .as_array()?
                    .iter()
                    .find(|m| m["id"] == other && m["health"] == "refusing")
                    .cloned()
            },
        )
        .await;
        assert!(m["reason"].as_str().is_some_and(|r| r.contains(why)), "{m}");
    }
    c.stop(1).await;
    c.start(1).await;
    let s = c.server(0);
    let t = s.admin().await;
    wait_for("folio-1 to show folio-2 reachable", ELECTION, || async {
        let view = s.get("api/v1/cluster", Some(&t)).await.body;
        view["members"]
            .as_array()?
            .iter()
            .find(|m| m["id"] == "folio-2" && m["health"] == "reachable" && m["reason"].is_null())
            .map(|_| ())
    })
    .await;
}
