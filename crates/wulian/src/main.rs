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
    limit_malloc_arenas();
    let cli = cmd::Cli::parse();
    match cmd::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// At most four glibc malloc arenas (unless `MALLOC_ARENA_MAX` says otherwise). glibc gives
/// each thread that meets contention an arena of its own, up to eight per core; every blocking
/// thread that served a burst of SQLite calls (a fleet reconnecting: one authentication each)
/// then keeps a few hundred kilobytes of its own, ~15% of the broker's memory per idle
/// connection. The runtime's workers, the hot allocators, still have arenas to themselves.
// The project's only `unsafe`: an FFI call with no pointers, made before any thread starts.
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before any other thread.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 4);
        }
    }
}
