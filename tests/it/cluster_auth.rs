//! The server-to-server API's guards: server tokens from a shared-secret proof (constant-time,
//! nonce and timestamp against replay, rotation overlap), token kinds kept apart, protocol
//! version and term fencing.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::*;
use folio::wire::{
    PROTOCOL, TokenRequest, make_request, make_request_answering, make_request_for, resign,
};

async fn exchange(s: &TestServer, req: &TokenRequest) -> Answer {
    answer(
        s.http
            .post(format!("{}cluster/v1/token", s.url))
            .header("folio-protocol", PROTOCOL.to_string())
            .json(req)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn server_token(s: &TestServer, secret: &str) -> String {
    let a = exchange(s, &make_request(secret, "tester")).await;
    assert_eq!(a.status, 200, "{}", a.text);
    a.body["token"].as_str().unwrap().to_string()
}

async fn cluster_call(
    s: &TestServer,
    method: Method,
    path: &str,
    token: &str,
    term: u64,
    body: Option<Value>,
) -> Answer {
    let mut req = s
        .http
        .request(method, format!("{}cluster/v1/{path}", s.url))
        .bearer_auth(token)
        .header("folio-protocol", PROTOCOL.to_string())
        .header("folio-term", term.to_string());
    if let Some(b) = body {
        req = req.json(&b);
    }
    answer(req.send().await.unwrap()).await
}

#[tokio::test]
async fn tokens_are_kept_apart_and_proofs_cannot_be_replayed_or_forged() {
    let s = start(&cluster_overrides("leader", &[])).await;
    let term = s.state().terms.current();
    let token = server_token(&s, SECRET).await;
    assert_eq!(
        cluster_call(&s, Method::GET, "digest", &token, term, None)
            .await
            .status,
        200
    );

    // A server token opens nothing on the user API.
    assert_eq!(
        s.get("api/v1/workbooks", Some(&token)).await.error(401),
        "unauthorized"
    );
    assert_eq!(
        s.get("api/v1/me", Some(&token)).await.error(401),
        "unauthorized"
    );
    // A user token (even an admin's) opens nothing on the cluster API.
    let user = s.admin().await;
    assert_eq!(
        cluster_call(&s, Method::GET, "digest", &user, term, None)
            .await
            .error(401),
        "unauthorized"
    );
    // No token at all.
    let none = answer(
        s.http
            .get(format!("{}cluster/v1/digest", s.url))
            .header("folio-protocol", "1")
            .header("folio-term", "1")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(none.error(401), "unauthorized");

    // A wrong secret is refused, and the answer leaks neither secret.
    let wrong = exchange(&s, &make_request("not-the-secret", "intruder")).await;
    assert_eq!(wrong.error(401), "unauthorized");
    assert!(!wrong.text.contains(SECRET) && !wrong.text.contains("not-the-secret"));
    // A proof is good once.
    let proof = make_request(SECRET, "tester");
    assert_eq!(exchange(&s, &proof).await.status, 200);
    let replay = exchange(&s, &proof).await;
    assert_eq!(replay.error(401), "unauthorized");
    assert!(
        replay.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already used")
    );
    // A tampered proof (another id under the same tag) is refused.
    let mut tampered = make_request(SECRET, "tester");
    tampered.id = "someone-else".into();
    assert_eq!(exchange(&s, &tampered).await.error(401), "unauthorized");
    // An old timestamp is refused even with a right tag.
    let mut old = make_request(SECRET, "tester");
    old.ts_ms -= 10 * 60 * 1000;
    assert_eq!(exchange(&s, &old).await.error(401), "unauthorized");
}

async fn challenge(s: &TestServer) -> String {
    let a = answer(
        s.http
            .post(format!("{}cluster/v1/challenge", s.url))
            .header("folio-protocol", PROTOCOL.to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["server"], s.state().server_id.as_str());
    a.body["challenge"].as_str().unwrap().to_string()
}

/// A proof answering a challenge is judged by the server that issued it alone: a timestamp ten
/// minutes off decides nothing, the challenge is good once, and only one this server issued.
/// An earlier version's proof, which answers none, is still judged by its timestamp.
#[tokio::test]
async fn a_proof_answering_a_challenge_needs_no_agreeing_clock_and_is_good_once() {
    let s = start(&cluster_overrides("leader", &[])).await;
    let ten_minutes = 10 * 60 * 1000;
    for off in [ten_minutes, -ten_minutes] {
        let mut far = make_request_answering(SECRET, "tester", None, &challenge(&s).await);
        far.ts_ms = far.ts_ms.saturating_add_signed(off);
        resign(SECRET, &mut far);
        let a = exchange(&s, &far).await;
        assert_eq!(a.status, 200, "a clock {off} ms off: {}", a.text);
        let replay = exchange(&s, &far).await;
        assert_eq!(replay.error(401), "unauthorized");
        assert!(replay.text.contains("challenge"), "{}", replay.text);
    }
    // A challenge this server never issued.
    let made_up = make_request_answering(SECRET, "tester", None, &"00".repeat(16));
    let a = exchange(&s, &made_up).await;
    assert_eq!(a.error(401), "unauthorized");
    assert!(a.text.contains("challenge"), "{}", a.text);
    // A wrong secret answering a real challenge.
    let c = challenge(&s).await;
    let wrong = exchange(&s, &make_request_answering("not-the-secret", "x", None, &c)).await;
    assert_eq!(wrong.error(401), "unauthorized");
    // An earlier version's proof: its timestamp must be within 60 s of this server's clock.
    let mut old = make_request(SECRET, "tester");
    old.ts_ms -= ten_minutes as u64;
    resign(SECRET, &mut old);
    let a = exchange(&s, &old).await;
    assert_eq!(a.error(401), "unauthorized");
    assert!(a.text.contains("timestamp"), "{}", a.text);
    assert_eq!(
        exchange(&s, &make_request(SECRET, "tester")).await.status,
        200
    );
}

#[tokio::test]
async fn protocol_mismatch_is_refused_with_both_versions_named() {
    let s = start(&cluster_overrides("leader", &[])).await;
    let token = server_token(&s, SECRET).await;
    let a = answer(
        s.http
            .get(format!("{}cluster/v1/digest", s.url))
            .bearer_auth(&token)
            .header("folio-protocol", "99")
            .header("folio-term", "1")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a.error(400), "protocol_mismatch");
    let msg = a.body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("protocol {PROTOCOL}")) && msg.contains("protocol 99"),
        "{msg}"
    );
    let mut req = make_request(SECRET, "tester");
    req.protocol = 7;
    let t = answer(
        s.http
            .post(format!("{}cluster/v1/token", s.url))
            .header("folio-protocol", "7")
            .json(&req)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(t.error(400), "protocol_mismatch");
}

#[tokio::test]
async fn expired_server_tokens_are_refused() {
    let s = start(&cluster_overrides("leader", &[("cluster.token.ttl", "1s")])).await;
    let term = s.state().terms.current();
    let token = server_token(&s, SECRET).await;
    assert_eq!(
        cluster_call(&s, Method::GET, "digest", &token, term, None)
            .await
            .status,
        200
    );
    wait_for("the token to expire", Duration::from_secs(10), || async {
        (cluster_call(&s, Method::GET, "digest", &token, term, None)
            .await
            .status
            == 401)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn secret_rotation_accepts_the_previous_secret_during_the_overlap_only() {
    let s = start(&cluster_overrides(
        "leader",
        &[
            ("cluster.shared.secret", "new-secret"),
            ("cluster.shared.secret.previous", "old-secret"),
        ],
    ))
    .await;
    assert_eq!(
        exchange(&s, &make_request("old-secret", "a")).await.status,
        200,
        "old secret accepted during the overlap"
    );
    assert_eq!(
        exchange(&s, &make_request("new-secret", "b")).await.status,
        200
    );
    let dir = s.stop().await;
    // The overlap ends: the previous secret is removed from the configuration.
    let s = start_in(
        dir,
        &cluster_overrides("leader", &[("cluster.shared.secret", "new-secret")]),
    )
    .await;
    assert_eq!(
        exchange(&s, &make_request("old-secret", "a"))
            .await
            .error(401),
        "unauthorized"
    );
    assert_eq!(
        exchange(&s, &make_request("new-secret", "b")).await.status,
        200
    );
}

#[tokio::test]
async fn a_call_from_an_older_term_is_refused_and_changes_nothing() {
    let s = start(&cluster_overrides("leader", &[])).await;
    let term = s.state().terms.current();
    assert!(term >= 1, "a FIXED leader takes a term when it starts");
    let token = server_token(&s, SECRET).await;
    let content = json!({"v": 1});
    let rev = folio::store::item::next_rev(None, "fenced", false, &content);
    let item = json!({"id": "fenced", "name": "fenced", "content": content, "rev": rev, "updated_at": "t",
        "updated_by": "old-leader", "origin": "old-leader", "ancestors": []});
    let body = json!({"edits": [{"collection": "workbooks", "item": item}]});
    let before = s.snapshot().await;
    let stale = cluster_call(
        &s,
        Method::POST,
        "push",
        &token,
        term - 1,
        Some(body.clone()),
    )
    .await;
    assert_eq!(stale.error(409), "stale_term");
    assert_eq!(stale.body["error"]["term"], term);
    assert_eq!(s.snapshot().await, before, "a fenced call changes nothing");
    assert_eq!(s.state().terms.current(), term);
    // The same call at the current term is accepted; a newer term is adopted.
    let ok = cluster_call(&s, Method::POST, "push", &token, term + 3, Some(body)).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.body["outcomes"][0]["outcome"], "accepted");
    assert_eq!(s.state().terms.current(), term + 3);
    assert_eq!(ok.body["term"], term + 3);
}

#[tokio::test]
async fn a_stand_alone_server_has_no_cluster_api() {
    let s = start(&[]).await;
    let a = exchange(&s, &make_request("anything", "x")).await;
    assert_eq!(a.error(404), "not_clustered");
}

#[tokio::test]
async fn a_cursor_ahead_of_the_leaders_store_asks_for_a_reconcile() {
    let s = start(&cluster_overrides("leader", &[])).await;
    let term = s.state().terms.current();
    let token = server_token(&s, SECRET).await;
    let inc = s.store().incarnation().to_string();
    let ok = cluster_call(
        &s,
        Method::GET,
        &format!("changes?incarnation={inc}&since=0"),
        &token,
        term,
        None,
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let ahead = cluster_call(
        &s,
        Method::GET,
        &format!("changes?incarnation={inc}&since=999999999"),
        &token,
        term,
        None,
    )
    .await;
    assert_eq!(ahead.error(410), "cursor_reset");
    let other = cluster_call(
        &s,
        Method::GET,
        "changes?incarnation=someone-else&since=0",
        &token,
        term,
        None,
    )
    .await;
    assert_eq!(other.error(410), "cursor_reset");
}

/// A proof names the server it is meant for: the same proof sent to another server of the
/// cluster is refused there (it cannot be replayed), and neither can its audience be changed or
/// dropped without breaking the proof. The cluster's own servers bind every proof.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_for_one_server_is_refused_by_another() {
    let c = FixedCluster::start(1, &[]).await;
    c.converged().await;
    let (leader, f1) = (&c.leader, &c.followers[0]);
    let proof = make_request_for(SECRET, "tester", Some("f1"));
    let elsewhere = exchange(leader, &proof).await;
    assert_eq!(elsewhere.error(401), "proof_for_another_server");
    assert!(
        elsewhere.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("meant for server f1"),
        "{}",
        elsewhere.text
    );
    let mut readdressed = proof.clone();
    readdressed.audience = Some("leader".into());
    assert_eq!(
        exchange(leader, &readdressed).await.error(401),
        "unauthorized"
    );
    let mut unaddressed = proof.clone();
    unaddressed.audience = None;
    assert_eq!(
        exchange(leader, &unaddressed).await.error(401),
        "unauthorized"
    );
    // Where it was meant to go, it is good (once).
    assert_eq!(exchange(f1, &proof).await.status, 200);
    // The followers' own exchanges with the leader name it: the cluster works as before.
    let t = leader.admin().await;
    let w = leader.create(&t, "workbooks", "bound", json!(1)).await;
    c.converged().await;
    let t1 = f1.login(ADMIN, ADMIN_PW).await;
    let path = format!("api/v1/workbooks/{}", w["id"].as_str().unwrap());
    assert_eq!(f1.get(&path, Some(&t1)).await.status, 200);
}

/// A pushed delta is applied to its base and checked against the pushed revision: one whose base
/// the leader does not hold, or that gives other content, is refused (409
/// `delta_base_missing`, so the follower pushes whole) and changes nothing.
#[tokio::test]
async fn a_pushed_delta_applies_to_its_base_and_a_corrupt_one_changes_nothing() {
    use folio::store::item::next_rev;
    let s = start(&cluster_overrides("leader", &[])).await;
    let term = s.state().terms.current();
    let token = server_token(&s, SECRET).await;
    let admin = s.admin().await;
    let body = folio_sample::workbook("big", 3, 64 << 10);
    let made = s
        .put_json("api/v1/workbooks/big", Some(&admin), &body)
        .await;
    assert!(made.status.is_success(), "{}", made.text);
    let base_rev = made.body["rev"].as_str().unwrap().to_string();
    let edited = folio_sample::edited(&body, "A new title");
    let rev = next_rev(
        Some(&base_rev),
        edited["name"].as_str().unwrap(),
        false,
        &edited["content"],
    );
    let patch = json_patch::diff(&body["content"], &edited["content"]);
    let push = |base: &str, patch: &json_patch::Patch| {
        json!({"edits": [{"collection": "workbooks", "delta": {"base": base, "patch": patch},
            "item": {"id": "big", "name": edited["name"], "content": null, "rev": rev,
                     "ancestors": [base_rev], "updated_at": "2026-01-01T00:00:00Z",
                     "updated_by": "admin", "origin": "f1"}}]})
    };
    let pushed = |body: Value| cluster_call(&s, Method::POST, "push", &token, term, Some(body));
    let current = || async {
        s.get("api/v1/workbooks/big", Some(&admin)).await.body["rev"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // A base the leader never held.
    let unknown = "1-00000000000000000000000000000000";
    let a = pushed(push(unknown, &patch)).await;
    assert_eq!(a.status, 409, "{}", a.text);
    assert_eq!(a.body["error"]["code"], "delta_base_missing", "{}", a.text);
    assert_eq!(current().await, base_rev);
    // A patch that does not give the pushed revision.
    let wrong = json_patch::diff(&body["content"], &json!({"other": true}));
    let a = pushed(push(&base_rev, &wrong)).await;
    assert_eq!(a.status, 409, "{}", a.text);
    assert_eq!(current().await, base_rev);

    // The right one is taken whole.
    let a = pushed(push(&base_rev, &patch)).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["outcomes"][0]["outcome"], "accepted", "{}", a.text);
    let got = s.get("api/v1/workbooks/big", Some(&admin)).await;
    assert_eq!(got.body["rev"], rev.as_str());
    assert_eq!(got.body["content"], edited["content"]);
}

/// A push asking `gaps=refuse` whose chain starts above a revision the leader lacks (revision 3
/// pushed on a leader that holds 1: revision 2 would be missing from its history) is refused
/// with `409 line_gap` naming the item, and changes nothing; the same revision marked as the
/// first of the item's whole line is taken. A push without `gaps` (an earlier version's) is
/// taken as before.
#[tokio::test]
async fn a_push_skipping_a_revision_the_leader_lacks_is_refused_then_taken_as_a_whole_line() {
    use folio::store::item::next_rev;
    let s = start(&cluster_overrides("leader", &[])).await;
    let term = s.state().terms.current();
    let token = server_token(&s, SECRET).await;
    let admin = s.admin().await;
    let made = s
        .put_json(
            "api/v1/workbooks/w",
            Some(&admin),
            &json!({"name": "w", "content": 1}),
        )
        .await;
    assert!(made.status.is_success(), "{}", made.text);
    let r1 = made.body["rev"].as_str().unwrap().to_string();
    let r2 = next_rev(Some(&r1), "w", false, &json!(2));
    let r3 = next_rev(Some(&r2), "w", false, &json!(3));
    let edit = |whole: bool| {
        json!({"edits": [{"collection": "workbooks", "whole": whole,
            "item": {"id": "w", "name": "w", "content": 3, "rev": r3,
                     "ancestors": [r2, r1], "updated_at": "2026-01-01T00:00:00Z",
                     "updated_by": "admin", "origin": "f1"}}]})
    };
    let pushed = |path: &'static str, body: Value| {
        cluster_call(&s, Method::POST, path, &token, term, Some(body))
    };
    let current = || async {
        s.get("api/v1/workbooks/w", Some(&admin)).await.body["rev"]
            .as_str()
            .unwrap()
            .to_string()
    };

    let a = pushed("push?gaps=refuse", edit(false)).await;
    assert_eq!(a.status, 409, "{}", a.text);
    assert_eq!(a.body["error"]["code"], "line_gap", "{}", a.text);
    assert_eq!(a.body["error"]["items"], json!([["workbooks", "w"]]));
    assert_eq!(current().await, r1, "nothing changed");

    let a = pushed("push?gaps=refuse", edit(true)).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["outcomes"][0]["outcome"], "accepted", "{}", a.text);
    assert_eq!(current().await, r3);

    // Without `gaps`, as an earlier version pushes, a gap is taken: r5 above r4, never pushed.
    let r4 = next_rev(Some(&r3), "w", false, &json!(4));
    let r5 = next_rev(Some(&r4), "w", false, &json!(5));
    let old = json!({"edits": [{"collection": "workbooks",
        "item": {"id": "w", "name": "w", "content": 5, "rev": r5,
                 "ancestors": [r4, r3, r2, r1], "updated_at": "2026-01-01T00:00:00Z",
                 "updated_by": "admin", "origin": "f1"}}]});
    let a = pushed("push", old).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(current().await, r5);
}

/// The member `role` of `s`'s cluster view (the first).
async fn member_with_role(s: &TestServer, token: &str, role: &str) -> Value {
    let view = s.get("api/v1/cluster", Some(token)).await.body;
    view["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == role)
        .cloned()
        .unwrap_or(Value::Null)
}

/// A follower whose shared secret differs from the leader's: the leader answers and refuses it,
/// and the follower says so (`refusing`, with the leader's reason) in `/health`, its cluster
/// view and on its page, without the secret in the reason. Once the leader (restarted on the
/// same address) also accepts that secret, the running follower says `reachable`, the reason
/// and the page's alert go.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_refusing_a_follower_is_shown_refusing_with_its_reason() {
    // A fixed address, so that the leader can be restarted where the follower looks for it.
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let leader = start(&cluster_overrides("leader", &[("server.listen", &listen)])).await;
    let url = leader.url.clone();
    let wrong = "not-this-clusters-secret";
    let f = start(&cluster_overrides(
        "f1",
        &[
            ("cluster.fixed.leader", &url),
            ("cluster.shared.secret", wrong),
        ],
    ))
    .await;
    let t = f.admin().await;
    let why = "does not match this cluster's shared secret";
    let health = wait_for(
        "the follower to say its leader refuses it",
        LINK,
        || async {
            let h = f.get("health", None).await.body;
            (h["leader_health"] == "refusing").then_some(h)
        },
    )
    .await;
    assert_eq!(health["leader_reachable"], false, "{health}");
    assert_eq!(health["can_commit"], false, "{health}");
    let error = health["leader_error"].as_str().unwrap_or_default();
    assert!(error.contains("401") && error.contains(why), "{health}");
    let m = member_with_role(&f, &t, "leader").await;
    assert_eq!(m["health"], "refusing", "{m}");
    let reason = m["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(why), "{m}");
    for secret in [wrong, SECRET] {
        assert!(!reason.contains(secret) && !error.contains(secret));
    }
    // The follower's page says so too: in its alert and in the members' table.
    let b = crate::browser::Browser::start().await;
    b.login(&f.url, ADMIN, ADMIN_PW).await;
    b.shows("#leader-alert", "answers but refuses this server (f1)")
        .await;
    b.shows("#leader-alert", why).await;
    b.shows("#members .health-refusing", "refusing").await;
    b.shows("#members .health-reason", why).await;

    // The leader accepts the follower's secret as the previous one: the follower, still
    // running, says so.
    let dir = leader.stop().await;
    let _leader = start_in(
        dir,
        &cluster_overrides(
            "leader",
            &[
                ("server.listen", &listen),
                ("cluster.shared.secret.previous", wrong),
            ],
        ),
    )
    .await;
    wait_for("the follower to reach its leader", LINK, || async {
        let h = f.get("health", None).await.body;
        (h["leader_health"] == "reachable" && h["leader_error"].is_null()).then_some(())
    })
    .await;
    let m = member_with_role(&f, &t, "leader").await;
    assert_eq!(m["health"], "reachable", "{m}");
    assert!(m["reason"].is_null(), "{m}");
    wait_for("the page's alert to go", crate::browser::UI, || async {
        let e = b.d().find(thirtyfour::By::Id("leader-alert")).await.ok()?;
        (!e.is_displayed().await.ok()?).then_some(())
    })
    .await;
    b.shows("#notice", "reachable again").await;
}

/// How long a link's state may take to show.
const LINK: Duration = Duration::from_secs(20);
