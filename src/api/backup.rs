//! Export and import as JSON lines. The first line is a header
//! `{"folio_export": 1, "server": ..., "exported_at": ...}`; each further line is
//! `{"collection": "...", "item": {...}}` with revisions and ancestry, tombstones included, so an
//! import restores the exact revisions. An import is validated completely before anything is
//! written, then written in batches (see [`crate::store::Store::import`]).

use std::collections::HashSet;

use actix_web::{HttpResponse, web};
use futures_util::stream;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::body::{LimitedBytes, parse_json};
use super::check_id;
use super::content::MAX_NAME_LEN;
use crate::app::AppState;
use crate::auth::Admin;
use crate::error::{ApiError, Code};
use crate::store::item::{ANCESTORS_KEEP, is_valid_rev};
use crate::store::{Collection, ImportPolicy, Item};

/// Format version written in the header line.
pub const EXPORT_VERSION: u64 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    folio_export: u64,
    server: String,
    exported_at: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    collection: Collection,
    item: Item,
}

pub async fn export(state: web::Data<AppState>, admin: Admin) -> HttpResponse {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<web::Bytes, ApiError>>(64);
    let store = state.store.clone();
    let header = Header {
        folio_export: EXPORT_VERSION,
        server: state.server_id.clone(),
        exported_at: crate::store::item::now_rfc3339(),
    };
    tracing::info!(by = %admin.user, "export");
    tokio::task::spawn_blocking(move || {
        let mut first = serde_json::to_vec(&header).unwrap_or_default();
        first.push(b'\n');
        if tx.blocking_send(Ok(first.into())).is_err() {
            return;
        }
        for entry in store.export_iter() {
            let msg = entry.map_err(ApiError::from).map(|(collection, mut item)| {
                item.seq = 0;
                let mut line = serde_json::to_vec(&Line { collection, item }).unwrap_or_default();
                line.push(b'\n');
                web::Bytes::from(line)
            });
            let stop = msg.is_err();
            if tx.blocking_send(msg).is_err() || stop {
                return;
            }
        }
    });
    let body = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(body)
}

fn line_error(n: usize, e: ApiError) -> ApiError {
    ApiError::new(e.code, format!("line {n}: {}", e.message))
}

fn check_item(collection: Collection, item: &Item) -> Result<(), ApiError> {
    check_id(&item.id)?;
    if collection == Collection::Users
        && !item.deleted
        && item.content.parse::<crate::auth::UserRecord>().is_err()
    {
        return Err(ApiError::new(
            Code::InvalidUser,
            "a user's content must hold role and password_hash",
        ));
    }
    if !is_valid_rev(&item.rev)
        || item.ancestors.len() > ANCESTORS_KEEP
        || !item.ancestors.iter().all(|r| is_valid_rev(r))
    {
        return Err(ApiError::new(
            Code::InvalidRev,
            "rev and ancestors must be revisions N-HASH",
        ));
    }
    if item.name.chars().count() > MAX_NAME_LEN || item.name.chars().any(char::is_control) {
        return Err(ApiError::new(
            Code::InvalidName,
            "name is too long or has control characters",
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// `replace` (default) or `fail`.
    on_conflict: Option<String>,
}

pub async fn import(
    state: web::Data<AppState>,
    admin: Admin,
    q: web::Query<ImportQuery>,
    body: LimitedBytes,
) -> Result<HttpResponse, ApiError> {
    let policy = match q.on_conflict.as_deref() {
        None | Some("replace") => ImportPolicy::Replace,
        Some("fail") => ImportPolicy::Fail,
        Some(_) => {
            return Err(ApiError::new(
                Code::InvalidQuery,
                "on_conflict is replace or fail",
            ));
        }
    };
    let depth = state.config.content.max_json_depth + 2;
    let mut lines = body
        .0
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace));
    let (_, first) = lines
        .next()
        .ok_or_else(|| ApiError::new(Code::EmptyImport, "the import is empty"))?;
    let header: Header = parse_json(first, depth).map_err(|e| line_error(1, e))?;
    if header.folio_export != EXPORT_VERSION {
        return Err(ApiError::new(
            Code::UnsupportedExport,
            format!(
                "export format {} is not supported (this server reads {EXPORT_VERSION})",
                header.folio_export
            ),
        ));
    }
    let mut items = Vec::new();
    let mut seen = HashSet::new();
    for (i, raw) in lines {
        let n = i + 1;
        let line: Line = parse_json(raw, depth).map_err(|e| line_error(n, e))?;
        if !line.collection.exported() {
            return Err(line_error(
                n,
                ApiError::new(Code::InvalidCollection, "sessions are not imported"),
            ));
        }
        check_item(line.collection, &line.item).map_err(|e| line_error(n, e))?;
        if !seen.insert((line.collection, line.item.id.clone())) {
            return Err(line_error(
                n,
                ApiError::new(Code::DuplicateItem, "the item appears twice"),
            ));
        }
        items.push((line.collection, line.item));
    }
    let total = items.len();
    let report = state.store.import(items, policy).await?;
    tracing::info!(
        by = %admin.user,
        total,
        written = report.written,
        replaced = report.replaced.len(),
        from = %header.server,
        "import"
    );
    let mut body = serde_json::to_value(&report).unwrap_or_default();
    if let Some(obj) = body.as_object_mut() {
        obj.insert("items".into(), json!(total));
    }
    Ok(HttpResponse::Ok().json(body))
}
