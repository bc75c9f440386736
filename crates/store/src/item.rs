//! The stored shape of an item and its revisions, and the revision rule `N-HASH`.
//!
//! N counts edits along the item's line of history; HASH is a SHA-256 digest (first 16 bytes, hex)
//! of the parent revision, the name, the deleted flag and the canonical JSON content, so two servers
//! that make the same edit on the same parent derive the same revision, and any difference in body
//! or ancestry gives a different one.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// How many ancestor revisions an item remembers for fast-forward checks (bodies are kept
/// separately, bounded by `content.history.keep`).
pub const ANCESTORS_KEEP: usize = 100;

/// The synchronised collections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Collection {
    Workbooks,
    Datasources,
    Users,
    Sessions,
    Conflicts,
}

impl Collection {
    pub const ALL: [Collection; 5] = [
        Collection::Workbooks,
        Collection::Datasources,
        Collection::Users,
        Collection::Sessions,
        Collection::Conflicts,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Collection::Workbooks => "workbooks",
            Collection::Datasources => "datasources",
            Collection::Users => "users",
            Collection::Sessions => "sessions",
            Collection::Conflicts => "conflicts",
        }
    }

    pub fn parse(s: &str) -> Option<Collection> {
        Collection::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Whether an export carries this collection (sessions are short-lived and are not backed up).
    pub fn exported(self) -> bool {
        self != Collection::Sessions
    }
}

/// An item's JSON content, kept as JSON text: stored, pushed, followed and answered without being
/// decoded into a tree and encoded again. It is decoded only where the server reads inside it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Content(Box<RawValue>);

impl Content {
    /// The content of a JSON value.
    pub fn of(v: &Value) -> Content {
        // Encoding a `Value` cannot fail: its keys are strings and its numbers finite.
        Content(serde_json::value::to_raw_value(v).unwrap_or_else(|_| Content::null().0))
    }

    /// JSON `null` (the content of a tombstone).
    pub fn null() -> Content {
        Content(RawValue::NULL.to_owned())
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// Decodes the content as `T`.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(self.0.get())
    }

    /// The content as a JSON value (`null` if it could not be decoded, which stored content
    /// always can).
    pub fn value(&self) -> Value {
        self.parse().unwrap_or(Value::Null)
    }
}

impl PartialEq for Content {
    fn eq(&self, other: &Content) -> bool {
        self.get() == other.get() || self.value() == other.value()
    }
}

impl std::fmt::Display for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.get())
    }
}

/// One item as stored: its current revision plus what sync needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub id: String,
    pub name: String,
    pub content: Content,
    pub rev: String,
    pub updated_at: String,
    pub updated_by: String,
    pub origin: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// Earlier revisions, newest first, at most [`ANCESTORS_KEEP`].
    #[serde(default)]
    pub ancestors: Vec<String>,
    /// This server's change-log position of the revision (local; reassigned on every write).
    #[serde(default)]
    pub seq: u64,
    /// The earlier revision this one restored, when it was made by a restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<String>,
}

impl Item {
    /// The edit count part of the revision.
    pub fn generation(&self) -> u64 {
        rev_generation(&self.rev)
    }

    /// Whether `rev` is this item's revision or one of its remembered ancestors.
    pub fn descends_from(&self, rev: &str) -> bool {
        self.rev == rev || self.ancestors.iter().any(|a| a == rev)
    }

    /// The public JSON shape: the item with its metadata, without sync internals (`deleted`
    /// appears on tombstones only).
    pub fn public(&self) -> Public<'_> {
        Public {
            id: &self.id,
            name: &self.name,
            content: &self.content,
            rev: &self.rev,
            updated_at: &self.updated_at,
            updated_by: &self.updated_by,
            origin: &self.origin,
            deleted: self.deleted,
            restored_from: self.restored_from.as_deref(),
            state: None,
        }
    }

    /// The summary of this revision kept in an item's history.
    pub fn revision(&self) -> Revision {
        Revision {
            rev: self.rev.clone(),
            name: self.name.clone(),
            content: self.content.clone(),
            updated_at: self.updated_at.clone(),
            updated_by: self.updated_by.clone(),
            origin: self.origin.clone(),
            deleted: self.deleted,
            restored_from: self.restored_from.clone(),
            seq: self.seq,
        }
    }
}

