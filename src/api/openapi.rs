//! The OpenAPI 3.1 document served at `GET /api/v1/openapi.json`, generated with `utoipa`: every
//! user route and every `/cluster/v1` route with its parameters, request and answer schemas, the
//! error body (its `code` listing every code of [`Code`]) and the security schemes (a user's
//! bearer token or session cookie; a server token between servers). The answers' schemas are
//! written here beside the routes' descriptions; the request bodies are the handlers' own types.

use actix_web::HttpResponse;
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

use crate::error::Code;

/// `GET /api/v1/openapi.json`.
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

// ---- Schemas ---------------------------------------------------------------------------------

/// Every error answer: `{"error": {"code", "message", ...details}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// An error's code (one of the table in `error.rs`), a message for people, and details some
/// codes add (`current_rev`, `term`, `lifecycle`, `free_bytes`, ...).
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// A workbook or data source.
#[derive(Serialize, ToSchema)]
pub struct Item {
    pub id: String,
    pub name: String,
    /// Any JSON value.
    pub content: Value,
    /// `N-<32 hex digits>`.
    pub rev: String,
    pub updated_at: String,
    pub updated_by: String,
    /// The server the revision was made on.
    pub origin: String,
    /// Only in a deletion's answer and in lists of deleted items.
    pub deleted: Option<bool>,
    /// The revision this one restored, when it is a restore.
    pub restored_from: Option<String>,
    /// `committed` or `pending` in answers to saves; `pending` in reads while the item's latest
    /// edit on this server waits for the leader.
    pub state: Option<String>,
}

/// What a save sends: a name and any JSON content (nothing else).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemInput {
    /// 1 to 256 characters, not only spaces, no control characters.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub name: String,
    pub content: Value,
}

/// A page of items; `next_cursor` continues the listing.
#[derive(Serialize, ToSchema)]
pub struct ItemPage {
    pub items: Vec<Item>,
    pub next_cursor: Option<String>,
}

/// A revision of an item's history.
#[derive(Serialize, ToSchema)]
pub struct RevisionSummary {
    pub rev: String,
    pub name: String,
    pub updated_at: String,
    pub updated_by: String,
    pub origin: String,
    pub deleted: bool,
    pub restored_from: Option<String>,
}

/// An item's kept revisions, newest first.
#[derive(Serialize, ToSchema)]
pub struct History {
    pub items: Vec<RevisionSummary>,
}

