//! Outgoing webhooks (rule actions, alarm notifications): a bounded queue, a few workers, retries
//! with exponential backoff, and a dead-letter list in the registry for what never got through.
//!
//! Nothing here blocks a caller: [`WebhookSender::send`] only enqueues, and a full queue sends
//! the request straight to the dead-letter list (counted), so a slow or dead endpoint can delay
//! only its own deliveries.
//!
//! Destinations on loopback, private, link-local or unspecified addresses are refused unless
//! allowed (`allow_private_networks`): webhooks are configured by tenants, and the server must
//! not become their way into its own network. The check resolves the host before each attempt.

use std::net::{IpAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;
use wulian_common::blocking::run_blocking;
use wulian_registry::Registry;

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Deliveries running at once.
    pub workers: usize,
    /// Requests waiting (first attempts and retries).
    pub queue: usize,
    /// Attempts before a request goes to the dead-letter list.
    pub max_attempts: u32,
    /// Wait before the first retry; doubled for each further one.
    pub first_backoff: Duration,
    /// Per attempt, connect to last byte.
    pub timeout: Duration,
    pub allow_private_networks: bool,
}

impl Default for WebhookConfig {
    fn default() -> WebhookConfig {
        WebhookConfig {
            workers: 4,
            queue: 10_000,
            max_attempts: 5,
            first_backoff: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            allow_private_networks: false,
        }
    }
}

/// One request to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRequest {
    pub tenant: String,
    /// Who asked: `rule:<id>`, `alarms`.
    pub source: String,
    pub url: String,
    /// `POST` or `PUT`.
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, Default)]
pub struct WebhookMetrics {
    pub delivered: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Sent to the dead-letter list at once because the queue was full.
    pub queue_full: AtomicU64,
}

struct Job {
    request: WebhookRequest,
    attempt: u32,
}

/// Why an attempt failed; permanent failures are not retried.
struct Failure {
    message: String,
    permanent: bool,
}

pub struct WebhookSender {
    tx: mpsc::Sender<Job>,
    registry: Arc<Registry>,
    config: WebhookConfig,
    agent: ureq::Agent,
    pub metrics: WebhookMetrics,
}

impl WebhookSender {
    /// Starts the workers; they stop with `shutdown`.
    pub fn start(
        registry: Arc<Registry>,
        config: WebhookConfig,
        shutdown: CancellationToken,
    ) -> Arc<WebhookSender> {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(config.timeout))
            .build()
            .into();
        let sender = Arc::new(WebhookSender {
            tx,
            registry,
            config,
            agent,
            metrics: WebhookMetrics::default(),
        });
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..sender.config.workers.max(1) {
            let (sender, rx, shutdown) = (Arc::clone(&sender), Arc::clone(&rx), shutdown.clone());
            tokio::spawn(async move {
                loop {
                    let job = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        job = async { rx.lock().await.recv().await } => job,
                    };
                    let Some(job) = job else { return };
                    sender.attempt(job).await;
                }
            });
        }
        sender
    }

    /// Enqueues a request; never waits. A full queue dead-letters it.
    pub fn send(self: &Arc<Self>, request: WebhookRequest) {
        self.enqueue(Job {
            request,
            attempt: 1,
        });
    }

    fn enqueue(self: &Arc<Self>, job: Job) {
        if let Err(mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job)) =
            self.tx.try_send(job)
        {
            self.metrics.queue_full.fetch_add(1, Ordering::Relaxed);
            let sender = Arc::clone(self);
            tokio::spawn(async move {
                sender
                    .dead_letter(
                        job.request,
                        job.attempt.saturating_sub(1),
                        "queue_full: the webhook queue was full",
                    )
                    .await;
            });
        }
    }

    async fn attempt(self: &Arc<Self>, job: Job) {
        let (agent, request, allow_private) = (
            self.agent.clone(),
            job.request.clone(),
            self.config.allow_private_networks,
        );
        let result = tokio::task::spawn_blocking(move || deliver(&agent, &request, allow_private))
            .await
            .unwrap_or_else(|e| {
                Err(Failure {
                    message: format!("delivery task failed: {e}"),
                    permanent: false,
                })
            });
        match result {
            Ok(()) => {
                self.metrics.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err(failure) => {
                self.metrics.failed_attempts.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(tenant = %job.request.tenant, url = %job.request.url, attempt = job.attempt, error = %failure.message, "Webhook attempt failed.");
                if failure.permanent || job.attempt >= self.config.max_attempts {
                    self.dead_letter(job.request, job.attempt, &failure.message)
                        .await;
                    return;
                }
                let backoff = self.config.first_backoff * 2u32.saturating_pow(job.attempt - 1);
                let sender = Arc::clone(self);
                tokio::spawn(async move {
                    tokio::time::sleep(backoff).await;
                    sender.enqueue(Job {
                        request: job.request,
                        attempt: job.attempt + 1,
                    });
                });
            }
        }
    }

    async fn dead_letter(&self, request: WebhookRequest, attempts: u32, error: &str) {
        self.metrics.dead_lettered.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(tenant = %request.tenant, source = %request.source, url = %request.url, attempts, error, "Webhook dead-lettered.");
        let error = error.to_string();
        let result = run_blocking(&self.registry, move |r| {
            r.add_dead_letter(
                &request.tenant,
                &request.source,
                &request.url,
                &request.method,
                &request.headers,
                &request.body,
                attempts,
                &error,
            )
        })
        .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "Storing a dead letter failed.");
        }
    }
}

fn deliver(agent: &ureq::Agent, req: &WebhookRequest, allow_private: bool) -> Result<(), Failure> {
    let permanent = |message: String| Failure {
        message,
        permanent: true,
    };
    let uri: ureq::http::Uri = req
        .url
        .parse()
        .map_err(|e| permanent(format!("invalid URL: {e}")))?;
    let host = uri
        .host()
        .ok_or_else(|| permanent("the URL has no host".into()))?;
    if !allow_private {
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addrs = (host, port).to_socket_addrs().map_err(|e| Failure {
            message: format!("cannot resolve {host}: {e}"),
            permanent: false,
        })?;
        for addr in addrs {
            if is_private(addr.ip()) {
                return Err(permanent(format!(
                    "{host} resolves to the non-public address {}; webhooks to private networks are off \
                     (rules.webhook_allow_private_networks)",
                    addr.ip()
                )));
            }
        }
    }
    let mut builder = match req.method.as_str() {
        "PUT" => agent.put(&req.url),
        _ => agent.post(&req.url),
    };
    for (name, value) in &req.headers {
        builder = builder.header(name, value);
    }
    match builder.send(&req.body[..]) {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) => {
            let status = resp.status().as_u16();
            Err(Failure {
                message: format!("HTTP {status}"),
                // 4xx other than 408/429 will not get better by retrying.
                permanent: (400..500).contains(&status) && status != 408 && status != 429,
            })
        }
        Err(e) => Err(Failure {
            message: e.to_string(),
            permanent: false,
        }),
    }
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                // 100.64.0.0/10 carrier-grade NAT.
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xC0) == 64)
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                // fc00::/7 unique local, fe80::/10 link local.
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some_and(|v4| is_private(IpAddr::V4(v4)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.5",
            "169.254.1.1",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "100.128.0.1"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }
}
