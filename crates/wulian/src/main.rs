//! `wulian`: the platform in one binary. `main` only parses the command line and dispatches;
//! each subcommand lives in `cmd/`.

mod cmd;
mod config;
mod console;
mod retention;
mod startup;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cmd::Cli::parse();
    match cmd::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
