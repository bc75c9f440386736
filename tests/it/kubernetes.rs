//! KUBERNETES mode against a stand-in API server (see `kube_api`): the lowest ready pod name
//! leads, a pod that disappears hands leadership on, a pod that is not ready is ignored, and a
//! pod that comes back takes the lead again.

use std::time::Duration;

use serde_json::json;

use crate::harness::*;
use crate::kube_api::FakeApi;

const DEADLINE: Duration = Duration::from_secs(20);

async fn pod(api: &FakeApi, name: &str, dir: Option<tempfile::TempDir>) -> TestServer {
    let mut o: Vec<(String, String)> = api.overrides(name);
    o.extend([
        ("cluster.shared.secret".to_string(), SECRET.to_string()),
        ("cluster.poll.interval".to_string(), "1s".to_string()),
        ("cluster.push.timeout".to_string(), "1s".to_string()),
    ]);
    let refs: Vec<(&str, &str)> = o.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let s = match dir {
        Some(d) => start_in(d, &refs).await,
        None => start(&refs).await,
    };
    api.place(name, s.addr());
    s
}

async fn leader_everywhere(servers: &[&TestServer], leader: &str) {
    wait_for(&format!("{leader} to lead"), DEADLINE, || async {
        for s in servers {
            let h = s.get("health", None).await;
            if h.body["leader"]["id"] != leader {
                return None;
            }
            if (h.body["role"] == "leader") != (s.state().server_id == leader) {
                return None;
            }
        }
        Some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_lowest_ready_pod_leads_and_leadership_follows_the_pod_list() {
    let api = FakeApi::start().await;
    api.list(&[]);
    let p0 = pod(&api, "folio-0", None).await;
    let p1 = pod(&api, "folio-1", None).await;
    let p2 = pod(&api, "folio-2", None).await;
    // folio-3 is in the recorded list but not ready (its container is still starting).
    api.list(&["folio-0", "folio-1", "folio-2", "folio-3"]);
    leader_everywhere(&[&p0, &p1, &p2], "folio-0").await;
    let t = p1.admin().await;
    let view = p1.get("api/v1/cluster", Some(&t)).await;
    assert_eq!(view.body["mode"], "KUBERNETES");
    let ids: Vec<&str> = view.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec!["folio-1", "folio-0", "folio-2"],
        "the not-ready pod is ignored: {}",
        view.text
    );

    let t2 = p2.admin().await;
    let w = p2
        .put_json(
            "api/v1/workbooks/k8s",
            Some(&t2),
            &json!({"name": "k", "content": 1}),
        )
        .await;
    assert_eq!(w.body["state"], "committed", "{}", w.text);
    converged(&[&p0, &p1, &p2]).await;

    // folio-0's pod goes away: folio-1 leads with a new term; edits keep flowing.
    let term = p1.state().terms.current();
    api.list(&["folio-1", "folio-2", "folio-3"]);
    let dir0 = p0.stop().await;
    leader_everywhere(&[&p1, &p2], "folio-1").await;
    assert!(p1.state().terms.current() > term);
    let w = p2
        .put_json(
            "api/v1/workbooks/k8s",
            Some(&t2),
            &json!({"name": "k", "content": 2}),
        )
        .await;
    assert_eq!(w.body["state"], "committed", "{}", w.text);
    converged(&[&p1, &p2]).await;
    assert!(p2.metric("folio_leader_changes_total").await >= 2.0);

    // It comes back: the lowest name leads again, and it catches up.
    let p0 = pod(&api, "folio-0", Some(dir0)).await;
    api.list(&["folio-0", "folio-1", "folio-2", "folio-3"]);
    leader_everywhere(&[&p0, &p1, &p2], "folio-0").await;
    converged(&[&p0, &p1, &p2]).await;
    let t0 = p0.admin().await;
    assert_eq!(
        p0.get("api/v1/workbooks/k8s", Some(&t0)).await.body["content"],
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_leaves_the_server_without_a_leader_and_says_why_once() {
    let api = FakeApi::start().await;
    api.list(&["folio-0"]);
    std::fs::write(api.dir.path().join("token"), "not-the-token").unwrap();
    let p0 = pod(&api, "folio-0", None).await;
    let h = p0.get("health", None).await;
    assert_eq!(h.body["leader"], serde_json::Value::Null, "{}", h.text);
    assert_eq!(h.body["role"], "follower");
    // Without a leader, saves are kept as pending instead of forking the content.
    let t = p0.admin().await;
    let w = p0
        .put_json(
            "api/v1/workbooks/x",
            Some(&t),
            &json!({"name": "x", "content": 1}),
        )
        .await;
    assert_eq!(w.status, 202, "{}", w.text);
    // The token is fixed (rotated): the next refresh reads it again.
    std::fs::write(api.dir.path().join("token"), crate::kube_api::TOKEN).unwrap();
    leader_everywhere(&[&p0], "folio-0").await;
}

#[tokio::test]
async fn missing_service_account_files_refuse_to_start_with_a_clear_message() {
    let api = FakeApi::start().await;
    let mut o = api.overrides("folio-0");
    o.push((
        "cluster.kubernetes.token_file".into(),
        "/nonexistent/token".into(),
    ));
    o.push(("cluster.shared.secret".into(), SECRET.into()));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d").to_str().unwrap().to_string();
    o.push(("server.data_dir".into(), data));
    o.push(("server.listen".into(), "127.0.0.1:0".into()));
    let refs: Vec<(&str, &str)> = o.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let config = folio::config::Config::with_overrides(&refs).unwrap();
    let err = folio::server::start(config)
        .await
        .err()
        .expect("must not start")
        .to_string();
    assert!(
        err.contains("KUBERNETES") && err.contains("/nonexistent/token"),
        "{err}"
    );
}

/// Being listed by the API server is not being reachable: a ready pod this server never hears
/// from is shown unreachable, and an API server that refuses the token is shown in /health and
/// the cluster view with the time of its last good answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_view_tells_what_this_server_heard_and_how_the_api_server_answers() {
    let api = FakeApi::start().await;
    api.list(&[]);
    let p0 = pod(&api, "folio-0", None).await;
    let p1 = pod(&api, "folio-1", None).await;
    // folio-2 is listed ready, at an address where nothing listens.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    api.place("folio-2", dead);
    api.list(&["folio-0", "folio-1", "folio-2"]);
    leader_everywhere(&[&p0, &p1], "folio-0").await;
    let t0 = p0.admin().await;
    wait_for("the leader to hear folio-1", DEADLINE, || async {
        (health_of(&p0, &t0, "folio-1").await == "reachable").then_some(())
    })
    .await;
    assert_eq!(health_of(&p0, &t0, "folio-2").await, "unreachable");
    let h = p0.get("health", None).await.body;
    assert_eq!(h["membership_source"]["ok"], true, "{h}");
    let listed = h["membership_source"]["last_success"].clone();
    assert!(listed.is_string(), "{h}");

    // The token is refused (a rotated secret not mounted yet): said where operators look.
    std::fs::write(api.dir.path().join("token"), "not-the-token").unwrap();
    wait_for("the refusal to show", DEADLINE, || async {
        let h = p0.get("health", None).await.body;
        let source = &h["membership_source"];
        (source["ok"] == false
            && source["error"].as_str().unwrap_or_default().contains("401")
            && source["last_success"].is_string())
        .then_some(())
    })
    .await;
    let view = p0.get("api/v1/cluster", Some(&t0)).await.body;
    assert_eq!(view["membership_source"]["ok"], false, "{view}");
    assert_eq!(
        view["membership_source"]["name"],
        "the Kubernetes API server"
    );

    std::fs::write(api.dir.path().join("token"), crate::kube_api::TOKEN).unwrap();
    wait_for("the API server to be heard again", DEADLINE, || async {
        let h = p0.get("health", None).await.body;
        (h["membership_source"]["ok"] == true && h["membership_source"]["error"].is_null())
            .then_some(())
    })
    .await;
}

/// The manifests in `deploy/kubernetes/` are valid Kubernetes objects, checked strictly (no
/// unknown field) against the schema by `kubernetes-validate` (PyPI; scripts/test installs it),
/// and the StatefulSet names what the discovery test above runs with.
#[test]
fn the_manifests_validate_strictly_and_drive_the_discovery_test() {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes"));
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "{files:?}");
    for f in &files {
        let out = std::process::Command::new("kubernetes-validate")
            .arg("--strict")
            .arg(f)
            .output()
            .expect("kubernetes-validate is installed (scripts/test puts it in a virtualenv)");
        assert!(
            out.status.success(),
            "{}: {}{}",
            f.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let kustomization = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        assert!(
            kustomization.contains(name),
            "kustomization.yaml lacks {name}"
        );
    }
    let settings = crate::kube_api::manifest_settings();
    for (key, value) in [
        ("cluster.mode", "KUBERNETES"),
        (
            "cluster.kubernetes.label_selector",
            crate::kube_api::SELECTOR,
        ),
        ("cluster.kubernetes.container_name", "folio"),
    ] {
        assert!(
            settings.iter().any(|(k, v)| k == key && v == value),
            "{key}={value} not in {settings:?}"
        );
    }
}
