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
pub mod auth;
pub mod error;
pub mod gc_job;
pub mod jobs;
pub mod metrics;
pub mod routes;
pub mod state;

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
        routes::jobs::start,
        routes::jobs::list,
        routes::jobs::status,
        routes::jobs::cancel,
    ),
    modifiers(&Security)
)]
struct ApiDoc;

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
        .merge(routes::jobs::router())
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
