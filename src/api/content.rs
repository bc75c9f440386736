//! Workbooks and data sources: list, get, create, put, delete, history and restore. Each save
//! answers with the item, its `state` and an `ETag` of its revision; `If-Match` makes a save
//! conditional (412 on a stale revision).

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::body::JsonBody;
use super::{check_id, saved};
use crate::app::AppState;
use crate::auth::{AnyUser, Editor};
use crate::error::{ApiError, Code};
use crate::store::item::is_valid_rev;
use crate::store::{Collection, Edit, Item, Precondition};

/// Route pattern segment naming the content collections.
pub const COLLECTIONS: &str = "{coll:workbooks|datasources}";

/// Fields only the server sets.
const SERVER_FIELDS: [&str; 6] = ["id", "rev", "updated_at", "updated_by", "origin", "deleted"];
/// Longest item name.
pub const MAX_NAME_LEN: usize = 256;

fn collection(name: &str) -> Result<Collection, ApiError> {
    match name {
        "workbooks" => Ok(Collection::Workbooks),
        "datasources" => Ok(Collection::Datasources),
        _ => Err(ApiError::not_found("no such collection")),
    }
}

/// Validates `{"name": "...", "content": <any JSON>}` and nothing else.
pub fn item_input(body: Value) -> Result<(String, Value), ApiError> {
    let Value::Object(mut map) = body else {
        return Err(ApiError::new(
            Code::InvalidBody,
            r#"send an object {"name": "...", "content": ...}"#,
        ));
    };
    if let Some(f) = SERVER_FIELDS.iter().find(|f| map.contains_key(**f)) {
        return Err(ApiError::new(
            Code::ReadOnlyField,
            format!("{f} is set by the server; send only name and content"),
        ));
    }
    let name = match map.remove("name") {
        Some(Value::String(s)) => s,
        Some(_) => {
            return Err(ApiError::new(Code::InvalidName, "name must be a string"));
        }
        None => return Err(ApiError::new(Code::MissingField, "name is required")),
    };
    check_name(&name)?;
    let content = map
        .remove("content")
        .ok_or_else(|| ApiError::new(Code::MissingField, "content is required"))?;
    if let Some(extra) = map.keys().next() {
        return Err(ApiError::new(
            Code::UnknownField,
            format!("unknown field {extra}; send only name and content"),
        ));
    }
    Ok((name, content))
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty()
        || name.chars().count() > MAX_NAME_LEN
        || name.chars().any(char::is_control)
    {
        return Err(ApiError::new(
            Code::InvalidName,
            format!("name must be 1 to {MAX_NAME_LEN} characters without control characters"),
        ));
    }
    Ok(())
}

/// The `If-Match` precondition of a request, if any.
pub fn if_match(req: &HttpRequest) -> Result<Option<Precondition>, ApiError> {
    let Some(v) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .map_err(|_| ApiError::new(Code::InvalidIfMatch, "If-Match is not readable"))?
        .trim();
    if s == "*" {
        return Ok(Some(Precondition::Live));
    }
    let rev = s.trim_start_matches("W/").trim_matches('"');
    if !is_valid_rev(rev) {
        return Err(ApiError::new(
            Code::InvalidIfMatch,
            "If-Match must be a revision such as \"3-<hash>\"",
        ));
    }
    Ok(Some(Precondition::Rev(rev.to_string())))
}

/// `ETag` header value of a revision.
pub fn etag(rev: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{rev}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

#[derive(Deserialize)]
pub struct ListQuery {
    pub limit: Option<usize>,
    pub cursor: Option<String>,
    /// List deleted items (tombstones) instead of live ones.
    #[serde(default)]
    pub deleted: bool,
}

/// Default and largest page sizes.
pub const PAGE_DEFAULT: usize = 100;
pub const PAGE_MAX: usize = 1000;

impl ListQuery {
    /// Checked page size and cursor.
    pub fn page(&self) -> Result<(usize, Option<String>), ApiError> {
        let limit = self.limit.unwrap_or(PAGE_DEFAULT);
        if limit == 0 || limit > PAGE_MAX {
            return Err(ApiError::new(
                Code::InvalidLimit,
                format!("limit must be 1 to {PAGE_MAX}"),
            ));
        }
        if let Some(c) = &self.cursor {
            check_id(c)?;
        }
        Ok((limit, self.cursor.clone()))
    }
}

/// A page of a listing.
#[derive(serde::Serialize)]
pub struct Page<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}

fn page_body<T>(items: Vec<T>, next_cursor: Option<String>) -> Page<T> {
    Page { items, next_cursor }
}

pub async fn list(
    state: web::Data<AppState>,
    _user: AnyUser,
    coll: web::Path<String>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let coll = collection(&coll)?;
    let (limit, cursor) = q.page()?;
    let page = if q.deleted {
        state.store.list_deleted(coll, cursor, limit).await?
    } else {
        state.store.list(coll, cursor, limit).await?
    };
    let mut items = Vec::with_capacity(page.items.len());
    for item in &page.items {
        items.push(marked(&state, coll, item)?);
    }
    Ok(HttpResponse::Ok().json(page_body(items, page.next)))
}

