//! The REST toolkit every capability's handlers use.
//!
//! Extractors that answer in the one error shape, the error answers for the document,
//! input rules, and kept answers (served compressed from their kept forms).

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts};
use serde::de::DeserializeOwned;

use crate::error::AppError;

pub mod cache;
pub mod encoding;
pub mod responses;
pub mod rules;

/// Largest JSON body the API reads.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A JSON body whose errors name the offending field (`422 {"field": "stages.2"}`).
pub struct ApiJson<T>(pub T);

fn path_of(path: &serde_path_to_error::Path) -> String {
    let text = path.to_string();
    if text == "." || text.is_empty() {
        "body".to_owned()
    } else {
        text
    }
}

fn is_json(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim();
            mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
        })
}

async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<axum::body::Bytes, AppError> {
    axum::body::Bytes::from_request(req, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                AppError::TooLarge {
                    limit: MAX_BODY_BYTES,
                }
            } else {
                AppError::invalid("body", rejection.body_text())
            }
        })
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        let json = is_json(&req);
        let bytes = body_bytes(req, state).await?;
        if !json {
            return Err(AppError::UnsupportedMediaType);
        }
        Self::parse(&bytes)
    }
}

/// The largest magnitude a number may have: `PostgreSQL` keeps numbers exactly, and one
/// near the limit of a double would not read back.
const MAX_NUMBER: f64 = 1e300;

/// Readies a parsed body in one walk: numbers written with a zero fraction (`2.0`) become
/// integers, as JSON Schema counts them; a string or key holding U+0000, or a number beyond
/// [`MAX_NUMBER`], which `PostgreSQL` could not store and give back, is refused with the
/// segments of its path, innermost first (keys escaped and led by a dot).
fn normalize(value: &mut serde_json::Value) -> Result<(), Vec<String>> {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains('\0') => Err(Vec::new()),
        Value::Number(n) => {
            let Some(f) = n.as_f64() else { return Ok(()) };
            if f.abs() > MAX_NUMBER {
                return Err(Vec::new());
            }
            // Whole: its fraction is zero or, where a double's last place is itself a large
            // fraction (from about 1e15), within that last place of a whole number: a
            // whole number written with `.0` that large may parse a last place away.
            let whole = f.round();
            let last_place = f64::EPSILON * f.abs();
            if !n.is_i64() && !n.is_u64() && f.abs() < 9.0e15 && (f - whole).abs() <= last_place {
                #[expect(clippy::cast_possible_truncation, reason = "whole and within ±9e15")]
                let whole = whole as i64;
                *value = Value::from(whole);
            }
            Ok(())
        }
        Value::Array(items) => items.iter_mut().enumerate().try_for_each(|(i, item)| {
            normalize(item).map_err(|mut path| {
                path.push(format!("[{i}]"));
                path
            })
        }),
        Value::Object(fields) => fields.iter_mut().try_for_each(|(key, field)| {
            let segment = || format!(".{}", key.escape_default());
            if key.contains('\0') {
                return Err(vec![segment()]);
            }
            normalize(field).map_err(|mut path| {
                path.push(segment());
                path
            })
        }),
        _ => Ok(()),
    }
}

impl<T: DeserializeOwned> ApiJson<T> {
    /// Parses `bytes`, naming the offending field when that fails.
    fn parse(bytes: &[u8]) -> Result<Self, AppError> {
        let mut value: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| AppError::invalid("body", format!("is not valid JSON: {e}")))?;
        if !value.is_object() {
            return Err(AppError::invalid("body", "must be a JSON object"));
        }
        normalize(&mut value).map_err(|segments| {
            let path: String = segments.into_iter().rev().collect();
            AppError::invalid(
                path.strip_prefix('.').unwrap_or(&path),
                "holds U+0000 or a number beyond ±1e300, which cannot be stored",
            )
        })?;
        let value = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = path_of(e.path());
            let message = e.into_inner().to_string();
            // serde reports a missing field at its parent; name the field itself.
            match message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next())
            {
                Some(missing) if path == "body" => AppError::invalid(missing, "is required"),
                Some(missing) => AppError::invalid(format!("{path}.{missing}"), "is required"),
                None => AppError::invalid(path, message),
            }
        })?;
        Ok(ApiJson(value))
    }
}

/// A JSON body that may be absent altogether (the seed's trigger sends none).
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        let json = is_json(&req);
        let bytes = body_bytes(req, state).await?;
        // No body, or JSON `null`, asks for the defaults.
        let trimmed = bytes.trim_ascii();
        if trimmed.is_empty() || trimmed == b"null" {
            return Ok(OptionalJson(T::default()));
        }
        if !json {
            return Err(AppError::UnsupportedMediaType);
        }
        ApiJson::parse(&bytes).map(|ApiJson(v)| OptionalJson(v))
    }
}

/// Query parameters whose errors name the offending parameter.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, AppError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| AppError::invalid(path_of(e.path()), e.into_inner().to_string()))
    }
}

/// A numeric id in the path; anything else is an unknown id (404).
pub struct ApiId(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for ApiId {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        // No object has an id that is not a positive integer: such an id is not found.
        let axum::extract::Path(raw) = axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| AppError::not_found("Object with this id"))?;
        raw.parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .map(ApiId)
            .ok_or_else(|| AppError::not_found("Object with this id"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only the parse result matters here")]
    struct Sample {
        name: String,
        stages: Option<Vec<String>>,
    }

    fn field(bytes: &[u8]) -> String {
        match ApiJson::<Sample>::parse(bytes) {
            Err(AppError::Invalid { field, .. }) => field,
            other => panic!("expected invalid, got {:?}", other.map(|ApiJson(s)| s)),
        }
    }

    #[test]
    fn json_errors_name_the_field() {
        assert_eq!(field(br#"{"stages": ["a"]}"#), "name");
        assert_eq!(field(br#"{"name": 3}"#), "name");
        assert_eq!(field(br#"{"name": "x", "stages": ["a", 2]}"#), "stages[1]");
        assert_eq!(field(br#"{"name": "x", "colour": "red"}"#), "colour");
        assert_eq!(field(br#"{"name": "#), "body");
        assert!(ApiJson::<Sample>::parse(br#"{"name": "x"}"#).is_ok());
        assert_eq!(field(br#"[{"name": "x"}]"#), "body");
        assert_eq!(field(br#"{"name": "x", "stages": ["a\u0000"]}"#), "stages[0]");
    }

    #[test]
    fn whole_numbers_written_with_a_fraction_are_integers() {
        #[derive(Debug, serde::Deserialize)]
        struct Limits {
            n: i32,
        }
        assert_eq!(
            ApiJson::<Limits>::parse(br#"{"n": 2.0}"#)
                .map(|ApiJson(l)| l.n)
                .ok(),
            Some(2)
        );
        assert!(ApiJson::<Limits>::parse(br#"{"n": 2.5}"#).is_err());
        // A large whole number written with a fraction is taken as an integer, within one
        // of it: its double is that coarse (schemathesis sent this one, which parses as
        // ….5).
        #[derive(Debug, serde::Deserialize)]
        struct Big {
            n: i64,
        }
        let big = ApiJson::<Big>::parse(br#"{"n": 3699805513240670.0}"#).map(|ApiJson(b)| b.n);
        assert!(big.is_ok_and(|n| (n - 3_699_805_513_240_670).abs() <= 1));
        assert!(ApiJson::<Big>::parse(br#"{"n": 1000000.5}"#).is_err());
    }
}