/// One revision with its content.
#[derive(Serialize, ToSchema)]
pub struct RevisionBody {
    pub id: String,
    pub rev: String,
    pub name: String,
    pub content: Value,
    pub updated_at: String,
    pub updated_by: String,
    pub origin: String,
    pub deleted: bool,
    pub restored_from: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct LoginAnswer {
    pub token: String,
    pub user: String,
    pub role: String,
    pub expires_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct LoggedOut {
    pub logged_out: bool,
}

#[derive(Serialize, ToSchema)]
pub struct Me {
    pub user: String,
    pub role: String,
    /// The configured administrator still uses the configuration's password.
    pub bootstrap_password: bool,
}

#[derive(Serialize, ToSchema)]
pub struct PasswordChanged {
    pub changed: bool,
}

#[derive(Serialize, ToSchema)]
pub struct User {
    pub username: String,
    /// `admin`, `editor` or `viewer`.
    pub role: Option<String>,
    pub rev: String,
    pub updated_at: String,
    pub updated_by: String,
    pub origin: String,
}

#[derive(Serialize, ToSchema)]
pub struct UserPage {
    pub items: Vec<User>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UserDeleted {
    pub username: String,
    pub deleted: bool,
}

/// A losing edit, kept.
#[derive(Serialize, ToSchema)]
pub struct Conflict {
    pub id: String,
    pub rev: String,
    /// `workbooks` or `datasources`.
    pub collection: String,
    pub item_id: String,
    pub winner_rev: String,
    /// The edit that lost: its name, content, revision, author.
    pub loser: Value,
    pub detected_by: String,
    pub created_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct ConflictPage {
    pub items: Vec<Conflict>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ConflictDismissed {
    pub id: String,
    pub dismissed: bool,
}

/// What an import wrote.
#[derive(Serialize, ToSchema)]
pub struct ImportReport {
    pub items: u64,
    pub written: u64,
    /// Items replaced (`on_conflict=replace`), as `collection/id`.
    pub replaced: Vec<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct Lifecycle {
    /// `STARTING`, `RUNNING`, `DRAINING` or `STOPPING`.
    pub lifecycle: String,
}

#[derive(Serialize, ToSchema)]
pub struct Ready {
    pub ready: bool,
    pub lifecycle: String,
}

/// `/health`: what this server is and last heard.
#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub lifecycle: String,
    pub server: String,
    pub mode: String,
    pub role: String,
    pub term: u64,
    pub leader: Option<Value>,
    pub leader_reachable: Option<bool>,
    /// A follower: its leader is `reachable`, `late`, `unreachable`, or `refusing` (it answers
    /// and refuses this server's calls).
    pub leader_health: Option<String>,
    /// A follower: why its calls to the leader fail, while they do.
    pub leader_error: Option<String>,
    pub leader_last_contact: Option<String>,
    /// A follower: caught up with its leader since it began following it (saves wait as
    /// pending until then).
    pub leader_synced: Option<bool>,
    pub can_commit: bool,
    pub membership_source: Option<Value>,
    pub lag: u64,
    /// `data_dir`, `free_bytes`, `min_free_bytes`, `writable`, `checkpoint_failures`,
    /// `checkpoint_error`.
    pub storage: Value,
    /// Servers whose clocks are further from the leader's than `cluster.clock.warn`.
    pub clock_warnings: Vec<crate::sync::clock::ClockWarning>,
    pub version: String,
}

/// The cluster as this server sees it.
#[derive(Serialize, ToSchema)]
pub struct ClusterView {
    pub mode: String,
    pub membership_source: Option<Value>,
    pub term: u64,
    pub me: Value,
    pub leader: Option<Value>,
    pub can_commit: bool,
    /// Each member: id, url, role, self, health (`reachable`, `late`, `unreachable`,
    /// `refusing`, `unknown`, or this server's lifecycle), last_contact, lag, version,
    /// clock_offset_ms, reason (why calls to it fail, while they do).
    pub members: Vec<Value>,
    /// `cluster.clock.warn` in milliseconds.
    pub clock_warn_ms: i64,
    /// Servers whose clocks are further from the leader's than `cluster.clock.warn`.
    pub clock_warnings: Vec<crate::sync::clock::ClockWarning>,
}

/// One change of the user change feed.
#[derive(Serialize, ToSchema)]
pub struct FeedChange {
    pub seq: u64,
    pub collection: String,
    pub id: String,
    pub rev: String,
    pub deleted: bool,
}

#[derive(Serialize, ToSchema)]
pub struct FeedChanges {
    pub changes: Vec<FeedChange>,
    pub next: u64,
    pub more: bool,
}

#[derive(Serialize, ToSchema)]
pub struct ConfigRow {
    pub key: String,
    /// Secrets read `******`.
    pub value: String,
    pub source: String,
}

#[derive(Serialize, ToSchema)]
pub struct ConfigRows {
    pub items: Vec<ConfigRow>,
}

/// An item as servers exchange it (the store's record: id, name, content, rev, ancestors,
/// deleted, updated_at, updated_by, origin, restored_from).
#[derive(Serialize, ToSchema)]
pub struct Entry {
    pub collection: String,
    pub item: Value,
    /// In a fetch asked with `history`: the revisions the item's history keeps, oldest first
    /// (each as `rev`, `name`, `content`, `deleted`, `updated_at`, `updated_by`, `origin`,
    /// `restored_from`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<Value>>,
    /// In a push to a leader whose feed says `takes_deltas`: the item's content (then `null`)
    /// as `{"base": <rev>, "patch": <RFC 6902 patch>}` against revision `base`, the edit
    /// before it in the same push or one the leader keeps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct PushRequest {
    /// Edits in order; an item's revisions that follow each other are its chain, oldest
    /// first (every revision the leader lacks).
    pub edits: Vec<Entry>,
}

#[derive(Serialize, ToSchema)]
pub struct PushAnswer {
    pub term: u64,
    /// Per edit: `{"outcome": "accepted", "rev"}`, `{"outcome": "conflict", "winner",
    /// "record"}` or `{"outcome": "overruled", "winner"}`.
    pub outcomes: Vec<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct ChangesAnswer {
    pub term: u64,
    pub incarnation: String,
    pub leader_seq: u64,
    pub next: u64,
    pub more: bool,
    /// Each change: seq, collection and the item, or (asked with `folio-deltas: 1`) the item
    /// without its content and a `delta`: `{"base": <parent rev>, "patch": <RFC 6902 patch>}`.
    pub changes: Vec<Value>,
    pub members: Vec<Value>,
    /// This leader takes pushed edits as deltas.
    pub takes_deltas: bool,
}

#[derive(Serialize, ToSchema)]
pub struct DigestAnswer {
    pub term: u64,
    pub incarnation: String,
    pub seq: u64,
    pub buckets: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct KeysRequest {
    pub buckets: Vec<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct KeysAnswer {
    pub term: u64,
    /// `[collection, id, rev]` triples.
    pub keys: Vec<Vec<String>>,
}

#[derive(Serialize, ToSchema)]
pub struct FetchRequest {
    /// `[collection, id]` pairs.
    pub keys: Vec<Vec<String>>,
    /// Answer each item with the revisions its history keeps.
    pub history: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct FetchAnswer {
    pub term: u64,
    pub items: Vec<Entry>,
}

#[derive(Serialize, ToSchema)]
pub struct TermGranted {
    pub term: u64,
    pub granted: bool,
}

// ---- Parameters ------------------------------------------------------------------------------

/// The content collections.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Collection {
    Workbooks,
    Datasources,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    pub cursor: Option<String>,
    /// List deleted items instead of live ones.
    pub deleted: Option<bool>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    #[param(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    pub cursor: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChangesParams {
    /// Answer changes after this sequence number.
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    pub since: Option<i64>,
    /// 1 to 1000 (default 500).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Wait up to this long for a change (default 0: answer at once).
    #[param(minimum = 0, maximum = 30000)]
    pub wait_ms: Option<u32>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImportParams {
    /// `replace` (default) or `fail`.
    #[param(pattern = "^(replace|fail)$")]
    pub on_conflict: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedParams {
    pub incarnation: String,
    pub since: u64,
    pub limit: Option<u32>,
    pub wait_ms: Option<u64>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct CollectionPath {
    pub collection: Collection,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ItemPath {
    pub collection: Collection,
    /// 1 to 128 characters of A-Z, a-z, 0-9, `-` and `_`.
    #[param(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    pub id: String,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RevisionPath {
    pub collection: Collection,
    #[param(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    pub id: String,
    /// `N-<32 hex digits>`.
    #[param(pattern = "^[1-9][0-9]{0,18}-[0-9a-f]{32}$")]
    pub rev: String,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct IdPath {
    #[param(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    pub id: String,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct NamePath {
    /// A user name.
    #[param(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    pub name: String,
}

/// `If-Match`: the revision an edit is based on (`"N-<hash>"`), or `*` for any live item.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IfMatch {
    #[param(
        rename = "If-Match",
        nullable = false,
        pattern = "^(\\*|(W/)?\"?[1-9][0-9]{0,18}-[0-9a-f]{32}\"?)$"
    )]
    pub if_match: Option<String>,
}

// ---- Paths -----------------------------------------------------------------------------------

#[allow(dead_code)]
mod paths {
    use super::*;

    #[utoipa::path(get, path = "/health", tag = "operations",
        responses((status = 200, description = "alive", body = Health)))]
    pub fn health() {}

    #[utoipa::path(get, path = "/ready", tag = "operations",
        responses((status = 200, description = "RUNNING", body = Ready),
                  (status = 503, description = "starting, draining or stopping", body = ErrorBody)))]
    pub fn ready() {}

    #[utoipa::path(get, path = "/metrics", tag = "operations",
        responses((status = 200, description = "Prometheus text 0.0.4, or OpenMetrics on Accept",
                   content_type = "text/plain", body = String)))]
    pub fn metrics() {}

    #[utoipa::path(get, path = "/", tag = "operations",
        responses((status = 302, description = "to the admin page")))]
    pub fn root() {}

    #[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations",
        responses((status = 200, description = "this document", body = Object)))]
    pub fn openapi() {}

