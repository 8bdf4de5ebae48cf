//! Checks a [`NewPipeline`] field by field; the first bad field is named in the error.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::json;

use super::{DEFAULT_STAGES, NewPipeline};
use crate::api::rules::{self, MAX_NAME, Rule, text};
use crate::error::{AppError, Result};

/// A pipeline slug.
pub const SLUG: &str = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";
/// A Prefect deployment: its UUID, or `flow-name/deployment-name`.
pub const DEPLOYMENT: &str = r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[^/\x00-\x20\x7f][^/\x00-\x1f\x7f]*/[^/\x00-\x1f\x7f]*[^/\x00-\x20\x7f])$";
/// A tag.
pub const TAG: &str = r"^[A-Za-z0-9._:/-]{1,50}$";
/// Longest pipeline description.
pub const MAX_DESCRIPTION: usize = 4000;
/// Most stages a pipeline has.
pub const MAX_STAGES: usize = 50;
/// Longest stage name of a pipeline.
pub const MAX_STAGE_NAME: usize = 100;
/// Most tags a pipeline has.
pub const MAX_TAGS: usize = 20;

static SLUG_RE: LazyLock<Regex> = LazyLock::new(|| rules::compile(SLUG));
static DEPLOYMENT_RE: LazyLock<Regex> = LazyLock::new(|| rules::compile(DEPLOYMENT));
static TAG_RE: LazyLock<Regex> = LazyLock::new(|| rules::compile(TAG));

/// What the OpenAPI document says pipeline definitions (the checks below) and the pipeline
/// filter's paging take.
pub fn rules() -> Vec<Rule> {
    let mut rules = Vec::new();
    for schema in ["NewPipeline", "PipelinePatch"] {
        rules.extend([
            Rule::Property(schema, "name", text(MAX_NAME)),
            Rule::Property(schema, "description", json!({"maxLength": MAX_DESCRIPTION})),
            Rule::Property(
                schema,
                "deployment",
                json!({"maxLength": MAX_NAME, "pattern": DEPLOYMENT}),
            ),
            Rule::Property(
                schema,
                "stages",
                json!({"minItems": 1, "maxItems": MAX_STAGES, "uniqueItems": true}),
            ),
            Rule::Property(schema, "stages_items", text(MAX_STAGE_NAME)),
            Rule::Property(schema, "tags", json!({"maxItems": MAX_TAGS, "uniqueItems": true})),
            Rule::Property(schema, "tags_items", json!({"pattern": TAG})),
            Rule::Property(schema, "max_concurrent_runs", json!({"minimum": 1})),
            Rule::Property(schema, "default_parameters", json!({"type": ["object", "null"]})),
            Rule::FreeForm(schema, "default_parameters"),
        ]);
    }
    rules.extend([
        Rule::Property("NewPipeline", "slug", json!({"pattern": SLUG})),
        Rule::Property("NewPipeline", "status", json!({"enum": ["pending", null]})),
    ]);
    rules.extend(rules::paging("PipelineFilter"));
    rules
}

/// A pipeline definition that passed validation, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidPipeline {
    /// Trimmed display name.
    pub name: String,
    /// Description, `None` when blank.
    pub description: Option<String>,
    /// Explicit slug, or `None` to derive one from the name.
    pub slug: Option<String>,
    /// Prefect deployment reference.
    pub deployment: Option<String>,
    /// Ordered, unique stage names.
    pub stage_names: Vec<String>,
    /// A JSON object.
    pub default_parameters: serde_json::Value,
    /// Unique tags.
    pub tags: Vec<String>,
    /// Positive limit, if any.
    pub max_concurrent_runs: Option<i32>,
}

/// The slug a name gives: lower-case ASCII letters and digits joined by single dashes.
pub fn slugify(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let mut slug: String = slug.trim_end_matches('-').chars().take(50).collect();
    if slug.ends_with('-') {
        slug.pop();
    }
    if slug.is_empty() {
        "pipeline".to_owned()
    } else {
        slug
    }
}

