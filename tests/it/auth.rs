//! Users, sessions and roles: login/logout with cookie and bearer token, role enforcement,
//! user management, login rate limiting.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn login_sets_a_strict_http_only_cookie_and_logout_ends_the_session() {
    let s = start(&[]).await;
    let resp = s
        .http
        .post(format!("{}api/v1/login", s.url))
        .json(&json!({"username": ADMIN, "password": ADMIN_PW}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("folio_session="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure"),
        "no Secure flag over plain HTTP: {cookie}"
    );
    let body: serde_json::Value = resp.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_string();
    assert_eq!(body["role"], "admin");

    // The cookie alone authenticates.
    let value = cookie.split(';').next().unwrap().to_string();
    let me = answer(
        s.http
            .get(format!("{}api/v1/me", s.url))
            .header("cookie", &value)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.body["user"], ADMIN);

    let out = s.logout(&token).await;
    assert_eq!(out.status, 200);
    assert_eq!(
        s.get("api/v1/me", Some(&token)).await.error(401),
        "unauthorized"
    );
    let by_cookie = answer(
        s.http
            .get(format!("{}api/v1/me", s.url))
            .header("cookie", &value)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        by_cookie.error(401),
        "unauthorized",
        "the token died with its session"
    );
}

#[tokio::test]
async fn roles_are_enforced_on_every_kind_of_route() {
    let s = start(&[]).await;
    let admin = s.admin().await;
    let editor = s.user_with_role(&admin, "ed", "editor").await;
    let viewer = s.user_with_role(&admin, "vi", "viewer").await;
    let w = s.create(&editor, "workbooks", "by editor", json!(1)).await;
    let id = w["id"].as_str().unwrap();

    // Viewer reads but cannot write.
    assert_eq!(
        s.get(&format!("api/v1/workbooks/{id}"), Some(&viewer))
            .await
            .status,
        200
    );
    let before = s.snapshot().await;
    let body = json!({"name": "x", "content": 1});
    assert_eq!(
        s.post_json("api/v1/workbooks", Some(&viewer), &body)
            .await
            .error(403),
        "forbidden"
    );
    assert_eq!(
        s.put_json(&format!("api/v1/workbooks/{id}"), Some(&viewer), &body)
            .await
            .error(403),
        "forbidden"
    );
    assert_eq!(
        s.call(
            Method::DELETE,
            &format!("api/v1/workbooks/{id}"),
            Some(&viewer),
            None
        )
        .await
        .error(403),
        "forbidden"
    );
    assert_eq!(s.snapshot().await, before);

    // Editor writes content but cannot manage users, export or drain.
    let nu = json!({"username": "mallory", "password": "password-123", "role": "admin"});
    assert_eq!(
        s.post_json("api/v1/users", Some(&editor), &nu)
            .await
            .error(403),
        "forbidden"
    );
    assert_eq!(
        s.get("api/v1/users", Some(&editor)).await.error(403),
        "forbidden"
    );
    assert_eq!(
        s.put_json("api/v1/users/vi", Some(&editor), &json!({"role": "admin"}))
            .await
            .error(403),
        "forbidden"
    );
    assert_eq!(
        s.get("api/v1/export", Some(&editor)).await.error(403),
        "forbidden"
    );
    assert_eq!(
        s.call(Method::POST, "api/v1/drain", Some(&editor), None)
            .await
            .error(403),
        "forbidden"
    );
    assert_eq!(s.snapshot().await, before);

    // Admin manages users; the hash never leaves the server.
    let users = s.get("api/v1/users", Some(&admin)).await;
    assert_eq!(users.status, 200);
    assert!(!users.text.contains("argon2"), "{}", users.text);
    let names: Vec<_> = users.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["admin", "ed", "vi"]);
    let promoted = s
        .put_json("api/v1/users/vi", Some(&admin), &json!({"role": "editor"}))
        .await;
    assert_eq!(promoted.body["role"], "editor");
    assert_eq!(
        s.post_json("api/v1/workbooks", Some(&viewer), &body)
            .await
            .status,
        201,
        "a role change applies at once"
    );
    assert_eq!(
        s.call(Method::DELETE, "api/v1/users/vi", Some(&admin), None)
            .await
            .status,
        200
    );
    assert_eq!(
        s.get("api/v1/me", Some(&viewer)).await.error(401),
        "unauthorized",
        "a deleted user's session ends"
    );
    assert_eq!(
        s.call(Method::DELETE, "api/v1/users/admin", Some(&admin), None)
            .await
            .error(409),
        "own_account"
    );
}

