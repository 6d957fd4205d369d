//! Command-line interface: argument parsing and dispatch.

pub mod branch;
pub mod checkout;
pub mod commit;
pub mod demo;
pub mod diff;
pub mod dump;
pub mod gc;
pub mod import;
pub mod info;
pub mod links;
pub mod log;
pub mod materialize;
pub mod merge;
pub mod query;
pub mod reset;
pub mod stream;
pub mod tag;
pub mod token;
pub mod transform;

use std::io::Write;

use anyhow::Context;
use clap::{Parser, Subcommand};
use deeplake_core::OpenOptions;
use deeplake_core::store::StoreOptions;

#[derive(Debug, Parser)]
#[command(
    name = "deeplake",
    version,
    about = "Deep Lake 3.x datasets from the command line"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Storage flags shared by every command that opens a dataset.
#[derive(Debug, Clone, clap::Args, Default)]
pub struct StorageArgs {
    /// Backend option as KEY=VALUE (for s3://: endpoint, region, access_key_id,
    /// secret_access_key, allow_http, ...); may repeat. AWS_* environment variables
    /// are read too.
    #[arg(long = "storage-option", value_name = "KEY=VALUE", global = true)]
    pub storage_options: Vec<String>,
}

impl StorageArgs {
    pub fn open_options(&self) -> anyhow::Result<OpenOptions> {
        let mut s = StoreOptions::default();
        for kv in &self.storage_options {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--storage-option {kv:?} is not KEY=VALUE"))?;
            s = s.with(k, v);
        }
        Ok(OpenOptions {
            storage: s,
            ..Default::default()
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show tensors, lengths, shapes, compression and size on storage.
    Info(info::InfoArgs),
    /// Print rows as JSON lines.
    Dump(dump::DumpArgs),
    /// Build a sample dataset of synthetic images, then show it.
    Demo(demo::DemoArgs),
    /// Import a folder of class subfolders, or a COCO annotation file.
    Import(import::ImportArgs),
    /// List the commits from a branch head, commit or tag back to the first.
    Log(log::LogArgs),
    /// Show what changed between commits or branches (3.x's diff), or by row ids.
    Diff(diff::DiffArgs),
    /// Commit the head of a branch.
    Commit(commit::CommitArgs),
    /// Create a branch (3.x rules: a changed head is committed first), delete one
    /// (--delete), or list them.
    Branch(branch::BranchArgs),
    /// Merge a branch, commit or tag into a branch head (3.x rules), then commit.
    Merge(merge::MergeArgs),
    /// Run a TQL query and print the resulting rows (or the plan, for EXPLAIN).
    Query(query::QueryArgs),
    /// Write a view (a ref, rows, a query result, a saved view) out as a dense dataset,
    /// or optimize a saved view in place; linked files are fetched and stored.
    Materialize(materialize::MaterializeArgs),
    /// Stream a dataset in-process as a training loop gets it, and report rows/s, MB/s
    /// and the time to the first batch.
    Stream(stream::StreamArgs),
    /// Run the built-in resize-and-relabel transform in parallel into one commit.
    Transform(transform::TransformArgs),
    /// Name a commit with a tag, or list the tags.
    Tag(tag::TagArgs),
    /// Show what a branch, commit id or tag names, or create a branch (--create).
    Checkout(checkout::CheckoutArgs),
    /// Drop the uncommitted changes of a branch head.
    Reset(reset::ResetArgs),
    /// List the storage that no branch, tag or saved view reaches; delete it with --delete.
    Gc(gc::GcArgs),
    /// Linked tensors: check that every link target answers.
    Links(links::LinksArgs),
    /// Serve every dataset under a storage root over HTTP.
    Serve(crate::serve::ServeArgs),
    /// Token helpers for `serve` (hash a token for the config).
    Token(token::TokenArgs),
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match cli.command {
        Command::Demo(a) => demo::run(&a, &mut out).await?,
        Command::Info(a) => info::run(&a, &mut out).await?,
        Command::Dump(a) => dump::run(&a, &mut out).await?,
        Command::Import(a) => import::run(&a, &mut out).await?,
        Command::Log(a) => log::run(&a, &mut out).await?,
        Command::Diff(a) => diff::run(&a, &mut out).await?,
        Command::Commit(a) => commit::run(&a, &mut out).await?,
        Command::Branch(a) => branch::run(&a, &mut out).await?,
        Command::Merge(a) => merge::run(&a, &mut out).await?,
        Command::Query(a) => query::run(&a, &mut out).await?,
        Command::Materialize(a) => materialize::run(&a, &mut out).await?,
        Command::Stream(a) => stream::run(&a, &mut out).await?,
        Command::Transform(a) => transform::run(&a, &mut out).await?,
        Command::Tag(a) => tag::run(&a, &mut out).await?,
        Command::Checkout(a) => checkout::run(&a, &mut out).await?,
        Command::Reset(a) => reset::run(&a, &mut out).await?,
        Command::Gc(a) => gc::run(&a, &mut out).await?,
        Command::Links(a) => links::run(&a, &mut out).await?,
        Command::Serve(a) => crate::serve::run(&a, &mut out).await?,
        Command::Token(a) => token::run(&a, &mut out)?,
    }
    out.flush()?;
    Ok(())
}
