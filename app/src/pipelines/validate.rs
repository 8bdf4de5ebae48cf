//! Checks a [`NewPipeline`] field by field; the first bad field is named in the error.

use super::{DEFAULT_STAGES, NewPipeline};
use crate::api::rules;
use crate::error::{AppError, Result};

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
        rules::check_text("name", &name, rules::MAX_NAME)?;
        if self
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > rules::MAX_DESCRIPTION)
        {
            return Err(AppError::invalid(
                "description",
                format!("must be at most {} characters", rules::MAX_DESCRIPTION),
            ));
        }
        let description = self
            .description
            .map(|d| d.trim().to_owned())
            .filter(|d| !d.is_empty());
        if let Some(slug) = &self.slug
            && !rules::matches(rules::SLUG, slug)
        {
            return Err(AppError::invalid(
                "slug",
                "must be 1 to 63 lower-case letters, digits or inner dashes",
            ));
        }
        let deployment = self.deployment;
        if let Some(d) = &deployment
            && (d.chars().count() > rules::MAX_NAME || !rules::matches(rules::DEPLOYMENT, d))
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
        if stage_names.is_empty() || stage_names.len() > rules::MAX_STAGES {
            return Err(AppError::invalid(
                "stages",
                format!("must list 1 to {} stages", rules::MAX_STAGES),
            ));
        }
        for (i, stage) in stage_names.iter().enumerate() {
            rules::check_text(format!("stages.{i}"), stage, rules::MAX_STAGE_NAME)?;
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
        if tags.len() > rules::MAX_TAGS {
            return Err(AppError::invalid(
                "tags",
                format!("must list at most {} tags", rules::MAX_TAGS),
            ));
        }
        for (i, tag) in tags.iter().enumerate() {
            if !rules::matches(rules::TAG, tag) {
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
        rules::matches(rules::DEPLOYMENT, d)
    }

    fn slug_ok(s: &str) -> bool {
        rules::matches(rules::SLUG, s)
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
