//! The `materialize` job: core's materialization of a view of one dataset, as
//! `deeplake materialize` runs it.
//!
//! Parameters: the source version `ref` (default: the head of `main`); at most one of
//! `query` (TQL), `view` (a saved view's id) and `rows` (`[start, end]`); then either
//! `to` (a dataset name under the served root, never the source) or `in_place: true`
//! with `view`; and `tensors`, `on_link_error` (`skip` | `stop`), `memory_mb`, `order`
//! (`view` | `source`), `overwrite`. It needs `write` on the source (an in-place run
//! changes its saved views) and on the target.
//!
//! Progress counts rows. A cancel stops after the batch in flight; the target is
//! resumable, so the same job started again continues where it stopped. The result is
//! the report (`rows_written`, `rows_skipped`, `skipped`, `bytes`, `elapsed_s`,
//! `resumed_from`, `cancelled`, and `target` as the dataset name or
//! `<name>/.queries/<id>_OPTIMIZED`).

use deeplake_core::materialize::{
    self, Destination, MaterializeOptions, OnLinkError, RowOrder, Selection,
};
use deeplake_core::version::Ref;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::auth::Scope;
use super::error::ApiError;
use super::jobs::{JobContext, JobFuture, JobKind, JobRun};
use super::state::DatasetName;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(rename = "ref")]
    at: Option<String>,
    query: Option<String>,
    view: Option<String>,
    rows: Option<[u64; 2]>,
    to: Option<String>,
    in_place: Option<bool>,
    tensors: Option<Vec<String>>,
    on_link_error: Option<String>,
    memory_mb: Option<u64>,
    order: Option<String>,
    overwrite: Option<bool>,
}

/// The parameters checked once.
#[derive(Clone, Debug)]
struct Plan {
    at: Option<Ref>,
    selection: Selection,
    to: Option<DatasetName>,
    tensors: Option<Vec<String>>,
    on_link_error: OnLinkError,
    memory_budget: u64,
    order: RowOrder,
    overwrite: bool,
}

fn parse(params: &Map<String, Value>) -> Result<Plan, ApiError> {
    let p: Params = serde_json::from_value(Value::Object(params.clone()))
        .map_err(|e| ApiError::bad_request(format!("materialize parameters: {e}")))?;
    let given = [p.query.is_some(), p.view.is_some(), p.rows.is_some()];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(ApiError::bad_request(
            "give at most one of \"query\", \"view\" and \"rows\"",
        ));
    }
    let selection = match (p.query, p.view, p.rows) {
        (Some(q), _, _) => Selection::Query(q),
        (_, Some(v), _) => Selection::View(v),
        (_, _, Some([start, end])) => Selection::Range { start, end },
        _ => Selection::All,
    };
    let in_place = p.in_place.unwrap_or(false);
    let to = match (p.to, in_place) {
        (Some(_), true) => {
            return Err(ApiError::bad_request(
                "give \"to\" or \"in_place\", not both",
            ));
        }
        (Some(t), false) => Some(t.parse::<DatasetName>()?),
        (None, true) => {
            if !matches!(selection, Selection::View(_)) {
                return Err(ApiError::bad_request("\"in_place\" needs \"view\""));
            }
            None
        }
        (None, false) => {
            return Err(ApiError::bad_request(
                "give \"to\" (a dataset name) or \"in_place\": true with \"view\"",
            ));
        }
    };
    let at = p.at.map(|r| r.parse::<Ref>()).transpose()?;
    let on_link_error = p
        .on_link_error
        .as_deref()
        .map(str::parse)
        .transpose()?
        .unwrap_or_default();
    let order = p
        .order
        .as_deref()
        .map(str::parse)
        .transpose()?
        .unwrap_or_default();
    let memory_budget = match p.memory_mb {
        Some(0) => return Err(ApiError::bad_request("\"memory_mb\" must be positive")),
        Some(m) => m
            .checked_mul(1 << 20)
            .ok_or_else(|| ApiError::bad_request("\"memory_mb\" is too large"))?,
        None => 256 << 20,
    };
    Ok(Plan {
        at,
        selection,
        to,
        tensors: p.tensors,
        on_link_error,
        memory_budget,
        order,
        overwrite: p.overwrite.unwrap_or(false),
    })
}

pub struct MaterializeJob;

impl JobKind for MaterializeJob {
    fn name(&self) -> &'static str {
        "materialize"
    }

    fn scope(&self) -> Scope {
        Scope::Write
    }

    fn other_datasets(&self, params: &Map<String, Value>) -> Result<Vec<DatasetName>, ApiError> {
        Ok(parse(params)?.to.into_iter().collect())
    }

    fn prepare(&self, params: &Map<String, Value>) -> Result<JobRun, ApiError> {
        let plan = parse(params)?;
        Ok(Box::new(move |ctx: JobContext| -> JobFuture {
            Box::pin(run(ctx, plan))
        }))
    }
}

async fn run(ctx: JobContext, plan: Plan) -> Result<Value, ApiError> {
    let state = &ctx.state;
    let src_url = state.url(&ctx.dataset);
    let source = match &plan.at {
        Some(r) => format!("{src_url}@{r}"),
        None => src_url.clone(),
    };
    let destination = match &plan.to {
        Some(t) if *t == ctx.dataset => {
            return Err(ApiError::bad_request(
                "\"to\" names the source dataset; materialize to a new name or in place",
            ));
        }
        Some(t) => Destination::Dataset {
            url: state.url(t),
            opts: state.open_options(),
        },
        None => Destination::InPlace,
    };
    let mut o = MaterializeOptions::new(source, plan.selection.clone(), destination);
    o.source_opts = state.open_options();
    o.tensors = plan.tensors.clone();
    o.on_link_error = plan.on_link_error;
    o.memory_budget = plan.memory_budget;
    o.order = plan.order;
    o.overwrite = plan.overwrite;
    o.link.creds = deeplake_core::link::LinkCreds::from_env()?;
    let outcome = materialize::materialize(&o, &ctx.control).await;
    // What this run wrote is visible to the next read through the server.
    if let Some(t) = &plan.to {
        state.invalidate(t);
    }
    state.invalidate(&ctx.dataset);
    let report = outcome?;
    let mut v = report.to_json();
    // The storage URL stays on the server; clients know datasets by name.
    let shown = match &plan.to {
        Some(t) => t.as_str().to_owned(),
        None => report
            .target
            .strip_prefix(&format!("{}/", src_url.trim_end_matches('/')))
            .map(|rest| format!("{}/{rest}", ctx.dataset.as_str()))
            .unwrap_or_else(|| ctx.dataset.as_str().to_owned()),
    };
    v["target"] = Value::String(shown);
    Ok(v)
}
