//! The OpenAPI document at `/api/v1/openapi.json`: valid OpenAPI 3.1 by an outside validator
//! (`openapi-spec-validator`, PyPI; `scripts/test` installs it), and it documents exactly the
//! routes the server has, no more and no fewer.

use std::collections::BTreeSet;

use crate::harness::*;

/// `(METHOD, path)` of every route `src/api` registers, paths written as OpenAPI writes them.
fn registered() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for file in ["src/api/mod.rs", "src/api/bully.rs"] {
        let text =
            std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        for part in flat.split("route(").skip(1) {
            let part = part.trim_start();
            let (path, rest) = if let Some(rest) = part.strip_prefix('"') {
                let end = rest.find('"').unwrap();
                (rest[..end].to_string(), &rest[end..])
            } else if let Some(rest) = part.strip_prefix("&coll,") {
                ("/api/v1/{collection}".to_string(), rest)
            } else if let Some(rest) = part.strip_prefix("&format!(\"{coll}") {
                let end = rest.find('"').unwrap();
                let tail = rest[..end].replace("{{", "{").replace("}}", "}");
                (format!("/api/v1/{{collection}}{tail}"), &rest[end..])
            } else {
                continue;
            };
            let Some(method) = rest
                .split("web::")
                .nth(1)
                .and_then(|m| m.split("()").next())
            else {
                continue;
            };
            out.insert((method.to_uppercase(), path));
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
