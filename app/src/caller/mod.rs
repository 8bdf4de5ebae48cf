//! Who is calling: the [`Principal`] (role, credential kind), the facts of the request
//! ([`RequestMeta`]), both together as a [`Caller`], and the audit rows a caller writes.
//!
//! `auth::middleware::identify` establishes them once per request; every capability
//! reads them from here and never from `auth`.

use serde::{Deserialize, Serialize};

use crate::error::{AppError, Result};

#[cfg(feature = "ssr")]
mod meta;
#[cfg(feature = "ssr")]
pub mod record;
#[cfg(feature = "ssr")]
pub use meta::{Caller, RequestMeta, current_principal, identified};

/// What a caller may do. Ordered: each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Hash)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// Also triggers, cancels and retries runs, and reports stage status.
    Operator,
    /// Also manages pipelines, keys and the audit trail.
    Admin,
}

impl Role {
    /// All roles, weakest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    /// The role's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = AppError;

    fn from_str(s: &str) -> Result<Self> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| AppError::invalid("role", "must be one of viewer, operator, admin"))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is calling, established once per request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// Stable, human-readable identity, e.g. `api-key:ci-bot`.
    pub actor: String,
    /// What the caller may do.
    pub role: Role,
    /// How the caller proved who it is.
    pub via: AuthMethod,
    /// A run's callback credential may only report on that run.
    #[serde(default)]
    pub run_scope: Option<i64>,
    /// The API key that authenticated the request, if one did.
    #[serde(default)]
    pub key_id: Option<i64>,
}

/// The kind of credential a [`Principal`] presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// `Authorization: Bearer <api key>`.
    ApiKey,
    /// The browser's session cookie.
    Session,
    /// A command run on the server itself (the CLI).
    Local,
    /// A flow's per-run callback credential.
    RunCallback,
    /// `Authorization: Bearer <JWT>` from the configured OpenID Connect issuer.
    Oidc,
    /// Identity headers set by the trusted identity-aware proxy.
    Proxy,
}

impl Principal {
    /// Fails with [`AppError::Forbidden`] unless the principal has at least `needed`.
    ///
    /// A run's callback credential passes no role check: it may only report on its run
    /// (see [`Principal::may_report_on`]).
    pub fn require(&self, needed: Role) -> Result<()> {
        if self.role >= needed && self.run_scope.is_none() {
            Ok(())
        } else {
            Err(AppError::Forbidden {
                needed: needed.as_str().to_owned(),
            })
        }
    }
}

impl Principal {
    /// Whether the caller may report stage and run status of `run_id`: operators for any
    /// run, a callback credential for its own run only.
    pub fn may_report_on(&self, run_id: i64) -> Result<()> {
        match self.run_scope {
            Some(scope) if scope == run_id => Ok(()),
            Some(_) => Err(AppError::Forbidden {
                needed: "a credential for this run".into(),
            }),
            None => self.require(Role::Operator),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_from_viewer_to_admin() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
    }

    #[test]
    fn require_refuses_a_weaker_role_and_names_the_needed_one() {
        let viewer = Principal {
            actor: "t".into(),
            role: Role::Viewer,
            via: AuthMethod::ApiKey,
            run_scope: None,
            key_id: None,
        };
        assert_eq!(viewer.require(Role::Viewer), Ok(()));
        assert_eq!(
            viewer.require(Role::Operator),
            Err(AppError::Forbidden {
                needed: "operator".into()
            })
        );
    }

    #[test]
    fn a_callback_credential_reports_on_its_run_and_does_nothing_else() {
        let flow = Principal {
            actor: "run:7".into(),
            role: Role::Operator,
            via: AuthMethod::RunCallback,
            run_scope: Some(7),
            key_id: None,
        };
        assert_eq!(flow.may_report_on(7), Ok(()));
        assert!(flow.may_report_on(8).is_err());
        assert!(flow.require(Role::Viewer).is_err());
    }

    #[test]
    fn role_parses_only_known_names() {
        assert_eq!("operator".parse::<Role>(), Ok(Role::Operator));
        assert!("root".parse::<Role>().is_err());
    }
}
