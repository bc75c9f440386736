//! User management for admins: list, create, read, change role or password, delete. Users are
//! items of the synchronised `users` collection whose content is a [`UserRecord`]; password hashes
//! never leave the server through this API.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::body::JsonBody;
use super::check_id;
use super::content::ListQuery;
use crate::app::AppState;
use crate::auth::{Admin, Role, UserRecord, password};
use crate::error::{ApiError, Code};
use crate::store::{Collection, Edit, Item, Precondition};
use crate::sync::Replication;

/// Shortest and longest password accepted.
pub const PASSWORD_MIN: usize = 8;
pub const PASSWORD_MAX: usize = 1024;

fn view(item: &Item) -> Value {
    let role = item.content.parse::<UserRecord>().map(|r| r.role).ok();
    json!({
        "username": item.id,
        "role": role,
        "rev": item.rev,
        "updated_at": item.updated_at,
        "updated_by": item.updated_by,
        "origin": item.origin,
    })
}

pub(crate) fn check_password(pw: &str) -> Result<(), ApiError> {
    let n = pw.chars().count();
    if !(PASSWORD_MIN..=PASSWORD_MAX).contains(&n) {
        return Err(ApiError::new(
            Code::WeakPassword,
            format!("passwords are {PASSWORD_MIN} to {PASSWORD_MAX} characters"),
        ));
    }
    Ok(())
}

fn parse_role(s: &str) -> Result<Role, ApiError> {
    Role::parse(s)
        .ok_or_else(|| ApiError::new(Code::InvalidRole, "role must be admin, editor or viewer"))
}

pub(crate) async fn hash(pw: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || password::hash(&pw))
        .await
        .map_err(|_| ApiError::internal("hashing failed"))?
        .map_err(|_| ApiError::internal("hashing failed"))
}

/// Creates or replaces a user record (used by the API and the bootstrap administrator).
pub async fn write_user(
    sync: &Replication,
    username: &str,
    record: &UserRecord,
    author: &str,
    origin: &str,
    pre: Precondition,
) -> Result<Item, ApiError> {
    let content =
        serde_json::to_value(record).map_err(|_| ApiError::internal("encoding failed"))?;
    let edit = Edit {
        name: username.to_string(),
        content,
        deleted: false,
        author: author.into(),
        origin: origin.into(),
        restored_from: None,
    };
    Ok(sync
        .save(Collection::Users, username.to_string(), edit, pre)
        .await?
        .0)
}

pub async fn list(
    state: web::Data<AppState>,
    _admin: Admin,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let (limit, cursor) = q.page()?;
    let page = state.store.list(Collection::Users, cursor, limit).await?;
    Ok(HttpResponse::Ok().json(json!({ "items": page.items.iter().map(view).collect::<Vec<_>>(), "next_cursor": page.next })))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    username: String,
    #[schema(min_length = 8, max_length = 1024)]
    password: String,
    #[schema(pattern = "^(admin|editor|viewer)$")]
    role: String,
}

pub async fn create(
    state: web::Data<AppState>,
    admin: Admin,
    body: JsonBody<NewUser>,
) -> Result<HttpResponse, ApiError> {
    let NewUser {
        username,
        password: pw,
        role,
    } = body.0;
    check_id(&username)?;
    let role = parse_role(&role)?;
    check_password(&pw)?;
    let record = UserRecord {
        role,
        password_hash: hash(pw).await?,
    };
    let item = write_user(
        &state.sync,
        &username,
        &record,
        &admin.user,
        &state.server_id,
        Precondition::Absent,
    )
    .await
    .map_err(|e| {
        if e.code == Code::AlreadyExists {
            ApiError::new(Code::AlreadyExists, "that user exists")
        } else {
            e
        }
    })?;
    tracing::info!(user = %username, role = role.as_str(), by = %admin.user, "user created");
    Ok(HttpResponse::Created().json(view(&item)))
}

pub async fn get(
    state: web::Data<AppState>,
    _admin: Admin,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    check_id(&name)?;
    let item = state
        .store
        .get_live(Collection::Users, name.into_inner())
        .await?;
    Ok(HttpResponse::Ok().json(view(&item)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    #[schema(pattern = "^(admin|editor|viewer)$")]
    role: Option<String>,
    #[schema(min_length = 8, max_length = 1024)]
    password: Option<String>,
}

pub async fn update(
    state: web::Data<AppState>,
    admin: Admin,
    name: web::Path<String>,
    body: JsonBody<UserChange>,
) -> Result<HttpResponse, ApiError> {
    let name = name.into_inner();
    check_id(&name)?;
    let UserChange { role, password: pw } = body.0;
    let role = role.as_deref().map(parse_role).transpose()?;
    if let Some(pw) = &pw {
        check_password(pw)?;
    }
    let current = state
        .store
        .get_live(Collection::Users, name.clone())
        .await?;
    if role.is_none() && pw.is_none() {
        // Nothing to change: the user as it is.
        return Ok(HttpResponse::Ok().json(view(&current)));
    }
    let mut record: UserRecord = current
        .content
        .parse()
        .map_err(|_| ApiError::internal("stored user is unreadable"))?;
    if let Some(r) = role {
        if name == admin.user && r != Role::Admin {
            return Err(ApiError::new(
                Code::OwnRole,
                "you cannot remove your own admin role",
            ));
        }
        record.role = r;
    }
    if let Some(pw) = pw {
        record.password_hash = hash(pw).await?;
    }
    let item = write_user(
        &state.sync,
        &name,
        &record,
        &admin.user,
        &state.server_id,
        Precondition::Rev(current.rev),
    )
    .await?;
    Ok(HttpResponse::Ok().json(view(&item)))
}

pub async fn delete(
    state: web::Data<AppState>,
    admin: Admin,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = name.into_inner();
    check_id(&name)?;
    if name == admin.user {
        return Err(ApiError::new(
            Code::OwnAccount,
            "you cannot delete your own account",
        ));
    }
    let current = state
        .store
        .get_live(Collection::Users, name.clone())
        .await?;
    let edit = Edit {
        name: name.clone(),
        content: Value::Null,
        deleted: true,
        author: admin.user.clone(),
        origin: state.server_id.clone(),
        restored_from: None,
    };
    state
        .sync
        .save(
            Collection::Users,
            name.clone(),
            edit,
            Precondition::Rev(current.rev),
        )
        .await?;
    tracing::info!(user = %name, by = %admin.user, "user deleted");
    Ok(HttpResponse::Ok().json(json!({ "username": name, "deleted": true })))
}
