//! Conflict records: the edits that lost to the leader's revision, kept so nothing is lost. List
//! them, read one beside the current winner, restore the loser (a new edit on top of the winner),
//! or dismiss it. Records are items of the synchronised `conflicts` collection.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use super::content::ListQuery;
use super::{check_id, saved};
use crate::app::AppState;
use crate::auth::{AnyUser, Editor};
use crate::error::ApiError;
use crate::store::{Collection, Edit, Item, Precondition};

/// The public shape of a conflict record.
pub fn view(item: &Item) -> Value {
    let c = item.content.value();
    json!({
        "id": item.id,
        "rev": item.rev,
        "collection": c["collection"],
        "item_id": c["item_id"],
        "winner_rev": c["winner_rev"],
        "loser": c["loser"],
        "detected_by": item.origin,
        "created_at": item.updated_at,
    })
}

pub async fn list(
    state: web::Data<AppState>,
    _user: AnyUser,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let (limit, cursor) = q.page()?;
    let page = state
        .store
        .list(Collection::Conflicts, cursor, limit)
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "items": page.items.iter().map(view).collect::<Vec<_>>(), "next_cursor": page.next })))
}

fn target(record: &Item) -> Result<(Collection, String), ApiError> {
    let content = record.content.value();
    let coll = content["collection"].as_str().and_then(Collection::parse);
    let id = content["item_id"].as_str();
    match (coll, id) {
        (Some(c), Some(id)) if crate::ids::is_valid_id(id) => Ok((c, id.to_string())),
        _ => Err(ApiError::internal("the conflict record is unreadable")),
    }
}

pub async fn get(
    state: web::Data<AppState>,
    _user: AnyUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    check_id(&id)?;
    let record = state
        .store
        .get_live(Collection::Conflicts, id.into_inner())
        .await?;
    let (coll, item_id) = target(&record)?;
    let current = state
        .store
        .get(coll, item_id)
        .await?
        .filter(|i| !i.deleted)
        .and_then(|i| serde_json::to_value(i.public()).ok());
    let mut body = view(&record);
    body["current"] = current.unwrap_or(Value::Null);
    Ok(HttpResponse::Ok().json(body))
}

async fn dismiss(state: &AppState, record: &Item, user: &str) -> Result<(), ApiError> {
    let edit = Edit {
        name: record.name.clone(),
        content: Value::Null,
        deleted: true,
        author: user.to_string(),
        origin: state.server_id.clone(),
        restored_from: None,
    };
    state
        .sync
        .save(
            Collection::Conflicts,
            record.id.clone(),
            edit,
            Precondition::Rev(record.rev.clone()),
        )
        .await?;
    Ok(())
}

pub async fn restore(
    req: HttpRequest,
    state: web::Data<AppState>,
    user: Editor,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    check_id(&id)?;
    let record = state
        .store
        .get_live(Collection::Conflicts, id.into_inner())
        .await?;
    let (coll, item_id) = target(&record)?;
    let content = record.content.value();
    let loser = &content["loser"];
    let deleted = loser["deleted"].as_bool().unwrap_or(false);
    let name = loser["name"].as_str().unwrap_or(&record.name).to_string();
    let edit = Edit {
        name,
        content: if deleted {
            Value::Null
        } else {
            loser["content"].clone()
        },
        deleted,
        author: user.user.clone(),
        origin: state.server_id.clone(),
        restored_from: None,
    };
    let pre = super::content::if_match(&req)?.unwrap_or(Precondition::None);
    let (item, outcome) = state.sync.save(coll, item_id, edit, pre).await?;
    dismiss(&state, &record, &user.user).await?;
    tracing::info!(conflict = %record.id, item = %item.id, by = %user.user, "conflict restored");
    saved(StatusCode::OK, &item, outcome)
}

pub async fn delete(
    state: web::Data<AppState>,
    user: Editor,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    check_id(&id)?;
    let record = state
        .store
        .get_live(Collection::Conflicts, id.into_inner())
        .await?;
    dismiss(&state, &record, &user.user).await?;
    Ok(HttpResponse::Ok().json(json!({ "id": record.id, "dismissed": true })))
}
