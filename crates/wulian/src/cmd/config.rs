//! `wulian config default` and `wulian config check`.

use std::path::PathBuf;

use clap::Subcommand;

use crate::config::{Config, DEFAULT_FILE};

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the default configuration file, with every key documented.
    Default,
    /// Validate a configuration file and report every problem.
    Check {
        /// The file to check.
        file: PathBuf,
    },
}

pub fn run(cmd: ConfigCommand) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Default => {
            print!("{DEFAULT_FILE}");
            Ok(())
        }
        ConfigCommand::Check { file } => {
            Config::load(&file)?;
            println!("{}: ok", file.display());
            Ok(())
        }
    }
}
