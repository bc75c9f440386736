//! Operations endpoints: `/health` (always answers while alive), `/ready` (200 only while
//! RUNNING, for load balancers), `/metrics` (Prometheus/OpenMetrics text), drain, and the cluster
//! view (for a stand-alone server, a cluster of one).

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::app::{AppState, Phase};
use crate::auth::{Admin, AnyUser};
use crate::config::Config;
use crate::error::{ApiError, Code};
use crate::metrics::CollectionLabels;

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
        "leader_reachable": sync.following().map(|_| sync.leader_reachable()),
        // `reachable`, `late`, `unreachable`, or `refusing` (it answers and refuses this server).
        "leader_health": sync.following().map(|_| sync.leader_link()),
        // Why calls to the leader fail, while they do.
        "leader_error": sync.following().and(sync.link_error()),
        "leader_last_contact": sync.following().and(sync.leader_last_contact()),
        // Caught up with the leader since it began following it: saves wait (202) until then.
        "leader_synced": sync.following().map(|_| sync.synced()),
        "can_commit": sync.can_commit(),
        "membership_source": sync.membership_source(),
        "lag": sync.lag(),
        "storage": sync.storage_json(),
        // Servers whose clocks are further from the leader's than `cluster.clock.warn`.
        "clock_warnings": sync.clock_warnings(),
        "version": VERSION,
    }))
}

pub async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match state.lifecycle.get() {
        Phase::Running => {
            Ok(HttpResponse::Ok().json(json!({ "ready": true, "lifecycle": "RUNNING" })))
        }
        phase => Err(
            ApiError::new(Code::NotReady, format!("the server is {}", phase.as_str()))
                .with_retry_after(5)
                .with_details(json!({ "lifecycle": phase.as_str() })),
        ),
    }
}

