//! `deeplake import`: folders of class subfolders and COCO annotation files.

use std::io::Write;

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Dataset path or URL to create.
    pub path: String,
}

pub async fn run(a: &ImportArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let _ = (a, out);
    anyhow::bail!("import is not implemented yet")
}
