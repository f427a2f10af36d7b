//! `devart bench`: devart's paths measured against raw baselines on the same database, same run.

use crate::Config;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {}

pub async fn run(_config: &Config, _args: Args) -> anyhow::Result<()> {
    anyhow::bail!("no benchmarks yet")
}
