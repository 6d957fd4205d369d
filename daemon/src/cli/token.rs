//! `deeplake token hash [TOKEN]`: prints the SHA-256 that `serve`'s config stores for
//! a bearer token (read from stdin when not given, so it stays out of shell history);
//! `deeplake token new` prints a fresh random token and its hash.

use std::io::{BufRead, Write};

use crate::serve::auth::hash_token;

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Print the hex SHA-256 of a token.
    Hash {
        /// The token; read from the first line of stdin when absent.
        token: Option<String>,
    },
    /// Print a new random token and its hash.
    New,
}

pub fn run(a: &TokenArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    match &a.command {
        TokenCommand::Hash { token } => {
            let t = match token {
                Some(t) => t.clone(),
                None => {
                    let mut line = String::new();
                    std::io::stdin().lock().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            if t.is_empty() {
                anyhow::bail!("the token is empty");
            }
            writeln!(out, "{}", hash_token(&t))?;
        }
        TokenCommand::New => {
            let t = format!("dl_{:032x}", rand::random::<u128>());
            writeln!(out, "token  {t}\nsha256 {}", hash_token(&t))?;
        }
    }
    Ok(())
}
