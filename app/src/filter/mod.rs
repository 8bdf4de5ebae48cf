//! Prefect-style filter bodies (`POST /api/{collection}/filter` and `/count`): the
//! operators each field type accepts, paging limits, and (on the server) the SQL they
//! become.
//!
//! Criteria on different fields must all hold; an operator left out does not filter. Every
//! value is a bound parameter: a filter body never reaches the SQL text.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{AppError, Result};

mod criteria;
pub use criteria::{PipelineCriteria, StatusFilter};

/// The most rows one filter request returns.
pub const MAX_LIMIT: i64 = 200;
/// Rows returned when `limit` is left out.
pub const DEFAULT_LIMIT: i64 = 50;

/// Operators on a text field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema, schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TextFilter {
    /// One of these values, exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any_: Option<Vec<String>>,
    /// This value, exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eq_: Option<String>,
    /// Contains this text, ignoring case (as Prefect's `like_`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub like_: Option<String>,
    /// `true`: has no value; `false`: has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_null_: Option<bool>,
}

/// Operators on an id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema, schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct IdFilter {
    /// One of these ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any_: Option<Vec<i64>>,
}

/// Operators on a time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema, schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TimeFilter {
    /// At or before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_: Option<DateTime<Utc>>,
    /// At or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_: Option<DateTime<Utc>>,
    /// `true`: has no time; `false`: has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_null_: Option<bool>,
}

/// Operators on a list of labels (tags).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema, schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TagsFilter {
    /// Carries at least one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any_: Option<Vec<String>>,
    /// Carries all of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_: Option<Vec<String>>,
    /// `true`: carries none; `false`: carries some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_null_: Option<bool>,
}

/// Deserializes a struct only from a JSON object (serde's derive also takes an array).
pub fn object<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    deserializer.deserialize_map(ObjectVisitor(std::marker::PhantomData))
}

/// [`object`] for an optional field: `null` or absent is `None`.
pub fn optional_object<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    deserializer.deserialize_option(OptionalObject(std::marker::PhantomData))
}

struct ObjectVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ObjectVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
    }
}

struct OptionalObject<T>(std::marker::PhantomData<T>);

impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for OptionalObject<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object or null")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Option<T>, D::Error> {
        object(deserializer).map(Some)
    }
}

/// Checks `limit` and `offset` and fills in their defaults.
pub fn paging(limit: Option<i64>, offset: Option<i64>) -> Result<(i64, i64)> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(AppError::invalid(
            "limit",
            format!("must be from 1 to {MAX_LIMIT}"),
        ));
    }
    let offset = offset.unwrap_or(0);
    if offset < 0 {
        return Err(AppError::invalid("offset", "must be 0 or more"));
    }
    Ok((limit, offset))
}

/// `text` as a `LIKE` pattern that matches it anywhere, its own wildcards taken literally.
pub fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

#[cfg(feature = "ssr")]
pub use sql::Where;

#[cfg(feature = "ssr")]
mod sql {
    use sqlx::{Postgres, QueryBuilder};

    use super::{IdFilter, TagsFilter, TextFilter, TimeFilter, contains_pattern};
    use crate::caller::KeyScope;

