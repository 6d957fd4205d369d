//! `deeplake serve`: an HTTP API over every dataset under one storage root.
//!
//! ```text
//! request -> metrics -> trace -> timeout -> concurrency limit -> body limit
//!         -> route (routes/*) -> Caller (auth.rs) -> handler -> core
//!                                              errors -> ApiError (error.rs)
//! ```
//! Startup reads the config (a JSON file and/or `DEEPLAKE_TOKENS`), refuses a
//! non-loopback bind when no token is configured, binds, prints the API address, and
//! serves until SIGINT or SIGTERM, letting requests in flight finish and giving
//! background jobs (`jobs`) a grace period before cancelling them.

pub mod arrow;
pub mod arrow_stream;
pub mod auth;
pub mod error;
pub mod gc_job;
pub mod jobs;
pub mod materialize_job;
pub mod metrics;
pub mod routes;
pub mod state;
pub mod transform_job;

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::error_handling::HandleErrorLayer;
use serde::Deserialize;
use tower::ServiceBuilder;
use utoipa::OpenApi;

pub use state::AppState;

/// Request body limit by default (bytes).
pub const DEFAULT_BODY_LIMIT: usize = 16 << 20;
/// Request timeout by default (seconds).
pub const DEFAULT_TIMEOUT_S: u64 = 60;
/// Requests served at once by default.
pub const DEFAULT_CONCURRENCY: usize = 256;
/// How long shutdown waits for running jobs by default (seconds) before cancelling them.
pub const DEFAULT_SHUTDOWN_GRACE_S: u64 = 30;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Storage root: a local folder or s3://bucket/prefix; each dataset is a folder in it.
    #[arg(long)]
    pub root: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub bind: SocketAddr,
    /// JSON config file: {"tokens": [...], "limits": {...}, "storage_options": {...},
    /// "cache_bytes": N}.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Bytes of decoded chunks kept in memory for all datasets together (overrides the
    /// config's `cache_bytes`; default 256 MiB).
    #[arg(long)]
    pub cache_bytes: Option<usize>,
    #[command(flatten)]
    pub storage: crate::cli::StorageArgs,
}

/// Limits applied to every request.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub body_bytes: usize,
    pub timeout_s: u64,
    pub concurrency: usize,
    /// Seconds shutdown waits for running jobs before cancelling them.
    pub shutdown_grace_s: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes: DEFAULT_BODY_LIMIT,
            timeout_s: DEFAULT_TIMEOUT_S,
            concurrency: DEFAULT_CONCURRENCY,
            shutdown_grace_s: DEFAULT_SHUTDOWN_GRACE_S,
        }
    }
}

/// The config file's shape.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub tokens: Vec<auth::TokenConfig>,
    pub limits: Limits,
    pub storage_options: std::collections::BTreeMap<String, String>,
    /// The chunk cache's budget in bytes (default 256 MiB).
    pub cache_bytes: Option<usize>,
    /// Secrets of link creds keys by name: `{"name": {"aws_secret_access_key": ...}}`
    /// (core's `LinkCreds`); `DEEPLAKE_LINK_CREDS[_FILE]` add to them and win on a name.
    pub link_creds: LinkCredsConfig,
    /// Link target fetches in flight at once, for all requests together (default 32).
    pub link_concurrency: Option<usize>,
}

/// Link creds as the config file gives them; never shown (`Debug` names keys only).
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct LinkCredsConfig(
    std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
);

impl std::fmt::Debug for LinkCredsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.keys().map(|k| format!("{k}=<redacted>")))
            .finish()
    }
}

impl Config {
    /// The linker of every dataset the daemon serves: config creds, then the environment's.
    pub fn linker(&self) -> anyhow::Result<deeplake_core::link::Linker> {
        let mut creds = deeplake_core::link::LinkCreds::default();
        for (name, set) in &self.link_creds.0 {
            creds.insert(name.clone(), set.clone());
        }
        let env = deeplake_core::link::LinkCreds::from_env()?;
        for name in env.names() {
            if let Some(set) = env.get(name) {
                creds.insert(name, set.clone());
            }
        }
        let defaults = deeplake_core::link::LinkOptions::default();
        Ok(deeplake_core::link::Linker::new(
            deeplake_core::link::LinkOptions {
                concurrency: self.link_concurrency.unwrap_or(defaults.concurrency),
                creds,
                ..defaults
            },
        )?)
    }
}