/// An item as users see it (see [`Item::public`]); its content is written out as it is stored.
#[derive(Debug, Serialize)]
pub struct Public<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub content: &'a Content,
    pub rev: &'a str,
    pub updated_at: &'a str,
    pub updated_by: &'a str,
    pub origin: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<&'a str>,
    /// What became of a save (`committed`, `pending`), in answers to saves; in reads, `pending`
    /// while the item's latest edit on this server waits to reach the leader.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
}

/// A past revision of an item, as kept in its bounded history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revision {
    pub rev: String,
    pub name: String,
    pub content: Content,
    pub updated_at: String,
    pub updated_by: String,
    pub origin: String,
    #[serde(default)]
    pub deleted: bool,
    /// The earlier revision this one restored, when it was made by a restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<String>,
    /// This server's change-log position of the revision (0: none, as in stores written by
    /// earlier versions, which kept only the current revision in the change log).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seq: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Revision {
    /// The revision as an item `id` whose earlier revisions are `ancestors` (newest first).
    pub fn into_item(self, id: &str, ancestors: Vec<String>) -> Item {
        Item {
            id: id.to_string(),
            name: self.name,
            content: self.content,
            rev: self.rev,
            updated_at: self.updated_at,
            updated_by: self.updated_by,
            origin: self.origin,
            deleted: self.deleted,
            ancestors,
            seq: self.seq,
            restored_from: self.restored_from,
        }
    }

    /// Metadata only, for history listings.
    pub fn summary(&self) -> Value {
        serde_json::json!({
            "rev": self.rev,
            "name": self.name,
            "updated_at": self.updated_at,
            "updated_by": self.updated_by,
            "origin": self.origin,
            "deleted": self.deleted,
            "restored_from": self.restored_from,
        })
    }
}

/// The N of `N-HASH`; 0 for a malformed revision.
pub fn rev_generation(rev: &str) -> u64 {
    rev.split_once('-')
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or(0)
}

/// Whether a string has the shape of a revision `N-HASH` (N ≥ 1, HASH 32 lowercase hex digits).
pub fn is_valid_rev(rev: &str) -> bool {
    match rev.split_once('-') {
        Some((n, h)) => {
            n.parse::<u64>().is_ok_and(|n| n >= 1)
                && h.len() == 32
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        }
        None => false,
    }
}

/// The revision an edit gets on top of `parent`.
pub fn next_rev(parent: Option<&str>, name: &str, deleted: bool, content: &Value) -> String {
    let n = parent.map(rev_generation).unwrap_or(0) + 1;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(parent.unwrap_or("").as_bytes());
    ctx.update(b"\n");
    ctx.update(name.as_bytes());
    ctx.update(if deleted { b"\n1\n" } else { b"\n0\n" });
    ctx.update(canonical_json(content).as_bytes());
    let digest = ctx.finish();
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{n}-{hex}")
}

/// JSON text with object keys sorted at every level, whatever order the value was built in, so
/// equal values always digest alike.
pub fn canonical_json(v: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write(&map[k.as_str()], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// The current time as RFC 3339 with milliseconds, UTC.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn revisions_count_and_digest() {
        let a = next_rev(None, "n", false, &json!({"b": 1, "a": 2}));
        assert!(a.starts_with("1-") && is_valid_rev(&a));
        let b = next_rev(Some(&a), "n", false, &json!({"a": 2, "b": 1}));
        assert_eq!(rev_generation(&b), 2);
        assert_ne!(a, b, "same body on another parent differs");
        assert_eq!(b, next_rev(Some(&a), "n", false, &json!({"a": 2, "b": 1})));
        assert_ne!(b, next_rev(Some(&a), "n", true, &json!({"a": 2, "b": 1})));
        assert!(!is_valid_rev("0-abc") && !is_valid_rev("x") && !is_valid_rev("1-ABC"));
        let a: Value =
            serde_json::from_str(r#"{"b":{"y":1,"x":[{"q":1,"p":2}]},"a":"\u00e9"}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"a":"é","b":{"x":[{"p":2,"q":1}],"y":1}}"#).unwrap();
        assert_eq!(
            canonical_json(&a),
            canonical_json(&b),
            "key order never matters"
        );
        assert_eq!(
            canonical_json(&b),
            r#"{"a":"é","b":{"x":[{"p":2,"q":1}],"y":1}}"#
        );
    }
}
