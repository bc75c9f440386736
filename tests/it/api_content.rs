//! Content API: create/read/update/delete, revisions and ETags, If-Match, history and restore,
//! tombstones, paging.

use reqwest::Method;
use serde_json::json;

use crate::harness::*;
use folio::store::Collection;

#[tokio::test]
async fn crud_with_revisions_and_etags() {
    let s = start(&[]).await;
    let t = s.admin().await;
    let created = s
        .create(&t, "workbooks", "Sales", json!({"sheets": [1, 2]}))
        .await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["state"], "committed");
    assert!(created["rev"].as_str().unwrap().starts_with("1-"));
    assert_eq!(created["updated_by"], ADMIN);
    assert_eq!(created["origin"], s.state().server_id.as_str());
    assert!(uuid::Uuid::parse_str(id).is_ok(), "server assigns a UUID");

    let got = s.get(&format!("api/v1/workbooks/{id}"), Some(&t)).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body["content"], json!({"sheets": [1, 2]}));
    assert_eq!(
        got.headers["etag"].to_str().unwrap(),
        format!("\"{}\"", created["rev"].as_str().unwrap())
    );

    let put = s
        .put_json(
            &format!("api/v1/workbooks/{id}"),
            Some(&t),
            &json!({"name": "Sales 2", "content": {"v": 2}}),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.text);
    assert!(put.body["rev"].as_str().unwrap().starts_with("2-"));

    let ds = s
        .create(&t, "datasources", "db", json!({"url": "postgres://x"}))
        .await;
    let list = s.get("api/v1/workbooks", Some(&t)).await;
    assert_eq!(
        list.body["items"].as_array().unwrap().len(),
        1,
        "collections are separate"
    );
    assert_eq!(list.body["items"][0]["name"], "Sales 2");
    let dl = s.get("api/v1/datasources", Some(&t)).await;
    assert_eq!(dl.body["items"][0]["id"], ds["id"]);

    // PUT to a new client-chosen id creates it.
    let new = s
        .put_json(
            "api/v1/workbooks/my-book_1",
            Some(&t),
            &json!({"name": "Mine", "content": null}),
        )
        .await;
    assert_eq!(new.status, 201, "{}", new.text);
}

