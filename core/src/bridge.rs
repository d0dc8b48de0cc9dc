//! The one JSON <-> WIT bridge, derived from the component's own types.
//!
//! WIT names are kebab-case, JSON names camelCase. A record whose only field is `json: string`
//! travels as the JSON object itself (meta, payload). Absent `option` fields are `none`; an
//! explicit `null` for an `option<option<T>>` is `some(none)` (this is how "null clears" is said).
//! Path and query-string values are text and are read according to the parameter's type.

use serde_json::{Map, Value as Json};
use wasmtime::component::Val;

pub use crate::calls::ErrorReply;
use crate::runtime::Export;
pub use crate::shape::camel_case;
use crate::shape::{Integer, Shape};

/// A request the caller got wrong; the text names the field and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeError(pub String);

impl std::fmt::Display for BridgeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The refusal of an argument nobody takes, naming the ones that are taken: the same words
/// from every front-end (HTTP bodies, MCP tool calls, `agent-relay call`).
pub fn no_such_argument(taker: &str, unknown: &str, known: &[String]) -> BridgeError {
    BridgeError(format!(
        "{taker} takes no argument {unknown}; its arguments: {}",
        known.join(", ")
    ))
}

/// How long a caller asks to wait (`wait`, `waitSeconds`): seconds as a number or a numeric text,
/// at least 0; a longer wait than `max` is cut to it, so any such number is taken.
///
/// # Errors
/// Not a finite number of seconds, or a negative one; the text names `name`.
pub fn wait_for(
    name: &str,
    value: &Json,
    max: std::time::Duration,
) -> Result<std::time::Duration, BridgeError> {
    let secs = match value {
        Json::Number(number) => number.as_f64(),
        Json::String(text) => text.trim().parse::<f64>().ok(),
        _ => None,
    };
    secs.filter(|secs| secs.is_finite() && *secs >= 0.0)
        .map(|secs| std::time::Duration::from_secs_f64(secs.min(max.as_secs_f64())))
        .ok_or_else(|| {
            let shown = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
            BridgeError(format!(
                "{name} must be a number of seconds, at least 0 (more than {} is cut to it), not {shown}",
                max.as_secs()
            ))
        })
}

fn fail<T>(message: String) -> Result<T, BridgeError> {
    Err(BridgeError(message))
}

fn describe(shape: &Shape) -> String {
    match shape {
        Shape::Bool => "a boolean".into(),
        Shape::Integer(_) => "an integer".into(),
        Shape::Float { .. } => "a number".into(),
        Shape::Char | Shape::String => "a string".into(),
        Shape::List(_) => "an array".into(),
        Shape::Enum(names) => format!("one of {}", names.join(", ")),
        Shape::Option(inner) => describe(inner),
        Shape::Json => "a JSON object".into(),
        _ => "an object".into(),
    }
}

fn integer(
    number: i128,
    integer: Integer,
    at: &(impl std::fmt::Display + ?Sized),
) -> Result<Val, BridgeError> {
    let out_of_range = || BridgeError(format!("{at} is out of range for its type"));
    Ok(match integer {
        Integer::S8 => Val::S8(i8::try_from(number).map_err(|_| out_of_range())?),
        Integer::S16 => Val::S16(i16::try_from(number).map_err(|_| out_of_range())?),
        Integer::S32 => Val::S32(i32::try_from(number).map_err(|_| out_of_range())?),
        Integer::S64 => Val::S64(i64::try_from(number).map_err(|_| out_of_range())?),
        Integer::U8 => Val::U8(u8::try_from(number).map_err(|_| out_of_range())?),
        Integer::U16 => Val::U16(u16::try_from(number).map_err(|_| out_of_range())?),
        Integer::U32 => Val::U32(u32::try_from(number).map_err(|_| out_of_range())?),
        Integer::U64 => Val::U64(u64::try_from(number).map_err(|_| out_of_range())?),
    })
}

/// Converts a JSON value to a WIT value of shape `shape`; `at` names the place for error
/// messages.
///
/// # Errors
/// The value does not have the shape the type asks for.
pub fn from_json(value: &Json, shape: &Shape, at: &str) -> Result<Val, BridgeError> {
    convert(value, shape, &Place::Root(at))
}

