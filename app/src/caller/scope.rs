//! What a scoped API key is limited to ([`KeyScope`]: some pipelines, some actions) and
//! what it may spend ([`Budget`]).
//!
//! A scope only narrows the key's role: an action the role does not allow stays refused
//! whatever the scope lists, and a scoped key does nothing that needs the admin role. A
//! pipeline outside the scope does not exist for the key: lists leave it out and a read
//! of it answers 404, not 403.

use serde::{Deserialize, Serialize};

use super::Role;
use crate::error::{AppError, Result};

/// Something a key may be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Read pipelines, runs, their stages and the event stream.
    Read,
    /// Start runs (and ask what a run would send, `dry_run`).
    Trigger,
    /// Cancel runs.
    Cancel,
    /// Run finished runs again.
    Retry,
    /// Report stage and run status.
    Report,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 5] = [
        Action::Read,
        Action::Trigger,
        Action::Cancel,
        Action::Retry,
        Action::Report,
    ];

    /// The action's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Trigger => "trigger",
            Action::Cancel => "cancel",
            Action::Retry => "retry",
            Action::Report => "report",
        }
    }

    /// The least role that may do this.
    pub fn role(self) -> Role {
        match self {
            Action::Read => Role::Viewer,
            _ => Role::Operator,
        }
    }
}

impl std::str::FromStr for Action {
    type Err = AppError;

    fn from_str(s: &str) -> Result<Self> {
        Action::ALL.into_iter().find(|a| a.as_str() == s).ok_or_else(|| {
            AppError::invalid("scope.actions", "must be read, trigger, cancel, retry or report")
        })
    }
}

/// The pipelines and actions a key is limited to. A pipeline is in scope when its id, its
/// slug or one of its tags is listed; with none listed, every pipeline is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"tags": ["marketing"], "actions": ["read", "trigger"]})))]
#[serde(deny_unknown_fields)]
pub struct KeyScope {
    /// Pipelines by id.
    #[serde(default)]
    pub pipeline_ids: Vec<i64>,
    /// Pipelines by slug.
    #[serde(default)]
    pub slugs: Vec<String>,
    /// Pipelines carrying any of these tags, including pipelines tagged later.
    #[serde(default)]
    pub tags: Vec<String>,
    /// What the key may do; every action its role allows when left out.
    #[serde(default)]
    pub actions: Option<Vec<Action>>,
}

/// Most ids, slugs or tags a scope lists.
pub const MAX_SCOPE_ITEMS: usize = 100;
/// Longest slug or tag a scope lists.
pub const MAX_SCOPE_NAME: usize = 100;
/// Largest budget.
pub const MAX_BUDGET: i32 = 1_000_000;

impl KeyScope {
    /// Whether the scope limits the key at all.
    pub fn limits(&self) -> bool {
        self.limits_pipelines() || self.actions.is_some()
    }

    /// Whether the scope names pipelines (otherwise every pipeline is in it).
    pub fn limits_pipelines(&self) -> bool {
        !(self.pipeline_ids.is_empty() && self.slugs.is_empty() && self.tags.is_empty())
    }

    /// What a listing's kept answer depends on: the pipelines the scope names, `None`
    /// when it names none (every unscoped caller shares one answer).
    pub fn listing(&self) -> Option<(&[i64], &[String], &[String])> {
        self.limits_pipelines()
            .then_some((&self.pipeline_ids, &self.slugs, &self.tags))
    }

    /// Whether the pipeline with this id, slug and tags is in scope.
    pub fn covers(&self, id: i64, slug: &str, tags: &[String]) -> bool {
        !self.limits_pipelines()
            || self.pipeline_ids.contains(&id)
            || self.slugs.iter().any(|s| s == slug)
            || tags.iter().any(|t| self.tags.contains(t))
    }

    /// Whether the scope allows `action` (the role is checked apart).
    pub fn allows(&self, action: Action) -> bool {
        self.actions
            .as_ref()
            .is_none_or(|actions| actions.contains(&action))
    }

    /// Checks a scope for a key of `role`: bounded lists, and no action the
    /// role does not allow (a scope narrows a role, never widens it: `409`, as the request
    /// is well-formed but clashes with the role). Sorts and dedups.
    #[cfg(feature = "ssr")]
    pub fn checked(mut self, role: Role) -> Result<Self> {
        if self.pipeline_ids.len() > MAX_SCOPE_ITEMS
            || self.slugs.len() > MAX_SCOPE_ITEMS
            || self.tags.len() > MAX_SCOPE_ITEMS
        {
            return Err(AppError::invalid(
                "scope",
                format!("lists at most {MAX_SCOPE_ITEMS} ids, slugs and tags each"),
            ));
        }
        if self.pipeline_ids.iter().any(|id| *id <= 0) {
            return Err(AppError::invalid(
                "scope.pipeline_ids",
                "must be pipeline ids (positive)",
            ));
        }
        if let Some(actions) = &mut self.actions {
            if actions.is_empty() {
                return Err(AppError::invalid(
                    "scope.actions",
                    "must list at least one action (leave it out for every action of the role)",
                ));
            }
            if let Some(action) = actions.iter().find(|a| a.role() > role) {
                return Err(AppError::conflict(format!(
                    "scope.actions: {} needs the {} role; a scope cannot give it to a {role} key",
                    action.as_str(),
                    action.role()
                )));
            }
            actions.sort();
            actions.dedup();
        }
        self.pipeline_ids.sort_unstable();
        self.pipeline_ids.dedup();
        for names in [&mut self.slugs, &mut self.tags] {
            names.sort();
            names.dedup();
        }
        Ok(self)
    }
}

