//! Input rules shared by the validation code and the OpenAPI document, so the document
//! states exactly what the server accepts (a fuzzer that believes the document is right).
//!
//! Patterns avoid `\s` and Unicode classes, which differ between regex engines: "text" is
//! any characters but ASCII control characters, not starting or ending with a space.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Value, json};

/// One line of text without surrounding spaces or control characters.
pub const TEXT: &str = r"^[^\x00-\x20\x7f]([^\x00-\x1f\x7f]*[^\x00-\x20\x7f])?$";
/// A pipeline slug.
pub const SLUG: &str = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";
/// A Prefect deployment: its UUID, or `flow-name/deployment-name`.
pub const DEPLOYMENT: &str = r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[^/\x00-\x20\x7f][^/\x00-\x1f\x7f]*/[^/\x00-\x1f\x7f]*[^/\x00-\x20\x7f])$";
/// An `Idempotency-Key` header.
pub const IDEMPOTENCY_KEY: &str = r"^[\x21-\x7e]{1,255}$";
/// A tag.
pub const TAG: &str = r"^[A-Za-z0-9._:/-]{1,50}$";

/// Longest pipeline name, deployment reference, stage name in a report and event id.
pub const MAX_NAME: usize = 200;
/// Longest pipeline description.
pub const MAX_DESCRIPTION: usize = 4000;
/// Most stages a pipeline has.
pub const MAX_STAGES: usize = 50;
/// Longest stage name of a pipeline.
pub const MAX_STAGE_NAME: usize = 100;
/// Most tags a pipeline has.
pub const MAX_TAGS: usize = 20;
/// Longest error message in a status report.
pub const MAX_MESSAGE: usize = 10_000;

static COMPILED: LazyLock<HashMap<&'static str, Regex>> = LazyLock::new(|| {
    [TEXT, SLUG, DEPLOYMENT, TAG, IDEMPOTENCY_KEY]
        .into_iter()
        .map(|p| (p, Regex::new(p).expect("the rule patterns compile")))
        .collect()
});

/// Whether `value` matches `pattern` (one of this module's).
pub fn matches(pattern: &'static str, value: &str) -> bool {
    COMPILED.get(pattern).is_some_and(|re| re.is_match(value))
}

/// Whether `value` is text of 1 to `max` characters.
pub fn is_text(value: &str, max: usize) -> bool {
    value.chars().count() <= max && matches(TEXT, value)
}

/// [`is_text`], or the error that names `field` and says what text it takes.
pub fn check_text(field: impl Into<String>, value: &str, max: usize) -> crate::error::Result<()> {
    if is_text(value, max) {
        return Ok(());
    }
    Err(crate::error::AppError::invalid(
        field,
        format!("must be 1 to {max} characters, without control characters or surrounding spaces"),
    ))
}

fn text(max: usize) -> Value {
    json!({"minLength": 1, "maxLength": max, "pattern": TEXT})
}

/// Constraints to merge into the document: (schema, property, constraints); a property
/// of `*_items` constrains the items of the array property.
fn constraints() -> Vec<(&'static str, &'static str, Value)> {
    let limit = json!({"minimum": 1, "maximum": crate::filter::MAX_LIMIT});
    let offset = json!({"minimum": 0});
    let stages = json!({"minItems": 1, "maxItems": MAX_STAGES, "uniqueItems": true});
    let tags = json!({"maxItems": MAX_TAGS, "uniqueItems": true});
    let deployment = json!({"maxLength": MAX_NAME, "pattern": DEPLOYMENT});
    let mut rules = Vec::new();
    for schema in ["NewPipeline", "PipelinePatch"] {
        rules.extend([
            (schema, "name", text(MAX_NAME)),
            (schema, "description", json!({"maxLength": MAX_DESCRIPTION})),
            (schema, "deployment", deployment.clone()),
            (schema, "stages", stages.clone()),
            (schema, "stages_items", text(MAX_STAGE_NAME)),
            (schema, "tags", tags.clone()),
            (schema, "tags_items", json!({"pattern": TAG})),
            (schema, "max_concurrent_runs", json!({"minimum": 1})),
            (schema, "default_parameters", json!({"type": ["object", "null"]})),
        ]);
    }
    rules.extend([
        ("NewPipeline", "slug", json!({"pattern": SLUG})),
        ("NewPipeline", "status", json!({"enum": ["pending", null]})),
        ("StatusUpdate", "stage_name", text(MAX_NAME)),
        (
            "StatusUpdate",
            "status",
            json!({"enum": crate::runs::RunStatus::ALL.map(crate::runs::RunStatus::as_str)}),
        ),
        ("StatusUpdate", "error_message", json!({"maxLength": MAX_MESSAGE})),
        ("StatusUpdate", "records_processed", json!({"minimum": 0})),
        (
            "StatusUpdate",
            "event_id",
            // `not` a string with Flowdeck's prefix: `null` (no id) stays valid.
            json!({"minLength": 1, "maxLength": MAX_NAME, "not": {"type": "string", "pattern": "^flowdeck:"}}),
        ),
        ("NewApiKey", "name", text(crate::auth::api_keys::MAX_NAME_LEN)),
        (
            "Rotation",
            "overlap_minutes",
            json!({"minimum": 0, "maximum": crate::auth::api_keys::MAX_OVERLAP_MINUTES}),
        ),
        (
            "AuditRetention",
            "days",
            json!({"minimum": 1, "maximum": crate::retention::MAX_AUDIT_DAYS}),
        ),
    ]);
    for schema in ["ApiKeyFilter", "AuditFilter", "RunFilter", "PipelineFilter"] {
        rules.extend([
            (schema, "limit", limit.clone()),
            (schema, "offset", offset.clone()),
        ]);
    }
    rules
}

