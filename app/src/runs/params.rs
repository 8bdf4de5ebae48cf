//! The Run dialog's parameter form: fields from a deployment's parameter schema, and the
//! submitted text turned back into typed parameters.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::AppError;

/// Parameters Flowdeck sets on every run itself; the form never shows them.
pub const CONTEXT_PREFIX: &str = "flowdeck_";

/// What an input holds, and how its text becomes a JSON value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "options")]
pub enum ParamKind {
    /// A string.
    Text,
    /// A whole number.
    Integer,
    /// Any number.
    Number,
    /// True or false.
    Boolean,
    /// One of a fixed list of strings.
    Choice(Vec<String>),
    /// Anything else, typed as JSON.
    Json,
}

impl ParamKind {
    /// The name sent back with the form.
    pub fn name(&self) -> &'static str {
        match self {
            ParamKind::Text | ParamKind::Choice(_) => "text",
            ParamKind::Integer => "integer",
            ParamKind::Number => "number",
            ParamKind::Boolean => "boolean",
            ParamKind::Json => "json",
        }
    }
}

/// One input of the form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamField {
    /// Parameter name.
    pub name: String,
    /// Label.
    pub title: String,
    /// Help text.
    pub description: Option<String>,
    /// Input type.
    pub kind: ParamKind,
    /// Pre-filled text: the pipeline's default, else the flow's.
    pub value: String,
    /// Whether the flow has no default for it.
    pub required: bool,
}

fn kind_of(schema: &Value) -> ParamKind {
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        let options: Vec<String> = options
            .iter()
            .filter_map(|o| o.as_str().map(str::to_owned))
            .collect();
        if !options.is_empty() {
            return ParamKind::Choice(options);
        }
    }
    // `x: int | None` is `anyOf: [{type: integer}, {type: null}]`.
    if let Some(variants) = schema.get("anyOf").and_then(Value::as_array) {
        let real: Vec<&Value> = variants
            .iter()
            .filter(|v| v.get("type").and_then(Value::as_str) != Some("null"))
            .collect();
        return match real.as_slice() {
            [one] => kind_of(one),
            _ => ParamKind::Json,
        };
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("string") => ParamKind::Text,
        Some("integer") => ParamKind::Integer,
        Some("number") => ParamKind::Number,
        Some("boolean") => ParamKind::Boolean,
        _ => ParamKind::Json,
    }
}

fn kind_of_value(value: &Value) -> ParamKind {
    match value {
        Value::String(_) => ParamKind::Text,
        Value::Number(n) if n.is_i64() || n.is_u64() => ParamKind::Integer,
        Value::Number(_) => ParamKind::Number,
        Value::Bool(_) => ParamKind::Boolean,
        _ => ParamKind::Json,
    }
}

