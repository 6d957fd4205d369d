//! `deeplake materialize PATH[@ref] [--query TQL | --view ID | --rows A:B]
//! (--to OUT | --in-place --view ID) [--tensors a,b] [--on-link-error skip|stop]
//! [--memory-mb N] [--order view|source] [--overwrite]`: writes the rows of a view out
//! as a dense dataset (core's `materialize`), or optimizes a saved view in place as
//! deeplake 3.x's `optimize` does.
//!
//! Progress goes to stderr (a bar on a terminal, log lines otherwise); the report is
//! one JSON object on stdout: `{"target", "rows_written", "rows_skipped", "skipped":
//! [{"row", "tensor", "target", "error"}], "bytes", "elapsed_s", "resumed_from",
//! "cancelled"}`. Ctrl-C stops after the batch in flight; running the same command
//! again resumes, as it does after a crash.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use deeplake_core::materialize::{
    self, Destination, MaterializeOptions, OnLinkError, RowOrder, Selection,
};
use deeplake_core::runtime::Control;

use super::StorageArgs;
use super::import::progress::run_cancellable;

#[derive(Debug, clap::Args)]
pub struct MaterializeArgs {
    /// Source dataset path or URL; `PATH@ref` reads a branch, commit or tag.
    pub path: String,
    /// Materialize the rows of this TQL query, in its order.
    #[arg(long, conflicts_with_all = ["view", "rows"])]
    pub query: Option<String>,
    /// Materialize this saved view (it names its own commit).
    #[arg(long, conflicts_with = "rows")]
    pub view: Option<String>,
    /// Materialize rows A to B (B excluded).
    #[arg(long, value_name = "A:B", value_parser = parse_rows)]
    pub rows: Option<(u64, u64)>,
    /// The new dataset's path or URL.
    #[arg(long, value_name = "OUT", required_unless_present = "in_place")]
    pub to: Option<String>,
    /// Optimize the saved view (--view) in place: `.queries/<id>_OPTIMIZED`, as
    /// deeplake 3.x's `optimize` writes it.
    #[arg(long, requires = "view", conflicts_with = "to")]
    pub in_place: bool,
    /// Tensors to copy, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    pub tensors: Option<Vec<String>>,
    /// What a link that cannot be fetched does: skip its row, or stop.
    #[arg(long, default_value = "stop", value_parser = parse_policy)]
    pub on_link_error: OnLinkError,
    /// Memory budget of rows in flight, in MiB.
    #[arg(long, default_value_t = 256)]
    pub memory_mb: u64,
    /// Row order: the view's, or ascending source rows (sequential reads).
    #[arg(long, default_value = "view", value_parser = parse_order)]
    pub order: RowOrder,
    /// Replace a finished target, or an unfinished one made with other arguments.
    #[arg(long)]
    pub overwrite: bool,
    /// The most rows one durable batch holds.
    #[arg(long, default_value_t = 4096)]
    pub batch_rows: usize,
    /// Link targets fetched at once.
    #[arg(long, default_value_t = 32)]
    pub link_concurrency: usize,
    /// Seed of RANDOM() and SAMPLE BY in --query.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub storage: StorageArgs,
}

fn parse_rows(s: &str) -> Result<(u64, u64), String> {
    let bad = || format!("{s:?} is not a row range A:B (e.g. 0:1000)");
    let (a, b) = s.split_once(':').ok_or_else(bad)?;
    let a = a.trim().parse::<u64>().map_err(|_| bad())?;
    let b = b.trim().parse::<u64>().map_err(|_| bad())?;
    if a > b {
        return Err(format!("row range {s:?} ends before it starts"));
    }
    Ok((a, b))
}

fn parse_policy(s: &str) -> Result<OnLinkError, String> {
    s.parse().map_err(|e: deeplake_core::Error| e.to_string())
}

fn parse_order(s: &str) -> Result<RowOrder, String> {
    s.parse().map_err(|e: deeplake_core::Error| e.to_string())
}

impl MaterializeArgs {
    /// The core options these flags stand for.
    pub fn options(&self) -> anyhow::Result<MaterializeOptions> {
        let selection = match (&self.query, &self.view, self.rows) {
            (Some(q), _, _) => Selection::Query(q.clone()),
            (_, Some(v), _) => Selection::View(v.clone()),
            (_, _, Some((a, b))) => Selection::Range { start: a, end: b },
            _ => Selection::All,
        };
        let storage = self.storage.open_options()?;
        let destination = match (&self.to, self.in_place) {
            (_, true) => Destination::InPlace,
            (Some(to), false) => Destination::Dataset {
                url: to.clone(),
                opts: storage.clone(),
            },
            (None, false) => anyhow::bail!("give --to OUT or --in-place --view ID"),
        };
        let mut o = MaterializeOptions::new(self.path.clone(), selection, destination);
        o.source_opts = storage;
        o.tensors = self.tensors.clone();
        o.on_link_error = self.on_link_error;
        o.memory_budget = self
            .memory_mb
            .checked_mul(1 << 20)
            .context("--memory-mb is too large")?;
        o.order = self.order;
        o.overwrite = self.overwrite;
        o.max_batch_rows = self.batch_rows;
        o.query_seed = self.seed;
        o.link.concurrency = self.link_concurrency;
        o.link.creds = deeplake_core::link::LinkCreds::from_env()?;
        Ok(o)
    }
}

pub async fn run(a: &MaterializeArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let opts = a.options()?;
    let ctl = Arc::new(Control::default());
    let work = {
        let ctl = ctl.clone();
        async move { materialize::materialize(&opts, &ctl).await }
    };
    let report = run_cancellable(ctl, "writing", work).await?;
    writeln!(out, "{}", report.to_json())?;
    if report.cancelled {
        anyhow::bail!(
            "stopped at row {} of the view: run the same command again to resume",
            report.rows_written + report.rows_skipped
        );
    }
    Ok(())
}
