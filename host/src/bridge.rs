//! The one JSON <-> WIT bridge, derived from the component's own types.
//!
//! WIT names are kebab-case, JSON names camelCase. A record whose only field is `json: string`
//! travels as the JSON object itself (meta, payload). Absent `option` fields are `none`; an
//! explicit `null` for an `option<option<T>>` is `some(none)` (this is how "null clears" is said).
//! Path and query-string values are text and are read according to the parameter's type.

use serde_json::{Map, Value as Json};
use wasmtime::component::{Type, Val};

pub use crate::calls::ErrorReply;
use crate::runtime::Export;

/// A request the caller got wrong; the text names the field and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeError(pub String);

impl std::fmt::Display for BridgeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn fail<T>(message: String) -> Result<T, BridgeError> {
    Err(BridgeError(message))
}

/// `claim-expires-at` -> `claimExpiresAt`.
pub fn camel_case(kebab: &str) -> String {
    let mut out = String::with_capacity(kebab.len());
    let mut words = kebab.split('-');
    out.push_str(words.next().unwrap_or_default());
    for word in words {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}

/// Whether a record type is the free-JSON carrier `record { json: string }`.
fn is_json_text(ty: &Type) -> bool {
    match ty {
        Type::Record(record) => {
            let mut fields = record.fields();
            matches!((fields.next(), fields.next()), (Some(f), None) if f.name == "json" && f.ty == Type::String)
        }
        _ => false,
    }
}

fn describe(ty: &Type) -> String {
    match ty {
        Type::Bool => "a boolean".into(),
        Type::S8
        | Type::S16
        | Type::S32
        | Type::S64
        | Type::U8
        | Type::U16
        | Type::U32
        | Type::U64 => "an integer".into(),
        Type::Float32 | Type::Float64 => "a number".into(),
        Type::Char | Type::String => "a string".into(),
        Type::List(_) => "an array".into(),
        Type::Enum(e) => format!("one of {}", e.names().collect::<Vec<_>>().join(", ")),
        Type::Option(inner) => describe(&inner.ty()),
        _ if is_json_text(ty) => "a JSON object".into(),
        _ => "an object".into(),
    }
}

fn integer(
    number: i128,
    ty: &Type,
    at: &(impl std::fmt::Display + ?Sized),
) -> Result<Val, BridgeError> {
    let out_of_range = || BridgeError(format!("{at} is out of range for its type"));
    Ok(match ty {
        Type::S8 => Val::S8(i8::try_from(number).map_err(|_| out_of_range())?),
        Type::S16 => Val::S16(i16::try_from(number).map_err(|_| out_of_range())?),
        Type::S32 => Val::S32(i32::try_from(number).map_err(|_| out_of_range())?),
        Type::S64 => Val::S64(i64::try_from(number).map_err(|_| out_of_range())?),
        Type::U8 => Val::U8(u8::try_from(number).map_err(|_| out_of_range())?),
        Type::U16 => Val::U16(u16::try_from(number).map_err(|_| out_of_range())?),
        Type::U32 => Val::U32(u32::try_from(number).map_err(|_| out_of_range())?),
        Type::U64 => Val::U64(u64::try_from(number).map_err(|_| out_of_range())?),
        _ => return fail(format!("{at} must be {}", describe(ty))),
    })
}

/// Converts a JSON value to a WIT value of type `ty`; `at` names the place for error messages.
///
/// # Errors
/// The value does not have the shape the type asks for.
pub fn from_json(value: &Json, ty: &Type, at: &str) -> Result<Val, BridgeError> {
    convert(value, ty, &Place::Root(at))
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

fn convert(value: &Json, ty: &Type, at: &Place<'_>) -> Result<Val, BridgeError> {
    let wrong = || fail(format!("{at} must be {}", describe(ty)));
    match ty {
        Type::Option(inner) => {
            let inner = inner.ty();
            if value.is_null() {
                return Ok(match inner {
                    Type::Option(_) => Val::Option(Some(Box::new(convert(value, &inner, at)?))),
                    _ => Val::Option(None),
                });
            }
            Ok(Val::Option(Some(Box::new(convert(value, &inner, at)?))))
        }
        _ if is_json_text(ty) => match value {
            Json::Object(_) => Ok(Val::Record(vec![(
                "json".to_owned(),
                Val::String(value.to_string()),
            )])),
            _ => wrong(),
        },
        Type::Bool => value.as_bool().map(Val::Bool).map_or_else(wrong, Ok),
        Type::S8
        | Type::S16
        | Type::S32
        | Type::S64
        | Type::U8
        | Type::U16
        | Type::U32
        | Type::U64 => match (value.as_i64(), value.as_u64()) {
            (Some(n), _) => integer(i128::from(n), ty, at),
            (None, Some(n)) => integer(i128::from(n), ty, at),
            _ => wrong(),
        },
        Type::Float32 => value
            .as_f64()
            .map(|f| Val::Float32(f as f32))
            .map_or_else(wrong, Ok),
        Type::Float64 => value.as_f64().map(Val::Float64).map_or_else(wrong, Ok),
        Type::String => value
            .as_str()
            .map(|s| Val::String(s.to_owned()))
            .map_or_else(wrong, Ok),
        Type::Char => {
            let mut chars = value.as_str().map(str::chars).into_iter().flatten();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Ok(Val::Char(c)),
                _ => fail(format!("{at} must be a single character")),
            }
        }
        Type::Enum(e) => match value.as_str() {
            Some(name) if e.names().any(|n| n == name) => Ok(Val::Enum(name.to_owned())),
            _ => wrong(),
        },
        Type::List(list) => {
            let Json::Array(items) = value else {
                return wrong();
            };
            let inner = list.ty();
            items
                .iter()
                .enumerate()
                .map(|(i, item)| convert(item, &inner, &Place::Item(at, i)))
                .collect::<Result<_, _>>()
                .map(Val::List)
        }
        Type::Record(record) => {
            let Json::Object(object) = value else {
                return wrong();
            };
            let fields: Vec<_> = record.fields().collect();
            let keys: Vec<String> = fields.iter().map(|f| camel_case(f.name)).collect();
            if let Some(unknown) = object.keys().find(|key| !keys.contains(key)) {
                return fail(format!(
                    "{} is not a known field; expected: {}",
                    Place::Field(at, unknown),
                    keys.join(", ")
                ));
            }
            fields
                .iter()
                .zip(&keys)
                .map(|(field, key)| {
                    let place = Place::Field(at, key);
                    let val = match object.get(key) {
                        Some(v) => convert(v, &field.ty, &place)?,
                        None => absent(&field.ty, &place)?,
                    };
                    Ok((field.name.to_owned(), val))
                })
                .collect::<Result<_, _>>()
                .map(Val::Record)
        }
        Type::Tuple(tuple) => {
            let Json::Array(items) = value else {
                return wrong();
            };
            let types: Vec<Type> = tuple.types().collect();
            if items.len() != types.len() {
                return fail(format!("{at} must be an array of {} items", types.len()));
            }
            items
                .iter()
                .zip(&types)
                .enumerate()
                .map(|(i, (item, ty))| convert(item, ty, &Place::Item(at, i)))
                .collect::<Result<_, _>>()
                .map(Val::Tuple)
        }
        Type::Variant(variant) => {
            let (case_name, payload) = match value {
                Json::String(name) => (name.as_str(), None),
                Json::Object(object) if object.len() == 1 => {
                    let (name, payload) = object.iter().next().expect("one entry");
                    (name.as_str(), Some(payload))
                }
                _ => return fail(format!("{at} must be a case name or {{\"case\": value}}")),
            };
            let Some(case) = variant.cases().find(|c| c.name == case_name) else {
                let names: Vec<&str> = variant.cases().map(|c| c.name).collect();
                return fail(format!("{at} must be one of {}", names.join(", ")));
            };
            let payload = match (case.ty, payload) {
                (Some(ty), Some(p)) => {
                    Some(Box::new(convert(p, &ty, &Place::Field(at, case_name))?))
                }
                (None, None) => None,
                (Some(_), None) => return fail(format!("{at}.{case_name} needs a value")),
                (None, Some(_)) => return fail(format!("{at}.{case_name} takes no value")),
            };
            Ok(Val::Variant(case_name.to_owned(), payload))
        }
        Type::Flags(flags) => {
            let Json::Array(items) = value else {
                return wrong();
            };
            let names: Vec<&str> = flags.names().collect();
            items
                .iter()
                .map(|item| match item.as_str() {
                    Some(name) if names.contains(&name) => Ok(name.to_owned()),
                    _ => fail(format!("{at} entries must be among {}", names.join(", "))),
                })
                .collect::<Result<_, _>>()
                .map(Val::Flags)
        }
        _ => fail(format!("{at} has a type the JSON bridge cannot carry")),
    }
}

/// The value of a field or parameter the caller left out.
fn absent(ty: &Type, at: &(impl std::fmt::Display + ?Sized)) -> Result<Val, BridgeError> {
    match ty {
        Type::Option(_) => Ok(Val::Option(None)),
        _ if is_json_text(ty) => Ok(Val::Record(vec![(
            "json".to_owned(),
            Val::String("{}".to_owned()),
        )])),
        _ => fail(format!("{at} is required ({})", describe(ty))),
    }
}

/// Reads text from a path segment or query string as a value of type `ty`.
///
/// # Errors
/// The text cannot be read as that type.
pub fn from_text(text: &str, ty: &Type, at: &str) -> Result<Val, BridgeError> {
    let value = match ty {
        Type::Option(inner) => {
            return Ok(Val::Option(Some(Box::new(from_text(
                text,
                &inner.ty(),
                at,
            )?))));
        }
        Type::Bool => match text {
            "true" | "1" => Json::Bool(true),
            "false" | "0" => Json::Bool(false),
            _ => return fail(format!("{at} must be true or false")),
        },
        Type::S8
        | Type::S16
        | Type::S32
        | Type::S64
        | Type::U8
        | Type::U16
        | Type::U32
        | Type::U64 => {
            let number: i128 = text
                .parse()
                .map_err(|_| BridgeError(format!("{at} must be an integer")))?;
            return integer(number, ty, at);
        }
        Type::Float32 | Type::Float64 => {
            let number: f64 = text
                .parse()
                .map_err(|_| BridgeError(format!("{at} must be a number")))?;
            serde_json::Number::from_f64(number).map_or(Json::Null, Json::Number)
        }
        _ => Json::String(text.to_owned()),
    };
    from_json(&value, ty, at)
}

/// A record built from query-string pairs, each read by its field's type.
///
/// # Errors
/// An unknown key, a repeated key, or a value of the wrong type.
pub fn record_from_query(pairs: &[(String, String)], ty: &Type) -> Result<Val, BridgeError> {
    let Type::Record(record) = ty else {
        return fail("the query parameter of this operation is not a record".to_owned());
    };
    let fields: Vec<_> = record.fields().collect();
    let keys: Vec<String> = fields.iter().map(|f| camel_case(f.name)).collect();
    for (i, (key, _)) in pairs.iter().enumerate() {
        if !keys.contains(key) {
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
        .zip(&keys)
        .map(|(field, key)| {
            let val = match pairs.iter().find(|(k, _)| k == key) {
                Some((_, text)) => from_text(text, &field.ty, key)?,
                None => absent(&field.ty, key)?,
            };
            Ok((field.name.to_owned(), val))
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
            return fail(format!(
                "{} takes no argument {unknown}; its arguments: {}",
                export.name,
                known.join(", ")
            ));
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
        "conflict" | "stale-session" => 409,
        "too-large" => 413,
        "unavailable" => 503,
        "storage-full" => 507,
        _ => 500,
    }
}

/// Whether the export answers `result<option<T>, _>`: its `none` (JSON `null`) means "nothing",
/// which HTTP says as 204 and a held request waits past.
pub fn answers_option(export: &Export) -> bool {
    matches!(&export.result, Some(Type::Result(result))
        if matches!(result.ok(), Some(Type::Option(_))))
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