impl Config {
    /// Reads `path` (if any), then adds the tokens of `DEEPLAKE_TOKENS` (a JSON array
    /// of token entries).
    pub fn load(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
        let mut c = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading config {}", p.display()))?;
                serde_json::from_str(&text)
                    .with_context(|| format!("parsing config {}", p.display()))?
            }
            None => Config::default(),
        };
        if let Ok(env) = std::env::var("DEEPLAKE_TOKENS") {
            let more: Vec<auth::TokenConfig> =
                serde_json::from_str(&env).context("parsing DEEPLAKE_TOKENS")?;
            c.tokens.extend(more);
        }
        Ok(c)
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "deeplake", description = "HTTP API over the Deep Lake datasets under one storage root."),
    paths(
        routes::system::healthz,
        routes::system::metrics,
        routes::system::openapi,
        routes::datasets::list,
        routes::datasets::create,
        routes::datasets::info,
        routes::datasets::delete,
        routes::datasets::create_tensor,
        routes::datasets::tensor_info,
        routes::datasets::delete_tensor,
        routes::samples::one,
        routes::samples::slice,
        routes::append::append,
        routes::versions::log,
        routes::versions::commit,
        routes::versions::branches,
        routes::versions::create_branch,
        routes::versions::tags,
        routes::versions::create_tag,
        routes::versions::diff,
        routes::versions::merge,
        routes::query::run,
        routes::query::page,
        routes::query::save_view,
        routes::query::list_views,
        routes::query::load_view,
        routes::query::delete_view,
        routes::stream::stream,
        routes::jobs::start,
        routes::jobs::list,
        routes::jobs::status,
        routes::jobs::cancel,
        routes::transforms::begin,
        routes::transforms::part,
        routes::transforms::commit,
        routes::transforms::abort,
    ),
    modifiers(&Security, &CommonResponses)
)]
struct ApiDoc;

/// Routes that need no token.
const OPEN_ROUTES: [&str; 2] = ["/healthz", "/openapi.json"];

/// The responses that layers and extractors give any route, so that the document
/// lists every status a client can get (the handlers' annotations list their own):
/// 400 (a path, query or body that does not parse), 408 (the timeout layer), 401 and
/// 403 (a route that needs a token), 404 (a route naming a resource), 409 (a route
/// that writes: another writer may hold the dataset), 413 (a route with a body), 422
/// (a dataset using something core does not support), 503 (a route under `/datasets`:
/// the storage backend failed, retry after `Retry-After`). It also marks the open routes
/// as needing no token and spells the dataset-name rule into every `name` path
/// parameter.
struct CommonResponses;

impl utoipa::Modify for CommonResponses {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |what: &str| {
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        let name_schema = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(state::DATASET_NAME_PATTERN))
            .min_length(Some(1))
            .max_length(Some(128))
            .build();
        for (path, item) in api.paths.paths.iter_mut() {
            let open = OPEN_ROUTES.contains(&path.as_str());
            let names_resource = path.contains('{');
            let in_dataset = path.starts_with("/datasets/{name}");
            let ops = [
                (&mut item.get, false),
                (&mut item.post, true),
                (&mut item.put, true),
                (&mut item.delete, true),
                (&mut item.patch, true),
            ];
            for (op, writes) in ops {
                let Some(op) = op.as_mut() else { continue };
                let mut add = |code: &str, what: &str| {
                    op.responses
                        .responses
                        .entry(code.to_owned())
                        .or_insert_with(|| error(what).into());
                };
                add("400", "bad input");
                add("408", "the request took too long");
                if open {
                    continue;
                }
                add("401", "no token, or an unknown one");
                add("403", "the token's scope or datasets do not cover this");
                if names_resource {
                    add("404", "not found");
                }
                let reads_only = path.ends_with("/query") || path.starts_with("/jobs");
                if in_dataset && writes && !reads_only {
                    add("409", "conflict with the dataset's state or another writer");
                }
                if op.request_body.is_some() {
                    add("413", "the body is too large");
                }
                if in_dataset {
                    add("422", "the dataset uses something not supported");
                }
                if path.starts_with("/datasets") {
                    add(
                        "503",
                        "the storage backend failed; retry after the Retry-After seconds",
                    );
                }
                for p in op.parameters.iter_mut().flatten() {
                    if p.name == "name"
                        && matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Path)
                        && in_dataset
                    {
                        p.schema = Some(name_schema.clone().into());
                    }
                }
            }
        }
        for path in OPEN_ROUTES {
            if let Some(op) = api.paths.paths.get_mut(path).and_then(|i| i.get.as_mut()) {
                op.security = Some(Vec::new());
            }
        }
    }
}

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        api.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    }
}

