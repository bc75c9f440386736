//! Request bodies: `JsonBody<T>` checks the content type (415), reads at most
//! `limits.body.max_bytes` (413), refuses nesting deeper than `limits.json.max_depth`, then parses
//! (400) — each failure as the JSON error body, before any handler runs.

use std::future::Future;
use std::pin::Pin;

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::config::Config;
use crate::error::{ApiError, Code};

/// A JSON body that passed the size, depth and syntax checks.
pub struct JsonBody<T>(pub T);

/// The raw bytes of a body of a given content type, within the size limit (used by import).
pub struct LimitedBytes(pub web::Bytes);

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        Code::BodyTooLarge,
        format!("the request body exceeds {limit} bytes"),
    )
}

async fn read_limited(
    req: &HttpRequest,
    payload: &mut Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    if let Some(len) = req.headers().get(actix_web::http::header::CONTENT_LENGTH)
        && len
            .to_str()
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .is_some_and(|n| n > limit)
    {
        return Err(too_large(limit));
    }
    let mut buf = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| {
            ApiError::new(Code::BodyUnreadable, "the request body could not be read")
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

fn content_type_is(req: &HttpRequest, wanted: &[&str]) -> bool {
    req.headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| wanted.iter().any(|w| m.trim().eq_ignore_ascii_case(w)))
}

/// The deepest nesting of objects and arrays in a JSON text (strings are skipped correctly).
pub fn json_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max, mut in_str, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_str {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Parses one JSON text with the depth limit; shared by bodies and import lines.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8], max_depth: usize) -> Result<T, ApiError> {
    if json_depth(bytes) > max_depth {
        return Err(ApiError::new(
            Code::TooDeep,
            format!("JSON nesting deeper than {max_depth} levels"),
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let code = if e.is_data() {
            Code::InvalidBody
        } else {
            Code::MalformedJson
        };
        ApiError::new(code, format!("the body is not valid: {e}"))
    })
}

/// A JSON body of a server-to-server call: batches of items, so the import size limit applies
/// and the depth limit leaves room for the envelope around each item's content.
pub struct ServerJson<T>(pub T);

/// Depth of the envelope around item content in server-to-server bodies.
const PEER_ENVELOPE_DEPTH: usize = 4;

fn extract_json<T: DeserializeOwned + 'static>(
    req: &HttpRequest,
    payload: &mut Payload,
    peer: bool,
) -> Pin<Box<dyn Future<Output = Result<T, ApiError>>>> {
    let req = req.clone();
    let mut payload = payload.take();
    Box::pin(async move {
        let config = req
            .app_data::<web::Data<Config>>()
            .ok_or_else(|| ApiError::internal("configuration missing"))?;
        if !content_type_is(&req, &["application/json"]) {
            return Err(ApiError::new(
                Code::UnsupportedMediaType,
                "send the body as application/json",
            ));
        }
        let content = &config.content;
        let (limit, depth) = if peer {
            (
                content.import_max_bytes,
                content.max_json_depth + PEER_ENVELOPE_DEPTH,
            )
        } else {
            (content.max_body_bytes, content.max_json_depth)
        };
        let bytes = read_limited(&req, &mut payload, limit).await?;
        // Every body Folio takes is an object (serde would read a struct from an array too).
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::new(Code::InvalidBody, "send a JSON object"));
        }
        parse_json(&bytes, depth)
    })
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let fut = extract_json::<T>(req, payload, false);
        Box::pin(async move { fut.await.map(JsonBody) })
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for ServerJson<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let fut = extract_json::<T>(req, payload, true);
        Box::pin(async move { fut.await.map(ServerJson) })
    }
}

impl FromRequest for LimitedBytes {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            let config = req
                .app_data::<web::Data<Config>>()
                .ok_or_else(|| ApiError::internal("configuration missing"))?;
            if !content_type_is(
                &req,
                &[
                    "application/x-ndjson",
                    "application/jsonl",
                    "application/json",
                ],
            ) {
                return Err(ApiError::new(
                    Code::UnsupportedMediaType,
                    "send the export as application/x-ndjson",
                ));
            }
            read_limited(&req, &mut payload, config.content.import_max_bytes)
                .await
                .map(LimitedBytes)
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert_eq!(super::json_depth(br#"{"a":[1,{"b":"[[[{{"}]}"#), 3);
        assert_eq!(super::json_depth(br#""\"[""#), 0);
        assert_eq!(super::json_depth(b"1"), 0);
    }
}
