//! What the benchmark measures about processes and directories: memory and CPU time from
//! `/proc`, bytes on disk, and latency percentiles of repeated queries.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A `kB` field of `/proc/<pid>/status` (`VmHWM`, `VmRSS`), in bytes. `pid` may be `self`.
pub fn proc_status(pid: &str, field: &str) -> Result<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(field)
            && let Some(rest) = rest.strip_prefix(':')
        {
            let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse()?;
            return Ok(kb * 1024);
        }
    }
    bail!("no {field} in /proc/{pid}/status")
}

/// Clock ticks per second of `/proc/<pid>/stat` times. Linux reports in USER_HZ, which is 100
/// on every architecture the benchmark runs on.
const TICKS_PER_SEC: f64 = 100.0;

/// `utime + stime` of a process, and `cutime + cstime` (its children that exited and were
/// waited for), in seconds.
fn proc_cpu(pid: u32) -> Result<(f64, f64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/<pid>/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17).
    let field = |n: usize| -> Result<f64> {
        Ok(f.get(n - 3)
            .context("short /proc/<pid>/stat")?
            .parse::<f64>()?
            / TICKS_PER_SEC)
    };
    Ok((field(14)? + field(15)?, field(16)? + field(17)?))
}

/// The live children of `pid` (one level: PostgreSQL's backends and auxiliary processes).
fn children(pid: u32) -> Vec<u32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    fs::read_to_string(path)
        .map(|t| {
            t.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// CPU seconds spent so far by a server process and all its children, live or exited.
pub fn tree_cpu_secs(pid: u32) -> Result<f64> {
    let (own, reaped) = proc_cpu(pid)?;
    let live: f64 = children(pid)
        .into_iter()
        .filter_map(|c| proc_cpu(c).ok())
        .map(|(c, _)| c)
        .sum();
    Ok(own + reaped + live)
}

/// Proportional set size (shared pages divided among their users) of a process and its live
/// children, in bytes: the memory a multi-process server such as PostgreSQL really holds.
fn tree_pss(pid: u32) -> u64 {
    std::iter::once(pid)
        .chain(children(pid))
        .filter_map(|p| fs::read_to_string(format!("/proc/{p}/smaps_rollup")).ok())
        .filter_map(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .sum()
}

/// Samples [`tree_pss`] every 200 ms on a thread until [`PssSampler::stop`]; keeps the peak.
pub struct PssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl PssSampler {
    pub fn start(pid: u32) -> PssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(tree_pss(pid)));
        let (s, p) = (Arc::clone(&stop), Arc::clone(&peak));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(tree_pss(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        PssSampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the peak seen, in bytes.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        // A panicked sampler only loses samples; the peak so far stands.
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            eprintln!("the memory sampler thread panicked; its peak so far is reported");
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// Bytes of the files under `path` (or of `path` itself if it is a file); 0 if missing.
pub fn dir_bytes(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_file() {
        return meta.len();
    }
    let Ok(entries) = fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| dir_bytes(&e.path()))
        .sum()
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// What one query returned, for the cross-engine check: how many values, buckets, groups or
/// devices, and a checksum (a sum of the returned numbers).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Answer {
    pub count: u64,
    pub checksum: f64,
}

impl Answer {
    pub fn add(&mut self, v: f64) {
        self.count += 1;
        self.checksum += v;
    }
}

/// Latencies of a repeated query.
pub struct Timing {
    pub runs: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub answer: Answer,
}

/// Runs `f` once to warm up, then `runs` times or until `budget` has passed (at least 3 runs).
/// Every run must return the same count.
pub fn time_query(
    runs: usize,
    budget: Duration,
    mut f: impl FnMut() -> Result<Answer>,
) -> Result<Timing> {
    let answer = f()?;
    let mut ms = Vec::with_capacity(runs);
    let started = Instant::now();
    while ms.len() < runs && (ms.len() < 3 || started.elapsed() < budget) {
        let t = Instant::now();
        let a = f()?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        if a.count != answer.count {
            bail!(
                "query result changed between runs: {} then {}",
                answer.count,
                a.count
            );
        }
    }
    ms.sort_by(f64::total_cmp);
    Ok(Timing {
        runs: ms.len(),
        p50_ms: percentile(&ms, 50.0),
        p99_ms: percentile(&ms, 99.0),
        answer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_measurable() {
        let pid = std::process::id();
        assert!(proc_status("self", "VmRSS").unwrap() > 0);
        assert!(tree_cpu_secs(pid).unwrap() >= 0.0);
        assert!(tree_pss(pid) > 0);
        assert!(proc_status("self", "NoSuchField").is_err());
    }

    #[test]
    fn percentiles_and_repeated_queries() {
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 50.0), 2.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
        let t = time_query(5, Duration::from_secs(10), || {
            Ok(Answer {
                count: 2,
                checksum: 1.5,
            })
        })
        .unwrap();
        assert_eq!(t.runs, 5);
        assert_eq!(t.answer.count, 2);
        let mut n = 0;
        assert!(
            time_query(5, Duration::from_secs(10), || {
                n += 1;
                Ok(Answer {
                    count: n,
                    checksum: 0.0,
                })
            })
            .is_err()
        );
    }
}