/// The OpenAPI 3 document of this API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    // The crate version would make the committed document change on every release.
    doc.info.version = "1".to_owned();
    doc
}

/// The whole application: routes, then the tower layers of the module docs.
pub fn router(state: AppState, limits: &Limits) -> Router {
    let layers = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(error::layer_error))
        .timeout(Duration::from_secs(limits.timeout_s))
        .concurrency_limit(limits.concurrency.max(1));
    Router::new()
        .merge(routes::system::router())
        .merge(routes::datasets::router())
        .merge(routes::samples::router())
        .merge(routes::append::router())
        .merge(routes::versions::router())
        .merge(routes::query::router())
        .merge(routes::stream::router())
        .merge(routes::jobs::router())
        .merge(routes::viz::router())
        .merge(routes::transforms::router())
        .fallback(|| async { error::ApiError::not_found("no such route") })
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            limits.body_bytes,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(limits.body_bytes))
        .layer(layers)
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
}

/// Refuses to serve without tokens anywhere but on loopback.
pub fn check_bind(addr: &SocketAddr, tokens: &auth::Tokens) -> anyhow::Result<()> {
    if tokens.is_empty() && !addr.ip().is_loopback() {
        anyhow::bail!(
            "no tokens are configured: serving without auth is allowed on a loopback address only (got {addr}); configure tokens (--config or DEEPLAKE_TOKENS) or bind to 127.0.0.1"
        );
    }
    Ok(())
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

pub async fn run(a: &ServeArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let config = Config::load(a.config.as_deref())?;
    let tokens = auth::Tokens::new(config.tokens.clone())?;
    check_bind(&a.bind, &tokens)?;
    let mut storage = a.storage.open_options()?.storage;
    for (k, v) in &config.storage_options {
        storage = storage.with(k.clone(), v.clone());
    }
    let cache_bytes = a
        .cache_bytes
        .or(config.cache_bytes)
        .unwrap_or(deeplake_core::dataset::DEFAULT_CACHE_BYTES);
    let cache = std::sync::Arc::new(deeplake_core::dataset::ChunkCache::new(cache_bytes));
    let state = AppState::with_cache(&a.root, storage, tokens, cache);
    state.set_linker(config.linker()?);
    let listener = tokio::net::TcpListener::bind(a.bind)
        .await
        .with_context(|| format!("binding {}", a.bind))?;
    let addr = listener.local_addr()?;
    writeln!(out, "serving {} at http://{addr}", a.root)?;
    writeln!(out, "API document: http://{addr}/openapi.json")?;
    out.flush()?;
    serve(listener, state, &config.limits, shutdown_signal()).await
}

/// Serves on `listener` until `stop` resolves, then shuts down in order: stop
/// accepting, finish the requests in flight, wait for running jobs up to
/// `limits.shutdown_grace_s`, cancel the ones left and wait for them to stop.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    limits: &Limits,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = router(state.clone(), limits);
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await?;
    let left = state
        .jobs()
        .shutdown(Duration::from_secs(limits.shutdown_grace_s))
        .await;
    if left > 0 {
        tracing::warn!(
            jobs = left,
            "stopping with jobs that did not stop when cancelled"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_creds_come_from_the_config_and_are_never_shown() {
        let c: Config = serde_json::from_str(
            r#"{"link_creds": {"archive": {"aws_secret_access_key": "hunter2"}}, "link_concurrency": 7}"#,
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("archive"),
            "{shown}"
        );
        let l = c.linker().unwrap();
        assert_eq!(l.options().concurrency, 7);
        assert_eq!(
            l.options().creds.get("archive").unwrap()["aws_secret_access_key"],
            "hunter2"
        );
        assert!(!format!("{l:?}").contains("hunter2"));
    }
}
