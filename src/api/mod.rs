//! The HTTP layer: handlers grouped by audience — content, conflicts, sessions and users, backup,
//! operations, the server-to-server API (`servers`) and BULLY's heartbeat — the one route table
//! ([`configure`]) and the one application factory ([`create_app`]) used by the server and the
//! tests alike.

pub mod backup;
pub mod body;
pub mod bully;
pub mod conflicts;
pub mod content;
pub mod openapi;
pub mod ops;
pub mod servers;
pub mod session;
pub mod users;

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{App, HttpResponse, web};
use futures_util::FutureExt;

use serde_json::json;

use crate::app::AppState;
use crate::error::{ApiError, Code};
use crate::metrics::{RequestLabels, RouteLabels};
use crate::store::Item;
use crate::sync::SaveOutcome;

/// Refuses any id outside the safe alphabet.
pub fn check_id(id: &str) -> Result<(), ApiError> {
    if crate::ids::is_valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::InvalidId,
            format!(
                "ids are 1 to {} characters of A-Z, a-z, 0-9, '-' and '_'",
                crate::ids::MAX_ID_LEN
            ),
        ))
    }
}

/// The answer to a save, telling its fate (SPEC §2): `status` with `"state":"committed"`, 202
/// with `"state":"pending"` when the leader could not be reached, or 409 naming the winning
/// revision and the conflict record that keeps this edit.
pub fn saved(
    status: StatusCode,
    item: &Item,
    outcome: SaveOutcome,
) -> Result<HttpResponse, ApiError> {
    let (status, state) = match outcome {
        SaveOutcome::Committed => (status, "committed"),
        SaveOutcome::Pending => (StatusCode::ACCEPTED, "pending"),
        SaveOutcome::Conflict { winner, record } => {
            let message = match &record {
                Some(r) => format!(
                    "another edit reached the leader first: revision {} is current and your edit is kept as conflict {}",
                    winner.rev, r.id
                ),
                None => format!(
                    "another edit reached the leader first: revision {} is current",
                    winner.rev
                ),
            };
            return Err(ApiError::new(Code::Conflict, message).with_details(json!({
                "state": "conflict",
                "winner_rev": winner.rev,
                "conflict_id": record.map(|r| r.id),
                "winner": winner.public(),
                "your_rev": item.rev,
            })));
        }
    };
    let mut body = item.public();
    body.state = Some(state);
    Ok(HttpResponse::build(status)
        .insert_header((header::ETAG, content::etag(&item.rev)))
        .json(body))
}

