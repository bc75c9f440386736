//! Operations: health and readiness through the lifecycle, drain, metrics, the cluster view of a
//! stand-alone server, JSON answers for unknown routes.

use reqwest::Method;
use serde_json::json;
use std::time::Duration;

use crate::harness::*;

#[tokio::test]
async fn health_ready_and_drain() {
    let s = start(&[]).await;
    let h = s.get("health", None).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.body["lifecycle"], "RUNNING");
    assert_eq!(h.body["mode"], "NONE");
    assert_eq!(h.body["role"], "standalone");
    assert!(
        h.body["version"].is_string() && h.body["term"].is_number() && h.body["lag"].is_number()
    );
    // No checkpoint has failed: the count is there, at zero, with no error.
    assert_eq!(h.body["storage"]["checkpoint_failures"], 0, "{}", h.text);
    assert!(
        h.body["storage"]["checkpoint_error"].is_null(),
        "{}",
        h.text
    );
    assert_eq!(s.metric("folio_store_checkpoint_failures").await, 0.0);
    assert_eq!(s.get("ready", None).await.status, 200);

    let t = s.admin().await;
    let d = s.call(Method::POST, "api/v1/drain", Some(&t), None).await;
    assert_eq!(d.status, 202);
    let r = s.get("ready", None).await;
    assert_eq!(r.error(503), "not_ready");
    assert_eq!(r.body["error"]["lifecycle"], "DRAINING");
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(s.get("health", None).await.body["lifecycle"], "DRAINING");
    // A draining server still serves the sessions that are routed to it.
    assert_eq!(
        s.create(&t, "workbooks", "late", json!(1)).await["state"],
        "committed"
    );
}

