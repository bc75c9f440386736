//! The server-to-server API under `/cluster/v1/`: token exchange, push, the long-polled change
//! feed, and the digest/keys/fetch calls of reconciliation. Only server tokens open it (the
//! `ServerAuth` extractor), every call states the protocol version and its term.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::body::{JsonBody, ServerJson};
use crate::app::AppState;
use crate::auth::server::{self, ServerAuth};
use crate::error::{ApiError, Code};
use crate::store::DIGEST_BUCKETS;
use crate::sync::resolve::Rules;
use crate::wire::*;

/// The longest a change-feed request may wait.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// Most keys per fetch.
pub const MAX_FETCH: usize = 1000;

fn not_leader(state: &AppState) -> ApiError {
    ApiError::new(
        Code::NotLeader,
        "this server does not lead; push to the leader",
    )
    .with_details(serde_json::json!({ "leader": state.sync.leader_json() }))
}

/// This server's token issuer; none when it stands alone.
fn issuer(state: &AppState) -> Result<&server::ServerTokens, ApiError> {
    state
        .servers
        .tokens
        .as_ref()
        .ok_or_else(|| ApiError::new(Code::NotClustered, "this server is not part of a cluster"))
}

/// `POST /cluster/v1/challenge`: a single-use challenge for the caller's next token request.
pub async fn challenge(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    server::check_protocol(&req)?;
    let tokens = issuer(&state)?;
    Ok(HttpResponse::Ok().json(ChallengeAnswer {
        challenge: tokens.challenge(),
        server: state.server_id.clone(),
        expires_in_ms: server::CHALLENGE_TTL.as_millis() as u64,
    }))
}

pub async fn token(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: JsonBody<TokenRequest>,
) -> Result<HttpResponse, ApiError> {
    server::check_protocol(&req)?;
    let tokens = issuer(&state)?;
    let token = tokens.exchange(&body.0);
    tokens.log_outcome(&body.0.id, token.as_ref().err().map(|e| e.message.as_str()));
    let token = token?;
    // An operator's command is no member of the cluster.
    if body.0.id != crate::client::OPERATOR {
        state.sync.saw_clock(
            &body.0.id,
            crate::wire::offset_ms(body.0.ts_ms, crate::wire::now_ms()),
        );
    }
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CONTENT_ENCODING, "identity"))
        .json(TokenAnswer {
            token,
            server: state.server_id.clone(),
            incarnation: state.store.incarnation().to_string(),
            term: state.terms.current(),
            now_ms: crate::wire::now_ms(),
            expires_in: tokens.ttl_secs,
        }))
}

/// `POST /cluster/v1/push` asks: `gaps=refuse` (see [`crate::store::Gaps`]). Parameters and
/// values this version does not know are ignored, so a later version may add some.
#[derive(Deserialize)]
pub struct PushQuery {
    gaps: Option<String>,
}

pub async fn push(
    state: web::Data<AppState>,
    auth: ServerAuth,
    q: web::Query<PushQuery>,
    body: ServerJson<PushRequest>,
) -> Result<HttpResponse, ApiError> {
    let refuse_gaps = q.gaps.as_deref() == Some("refuse");
    if !state.sync.view().i_lead {
        return Err(not_leader(&state));
    }
    if !state.sync.leadership.can_commit() {
        return Err(ApiError::new(
            Code::TooFewMembers,
            "the leader sees fewer members than cluster.bully.min_members; keep the edit queued",
        )
        .with_retry_after(1));
    }
    for e in &body.0.edits {
        super::check_id(&e.item.id)?;
        if !crate::store::item::is_valid_rev(&e.item.rev) {
            return Err(ApiError::new(
                Code::InvalidRev,
                "pushed items carry revisions N-HASH",
            ));
        }
    }
    let edits = whole_edits(&state, body.0.edits).await?;
    let gaps = if refuse_gaps {
        crate::store::Gaps::Refuse(
            edits
                .iter()
                .filter(|e| e.whole)
                .map(|e| (e.collection, e.item.id.clone()))
                .collect(),
        )
    } else {
        crate::store::Gaps::Fill
    };
    let (items, revs): (Vec<_>, Vec<_>) = edits
        .into_iter()
        .map(|e| {
            let rev = e.item.rev.clone();
            ((e.collection, e.item), rev)
        })
        .unzip();
    let rules = Rules {
        me: state.server_id.clone(),
    };
    // Refused should leadership move on before the push is decided (the store's fence).
    let verdicts = state
        .store
        .accept_pushed(items, rules, gaps)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NotLeading => not_leader(&state),
            e => e.into(),
        })?;
    let outcomes: Vec<PushOutcome> = revs
        .into_iter()
        .zip(verdicts)
        .map(|(rev, pushed)| PushOutcome::of(rev, pushed))
        .collect();
    let conflicts = outcomes
        .iter()
        .filter(|o| matches!(o, PushOutcome::Conflict { .. }))
        .count();
    if conflicts > 0 {
        state.metrics.conflicts.inc_by(conflicts as u64);
        tracing::info!(from = %auth.caller, conflicts, "pushed edits lost to the leader's revisions; kept as conflict records");
    }
    Ok(HttpResponse::Ok().json(PushAnswer {
        term: state.terms.current(),
        outcomes,
    }))
}

