//! The OpenAPI document at `/api/v1/openapi.json`: valid OpenAPI 3.1 by an outside validator
//! (`openapi-spec-validator`, PyPI; `scripts/test` installs it), and it documents exactly the
//! routes the server has, no more and no fewer.

use std::collections::BTreeSet;

use crate::harness::*;

/// `(METHOD, path)` of every route `src/api` registers (each a `resource(path, ...)` with its
/// `web::<method>()` routes), paths written as OpenAPI writes them.
fn registered() -> BTreeSet<(String, String)> {
    let named = |v: &str| match v {
        "&coll" => Some("/api/v1/{collection}".to_string()),
        "&item" => Some("/api/v1/{collection}/{id}".to_string()),
        "&history" => Some("/api/v1/{collection}/{id}/history".to_string()),
        "&revision" => Some("/api/v1/{collection}/{id}/history/{rev}".to_string()),
        "&restore" => Some("/api/v1/{collection}/{id}/history/{rev}/restore".to_string()),
        _ => None,
    };
    let mut out = BTreeSet::new();
    for file in ["src/api/mod.rs", "src/api/bully.rs"] {
        let text =
            std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        for part in flat.split("resource(").skip(1) {
            let part = part.trim_start();
            let path = match part.strip_prefix('"') {
                Some(rest) => rest[..rest.find('"').unwrap()].to_string(),
                None => match named(part.split(',').next().unwrap_or("").trim()) {
                    Some(p) => p,
                    None => continue, // the helper's own definition
                },
            };
            for m in part.split("web::").skip(1) {
                let method = m.split("()").next().unwrap_or("");
                if ["get", "post", "put", "delete"].contains(&method) {
                    out.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn the_openapi_document_is_valid_and_documents_every_route() {
    let s = start(&[]).await;
    let doc = s.get("api/v1/openapi.json", None).await;
    assert_eq!(doc.status, 200);
    assert_eq!(doc.body["openapi"], "3.1.0");

    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &doc.text).unwrap();
    let out = tokio::process::Command::new("openapi-spec-validator")
        .arg(file.path())
        .output()
        .await
        .expect("openapi-spec-validator runs (scripts/test installs it in its virtualenv)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let mut documented = BTreeSet::new();
    for (path, ops) in doc.body["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let routes = registered();
    assert!(routes.len() > 40, "the route table was read: {routes:?}");
    let missing: Vec<_> = routes.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routes).collect();
    // The admin page's own files are not API.
    let missing: Vec<_> = missing
        .into_iter()
        .filter(|(_, p)| !p.starts_with("/admin"))
        .collect();
    assert!(missing.is_empty(), "routes not documented: {missing:?}");
    assert!(
        extra.is_empty(),
        "documented routes the server lacks: {extra:?}"
    );

    // Every code an error can carry is listed.
    let codes = doc.body["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["enum"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(codes, folio::error::Code::ALL.len());
}

/// Schemathesis (PyPI) drives every user route of a live server with a token, from the document:
/// no server error, every answer's status and body as documented, every valid request taken and
/// every invalid one refused. Left out: the routes that end the session or the server's
/// readiness (logout, password change, drain), the import (a JSON-lines body it cannot make),
/// and `/cluster/v1` (servers' tokens; covered by the cluster tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_fault_in_the_api_of_a_live_server() {
    let s = start(&[]).await;
    let t = s.admin().await;
    // Its cache of earlier findings goes to a directory of this run's own.
    let scratch = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new("schemathesis")
        .current_dir(scratch.path())
        .args([
            "--config-file",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml"),
            "run",
            &format!("{}api/v1/openapi.json", s.url),
            "-H",
            &format!("Authorization: Bearer {t}"),
            "--checks",
            "all",
            "--phases",
            "examples,fuzzing,stateful",
            "--max-examples",
            "15",
            "--seed",
            "20261202",
            "--exclude-path-regex",
            "^/cluster/v1",
            "--exclude-path",
            "/api/v1/logout",
            "--exclude-path",
            "/api/v1/me/password",
            "--exclude-path",
            "/api/v1/drain",
            "--exclude-path",
            "/api/v1/import",
        ])
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("schemathesis runs (scripts/test installs it in its virtualenv)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    let tally: Vec<&str> = text.lines().filter(|l| l.contains("generated")).collect();
    assert!(!tally.is_empty(), "{text}");
    eprintln!("schemathesis: {}", tally.join(" "));
}
