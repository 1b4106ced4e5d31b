//! Ingest over HTTP in InfluxDB line protocol, shared by the InfluxDB and VictoriaMetrics
//! runs, and the wait for a server's files to settle after ingest.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::generate::{self, Dataset};
use crate::measure::dir_bytes;

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(300)))
        // Non-2xx answers are reported with their body by the callers.
        .http_status_as_error(false)
        .build()
        .into()
}

/// The line protocol of every request, prepared before the clock starts so that the load
/// generator's formatting is not charged to the server.
pub fn bodies(d: &Dataset) -> Vec<String> {
    d.requests
        .iter()
        .map(|request| {
            let mut buf = String::with_capacity(request.len() * 220);
            for row in request {
                generate::line(&d.trucks[row.truck as usize], row, &mut buf);
            }
            buf
        })
        .collect()
}

/// POSTs every body to `url` from `writers` threads, in order; returns the wall time. Any
/// answer but 204 fails the run.
pub fn post_all(
    agent: &ureq::Agent,
    url: &str,
    bodies: Vec<String>,
    writers: usize,
) -> Result<Duration> {
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|_| {
            let (bodies, next, agent, url) = (
                Arc::clone(&bodies),
                Arc::clone(&next),
                agent.clone(),
                url.to_string(),
            );
            std::thread::spawn(move || -> Result<()> {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else {
                        return Ok(());
                    };
                    let mut resp = agent
                        .post(&url)
                        .send(body.as_bytes())
                        .with_context(|| format!("POST {url}"))?;
                    if resp.status().as_u16() != 204 {
                        let text = resp.body_mut().read_to_string().unwrap_or_default();
                        bail!("POST {url} answered {}: {text}", resp.status());
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("a writer thread panicked"))??;
    }
    Ok(started.elapsed())
}

/// Waits until the bytes under `disk` have been stable for 10 s and the bytes under the
/// directories whose path contains `wal` are below 64 KiB, at most `limit`. Returns how long
/// it waited and whether it settled.
pub fn settle(disk: &[PathBuf], limit: Duration) -> (Duration, bool) {
    let started = Instant::now();
    let total = || disk.iter().map(|p| dir_bytes(p)).sum::<u64>();
    let wal_bytes = || {
        disk.iter()
            .filter(|p| p.to_string_lossy().contains("wal"))
            .map(|p| dir_bytes(p))
            .sum::<u64>()
    };
    let mut last = total();
    let mut stable_since = Instant::now();
    while started.elapsed() < limit {
        std::thread::sleep(Duration::from_secs(1));
        let now = total();
        if now != last {
            last = now;
            stable_since = Instant::now();
        } else if stable_since.elapsed() >= Duration::from_secs(10) && wal_bytes() < 64 << 10 {
            return (started.elapsed(), true);
        }
    }
    (started.elapsed(), false)
}