#[tokio::test]
async fn shutdown_drains_before_stopping() {
    let s = start(&[("server.drain.grace", "2s")]).await;
    let url = s.url.clone();
    let mut s = s;
    let running = s.running.take().unwrap();
    let stopper = tokio::spawn(running.shutdown());
    let http = client();
    wait_for("ready to answer 503", Duration::from_secs(10), || {
        let http = http.clone();
        let url = url.clone();
        async move {
            let r = http.get(format!("{url}ready")).send().await.ok()?;
            (r.status() == 503).then_some(())
        }
    })
    .await;
    let h: serde_json::Value = http
        .get(format!("{url}health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["lifecycle"], "DRAINING");
    stopper.await.unwrap();
    assert!(
        http.get(format!("{url}health")).send().await.is_err(),
        "the listener is closed after the drain"
    );
}

#[tokio::test]
async fn metrics_count_requests_and_items() {
    let s = start(&[]).await;
    let t = s.admin().await;
    s.create(&t, "workbooks", "a", json!(1)).await;
    s.create(&t, "workbooks", "b", json!(2)).await;
    s.create(&t, "datasources", "c", json!(3)).await;
    let m = s
        .http
        .get(format!("{}metrics", s.url))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(m.status(), 200);
    assert!(
        m.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = m.text().await.unwrap();
    assert!(
        text.contains(r#"folio_items{collection="workbooks"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"folio_items{collection="datasources"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"folio_http_requests_total{route="/api/v1/{coll:workbooks|datasources}",method="POST",status="201"} 3"#),
        "{text}"
    );
    assert!(
        text.contains("folio_http_request_duration_seconds_bucket"),
        "{text}"
    );
    let size_line = text
        .lines()
        .find(|l| l.starts_with("folio_store_size_bytes "))
        .unwrap();
    assert!(size_line.split(' ').nth(1).unwrap().parse::<u64>().unwrap() > 0);
    assert!(!text.contains(ADMIN_PW));
}

#[tokio::test]
async fn cluster_view_and_unknown_routes() {
    let s = start(&[("server.id", "solo-1")]).await;
    let t = s.admin().await;
    let c = s.get("api/v1/cluster", Some(&t)).await;
    assert_eq!(c.status, 200);
    assert_eq!(c.body["mode"], "NONE");
    assert_eq!(c.body["leader"]["id"], "solo-1");
    assert_eq!(c.body["members"].as_array().unwrap().len(), 1);
    assert_eq!(
        s.get("api/v1/nothing-here", Some(&t)).await.error(404),
        "not_found"
    );
    assert_eq!(s.get("favicon.ico", None).await.error(404), "not_found");
}

#[tokio::test]
async fn context_path_prefixes_every_route() {
    let s = start(&[("server.context_path", "/folio/")]).await;
    assert!(s.url.ends_with("/folio/"), "{}", s.url);
    assert_eq!(s.get("health", None).await.status, 200);
    let root = answer(
        s.http
            .get(s.url.replace("/folio/", "/health"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(root.error(404), "not_found");
    let login = s
        .http
        .post(format!("{}api/v1/login", s.url))
        .json(&json!({"username": ADMIN, "password": ADMIN_PW}))
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("Path=/folio"), "{cookie}");
}

#[tokio::test]
async fn a_drain_is_cancelled_back_to_running_and_a_drained_server_stops_at_once() {
    // A grace far longer than the waits below: a stop that waited it would fail them.
    let mut s = start(&[("server.drain.grace", "10m")]).await;
    let t = s.admin().await;
    let not_draining = s.call(Method::DELETE, "api/v1/drain", Some(&t), None).await;
    assert_eq!(not_draining.error(409), "not_draining");
    assert_eq!(not_draining.body["error"]["lifecycle"], "RUNNING");

    folio_ok(&["drain", "--url", &s.url]).await;
    assert_eq!(s.get("ready", None).await.error(503), "not_ready");
    let out = folio_ok(&["drain", "--cancel", "--url", &s.url]).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("RUNNING"),
        "{out:?}"
    );
    assert_eq!(s.get("ready", None).await.status, 200);
    assert_eq!(s.get("health", None).await.body["lifecycle"], "RUNNING");

    // Drained by the operator, then asked to stop: no second grace.
    assert_eq!(
        s.call(Method::POST, "api/v1/drain", Some(&t), None)
            .await
            .status,
        202
    );
    let running = s.running.take().unwrap();
    tokio::time::timeout(Duration::from_secs(30), running.shutdown())
        .await
        .expect("a drained server stops without waiting server.drain.grace again");
}

#[tokio::test]
async fn a_stopping_server_cannot_be_made_ready_again() {
    let mut s = start(&[("server.drain.grace", "10m")]).await;
    let t = s.admin().await;
    let running = s.running.take().unwrap();
    let url = s.url.clone();
    let stopper = tokio::spawn(running.shutdown());
    wait_for("ready to answer 503", Duration::from_secs(10), || async {
        let r = client().get(format!("{url}ready")).send().await.ok()?;
        (r.status() == 503).then_some(())
    })
    .await;
    let refused = s.call(Method::DELETE, "api/v1/drain", Some(&t), None).await;
    assert_eq!(refused.error(409), "not_draining");
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stopping"),
        "{}",
        refused.text
    );
    assert_eq!(s.get("ready", None).await.error(503), "not_ready");
    stopper.abort();
}

#[tokio::test]
async fn the_root_leads_to_the_admin_page() {
    let s = start(&[]).await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirects.get(&s.url).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/admin");
    let page = s.http.get(&s.url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<html"));
    assert!(
        !s.get("health", None)
            .await
            .headers
            .contains_key("strict-transport-security"),
        "plain HTTP answers carry no HSTS"
    );
}

/// Runs `program` with `args`, `input` on its standard input; answers whether it succeeded and
/// what it printed (standard output, then standard error).
async fn piped(program: &str, args: &[&str], input: &str) -> (bool, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} runs (scripts/test installs it): {e}"));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// Runs Debian's `promtool check metrics` on a scrape; answers what it printed (nothing when the
/// scrape is clean).
async fn promtool(scrape: &str) -> String {
    let (ok, said) = piped("promtool", &["check", "metrics"], scrape).await;
    assert!(ok, "promtool refused the scrape: {said}\n{scrape}");
    said
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_are_current_when_scraped_and_pass_promtool() {
    let mut c = FixedCluster::start(2, &[]).await;
    c.converged().await;
    let t = c.leader.admin().await;
    let lag = r#"folio_follower_lag_changes{peer="f1"}"#;
    // The leader has seen f1 poll from its head.
    wait_for(
        "f1 to poll from the head",
        Duration::from_secs(10),
        || async {
            (c.leader.metric(lag).await == 0.0 && metric_text(&c.leader).await.contains(lag))
                .then_some(())
        },
    )
    .await;
    let term = c.leader.get("api/v1/cluster", Some(&t)).await.body["term"]
        .as_f64()
        .unwrap();
    assert!(term >= 1.0);
    assert_eq!(c.leader.metric("folio_term").await, term);

    // f1 stops; three saves on the leader: its lag is 3 at the next scrape, and its last
    // contact ages from one scrape to the next.
    c.followers[0].running.take().unwrap().stop().await;
    for i in 0..3 {
        c.leader
            .create(&t, "workbooks", &format!("w{i}"), json!(i))
            .await;
    }
    assert_eq!(c.leader.metric(lag).await, 3.0);
    let contact = r#"folio_peer_last_contact_seconds{peer="f1"}"#;
    let first = c.leader.metric(contact).await;
    let second = c.leader.metric(contact).await;
    assert!(second > first && first > 0.0, "{first} then {second}");

    // A follower knows its leader's last answer and clock offset, in seconds.
    let f2 = metric_text(&c.followers[1]).await;
    assert!(
        f2.contains(r#"folio_peer_last_contact_seconds{peer="leader"}"#),
        "{f2}"
    );
    assert!(
        f2.contains(r#"folio_clock_offset_seconds{peer="leader"}"#),
        "{f2}"
    );
    assert!(!f2.contains("clock_offset_ms"), "{f2}");

    // Prometheus' own checker finds nothing to say about either server's text format.
    for s in [&c.leader, &c.followers[1]] {
        let text = metric_text(s).await;
        assert_eq!(promtool(&text).await, "", "{text}");
    }
    // OpenMetrics when asked for, with the same values.
    let om = c
        .leader
        .http
        .get(format!("{}metrics", c.leader.url))
        .header(
            "accept",
            "application/openmetrics-text; version=1.0.0,text/plain;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert!(
        om.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let om = om.text().await.unwrap();
    assert!(om.ends_with("# EOF\n"), "{om}");
    // promtool reads only the text format; the Prometheus client's own OpenMetrics parser
    // (strict: it refuses what the specification does not allow) checks this one.
    openmetrics_parses(&om).await;
    assert!(om.contains(&format!("{lag} 3")), "{om}");
}

/// Parses an OpenMetrics scrape with the Python Prometheus client's parser (scripts/test puts it
/// in a virtualenv on the PATH); fails the test when it refuses the scrape.
async fn openmetrics_parses(scrape: &str) {
    let script = "import sys\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
        families = list(text_string_to_metric_families(sys.stdin.read()))\n\
        assert families, 'no metric family'\n";
    let (ok, said) = piped("python3", &["-c", script], scrape).await;
    assert!(
        ok,
        "the OpenMetrics parser refused the scrape: {said}\n{scrape}"
    );
}

/// The text format a scraper gets by default (and checks its content type).
async fn metric_text(s: &TestServer) -> String {
    let r = s
        .http
        .get(format!("{}metrics", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    r.text().await.unwrap()
}

/// Runs `folio` without a user's password, with a configuration file holding `secret`.
async fn folio_with_secret(secret: &str, args: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("folio.properties");
    std::fs::write(&conf, format!("cluster.shared.secret={secret}\n")).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_folio"))
        .arg("--config")
        .arg(&conf)
        .args(args)
        .env_remove("FOLIO_PASSWORD")
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// On a server's host, the operator commands authenticate with the configuration's shared
/// secret: drain, cancel and cluster status work without an admin's password, and the command
/// is not taken for a member of the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_authenticate_with_the_shared_secret() {
    let c = FixedCluster::start(1, &[]).await;
    c.converged().await;
    let f1 = &c.followers[0];

    let (ok, out, err) = folio_with_secret(SECRET, &["drain", "--url", &f1.url]).await;
    assert!(ok, "{err}");
    assert!(out.contains("DRAINING"), "{out}");
    assert_eq!(f1.get("ready", None).await.error(503), "not_ready");
    let (ok, out, err) = folio_with_secret(SECRET, &["cluster", "status", "--url", &f1.url]).await;
    assert!(ok, "{err}");
    assert!(out.contains("mode FIXED") && out.contains("f1"), "{out}");
    let (ok, out, err) = folio_with_secret(SECRET, &["drain", "--cancel", "--url", &f1.url]).await;
    assert!(ok, "{err}");
    assert!(out.contains("RUNNING"), "{out}");
    assert_eq!(f1.get("ready", None).await.status, 200);

    let (ok, _, err) = folio_with_secret("not-the-secret", &["drain", "--url", &f1.url]).await;
    assert!(!ok);
    assert!(err.contains("the shared secret was refused"), "{err}");
    let file = tempfile::tempdir().unwrap();
    let out_file = file.path().join("b.jsonl");
    let (ok, _, err) = folio_with_secret(
        SECRET,
        &[
            "backup",
            "--url",
            &f1.url,
            "--out",
            out_file.to_str().unwrap(),
        ],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("a backup needs a user"), "{err}");

    let t = c.leader.admin().await;
    let (ok, _, err) =
        folio_with_secret(SECRET, &["cluster", "status", "--url", &c.leader.url]).await;
    assert!(ok, "{err}");
    let view = c.leader.get("api/v1/cluster", Some(&t)).await.body;
    assert!(
        !view["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "operator"),
        "{view}"
    );
}
