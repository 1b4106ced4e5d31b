//! `wulian`: the platform in one binary. `main` only parses the command line and dispatches;
//! each subcommand lives in `cmd/`.

mod cmd;
mod config;
mod console;
mod retention;
mod startup;

use std::process::ExitCode;

use clap::Parser;

/// jemalloc instead of glibc's malloc. The broker allocates a message's pieces on the tokio
/// workers and frees many of them on other threads (the WAL writer, the application lane).
/// glibc's per-thread caches then run empty on one side and full on the other, and each
/// allocation takes the slow path through its arena. Under fan-in load that was a fifth of
/// the workers' time. jemalloc's thread caches and arenas handle this pattern. With it, an
/// idle connection also costs less (docs/benchmarks.md, "The allocator").
#[cfg(unix)]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