/// Where a value sits in the arguments (`input.meta`, `ids[2]`): put into words only for an error
/// message, so a conversion that succeeds builds no path strings.
#[derive(Debug, Clone, Copy)]
enum Place<'a> {
    Root(&'a str),
    Field(&'a Place<'a>, &'a str),
    Item(&'a Place<'a>, usize),
}

impl std::fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Root(at) => f.write_str(at),
            Place::Field(Place::Root(""), key) => f.write_str(key),
            Place::Field(parent, key) => write!(f, "{parent}.{key}"),
            Place::Item(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

fn convert(value: &Json, shape: &Shape, at: &Place<'_>) -> Result<Val, BridgeError> {
    let wrong = || fail(format!("{at} must be {}", describe(shape)));
    match shape {
        Shape::Option(inner) => {
            if value.is_null() {
                return Ok(match inner.as_ref() {
                    Shape::Option(_) => Val::Option(Some(Box::new(convert(value, inner, at)?))),
                    _ => Val::Option(None),
                });
            }
            Ok(Val::Option(Some(Box::new(convert(value, inner, at)?))))
        }
        Shape::Json => match value {
            Json::Object(_) => Ok(Val::Record(vec![(
                "json".to_owned(),
                Val::String(value.to_string()),
            )])),
            _ => wrong(),
        },
        Shape::Bool => value.as_bool().map(Val::Bool).map_or_else(wrong, Ok),
        Shape::Integer(kind) => match (value.as_i64(), value.as_u64()) {
            (Some(n), _) => integer(i128::from(n), *kind, at),
            (None, Some(n)) => integer(i128::from(n), *kind, at),
            _ => wrong(),
        },
        Shape::Float { single: true } => value
            .as_f64()
            .map(|f| Val::Float32(f as f32))
            .map_or_else(wrong, Ok),
        Shape::Float { single: false } => value.as_f64().map(Val::Float64).map_or_else(wrong, Ok),
        Shape::String => value
            .as_str()
            .map(|s| Val::String(s.to_owned()))
            .map_or_else(wrong, Ok),
        Shape::Char => {
            let mut chars = value.as_str().map(str::chars).into_iter().flatten();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Ok(Val::Char(c)),
                _ => fail(format!("{at} must be a single character")),
            }
        }
        Shape::Enum(names) => match value.as_str() {
            Some(name) if names.iter().any(|n| n == name) => Ok(Val::Enum(name.to_owned())),
            _ => wrong(),
        },
        Shape::List(item) => {
            let Json::Array(items) = value else {
                return wrong();
            };
            items
                .iter()
                .enumerate()
                .map(|(i, value)| convert(value, item, &Place::Item(at, i)))
                .collect::<Result<_, _>>()
                .map(Val::List)
        }
        Shape::Record(fields) => {
            let Json::Object(object) = value else {
                return wrong();
            };
            if let Some(unknown) = object
                .keys()
                .find(|key| !fields.iter().any(|f| f.key == **key))
            {
                let keys: Vec<&str> = fields.iter().map(|f| f.key.as_str()).collect();
                return fail(format!(
                    "{} is not a known field; expected: {}",
                    Place::Field(at, unknown),
                    keys.join(", ")
                ));
            }
            fields
                .iter()
                .map(|field| {
                    let place = Place::Field(at, &field.key);
                    let val = match object.get(&field.key) {
                        Some(v) => convert(v, &field.shape, &place)?,
                        None => absent(&field.shape, &place)?,
                    };
                    Ok((field.name.clone(), val))
                })
                .collect::<Result<_, _>>()
                .map(Val::Record)
        }
        Shape::Tuple(shapes) => {
            let Json::Array(items) = value else {
                return wrong();
            };
            if items.len() != shapes.len() {
                return fail(format!("{at} must be an array of {} items", shapes.len()));
            }
            items
                .iter()
                .zip(shapes)
                .enumerate()
                .map(|(i, (item, shape))| convert(item, shape, &Place::Item(at, i)))
                .collect::<Result<_, _>>()
                .map(Val::Tuple)
        }
        Shape::Variant(cases) => {
            let (key, payload) = match value {
                Json::String(name) => (name.as_str(), None),
                Json::Object(object) if object.len() == 1 => {
                    let (name, payload) = object.iter().next().expect("one entry");
                    (name.as_str(), Some(payload))
                }
                _ => return fail(format!("{at} must be a case name or {{\"case\": value}}")),
            };
            let Some(case) = cases.iter().find(|c| c.name == key) else {
                let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
                return fail(format!("{at} must be one of {}", names.join(", ")));
            };
            let payload = match (&case.shape, payload) {
                (Some(shape), Some(p)) => {
                    Some(Box::new(convert(p, shape, &Place::Field(at, key))?))
                }
                (None, None) => None,
                (Some(_), None) => return fail(format!("{at}.{key} needs a value")),
                (None, Some(_)) => return fail(format!("{at}.{key} takes no value")),
            };
            Ok(Val::Variant(case.name.clone(), payload))
        }
        Shape::Flags(names) => {
            let Json::Array(items) = value else {
                return wrong();
            };
            items
                .iter()
                .map(|item| match item.as_str() {
                    Some(name) if names.iter().any(|n| n == name) => Ok(name.to_owned()),
                    _ => fail(format!("{at} entries must be among {}", names.join(", "))),
                })
                .collect::<Result<_, _>>()
                .map(Val::Flags)
        }
        Shape::Result { .. } | Shape::Unsupported => {
            fail(format!("{at} has a type the JSON bridge cannot carry"))
        }
    }
}

/// The value of a field or parameter the caller left out.
fn absent(shape: &Shape, at: &(impl std::fmt::Display + ?Sized)) -> Result<Val, BridgeError> {
    match shape {
        Shape::Option(_) => Ok(Val::Option(None)),
        Shape::Json => Ok(Val::Record(vec![(
            "json".to_owned(),
            Val::String("{}".to_owned()),
        )])),
        _ => fail(format!("{at} is required ({})", describe(shape))),
    }
}

/// Reads text from a path segment or query string as a value of shape `shape`.
///
/// # Errors
/// The text cannot be read as that type.
pub fn from_text(text: &str, shape: &Shape, at: &str) -> Result<Val, BridgeError> {
    let value = match shape {
        Shape::Option(inner) => {
            return Ok(Val::Option(Some(Box::new(from_text(text, inner, at)?))));
        }
        Shape::Bool => match text {
            "true" | "1" => Json::Bool(true),
            "false" | "0" => Json::Bool(false),
            _ => return fail(format!("{at} must be true or false")),
        },
        Shape::Integer(kind) => {
            let number: i128 = text
                .parse()
                .map_err(|_| BridgeError(format!("{at} must be an integer")))?;
            return integer(number, *kind, at);
        }
        Shape::Float { .. } => {
            let number: f64 = text
                .parse()
                .map_err(|_| BridgeError(format!("{at} must be a number")))?;
            serde_json::Number::from_f64(number).map_or(Json::Null, Json::Number)
        }
        _ => Json::String(text.to_owned()),
    };
    from_json(&value, shape, at)
}

/// A record built from query-string pairs, each read by its field's type.
///
/// # Errors
/// An unknown key, a repeated key, or a value of the wrong type.
pub fn record_from_query(pairs: &[(String, String)], shape: &Shape) -> Result<Val, BridgeError> {
    let Shape::Record(fields) = shape else {
        return fail("the query parameter of this operation is not a record".to_owned());
    };
    for (i, (key, _)) in pairs.iter().enumerate() {
        if !fields.iter().any(|f| f.key == *key) {
            let keys: Vec<&str> = fields.iter().map(|f| f.key.as_str()).collect();
            return fail(format!(
                "query parameter {key} is not known; expected: {}",
                keys.join(", ")
            ));
        }
        if pairs[..i].iter().any(|(earlier, _)| earlier == key) {
            return fail(format!("query parameter {key} is given more than once"));
        }
    }
    fields
        .iter()
        .map(|field| {
            let val = match pairs.iter().find(|(k, _)| *k == field.key) {
                Some((_, text)) => from_text(text, &field.shape, &field.key)?,
                None => absent(&field.shape, &field.key)?,
            };
            Ok((field.name.clone(), val))
        })
        .collect::<Result<_, _>>()
        .map(Val::Record)
}

/// Converts a WIT value to JSON. `none` fields of records are left out.
pub fn to_json(value: &Val) -> Json {
    match value {
        Val::Bool(b) => Json::Bool(*b),
        Val::S8(n) => Json::from(*n),
        Val::S16(n) => Json::from(*n),
        Val::S32(n) => Json::from(*n),
        Val::S64(n) => Json::from(*n),
        Val::U8(n) => Json::from(*n),
        Val::U16(n) => Json::from(*n),
        Val::U32(n) => Json::from(*n),
        Val::U64(n) => Json::from(*n),
        Val::Float32(f) => Json::from(f64::from(*f)),
        Val::Float64(f) => Json::from(*f),
        Val::Char(c) => Json::String(c.to_string()),
        Val::String(s) | Val::Enum(s) => Json::String(s.clone()),
        Val::List(items) | Val::Tuple(items) => Json::Array(items.iter().map(to_json).collect()),
        Val::Record(fields) => match fields.as_slice() {
            [(name, Val::String(text))] if name == "json" => {
                serde_json::from_str(text).unwrap_or_else(|_| Json::Object(Map::new()))
            }
            _ => Json::Object(
                fields
                    .iter()
                    .filter(|(_, v)| !matches!(v, Val::Option(None)))
                    .map(|(name, v)| (camel_case(name), to_json(v)))
                    .collect(),
            ),
        },
        Val::Option(inner) => inner.as_deref().map_or(Json::Null, to_json),
        Val::Variant(case, None) => Json::String(case.clone()),
        Val::Variant(case, Some(payload)) => {
            Json::Object(std::iter::once((camel_case(case), to_json(payload))).collect())
        }
        Val::Result(Ok(v) | Err(v)) => v.as_deref().map_or(Json::Null, to_json),
        Val::Flags(names) => Json::Array(names.iter().cloned().map(Json::String).collect()),
        _ => Json::Null,
    }
}

/// Where the value of each parameter comes from, by the parameter's name.
#[derive(Debug, Default)]
pub struct Inputs<'a> {
    /// The `caller` parameter, established by the host.
    pub caller: Option<Val>,
    /// Path variables, by camelCase name: text, read by the parameter's type.
    pub path: Vec<(String, String)>,
    /// Query-string pairs, for a parameter named `query`.
    pub query: Vec<(String, String)>,
    /// The JSON body: all of it for a parameter named `input`, else its field of the parameter's
    /// name.
    pub body: Option<&'a Json>,
    /// Other parameters by camelCase name (the CLI passes every parameter this way).
    pub named: Option<&'a Map<String, Json>>,
}

