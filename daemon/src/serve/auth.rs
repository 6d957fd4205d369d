//! Bearer-token authorization.
//!
//! Tokens are never stored: the configuration holds the lowercase hex SHA-256 of each
//! token with its scope (`read` < `write` < `admin`, each implying the ones before) and
//! the datasets it may touch (all, or a list of names). A request presents
//! `Authorization: Bearer TOKEN`; its hash is looked up. With no tokens configured
//! every request acts as admin, which `serve` allows only on a loopback address.
//!
//! Route scopes: reads of datasets, samples, history and queries need `read`; writes
//! inside a dataset (tensors, appends, commits, branches, tags, merges, views) need `write`;
//! creating and deleting datasets and `/metrics` need `admin`.

use std::collections::HashMap;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::state::AppState;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
    Admin,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

/// One configured token, as it appears in the config file or `DEEPLAKE_TOKENS`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Lowercase hex SHA-256 of the token (`deeplake token hash` prints it).
    pub sha256: String,
    pub scope: Scope,
    /// Dataset names the token may touch; absent means all.
    #[serde(default)]
    pub datasets: Option<Vec<String>>,
    /// A label for logs; never the token.
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Grant {
    pub scope: Scope,
    pub datasets: Option<Vec<String>>,
    pub name: String,
}

/// The configured tokens, by hash.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    by_hash: HashMap<String, Grant>,
}

impl Tokens {
    pub fn new(tokens: Vec<TokenConfig>) -> anyhow::Result<Tokens> {
        let mut by_hash = HashMap::new();
        for (k, t) in tokens.into_iter().enumerate() {
            let h = t.sha256.to_ascii_lowercase();
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                anyhow::bail!("token {k}: sha256 must be 64 hex characters");
            }
            let grant = Grant {
                scope: t.scope,
                datasets: t.datasets,
                name: t.name.unwrap_or_else(|| format!("token{k}")),
            };
            if by_hash.insert(h, grant).is_some() {
                anyhow::bail!("token {k}: the same hash is configured twice");
            }
        }
        Ok(Tokens { by_hash })
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    fn lookup(&self, token: &str) -> Option<&Grant> {
        self.by_hash.get(&hash_token(token))
    }
}

/// The hex SHA-256 of a token, as the configuration stores it.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Who is calling: the grant of their token, or everything when no tokens are set.
#[derive(Clone, Debug)]
pub struct Caller {
    grant: Option<Grant>,
}

impl Caller {
    /// Fails unless the caller holds `scope` on `dataset` (or on every dataset when
    /// `dataset` is `None`).
    pub fn require(&self, scope: Scope, dataset: Option<&str>) -> Result<(), ApiError> {
        let Some(g) = &self.grant else {
            return Ok(());
        };
        if g.scope < scope {
            return Err(ApiError::forbidden(format!(
                "this token has scope {}; the request needs {}",
                g.scope.as_str(),
                scope.as_str()
            )));
        }
        match (&g.datasets, dataset) {
            (None, _) => Ok(()),
            (Some(list), Some(d)) if list.iter().any(|x| x == d) => Ok(()),
            (Some(_), _) => Err(ApiError::forbidden(
                "this token is not granted this dataset",
            )),
        }
    }

    /// Whether the caller may see `dataset` at all (for listings).
    pub fn may_see(&self, dataset: &str) -> bool {
        self.require(Scope::Read, Some(dataset)).is_ok()
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let tokens = &state.inner.tokens;
        if tokens.is_empty() {
            return Ok(Caller { grant: None });
        }
        let Some(value) = parts.headers.get(AUTHORIZATION) else {
            return Err(ApiError::unauthorized("missing bearer token"));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header is not a bearer token")
            })?;
        match tokens.lookup(token) {
            Some(g) => {
                tracing::debug!(token = %g.name, "authorized");
                Ok(Caller {
                    grant: Some(g.clone()),
                })
            }
            None => Err(ApiError::unauthorized("unknown token")),
        }
    }
}
