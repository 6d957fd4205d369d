//! `deeplake checkout PATH REF`: resolves a branch, commit id or tag the way 3.x's
//! `checkout` does (branch name first, then commit id, then tag) and shows the version it
//! names: what kind of ref it is, the node, the branch, whether it is a writable head,
//! the commit it rests on and every tensor's length there. The CLI keeps no session, so
//! this is how a user checks a ref before using it as `PATH@REF` in other commands.
//!
//! `deeplake checkout PATH NAME --create [--from REF]` is 3.x's `checkout(NAME,
//! create=True)`: the same as `deeplake branch PATH NAME [--from REF]`.
//!
//! `--json`: `{"ref", "kind", "node", "branch", "head", "commit", "tensors": {name: len}}`
//! (with `--create`, the object `deeplake branch --json` prints).

use std::io::Write;

use deeplake_core::Dataset;
use deeplake_core::version::{Ref, RefKind};
use serde_json::{Map, Value, json};

use super::StorageArgs;
use super::branch::{self, BranchArgs};

#[derive(Debug, clap::Args)]
pub struct CheckoutArgs {
    /// Dataset path or URL.
    pub path: String,
    /// Branch, commit id or tag; with --create, the new branch's name.
    pub r#ref: String,
    /// Create branch REF (3.x's `checkout(name, create=True)`).
    #[arg(long, short = 'b')]
    pub create: bool,
    /// With --create: the branch, commit id or tag to start from (default: main's head).
    #[arg(long, value_name = "REF", requires = "create")]
    pub from: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub storage: StorageArgs,
}

pub async fn run(a: &CheckoutArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    if a.create {
        let b = BranchArgs {
            path: a.path.clone(),
            name: Some(a.r#ref.clone()),
            from: a.from.clone(),
            delete: false,
            json: a.json,
            storage: a.storage.clone(),
        };
        return branch::run(&b, out).await;
    }
    let mut opts = a.storage.open_options()?;
    opts.read_only = true;
    let r: Ref = a.r#ref.parse()?;
    let ds = Dataset::open_ref(&a.path, &r, opts).await?;
    let at = ds.resolve_ref(&r)?;
    let head = ds.branch_head(&at.branch).as_deref() == Some(at.node.as_str());
    let kind = match at.kind {
        RefKind::Branch => "branch",
        RefKind::Commit => "commit",
        RefKind::Tag => "tag",
    };
    let commit = ds.commit_id();
    let mut tensors = Map::new();
    for name in ds.tensor_names() {
        tensors.insert(name.clone(), Value::from(ds.tensor_len(&name)?));
    }
    if a.json {
        let v = json!({
            "ref": a.r#ref,
            "kind": kind,
            "node": at.node.as_str(),
            "branch": at.branch,
            "head": head,
            "commit": commit,
            "tensors": tensors,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    let what = if head {
        format!("the head of branch {} (writable)", at.branch)
    } else {
        format!(
            "commit {} on branch {} (read-only; a write there starts a new auto_ branch)",
            at.node, at.branch
        )
    };
    writeln!(out, "{} is a {kind}: {what}", a.r#ref)?;
    writeln!(out, "last commit: {}", commit.as_deref().unwrap_or("-"))?;
    let width = tensors.keys().map(String::len).max().unwrap_or(0);
    for (name, len) in &tensors {
        writeln!(out, "  {name:<width$}  {len} rows")?;
    }
    writeln!(out, "use {}@{} to read this version", a.path, a.r#ref)?;
    Ok(())
}
