//! Checks every caller-supplied value goes through: ids, lengths, list sizes, JSON objects.
//!
//! Each refusal names the field and the limit so the caller knows what to fix.

use crate::bindings::agent_relay::relay::types::{JsonText, RelayError};
use crate::error::{invalid, too_large};

// Lengths of text are counted in characters, as JSON Schema's `maxLength` counts them, so the
// OpenAPI document can state them exactly.
/// Longest agent id, label, tag or capability, in characters.
pub const MAX_ID: usize = 200;
/// Longest name, subject or other short text, in characters.
pub const MAX_SHORT_TEXT: usize = 1_000;
/// Longest message body, in characters.
pub const MAX_BODY: usize = 256 * 1024;
/// Longest serialised meta or payload object.
pub const MAX_JSON: usize = 64 * 1024;
/// Most tags or capabilities on one agent.
pub const MAX_LIST: usize = 64;

/// What [`id`] accepts, as a regular expression for schemas (JSON Schema's `pattern`): not
/// empty, no surrounding white space (Unicode's, as Rust's `trim` sees it), no control
/// characters. Change it with `id`.
pub const ID_PATTERN: &str = concat!(
    "^[^\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]",
    "(?:[^\\x00-\\x1f\\x7f-\\x9f]*",
    "[^\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000])?$"
);

/// A required identifier: non-empty, no surrounding whitespace, no control characters.
pub fn id<'a>(field: &str, value: &'a str) -> Result<&'a str, RelayError> {
    if value.trim().is_empty() {
        return Err(invalid(format!("{field} must not be empty")));
    }
    if value.trim() != value || value.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{field} must not have surrounding spaces or control characters"
        )));
    }
    if longer_than(value, MAX_ID) {
        return Err(too_large(format!(
            "{field} is longer than {MAX_ID} characters"
        )));
    }
    Ok(value)
}

/// Free text with an upper length.
pub fn text<'a>(field: &str, value: &'a str, max: usize) -> Result<&'a str, RelayError> {
    if longer_than(value, max) {
        return Err(too_large(format!(
            "{field} is longer than {max} characters"
        )));
    }
    Ok(value)
}

/// Whether `value` has more than `max` characters (a text of at most `max` bytes never has).
fn longer_than(value: &str, max: usize) -> bool {
    value.len() > max && value.chars().count() > max
}

/// A list of identifiers (tags, capabilities): each one checked, duplicates removed, order kept.
pub fn id_list(field: &str, items: &[String]) -> Result<Vec<String>, RelayError> {
    if items.len() > MAX_LIST {
        return Err(too_large(format!(
            "{field} has more than {MAX_LIST} entries"
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        id(&format!("each of {field}"), item)?;
        if !out.contains(item) {
            out.push(item.clone());
        }
    }
    Ok(out)
}

/// A free JSON object (meta, payload); absent means `{}`.
pub fn json_object(
    field: &str,
    value: Option<&JsonText>,
) -> Result<serde_json::Map<String, serde_json::Value>, RelayError> {
    let Some(value) = value else {
        return Ok(serde_json::Map::new());
    };
    if value.json.len() > MAX_JSON {
        return Err(too_large(format!(
            "{field} is larger than {MAX_JSON} bytes"
        )));
    }
    match serde_json::from_str(&value.json) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(invalid(format!("{field} must be a JSON object"))),
        Err(e) => Err(invalid(format!("{field} is not valid JSON: {e}"))),
    }
}

/// Stored JSON text back into the record form; anything unreadable becomes `{}`.
pub fn json_text(stored: Option<String>) -> JsonText {
    let json = stored
        .filter(|text| matches!(serde_json::from_str(text), Ok(serde_json::Value::Object(_))))
        .unwrap_or_else(|| "{}".to_owned());
    JsonText { json }
}

/// A JSON object as stored text.
pub fn to_json_text(map: &serde_json::Map<String, serde_json::Value>) -> String {
    serde_json::Value::Object(map.clone()).to_string()
}
