//! The one error type every handler returns, and the table that maps each failure to an HTTP
//! status and a stable code. Every error reaches the client as
//! `{"error": {"code": "...", "message": "..."}}`; internal details are logged, never sent.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};

use crate::store::StoreError;

/// An error answer: status, stable machine-readable code, human message, optional extras.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
    /// Extra fields merged into the error object (e.g. the current revision on 412).
    pub details: Option<Box<serde_json::Value>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            details: None,
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
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
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut err = serde_json::json!({ "code": self.code, "message": self.message });
        if let (Some(serde_json::Value::Object(extra)), Some(obj)) =
            (self.details.as_deref(), err.as_object_mut())
        {
            for (k, v) in extra {
                obj.insert(k.clone(), v.clone());
            }
        }
        let mut resp = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after {
            resp.insert_header((header::RETRY_AFTER, HeaderValue::from(secs)));
        }
        resp.json(serde_json::json!({ "error": err }))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found("no such item"),
            StoreError::PreconditionFailed { current } => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "revision_mismatch",
                match &current {
                    Some(rev) => format!("the item has changed: its current revision is {rev}"),
                    None => "the item does not exist".to_string(),
                },
            )
            .with_details(serde_json::json!({ "current_rev": current })),
            StoreError::AlreadyExists => ApiError::new(
                StatusCode::CONFLICT,
                "already_exists",
                "an item with this id exists",
            ),
            StoreError::ImportConflict(msg) => {
                ApiError::new(StatusCode::CONFLICT, "import_conflict", msg)
            }
            StoreError::Sled(_)
            | StoreError::Corrupt(_)
            | StoreError::Log(_)
            | StoreError::Task(_) => {
                tracing::error!(error = %e, "store failure");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the store could not complete the request",
                )
                .with_retry_after(1)
            }
        }
    }
}
