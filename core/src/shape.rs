//! The one walk over the component's WIT types.
//!
//! Each export's parameters and result are walked once, when the component is loaded, into a
//! [`Shape`]: the type as JSON carries it (camelCase keys made once, a `record { json: string }`
//! marked as a free JSON object). Everything that needs the types reads the shape instead of
//! walking wasmtime's types again: the bridge converts JSON to values by it, `embed` describes it
//! to hosts in other languages, and [`json_schema`] turns it into the schemas of the OpenAPI
//! document and of MCP tools.

use serde_json::{Map, Value as Json, json};
use wasmtime::component::Type;

/// A WIT type as the JSON bridge carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    Bool,
    Integer(Integer),
    /// `f32` (`single`) or `f64`.
    Float {
        single: bool,
    },
    Char,
    String,
    /// `record { json: string }`: travels as the JSON object itself (meta, payload).
    Json,
    List(Box<Shape>),
    Option(Box<Shape>),
    Record(Vec<Field>),
    Variant(Vec<Case>),
    Enum(Vec<String>),
    Flags(Vec<String>),
    Tuple(Vec<Shape>),
    Result {
        ok: Option<Box<Shape>>,
        err: Option<Box<Shape>>,
    },
    /// A type the bridge cannot carry (resources, futures, streams).
    Unsupported,
}

/// The integer types of WIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integer {
    S8,
    S16,
    S32,
    S64,
    U8,
    U16,
    U32,
    U64,
}

impl Integer {
    /// The WIT name (`s64`).
    pub fn name(self) -> &'static str {
        match self {
            Integer::S8 => "s8",
            Integer::S16 => "s16",
            Integer::S32 => "s32",
            Integer::S64 => "s64",
            Integer::U8 => "u8",
            Integer::U16 => "u16",
            Integer::U32 => "u32",
            Integer::U64 => "u64",
        }
    }

    /// The smallest and largest value of the type.
    pub fn range(self) -> (i128, i128) {
        match self {
            Integer::S8 => (i8::MIN.into(), i8::MAX.into()),
            Integer::S16 => (i16::MIN.into(), i16::MAX.into()),
            Integer::S32 => (i32::MIN.into(), i32::MAX.into()),
            Integer::S64 => (i64::MIN.into(), i64::MAX.into()),
            Integer::U8 => (0, u8::MAX.into()),
            Integer::U16 => (0, u16::MAX.into()),
            Integer::U32 => (0, u32::MAX.into()),
            Integer::U64 => (0, u64::MAX.into()),
        }
    }
}

/// A record field: its WIT name, its JSON key, its shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub key: String,
    pub shape: Shape,
}

/// A variant case: its WIT name, its JSON key, its payload's shape if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub name: String,
    pub key: String,
    pub shape: Option<Shape>,
}

impl Shape {
    /// Walks a wasmtime type.
    pub fn of(ty: &Type) -> Shape {
        match ty {
            Type::Bool => Shape::Bool,
            Type::S8 => Shape::Integer(Integer::S8),
            Type::S16 => Shape::Integer(Integer::S16),
            Type::S32 => Shape::Integer(Integer::S32),
            Type::S64 => Shape::Integer(Integer::S64),
            Type::U8 => Shape::Integer(Integer::U8),
            Type::U16 => Shape::Integer(Integer::U16),
            Type::U32 => Shape::Integer(Integer::U32),
            Type::U64 => Shape::Integer(Integer::U64),
            Type::Float32 => Shape::Float { single: true },
            Type::Float64 => Shape::Float { single: false },
            Type::Char => Shape::Char,
            Type::String => Shape::String,
            Type::List(list) => Shape::List(Box::new(Shape::of(&list.ty()))),
            Type::Option(option) => Shape::Option(Box::new(Shape::of(&option.ty()))),
            Type::Record(record) => {
                let fields: Vec<Field> = record
                    .fields()
                    .map(|field| Field {
                        name: field.name.to_owned(),
                        key: camel_case(field.name),
                        shape: Shape::of(&field.ty),
                    })
                    .collect();
                match fields.as_slice() {
                    [only] if only.name == "json" && only.shape == Shape::String => Shape::Json,
                    _ => Shape::Record(fields),
                }
            }
            Type::Variant(variant) => Shape::Variant(
                variant
                    .cases()
                    .map(|case| Case {
                        name: case.name.to_owned(),
                        key: camel_case(case.name),
                        shape: case.ty.as_ref().map(Shape::of),
                    })
                    .collect(),
            ),
            Type::Enum(names) => Shape::Enum(names.names().map(str::to_owned).collect()),
            Type::Flags(names) => Shape::Flags(names.names().map(str::to_owned).collect()),
            Type::Tuple(tuple) => Shape::Tuple(tuple.types().map(|t| Shape::of(&t)).collect()),
            Type::Result(result) => Shape::Result {
                ok: result.ok().map(|t| Box::new(Shape::of(&t))),
                err: result.err().map(|t| Box::new(Shape::of(&t))),
            },
            _ => Shape::Unsupported,
        }
    }