    /// A query under construction whose `WHERE` clause grows one criterion at a time.
    pub struct Where<'a> {
        /// The query; push the `ORDER BY` and `LIMIT` once the criteria are in.
        pub query: QueryBuilder<'a, Postgres>,
        criteria: usize,
    }

    impl<'a> Where<'a> {
        /// Starts from `select` (everything up to where `WHERE` would go).
        pub fn new(select: &str) -> Self {
            Self {
                query: QueryBuilder::new(select),
                criteria: 0,
            }
        }

        fn and(&mut self) -> &mut QueryBuilder<'a, Postgres> {
            self.query
                .push(if self.criteria == 0 { " WHERE " } else { " AND " });
            self.criteria += 1;
            &mut self.query
        }

        /// `column` (a trusted SQL expression) matches every operator of `filter`.
        pub fn text(&mut self, column: &str, filter: Option<&TextFilter>) -> &mut Self {
            let Some(f) = filter else { return self };
            if let Some(any) = &f.any_ {
                self.and()
                    .push(column)
                    .push(" = ANY(")
                    .push_bind(any.clone())
                    .push(")");
            }
            if let Some(eq) = &f.eq_ {
                self.and().push(column).push(" = ").push_bind(eq.clone());
            }
            if let Some(like) = &f.like_ {
                self.and()
                    .push(column)
                    .push(" ILIKE ")
                    .push_bind(contains_pattern(like));
            }
            self.null(column, f.is_null_)
        }

        /// `column` is one of the ids of `filter`.
        pub fn ids(&mut self, column: &str, filter: Option<&IdFilter>) -> &mut Self {
            if let Some(any) = filter.and_then(|f| f.any_.clone()) {
                self.and().push(column).push(" = ANY(").push_bind(any).push(")");
            }
            self
        }

        /// `column` lies in the range of `filter`.
        pub fn time(&mut self, column: &str, filter: Option<&TimeFilter>) -> &mut Self {
            let Some(f) = filter else { return self };
            if let Some(before) = f.before_ {
                self.and().push(column).push(" <= ").push_bind(before);
            }
            if let Some(after) = f.after_ {
                self.and().push(column).push(" >= ").push_bind(after);
            }
            self.null(column, f.is_null_)
        }

        /// The `text[]` `column` carries the labels of `filter`.
        pub fn tags(&mut self, column: &str, filter: Option<&TagsFilter>) -> &mut Self {
            let Some(f) = filter else { return self };
            if let Some(any) = &f.any_ {
                self.and().push(column).push(" && ").push_bind(any.clone());
            }
            if let Some(all) = &f.all_ {
                self.and().push(column).push(" @> ").push_bind(all.clone());
            }
            if let Some(is_null) = f.is_null_ {
                let test = if is_null { " = '{}'" } else { " <> '{}'" };
                self.and().push(column).push(test);
            }
            self
        }

        /// `column` (a status) is one of `any`, and none of `not_any`.
        pub fn statuses(
            &mut self,
            column: &str,
            any: Option<Vec<String>>,
            not_any: Option<Vec<String>>,
        ) -> &mut Self {
            if let Some(any) = any {
                self.and().push(column).push(" = ANY(").push_bind(any).push(")");
            }
            if let Some(not_any) = not_any {
                self.and()
                    .push(column)
                    .push(" <> ALL(")
                    .push_bind(not_any)
                    .push(")");
            }
            self
        }

        fn null(&mut self, column: &str, is_null: Option<bool>) -> &mut Self {
            if let Some(is_null) = is_null {
                let test = if is_null { " IS NULL" } else { " IS NOT NULL" };
                self.and().push(column).push(test);
            }
            self
        }

        /// Ends the query with `order` (a trusted `ORDER BY …`) and the page `(limit, offset)`
        /// that [`paging`](super::paging) checked.
        pub fn page(&mut self, order: &str, (limit, offset): (i64, i64)) -> &mut Self {
            self.query
                .push(order)
                .push(" LIMIT ")
                .push_bind(limit)
                .push(" OFFSET ")
                .push_bind(offset);
            self
        }

        /// Only pipelines `pipelines p` that a scoped key's `scope` covers (every pipeline
        /// when it names none).
        pub fn in_scope(&mut self, scope: &KeyScope) -> &mut Self {
            if scope.limits_pipelines() {
                self.and()
                    .push("(p.id = ANY(")
                    .push_bind(scope.pipeline_ids.clone())
                    .push(") OR p.slug = ANY(")
                    .push_bind(scope.slugs.clone())
                    .push(") OR p.tags && ")
                    .push_bind(scope.tags.clone())
                    .push(")");
            }
            self
        }

        /// Adds a criterion written by the caller (trusted SQL, no input in it).
        pub fn raw(&mut self, condition: &str) -> &mut Self {
            self.and().push(condition);
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_has_defaults_and_bounds() {
        assert_eq!(paging(None, None), Ok((DEFAULT_LIMIT, 0)));
        assert_eq!(paging(Some(MAX_LIMIT), Some(10)), Ok((MAX_LIMIT, 10)));
        assert!(matches!(paging(Some(0), None), Err(AppError::Invalid { field, .. }) if field == "limit"));
        assert!(
            matches!(paging(Some(MAX_LIMIT + 1), None), Err(AppError::Invalid { field, .. }) if field == "limit")
        );
        assert!(matches!(paging(None, Some(-1)), Err(AppError::Invalid { field, .. }) if field == "offset"));
    }

    #[test]
    fn like_patterns_take_wildcards_literally() {
        assert_eq!(contains_pattern("etl"), "%etl%");
        assert_eq!(contains_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
    }

    #[test]
    fn filters_are_objects_never_arrays() {
        #[derive(Debug, Deserialize)]
        struct Body {
            #[serde(default, deserialize_with = "optional_object")]
            name: Option<TextFilter>,
        }
        assert!(serde_json::from_str::<Body>(r#"{"name": {"eq_": "a"}}"#).is_ok());
        assert!(serde_json::from_str::<Body>(r#"{"name": null}"#).is_ok_and(|b| b.name.is_none()));
        assert!(serde_json::from_str::<Body>(r#"{"name": [null, null, null, null]}"#).is_err());
        assert!(
            serde_json::from_str::<TextFilter>(r#"[null, null, null, null]"#).is_ok(),
            "what serde's derive alone allows"
        );
    }

    #[test]
    fn unknown_operators_are_refused() {
        assert!(serde_json::from_str::<TextFilter>(r#"{"any_": ["a"], "like_": "b"}"#).is_ok());
        assert!(serde_json::from_str::<TextFilter>(r#"{"startswith_": "a"}"#).is_err());
        assert!(serde_json::from_str::<TimeFilter>(r#"{"before_": "not a time"}"#).is_err());
    }

    #[cfg(feature = "ssr")]
    #[test]
    fn criteria_are_anded_and_values_bound() {
        let mut w = Where::new("SELECT * FROM t");
        w.text(
            "name",
            Some(&TextFilter {
                any_: Some(vec!["a'; DROP TABLE t; --".into()]),
                like_: Some("x".into()),
                ..TextFilter::default()
            }),
        )
        .time(
            "at",
            Some(&TimeFilter {
                is_null_: Some(false),
                ..TimeFilter::default()
            }),
        )
        .ids("id", None);
        assert_eq!(
            w.query.sql(),
            "SELECT * FROM t WHERE name = ANY($1) AND name ILIKE $2 AND at IS NOT NULL"
        );
    }
}