fn text_of(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Checks a run's parameters against its flow's parameter schema.
///
/// The schema is Prefect's `parameter_openapi_schema`: no parameter the flow does not take, every one it needs,
/// and each of a simple type of that type. Parameters Flowdeck sets itself are not the
/// caller's to send.
pub fn check(schema: &Value, parameters: &Map<String, Value>) -> Result<(), AppError> {
    let properties = schema.get("properties").and_then(Value::as_object);
    for (name, value) in parameters {
        if name.starts_with(CONTEXT_PREFIX) {
            return Err(AppError::invalid(
                format!("parameters.{name}"),
                "is set by Flowdeck itself",
            ));
        }
        let Some(properties) = properties else { continue };
        let Some(property) = properties.get(name) else {
            let known: Vec<&str> = properties
                .keys()
                .map(String::as_str)
                .filter(|k| !k.starts_with(CONTEXT_PREFIX))
                .collect();
            return Err(AppError::invalid(
                format!("parameters.{name}"),
                format!(
                    "the flow takes no such parameter (it takes: {})",
                    known.join(", ")
                ),
            ));
        };
        let fits = match kind_of(property) {
            ParamKind::Text => value.is_string(),
            ParamKind::Choice(options) => value.as_str().is_some_and(|v| options.iter().any(|o| o == v)),
            ParamKind::Integer => value.is_i64() || value.is_u64(),
            ParamKind::Number => value.is_number(),
            ParamKind::Boolean => value.is_boolean(),
            ParamKind::Json => true,
        };
        let nullable = value.is_null()
            && property.get("anyOf").and_then(Value::as_array).is_some_and(|v| {
                v.iter()
                    .any(|v| v.get("type").and_then(Value::as_str) == Some("null"))
            });
        if !fits && !nullable {
            return Err(AppError::invalid(
                format!("parameters.{name}"),
                format!("must be {}", describe(&kind_of(property))),
            ));
        }
    }
    let required = schema.get("required").and_then(Value::as_array);
    for name in required.into_iter().flatten().filter_map(Value::as_str) {
        if !name.starts_with(CONTEXT_PREFIX) && !parameters.contains_key(name) {
            return Err(AppError::invalid(
                format!("parameters.{name}"),
                "is required by the flow and has no default",
            ));
        }
    }
    Ok(())
}

fn describe(kind: &ParamKind) -> String {
    match kind {
        ParamKind::Text => "a string".into(),
        ParamKind::Choice(options) => format!("one of {}", options.join(", ")),
        ParamKind::Integer => "a whole number".into(),
        ParamKind::Number => "a number".into(),
        ParamKind::Boolean => "true or false".into(),
        ParamKind::Json => "JSON".into(),
    }
}

/// The form for a flow's parameter schema (Prefect's `parameter_openapi_schema`).
///
/// Fields come in the flow's order, pre-filled from `defaults` (the pipeline's) over the
/// schema's own. Without a schema, the pipeline's defaults alone make the form.
pub fn fields(schema: Option<&Value>, defaults: &Map<String, Value>) -> Vec<ParamField> {
    let properties = schema
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object);
    let required: Vec<&str> = schema
        .and_then(|s| s.get("required"))
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut fields: Vec<(i64, ParamField)> = match properties {
        Some(properties) => properties
            .iter()
            .filter(|(name, _)| !name.starts_with(CONTEXT_PREFIX))
            .map(|(name, property)| {
                let value = defaults.get(name).or_else(|| property.get("default"));
                let field = ParamField {
                    name: name.clone(),
                    title: property
                        .get("title")
                        .and_then(Value::as_str)
                        .unwrap_or(name)
                        .replace('_', " "),
                    description: property
                        .get("description")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    kind: kind_of(property),
                    value: value.map(text_of).unwrap_or_default(),
                    required: required.contains(&name.as_str()),
                };
                let position = property
                    .get("position")
                    .and_then(Value::as_i64)
                    .unwrap_or(i64::MAX);
                (position, field)
            })
            .collect(),
        None => defaults
            .iter()
            .filter(|(name, _)| !name.starts_with(CONTEXT_PREFIX))
            .map(|(name, value)| {
                let field = ParamField {
                    name: name.clone(),
                    title: name.replace('_', " "),
                    description: None,
                    kind: kind_of_value(value),
                    value: text_of(value),
                    required: false,
                };
                (i64::MAX, field)
            })
            .collect(),
    };
    fields.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
    fields.into_iter().map(|(_, f)| f).collect()
}

