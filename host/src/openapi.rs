//! An OpenAPI 3 document of the HTTP contract, derived from the route table and the component's
//! own types, so it can never drift from what the server accepts.

use serde_json::{Map, Value as Json, json};
use wasmtime::component::Type;

use crate::bridge::camel_case;
use crate::routes::ROUTES;
use crate::runtime::Runtime;

/// JSON Schema of a WIT type as the bridge carries it.
pub fn schema(ty: &Type) -> Json {
    match ty {
        Type::Bool => json!({"type": "boolean"}),
        Type::S8 | Type::S16 | Type::S32 | Type::S64 => json!({"type": "integer"}),
        Type::U8 | Type::U16 | Type::U32 | Type::U64 => json!({"type": "integer", "minimum": 0}),
        Type::Float32 | Type::Float64 => json!({"type": "number"}),
        Type::Char | Type::String => json!({"type": "string"}),
        Type::List(list) => json!({"type": "array", "items": schema(&list.ty())}),
        Type::Option(inner) => {
            let mut inner = schema(&inner.ty());
            if let Some(object) = inner.as_object_mut() {
                object.insert("nullable".to_owned(), Json::Bool(true));
            }
            inner
        }
        Type::Enum(e) => json!({"type": "string", "enum": e.names().collect::<Vec<_>>()}),
        Type::Record(record) => {
            let fields: Vec<_> = record.fields().collect();
            if let [field] = fields.as_slice()
                && field.name == "json"
                && field.ty == Type::String
            {
                return json!({"type": "object", "additionalProperties": true});
            }
            let properties: Map<String, Json> = fields
                .iter()
                .map(|f| (camel_case(f.name), schema(&f.ty)))
                .collect();
            let required: Vec<String> = fields
                .iter()
                .filter(|f| !matches!(f.ty, Type::Option(_)))
                .map(|f| camel_case(f.name))
                .collect();
            json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
        }
        Type::Tuple(tuple) => {
            json!({"type": "array", "items": tuple.types().map(|t| schema(&t)).collect::<Vec<_>>()})
        }
        Type::Variant(variant) => json!({"oneOf": variant.cases().map(|case| match case.ty {
            None => json!({"type": "string", "enum": [case.name]}),
            Some(ty) => json!({"type": "object", "properties": {camel_case(case.name): schema(&ty)}, "required": [camel_case(case.name)]}),
        }).collect::<Vec<_>>()}),
        Type::Result(result) => result.ok().map_or(json!({}), |ok| schema(&ok)),
        _ => json!({}),
    }
}

/// The whole document.
pub fn document(runtime: &Runtime) -> Json {
    let error = json!({
        "description": "A JSON error",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    });
    let mut paths: Map<String, Json> = Map::new();
    for route in ROUTES {
        let Some(export) = runtime.export(route.export) else {
            continue;
        };
        let mut parameters = Vec::new();
        let mut body = None;
        for (name, ty) in &export.params {
            let key = camel_case(name);
            if route.path.contains(&format!("{{{key}}}")) {
                parameters.push(
                    json!({"name": key, "in": "path", "required": true, "schema": schema(ty)}),
                );
            } else if name == "query" {
                if let Type::Record(record) = ty {
                    for field in record.fields() {
                        parameters.push(json!({"name": camel_case(field.name), "in": "query", "required": false, "schema": schema(&field.ty)}));
                    }
                }
            } else if name == "input" {
                body = Some(schema(ty));
            } else if let Some((header, _)) = route.header.filter(|(_, param)| param == name) {
                parameters.push(
                    json!({"name": header, "in": "header", "required": false, "schema": schema(ty)}),
                );
            } else if name != "caller" && name != "raw-body" {
                // `raw-body` is the body's exact text, already described by the body's schema.
                let entry = body.get_or_insert_with(
                    || json!({"type": "object", "properties": {}, "required": []}),
                );
                entry["properties"][&key] = schema(ty);
            }
        }
        let ok = export.result.as_ref().map_or(json!({}), schema);
        let mut operation = json!({
            "operationId": export.name,
            "tags": [export.interface],
            "parameters": parameters,
            "security": [{"bearer": []}],
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": ok}}},
                "400": error, "401": error, "403": error, "404": error, "409": error, "413": error,
                "503": error, "507": error
            }
        });
        if crate::bridge::answers_option(export) {
            operation["responses"]["204"] = json!({"description": "Nothing (the option's none)"});
        }
        if route.creates {
            operation["responses"]["201"] =
                json!({"description": "Created", "content": {"application/json": {"schema": ok}}});
        }
        if let Some(body) = body {
            operation["requestBody"] =
                json!({"required": false, "content": {"application/json": {"schema": body}}});
        }
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        entry[route.method.to_ascii_lowercase()] = operation;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "agent-relay", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {
                "type": "object",
                "properties": {"error": {"type": "object", "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"}
                }, "required": ["code", "message"]}},
                "required": ["error"]
            }}
        }
    })
}