/// An item as read: `"state": "pending"` while its latest edit here waits for the leader.
fn marked<'a>(
    state: &AppState,
    coll: Collection,
    item: &'a Item,
) -> Result<crate::store::item::Public<'a>, ApiError> {
    let mut public = item.public();
    if state.store.is_queued(coll, &item.id)? {
        public.state = Some("pending");
    }
    Ok(public)
}

pub async fn get(
    state: web::Data<AppState>,
    _user: AnyUser,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (coll, id) = path.into_inner();
    let coll = collection(&coll)?;
    check_id(&id)?;
    let item = state.store.get_live(coll, id).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, etag(&item.rev)))
        .json(marked(&state, coll, &item)?))
}

pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    user: Editor,
    coll: web::Path<String>,
    body: JsonBody<Value>,
) -> Result<HttpResponse, ApiError> {
    let coll = collection(&coll)?;
    let (name, content) = item_input(body.0)?;
    let id = crate::ids::new_id();
    let edit = Edit {
        name,
        content,
        deleted: false,
        author: user.user,
        origin: state.server_id.clone(),
        restored_from: None,
    };
    let (item, outcome) = state
        .sync
        .save(coll, id, edit, Precondition::Absent)
        .await?;
    let location = format!("{}/{}", req.path().trim_end_matches('/'), item.id);
    let mut resp = saved(StatusCode::CREATED, &item, outcome)?;
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

pub async fn put(
    req: HttpRequest,
    state: web::Data<AppState>,
    user: Editor,
    path: web::Path<(String, String)>,
    body: JsonBody<Value>,
) -> Result<HttpResponse, ApiError> {
    let (coll, id) = path.into_inner();
    let coll = collection(&coll)?;
    check_id(&id)?;
    let pre = if_match(&req)?;
    let (name, content) = item_input(body.0)?;
    let edit = Edit {
        name,
        content,
        deleted: false,
        author: user.user,
        origin: state.server_id.clone(),
        restored_from: None,
    };
    let (item, outcome, existed) = state
        .sync
        .save_replacing(coll, id, edit, pre.unwrap_or(Precondition::None))
        .await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    saved(status, &item, outcome)
}

pub async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    user: Editor,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (coll, id) = path.into_inner();
    let coll = collection(&coll)?;
    check_id(&id)?;
    let pre = if_match(&req)?;
    let current = state.store.get_live(coll, id.clone()).await?;
    let pre = pre.unwrap_or(Precondition::Rev(current.rev.clone()));
    let edit = Edit {
        name: current.name,
        content: Value::Null,
        deleted: true,
        author: user.user,
        origin: state.server_id.clone(),
        restored_from: None,
    };
    let (item, outcome) = state.sync.save(coll, id, edit, pre).await?;
    saved(StatusCode::OK, &item, outcome)
}

pub async fn history(
    state: web::Data<AppState>,
    _user: AnyUser,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (coll, id) = path.into_inner();
    let coll = collection(&coll)?;
    check_id(&id)?;
    let revs = state.store.history(coll, id).await?;
    if revs.is_empty() {
        return Err(ApiError::not_found("no such item"));
    }
    Ok(HttpResponse::Ok()
        .json(json!({ "items": revs.iter().map(|r| r.summary()).collect::<Vec<_>>() })))
}

fn rev_path(
    path: web::Path<(String, String, String)>,
) -> Result<(Collection, String, String), ApiError> {
    let (coll, id, rev) = path.into_inner();
    let coll = collection(&coll)?;
    check_id(&id)?;
    if !is_valid_rev(&rev) {
        return Err(ApiError::new(
            Code::InvalidRev,
            "a revision looks like 3-<32 hex digits>",
        ));
    }
    Ok((coll, id, rev))
}

pub async fn revision(
    state: web::Data<AppState>,
    _user: AnyUser,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (coll, id, rev) = rev_path(path)?;
    let r = state.store.revision(coll, id.clone(), rev).await?;
    let mut body = r.summary();
    if let Some(obj) = body.as_object_mut() {
        obj.insert("id".into(), Value::String(id));
        obj.insert("content".into(), r.content.value());
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, etag(&r.rev)))
        .json(body))
}

pub async fn restore(
    req: HttpRequest,
    state: web::Data<AppState>,
    user: Editor,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (coll, id, rev) = rev_path(path)?;
    let pre = if_match(&req)?;
    let old = state.store.revision(coll, id.clone(), rev.clone()).await?;
    if old.deleted {
        return Err(ApiError::new(
            Code::DeletedRevision,
            "that revision is a deletion; restore an earlier one",
        ));
    }
    let edit = Edit {
        name: old.name,
        content: old.content.value(),
        deleted: false,
        author: user.user,
        origin: state.server_id.clone(),
        restored_from: Some(rev),
    };
    let (item, outcome) = state
        .sync
        .save(coll, id, edit, pre.unwrap_or(Precondition::None))
        .await?;
    saved(StatusCode::OK, &item, outcome)
}