/// Builds an export's argument list from the request's parts.
///
/// # Errors
/// A parameter is missing or has the wrong shape.
pub fn arguments(export: &Export, inputs: &Inputs<'_>) -> Result<Vec<Val>, BridgeError> {
    if let Some(named) = inputs.named {
        let known: Vec<String> = export
            .params
            .iter()
            .filter(|(n, _)| n != "caller")
            .map(|(n, _)| camel_case(n))
            .collect();
        if let Some(unknown) = named.keys().find(|key| !known.contains(key)) {
            return Err(no_such_argument(&export.name, unknown, &known));
        }
    }
    export
        .params
        .iter()
        .map(|(name, ty)| {
            let key = camel_case(name);
            if name == "caller" {
                return inputs
                    .caller
                    .clone()
                    .ok_or_else(|| BridgeError("no caller".to_owned()));
            }
            if let Some((_, text)) = inputs.path.iter().find(|(k, _)| *k == key) {
                return from_text(text, ty, &key);
            }
            if let Some(value) = inputs.named.and_then(|named| named.get(&key)) {
                return from_json(value, ty, &key);
            }
            // An operation without an `input` record takes its parameters from the body's fields.
            if let Some(value) = inputs
                .body
                .and_then(|body| body.get(&key))
                .filter(|_| name != "input")
            {
                return from_json(value, ty, &key);
            }
            match name.as_str() {
                "query" => record_from_query(&inputs.query, ty),
                "input" => match inputs.body {
                    Some(body) => from_json(body, ty, ""),
                    None => from_json(&Json::Object(Map::new()), ty, "")
                        .map_err(|e| BridgeError(format!("a JSON body is required: {e}"))),
                },
                _ => absent(ty, &key),
            }
        })
        .collect()
}

