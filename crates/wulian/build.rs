//! Builds the web console and the rider app (`console/`, TypeScript with Vite) when
//! `console/dist` is missing or older than its sources, and points `src/console.rs` at the
//! result, which the release binary embeds.
//!
//! - `WULIAN_SKIP_CONSOLE_BUILD=1`: never run npm; embed `console/dist` if it exists, else
//!   nothing (the binary then answers `/console/` with 503 and a hint).
//! - npm missing: the build fails with what to install.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// What the front end is built from; a change to any of these rebuilds it.
const SOURCES: &[&str] = &[
    "src",
    "pages",
    "public",
    "package.json",
    "package-lock.json",
    "vite.config.ts",
    "tsconfig.json",
];

fn main() {
    println!("cargo:rerun-if-env-changed=WULIAN_SKIP_CONSOLE_BUILD");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let console = manifest.join("../../console");
    let dist = console.join("dist");
    let skip = std::env::var("WULIAN_SKIP_CONSOLE_BUILD").is_ok_and(|v| !v.is_empty() && v != "0");

    if console.join("package.json").is_file() {
        for source in SOURCES {
            println!("cargo:rerun-if-changed={}", console.join(source).display());
        }
        if !skip && is_stale(&console, &dist) {
            build(&console);
        }
    }

    let folder = if dist.join("console/index.html").is_file() {
        dist.canonicalize().unwrap_or(dist)
    } else {
        println!(
            "cargo:warning=console/dist is missing: the binary will serve no web console \
             (unset WULIAN_SKIP_CONSOLE_BUILD to build it)"
        );
        let empty = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"))
            .join("console-dist-empty");
        std::fs::create_dir_all(&empty).expect("create an empty console folder in OUT_DIR");
        empty
    };
    println!("cargo:rustc-env=WULIAN_CONSOLE_DIST={}", folder.display());
}

/// The dist is stale when a page is missing or a source is newer than the oldest page.
fn is_stale(console: &Path, dist: &Path) -> bool {
    let built = ["console/index.html", "rider/index.html"]
        .iter()
        .map(|p| modified(&dist.join(p)))
        .min()
        .flatten();
    let Some(built) = built else { return true };
    SOURCES
        .iter()
        .filter_map(|s| newest(&console.join(s)))
        .any(|m| m > built)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn newest(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| newest(&e.path()))
        .chain(meta.modified().ok())
        .max()
}

fn build(console: &Path) {
    if Command::new("npm").arg("--version").output().is_err() {
        fail(
            "building the web console needs Node.js 20 and npm on PATH (`apt-get install nodejs \
             npm`, or https://nodejs.org); or set WULIAN_SKIP_CONSOLE_BUILD=1 to build the \
             binary without the console",
        );
    }
    // `npm ci` only when the installed tree does not match the lock file.
    let installed = modified(&console.join("node_modules/.package-lock.json"));
    let locked = modified(&console.join("package-lock.json"));
    if installed.is_none() || installed < locked {
        run(console, &["ci", "--no-audit", "--no-fund"]);
    }
    run(console, &["run", "build"]);
}

fn run(dir: &Path, args: &[&str]) {
    let status = Command::new("npm")
        .args(args)
        .current_dir(dir)
        // npm's progress and Vite's report go to the build log, not to cargo's stdout protocol.
        .stdout(std::io::stderr())
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => fail(&format!(
            "`npm {}` in {} failed ({s}); see the output above",
            args.join(" "),
            dir.display()
        )),
        Err(e) => fail(&format!("could not run npm: {e}")),
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    println!("cargo:warning={message}");
    std::process::exit(1);
}