#[tokio::test]
async fn login_flood_is_limited_and_unknown_users_look_like_wrong_passwords() {
    let s = start(&[
        ("auth.login.max_failures", "3"),
        ("auth.login.window", "1h"),
    ])
    .await;
    let wrong = s
        .post_json(
            "api/v1/login",
            None,
            &json!({"username": ADMIN, "password": "nope-nope"}),
        )
        .await;
    let unknown = s
        .post_json(
            "api/v1/login",
            None,
            &json!({"username": "ghost", "password": "nope-nope"}),
        )
        .await;
    assert_eq!(wrong.error(401), "invalid_credentials");
    assert_eq!(unknown.status, wrong.status);
    assert_eq!(
        unknown.body, wrong.body,
        "the same answer for an unknown user and a wrong password"
    );
    for _ in 0..2 {
        s.post_json(
            "api/v1/login",
            None,
            &json!({"username": ADMIN, "password": "nope-nope"}),
        )
        .await
        .error(401);
    }
    let before = s.snapshot().await;
    let limited = s
        .post_json(
            "api/v1/login",
            None,
            &json!({"username": ADMIN, "password": ADMIN_PW}),
        )
        .await;
    assert_eq!(
        limited.error(429),
        "too_many_attempts",
        "even the right password waits"
    );
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0 && retry <= 3600);
    assert_eq!(
        s.snapshot().await,
        before,
        "a refused login makes no session"
    );
}

#[tokio::test]
async fn the_bootstrap_administrator_is_created_on_first_start_only() {
    let s = start(&[]).await;
    let t = s.admin().await;
    let changed = s
        .put_json(
            "api/v1/users/admin",
            Some(&t),
            &json!({"password": "a-new-password"}),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.text);
    let dir = s.stop().await;
    // Same configuration (same bootstrap password) on restart: the changed password stands.
    let s = start_in(dir, &[]).await;
    let old = s
        .post_json(
            "api/v1/login",
            None,
            &json!({"username": ADMIN, "password": ADMIN_PW}),
        )
        .await;
    assert_eq!(old.error(401), "invalid_credentials");
    s.login(ADMIN, "a-new-password").await;
}

#[tokio::test]
async fn expired_sessions_end_and_are_swept_away() {
    // Long enough for the first call to come before it ends, however busy the machine.
    let s = start(&[("auth.session.ttl", "3s")]).await;
    let t = s.admin().await;
    assert_eq!(s.get("api/v1/me", Some(&t)).await.status, 200);
    wait_for(
        "the session to expire and be swept",
        Duration::from_secs(20),
        || async {
            let live = s
                .store()
                .counts()
                .await
                .unwrap()
                .into_iter()
                .find(|(c, _)| *c == folio::store::Collection::Sessions)?
                .1;
            (live == 0).then_some(())
        },
    )
    .await;
    assert_eq!(
        s.get("api/v1/me", Some(&t)).await.error(401),
        "unauthorized"
    );
}

#[tokio::test]
async fn a_user_changes_their_own_password_and_their_other_sessions_end() {
    let s = start(&[]).await;
    let admin = s.admin().await;
    let here = s.user_with_role(&admin, "eve", "viewer").await;
    let elsewhere = s.login("eve", "eve-password").await;
    let change = |token: &str, current: &str, next: &str| {
        let body = json!({"current_password": current, "new_password": next});
        let token = token.to_string();
        let s = &s;
        async move {
            s.call(Method::PUT, "api/v1/me/password", Some(&token), Some(&body))
                .await
        }
    };
    assert_eq!(
        change(&here, "wrong-one", "eve-password-2")
            .await
            .error(403),
        "wrong_password"
    );
    assert_eq!(
        change(&here, "eve-password", "short").await.error(400),
        "weak_password"
    );
    assert_eq!(
        s.call(Method::PUT, "api/v1/me/password", None, Some(&json!({})))
            .await
            .status,
        401
    );
    let done = change(&here, "eve-password", "eve-password-2").await;
    assert_eq!(done.status, 200, "{}", done.text);
    assert_eq!(done.body["sessions_ended"], 1);
    // This session goes on; the other one has ended; only the new password logs in.
    assert_eq!(s.get("api/v1/me", Some(&here)).await.status, 200);
    assert_eq!(
        s.get("api/v1/me", Some(&elsewhere)).await.error(401),
        "unauthorized"
    );
    assert!(!s.login("eve", "eve-password-2").await.is_empty());
    let old = s
        .post_json(
            "api/v1/login",
            None,
            &json!({"username": "eve", "password": "eve-password"}),
        )
        .await;
    assert_eq!(old.error(401), "invalid_credentials");
    // The administrator is told while the configured password is still its own.
    assert_eq!(
        s.get("api/v1/me", Some(&admin)).await.body["bootstrap_password"],
        true
    );
    assert_eq!(
        s.get("api/v1/me", Some(&here)).await.body["bootstrap_password"],
        false
    );
    let admin_changed = change(&admin, ADMIN_PW, "admin-password-2").await;
    assert_eq!(admin_changed.status, 200);
    assert_eq!(
        s.get("api/v1/me", Some(&admin)).await.body["bootstrap_password"],
        false
    );
}