/// Pushed edits whole again: each delta applied to its base, the edit before it in the same
/// push or a revision this store keeps, and checked against the edit's revision.
async fn whole_edits(state: &AppState, edits: Vec<Entry>) -> Result<Vec<Entry>, ApiError> {
    let mut out: Vec<Entry> = Vec::with_capacity(edits.len());
    for mut e in edits {
        let Some(delta) = e.delta.take() else {
            out.push(e);
            continue;
        };
        let before = out
            .last()
            .filter(|p| p.collection == e.collection && p.item.id == e.item.id)
            .filter(|p| p.item.rev == delta.base)
            .map(|p| p.item.clone());
        let base = match before {
            Some(item) => Some(item),
            None => state
                .store
                .revision(e.collection, e.item.id.clone(), delta.base.clone())
                .await
                .ok()
                .map(|r| r.into_item(&e.item.id, Vec::new())),
        };
        let Some(item) = base.and_then(|base| delta.apply(&base, e.item)) else {
            return Err(ApiError::new(
                Code::DeltaBaseMissing,
                "a pushed delta's base revision is not held here, or it does not give the pushed revision; push the edits whole",
            ));
        };
        out.push(Entry {
            whole: e.whole,
            ..Entry::new(e.collection, item)
        });
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangesQuery {
    incarnation: String,
    since: u64,
    limit: Option<usize>,
    wait_ms: Option<u64>,
}

pub async fn changes(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: ServerAuth,
    q: web::Query<ChangesQuery>,
) -> Result<HttpResponse, ApiError> {
    if !state.sync.view().i_lead {
        return Err(not_leader(&state));
    }
    let incarnation = state.store.incarnation().to_string();
    if q.incarnation != incarnation {
        return Err(ApiError::new(
            Code::CursorReset,
            "the cursor names another store of this server; reconcile",
        )
        .with_details(serde_json::json!({ "incarnation": incarnation })));
    }
    state
        .sync
        .saw_follower(&auth.caller, q.since, auth.version.clone());
    if let Some(offset) = auth.clock_offset_ms {
        state.sync.saw_clock(&auth.caller, offset);
    }
    let head = *state.store.watch_seq().borrow();
    if q.since > head {
        // The follower saw changes this store no longer has (it lost writes that were never
        // flushed, or was restored from a backup): only a digest comparison can tell what differs.
        return Err(ApiError::new(
            Code::CursorReset,
            "the cursor is ahead of this store; reconcile",
        )
        .with_details(serde_json::json!({ "incarnation": incarnation })));
    }
    let limit = q.limit.unwrap_or(crate::sync::follow::BATCH).clamp(1, 1000);
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(0)).min(MAX_WAIT);
    if head <= q.since && !wait.is_zero() {
        let mut seq = state.store.watch_seq();
        let mut shutdown = state.shutdown.clone();
        tokio::select! {
            _ = seq.wait_for(|s| *s > q.since) => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|s| *s) => {}
        }
    }
    // Only what is on disk goes out, so a follower's cursor never gets ahead of what this store
    // would still have after a crash (the flush is shared with the writes that woke this poll):
    // every change up to `upto` was written before the flush began.
    let upto = *state.store.watch_seq().borrow();
    state.store.durable().await?;
    let (changes, more) = state.store.changes_since(q.since, upto, limit).await?;
    let next = changes.last().map(|c| c.seq).unwrap_or(q.since);
    let deltas = req
        .headers()
        .get(DELTAS_HEADER)
        .is_some_and(|v| v.as_bytes() == b"1");
    let mut out = Vec::with_capacity(changes.len());
    for c in changes {
        out.push(if deltas {
            as_delta(&state, c).await
        } else {
            c.into()
        });
    }
    let changes = out;
    let members = state.sync.follower_summaries();
    Ok(HttpResponse::Ok().json(ChangesAnswer {
        term: state.terms.current(),
        incarnation,
        leader_seq: *state.store.watch_seq().borrow(),
        next,
        more,
        changes,
        members,
        takes_deltas: true,
        now_ms: Some(crate::wire::now_ms()),
    }))
}

