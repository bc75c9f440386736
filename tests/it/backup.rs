//! Export and import: a round trip into an empty server restores the same ids, revisions and
//! bodies (tombstones included); the `folio backup` / `folio restore` commands wrap them.

use reqwest::Method;
use serde_json::json;

use crate::harness::*;
use folio::store::Collection;

async fn content_of(s: &TestServer) -> Vec<String> {
    s.snapshot()
        .await
        .1
        .into_iter()
        .filter(|l| !l.starts_with("users/"))
        .collect()
}

#[tokio::test]
async fn export_then_import_into_an_empty_server_round_trips() {
    let a = start(&[]).await;
    let t = a.admin().await;
    let w1 = a
        .create(&t, "workbooks", "one", json!({"k": [1, 2, 3], "s": "ü"}))
        .await;
    let w2 = a.create(&t, "workbooks", "two", json!(null)).await;
    a.put_json(
        &format!("api/v1/workbooks/{}", w1["id"].as_str().unwrap()),
        Some(&t),
        &json!({"name": "one", "content": 2}),
    )
    .await;
    a.call(
        Method::DELETE,
        &format!("api/v1/workbooks/{}", w2["id"].as_str().unwrap()),
        Some(&t),
        None,
    )
    .await;
    a.create(&t, "datasources", "pg", json!({"host": "db"}))
        .await;
    a.user_with_role(&t, "carol", "editor").await;

    let export = a
        .http
        .get(format!("{}api/v1/export", a.url))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), 200);
    assert_eq!(export.headers()["content-type"], "application/x-ndjson");
    let dump = export.bytes().await.unwrap();
    let lines: Vec<&[u8]> = dump
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1 + 3 + 2,
        "header, three content items (one a tombstone), two users"
    );

    let b = start(&[]).await;
    let tb = b.admin().await;
    let imported = b.import(&tb, "", dump.clone()).await;
    assert_eq!(imported.status, 200, "{}", imported.text);
    assert_eq!(imported.body["written"], 5);
    assert_eq!(
        imported.body["replaced"],
        json!(["users/admin"]),
        "B's own bootstrap admin is replaced by the backup's"
    );
    assert_eq!(
        content_of(&a).await,
        content_of(&b).await,
        "same ids, revisions and bodies"
    );
    let tomb = b
        .store()
        .get(Collection::Workbooks, w2["id"].as_str().unwrap().into())
        .await
        .unwrap()
        .unwrap();
    assert!(tomb.deleted, "the tombstone travelled");
    b.login("carol", "carol-password").await;

    // Importing the same dump again changes nothing.
    let before = b.snapshot().await;
    let again = b.import(&tb, "", dump.clone()).await;
    assert_eq!(again.body["written"], 0);
    assert_eq!(again.body["unchanged"], 5);
    assert_eq!(b.snapshot().await, before);
}

#[tokio::test]
async fn import_refuses_diverging_items_when_asked_and_keeps_newer_local_edits() {
    let a = start(&[]).await;
    let t = a.admin().await;
    let w = a.create(&t, "workbooks", "w", json!(1)).await;
    let id = w["id"].as_str().unwrap().to_string();
    let dump = a
        .http
        .get(format!("{}api/v1/export", a.url))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    // Local edit on top of the exported revision: the backup is older, so it is kept.
    a.put_json(
        &format!("api/v1/workbooks/{id}"),
        Some(&t),
        &json!({"name": "w", "content": 2}),
    )
    .await;
    let kept = a.import(&t, "", dump.clone()).await;
    assert_eq!(
        kept.body["newer_here"],
        json!([format!("workbooks/{id}")]),
        "{}",
        kept.text
    );
    assert_eq!(
        a.get(&format!("api/v1/workbooks/{id}"), Some(&t))
            .await
            .body["content"],
        2
    );

    // A diverging item (same base, different edit): `fail` refuses everything.
    let b = start(&[]).await;
    let tb = b.admin().await;
    b.put_json(
        &format!("api/v1/workbooks/{id}"),
        Some(&tb),
        &json!({"name": "other", "content": 3}),
    )
    .await;
    let before = b.snapshot().await;
    let refused = b.import(&tb, "?on_conflict=fail", dump.clone()).await;
    assert_eq!(refused.error(409), "import_conflict");
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&id)
    );
    assert_eq!(b.snapshot().await, before, "nothing written");
}

#[tokio::test]
async fn backup_and_restore_commands() {
    let a = start(&[]).await;
    let t = a.admin().await;
    for i in 0..5 {
        a.create(&t, "workbooks", &format!("w{i}"), json!({"i": i}))
            .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.jsonl");
    folio_ok(&["backup", "--url", &a.url, "--out", file.to_str().unwrap()]).await;
    assert_eq!(
        std::fs::read_to_string(&file).unwrap().lines().count(),
        1 + 5 + 1
    );

    let b = start(&[]).await;
    folio_ok(&["restore", "--url", &b.url, "--in", file.to_str().unwrap()]).await;
    assert_eq!(content_of(&a).await, content_of(&b).await);

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_folio"))
        .args(["backup", "--url", &a.url, "--out", file.to_str().unwrap()])
        .env("FOLIO_PASSWORD", "wrong-password")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong user name or password"));
}
