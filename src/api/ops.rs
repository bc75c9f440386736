//! Operations endpoints: `/health` (always answers while alive), `/ready` (200 only while
//! RUNNING, for load balancers), `/metrics` (Prometheus/OpenMetrics text), drain, and the cluster
//! view (for a stand-alone server, a cluster of one).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::app::{AppState, CollectionLabels, Phase};
use crate::auth::{Admin, AnyUser};
use crate::error::ApiError;

/// Folio's version, reported by health and the cluster view.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let sync = &state.sync;
    HttpResponse::Ok().json(json!({
        "status": "alive",
        "lifecycle": state.lifecycle.get().as_str(),
        "server": state.server_id,
        "mode": state.config.cluster.mode.as_str(),
        "role": sync.role(),
        "term": state.terms.current(),
        "leader": sync.leader_json(),
        "leader_reachable": sync.following().map(|_| sync.link_is_up() == Some(true)),
        "lag": sync.lag(),
        "version": VERSION,
    }))
}

pub async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match state.lifecycle.get() {
        Phase::Running => {
            Ok(HttpResponse::Ok().json(json!({ "ready": true, "lifecycle": "RUNNING" })))
        }
        phase => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("the server is {}", phase.as_str()),
        )
        .with_retry_after(5)
        .with_details(json!({ "lifecycle": phase.as_str() }))),
    }
}

pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state
        .metrics
        .store_bytes
        .set(state.store.size_on_disk().await? as i64);
    for (c, n) in state.store.counts().await? {
        state
            .metrics
            .items
            .get_or_create(&CollectionLabels {
                collection: c.as_str().into(),
            })
            .set(n as i64);
    }
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, &state.metrics.registry)
        .map_err(|_| ApiError::internal("metrics encoding failed"))?;
    Ok(HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(body))
}

/// Turns the server DRAINING: `/ready` answers 503 so the balancer moves sessions elsewhere, while
/// requests still being routed here are served.
pub async fn drain(state: web::Data<AppState>, admin: Admin) -> HttpResponse {
    state.lifecycle.advance(Phase::Draining);
    tracing::info!(by = %admin.user, "draining on request");
    HttpResponse::Accepted().json(json!({ "lifecycle": state.lifecycle.get().as_str() }))
}

pub async fn cluster(state: web::Data<AppState>, _user: AnyUser) -> HttpResponse {
    HttpResponse::Ok().json(state.sync.cluster_json(state.lifecycle.get().as_str()))
}
