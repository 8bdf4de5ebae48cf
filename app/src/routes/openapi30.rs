//! The OpenAPI 3.0 form of the document (`/api/openapi-3.0.json`), for client generators
//! that read only 3.0 (progenitor among them), made from the 3.1 document so the two never
//! differ in what they describe.
//!
//! 3.1 is JSON Schema 2020-12; 3.0 is an older subset. What changes: `null` as a type
//! becomes `nullable: true` (from `type: [T, "null"]`, and from `anyOf`/`oneOf` with a
//! `{"type": "null"}` branch), `const` becomes a one-value `enum`, `examples` becomes
//! `example`, a numeric `exclusiveMinimum`/`exclusiveMaximum` becomes the bound with the
//! flag, and keywords 3.0 lacks (`propertyNames`, `contentMediaType`, `$schema`) go.
//!
//! Three more changes keep the 3.0 generators' output compiling (progenitor's, checked by
//! `scripts/clients-test.sh`): a value of any JSON type (`JsonValue`) is the empty schema;
//! and a query parameter named like a header parameter of the same operation
//! (`last_event_id`, `Last-Event-ID`: generators name both `last_event_id`) is left out,
//! the header saying the same. (No parameter is nullable in the 3.1 document either:
//! `api::rules::constrain`.)

use serde_json::{Map, Value, json};

/// `document` (OpenAPI 3.1) as OpenAPI 3.0.3.
pub fn downgrade(document: &Value) -> Value {
    let mut document = document.clone();
    document["openapi"] = json!("3.0.3");
    if let Some(info) = document.get_mut("info").and_then(Value::as_object_mut) {
        if let Some(license) = info.get_mut("license").and_then(Value::as_object_mut) {
            license.remove("identifier");
        }
        info.remove("summary");
    }
    if let Some(top) = document.as_object_mut() {
        top.remove("webhooks");
        top.remove("jsonSchemaDialect");
    }
    if let Some(schemas) = document
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        schemas.values_mut().for_each(schema);
    }
    // Every schema inside paths: parameters, bodies, responses.
    if let Some(paths) = document.get_mut("paths") {
        in_paths(paths);
    }
    document
}

