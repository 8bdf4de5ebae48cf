//! Who is calling: the [`Principal`] (role, credential kind), the facts of the request
//! ([`RequestMeta`]), both together as a [`Caller`], and the audit rows a caller writes.
//!
//! `auth::middleware::identify` establishes them once per request; every capability
//! reads them from here and never from `auth`.

use serde::{Deserialize, Serialize};

use crate::error::{AppError, Result};
pub use scope::{Action, Budget, BudgetUse, KeyScope};

#[cfg(feature = "ssr")]
mod meta;
#[cfg(feature = "ssr")]
pub mod record;
pub mod scope;
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
    /// What a scoped key (or a session opened with one) is limited to.
    #[serde(default)]
    pub scope: KeyScope,
    /// What the key may spend.
    #[serde(default)]
    pub budget: Budget,
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
    ///
    /// A scoped key reads only when its scope allows `read`, does what operators do only
    /// through [`Principal::may`], and nothing that needs the admin role.
    pub fn require(&self, needed: Role) -> Result<()> {
        if self.role < needed || self.run_scope.is_some() {
            return Err(AppError::Forbidden {
                needed: needed.as_str().to_owned(),
            });
        }
        match needed {
            _ if !self.scope.limits() => Ok(()),
            Role::Viewer => self.may(Action::Read),
            Role::Operator if self.scope.actions.is_none() => Ok(()),
            _ => Err(AppError::OutOfScope {
                action: format!("{needed} operations"),
            }),
        }
    }

    /// Fails unless the principal's role and its key's scope allow `action`.
    pub fn may(&self, action: Action) -> Result<()> {
        if self.role < action.role() || self.run_scope.is_some() {
            return Err(AppError::Forbidden {
                needed: action.role().as_str().to_owned(),
            });
        }
        if !self.scope.allows(action) {
            return Err(AppError::OutOfScope {
                action: action.as_str().to_owned(),
            });
        }
        Ok(())
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
            None => self.may(Action::Report),
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
            scope: KeyScope::default(),
            budget: Budget::default(),
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
            scope: KeyScope::default(),
            budget: Budget::default(),
        };
        assert_eq!(flow.may_report_on(7), Ok(()));
        assert!(flow.may_report_on(8).is_err());
        assert!(flow.require(Role::Viewer).is_err());
    }

    #[test]
    fn a_scoped_key_does_only_what_its_scope_lists_within_its_role() {
        let agent = Principal {
            actor: "api-key:agent".into(),
            role: Role::Operator,
            via: AuthMethod::ApiKey,
            run_scope: None,
            key_id: Some(3),
            scope: KeyScope {
                tags: vec!["marketing".into()],
                actions: Some(vec![Action::Read, Action::Trigger]),
                ..KeyScope::default()
            },
            budget: Budget::default(),
        };
        assert_eq!(agent.require(Role::Viewer), Ok(()));
        assert_eq!(agent.may(Action::Trigger), Ok(()));
        assert!(matches!(
            agent.may(Action::Cancel),
            Err(AppError::OutOfScope { .. })
        ));
        assert!(matches!(
            agent.require(Role::Admin),
            Err(AppError::Forbidden { .. })
        ));
        let scoped_admin = Principal {
            role: Role::Admin,
            ..agent.clone()
        };
        assert!(matches!(
            scoped_admin.require(Role::Admin),
            Err(AppError::OutOfScope { .. })
        ));
        let writer = Principal {
            scope: KeyScope {
                actions: Some(vec![Action::Trigger]),
                ..KeyScope::default()
            },
            ..agent
        };
        assert!(matches!(
            writer.require(Role::Viewer),
            Err(AppError::OutOfScope { .. })
        ));
    }

    #[test]
    fn role_parses_only_known_names() {
        assert_eq!("operator".parse::<Role>(), Ok(Role::Operator));
        assert!("root".parse::<Role>().is_err());
    }
}
