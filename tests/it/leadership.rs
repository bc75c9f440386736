//! One conformance suite for every leadership mode (NONE, FIXED, BULLY, KUBERNETES): once stable,
//! every server names the same leader and exactly one leads (I5), every server reports the same
//! term and knows every member, and an edit made on any server reaches all of them (I1).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use crate::harness::*;
use crate::kube_api::FakeApi;

async fn conformance(mode: &str, servers: &[&TestServer]) {
    let ids: Vec<String> = servers
        .iter()
        .map(|s| s.state().server_id.clone())
        .collect();
    // I5: one leader, named by everyone.
    let leader = wait_for("a stable leader", Duration::from_secs(30), || async {
        let mut named = None;
        let mut leading = 0;
        for s in servers {
            let h = s.get("health", None).await;
            let id = h.body["leader"]["id"].as_str()?.to_string();
            if named.get_or_insert(id.clone()) != &id {
                return None;
            }
            if matches!(h.body["role"].as_str(), Some("leader" | "standalone")) {
                leading += 1;
            }
        }
        let terms: Vec<u64> = servers.iter().map(|s| s.state().terms.current()).collect();
        (leading == 1 && terms.windows(2).all(|w| w[0] == w[1])).then_some(named?)
    })
    .await;
    assert!(
        ids.contains(&leader),
        "{mode}: the leader {leader} is one of {ids:?}"
    );
    let terms: Vec<u64> = servers.iter().map(|s| s.state().terms.current()).collect();
    assert!(
        terms.windows(2).all(|w| w[0] == w[1]),
        "{mode}: one term everywhere: {terms:?}"
    );
    for s in servers {
        let t = s.admin().await;
        let view = s.get("api/v1/cluster", Some(&t)).await;
        assert_eq!(view.body["mode"], mode);
        assert_eq!(
            view.body["leader"]["id"],
            leader.as_str(),
            "{mode}: {}",
            view.text
        );
        assert_eq!(view.body["term"], terms[0]);
        let members: Vec<&str> = view.body["members"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["id"].as_str())
            .collect();
        for id in &ids {
            assert!(
                members.contains(&id.as_str()),
                "{mode}: {} knows {id}: {}",
                s.state().server_id,
                view.text
            );
        }
    }
    // I1: edits made anywhere reach everyone.
    for (i, s) in servers.iter().enumerate() {
        let t = s.admin().await;
        let w = s
            .put_json(
                &format!("api/v1/workbooks/conf-{i}"),
                Some(&t),
                &json!({"name": "c", "content": i}),
            )
            .await;
        assert_eq!(w.body["state"], "committed", "{mode}: {}", w.text);
    }
    converged(servers).await;
    for s in servers {
        let t = s.admin().await;
        let list = s.get("api/v1/workbooks?limit=100", Some(&t)).await;
        assert_eq!(
            list.body["items"].as_array().unwrap().len(),
            servers.len(),
            "{mode}"
        );
    }
}

#[tokio::test]
async fn none_conforms() {
    let s = start(&[("server.id", "solo")]).await;
    conformance("NONE", &[&s]).await;
}