/// `GET /metrics`: Prometheus' text format 0.0.4, or OpenMetrics when the scraper's `Accept`
/// asks for `application/openmetrics-text`; every value that describes other servers is computed
/// now (see `Replication::refresh_metrics`).
pub async fn metrics(
    req: actix_web::HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.sync.refresh_metrics();
    state
        .metrics
        .store_bytes
        .set(state.store.size_on_disk().await? as i64);
    let space = state.store.space();
    state
        .metrics
        .data_free_bytes
        .set(space.free.min(i64::MAX as u64) as i64);
    state.metrics.store_writable.set(i64::from(space.writable));
    state.metrics.checkpoint_failures.set(
        state
            .store
            .checkpoint_health()
            .consecutive_failures
            .min(i64::MAX as u64) as i64,
    );
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
    let openmetrics = req
        .headers()
        .get(actix_web::http::header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    Ok(if openmetrics {
        HttpResponse::Ok()
            .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
            .body(body)
    } else {
        HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(text_format(&body))
    })
}

/// OpenMetrics text (all the metrics crate renders) as Prometheus' text format 0.0.4: a counter's
/// HELP and TYPE lines name its samples (`…_total`), as 0.0.4 wants, and the OpenMetrics-only
/// `# UNIT` and `# EOF` lines go. Samples are the same in both.
fn text_format(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].into_iter().find_map(|p| {
            let (name, rest) = line.strip_prefix(p)?.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {rest}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Turns the server DRAINING: `/ready` answers 503 so the balancer moves sessions elsewhere, while
/// requests still being routed here are served.
pub async fn drain(state: web::Data<AppState>, admin: Admin) -> HttpResponse {
    start_draining(&state, &admin.user).await
}

/// Turns the server DRAINING on behalf of `by`; a BULLY leader hands leadership over at once.
pub async fn start_draining(state: &AppState, by: &str) -> HttpResponse {
    state.lifecycle.advance(Phase::Draining);
    tracing::info!(by = %by, "draining on request");
    if let Some(bully) = &state.bully {
        bully.set_draining(true).await;
    }
    HttpResponse::Accepted().json(json!({ "lifecycle": state.lifecycle.get().as_str() }))
}

/// `DELETE /api/v1/drain`: cancels a drain, back to RUNNING (`/ready` answers 200 again); refused
/// while the server is stopping or when it is not draining.
pub async fn cancel_drain(
    state: web::Data<AppState>,
    admin: Admin,
) -> Result<HttpResponse, ApiError> {
    resume(&state, &admin.user).await
}

/// Cancels a drain on behalf of `by` (see [`cancel_drain`]); a BULLY server takes part in
/// elections again.
pub async fn resume(state: &AppState, by: &str) -> Result<HttpResponse, ApiError> {
    match state.lifecycle.resume() {
        Ok(phase) => {
            tracing::info!(by = %by, "drain cancelled; ready again");
            if let Some(bully) = &state.bully {
                bully.set_draining(false).await;
            }
            Ok(HttpResponse::Ok().json(json!({ "lifecycle": phase.as_str() })))
        }
        Err(phase) => Err(ApiError::new(
            Code::NotDraining,
            match phase {
                Phase::Draining | Phase::Stopping => {
                    "the server is stopping; its drain cannot be cancelled".to_string()
                }
                other => format!("the server is {}, not draining", other.as_str()),
            },
        )
        .with_details(json!({ "lifecycle": phase.as_str() }))),
    }
}

/// `GET /`: the admin page, which the start banner names first.
pub async fn root(req: actix_web::HttpRequest) -> HttpResponse {
    let admin = format!("{}/admin", req.path().trim_end_matches('/'));
    HttpResponse::Found()
        .insert_header((actix_web::http::header::LOCATION, admin))
        .finish()
}

pub async fn cluster(state: web::Data<AppState>, _user: AnyUser) -> HttpResponse {
    HttpResponse::Ok().json(state.sync.cluster_json(state.lifecycle.get().as_str()))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangesQuery {
    since: Option<u64>,
    limit: Option<usize>,
    wait_ms: Option<u64>,
}

/// `GET /api/v1/changes?since=N&wait_ms=M`: this server's own change log for workbooks and data
/// sources (ids and revisions, no bodies), long-polled: it answers as soon as something changed
/// after `since`, or after `wait_ms` (at most 30 s) with nothing. Clients and tools use it to
/// watch a server without polling.
pub async fn changes(
    state: web::Data<AppState>,
    _user: AnyUser,
    q: web::Query<ChangesQuery>,
) -> Result<HttpResponse, ApiError> {
    let since = q.since.unwrap_or(0);
    if since > i64::MAX as u64 {
        return Err(ApiError::new(
            Code::InvalidQuery,
            format!("since is at most {}", i64::MAX),
        ));
    }
    let limit = q.limit.unwrap_or(500);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::new(Code::InvalidLimit, "limit must be 1 to 1000"));
    }
    let max_wait = crate::api::servers::MAX_WAIT;
    let wait = std::time::Duration::from_millis(q.wait_ms.unwrap_or(0));
    if wait > max_wait {
        return Err(ApiError::new(
            Code::InvalidQuery,
            format!("wait_ms is at most {}", max_wait.as_millis()),
        ));
    }
    if *state.store.watch_seq().borrow() <= since && !wait.is_zero() {
        let mut seq = state.store.watch_seq();
        let mut shutdown = state.shutdown.clone();
        tokio::select! {
            _ = seq.wait_for(|s| *s > since) => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|s| *s) => {}
        }
    }
    let (changes, more) = state.store.change_heads(since, limit).await?;
    let next = changes.last().map(|c| c.0).unwrap_or(since);
    let items: Vec<_> = changes
        .iter()
        .filter(|(_, c, _)| matches!(c, crate::store::Collection::Workbooks | crate::store::Collection::Datasources))
        .map(|(seq, c, h)| json!({ "seq": seq, "collection": c, "id": h.id, "rev": h.rev, "deleted": h.deleted }))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "changes": items, "next": next, "more": more })))
}

/// `GET /api/v1/config` (admin): every key with its effective value and source, secrets redacted.
pub async fn config(config: web::Data<Config>, _admin: Admin) -> HttpResponse {
    let rows: Vec<_> = config
        .effective
        .iter()
        .map(|(k, v, s)| json!({ "key": k, "value": v, "source": s }))
        .collect();
    HttpResponse::Ok().json(json!({ "items": rows }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters_are_named_by_their_samples_in_the_text_format() {
        let om = "# HELP a_b things.\n# TYPE a_b counter\n# UNIT a_b x\na_b_total 1\n\
                  # HELP g level.\n# TYPE g gauge\ng 2\n# EOF\n";
        assert_eq!(
            super::text_format(om),
            "# HELP a_b_total things.\n# TYPE a_b_total counter\na_b_total 1\n\
             # HELP g level.\n# TYPE g gauge\ng 2\n"
        );
    }
}