/// Every route but BULLY's ([`bully::configure`]), relative to the context path.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let coll = format!("/api/v1/{}", content::COLLECTIONS);
    cfg.app_data(web::PathConfig::default().error_handler(|e, _| {
        ApiError::new(Code::InvalidPath, format!("the path is not valid: {e}")).into()
    }))
    .app_data(web::QueryConfig::default().error_handler(|e, _| {
        ApiError::new(
            Code::InvalidQuery,
            format!("the query string is not valid: {e}"),
        )
        .into()
    }))
    .route("/health", web::get().to(ops::health))
    .route("/ready", web::get().to(ops::ready))
    .route("/metrics", web::get().to(ops::metrics))
    .route("/api/v1/login", web::post().to(session::login))
    .route("/api/v1/logout", web::post().to(session::logout))
    .route("/api/v1/me", web::get().to(session::me))
    .route(
        "/api/v1/me/password",
        web::put().to(session::change_password),
    )
    .route("/api/v1/users", web::get().to(users::list))
    .route("/api/v1/users", web::post().to(users::create))
    .route("/api/v1/users/{name}", web::get().to(users::get))
    .route("/api/v1/users/{name}", web::put().to(users::update))
    .route("/api/v1/users/{name}", web::delete().to(users::delete))
    .route("/api/v1/export", web::get().to(backup::export))
    .route("/api/v1/import", web::post().to(backup::import))
    .route("/api/v1/drain", web::post().to(ops::drain))
    .route("/api/v1/drain", web::delete().to(ops::cancel_drain))
    .route("/", web::get().to(ops::root))
    .route("/api/v1/config", web::get().to(ops::config))
    .route("/api/v1/openapi.json", web::get().to(openapi::document))
    .route("/admin", web::get().to(crate::admin::index))
    .route("/admin/", web::get().to(crate::admin::redirect))
    .route("/admin/app.js", web::get().to(crate::admin::script))
    .route("/admin/app.css", web::get().to(crate::admin::style))
    .route("/api/v1/conflicts", web::get().to(conflicts::list))
    .route("/api/v1/conflicts/{id}", web::get().to(conflicts::get))
    .route(
        "/api/v1/conflicts/{id}",
        web::delete().to(conflicts::delete),
    )
    .route(
        "/api/v1/conflicts/{id}/restore",
        web::post().to(conflicts::restore),
    )
    .route("/cluster/v1/token", web::post().to(servers::token))
    .route("/cluster/v1/push", web::post().to(servers::push))
    .route("/cluster/v1/changes", web::get().to(servers::changes))
    .route("/cluster/v1/digest", web::get().to(servers::digest))
    .route("/cluster/v1/keys", web::post().to(servers::keys))
    .route("/cluster/v1/fetch", web::post().to(servers::fetch))
    .route("/cluster/v1/drain", web::post().to(servers::drain))
    .route("/cluster/v1/drain", web::delete().to(servers::cancel_drain))
    .route("/cluster/v1/cluster", web::get().to(servers::cluster))
    .route("/cluster/v1/term", web::post().to(servers::claim_term))
    .route("/api/v1/cluster", web::get().to(ops::cluster))
    .route("/api/v1/changes", web::get().to(ops::changes))
    .route(&coll, web::get().to(content::list))
    .route(&coll, web::post().to(content::create))
    .route(&format!("{coll}/{{id}}"), web::get().to(content::get))
    .route(&format!("{coll}/{{id}}"), web::put().to(content::put))
    .route(&format!("{coll}/{{id}}"), web::delete().to(content::delete))
    .route(
        &format!("{coll}/{{id}}/history"),
        web::get().to(content::history),
    )
    .route(
        &format!("{coll}/{{id}}/history/{{rev}}"),
        web::get().to(content::revision),
    )
    .route(
        &format!("{coll}/{{id}}/history/{{rev}}/restore"),
        web::post().to(content::restore),
    );
}

/// The answer for a path no route matches.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(Code::NotFound, "no such endpoint"))
}

/// The whole HTTP application over `state`: every route under `server.context_path` (BULLY's
/// heartbeat only in that mode), request counts and latencies around them, and the state the
/// extractors read (the configuration for body limits, [`Auth`] for users, the server-token gate
/// for other servers). `main` serves it; tests call it in-process with
/// `actix_web::test::init_service(create_app(state))`.
pub fn create_app(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let scope = match state.config.server.context_path.as_str() {
        "/" => String::new(),
        ctx => ctx.to_string(),
    };
    let metrics = state.metrics.clone();
    let bully = state.bully.clone().map(web::Data::from);
    // Browsers that reached this server over HTTPS keep to HTTPS for a year.
    let hsts = actix_web::middleware::Condition::new(
        state.config.server.tls.is_some(),
        actix_web::middleware::DefaultHeaders::new()
            .add((header::STRICT_TRANSPORT_SECURITY, "max-age=31536000")),
    );
    App::new()
        .app_data(state.clone())
        .app_data(web::Data::from(state.config.clone()))
        .app_data(state.auth.clone())
        .app_data(state.servers.clone())
        .wrap(hsts)
        // Answers compressed (zstd, gzip or brotli) for clients that ask, other servers among
        // them; answers carrying a token are marked `identity` and left alone (no secret beside
        // a reflected input in a compressed answer).
        .wrap(actix_web::middleware::Compress::default())
        .wrap_fn(move |req, srv| {
            let metrics = metrics.clone();
            let started = Instant::now();
            let method = req.method().to_string();
            srv.call(req).map(move |res| {
                if let Ok(res) = &res {
                    let route = res
                        .request()
                        .match_pattern()
                        .unwrap_or_else(|| "unmatched".into());
                    let status = res.status().as_u16();
                    metrics
                        .requests
                        .get_or_create(&RequestLabels {
                            route: route.clone(),
                            method,
                            status,
                        })
                        .inc();
                    metrics
                        .latency
                        .get_or_create(&RouteLabels { route })
                        .observe(started.elapsed().as_secs_f64());
                }
                res
            })
        })
        .service(
            web::scope(&scope)
                .configure(configure)
                .configure(|cfg| {
                    if let Some(bully) = bully {
                        cfg.app_data(bully).configure(bully::configure);
                    }
                })
                .default_service(web::to(not_found)),
        )
        .default_service(web::to(not_found))
}
