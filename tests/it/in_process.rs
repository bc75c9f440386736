//! Handlers called in-process through the one application factory (`api::create_app`) on the
//! state `server::prepare` builds: no socket and no background workers, for what the network is
//! not the point of. Every error answer is checked against the error-code table.

use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::header;
use actix_web::test::{self, TestRequest};
use folio::config::Config;
use folio::error::Code;
use serde_json::{Value, json};

use crate::harness::{ADMIN, ADMIN_PW};

/// A stand-alone server's state in `dir`, with `overrides`.
async fn prepared(dir: &tempfile::TempDir, overrides: &[(&str, &str)]) -> folio::server::Prepared {
    let data = dir.path().join("data");
    let data = data.to_str().unwrap().to_string();
    let mut all: Vec<(&str, &str)> = vec![
        ("server.data_dir", &data),
        ("auth.admin.user", ADMIN),
        ("auth.admin.password", ADMIN_PW),
        ("store.cache.mb", "8"),
    ];
    all.extend_from_slice(overrides);
    let config = Config::with_overrides(&all).expect("test configuration is valid");
    folio::server::prepare(config)
        .await
        .expect("server state is built")
}

/// The status and body of an answer.
async fn read<B: MessageBody>(resp: ServiceResponse<B>) -> (u16, Value) {
    let status = resp.status().as_u16();
    let body = test::read_body(resp).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Asserts a JSON error answer whose status is the one the table gives its code; answers the
/// code.
fn table_error(what: &str, (status, body): &(u16, Value)) -> Code {
    let code = body["error"]["code"].as_str().unwrap_or_default();
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{what}: not a JSON error body: {body}");
    let code = Code::parse(code).unwrap_or_else(|| panic!("{what}: unknown code in {body}"));
    assert_eq!(
        code.status().as_u16(),
        *status,
        "{what}: {code} answered with another status than the table's"
    );
    code
}

#[actix_web::test]
async fn every_error_answer_carries_the_status_of_its_code() {
    let dir = tempfile::tempdir().unwrap();
    let prepared = prepared(&dir, &[]).await;
    let app = test::init_service(folio::api::create_app(prepared.state.clone())).await;
    let login = TestRequest::post()
        .uri("/api/v1/login")
        .set_json(json!({"username": ADMIN, "password": ADMIN_PW}))
        .to_request();
    let (status, body) = read(test::call_service(&app, login).await).await;
    assert_eq!(status, 200, "login: {body}");
    let bearer = format!("Bearer {}", body["token"].as_str().unwrap());
    let saved = TestRequest::put()
        .uri("/api/v1/workbooks/w1")
        .insert_header((header::AUTHORIZATION, bearer.as_str()))
        .set_json(json!({"name": "Sales", "content": {"sheets": 1}}))
        .to_request();
    let (status, body) = read(test::call_service(&app, saved).await).await;
    assert!(matches!(status, 200 | 201), "save: {status} {body}");
    assert_eq!(body["state"], "committed", "{body}");

    let authed = |req: TestRequest| req.insert_header((header::AUTHORIZATION, bearer.as_str()));
    let cases: Vec<(&str, TestRequest, Code)> = vec![
        (
            "unknown path",
            TestRequest::get().uri("/nowhere"),
            Code::NotFound,
        ),
        (
            "no token",
            TestRequest::get().uri("/api/v1/workbooks"),
            Code::Unauthorized,
        ),
        (
            "wrong password",
            TestRequest::post()
                .uri("/api/v1/login")
                .set_json(json!({"username": ADMIN, "password": "not-it"})),
            Code::InvalidCredentials,
        ),
        (
            "bad id",
            authed(TestRequest::put().uri("/api/v1/workbooks/bad!id"))
                .set_json(json!({"name": "x", "content": 1})),
            Code::InvalidId,
        ),
        (
            "not JSON",
            authed(TestRequest::put().uri("/api/v1/workbooks/w2"))
                .insert_header((header::CONTENT_TYPE, "text/plain"))
                .set_payload("hello"),
            Code::UnsupportedMediaType,
        ),
        (
            "stale If-Match",
            authed(TestRequest::put().uri("/api/v1/workbooks/w1"))
                .insert_header((header::IF_MATCH, "\"1-00000000000000000000000000000000\""))
                .set_json(json!({"name": "x", "content": 2})),
            Code::RevisionMismatch,
        ),
        (
            "a field the server sets",
            authed(TestRequest::post().uri("/api/v1/workbooks"))
                .set_json(json!({"rev": "1-x", "name": "x", "content": 3})),
            Code::ReadOnlyField,
        ),
        (
            "existing user created again",
            authed(TestRequest::post().uri("/api/v1/users")).set_json(
                json!({"username": ADMIN, "password": "long-enough-1", "role": "viewer"}),
            ),
            Code::AlreadyExists,
        ),
        (
            "missing item",
            authed(TestRequest::get().uri("/api/v1/workbooks/nope")),
            Code::NotFound,
        ),
        (
            "cluster call to a stand-alone server",
            TestRequest::post()
                .uri("/cluster/v1/push")
                .insert_header(("folio-protocol", "1"))
                .insert_header((header::AUTHORIZATION, "Bearer x"))
                .set_json(json!({"edits": []})),
            Code::NotClustered,
        ),
    ];
    for (what, req, want) in cases {
        let answer = read(test::call_service(&app, req.to_request()).await).await;
        assert_eq!(table_error(what, &answer), want, "{what}: {:?}", answer.1);
    }
    // Nothing the refused requests carried was written.
    let item = prepared
        .state
        .store
        .get_live(folio::store::Collection::Workbooks, "w1".into())
        .await
        .unwrap();
    assert_eq!(item.content.value(), json!({"sheets": 1}));
    assert!(
        prepared
            .state
            .store
            .get(folio::store::Collection::Workbooks, "w2".into())
            .await
            .unwrap()
            .is_none()
    );
}

#[actix_web::test]
async fn the_bully_heartbeat_is_no_endpoint_outside_bully_mode() {
    let dir = tempfile::tempdir().unwrap();
    let prepared = prepared(&dir, &[]).await;
    let app = test::init_service(folio::api::create_app(prepared.state.clone())).await;
    let beat = TestRequest::post()
        .uri("/cluster/v1/heartbeat")
        .insert_header(("folio-protocol", "1"))
        .set_json(json!({}))
        .to_request();
    let answer = read(test::call_service(&app, beat).await).await;
    assert_eq!(table_error("heartbeat", &answer), Code::NotFound);
    assert_eq!(answer.1["error"]["message"], "no such endpoint");
}