    #[utoipa::path(post, path = "/api/v1/login", tag = "sessions",
        request_body = crate::api::session::LoginBody,
        responses((status = 200, description = "a session: its token (also set as a cookie)", body = LoginAnswer),
                  (status = 400, description = "a malformed body", body = ErrorBody),
                  (status = 401, description = "wrong user name or password", body = ErrorBody),
                  (status = 413, description = "body too large", body = ErrorBody),
                  (status = 415, description = "not JSON", body = ErrorBody),
                  (status = 429, description = "too many failed logins (Retry-After)", body = ErrorBody),
                  (status = 503, description = "not ready, or the store failed", body = ErrorBody),
                  (status = 507, description = "the data volume is full", body = ErrorBody)))]
    pub fn login() {}

    #[utoipa::path(post, path = "/api/v1/logout", tag = "sessions",
        security(("bearer" = []), ("cookie" = [])),
        responses((status = 200, description = "the session ended", body = LoggedOut),
                  (status = 401, description = "no valid session", body = ErrorBody), (status = 503, description = "the store failed", body = ErrorBody), (status = 507, description = "the data volume is full", body = ErrorBody)))]
    pub fn logout() {}

    #[utoipa::path(get, path = "/api/v1/me", tag = "sessions",
        security(("bearer" = []), ("cookie" = [])),
        responses((status = 200, description = "who is logged in", body = Me),
                  (status = 401, description = "no valid session", body = ErrorBody), (status = 503, description = "the store failed", body = ErrorBody)))]
    pub fn me() {}

    #[utoipa::path(put, path = "/api/v1/me/password", tag = "sessions",
        security(("bearer" = []), ("cookie" = [])),
        request_body = crate::api::session::PasswordChange,
        responses((status = 200, description = "changed; the user's other sessions ended", body = PasswordChanged),
                  (status = 400, description = "a malformed body or a password too short or long", body = ErrorBody), (status = 401, description = "no valid session", body = ErrorBody), (status = 403, description = "the current password is wrong", body = ErrorBody), (status = 413, description = "body too large", body = ErrorBody), (status = 415, description = "not JSON", body = ErrorBody), (status = 503, description = "the store failed", body = ErrorBody), (status = 507, description = "the data volume is full", body = ErrorBody)))]
    pub fn change_password() {}

    #[utoipa::path(get, path = "/api/v1/{collection}", tag = "content",
        security(("bearer" = []), ("cookie" = [])),
        params(CollectionPath, ListParams),
        responses((status = 200, description = "a page of items", body = ItemPage),
                  (status = 400, description = "a bad limit or cursor", body = ErrorBody), (status = 401, description = "no valid session", body = ErrorBody), (status = 404, description = "no such collection", body = ErrorBody), (status = 503, description = "the store failed", body = ErrorBody)))]
    pub fn list() {}

    #[utoipa::path(post, path = "/api/v1/{collection}", tag = "content",
        security(("bearer" = []), ("cookie" = [])),
        params(CollectionPath),
        request_body = ItemInput,
        responses((status = 201, description = "created and committed (Location, ETag)", body = Item),
                  (status = 202, description = "created here, waiting for the leader", body = Item),
                  (status = 400, description = "a malformed body", body = ErrorBody), (status = 401, description = "no valid session", body = ErrorBody), (status = 403, description = "viewers cannot save", body = ErrorBody), (status = 404, description = "no such collection", body = ErrorBody), (status = 409, description = "the leader kept another edit", body = ErrorBody), (status = 413, description = "body too large", body = ErrorBody), (status = 415, description = "not JSON", body = ErrorBody), (status = 503, description = "the store failed, or too few members", body = ErrorBody), (status = 507, description = "the data volume is full", body = ErrorBody)))]
    pub fn create() {}

    #[utoipa::path(get, path = "/api/v1/{collection}/{id}", tag = "content",
        security(("bearer" = []), ("cookie" = [])),
        params(ItemPath),
        responses((status = 200, description = "the item (ETag: its revision)", body = Item),
                  (status = 400, description = "a malformed id", body = ErrorBody), (status = 401, description = "no valid session", body = ErrorBody), (status = 404, description = "no such item", body = ErrorBody), (status = 503, description = "the store failed", body = ErrorBody)))]
    pub fn get() {}

    #[utoipa::path(put, path = "/api/v1/{collection}/{id}", tag = "content",
        security(("bearer" = []), ("cookie" = [])),
        params(ItemPath, IfMatch),
        request_body = ItemInput,
        responses((status = 200, description = "saved and committed", body = Item),
                  (status = 201, description = "created and committed", body = Item),
                  (status = 202, description = "saved here, waiting for the leader", body = Item),
                  (status = 400, description = "a malformed body, id or If-Match", body = ErrorBody), (status = 401, description = "no valid session", body = ErrorBody), (status = 403, description = "viewers cannot save", body = ErrorBody), (status = 404, description = "no such collection", body = ErrorBody), (status = 409, description = "the leader kept another edit", body = ErrorBody), (status = 412, description = "If-Match names another revision", body = ErrorBody), (status = 413, description = "body too large", body = ErrorBody), (status = 415, description = "not JSON", body = ErrorBody), (status = 503, description = "the store failed, or too few members", body = ErrorBody), (status = 507, description = "the data volume is full", body = ErrorBody)))]
    pub fn put() {}

    #[utoipa::path(delete, path = "/api/v1/{collection}/{id}", tag = "content",
        security(("bearer" = []), ("cookie" = [])),
        params(ItemPath, IfMatch),
        responses((status = 200, description = "deleted (a tombstone revision)", body = Item),
                  (status = 202, description = "deleted here, waiting for the leader", body = Item),
                  (status = 400, description = "a malformed id or If-Match", body = ErrorBody), (status = 401, description = "no valid session", body = ErrorBody), (status = 403, description = "viewers cannot delete", body = ErrorBody), (status = 404, description = "no such item", body = ErrorBody), (status = 409, description = "the leader kept another edit", body = ErrorBody), (status = 412, description = "If-Match names another revision", body = ErrorBody), (status = 503, description = "the store failed, or too few members", body = ErrorBody), (status = 507, description = "the data volume is full", body = ErrorBody)))]
    pub fn delete() {}

    #[utoipa::path(get, path = "/api/v1/{collection}/{id}/history", tag = "content",
        security(("bearer" = []), ("cookie" = [])),
        params(ItemPath),
        responses((status = 200, description = "kept revisions, newest first", body = History),
                  (status = 400, description = "a malformed id", body = ErrorBody), (status = 401, description = "no valid session", body = ErrorBody), (status = 404, description = "no such item", body = ErrorBody), (status = 503, description = "the store failed", body = ErrorBody)))]
    pub fn history() {}

    #[utoipa::path(get, path = "/api/v1/{collection}/{id}/history/{rev}", tag = "content",
        security(("bearer" = []), ("cookie" = [])),
        params(RevisionPath),
        responses((status = 200, description = "the revision with its content", body = RevisionBody),
                  (status = 400, description = "a malformed id or revision", body = ErrorBody), (status = 401, description = "no valid session", body = ErrorBody), (status = 404, description = "no such revision", body = ErrorBody), (status = 503, description = "the store failed", body = ErrorBody)))]
    pub fn revision() {}

    #[utoipa::path(post, path = "/api/v1/{collection}/{id}/history/{rev}/restore", tag = "content",
        security(("bearer" = []), ("cookie" = [])),
        params(RevisionPath, IfMatch),
        responses((status = 200, description = "restored as a new revision", body = Item),
                  (status = 202, description = "restored here, waiting for the leader", body = Item),
                  (status = 400, description = "a malformed id, revision or If-Match, or a deletion", body = ErrorBody), (status = 401, description = "no valid session", body = ErrorBody), (status = 403, description = "viewers cannot restore", body = ErrorBody), (status = 404, description = "no such revision", body = ErrorBody), (status = 409, description = "the leader kept another edit", body = ErrorBody), (status = 412, description = "If-Match names another revision", body = ErrorBody), (status = 503, description = "the store failed, or too few members", body = ErrorBody), (status = 507, description = "the data volume is full", body = ErrorBody)))]
    pub fn restore() {}

    #[utoipa::path(get, path = "/api/v1/changes", tag = "content",
        security(("bearer" = []), ("cookie" = [])),
        params(ChangesParams),
        responses((status = 200, description = "changes after `since` (long-polled with wait_ms)", body = FeedChanges),
                  (status = 400, description = "a bad query", body = ErrorBody), (status = 401, description = "no valid session", body = ErrorBody), (status = 503, description = "the store failed", body = ErrorBody)))]
    pub fn changes() {}

    #[utoipa::path(get, path = "/api/v1/users", tag = "users",
        security(("bearer" = []), ("cookie" = [])), params(PageParams),
        responses((status = 200, description = "a page of users", body = UserPage),
                  (status = 400, description = "a bad limit or cursor", body = ErrorBody), (status = 401, description = "no valid session", body = ErrorBody), (status = 403, description = "admins only", body = ErrorBody), (status = 503, description = "the store failed", body = ErrorBody)))]
    pub fn users_list() {}

    #[utoipa::path(post, path = "/api/v1/users", tag = "users",
        security(("bearer" = []), ("cookie" = [])),
        request_body = crate::api::users::NewUser,
        responses((status = 201, description = "created", body = User),
                  (status = 400, description = "a malformed body, name, role or password", body = ErrorBody), (status = 401, description = "no valid session", body = ErrorBody), (status = 403, description = "admins only", body = ErrorBody), (status = 409, description = "the user exists", body = ErrorBody), (status = 413, description = "body too large", body = ErrorBody), (status = 415, description = "not JSON", body = ErrorBody), (status = 503, description = "the store failed", body = ErrorBody), (status = 507, description = "the data volume is full", body = ErrorBody)))]
    pub fn users_create() {}

    #[utoipa::path(get, path = "/api/v1/users/{name}", tag = "users",
        security(("bearer" = []), ("cookie" = [])), params(NamePath),
        responses((status = 200, description = "the user", body = User),
                  (status = 400, description = "a malformed name", body = ErrorBody), (status = 401, description = "no valid session", body = ErrorBody), (status = 403, description = "admins only", body = ErrorBody), (status = 404, description = "no such user", body = ErrorBody), (status = 503, description = "the store failed", body = ErrorBody)))]
    pub fn users_get() {}

    #[utoipa::path(put, path = "/api/v1/users/{name}", tag = "users",
        security(("bearer" = []), ("cookie" = [])), params(NamePath),
        request_body = crate::api::users::UserChange,
        responses((status = 200, description = "changed", body = User),
                  (status = 400, description = "a malformed body, role or password", body = ErrorBody), (status = 401, description = "no valid session", body = ErrorBody), (status = 403, description = "admins only", body = ErrorBody), (status = 404, description = "no such user", body = ErrorBody), (status = 409, description = "the last admin cannot stop being one", body = ErrorBody), (status = 413, description = "body too large", body = ErrorBody), (status = 415, description = "not JSON", body = ErrorBody), (status = 503, description = "the store failed", body = ErrorBody), (status = 507, description = "the data volume is full", body = ErrorBody)))]
    pub fn users_update() {}

    #[utoipa::path(delete, path = "/api/v1/users/{name}", tag = "users",
        security(("bearer" = []), ("cookie" = [])), params(NamePath),
        responses((status = 200, description = "deleted; the user's sessions ended", body = UserDeleted),
                  (status = 400, description = "a malformed name", body = ErrorBody), (status = 401, description = "no valid session", body = ErrorBody), (status = 403, description = "admins only", body = ErrorBody), (status = 404, description = "no such user", body = ErrorBody), (status = 409, description = "the last admin, or yourself", body = ErrorBody), (status = 503, description = "the store failed", body = ErrorBody), (status = 507, description = "the data volume is full", body = ErrorBody)))]
    pub fn users_delete() {}

    #[utoipa::path(get, path = "/api/v1/conflicts", tag = "conflicts",
        security(("bearer" = []), ("cookie" = [])), params(PageParams),
        responses((status = 200, description = "kept losing edits", body = ConflictPage),
                  (status = 400, description = "a bad limit or cursor", body = ErrorBody), (status = 401, description = "no valid session", body = ErrorBody), (status = 503, description = "the store failed", body = ErrorBody)))]
    pub fn conflicts_list() {}

    #[utoipa::path(get, path = "/api/v1/conflicts/{id}", tag = "conflicts",
        security(("bearer" = []), ("cookie" = [])), params(IdPath),
        responses((status = 200, description = "the conflict, with the current winner", body = Conflict),
                  (status = 400, description = "a malformed id", body = ErrorBody), (status = 401, description = "no valid session", body = ErrorBody), (status = 404, description = "no such conflict", body = ErrorBody), (status = 503, description = "the store failed", body = ErrorBody)))]
    pub fn conflicts_get() {}

    #[utoipa::path(post, path = "/api/v1/conflicts/{id}/restore", tag = "conflicts",
        security(("bearer" = []), ("cookie" = [])),
        params(IdPath, IfMatch),
        responses((status = 200, description = "the losing edit is the item's new revision", body = Item),
                  (status = 202, description = "restored here, waiting for the leader", body = Item),
                  (status = 400, description = "a malformed id or If-Match", body = ErrorBody), (status = 401, description = "no valid session", body = ErrorBody), (status = 403, description = "viewers cannot restore", body = ErrorBody), (status = 404, description = "no such conflict", body = ErrorBody), (status = 409, description = "the leader kept another edit", body = ErrorBody), (status = 412, description = "If-Match names another revision", body = ErrorBody), (status = 503, description = "the store failed, or too few members", body = ErrorBody), (status = 507, description = "the data volume is full", body = ErrorBody)))]
    pub fn conflicts_restore() {}

    #[utoipa::path(delete, path = "/api/v1/conflicts/{id}", tag = "conflicts",
        security(("bearer" = []), ("cookie" = [])), params(IdPath),
        responses((status = 200, description = "dismissed", body = ConflictDismissed),
                  (status = 400, description = "a malformed id", body = ErrorBody), (status = 401, description = "no valid session", body = ErrorBody), (status = 403, description = "viewers cannot dismiss", body = ErrorBody), (status = 404, description = "no such conflict", body = ErrorBody), (status = 503, description = "the store failed", body = ErrorBody), (status = 507, description = "the data volume is full", body = ErrorBody)))]
    pub fn conflicts_delete() {}

    #[utoipa::path(get, path = "/api/v1/export", tag = "operations",
        security(("bearer" = []), ("cookie" = [])),
        responses((status = 200, description = "every collection as JSON lines: a header, then {collection, item} per line",
                   content_type = "application/x-ndjson", body = String),
                  (status = 401, description = "no valid session", body = ErrorBody), (status = 403, description = "admins only", body = ErrorBody), (status = 503, description = "the store failed", body = ErrorBody)))]
    pub fn export() {}

    #[utoipa::path(post, path = "/api/v1/import", tag = "operations",
        security(("bearer" = []), ("cookie" = [])), params(ImportParams),
        request_body(content = String, content_type = "application/x-ndjson", description = "an export"),
        responses((status = 200, description = "imported", body = ImportReport),
                  (status = 400, description = "a malformed line (named)", body = ErrorBody), (status = 401, description = "no valid session", body = ErrorBody), (status = 403, description = "admins only", body = ErrorBody), (status = 409, description = "an item exists (on_conflict=fail)", body = ErrorBody), (status = 413, description = "too large", body = ErrorBody), (status = 415, description = "not JSON lines", body = ErrorBody), (status = 503, description = "the store failed", body = ErrorBody), (status = 507, description = "the data volume is full", body = ErrorBody)))]
    pub fn import() {}

    #[utoipa::path(post, path = "/api/v1/drain", tag = "operations",
        security(("bearer" = []), ("cookie" = [])),
        responses((status = 202, description = "DRAINING: /ready answers 503", body = Lifecycle),
                  (status = 401, description = "no valid session", body = ErrorBody), (status = 403, description = "admins only", body = ErrorBody)))]
    pub fn drain() {}

    #[utoipa::path(delete, path = "/api/v1/drain", tag = "operations",
        security(("bearer" = []), ("cookie" = [])),
        responses((status = 200, description = "RUNNING again", body = Lifecycle),
                  (status = 401, description = "no valid session", body = ErrorBody), (status = 403, description = "admins only", body = ErrorBody), (status = 409, description = "already stopping", body = ErrorBody)))]
    pub fn cancel_drain() {}

    #[utoipa::path(get, path = "/api/v1/cluster", tag = "operations",
        security(("bearer" = []), ("cookie" = [])),
        responses((status = 200, description = "the cluster as this server sees it", body = ClusterView),
                  (status = 401, description = "no valid session", body = ErrorBody)))]
    pub fn cluster() {}

    #[utoipa::path(get, path = "/api/v1/config", tag = "operations",
        security(("bearer" = []), ("cookie" = [])),
        responses((status = 200, description = "every key, its value (secrets redacted) and source", body = ConfigRows),
                  (status = 401, description = "no valid session", body = ErrorBody), (status = 403, description = "admins only", body = ErrorBody)))]
    pub fn config() {}

    #[utoipa::path(post, path = "/cluster/v1/challenge", tag = "cluster",
        responses((status = 200, description = "a single-use challenge for the next token request's proof to answer", body = crate::wire::ChallengeAnswer),
                  (status = 400, description = "another protocol", body = ErrorBody), (status = 404, description = "not in a cluster", body = ErrorBody)))]
    pub fn cluster_challenge() {}

    #[utoipa::path(post, path = "/cluster/v1/token", tag = "cluster",
        request_body = crate::wire::TokenRequest,
        responses((status = 200, description = "a server token", body = crate::wire::TokenAnswer),
                  (status = 400, description = "a malformed proof or another protocol", body = ErrorBody), (status = 401, description = "a wrong proof", body = ErrorBody), (status = 403, description = "a proof for another server", body = ErrorBody), (status = 404, description = "not in a cluster", body = ErrorBody)))]
    pub fn cluster_token() {}

    #[utoipa::path(post, path = "/cluster/v1/push", tag = "cluster", security(("server" = [])),
        request_body = PushRequest,
        responses((status = 200, description = "one outcome per edit", body = PushAnswer),
                  (status = 400, description = "malformed", body = ErrorBody), (status = 401, description = "no valid server token", body = ErrorBody), (status = 409, description = "an older term, not the leader, or a delta whose base is not held here (`delta_base_missing`: push whole)", body = ErrorBody), (status = 503, description = "the store failed, or too few members", body = ErrorBody), (status = 507, description = "the data volume is full", body = ErrorBody)))]
    pub fn cluster_push() {}

    #[utoipa::path(get, path = "/cluster/v1/changes", tag = "cluster", security(("server" = [])),
        params(FeedParams),
        responses((status = 200, description = "changes after `since`", body = ChangesAnswer),
                  (status = 400, description = "malformed", body = ErrorBody), (status = 401, description = "no valid server token", body = ErrorBody), (status = 409, description = "an older term, or not the leader", body = ErrorBody), (status = 410, description = "the cursor is from another incarnation: reconcile", body = ErrorBody)))]
    pub fn cluster_changes() {}

    #[utoipa::path(get, path = "/cluster/v1/digest", tag = "cluster", security(("server" = [])),
        responses((status = 200, description = "digests of 256 buckets of keys", body = DigestAnswer),
                  (status = 401, description = "no valid server token", body = ErrorBody), (status = 409, description = "an older term", body = ErrorBody)))]
    pub fn cluster_digest() {}

    #[utoipa::path(post, path = "/cluster/v1/keys", tag = "cluster", security(("server" = [])),
        request_body = KeysRequest,
        responses((status = 200, description = "the keys and revisions of those buckets", body = KeysAnswer),
                  (status = 400, description = "malformed", body = ErrorBody), (status = 401, description = "no valid server token", body = ErrorBody), (status = 409, description = "an older term", body = ErrorBody)))]
    pub fn cluster_keys() {}

    #[utoipa::path(post, path = "/cluster/v1/fetch", tag = "cluster", security(("server" = [])),
        request_body = FetchRequest,
        responses((status = 200, description = "those items", body = FetchAnswer),
                  (status = 400, description = "malformed", body = ErrorBody), (status = 401, description = "no valid server token", body = ErrorBody), (status = 409, description = "an older term", body = ErrorBody)))]
    pub fn cluster_fetch() {}

    #[utoipa::path(post, path = "/cluster/v1/drain", tag = "cluster", security(("server" = [])),
        responses((status = 202, description = "DRAINING (an operator with the shared secret)", body = Lifecycle),
                  (status = 401, description = "no valid server token", body = ErrorBody)))]
    pub fn cluster_drain() {}

    #[utoipa::path(delete, path = "/cluster/v1/drain", tag = "cluster", security(("server" = [])),
        responses((status = 200, description = "RUNNING again", body = Lifecycle),
                  (status = 401, description = "no valid server token", body = ErrorBody), (status = 409, description = "already stopping", body = ErrorBody)))]
    pub fn cluster_cancel_drain() {}

    #[utoipa::path(get, path = "/cluster/v1/cluster", tag = "cluster", security(("server" = [])),
        responses((status = 200, description = "the cluster view", body = ClusterView),
                  (status = 401, description = "no valid server token", body = ErrorBody)))]
    pub fn cluster_view() {}

    #[utoipa::path(post, path = "/cluster/v1/term", tag = "cluster", security(("server" = [])),
        request_body = crate::api::servers::TermClaim,
        responses((status = 200, description = "the term is granted (and adopted)", body = TermGranted),
                  (status = 400, description = "malformed", body = ErrorBody), (status = 401, description = "no valid server token", body = ErrorBody), (status = 403, description = "an operator cannot claim", body = ErrorBody), (status = 409, description = "not newer than this server's term", body = ErrorBody)))]
    pub fn cluster_term() {}

    #[utoipa::path(post, path = "/cluster/v1/heartbeat", tag = "cluster", security(("server" = [])),
        request_body(content = Object, description = "the sender's beat (BULLY mode only)"),
        responses((status = 200, description = "this server's term and beat", body = Object),
                  (status = 400, description = "malformed", body = ErrorBody), (status = 401, description = "no valid server token", body = ErrorBody), (status = 404, description = "not in BULLY mode", body = ErrorBody)))]
    pub fn cluster_heartbeat() {}
}

