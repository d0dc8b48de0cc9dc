//! An OpenAPI 3.0.3 document of the HTTP contract, derived from the route table and the exports'
//! shapes (`shape.rs`), with the input rules the component publishes for each export
//! ([`Export::input_rules`]), so it can never drift from what the server accepts.

use serde_json::{Map, Value as Json, json};

use crate::routes::{Delivery, ROUTES, Route};
use agent_relay_core::bridge::{answers_option, camel_case};
use agent_relay_core::runtime::{Export, Runtime};
use agent_relay_core::shape::{Dialect, Field, Shape, json_schema, no_rules, record_all_optional};

/// The statuses every operation may answer with a JSON error.
const ERRORS: &[(&str, &str)] = &[
    ("400", "The request is malformed or breaks a rule"),
    ("401", "No credentials, or credentials nobody owns"),
    ("403", "Credentials that may not do this"),
    ("404", "An id that does not exist"),
    (
        "409",
        "The state forbids it (already claimed, stale session, wrong state)",
    ),
    ("413", "A body, field or list beyond its limit"),
    ("503", "The relay is busy or cannot write now"),
    ("507", "The store has no space left"),
];

fn request_schema(export: &Export, shape: &Shape, at: &str) -> Json {
    let rules = |at: &str, _: &Shape| export.input_rule(at);
    json_schema(shape, at, Dialect::OpenApi30, &rules)
}

fn answer_schema(shape: &Shape) -> Json {
    json_schema(shape, "", Dialect::OpenApi30, &no_rules)
}

/// A route's path, query and header parameters and its request body.
fn inputs(route: &Route, export: &Export) -> (Vec<Json>, Option<Json>) {
    let mut parameters = Vec::new();
    let mut body_fields: Vec<Field> = Vec::new();
    let mut body = None;
    for (name, shape) in &export.params {
        let key = camel_case(name);
        if route.path.contains(&format!("{{{key}}}")) {
            parameters.push(json!({"name": key, "in": "path", "required": true,
                "schema": request_schema(export, shape, &key)}));
        } else if name == "query" {
            if let Shape::Record(fields) = shape {
                for field in fields {
                    let at = format!("query.{}", field.key);
                    parameters.push(json!({"name": field.key, "in": "query", "required": false,
                        "schema": request_schema(export, field.shape.inner(), &at)}));
                }
            }
        } else if name == "input" {
            let schema = request_schema(export, shape, "input");
            body = Some((schema, !record_all_optional(shape)));
        } else if let Some((header, _)) = route.header.filter(|(_, param)| param == name) {
            parameters.push(json!({"name": header, "in": "header", "required": false,
                "schema": request_schema(export, shape.inner(), &key)}));
        } else if name != "caller" && name != "raw-body" {
            // `raw-body` is the body's exact text, already described by the body's schema; other
            // parameters are fields of the body.
            body_fields.push(Field {
                name: name.clone(),
                key,
                shape: shape.clone(),
            });
        }
    }
    if body.is_none() && !body_fields.is_empty() {
        let record = Shape::Record(body_fields);
        body = Some((
            request_schema(export, &record, ""),
            !record_all_optional(&record),
        ));
    }
    match route.delivery {
        Delivery::Held => {
            let wait = json!({"type": "number", "minimum": 0,
                "description": "Hold an empty answer up to this many seconds (cut to the server's maximum) until a write commits"});
            parameters.push(json!({"name": "wait", "in": "query", "required": false,
                "description": wait["description"], "schema": wait}));
            // A JSON body may carry the wait instead (the server takes it out before the call).
            if let Some(properties) = body
                .as_mut()
                .and_then(|(schema, _)| schema.get_mut("properties"))
                .and_then(Json::as_object_mut)
            {
                properties.insert("wait".to_owned(), wait);
            }
        }
        Delivery::Streamed => parameters.push(json!({"name": "Last-Event-ID", "in": "header",
            "required": false, "description": "Resume after this message id",
            "schema": {"type": "string", "pattern": "^\\s*[+-]?[0-9]{1,18}\\s*$"}})),
        Delivery::Once => {}
    }
    let body = body.map(|(schema, required)| {
        json!({"required": required, "content": {"application/json": {"schema": schema}}})
    });
    (parameters, body)
}

/// The answers of one operation.
fn responses(route: &Route, export: &Export) -> Json {
    let ok = match &export.result {
        // An option's `none` is answered 204, so a 200 always carries the value.
        Some(Shape::Result { ok: Some(ok), .. }) if answers_option(export) => {
            answer_schema(ok.inner())
        }
        Some(result) => answer_schema(result),
        None => json!({}),
    };
    let error = json!({"$ref": "#/components/schemas/Error"});
    let mut responses = Map::new();
    let answer = match route.delivery {
        Delivery::Streamed => {
            json!({"description": "Server-sent events: each message as `data`, its id as `id`",
            "content": {"text/event-stream": {"schema": {"type": "string"}}}})
        }
        Delivery::Once | Delivery::Held => {
            json!({"description": "OK", "content": {"application/json": {"schema": ok}}})
        }
    };
    responses.insert("200".to_owned(), answer);
    if answers_option(export) {
        responses.insert(
            "204".to_owned(),
            json!({"description": "Nothing to answer (the option's none; claim-next found no job)"}),
        );
    }
    if route.creates {
        responses.insert(
            "201".to_owned(),
            json!({"description": "Created", "content": {"application/json": {"schema": ok}}}),
        );
    }
    for (status, description) in ERRORS {
        let schema = match (route.unavailable_when, route.conflict_when) {
            // The result itself, when it reports itself unavailable or refused.
            (Some(_), _) if *status == "503" => json!({"anyOf": [ok, error]}),
            (_, Some(_)) if *status == "409" => json!({"anyOf": [ok, error]}),
            _ => error.clone(),
        };
        responses.insert(
            (*status).to_owned(),
            json!({"description": description, "content": {"application/json": {"schema": schema}}}),
        );
    }
    Json::Object(responses)
}

/// A name for each route's operation, unique across the document: the export's name, with the
/// delivery added when several routes serve one export.
fn operation_id(route: &Route) -> String {
    let shared = ROUTES.iter().filter(|r| r.export == route.export).count() > 1;
    match (shared, route.delivery) {
        (true, Delivery::Streamed) => format!("{}-stream", route.export),
        _ => route.export.to_owned(),
    }
}

/// The whole document.
pub fn document(runtime: &Runtime) -> Json {
    let mut paths: Map<String, Json> = Map::new();
    for route in ROUTES {
        let Some(export) = runtime.export(route.export) else {
            continue;
        };
        let (parameters, body) = inputs(route, export);
        let mut operation = json!({
            "operationId": operation_id(route),
            "tags": [export.interface],
            "parameters": parameters,
            "responses": responses(route, export),
        });
        operation["security"] = if route.anonymous {
            json!([])
        } else {
            json!([{"bearer": []}])
        };
        if let Some(body) = body {
            operation["requestBody"] = body;
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
