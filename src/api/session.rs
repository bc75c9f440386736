//! Login, logout and "who am I". A login makes a session in the synchronised `sessions`
//! collection and answers a token and an HttpOnly, SameSite=Strict cookie (Secure over TLS).
//! Unknown users and wrong passwords get the same answer after the same work.

use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::body::JsonBody;
use crate::app::AppState;
use crate::auth::{
    AnyUser, SESSION_COOKIE, SessionRecord, UserRecord, password, unix_now, user_record,
};
use crate::error::{ApiError, Code};
use crate::store::{Collection, Edit, Precondition};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    username: String,
    password: String,
}

fn cookie_path(state: &AppState) -> String {
    state.config.server.context_path.clone()
}

fn session_cookie<'a>(state: &AppState, value: String, max_age: i64) -> Cookie<'a> {
    Cookie::build(SESSION_COOKIE, value)
        .path(cookie_path(state))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(state.config.server.tls.is_some())
        .max_age(CookieDuration::seconds(max_age))
        .finish()
}

pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: JsonBody<LoginBody>,
) -> Result<HttpResponse, ApiError> {
    let LoginBody {
        username,
        password: pw,
    } = body.0;
    if pw.len() > 1024 || username.len() > 256 {
        return Err(ApiError::new(
            Code::InvalidBody,
            "user name or password too long",
        ));
    }
    let user_key = format!("user:{}", username.to_ascii_lowercase());
    let ip_key = format!(
        "ip:{}",
        req.peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default()
    );
    let limited = state
        .auth
        .limiter
        .check(std::slice::from_ref(&user_key))
        .and(state.auth.ip_limiter.check(std::slice::from_ref(&ip_key)));
    if let Err(secs) = limited {
        return Err(ApiError::new(
            Code::TooManyAttempts,
            "too many failed logins; try again later",
        )
        .with_retry_after(secs));
    }
    let record = user_record(&state.store, &username).await?;
    let hash = record.as_ref().map(|r| r.password_hash.clone());
    let ok = {
        let pw = pw.clone();
        tokio::task::spawn_blocking(move || match hash {
            Some(h) => password::verify(&pw, &h),
            None => {
                password::verify_dummy(&pw);
                false
            }
        })
        .await
        .unwrap_or(false)
    };
    let Some(record) = record.filter(|_| ok) else {
        state.auth.limiter.fail(std::slice::from_ref(&user_key));
        state.auth.ip_limiter.fail(std::slice::from_ref(&ip_key));
        state.metrics.login_failures.inc();
        tracing::info!(user = %username, "failed login");
        return Err(ApiError::new(
            Code::InvalidCredentials,
            "wrong user name or password",
        ));
    };
    state.auth.limiter.clear(&user_key);
    let ttl = state.auth.session_ttl.as_secs();
    let expires = unix_now() + ttl;
    let sid = crate::ids::new_id();
    let content = serde_json::to_value(SessionRecord {
        user: username.clone(),
        expires,
    })
    .unwrap_or_default();
    let edit = Edit {
        name: username.clone(),
        content,
        deleted: false,
        author: username.clone(),
        origin: state.server_id.clone(),
        restored_from: None,
    };
    state
        .sync
        .save(
            Collection::Sessions,
            sid.clone(),
            edit,
            Precondition::Absent,
        )
        .await?;
    let token = state.auth.issue(&username, &sid, expires)?;
    tracing::info!(user = %username, "login");
    Ok(HttpResponse::Ok()
        .cookie(session_cookie(&state, token.clone(), ttl as i64))
        .insert_header((header::CONTENT_ENCODING, "identity"))
        .json(json!({
            "token": token,
            "user": username,
            "role": record.role,
            "expires_at": expires,
        })))
}

pub async fn logout(state: web::Data<AppState>, user: AnyUser) -> Result<HttpResponse, ApiError> {
    let edit = Edit {
        name: user.user.clone(),
        content: serde_json::Value::Null,
        deleted: true,
        author: user.user.clone(),
        origin: state.server_id.clone(),
        restored_from: None,
    };
    state
        .sync
        .save(
            Collection::Sessions,
            user.session.clone(),
            edit,
            Precondition::Live,
        )
        .await?;
    Ok(HttpResponse::Ok()
        .cookie(session_cookie(&state, String::new(), 0))
        .json(json!({ "logged_out": true })))
}