/// What a key may spend. Counted in the database from the runs the key made, so every
/// replica sees the same use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"triggers_per_hour": 10, "max_unfinished_runs": 2})))]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Runs the key may start in any hour (triggers and retries).
    #[serde(default)]
    pub triggers_per_hour: Option<i32>,
    /// Runs the key may start in any day.
    #[serde(default)]
    pub triggers_per_day: Option<i32>,
    /// Runs of the key that may be unfinished at once.
    #[serde(default)]
    pub max_unfinished_runs: Option<i32>,
}

impl Budget {
    /// Whether any budget is set.
    pub fn limits(&self) -> bool {
        self.triggers_per_hour.is_some()
            || self.triggers_per_day.is_some()
            || self.max_unfinished_runs.is_some()
    }

    /// Checks that every budget set is a positive number.
    pub fn checked(self) -> Result<Self> {
        for (field, value) in [
            ("budget.triggers_per_hour", self.triggers_per_hour),
            ("budget.triggers_per_day", self.triggers_per_day),
            ("budget.max_unfinished_runs", self.max_unfinished_runs),
        ] {
            if value.is_some_and(|n| !(1..=MAX_BUDGET).contains(&n)) {
                return Err(AppError::invalid(
                    field,
                    format!("must be between 1 and {MAX_BUDGET}"),
                ));
            }
        }
        Ok(self)
    }
}

/// What a key has spent of its budgets now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct BudgetUse {
    /// Runs it started in the last hour.
    pub triggers_last_hour: i64,
    /// Runs it started in the last day.
    pub triggers_last_day: i64,
    /// Its runs not finished yet.
    pub unfinished_runs: i64,
}

#[cfg(feature = "ssr")]
impl super::Principal {
    /// Answers 404, as if it did not exist, unless the pipeline is in the caller's scope.
    pub async fn sees_pipeline(&self, db: impl sqlx::PgExecutor<'_>, pipeline_id: i64) -> Result<()> {
        let scope = &self.scope;
        if !scope.limits_pipelines() {
            return Ok(());
        }
        let seen = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM pipelines p WHERE p.id = $1
                 AND (p.id = ANY($2) OR p.slug = ANY($3) OR p.tags && $4)) AS "seen!""#,
            pipeline_id,
            &scope.pipeline_ids,
            &scope.slugs,
            &scope.tags,
        )
        .fetch_one(db)
        .await?;
        if seen {
            Ok(())
        } else {
            Err(AppError::not_found("Pipeline"))
        }
    }

    /// Answers 404, as if it did not exist, unless the run's pipeline is in the caller's
    /// scope.
    pub async fn sees_run(&self, db: impl sqlx::PgExecutor<'_>, run_id: i64) -> Result<()> {
        let scope = &self.scope;
        if !scope.limits_pipelines() {
            return Ok(());
        }
        let seen = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM runs r JOIN pipelines p ON p.id = r.pipeline_id
                 WHERE r.id = $1 AND (p.id = ANY($2) OR p.slug = ANY($3) OR p.tags && $4)) AS "seen!""#,
            run_id,
            &scope.pipeline_ids,
            &scope.slugs,
            &scope.tags,
        )
        .fetch_one(db)
        .await?;
        if seen {
            Ok(())
        } else {
            Err(AppError::not_found("Run"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_covers_pipelines_by_id_slug_or_tag_and_all_without_any() {
        let scope = KeyScope {
            tags: vec!["marketing".into()],
            slugs: vec!["etl".into()],
            pipeline_ids: vec![7],
            actions: None,
        };
        assert!(scope.covers(7, "x", &[]));
        assert!(scope.covers(1, "etl", &[]));
        assert!(scope.covers(2, "y", &["ops".into(), "marketing".into()]));
        assert!(!scope.covers(3, "z", &["finance".into()]));
        assert!(KeyScope::default().covers(3, "z", &[]));
        assert!(!KeyScope::default().limits());
    }

    #[cfg(feature = "ssr")]
    #[test]
    fn a_scope_cannot_widen_its_role() {
        let scope = KeyScope {
            actions: Some(vec![Action::Trigger, Action::Read]),
            ..KeyScope::default()
        };
        assert!(matches!(
            scope.clone().checked(Role::Viewer),
            Err(AppError::Conflict { .. })
        ));
        let checked = scope.checked(Role::Operator).unwrap();
        assert_eq!(checked.actions, Some(vec![Action::Read, Action::Trigger]));
        assert!(checked.allows(Action::Read) && !checked.allows(Action::Cancel));
        let empty = KeyScope {
            actions: Some(vec![]),
            ..KeyScope::default()
        };
        assert!(empty.checked(Role::Admin).is_err());
    }

    #[test]
    fn budgets_are_positive() {
        assert!(
            Budget {
                triggers_per_hour: Some(0),
                ..Budget::default()
            }
            .checked()
            .is_err()
        );
        assert!(
            Budget {
                max_unfinished_runs: Some(2),
                ..Budget::default()
            }
            .checked()
            .is_ok()
        );
    }
}
