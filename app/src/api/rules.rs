//! Input rules shared by the validation code and the OpenAPI document, so the document
//! states exactly what the server accepts (a fuzzer that believes the document is right).
//!
//! Patterns avoid `\s` and Unicode classes, which differ between regex engines: "text" is
//! any characters but ASCII control characters, not starting or ending with a space.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Value, json};

/// One line of text without surrounding spaces or control characters.
pub const TEXT: &str = r"^[^\x00-\x20\x7f]([^\x00-\x1f\x7f]*[^\x00-\x20\x7f])?$";
/// Longest name: of a pipeline, a deployment reference, a reported stage, an event id.
pub const MAX_NAME: usize = 200;

static TEXT_RE: LazyLock<Regex> = LazyLock::new(|| compile(TEXT));

/// `pattern` compiled; the rule patterns are constants, so this is checked by the tests.
pub fn compile(pattern: &str) -> Regex {
    Regex::new(pattern).expect("the rule patterns compile")
}

/// Whether `value` is text of 1 to `max` characters.
pub fn is_text(value: &str, max: usize) -> bool {
    value.chars().count() <= max && TEXT_RE.is_match(value)
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

/// The document's constraints for text of 1 to `max` characters.
pub fn text(max: usize) -> Value {
    json!({"minLength": 1, "maxLength": max, "pattern": TEXT})
}

/// What a capability adds to the OpenAPI document so that it states exactly what the
/// capability accepts; the document gathers every capability's rules.
pub enum Rule {
    /// Constraints merged into a property of a schema (`name_items`: the items of array
    /// property `name`).
    Property(&'static str, &'static str, Value),
    /// A property that takes any JSON object, or null.
    FreeForm(&'static str, &'static str),
    /// The pattern of a header parameter, in every operation that takes it.
    Header(&'static str, &'static str),
    /// A keyword at the top of a schema.
    Schema(&'static str, &'static str, Value),
}

/// The paging rules of a filter schema (`limit`, `offset`).
pub fn paging(schema: &'static str) -> [Rule; 2] {
    [
        Rule::Property(
            schema,
            "limit",
            json!({"minimum": 1, "maximum": crate::filter::MAX_LIMIT}),
        ),
        Rule::Property(schema, "offset", json!({"minimum": 0})),
    ]
}

/// Merges the rules into the document's schemas (`nullable` properties keep their `null`),
/// and keeps U+0000 out of every string.
pub fn constrain(document: &mut Value, rules: &[Rule]) {
    for rule in rules {
        let Rule::Property(schema, property, rule) = rule else {
            continue;
        };
        let properties = &mut document["components"]["schemas"][schema]["properties"];
        let target = match property.strip_suffix("_items") {
            Some(array) => &mut properties[array]["items"],
            None => &mut properties[property],
        };
        assert!(target.is_object(), "the document has no {schema}.{property}");
        if let (Some(target), Value::Object(rule)) = (target.as_object_mut(), rule) {
            target.extend(rule.clone());
        }
    }
    if let Some(paths) = document["paths"].as_object_mut() {
        let parameters = paths
            .values_mut()
            .filter_map(Value::as_object_mut)
            .flat_map(|item| item.values_mut())
            .filter_map(|operation| operation.get_mut("parameters")?.as_array_mut())
            .flatten();
        for parameter in parameters {
            // A parameter is there or not; none is `null` (a header or query `null` is text).
            if let Some(kind) = parameter.pointer_mut("/schema/type")
                && let Value::Array(types) = kind
            {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    *kind = only;
                }
            }
            for rule in rules {
                if let Rule::Header(name, pattern) = rule
                    && parameter["name"] == *name
                {
                    parameter["schema"] = json!({"type": "string", "pattern": pattern});
                }
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
        "anyOf": [
            {
                "type": "object",
                "propertyNames": {"pattern": NO_NUL},
                "additionalProperties": {"$ref": "#/components/schemas/JsonValue"},
            },
            {"type": "null"},
        ]
    });
    for rule in rules {
        match rule {
            Rule::FreeForm(schema, property) => {
                document["components"]["schemas"][schema]["properties"][property] = free_form.clone();
            }
            Rule::Schema(schema, keyword, value) => {
                document["components"]["schemas"][schema][keyword] = value.clone();
            }
            Rule::Property(..) | Rule::Header(..) => {}
        }
    }
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
///
/// Not recursive, and one type per branch: the mainstream client generators
/// (`openapi-python-client`, progenitor) drop every schema that reaches a recursive union
/// or a type array inside `anyOf`, and with it every operation that uses one. So the
/// document states the rule for a value and its keys, and the description for what is
/// nested; the server checks it at every depth, naming the path (`parameters.a.0`).
fn json_value() -> Value {
    json!({
        "description": "Any JSON value; no string or key in it, at any depth, may contain U+0000",
        "anyOf": [
            {"type": "string", "pattern": NO_NUL},
            {"type": "number", "minimum": -1e300, "maximum": 1e300},
            {"type": "boolean"},
            {"type": "null"},
            {"type": "array", "items": {}},
            {"type": "object", "propertyNames": {"pattern": NO_NUL}, "additionalProperties": {}}
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_parameter_is_nullable() {
        let mut document = json!({"paths": {"/e": {"get": {"parameters": [
            {"name": "q", "in": "query", "schema": {"type": ["string", "null"]}},
            {"name": "Last-Event-ID", "in": "header", "schema": {"type": ["integer", "null"], "minimum": 0}}
        ]}}}});
        constrain(&mut document, &[]);
        assert_eq!(
            document["paths"]["/e"]["get"]["parameters"],
            json!([
                {"name": "q", "in": "query", "schema": {"type": "string"}},
                {"name": "Last-Event-ID", "in": "header", "schema": {"type": "integer", "minimum": 0}}
            ]),
            "a parameter is there or not"
        );
    }

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
}