#[tokio::test]
async fn if_match_guards_against_stale_writes() {
    let s = start(&[]).await;
    let t = s.admin().await;
    let w = s.create(&t, "workbooks", "A", json!(1)).await;
    let id = w["id"].as_str().unwrap();
    let rev1 = w["rev"].as_str().unwrap().to_string();
    let ok = s
        .http
        .put(format!("{}api/v1/workbooks/{id}", s.url))
        .bearer_auth(&t)
        .header("if-match", format!("\"{rev1}\""))
        .json(&json!({"name": "A", "content": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let before = s.snapshot().await;
    let stale = answer(
        s.http
            .put(format!("{}api/v1/workbooks/{id}", s.url))
            .bearer_auth(&t)
            .header("if-match", format!("\"{rev1}\""))
            .json(&json!({"name": "A", "content": 3}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(stale.error(412), "revision_mismatch");
    assert!(
        stale.body["error"]["current_rev"]
            .as_str()
            .unwrap()
            .starts_with("2-")
    );
    assert_eq!(
        s.snapshot().await,
        before,
        "a refused write changes nothing"
    );
    let stale_delete = answer(
        s.http
            .delete(format!("{}api/v1/workbooks/{id}", s.url))
            .bearer_auth(&t)
            .header("if-match", format!("\"{rev1}\""))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(stale_delete.error(412), "revision_mismatch");
    assert_eq!(s.snapshot().await, before);
}

#[tokio::test]
async fn history_read_and_restore_with_bounded_keep() {
    let s = start(&[("content.history.keep", "3")]).await;
    let t = s.admin().await;
    let w = s.create(&t, "workbooks", "H", json!({"v": 1})).await;
    let id = w["id"].as_str().unwrap().to_string();
    let first_rev = w["rev"].as_str().unwrap().to_string();
    for v in 2..=4 {
        let a = s
            .put_json(
                &format!("api/v1/workbooks/{id}"),
                Some(&t),
                &json!({"name": "H", "content": {"v": v}}),
            )
            .await;
        assert_eq!(a.status, 200);
    }
    let h = s
        .get(&format!("api/v1/workbooks/{id}/history"), Some(&t))
        .await;
    let revs = h.body["items"].as_array().unwrap();
    assert_eq!(
        revs.len(),
        3,
        "history keeps content.history.keep revisions"
    );
    assert!(
        revs[0]["rev"].as_str().unwrap().starts_with("4-"),
        "newest first"
    );
    let gone = s
        .get(
            &format!("api/v1/workbooks/{id}/history/{first_rev}"),
            Some(&t),
        )
        .await;
    assert_eq!(gone.error(404), "not_found");

    let old_rev = revs[2]["rev"].as_str().unwrap().to_string();
    let old = s
        .get(
            &format!("api/v1/workbooks/{id}/history/{old_rev}"),
            Some(&t),
        )
        .await;
    assert_eq!(old.body["content"], json!({"v": 2}));
    let restored = s
        .call(
            Method::POST,
            &format!("api/v1/workbooks/{id}/history/{old_rev}/restore"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(restored.status, 200, "{}", restored.text);
    assert!(
        restored.body["rev"].as_str().unwrap().starts_with("5-"),
        "a restore is a new edit"
    );
    let now = s.get(&format!("api/v1/workbooks/{id}"), Some(&t)).await;
    assert_eq!(now.body["content"], json!({"v": 2}));
}

#[tokio::test]
async fn delete_leaves_a_tombstone() {
    let s = start(&[]).await;
    let t = s.admin().await;
    let w = s.create(&t, "workbooks", "T", json!({})).await;
    let id = w["id"].as_str().unwrap().to_string();
    let del = s
        .call(
            Method::DELETE,
            &format!("api/v1/workbooks/{id}"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(del.status, 200, "{}", del.text);
    assert!(del.body["rev"].as_str().unwrap().starts_with("2-"));
    assert_eq!(
        s.get(&format!("api/v1/workbooks/{id}"), Some(&t))
            .await
            .error(404),
        "not_found"
    );
    assert_eq!(
        s.get("api/v1/workbooks", Some(&t)).await.body["items"],
        json!([])
    );
    let tomb = s
        .store()
        .get(Collection::Workbooks, id.clone())
        .await
        .unwrap()
        .expect("tombstone kept");
    assert!(tomb.deleted && tomb.rev.starts_with("2-"));
    let again = s
        .call(
            Method::DELETE,
            &format!("api/v1/workbooks/{id}"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(again.error(404), "not_found");
    let back = s
        .put_json(
            &format!("api/v1/workbooks/{id}"),
            Some(&t),
            &json!({"name": "T", "content": 1}),
        )
        .await;
    assert_eq!(back.status, 201);
    assert!(
        back.body["rev"].as_str().unwrap().starts_with("3-"),
        "recreation continues the line"
    );
}

#[tokio::test]
async fn lists_page_with_a_cursor() {
    let s = start(&[]).await;
    let t = s.admin().await;
    for i in 0..25 {
        s.put_json(
            &format!("api/v1/datasources/ds-{i:02}"),
            Some(&t),
            &json!({"name": format!("d{i}"), "content": i}),
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("api/v1/datasources?limit=10&cursor={c}"),
            None => "api/v1/datasources?limit=10".to_string(),
        };
        let page = s.get(&path, Some(&t)).await;
        assert_eq!(page.status, 200);
        let items = page.body["items"].as_array().unwrap();
        assert!(items.len() <= 10);
        seen.extend(items.iter().map(|i| i["id"].as_str().unwrap().to_string()));
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).map(|i| format!("ds-{i:02}")).collect();
    assert_eq!(seen, expected);
    assert_eq!(
        s.get("api/v1/datasources?limit=0", Some(&t))
            .await
            .error(400),
        "invalid_limit"
    );
    assert_eq!(
        s.get("api/v1/datasources?limit=100000", Some(&t))
            .await
            .error(400),
        "invalid_limit"
    );
}

#[tokio::test]
async fn deleted_items_are_listed_apart_and_restored_from_their_history() {
    let s = start(&[]).await;
    let t = s.admin().await;
    let kept = s.create(&t, "workbooks", "kept", json!(1)).await;
    let gone = s.create(&t, "workbooks", "gone", json!(2)).await;
    let gone_id = gone["id"].as_str().unwrap();
    let path = format!("api/v1/workbooks/{gone_id}");
    assert_eq!(
        s.call(Method::DELETE, &path, Some(&t), None).await.status,
        200
    );
    let live = s.get("api/v1/workbooks", Some(&t)).await.body;
    let deleted = s.get("api/v1/workbooks?deleted=true", Some(&t)).await.body;
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&live), vec![kept["id"].as_str().unwrap().to_string()]);
    assert_eq!(ids(&deleted), vec![gone_id.to_string()]);
    assert_eq!(deleted["items"][0]["deleted"], true);
    let rev = gone["rev"].as_str().unwrap();
    let back = s
        .call(
            Method::POST,
            &format!("{path}/history/{rev}/restore"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(back.status, 200, "{}", back.text);
    assert_eq!(
        back.body["restored_from"], rev,
        "a restore says what it restored"
    );
    assert_eq!(s.get(&path, Some(&t)).await.body["content"], 2);
    let history = s.get(&format!("{path}/history"), Some(&t)).await.body;
    assert_eq!(history["items"][0]["restored_from"], rev);
    assert_eq!(history["items"][1]["deleted"], true);
    assert_eq!(
        ids(&s.get("api/v1/workbooks?deleted=true", Some(&t)).await.body),
        Vec::<String>::new()
    );
}
