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

/// A route's resource: a method it does not serve answers 405 naming the ones it does.
pub fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        HttpResponse::from_error(
            ApiError::new(
                Code::MethodNotAllowed,
                format!("this endpoint answers {allow} only"),
            )
            .with_allow(allow),
        )
    }))
}

/// Every route but BULLY's ([`bully::configure`]), relative to the context path.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let coll = format!("/api/v1/{}", content::COLLECTIONS);
    let item = format!("{coll}/{{id}}");
    let history = format!("{coll}/{{id}}/history");
    let revision = format!("{coll}/{{id}}/history/{{rev}}");
    let restore = format!("{coll}/{{id}}/history/{{rev}}/restore");
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
    .service(resource("/health", "GET").route(web::get().to(ops::health)))
    .service(resource("/ready", "GET").route(web::get().to(ops::ready)))
    .service(resource("/metrics", "GET").route(web::get().to(ops::metrics)))
    .service(resource("/", "GET").route(web::get().to(ops::root)))
    .service(resource("/api/v1/login", "POST").route(web::post().to(session::login)))
    .service(resource("/api/v1/logout", "POST").route(web::post().to(session::logout)))
    .service(resource("/api/v1/me", "GET").route(web::get().to(session::me)))
    .service(resource("/api/v1/me/password", "PUT").route(web::put().to(session::change_password)))
    .service(
        resource("/api/v1/users", "GET, POST")
            .route(web::get().to(users::list))
            .route(web::post().to(users::create)),
    )
    .service(
        resource("/api/v1/users/{name}", "GET, PUT, DELETE")
            .route(web::get().to(users::get))
            .route(web::put().to(users::update))
            .route(web::delete().to(users::delete)),
    )
    .service(resource("/api/v1/export", "GET").route(web::get().to(backup::export)))
    .service(resource("/api/v1/import", "POST").route(web::post().to(backup::import)))
    .service(
        resource("/api/v1/drain", "POST, DELETE")
            .route(web::post().to(ops::drain))
            .route(web::delete().to(ops::cancel_drain)),
    )
    .service(resource("/api/v1/config", "GET").route(web::get().to(ops::config)))
    .service(resource("/api/v1/openapi.json", "GET").route(web::get().to(openapi::document)))
    .service(resource("/api/v1/cluster", "GET").route(web::get().to(ops::cluster)))
    .service(resource("/api/v1/changes", "GET").route(web::get().to(ops::changes)))
    .route("/admin", web::get().to(crate::admin::index))
    .route("/admin/", web::get().to(crate::admin::redirect))
    .route("/admin/app.js", web::get().to(crate::admin::script))
    .route("/admin/app.css", web::get().to(crate::admin::style))
    .service(resource("/api/v1/conflicts", "GET").route(web::get().to(conflicts::list)))
    .service(
        resource("/api/v1/conflicts/{id}", "GET, DELETE")
            .route(web::get().to(conflicts::get))
            .route(web::delete().to(conflicts::delete)),
    )
    .service(
        resource("/api/v1/conflicts/{id}/restore", "POST")
            .route(web::post().to(conflicts::restore)),
    )
    .service(resource("/cluster/v1/challenge", "POST").route(web::post().to(servers::challenge)))
    .service(resource("/cluster/v1/token", "POST").route(web::post().to(servers::token)))
    .service(resource("/cluster/v1/push", "POST").route(web::post().to(servers::push)))
    .service(resource("/cluster/v1/changes", "GET").route(web::get().to(servers::changes)))
    .service(resource("/cluster/v1/digest", "GET").route(web::get().to(servers::digest)))
    .service(resource("/cluster/v1/keys", "POST").route(web::post().to(servers::keys)))
    .service(resource("/cluster/v1/fetch", "POST").route(web::post().to(servers::fetch)))
    .service(
        resource("/cluster/v1/drain", "POST, DELETE")
            .route(web::post().to(servers::drain))
            .route(web::delete().to(servers::cancel_drain)),
    )
    .service(resource("/cluster/v1/cluster", "GET").route(web::get().to(servers::cluster)))
    .service(resource("/cluster/v1/term", "POST").route(web::post().to(servers::claim_term)))
    .service(
        resource(&coll, "GET, POST")
            .route(web::get().to(content::list))
            .route(web::post().to(content::create)),
    )
    .service(
        resource(&item, "GET, PUT, DELETE")
            .route(web::get().to(content::get))
            .route(web::put().to(content::put))
            .route(web::delete().to(content::delete)),
    )
    .service(resource(&history, "GET").route(web::get().to(content::history)))
    .service(resource(&revision, "GET").route(web::get().to(content::revision)))
    .service(resource(&restore, "POST").route(web::post().to(content::restore)));
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
