//! A small blocking client for the REST API, shared by the CLI commands. The CLI is an API
//! client like any other: it holds no privileges the API would not give its key.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;

#[derive(Debug, Args, Clone)]
pub struct ApiArgs {
    /// Base URL of the wulian REST API.
    #[arg(
        long,
        env = "WULIAN_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// API key (printed by the first `wulian serve`, or made with `wulian keys create`).
    #[arg(long, env = "WULIAN_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
}

pub struct Client {
    agent: ureq::Agent,
    base: String,
    key: String,
}

impl Client {
    pub fn new(args: &ApiArgs) -> anyhow::Result<Client> {
        let Some(key) = args.api_key.clone() else {
            bail!("an API key is needed: pass --api-key or set WULIAN_API_KEY");
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Longer than the longest command timeout, which a `devices command` call waits for.
            .timeout_global(Some(Duration::from_secs(330)))
            .build()
            .into();
        Ok(Client {
            agent,
            base: args.url.trim_end_matches('/').to_string(),
            key,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{}", self.base, path)
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.key)
    }

    pub fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        let mut req = self
            .agent
            .get(self.url(path))
            .header("Authorization", self.auth());
        for (k, v) in query {
            req = req.query(*k, v);
        }
        finish(req.call())
    }

    pub fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        finish(
            self.agent
                .post(self.url(path))
                .header("Authorization", self.auth())
                .send_json(body),
        )
    }

    pub fn patch(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        finish(
            self.agent
                .patch(self.url(path))
                .header("Authorization", self.auth())
                .send_json(body),
        )
    }

    pub fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        finish(
            self.agent
                .put(self.url(path))
                .header("Authorization", self.auth())
                .send_json(body),
        )
    }

    /// POSTs `body` (an octet stream of `len` bytes) — uploads, read as they are sent.
    pub fn post_stream(
        &self,
        path: &str,
        query: &[(&str, String)],
        body: impl std::io::Read,
        len: u64,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .agent
            .post(self.url(path))
            .header("Authorization", self.auth())
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", len.to_string());
        for (k, v) in query {
            req = req.query(*k, v);
        }
        finish(req.send(ureq::SendBody::from_reader(&mut { body })))
    }

    pub fn delete(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        let mut req = self
            .agent
            .delete(self.url(path))
            .header("Authorization", self.auth());
        for (k, v) in query {
            req = req.query(*k, v);
        }
        finish(req.call())
    }
}

/// Turns a response into its JSON body, or an error that carries the problem's code and detail.
fn finish(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> anyhow::Result<Value> {
    let mut response = result.context("Call the wulian API")?;
    let status = response.status();
    let text = response
        .body_mut()
        .read_to_string()
        .context("Read the API response")?;
    if status.is_success() {
        if text.is_empty() {
            return Ok(Value::Null);
        }
        return serde_json::from_str(&text).context("Parse the API response");
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(problem) => bail!(
            "{} {}: {}",
            status.as_u16(),
            problem["code"].as_str().unwrap_or("error"),
            problem["detail"].as_str().unwrap_or(&text)
        ),
        Err(_) => bail!("{}: {}", status.as_u16(), text),
    }
}

/// Prints a JSON value for people (pretty) — the CLI's default output for single objects.
pub fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// `/devices/{id}` with the id percent-encoded (ids are restricted, but be safe).
pub fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
