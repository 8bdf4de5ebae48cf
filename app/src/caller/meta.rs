//! The request's facts and the caller as handlers and server functions read them.

use std::net::IpAddr;

use axum::extract::Request;
use leptos::prelude::use_context;

use super::Principal;
use crate::client_addr::ClientAddr;
use crate::error::{AppError, Result};
use crate::telemetry::{RequestIds, TraceParent, new_request_id};

/// Facts about the request kept for audit and tracing.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    /// The caller's `X-Request-ID` when it is sane, else one generated here.
    pub request_id: String,
    /// The trace the request runs in, with its span as parent (what Prefect is given).
    pub traceparent: Option<TraceParent>,
    /// The client address as text (audit's `source_addr`), when the server knows it.
    pub source_addr: Option<String>,
    /// The client address: the peer, or behind trusted proxies the one they forwarded.
    client: Option<IpAddr>,
    /// The connection's own peer (the identity-aware proxy's headers are believed from it).
    peer: Option<IpAddr>,
}

impl RequestMeta {
    /// The facts `telemetry::http::observe`, the outermost layer, put in the request.
    pub fn from_request(req: &Request) -> Self {
        let ids = req.extensions().get::<RequestIds>();
        let addr = req.extensions().get::<ClientAddr>().copied();
        Self {
            request_id: ids.map_or_else(new_request_id, |ids| ids.request_id.clone()),
            traceparent: ids.map(|ids| ids.traceparent),
            source_addr: addr.map(|a| a.client.to_string()),
            client: addr.map(|a| a.client),
            peer: addr.map(|a| a.peer),
        }
    }

    /// The facts of a command run on the server itself (the CLI).
    pub fn local() -> Self {
        Self {
            request_id: new_request_id(),
            source_addr: Some("local".to_owned()),
            ..Self::default()
        }
    }

    /// The facts of the request being served by a server function.
    pub fn current() -> Self {
        use_context::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<RequestMeta>().cloned())
            .unwrap_or_default()
    }

    /// The client address, when the server knows it.
    pub fn client(&self) -> Option<IpAddr> {
        self.client
    }

    /// The connection's own peer, when the server knows it.
    pub fn peer(&self) -> Option<IpAddr> {
        self.peer
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestMeta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<RequestMeta>().cloned().unwrap_or_default())
    }
}

/// What `auth::middleware::identify` put in the request for an authenticated caller; 401
/// without one.
pub fn identified<T: Clone + Send + Sync + 'static>(parts: &http::request::Parts) -> Result<T, AppError> {
    parts.extensions.get::<T>().cloned().ok_or(AppError::Unauthorized)
}

/// Handlers take the caller as an extractor; without an identity the answer is 401.
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Principal {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut http::request::Parts, _: &S) -> Result<Self, AppError> {
        identified(parts)
    }
}

/// The principal of the request being served (server functions and SSR).
pub fn current_principal() -> Result<Principal> {
    use_context::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Principal>().cloned())
        .ok_or(AppError::Unauthorized)
}

/// Who is calling and the facts of their request, read once: what every service takes.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who is calling.
    pub principal: Principal,
    /// The request's ids and client address.
    pub meta: RequestMeta,
}

/// A caller is its principal, with the facts of its request at hand (`caller.meta`).
impl std::ops::Deref for Caller {
    type Target = Principal;

    fn deref(&self) -> &Principal {
        &self.principal
    }
}

impl Caller {
    /// A command run on the server itself (the CLI) as `principal`.
    pub fn local(principal: Principal) -> Self {
        Self {
            principal,
            meta: RequestMeta::local(),
        }
    }

    /// The caller of the request being served by a server function; 401 without one.
    pub fn current() -> Result<Self> {
        Ok(Self {
            principal: current_principal()?,
            meta: RequestMeta::current(),
        })
    }
}

/// REST handlers take the caller as an extractor; without an identity the answer is 401.
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut http::request::Parts, _: &S) -> Result<Self, AppError> {
        Ok(Self {
            principal: identified(parts)?,
            meta: parts.extensions.get::<RequestMeta>().cloned().unwrap_or_default(),
        })
    }
}