    /// The shape inside any number of `option`s.
    pub fn inner(&self) -> &Shape {
        match self {
            Shape::Option(inner) => inner.inner(),
            other => other,
        }
    }
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

/// Which schema language [`json_schema`] writes: they differ only in how `null` is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAPI 3.0's schema object: `"nullable": true`.
    OpenApi30,
    /// JSON Schema (2020-12, as MCP tools declare their input): `"type": [T, "null"]`.
    JsonSchema,
}

/// Extra keywords for the schema of a value the caller sends, by its place in the arguments:
/// the parameter's camelCase name, then `.key` per record field and `[]` per list item
/// (`agentId`, `input.tags[]`, `query.limit`); `None` where nothing is added.
pub type Rules<'a> = &'a dyn Fn(&str, &Shape) -> Option<Map<String, Json>>;

/// No extra keywords: the schema of the type alone (answers are described this way).
pub fn no_rules(_: &str, _: &Shape) -> Option<Map<String, Json>> {
    None
}

/// The JSON Schema of the value at `at` (a parameter's camelCase name, or `""` for an answer) as
/// the bridge carries it. `rules` adds the checks the relay makes beyond the type (lengths,
/// bounds, patterns).
pub fn json_schema(shape: &Shape, at: &str, dialect: Dialect, rules: Rules<'_>) -> Json {
    let mut schema = match shape {
        Shape::Bool => json!({"type": "boolean"}),
        Shape::Integer(integer) => {
            let (min, max) = integer.range();
            let format = match integer {
                Integer::S64 | Integer::U64 | Integer::U32 => "int64",
                _ => "int32",
            };
            // JSON numbers past 2^63 do not survive most parsers; u64 is bounded by i64 instead.
            let min = i64::try_from(min).unwrap_or(i64::MIN);
            let max = i64::try_from(max).unwrap_or(i64::MAX);
            json!({"type": "integer", "format": format, "minimum": min, "maximum": max})
        }
        Shape::Float { single } => {
            json!({"type": "number", "format": if *single { "float" } else { "double" }})
        }
        Shape::Char => json!({"type": "string", "minLength": 1, "maxLength": 1}),
        Shape::String => json!({"type": "string"}),
        Shape::Json => json!({"type": "object", "additionalProperties": true}),
        Shape::List(item) => {
            let items = json_schema(item, &format!("{at}[]"), dialect, rules);
            json!({"type": "array", "items": items})
        }
        Shape::Option(inner) => return nullable(json_schema(inner, at, dialect, rules), dialect),
        Shape::Record(fields) => {
            let properties: Map<String, Json> = fields
                .iter()
                .map(|f| {
                    let place = if at.is_empty() {
                        f.key.clone()
                    } else {
                        format!("{at}.{}", f.key)
                    };
                    (f.key.clone(), json_schema(&f.shape, &place, dialect, rules))
                })
                .collect();
            let required: Vec<&str> = fields
                .iter()
                .filter(|f| !matches!(f.shape, Shape::Option(_) | Shape::Json))
                .map(|f| f.key.as_str())
                .collect();
            let mut schema =
                json!({"type": "object", "properties": properties, "additionalProperties": false});
            // OpenAPI 3.0 forbids an empty `required`.
            if !required.is_empty() {
                schema["required"] = json!(required);
            }
            schema
        }
        Shape::Variant(cases) => json!({"oneOf": cases.iter().map(|case| match &case.shape {
            None => json!({"type": "string", "enum": [case.name]}),
            Some(shape) => json!({
                "type": "object",
                "properties": {case.key.clone(): json_schema(shape, &format!("{at}.{}", case.key), dialect, rules)},
                "required": [case.key],
                "additionalProperties": false
            }),
        }).collect::<Vec<_>>()}),
        Shape::Enum(names) => json!({"type": "string", "enum": names}),
        Shape::Flags(names) => {
            json!({"type": "array", "uniqueItems": true, "items": {"type": "string", "enum": names}})
        }
        Shape::Tuple(items) => {
            let count = items.len();
            // OpenAPI 3.0 has no positional items; each item may be any of the tuple's types.
            let any: Vec<Json> = items
                .iter()
                .map(|s| json_schema(s, &format!("{at}[]"), dialect, rules))
                .collect();
            json!({"type": "array", "items": {"anyOf": any}, "minItems": count, "maxItems": count})
        }
        Shape::Result { ok, .. } => ok
            .as_deref()
            .map_or(json!({}), |ok| json_schema(ok, at, dialect, rules)),
        Shape::Unsupported => json!({}),
    };
    if let (Some(extra), Some(object)) = (rules(at, shape), schema.as_object_mut()) {
        object.extend(extra);
    }
    schema
}

