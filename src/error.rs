//! The one error type every handler returns, and the one table of error codes: each [`Code`] has
//! its HTTP status. Every error reaches the client as
//! `{"error": {"code": "...", "message": "..."}}`; internal details are logged, never sent. The
//! peer client reads other servers' codes back as [`Code`] values.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};

use crate::store::StoreError;

/// Defines [`Code`] from its table: variant, the code as sent, the HTTP status.
macro_rules! codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal => $status:ident,)*) => {
        /// Every error code Folio answers (the `code` of the JSON error body).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Code {
            /// Every code, in table order.
            pub const ALL: &[Code] = &[$(Code::$variant,)*];

            /// The code as it is sent.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $name,)*
                }
            }

            /// The HTTP status every answer with this code has.
            pub fn status(self) -> StatusCode {
                match self {
                    $(Code::$variant => StatusCode::$status,)*
                }
            }

            /// The code sent as `s`, if Folio knows it.
            pub fn parse(s: &str) -> Option<Code> {
                match s {
                    $($name => Some(Code::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

codes! {
    // The request itself (400).
    /// The body is JSON of the wrong shape.
    InvalidBody = "invalid_body" => BAD_REQUEST,
    /// The body is not JSON.
    MalformedJson = "malformed_json" => BAD_REQUEST,
    /// The body could not be read off the connection.
    BodyUnreadable = "body_unreadable" => BAD_REQUEST,
    /// JSON nested deeper than `content.max_json_depth`.
    TooDeep = "too_deep" => BAD_REQUEST,
    MissingField = "missing_field" => BAD_REQUEST,
    UnknownField = "unknown_field" => BAD_REQUEST,
    /// A field the server sets (revision, timestamps) was sent.
    ReadOnlyField = "read_only_field" => BAD_REQUEST,
    InvalidId = "invalid_id" => BAD_REQUEST,
    InvalidName = "invalid_name" => BAD_REQUEST,
    InvalidRev = "invalid_rev" => BAD_REQUEST,
    InvalidIfMatch = "invalid_if_match" => BAD_REQUEST,
    InvalidLimit = "invalid_limit" => BAD_REQUEST,
    InvalidPath = "invalid_path" => BAD_REQUEST,
    InvalidQuery = "invalid_query" => BAD_REQUEST,
    /// A restore named a revision that is a deletion.
    DeletedRevision = "deleted_revision" => BAD_REQUEST,
    InvalidUser = "invalid_user" => BAD_REQUEST,
    InvalidRole = "invalid_role" => BAD_REQUEST,
    WeakPassword = "weak_password" => BAD_REQUEST,
    /// An administrator tried to delete their own account.
    OwnAccount = "own_account" => CONFLICT,
    /// An administrator tried to remove their own admin role.
    OwnRole = "own_role" => CONFLICT,
    EmptyImport = "empty_import" => BAD_REQUEST,
    UnsupportedExport = "unsupported_export" => BAD_REQUEST,
    InvalidCollection = "invalid_collection" => BAD_REQUEST,
    DuplicateItem = "duplicate_item" => BAD_REQUEST,
    // Server-to-server calls (400).
    /// The caller speaks another cluster protocol version.
    ProtocolMismatch = "protocol_mismatch" => BAD_REQUEST,
    /// A cluster call without the `folio-term` header.
    MissingTerm = "missing_term" => BAD_REQUEST,
    InvalidBucket = "invalid_bucket" => BAD_REQUEST,
    TooManyKeys = "too_many_keys" => BAD_REQUEST,
    /// A heartbeat that speaks for another server than its sender.
    InvalidBeat = "invalid_beat" => BAD_REQUEST,
    // Who is asking (401, 403, 429).
    /// No valid token (user or server).
    Unauthorized = "unauthorized" => UNAUTHORIZED,
    InvalidCredentials = "invalid_credentials" => UNAUTHORIZED,
    /// A server-token proof bound to another server than the one it was sent to.
    ProofForAnotherServer = "proof_for_another_server" => UNAUTHORIZED,
    /// The caller's role is too low.
    Forbidden = "forbidden" => FORBIDDEN,
    /// A password change named a current password that is not the user's.
    WrongPassword = "wrong_password" => FORBIDDEN,
    /// Too many failed logins.
    TooManyAttempts = "too_many_attempts" => TOO_MANY_REQUESTS,
    // What is there (404, 409, 410, 412).
    NotFound = "not_found" => NOT_FOUND,
    /// A cluster route on a stand-alone server.
    NotClustered = "not_clustered" => NOT_FOUND,
    AlreadyExists = "already_exists" => CONFLICT,
    /// The leader held a diverging edit: it won, and this edit is kept as a conflict record.
    Conflict = "conflict" => CONFLICT,
    ImportConflict = "import_conflict" => CONFLICT,
    /// A push or feed call reached a server that does not lead.
    NotLeader = "not_leader" => CONFLICT,
    /// The call carries an older term than the server's (a replaced leader).
    StaleTerm = "stale_term" => CONFLICT,
    /// A new term a server claims is not newer than the answering server's (details: `term`).
    TermTaken = "term_taken" => CONFLICT,
    /// A drain was to be cancelled on a server that is not draining, or is stopping.
    NotDraining = "not_draining" => CONFLICT,
    /// A pushed delta's base revision is not held here, or the delta does not give the pushed
    /// revision: push the edits whole.
    DeltaBaseMissing = "delta_base_missing" => CONFLICT,
    /// Pushed revisions start above a revision the leader lacks (details: `items`): push each
    /// item's whole kept line.
    LineGap = "line_gap" => CONFLICT,
    /// The feed cursor names another store or is ahead of it: reconcile.
    CursorReset = "cursor_reset" => GONE,
    /// `If-Match` names another revision than the current one.
    RevisionMismatch = "revision_mismatch" => PRECONDITION_FAILED,
    // The body's form (413, 415).
    BodyTooLarge = "body_too_large" => PAYLOAD_TOO_LARGE,
    UnsupportedMediaType = "unsupported_media_type" => UNSUPPORTED_MEDIA_TYPE,
    /// The endpoint exists but not with this method (the `Allow` header lists those it has).
    MethodNotAllowed = "method_not_allowed" => METHOD_NOT_ALLOWED,
    // The server (500, 503).
    Internal = "internal" => INTERNAL_SERVER_ERROR,
    /// The server is starting, draining or stopping.
    NotReady = "not_ready" => SERVICE_UNAVAILABLE,
    /// The leader sees fewer members than `cluster.bully.min_members`.
    TooFewMembers = "too_few_members" => SERVICE_UNAVAILABLE,
    StoreUnavailable = "store_unavailable" => SERVICE_UNAVAILABLE,
    /// The data volume has less free space than `store.min_free.mb` (507).
    InsufficientStorage = "insufficient_storage" => INSUFFICIENT_STORAGE,
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answer: a code from the table (which gives its status), a human message, optional
/// extras.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
    /// Extra fields merged into the error object (e.g. the current revision on 412).
    pub details: Option<Box<serde_json::Value>>,
    /// The methods an endpoint answers, for 405.
    pub allow: Option<&'static str>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            retry_after: None,
            details: None,
            allow: None,
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(Code::Unauthorized, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(Code::Forbidden, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }
    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }
    pub fn with_allow(mut self, methods: &'static str) -> Self {
        self.allow = Some(methods);
        self
    }
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(Box::new(details));
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status().as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut err = serde_json::json!({ "code": self.code.as_str(), "message": self.message });
        if let (Some(serde_json::Value::Object(extra)), Some(obj)) =
            (self.details.as_deref(), err.as_object_mut())
        {
            for (k, v) in extra {
                obj.insert(k.clone(), v.clone());
            }
        }
        let mut resp = HttpResponse::build(self.status());
        if let Some(secs) = self.retry_after {
            resp.insert_header((header::RETRY_AFTER, HeaderValue::from(secs)));
        }
        if let Some(methods) = self.allow {
            resp.insert_header((header::ALLOW, methods));
        }
        resp.json(serde_json::json!({ "error": err }))
    }
}

/// Bytes as MiB with one decimal, for messages.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found("no such item"),
            StoreError::PreconditionFailed { current } => ApiError::new(
                Code::RevisionMismatch,
                match &current {
                    Some(rev) => format!("the item has changed: its current revision is {rev}"),
                    None => "the item does not exist".to_string(),
                },
            )
            .with_details(serde_json::json!({ "current_rev": current })),
            StoreError::AlreadyExists => {
                ApiError::new(Code::AlreadyExists, "an item with this id exists")
            }
            StoreError::ImportConflict(msg) => ApiError::new(Code::ImportConflict, msg),
            StoreError::Full { dir, free, need } => ApiError::new(
                Code::InsufficientStorage,
                format!(
                    "the data volume is full: {dir} has {} free, less than the {} that store.min_free.mb keeps free; saves are refused until space is freed there (reads keep working)",
                    mib(free),
                    mib(need)
                ),
            )
            .with_details(serde_json::json!({
                "data_dir": dir,
                "free_bytes": free,
                "min_free_bytes": need,
            })),
            StoreError::NotLeading => ApiError::new(
                Code::NotLeader,
                "this server no longer leads; push to the leader",
            ),
            StoreError::LineGap(items) => ApiError::new(
                Code::LineGap,
                "pushed revisions skip revisions this server lacks: push these items' whole lines",
            )
            .with_details(serde_json::json!({ "items": items })),
            StoreError::NoSpace(_) => {
                tracing::error!(error = %e, "store failure");
                ApiError::new(
                    Code::InsufficientStorage,
                    "the data volume filled up (another program took the space store.min_free.mb keeps free): free space there, then restart this server",
                )
            }
            StoreError::Sled(_)
            | StoreError::Locked
            | StoreError::Corrupt(_)
            | StoreError::Log(_)
            | StoreError::Task(_) => {
                tracing::error!(error = %e, "store failure");
                ApiError::new(
                    Code::StoreUnavailable,
                    "the store could not complete the request",
                )
                .with_retry_after(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_as_itself_and_is_an_error_status() {
        let mut seen = std::collections::HashSet::new();
        for &code in Code::ALL {
            assert!(seen.insert(code.as_str()), "{code} appears twice");
            assert_eq!(Code::parse(code.as_str()), Some(code));
            let status = code.status();
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{code}"
            );
        }
        assert_eq!(Code::parse("no_such_code"), None);
    }
}
