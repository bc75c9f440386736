//! Bad input: every case answers a clear JSON error and leaves the store exactly as it was.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::*;
use folio::store::Collection;

/// One bad request and what it must answer.
struct Case {
    name: &'static str,
    method: Method,
    path: String,
    token: Option<String>,
    content_type: Option<&'static str>,
    body: Option<Vec<u8>>,
    status: u16,
    code: &'static str,
}

fn case(
    name: &'static str,
    method: Method,
    path: impl Into<String>,
    token: &str,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        name,
        method,
        path: path.into(),
        token: Some(token.to_string()),
        content_type: None,
        body: None,
        status,
        code,
    }
}

impl Case {
    fn json(mut self, v: Value) -> Case {
        self.content_type = Some("application/json");
        self.body = Some(serde_json::to_vec(&v).unwrap());
        self
    }
    fn raw(mut self, ct: &'static str, body: impl Into<Vec<u8>>) -> Case {
        self.content_type = Some(ct);
        self.body = Some(body.into());
        self
    }
    fn no_token(mut self) -> Case {
        self.token = None;
        self
    }
}

fn sign(claims: &Value, key: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(key),
    )
    .unwrap()
}

#[tokio::test]
async fn bad_inputs_get_json_errors_and_change_nothing() {
    let s = start(&[
        ("limits.body.max_bytes", "2048"),
        ("limits.json.max_depth", "8"),
        ("auth.login.max_failures", "2"),
    ])
    .await;
    let admin = s.admin().await;
    let viewer = s.user_with_role(&admin, "viewer1", "viewer").await;
    let w = s
        .create(&admin, "workbooks", "existing", json!({"a": 1}))
        .await;
    let id = w["id"].as_str().unwrap().to_string();
    let item = format!("api/v1/workbooks/{id}");

    // Material for forged tokens: the real key and a real session of the admin.
    let key = s.store().meta_get("user_token_key").await.unwrap().unwrap();
    let sessions = s
        .store()
        .list(Collection::Sessions, None, 100)
        .await
        .unwrap()
        .items;
    let sid = sessions
        .iter()
        .find(|i| i.name == ADMIN)
        .unwrap()
        .id
        .clone();
    let now = folio::auth::unix_now();
    let claims = |exp: Option<u64>, aud: &str| {
        let mut c = json!({"sub": ADMIN, "sid": sid, "typ": "user", "aud": aud, "iat": now});
        if let Some(e) = exp {
            c["exp"] = json!(e);
        }
        c
    };
    let good_claims = claims(Some(now + 600), folio::auth::USER_AUDIENCE);
    assert_eq!(
        s.get("api/v1/me", Some(&sign(&good_claims, &key)))
            .await
            .status,
        200,
        "the forging recipe itself is right"
    );
    let alg_none = format!(
        "{}.{}.",
        B64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        B64.encode(serde_json::to_vec(&good_claims).unwrap())
    );
    let other_key = sign(&good_claims, b"some-other-key-entirely-32-bytes!");
    let expired = sign(&claims(Some(now - 3600), folio::auth::USER_AUDIENCE), &key);
    let no_exp = sign(&claims(None, folio::auth::USER_AUDIENCE), &key);
    let wrong_aud = sign(&claims(Some(now + 600), "someone-else"), &key);
    let server_typ = sign(
        &json!({"sub": ADMIN, "sid": sid, "typ": "server", "aud": folio::auth::USER_AUDIENCE, "iat": now, "exp": now + 600}),
        &key,
    );

    let valid = json!({"name": "n", "content": {"x": 1}});
    let mut deep = json!(1);
    for _ in 0..9 {
        deep = json!([deep]);
    }
    let cases = vec![
        case(
            "malformed JSON",
            Method::POST,
            "api/v1/workbooks",
            &admin,
            400,
            "malformed_json",
        )
        .raw("application/json", "{\"name\": \"x\", "),
        case(
            "wrong content type",
            Method::POST,
            "api/v1/workbooks",
            &admin,
            415,
            "unsupported_media_type",
        )
        .raw("text/plain", serde_json::to_vec(&valid).unwrap()),
        case(
            "body over the limit",
            Method::POST,
            "api/v1/workbooks",
            &admin,
            413,
            "body_too_large",
        )
        .json(json!({"name": "big", "content": "x".repeat(4096)})),
        case(
            "nesting over the depth limit",
            Method::POST,
            "api/v1/workbooks",
            &admin,
            400,
            "too_deep",
        )
        .json(json!({"name": "deep", "content": deep})),
        case(
            "body not an object",
            Method::POST,
            "api/v1/workbooks",
            &admin,
            400,
            "invalid_body",
        )
        .json(json!([1, 2])),
        case(
            "missing name",
            Method::POST,
            "api/v1/workbooks",
            &admin,
            400,
            "missing_field",
        )
        .json(json!({"content": 1})),
        case(
            "name too long",
            Method::POST,
            "api/v1/workbooks",
            &admin,
            400,
            "invalid_name",
        )
        .json(json!({"name": "n".repeat(300), "content": 1})),
        case(
            "unknown field",
            Method::POST,
            "api/v1/workbooks",
            &admin,
            400,
            "unknown_field",
        )
        .json(json!({"name": "n", "content": 1, "owner": "x"})),
        case(
            "client-set rev",
            Method::PUT,
            item.clone(),
            &admin,
            400,
            "read_only_field",
        )
        .json(json!({"name": "n", "content": 1, "rev": "9-00000000000000000000000000000000"})),
        case(
            "client-set origin",
            Method::POST,
            "api/v1/workbooks",
            &admin,
            400,
            "read_only_field",
        )
        .json(json!({"name": "n", "content": 1, "origin": "elsewhere"})),
        case(
            "id with ..",
            Method::PUT,
            "api/v1/workbooks/a..b",
            &admin,
            400,
            "invalid_id",
        )
        .json(valid.clone()),
        case(
            "id %2e%2e%2f",
            Method::PUT,
            "api/v1/workbooks/%2e%2e%2f",
            &admin,
            400,
            "invalid_id",
        )
        .json(valid.clone()),
        case(
            "id x%2e%2e",
            Method::GET,
            "api/v1/workbooks/x%2e%2e",
            &admin,
            400,
            "invalid_id",
        ),
        case(
            "id with /",
            Method::PUT,
            "api/v1/workbooks/a/b",
            &admin,
            404,
            "not_found",
        )
        .json(valid.clone()),
        case(
            "id with \\",
            Method::PUT,
            "api/v1/workbooks/a%5Cb",
            &admin,
            400,
            "invalid_id",
        )
        .json(valid.clone()),
        case(
            "id with NUL",
            Method::PUT,
            "api/v1/workbooks/a%00b",
            &admin,
            400,
            "invalid_id",
        )
        .json(valid.clone()),
        case(
            "over-long id",
            Method::PUT,
            format!("api/v1/workbooks/{}", "a".repeat(129)),
            &admin,
            400,
            "invalid_id",
        )
        .json(valid.clone()),
        case(
            "bad If-Match",
            Method::PUT,
            item.clone(),
            &admin,
            400,
            "invalid_if_match",
        )
        .json(valid.clone()),
        case(
            "bad cursor",
            Method::GET,
            "api/v1/workbooks?cursor=../x",
            &admin,
            400,
            "invalid_id",
        ),
        case(
            "bad revision in path",
            Method::POST,
            format!("{item}/history/zzz/restore"),
            &admin,
            400,
            "invalid_rev",
        ),
        case(
            "unknown collection",
            Method::POST,
            "api/v1/secrets",
            &admin,
            404,
            "not_found",
        )
        .json(valid.clone()),
        case(
            "alg=none token",
            Method::POST,
            "api/v1/workbooks",
            &alg_none,
            401,
            "unauthorized",
        )
        .json(valid.clone()),
        case(
            "token signed with another key",
            Method::POST,
            "api/v1/workbooks",
            &other_key,
            401,
            "unauthorized",
        )
        .json(valid.clone()),
        case(
            "expired token",
            Method::POST,
            "api/v1/workbooks",
            &expired,
            401,
            "unauthorized",
        )
        .json(valid.clone()),
        case(
            "token without exp",
            Method::POST,
            "api/v1/workbooks",
            &no_exp,
            401,
            "unauthorized",
        )
        .json(valid.clone()),
        case(
            "wrong aud",
            Method::POST,
            "api/v1/workbooks",
            &wrong_aud,
            401,
            "unauthorized",
        )
        .json(valid.clone()),
        case(
            "server-typed token on the user API",
            Method::POST,
            "api/v1/workbooks",
            &server_typ,
            401,
            "unauthorized",
        )
        .json(valid.clone()),
        case(
            "garbage token",
            Method::GET,
            "api/v1/workbooks",
            "not.a.token",
            401,
            "unauthorized",
        ),
        case(
            "missing token",
            Method::POST,
            "api/v1/workbooks",
            "",
            401,
            "unauthorized",
        )
        .json(valid.clone())
        .no_token(),
        case(
            "wrong role",
            Method::PUT,
            item.clone(),
            &viewer,
            403,
            "forbidden",
        )
        .json(valid.clone()),
        case(
            "invalid role for a new user",
            Method::POST,
            "api/v1/users",
            &admin,
            400,
            "invalid_role",
        )
        .json(json!({"username": "u1", "password": "long-enough-pw", "role": "root"})),
        case(
            "weak password",
            Method::POST,
            "api/v1/users",
            &admin,
            400,
            "weak_password",
        )
        .json(json!({"username": "u2", "password": "short", "role": "viewer"})),
        case(
            "import with a broken line",
            Method::POST,
            "api/v1/import",
            &admin,
            400,
            "malformed_json",
        )
        .raw(
            "application/x-ndjson",
            "{\"folio_export\":1,\"server\":\"x\",\"exported_at\":\"t\"}\n{\"collection\":\n",
        ),
        case(
            "import of an unknown format",
            Method::POST,
            "api/v1/import",
            &admin,
            400,
            "unsupported_export",
        )
        .raw(
            "application/x-ndjson",
            "{\"folio_export\":99,\"server\":\"x\",\"exported_at\":\"t\"}\n",
        ),
        case(
            "login with a wrong password",
            Method::POST,
            "api/v1/login",
            "",
            401,
            "invalid_credentials",
        )
        .json(json!({"username": "viewer1", "password": "wrong-wrong"}))
        .no_token(),
        case(
            "login with a wrong password again",
            Method::POST,
            "api/v1/login",
            "",
            401,
            "invalid_credentials",
        )
        .json(json!({"username": "viewer1", "password": "wrong-wrong"}))
        .no_token(),
        case(
            "login flood",
            Method::POST,
            "api/v1/login",
            "",
            429,
            "too_many_attempts",
        )
        .json(json!({"username": "viewer1", "password": "viewer1-password"}))
        .no_token(),
    ];
    assert!(cases.len() >= 20);

    let before = s.snapshot().await;
    for c in cases {
        let mut req = s
            .http
            .request(c.method.clone(), format!("{}{}", s.url, c.path));
        if let Some(t) = &c.token {
            req = req.bearer_auth(t);
        }
        if c.name == "bad If-Match" {
            req = req.header("if-match", "\"not-a-revision\"");
        }
        if let Some(ct) = c.content_type {
            req = req.header("content-type", ct);
        }
        if let Some(b) = c.body {
            req = req.body(b);
        }
        let a = answer(req.send().await.unwrap()).await;
        assert_eq!(a.status.as_u16(), c.status, "{}: {}", c.name, a.text);
        assert_eq!(a.body["error"]["code"], c.code, "{}: {}", c.name, a.text);
        assert!(
            a.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}: {}",
            c.name,
            a.text
        );
        assert_eq!(s.snapshot().await, before, "{} changed the store", c.name);
    }
    let still = s.get(&item, Some(&admin)).await;
    assert_eq!(still.body["content"], json!({"a": 1}));
}