/// Turns the submitted form into parameters.
///
/// `values` and `kinds` (as [`ParamKind::name`]) are by parameter name; an empty input
/// means "use the default" and is left out. Errors name the field as `parameters.<name>`.
pub fn parse(
    values: &[(String, String)],
    kinds: &[(String, String)],
) -> Result<Map<String, Value>, AppError> {
    let mut parameters = Map::new();
    for (name, text) in values {
        let field = format!("parameters.{name}");
        if name.is_empty() || name.len() > 200 || name.starts_with(CONTEXT_PREFIX) {
            return Err(AppError::invalid(&field, "is not a parameter the form may set"));
        }
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let kind = kinds
            .iter()
            .find(|(k, _)| k == name)
            .map_or("text", |(_, kind)| kind.as_str());
        let value = match kind {
            "text" => Value::String(text.to_owned()),
            "integer" => text
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| AppError::invalid(&field, "must be a whole number"))?,
            "number" => text
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| AppError::invalid(&field, "must be a number"))?,
            "boolean" => match text {
                "true" | "on" => Value::Bool(true),
                "false" | "off" => Value::Bool(false),
                _ => return Err(AppError::invalid(&field, "must be true or false")),
            },
            "json" => {
                serde_json::from_str(text).map_err(|_| AppError::invalid(&field, "must be valid JSON"))?
            }
            _ => return Err(AppError::invalid(&field, "has an unknown kind")),
        };
        parameters.insert(name.clone(), value);
    }
    Ok(parameters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_checked_against_the_flows_schema() {
        let schema = serde_json::json!({
            "properties": {
                "rows": {"type": "integer"},
                "mode": {"enum": ["fast", "slow"]},
                "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "flowdeck_run_id": {"type": "integer"}
            },
            "required": ["rows", "flowdeck_run_id"]
        });
        let params = |v: Value| v.as_object().cloned().unwrap();
        assert_eq!(
            check(&schema, &params(serde_json::json!({"rows": 3, "note": null}))),
            Ok(())
        );
        let refused = |v: Value| match check(&schema, &params(v)) {
            Err(AppError::Invalid { field, .. }) => field,
            other => panic!("not refused: {other:?}"),
        };
        assert_eq!(refused(serde_json::json!({"rows": "3"})), "parameters.rows");
        assert_eq!(
            refused(serde_json::json!({"rows": 3, "mode": "medium"})),
            "parameters.mode"
        );
        assert_eq!(
            refused(serde_json::json!({"rows": 3, "colour": 1})),
            "parameters.colour"
        );
        assert_eq!(refused(serde_json::json!({})), "parameters.rows");
        assert_eq!(
            refused(serde_json::json!({"rows": 1, "flowdeck_token": "x"})),
            "parameters.flowdeck_token"
        );
    }
    use serde_json::json;

    fn demo_schema() -> Value {
        json!({
            "title": "Parameters", "type": "object",
            "properties": {
                "flowdeck_run_id": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": null, "position": 0},
                "rows": {"default": 1000, "position": 4, "title": "rows", "type": "integer"},
                "fail_stage": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": null, "position": 5, "title": "fail_stage"},
                "stage_seconds": {"default": 0.5, "position": 6, "title": "stage_seconds", "type": "number"},
                "mode": {"enum": ["fast", "full"], "position": 7, "title": "mode"},
                "dry_run": {"type": "boolean", "default": false, "position": 8, "title": "dry_run"}
            },
            "required": ["mode"]
        })
    }

    #[test]
    fn the_form_follows_the_schema_in_order_without_flowdeck_context() {
        let defaults = json!({"rows": 50}).as_object().unwrap().clone();
        let fields = fields(Some(&demo_schema()), &defaults);
        let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["rows", "fail_stage", "stage_seconds", "mode", "dry_run"]);
        assert_eq!(fields[0].kind, ParamKind::Integer);
        assert_eq!(
            fields[0].value, "50",
            "the pipeline's default wins over the flow's"
        );
        assert_eq!(fields[1].kind, ParamKind::Text);
        assert_eq!(fields[1].value, "");
        assert_eq!(fields[2].value, "0.5");
        assert_eq!(
            fields[3].kind,
            ParamKind::Choice(vec!["fast".into(), "full".into()])
        );
        assert!(fields[3].required && !fields[0].required);
        assert_eq!(fields[4].kind, ParamKind::Boolean);
    }

    #[test]
    fn without_a_schema_the_pipeline_defaults_make_the_form() {
        let defaults = json!({"rows": 5, "label": "x", "flowdeck_token": "no"})
            .as_object()
            .unwrap()
            .clone();
        let fields = fields(None, &defaults);
        assert_eq!(fields.len(), 2);
        assert_eq!(fields[0].name, "label");
        assert_eq!(fields[1].kind, ParamKind::Integer);
    }

    #[test]
    fn submitted_text_becomes_typed_parameters() {
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        let values = [
            pair("rows", " 20 "),
            pair("fail_stage", ""),
            pair("ratio", "0.25"),
            pair("on", "true"),
            pair("extra", "{\"a\":1}"),
        ];
        let kinds = [
            pair("rows", "integer"),
            pair("ratio", "number"),
            pair("on", "boolean"),
            pair("extra", "json"),
        ];
        let parsed = parse(&values, &kinds).unwrap();
        assert_eq!(
            Value::Object(parsed),
            json!({"rows": 20, "ratio": 0.25, "on": true, "extra": {"a": 1}})
        );
    }

    #[test]
    fn bad_input_names_the_parameter() {
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        let field = |r: Result<Map<String, Value>, AppError>| match r {
            Err(AppError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(parse(&[pair("rows", "many")], &[pair("rows", "integer")])),
            "parameters.rows"
        );
        assert_eq!(
            field(parse(&[pair("flowdeck_token", "x")], &[])),
            "parameters.flowdeck_token"
        );
        assert_eq!(
            field(parse(&[pair("x", "{")], &[pair("x", "json")])),
            "parameters.x"
        );
    }
}
