//! The identity middleware: who is calling and what they may reach, for every request.
//!
//! A refused credential counts against its client address's rate limit and is written to
//! the audit trail, at most one row per address a minute.

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use sqlx::PgPool;

use super::Identity;
use super::credentials::authenticate;
use super::headers::{Provenance, forgery_checked, provenance};
use super::limits::{Limits, write_refusals};
use crate::caller::record::{self, Outcome};
use crate::caller::{AuthMethod, Principal, RequestMeta};
use crate::error::AppError;

/// Paths anyone may reach: health, the sign-in page and its server function, static files.
fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/api/health"
            | "/api/ready"
            | "/api/openapi.json"
            | "/api/openapi-3.0.json"
            | "/login"
            | "/sfn/sign_in"
            | "/auth/oidc/login"
            | "/auth/oidc/callback"
            | "/favicon.ico"
            | "/favicon.svg"
    ) || path.starts_with("/pkg/")
        || path == "/api/docs"
        || path.starts_with("/api/docs/")
}

/// Paths answered with a JSON 401 rather than a redirect to the sign-in page.
fn is_machine_path(path: &str) -> bool {
    path == "/api" || path == "/metrics" || path.starts_with("/api/") || path.starts_with("/sfn/")
}

/// Establishes the caller's identity once per request and turns away those without one.
///
/// API and server-function paths answer 401 in the JSON error shape; pages redirect to the
/// sign-in page, keeping where the user wanted to go. A credential that verifies is
/// accepted whatever the address did before; a refused one counts against the address's
/// budget of failures (429 once spent) and in the collapsed refusal tally of the audit trail.
pub async fn identify(State(identity): State<Identity>, mut req: Request, next: Next) -> Response {
    let meta = RequestMeta::from_request(&req);
    let path = req.uri().path().to_owned();
    let outcome = authenticate(&identity, req.headers(), &meta).await;
    // Signing someone in from another site (login CSRF) is refused like any forgery.
    let login_forgery = *req.method() == Method::POST
        && matches!(path.as_str(), "/sfn/sign_in" | "/auth/oidc/login")
        && provenance(req.headers()) == Provenance::CrossSite;
    let refusal = match outcome {
        _ if login_forgery => Some(cross_site_refusal()),
        Ok(Some((principal, presented))) => {
            // Browsers carry sessions and proxy identities by themselves: forgeable.
            let via_browser = matches!(principal.via, AuthMethod::Session | AuthMethod::Proxy);
            let unsafe_method = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
            let forged =
                via_browser && unsafe_method && !forgery_checked(req.headers(), identity.secure_cookies);
            req.extensions_mut().insert(principal);
            req.extensions_mut().insert(presented);
            forged.then(cross_site_refusal)
        }
        _ if is_public(&path) => None,
        Ok(None) if !is_machine_path(&path) => {
            let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
            let next = form_urlencoded_component(target);
            Some(Redirect::to(&format!("/login?next={next}")).into_response())
        }
        Ok(None) => Some(AppError::Unauthorized.into_response()),
        Err(AppError::Unauthorized) => {
            let target = format!("{} {path}", req.method());
            Some(
                refuse(&identity.db, &identity.limits, &meta, &target)
                    .await
                    .into_response(),
            )
        }
        Err(error) => Some(error.into_response()),
    };
    let caller = req.extensions().get::<Principal>().cloned();
    let method = req.method().clone();
    let response = match refusal {
        Some(response) => response,
        None => {
            req.extensions_mut().insert(meta.clone());
            next.run(req).await
        }
    };
    // A known caller refused for its role, or for a cross-site request, is audited here,
    // once, whichever route refused it.
    if response.status() == http::StatusCode::FORBIDDEN
        && let Some(caller) = caller
    {
        let target = super::limits::cut_target(&format!("{method} {path}"));
        let audit = record::append(
            &identity.db,
            &caller.actor,
            Some(caller.role.as_str()),
            "auth.forbidden",
            Some(&target),
            Outcome::Denied,
            &meta,
        );
        if let Err(e) = audit.await {
            tracing::error!(error = %e, "could not record a refused request");
        }
    }
    response
}

/// Refuses a credential: counts it against the client's budget and in the refusal tally,
/// and answers 401, or 429 once the budget is spent.
pub async fn refuse(db: &PgPool, limits: &Limits, meta: &RequestMeta, target: &str) -> AppError {
    if let Some(row) = limits.refused(meta.client(), target) {
        write_refusals(db, &[row], Some(&meta.request_id)).await;
    }
    limits
        .failed(meta.client())
        .err()
        .unwrap_or(AppError::Unauthorized)
}

fn cross_site_refusal() -> Response {
    AppError::Forbidden {
        needed: "same-origin request".into(),
    }
    .into_response()
}

fn form_urlencoded_component(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_redirect_target_is_escaped() {
        assert_eq!(form_urlencoded_component("/runs/1?x=a b"), "/runs/1%3Fx%3Da%20b");
    }
}