/// A change as a delta from its parent revision, when this store still holds that revision and
/// the delta is smaller (see [`crate::sync::parent_delta`]); else whole.
async fn as_delta(state: &AppState, c: crate::store::Change) -> FeedChange {
    match crate::sync::parent_delta(&state.store, c.collection, &c.item, None).await {
        Some(delta) => {
            let mut item = c.item;
            item.content = crate::store::Content::null();
            FeedChange {
                seq: c.seq,
                collection: c.collection,
                item,
                delta: Some(delta),
            }
        }
        None => c.into(),
    }
}

pub async fn digest(
    state: web::Data<AppState>,
    _auth: ServerAuth,
) -> Result<HttpResponse, ApiError> {
    let (buckets, seq) = state.store.digest().await?;
    Ok(HttpResponse::Ok().json(DigestAnswer {
        term: state.terms.current(),
        incarnation: state.store.incarnation().to_string(),
        seq,
        buckets,
    }))
}

pub async fn keys(
    state: web::Data<AppState>,
    _auth: ServerAuth,
    body: ServerJson<KeysRequest>,
) -> Result<HttpResponse, ApiError> {
    if body.0.buckets.iter().any(|b| *b >= DIGEST_BUCKETS) {
        return Err(ApiError::new(
            Code::InvalidBucket,
            format!("buckets are 0 to {}", DIGEST_BUCKETS - 1),
        ));
    }
    let keys = state.store.bucket_keys(body.0.buckets).await?;
    Ok(HttpResponse::Ok().json(KeysAnswer {
        term: state.terms.current(),
        keys,
    }))
}

pub async fn fetch(
    state: web::Data<AppState>,
    _auth: ServerAuth,
    body: ServerJson<FetchRequest>,
) -> Result<HttpResponse, ApiError> {
    if body.0.keys.len() > MAX_FETCH {
        return Err(ApiError::new(
            Code::TooManyKeys,
            format!("fetch at most {MAX_FETCH} keys at once"),
        ));
    }
    for (_, id) in &body.0.keys {
        super::check_id(id)?;
    }
    let items = if body.0.history {
        let items = state.store.fetch_with_history(body.0.keys).await?;
        items
            .into_iter()
            .map(|(collection, item, history)| Entry {
                history,
                ..Entry::new(collection, item)
            })
            .collect()
    } else {
        let items = state.store.fetch(body.0.keys).await?;
        items
            .into_iter()
            .map(|(collection, item)| Entry::new(collection, item))
            .collect()
    };
    Ok(HttpResponse::Ok().json(FetchAnswer {
        term: state.terms.current(),
        items,
    }))
}

/// `POST /cluster/v1/drain`: the drain an operator asks for with the shared secret (from a
/// server's host, with its configuration) instead of an admin's password.
pub async fn drain(state: web::Data<AppState>, auth: ServerAuth) -> HttpResponse {
    super::ops::start_draining(&state, &auth.caller).await
}

/// `DELETE /cluster/v1/drain`: cancels a drain, as `DELETE /api/v1/drain` does.
pub async fn cancel_drain(
    state: web::Data<AppState>,
    auth: ServerAuth,
) -> Result<HttpResponse, ApiError> {
    super::ops::resume(&state, &auth.caller).await
}

/// `GET /cluster/v1/cluster`: the cluster view, as `GET /api/v1/cluster` answers it.
pub async fn cluster(state: web::Data<AppState>, _auth: ServerAuth) -> HttpResponse {
    HttpResponse::Ok().json(state.sync.cluster_json(state.lifecycle.get().as_str()))
}

/// A new term a server claims for its leadership (KUBERNETES).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TermClaim {
    pub term: u64,
}

/// `POST /cluster/v1/term`: grants a server the new term it claims for its leadership when the
/// term is newer than any this server knows, adopting (and persisting) it first, so it is
/// granted once; otherwise 409 `term_taken` with this server's term, to claim above it.
pub async fn claim_term(
    state: web::Data<AppState>,
    auth: ServerAuth,
    body: ServerJson<TermClaim>,
) -> Result<HttpResponse, ApiError> {
    if auth.caller == crate::client::OPERATOR {
        return Err(ApiError::new(
            Code::Forbidden,
            "an operator cannot claim a term",
        ));
    }
    let term = body.0.term;
    if state.terms.observe(term).await? {
        return Ok(HttpResponse::Ok().json(serde_json::json!({ "term": term, "granted": true })));
    }
    let mine = state.terms.current();
    Err(ApiError::new(
        Code::TermTaken,
        format!("term {term} is not newer than this server's term {mine}"),
    )
    .with_details(serde_json::json!({ "term": mine })))
}
