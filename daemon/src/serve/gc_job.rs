//! The `gc` job: core's garbage collection of one dataset (`core::dataset::gc`), plan
//! then apply, as `deeplake gc` runs it.
//!
//! Parameters: `delete` (default `false`: only list the garbage, as the CLI's dry run)
//! and `grace_s` (default 3600: objects younger than this are left alone). It needs
//! `admin` on the dataset: it deletes storage objects, and a short grace period can
//! break writers in flight in other processes.
//!
//! Cancelling stops it before planning, between plan and apply, or between deletes.
//! Plan and apply are idempotent (apply checks each key again), so a cancelled gc is
//! simply run again; its result says what it deleted before it stopped.

use std::time::Duration;

use deeplake_core::dataset::gc::{self, GcOptions};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::auth::Scope;
use super::error::ApiError;
use super::jobs::{JobContext, JobFuture, JobKind, JobRun};

/// Keys a result lists at most; the counts cover them all.
const MAX_ITEMS: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GcParams {
    // Null reads as absent, as the API document allows.
    delete: Option<bool>,
    grace_s: Option<u64>,
}

pub struct GcJob;

impl JobKind for GcJob {
    fn name(&self) -> &'static str {
        "gc"
    }

    fn scope(&self) -> Scope {
        Scope::Admin
    }

    fn prepare(&self, params: &Map<String, Value>) -> Result<JobRun, ApiError> {
        let p: GcParams = serde_json::from_value(Value::Object(params.clone()))
            .map_err(|e| ApiError::bad_request(format!("gc parameters: {e}")))?;
        let grace = p.grace_s.map_or(gc::DEFAULT_GRACE, Duration::from_secs);
        let delete = p.delete.unwrap_or(false);
        Ok(Box::new(move |ctx: JobContext| -> JobFuture {
            Box::pin(run(ctx, delete, grace))
        }))
    }
}

async fn run(ctx: JobContext, delete: bool, grace: Duration) -> Result<Value, ApiError> {
    let store = deeplake_core::Store::open(&ctx.state.url(&ctx.dataset), &ctx.state.inner.storage)?;
    let stopped = |stage: &str| json!({"deleted": delete, "grace_seconds": grace.as_secs(), "stopped_at": stage});
    if ctx.control.is_cancelled() {
        return Ok(stopped("plan"));
    }
    ctx.control.start_stage(0);
    let plan = gc::plan(&store, &GcOptions { grace }).await?;
    if ctx.control.is_cancelled() {
        return Ok(stopped("apply"));
    }
    let (items, kept, totals) = if delete {
        let report = gc::apply_with(&store, &plan, &ctx.control).await?;
        let totals = report.totals();
        (report.deleted, report.kept, totals)
    } else {
        let n = plan.items.len() as u64;
        ctx.control.start_stage(n);
        ctx.control.advance(n);
        (plan.items.clone(), Vec::new(), plan.totals())
    };
    let bytes: u64 = items.iter().map(|i| i.bytes).sum();
    let shown = &items[..items.len().min(MAX_ITEMS)];
    Ok(json!({
        "deleted": delete,
        "grace_seconds": grace.as_secs(),
        "live_commits": plan.live_commits,
        "scanned": plan.scanned,
        "objects": items.len(),
        "bytes": bytes,
        "by_reason": crate::cli::gc::totals_json(&totals),
        "items": crate::cli::gc::items_json(shown),
        "items_truncated": shown.len() < items.len(),
        "young": {"objects": plan.young_objects, "bytes": plan.young_bytes},
        "kept": kept.iter().take(MAX_ITEMS).map(|(i, why)| json!({
            "key": i.key, "reason": i.reason.as_str(), "why": why.as_str(),
        })).collect::<Vec<_>>(),
    }))
}