// ---- The document --------------------------------------------------------------------------

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Folio",
        description = "Keeps the workbooks and data sources of a cluster of servers identical. Users log in (`POST /api/v1/login`) and send the token as `Authorization: Bearer` (or the session cookie); servers of one cluster exchange a proof of the shared secret for a server token (`/cluster/v1`, see docs/protocol.md)."
    ),
    paths(
        paths::health, paths::ready, paths::metrics, paths::root, paths::openapi,
        paths::login, paths::logout, paths::me, paths::change_password,
        paths::list, paths::create, paths::get, paths::put, paths::delete,
        paths::history, paths::revision, paths::restore, paths::changes,
        paths::users_list, paths::users_create, paths::users_get, paths::users_update, paths::users_delete,
        paths::conflicts_list, paths::conflicts_get, paths::conflicts_restore, paths::conflicts_delete,
        paths::export, paths::import, paths::drain, paths::cancel_drain, paths::cluster, paths::config,
        paths::cluster_challenge, paths::cluster_token, paths::cluster_push, paths::cluster_changes, paths::cluster_digest,
        paths::cluster_keys, paths::cluster_fetch, paths::cluster_drain, paths::cluster_cancel_drain,
        paths::cluster_view, paths::cluster_term, paths::cluster_heartbeat,
    ),
    components(schemas(Collection)),
    modifiers(&Security, &ErrorCodes),
    tags(
        (name = "content", description = "workbooks and data sources"),
        (name = "sessions"), (name = "users", description = "admins only"),
        (name = "conflicts", description = "losing edits, kept"),
        (name = "operations"), (name = "cluster", description = "between servers")
    )
)]
pub struct ApiDoc;

/// The security schemes: a user's token or session cookie, a server token.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("the token POST /api/v1/login answers"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                crate::auth::SESSION_COOKIE,
            ))),
        );
        components.add_security_scheme(
            "server",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("a server token from POST /cluster/v1/token"))
                    .build(),
            ),
        );
    }
}

/// The error body's `code`: every code Folio answers.
struct ErrorCodes;

impl Modify for ErrorCodes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let codes: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        let detail = utoipa::openapi::ObjectBuilder::new()
            .property(
                "code",
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::Type::String)
                    .enum_values(Some(codes)),
            )
            .required("code")
            .property(
                "message",
                utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::Type::String),
            )
            .required("message")
            .additional_properties(Some(
                utoipa::openapi::schema::AdditionalProperties::FreeForm(true),
            ))
            .build();
        components
            .schemas
            .insert("ErrorDetail".into(), detail.into());
    }
}