/// Merges the rules into the document's schemas (`nullable` properties keep their `null`).
pub fn constrain(document: &mut Value) {
    for (schema, property, rule) in constraints() {
        let properties = &mut document["components"]["schemas"][schema]["properties"];
        let target = match property.strip_suffix("_items") {
            Some(array) => &mut properties[array]["items"],
            None => &mut properties[property],
        };
        assert!(target.is_object(), "the document has no {schema}.{property}");
        if let (Some(target), Value::Object(rule)) = (target.as_object_mut(), rule) {
            target.extend(rule);
        }
    }
    // An Idempotency-Key is 1 to 255 visible ASCII characters.
    if let Some(paths) = document["paths"].as_object_mut() {
        let parameters = paths
            .values_mut()
            .filter_map(Value::as_object_mut)
            .flat_map(|item| item.values_mut())
            .filter_map(|operation| operation.get_mut("parameters")?.as_array_mut())
            .flatten();
        for parameter in parameters {
            if parameter["name"] == "Idempotency-Key" {
                parameter["schema"] = json!({"type": "string", "pattern": IDEMPOTENCY_KEY});
            }
        }
    }
    // No string anywhere may hold U+0000 (PostgreSQL cannot store it; the API refuses it).
    if let Some(schemas) = document["components"]["schemas"].as_object_mut() {
        // Error bodies may quote what was refused; they are left as they are.
        schemas
            .iter_mut()
            .filter(|(name, _)| name.as_str() != "ErrorBody")
            .for_each(|(_, schema)| no_nul_strings(schema));
        schemas.insert("JsonValue".to_owned(), json_value());
    }
    let free_form = json!({
        "type": ["object", "null"],
        "propertyNames": {"pattern": NO_NUL},
        "additionalProperties": {"$ref": "#/components/schemas/JsonValue"},
    });
    for (schema, property) in [
        ("NewPipeline", "default_parameters"),
        ("PipelinePatch", "default_parameters"),
        ("TriggerRequest", "parameters"),
    ] {
        document["components"]["schemas"][schema]["properties"][property] = free_form.clone();
    }
    // A status report names a run, or a pipeline whose latest run is meant: one of the two
    // is present and not null.
    document["components"]["schemas"]["StatusUpdate"]["anyOf"] = json!([
        {"required": ["run_id"], "properties": {"run_id": {"type": "integer"}}},
        {"required": ["pipeline_id"], "properties": {"pipeline_id": {"type": "integer"}}},
    ]);
}

/// Any text without U+0000.
pub const NO_NUL: &str = r"^[^\x00]*$";

/// Gives every unconstrained string schema under `node` the no-U+0000 pattern.
fn no_nul_strings(node: &mut Value) {
    match node {
        Value::Object(map) => {
            let is_string = match map.get("type") {
                Some(Value::String(t)) => t == "string",
                Some(Value::Array(types)) => types.iter().any(|t| t == "string"),
                _ => false,
            };
            if is_string
                && !["pattern", "enum", "format", "const"]
                    .iter()
                    .any(|k| map.contains_key(*k))
            {
                map.insert("pattern".to_owned(), Value::from(NO_NUL));
            }
            map.values_mut().for_each(no_nul_strings);
        }
        Value::Array(items) => items.iter_mut().for_each(no_nul_strings),
        _ => {}
    }
}

/// Free-form JSON, as parameters take it: anything but U+0000 in a string or key.
fn json_value() -> Value {
    json!({
        "description": "Any JSON value; no string or key may contain U+0000",
        "anyOf": [
            {"type": "string", "pattern": NO_NUL},
            {"type": "number", "minimum": -1e300, "maximum": 1e300},
            {"type": ["boolean", "null"]},
            {"type": "array", "items": {"$ref": "#/components/schemas/JsonValue"}},
            {
                "type": "object",
                "propertyNames": {"pattern": NO_NUL},
                "additionalProperties": {"$ref": "#/components/schemas/JsonValue"}
            }
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_has_no_surrounding_spaces_or_control_characters() {
        for good in ["a", "Nightly ETL", "ünïcödé  ok", "x\u{3000}"] {
            assert!(is_text(good, 200), "{good:?}");
        }
        for bad in ["", " a", "a ", "a\nb", "\ta", "a\u{7f}"] {
            assert!(!is_text(bad, 200), "{bad:?}");
        }
        assert!(!is_text(&"x".repeat(201), 200));
    }

    #[test]
    fn deployments_are_uuids_or_flow_slash_deployment() {
        assert!(matches(DEPLOYMENT, "etl/nightly"));
        assert!(matches(DEPLOYMENT, "0f3a2b4c-1d2e-4f5a-8b9c-0d1e2f3a4b5c"));
        for bad in ["etl", "etl/", "/nightly", "a/b/c", " a/b", "a/b "] {
            assert!(!matches(DEPLOYMENT, bad), "{bad:?}");
        }
    }
}