/// `GET /api/v1/me`: who is logged in, and whether it is the bootstrap administrator still
/// using the password the configuration gave it.
pub async fn me(state: web::Data<AppState>, user: AnyUser) -> Result<HttpResponse, ApiError> {
    let bootstrap = bootstrap_password(&state, &user.user).await?;
    Ok(HttpResponse::Ok().json(json!({
        "user": user.user,
        "role": user.role,
        "bootstrap_password": bootstrap,
    })))
}

/// Whether `user` is the configured administrator and its password is still
/// `auth.admin.password` (checked once per stored hash: argon2 is slow on purpose).
async fn bootstrap_password(state: &AppState, user: &str) -> Result<bool, ApiError> {
    let auth = &state.config.auth;
    let (Some(admin), Some(configured)) = (&auth.admin_user, &auth.admin_password) else {
        return Ok(false);
    };
    if admin != user {
        return Ok(false);
    }
    let Some(record) = user_record(&state.store, user).await? else {
        return Ok(false);
    };
    if let Some((hash, same)) = crate::lock(&state.auth.bootstrap_checked).clone()
        && hash == record.password_hash
    {
        return Ok(same);
    }
    let configured = configured.expose().to_string();
    let hash = record.password_hash.clone();
    let same = tokio::task::spawn_blocking(move || password::verify(&configured, &hash))
        .await
        .unwrap_or(false);
    *crate::lock(&state.auth.bootstrap_checked) = Some((record.password_hash, same));
    Ok(same)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    current_password: String,
    #[schema(min_length = 8, max_length = 1024)]
    new_password: String,
}

/// `PUT /api/v1/me/password`: any user changes their own password, naming the current one; every
/// other session of that user ends (the one making the change stays).
pub async fn change_password(
    state: web::Data<AppState>,
    user: AnyUser,
    body: JsonBody<PasswordChange>,
) -> Result<HttpResponse, ApiError> {
    let PasswordChange {
        current_password,
        new_password,
    } = body.0;
    if current_password.len() > 1024 {
        return Err(ApiError::new(
            Code::InvalidBody,
            "the current password is too long",
        ));
    }
    crate::api::users::check_password(&new_password)?;
    let user_key = format!("user:{}", user.user.to_ascii_lowercase());
    if let Err(secs) = state.auth.limiter.check(std::slice::from_ref(&user_key)) {
        return Err(ApiError::new(
            Code::TooManyAttempts,
            "too many wrong passwords; try again later",
        )
        .with_retry_after(secs));
    }
    let current = state
        .store
        .get_live(Collection::Users, user.user.clone())
        .await?;
    let mut record: UserRecord = current
        .content
        .parse()
        .map_err(|_| ApiError::internal("stored user is unreadable"))?;
    let hash = record.password_hash.clone();
    let right = tokio::task::spawn_blocking(move || password::verify(&current_password, &hash))
        .await
        .unwrap_or(false);
    if !right {
        state.auth.limiter.fail(std::slice::from_ref(&user_key));
        return Err(ApiError::new(
            Code::WrongPassword,
            "the current password is not right; the password is unchanged",
        ));
    }
    state.auth.limiter.clear(&user_key);
    record.password_hash = crate::api::users::hash(new_password).await?;
    crate::api::users::write_user(
        &state.sync,
        &user.user,
        &record,
        &user.user,
        &state.server_id,
        Precondition::Rev(current.rev),
    )
    .await?;
    let keep = user.session.clone();
    let ended = crate::auth::expiry::end_sessions(&state.sync, &user.user, |id, r| {
        id != keep && r.is_some_and(|r| r.user == user.user)
    })
    .await;
    tracing::info!(user = %user.user, other_sessions_ended = ended, "password changed");
    Ok(HttpResponse::Ok().json(json!({ "user": user.user, "sessions_ended": ended })))
}