/// The HTTP status of each `relay-error` case.
pub fn status_of(case: &str) -> u16 {
    match case {
        "invalid" => 400,
        "unauthorized" => 401,
        "forbidden" => 403,
        "not-found" => 404,
        "conflict" | "stale-session" | "cancelled" => 409,
        "too-large" => 413,
        "unavailable" => 503,
        "storage-full" => 507,
        _ => 500,
    }
}

/// Whether the export answers `result<option<T>, _>`: its `none` (JSON `null`) means "nothing",
/// which HTTP says as 204 and a held request waits past.
pub fn answers_option(export: &Export) -> bool {
    matches!(&export.result, Some(Shape::Result { ok: Some(ok), .. })
        if matches!(ok.as_ref(), Shape::Option(_)))
}

/// Splits an export's `result<T, relay-error>` into the JSON answer or the error reply.
///
/// # Errors
/// The export returned its error case.
pub fn outcome(value: &Val) -> Result<Json, ErrorReply> {
    match value {
        Val::Result(Ok(ok)) => Ok(ok.as_deref().map_or(Json::Null, to_json)),
        Val::Result(Err(Some(error))) => Err(match error.as_ref() {
            Val::Variant(case, payload) => {
                let message = match payload.as_deref() {
                    Some(Val::String(text)) => text.clone(),
                    Some(other) => to_json(other).to_string(),
                    None => case.clone(),
                };
                ErrorReply::new(status_of(case), &case.replace('-', "_"), message)
            }
            other => ErrorReply::new(500, "internal", to_json(other).to_string()),
        }),
        Val::Result(Err(None)) => Err(ErrorReply::new(
            500,
            "internal",
            "the operation failed without a reason",
        )),
        other => Ok(to_json(other)),
    }
}