/// Finds the schemas under `node` (a part of `paths`) and converts each.
fn in_paths(node: &mut Value) {
    match node {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                match key.as_str() {
                    "schema" => schema(value),
                    "parameters" => parameters(value),
                    _ => in_paths(value),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(in_paths),
        _ => {}
    }
}

/// An operation's parameters: converted, without a query parameter that a header parameter
/// names alike (none is nullable already: `api::rules::constrain`).
fn parameters(node: &mut Value) {
    let Value::Array(list) = node else { return };
    let snake = |p: &Value| {
        p["name"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase()
            .replace('-', "_")
    };
    let headers: Vec<String> = list.iter().filter(|p| p["in"] == "header").map(snake).collect();
    list.retain(|p| p["in"] != "query" || !headers.contains(&snake(p)));
    for parameter in list.iter_mut() {
        if let Some(inner) = parameter.get_mut("schema") {
            schema(inner);
        }
    }
}

/// Whether `branches` take a value of every JSON type, as `JsonValue` does.
fn any_json(branches: &[Value]) -> bool {
    let types: Vec<&str> = branches.iter().filter_map(|b| b["type"].as_str()).collect();
    ["string", "boolean", "null", "array", "object"]
        .iter()
        .all(|t| types.contains(t))
        && (types.contains(&"number") || types.contains(&"integer"))
}

/// Converts one schema and every schema inside it.
fn schema(node: &mut Value) {
    let Value::Object(map) = node else { return };
    if let Some(Value::Array(branches)) = map.get("anyOf")
        && any_json(branches)
    {
        // Any JSON value: the empty schema, which every 3.0 generator reads as such.
        map.retain(|key, _| key == "description");
        return;
    }
    // Inner schemas first.
    for keyword in ["items", "additionalProperties", "not"] {
        if let Some(inner) = map.get_mut(keyword) {
            schema(inner);
        }
    }
    for keyword in ["properties", "patternProperties"] {
        if let Some(Value::Object(inner)) = map.get_mut(keyword) {
            inner.values_mut().for_each(schema);
        }
    }
    for keyword in ["anyOf", "oneOf", "allOf"] {
        if let Some(Value::Array(branches)) = map.get_mut(keyword) {
            branches.iter_mut().for_each(schema);
        }
    }
    for keyword in [
        "propertyNames",
        "contentMediaType",
        "contentEncoding",
        "$schema",
        "$id",
    ] {
        map.remove(keyword);
    }
    if let Some(value) = map.remove("const") {
        map.insert("enum".to_owned(), json!([value]));
    }
    if let Some(Value::Array(examples)) = map.remove("examples")
        && let Some(first) = examples.into_iter().next()
    {
        map.insert("example".to_owned(), first);
    }
    for (exclusive, bound) in [("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")] {
        if let Some(limit) = map.get(exclusive).filter(|v| v.is_number()).cloned() {
            map.insert(bound.to_owned(), limit);
            map.insert(exclusive.to_owned(), json!(true));
        }
    }
    null_type(map);
    for keyword in ["anyOf", "oneOf"] {
        null_branch(map, keyword);
    }
}

/// `type: [T, "null"]` as `type: T, nullable: true` (and `type: "null"` alone as a
/// nullable schema of no other type, which 3.0 cannot say better).
fn null_type(map: &mut Map<String, Value>) {
    let Some(Value::Array(types)) = map.get("type") else {
        if map.get("type") == Some(&json!("null")) {
            map.remove("type");
            map.insert("nullable".to_owned(), json!(true));
            map.insert("enum".to_owned(), json!([null]));
        }
        return;
    };
    let nullable = types.iter().any(|t| t == "null");
    let others: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
    match others.as_slice() {
        [one] => {
            map.insert("type".to_owned(), one.clone());
        }
        _ => {
            // Several types: a branch each, the keywords staying where they apply.
            map.remove("type");
            let branches: Vec<Value> = others.into_iter().map(|t| json!({"type": t})).collect();
            map.insert("anyOf".to_owned(), Value::Array(branches));
        }
    }
    if nullable {
        map.insert("nullable".to_owned(), json!(true));
    }
}

/// `anyOf`/`oneOf` with a `null` branch: the other branches, nullable; one left alone is
/// inlined (`allOf` around a reference, which 3.0 does not let carry siblings).
fn null_branch(map: &mut Map<String, Value>, keyword: &str) {
    let Some(Value::Array(branches)) = map.get_mut(keyword) else {
        return;
    };
    let is_null =
        |b: &Value| b == &json!({"type": "null"}) || b == &json!({"nullable": true, "enum": [null]});
    if !branches.iter().any(is_null) {
        return;
    }
    branches.retain(|b| !is_null(b));
    map.insert("nullable".to_owned(), json!(true));
    let Some(Value::Array(branches)) = map.get(keyword) else {
        return;
    };
    if let [only] = branches.as_slice() {
        let only = only.clone();
        map.remove(keyword);
        match only {
            Value::Object(inner) if inner.contains_key("$ref") => {
                map.insert("allOf".to_owned(), json!([inner]));
            }
            Value::Object(inner) => {
                for (key, value) in inner {
                    map.entry(key).or_insert(value);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_become_nullable_and_31_keywords_go() {
        let document = json!({
            "openapi": "3.1.0",
            "info": {"title": "t", "version": "1", "license": {"name": "MIT", "identifier": "MIT"}},
            "paths": {"/a": {"get": {"parameters": [{"name": "q", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/A"}}}}}}}},
            "components": {"schemas": {"A": {"type": "object", "properties": {
                "ref": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/B"}]},
                "obj": {"anyOf": [{"type": "object", "propertyNames": {"pattern": "x"}, "additionalProperties": {}}, {"type": "null"}]},
                "kind": {"const": "run"},
                "n": {"type": "integer", "exclusiveMinimum": 0, "examples": [3]},
                "any": {"anyOf": [{"type": "string"}, {"type": "boolean"}, {"type": "null"}]}
            }}}}
        });
        let old = downgrade(&document);
        assert_eq!(old["openapi"], "3.0.3");
        assert_eq!(old["info"]["license"], json!({"name": "MIT"}));
        assert_eq!(
            old["paths"]["/a"]["get"]["parameters"][0]["schema"],
            json!({"type": "string"})
        );
        let properties = &old["components"]["schemas"]["A"]["properties"];
        assert_eq!(
            properties["ref"],
            json!({"allOf": [{"$ref": "#/components/schemas/B"}], "nullable": true})
        );
        assert_eq!(
            properties["obj"],
            json!({"type": "object", "additionalProperties": {}, "nullable": true})
        );
        assert_eq!(properties["kind"], json!({"enum": ["run"]}));
        assert_eq!(
            properties["n"],
            json!({"type": "integer", "minimum": 0, "exclusiveMinimum": true, "example": 3})
        );
        assert_eq!(
            properties["any"],
            json!({"anyOf": [{"type": "string"}, {"type": "boolean"}], "nullable": true})
        );
        assert!(!old.to_string().contains("\"null\""), "{old}");
    }

    #[test]
    fn any_json_is_the_empty_schema_and_a_query_parameter_named_like_a_header_goes() {
        let document = json!({
            "openapi": "3.1.0",
            "paths": {"/e": {"get": {"parameters": [
                {"name": "last_event_id", "in": "query", "schema": {"type": "integer"}},
                {"name": "Last-Event-ID", "in": "header", "schema": {"type": "integer", "minimum": 0}},
                {"name": "run_id", "in": "query", "schema": {"type": "integer"}}
            ], "responses": {}}}},
            "components": {"schemas": {"JsonValue": {"description": "Any JSON value", "anyOf": [
                {"type": "string", "pattern": "x"}, {"type": "number"}, {"type": "boolean"},
                {"type": "null"}, {"type": "array", "items": {}}, {"type": "object", "additionalProperties": {}}
            ]}}}
        });
        let old = downgrade(&document);
        assert_eq!(
            old["components"]["schemas"]["JsonValue"],
            json!({"description": "Any JSON value"})
        );
        assert_eq!(
            old["paths"]["/e"]["get"]["parameters"],
            json!([
                {"name": "Last-Event-ID", "in": "header", "schema": {"type": "integer", "minimum": 0}},
                {"name": "run_id", "in": "query", "schema": {"type": "integer"}}
            ])
        );
    }
}
