//! Device credentials: the "id token" file the scenarios read, and `provision`, which makes
//! one by creating devices through wulian's REST API (the only way a device gets a token).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::cli::Provision;

/// One client's MQTT identity. Anonymous clients have no password.
#[derive(Clone, Debug)]
pub struct Credential {
    pub id: String,
    pub token: Option<String>,
}

/// Credentials from the file, or an empty list meaning "anonymous".
pub fn load(path: Option<&Path>) -> anyhow::Result<Vec<Credential>> {
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("Read the credentials file {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((id, token)) = line.split_once(char::is_whitespace) else {
            bail!("{}:{}: expected \"id token\"", path.display(), n + 1);
        };
        out.push(Credential {
            id: id.to_string(),
            token: Some(token.trim().to_string()),
        });
    }
    if out.is_empty() {
        bail!("{} holds no credentials", path.display());
    }
    Ok(out)
}

/// The identity of client `i`: the i-th credential, or `bench-i` when anonymous. Asking for
/// more clients than there are credentials is an error, not a silent reuse (a reused device
/// id would take over the other client's session).
pub fn nth(creds: &[Credential], i: usize) -> anyhow::Result<Credential> {
    if creds.is_empty() {
        return Ok(Credential {
            id: format!("bench-{i:06}"),
            token: None,
        });
    }
    creds.get(i).cloned().with_context(|| {
        format!(
            "client {i} has no credentials: the file has {} lines",
            creds.len()
        )
    })
}

/// Creates `count` devices in parallel and writes their ids and tokens. Returns a JSON summary.
pub fn provision(args: &Provision) -> anyhow::Result<Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let url = format!("{}/api/v1/devices", args.url.trim_end_matches('/'));
    let auth = format!("Bearer {}", args.api_key);
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let parallel = args.parallel.clamp(1, 64);
    let results: Vec<anyhow::Result<Vec<(usize, String, String)>>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..parallel)
            .map(|_| {
                s.spawn(|| {
                    let mut made = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= args.count {
                            return Ok(made);
                        }
                        let id = format!("{}{i:06}", args.prefix);
                        let mut resp = agent
                            .post(&url)
                            .header("Authorization", &auth)
                            .send_json(json!({ "id": id }))
                            .with_context(|| format!("POST {url}"))?;
                        let status = resp.status();
                        let body = resp.body_mut().read_to_string().unwrap_or_default();
                        if !status.is_success() {
                            bail!("creating device {id}: {} {body}", status.as_u16());
                        }
                        let v: Value = serde_json::from_str(&body).context("device JSON")?;
                        let token = v["token"]
                            .as_str()
                            .context("the response has no \"token\"")?
                            .to_string();
                        made.push((i, id, token));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| bail!("worker panicked")))
            .collect()
    });
    let mut all = Vec::with_capacity(args.count);
    for r in results {
        all.extend(r?);
    }
    all.sort_by_key(|(i, _, _)| *i);
    let mut text = String::new();
    for (_, id, token) in &all {
        text.push_str(&format!("{id} {token}\n"));
    }
    std::fs::write(&args.out, text).with_context(|| format!("Write {}", args.out.display()))?;
    let secs = started.elapsed().as_secs_f64();
    Ok(json!({
        "provisioned": all.len(),
        "file": args.out.display().to_string(),
        "seconds": secs,
        "devices_per_sec": all.len() as f64 / secs.max(1e-9),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_id_token_lines_and_refuses_to_reuse_them() {
        let dir = std::env::temp_dir().join(format!("wulian-bench-creds-{}", std::process::id()));
        std::fs::write(&dir, "# devices\nd1 wld_a\n\nd2\twld_b\n").unwrap();
        let creds = load(Some(&dir)).unwrap();
        std::fs::remove_file(&dir).ok();
        assert_eq!(creds.len(), 2);
        assert_eq!(nth(&creds, 1).unwrap().token.as_deref(), Some("wld_b"));
        assert!(
            nth(&creds, 2).is_err(),
            "a third client must not reuse a device"
        );
        let anonymous = nth(&[], 7).unwrap();
        assert_eq!(
            (anonymous.id.as_str(), anonymous.token),
            ("bench-000007", None)
        );
    }
}