#[tokio::test]
async fn fixed_conforms() {
    let c = FixedCluster::start(2, &[]).await;
    conformance("FIXED", &c.all()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bully_conforms() {
    let mut c = BullyCluster::new(3, 2, &[]).await;
    for i in 0..3 {
        c.start(i).await;
    }
    let servers: Vec<&TestServer> = (0..3).map(|i| c.server(i)).collect();
    conformance("BULLY", &servers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubernetes_conforms() {
    let api = FakeApi::start().await;
    let mut pods = Vec::new();
    for name in ["folio-0", "folio-1", "folio-2"] {
        let mut o = api.overrides(name);
        o.push(("cluster.shared.secret".into(), SECRET.into()));
        o.push(("cluster.poll.interval".into(), "1s".into()));
        let refs: Vec<(&str, &str)> = o.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let s = start(&refs).await;
        api.place(name, s.addr());
        pods.push(s);
    }
    api.list(&["folio-0", "folio-1", "folio-2"]);
    let servers: Vec<&TestServer> = pods.iter().collect();
    conformance("KUBERNETES", &servers).await;
}

/// Every term led by `servers` (a BULLY cluster), each with the ids that led it.
fn leaders_by_term(c: &BullyCluster, servers: &[usize]) -> BTreeMap<u64, Vec<String>> {
    let mut by_term: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for &i in servers {
        let b = c.server(i).state().bully.clone().expect("a BULLY server");
        for t in b.led() {
            by_term.entry(t).or_default().push(c.nodes[i].id.clone());
        }
    }
    by_term
}

/// A term never has two leaders, whatever the order and spacing of the servers' starts (three
/// boot servers, so each may start a cluster alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bully_never_gives_a_term_two_leaders_across_starts_in_either_order() {
    let orders: [(&[usize], u64); 4] = [
        (&[0, 1, 2], 0),
        (&[2, 1, 0], 0),
        (&[0, 1, 2], 20),
        (&[2, 1, 0], 20),
    ];
    for (order, stagger) in orders {
        let mut c = BullyCluster::new(3, 3, &[]).await;
        c.start_together(order, Duration::from_millis(stagger))
            .await;
        // Settled: the lowest id leads (rule 3). Before that, a leader some member follows may
        // lead an older term than a lone one that yielded to it (rule 8), so only the settled
        // leader is sure to hold the newest term.
        c.leader_is(&[0, 1, 2], 0, Duration::from_secs(30)).await;
        let by_term = leaders_by_term(&c, &[0, 1, 2]);
        for (term, ids) in &by_term {
            assert_eq!(
                ids.len(),
                1,
                "starts {order:?}, {stagger} ms apart: term {term} was led by {ids:?} (all: {by_term:?})"
            );
        }
        let last = by_term.iter().next_back().expect("somebody led");
        assert_eq!(
            last.1,
            &vec![c.nodes[0].id.clone()],
            "starts {order:?}, {stagger} ms apart: the settled leader does not hold the newest term (all: {by_term:?})"
        );
        for i in 0..3 {
            c.stop(i).await;
        }
    }
}

/// The same in KUBERNETES mode: pods start one after another in either order, each listed as
/// soon as it runs, so each in turn becomes the lowest ready pod and takes a term.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubernetes_never_gives_a_term_two_leaders_across_starts_in_either_order() {
    let names = ["folio-0", "folio-1", "folio-2"];
    for order in [[2, 1, 0], [0, 1, 2]] {
        let api = FakeApi::start().await;
        let mut pods: Vec<(usize, TestServer)> = Vec::new();
        let mut listed: Vec<&str> = Vec::new();
        for i in order {
            let mut o = api.overrides(names[i]);
            o.push(("cluster.shared.secret".into(), SECRET.into()));
            o.push(("cluster.poll.interval".into(), "1s".into()));
            let refs: Vec<(&str, &str)> = o.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let s = start(&refs).await;
            api.place(names[i], s.addr());
            listed.push(names[i]);
            api.list(&listed);
            pods.push((i, s));
        }
        let servers: Vec<&TestServer> = pods.iter().map(|(_, s)| s).collect();
        // Every pod has read the whole list (the lowest, folio-0, leads) before the checks.
        wait_for(
            "every pod to follow folio-0",
            Duration::from_secs(30),
            || async {
                for s in &servers {
                    let h = s.get("health", None).await;
                    (h.body["leader"]["id"] == "folio-0").then_some(())?;
                }
                Some(())
            },
        )
        .await;
        conformance("KUBERNETES", &servers).await;
        let mut by_term: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
        for (i, s) in &pods {
            let k = s.state().kubernetes.clone().expect("a KUBERNETES server");
            for t in k.led() {
                by_term.entry(t).or_default().push(names[*i]);
            }
        }
        for (term, led) in &by_term {
            assert_eq!(
                led.len(),
                1,
                "starts {order:?}: term {term} was led by {led:?} (all: {by_term:?})"
            );
        }
        for (_, s) in pods {
            s.stop().await;
        }
    }
}
