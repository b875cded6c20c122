//! `meshctl run`: the local mesh, derived from the Helm chart rendered with
//! the same values as a cluster install would use.

use std::path::PathBuf;
use std::process::ExitCode;

/// Options of `meshctl run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Chart values, as `helm --set` takes them (repeatable, comma-separated)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Folder for logs, generated configs and the state file
    #[arg(long, default_value = ".run")]
    pub run_dir: PathBuf,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("the local mesh is not wired yet ({args:?})")
}