fn nullable(mut schema: Json, dialect: Dialect) -> Json {
    let Some(object) = schema.as_object_mut() else {
        return schema;
    };
    match (dialect, object.get("type").cloned()) {
        (Dialect::OpenApi30, _) => {
            object.insert("nullable".to_owned(), Json::Bool(true));
        }
        (Dialect::JsonSchema, Some(Json::String(ty))) => {
            object.insert("type".to_owned(), json!([ty, "null"]));
            if let Some(Json::Array(names)) = object.get_mut("enum") {
                names.push(Json::Null);
            }
        }
        (Dialect::JsonSchema, Some(Json::Array(mut types))) => {
            if !types.contains(&json!("null")) {
                types.push(json!("null"));
            }
            object.insert("type".to_owned(), Json::Array(types));
        }
        (Dialect::JsonSchema, _) => return json!({"anyOf": [schema, {"type": "null"}]}),
    }
    schema
}

/// The JSON Schema of an export's arguments (its `params`, as the runtime walked them) as one
/// object keyed by camelCase parameter name (as `agent-relay call` and `embed::Relay::call_json`
/// take them), leaving out the parameters named in `leave_out` (WIT names: `caller`, or those a
/// front-end fills itself).
pub fn params_schema(params: &[(String, Shape)], leave_out: &[&str], rules: Rules<'_>) -> Json {
    let fields: Vec<Field> = params
        .iter()
        .filter(|(name, _)| !leave_out.contains(&name.as_str()))
        .map(|(name, shape)| Field {
            name: name.clone(),
            key: camel_case(name),
            shape: shape.clone(),
        })
        .collect();
    let mut schema = json_schema(&Shape::Record(fields), "", Dialect::JsonSchema, rules);
    // An object of empty query parameters may be left out, as the bridge allows.
    if let Some(required) = schema.get_mut("required").and_then(Json::as_array_mut) {
        required.retain(|key| {
            let name = key.as_str().unwrap_or_default();
            !params
                .iter()
                .any(|(n, s)| camel_case(n) == name && record_all_optional(s))
        });
        if required.is_empty() {
            schema.as_object_mut().map(|o| o.remove("required"));
        }
    }
    schema
}

/// A record whose every field may be left out (a query), so the whole of it may be left out.
pub fn record_all_optional(shape: &Shape) -> bool {
    match shape {
        Shape::Record(fields) => fields
            .iter()
            .all(|f| matches!(f.shape, Shape::Option(_) | Shape::Json)),
        _ => false,
    }
}

/// The exports' signatures as JSON, for hosts in other languages that need the component's types
/// to convert JSON arguments (the Node host's bridge reads this).
///
/// Types are `"string"`, `"bool"`, `"s64"`, ... or one-key objects: `{"list": T}`,
/// `{"option": T}`, `{"result": {"ok": T?, "err": T?}}`, `{"record": [{"name", "type"}]}`,
/// `{"variant": [{"name", "type"?}]}`, `{"enum": [names]}`, `{"flags": [names]}`,
/// `{"tuple": [T]}`. Names are the WIT (kebab-case) names.
pub fn signature(shape: &Shape) -> Json {
    let named = |name: &str, shape: Option<&Shape>| match shape {
        Some(shape) => json!({"name": name, "type": signature(shape)}),
        None => json!({"name": name}),
    };
    match shape {
        Shape::Bool => "bool".into(),
        Shape::Integer(integer) => integer.name().into(),
        Shape::Float { single: true } => "f32".into(),
        Shape::Float { single: false } => "f64".into(),
        Shape::Char => "char".into(),
        Shape::String => "string".into(),
        Shape::Json => json!({"record": [named("json", Some(&Shape::String))]}),
        Shape::List(item) => json!({"list": signature(item)}),
        Shape::Option(inner) => json!({"option": signature(inner)}),
        Shape::Result { ok, err } => json!({"result": {
            "ok": ok.as_deref().map(signature),
            "err": err.as_deref().map(signature),
        }}),
        Shape::Record(fields) => json!({"record": fields
            .iter()
            .map(|field| named(&field.name, Some(&field.shape)))
            .collect::<Vec<_>>()}),
        Shape::Variant(cases) => json!({"variant": cases
            .iter()
            .map(|case| named(&case.name, case.shape.as_ref()))
            .collect::<Vec<_>>()}),
        Shape::Enum(names) => json!({"enum": names}),
        Shape::Flags(names) => json!({"flags": names}),
        Shape::Tuple(items) => json!({"tuple": items.iter().map(signature).collect::<Vec<_>>()}),
        Shape::Unsupported => "unsupported".into(),
    }
}