impl NewPipeline {
    /// Validates every field; nothing is stored when this fails.
    pub fn validate(self) -> Result<ValidPipeline> {
        let name = self.name;
        rules::check_text("name", &name, MAX_NAME)?;
        if self
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION)
        {
            return Err(AppError::invalid(
                "description",
                format!("must be at most {} characters", MAX_DESCRIPTION),
            ));
        }
        let description = self
            .description
            .map(|d| d.trim().to_owned())
            .filter(|d| !d.is_empty());
        if let Some(slug) = &self.slug
            && !SLUG_RE.is_match(slug)
        {
            return Err(AppError::invalid(
                "slug",
                "must be 1 to 63 lower-case letters, digits or inner dashes",
            ));
        }
        let deployment = self.deployment;
        if let Some(d) = &deployment
            && (d.chars().count() > MAX_NAME || !DEPLOYMENT_RE.is_match(d))
        {
            return Err(AppError::invalid(
                "deployment",
                "must be a deployment id or flow-name/deployment-name",
            ));
        }
        let stage_names = match self.stages {
            None => DEFAULT_STAGES.iter().map(|s| (*s).to_owned()).collect(),
            Some(stages) => stages,
        };
        if stage_names.is_empty() || stage_names.len() > MAX_STAGES {
            return Err(AppError::invalid(
                "stages",
                format!("must list 1 to {} stages", MAX_STAGES),
            ));
        }
        for (i, stage) in stage_names.iter().enumerate() {
            rules::check_text(format!("stages.{i}"), stage, MAX_STAGE_NAME)?;
            if stage_names[..i].contains(stage) {
                return Err(AppError::invalid(
                    format!("stages.{i}"),
                    "repeats an earlier stage",
                ));
            }
        }
        let default_parameters = self.default_parameters.unwrap_or_else(|| serde_json::json!({}));
        if !default_parameters.is_object() {
            return Err(AppError::invalid("default_parameters", "must be a JSON object"));
        }
        let tags = self.tags.unwrap_or_default();
        if tags.len() > MAX_TAGS {
            return Err(AppError::invalid(
                "tags",
                format!("must list at most {} tags", MAX_TAGS),
            ));
        }
        for (i, tag) in tags.iter().enumerate() {
            if !TAG_RE.is_match(tag) {
                return Err(AppError::invalid(
                    format!("tags.{i}"),
                    "must be 1 to 50 letters, digits or -_.:/",
                ));
            }
            if tags[..i].contains(tag) {
                return Err(AppError::invalid(format!("tags.{i}"), "repeats an earlier tag"));
            }
        }
        if self.max_concurrent_runs.is_some_and(|n| n < 1) {
            return Err(AppError::invalid("max_concurrent_runs", "must be at least 1"));
        }
        if self.status.as_deref().is_some_and(|s| s != "pending") {
            return Err(AppError::invalid(
                "status",
                "a new pipeline's status is always pending",
            ));
        }
        Ok(ValidPipeline {
            name,
            description,
            slug: self.slug,
            deployment,
            stage_names,
            default_parameters,
            tags,
            max_concurrent_runs: self.max_concurrent_runs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment_ok(d: &str) -> bool {
        DEPLOYMENT_RE.is_match(d)
    }

    fn slug_ok(s: &str) -> bool {
        SLUG_RE.is_match(s)
    }

    fn named(name: &str) -> NewPipeline {
        NewPipeline {
            name: name.into(),
            ..Default::default()
        }
    }

    fn field_of(result: Result<ValidPipeline>) -> String {
        match result {
            Err(AppError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn deployments_are_uuids_or_flow_slash_deployment() {
        assert!(deployment_ok("etl/nightly"));
        assert!(deployment_ok("0f3a2b4c-1d2e-4f5a-8b9c-0d1e2f3a4b5c"));
        for bad in ["etl", "etl/", "/nightly", "a/b/c", " a/b", "a/b "] {
            assert!(!deployment_ok(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_bare_name_gets_the_seed_stages_and_empty_defaults() {
        let valid = named("Nightly ETL").validate().unwrap();
        assert_eq!(valid.name, "Nightly ETL");
        // Surrounding spaces are refused, not trimmed: the API takes what the document says.
        assert!(named("  Nightly ETL ").validate().is_err());
        assert_eq!(valid.stage_names, DEFAULT_STAGES);
        assert_eq!(valid.default_parameters, serde_json::json!({}));
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(field_of(named(" ").validate()), "name");
        assert_eq!(
            field_of(
                NewPipeline {
                    slug: Some("Bad Slug".into()),
                    ..named("x")
                }
                .validate()
            ),
            "slug"
        );
        assert_eq!(
            field_of(
                NewPipeline {
                    stages: Some(vec![]),
                    ..named("x")
                }
                .validate()
            ),
            "stages"
        );
        assert_eq!(
            field_of(
                NewPipeline {
                    stages: Some(vec!["a".into(), "a".into()]),
                    ..named("x")
                }
                .validate()
            ),
            "stages.1"
        );
        assert_eq!(
            field_of(
                NewPipeline {
                    default_parameters: Some(serde_json::json!([1])),
                    ..named("x")
                }
                .validate()
            ),
            "default_parameters"
        );
        assert_eq!(
            field_of(
                NewPipeline {
                    tags: Some(vec!["ok".into(), "no space".into()]),
                    ..named("x")
                }
                .validate()
            ),
            "tags.1"
        );
        assert_eq!(
            field_of(
                NewPipeline {
                    deployment: Some("just-a-name".into()),
                    ..named("x")
                }
                .validate()
            ),
            "deployment"
        );
        assert_eq!(
            field_of(
                NewPipeline {
                    max_concurrent_runs: Some(0),
                    ..named("x")
                }
                .validate()
            ),
            "max_concurrent_runs"
        );
    }

    #[test]
    fn deployments_are_ids_or_flow_slash_deployment() {
        assert!(deployment_ok("etl/demo"));
        assert!(deployment_ok("0b7c6a0e-5d0f-4c59-9d7e-1a2b3c4d5e6f"));
        assert!(!deployment_ok("etl/"));
        assert!(!deployment_ok("a/b/c"));
    }

    #[test]
    fn slugs_are_derived_from_names() {
        assert_eq!(slugify("Nightly ETL (EU)"), "nightly-etl-eu");
        assert_eq!(slugify("***"), "pipeline");
        assert!(slug_ok(&slugify(&"Ab ".repeat(40))));
    }
}
