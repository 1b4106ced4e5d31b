//! Over-the-air updates: firmware files, their signatures, and the campaign engine.
//!
//! - An upload streams to a temporary file while it is hashed; it is kept only if its SHA-256
//!   matches the one the uploader declared, then renamed into place (fsynced) and recorded.
//! - Each tenant has an Ed25519 key pair (created on first use). The signature covers the raw
//!   32-byte SHA-256 digest of the image, so a device can hash while it downloads and verify at
//!   the end without holding the image.
//! - The engine (every [`TICK`]) notifies the next devices of each running campaign, up to its
//!   batch size in flight, by a *retained* QoS 1 job message on `devices/{id}/ota` (a device
//!   that is offline gets it when it subscribes); times out devices that do not finish; aborts a
//!   campaign whose failure share passes its threshold; and completes it when all are done.
//! - Devices report on `devices/{id}/ota/progress` (or over HTTP); a finished device's job
//!   message is withdrawn (empty retained message).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use wulian_broker::{Broker, OutboundMessage};
use wulian_common::blocking::run_blocking;
use wulian_common::time::now_ms;
use wulian_registry::{Campaign, CampaignDevice, Firmware, NewCampaign, Registry};

/// How often the engine looks at running campaigns.
pub const TICK: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum OtaError {
    #[error(transparent)]
    Registry(#[from] wulian_registry::Error),
    #[error("the upload's SHA-256 is {actual}, not the declared {expected}; nothing was stored")]
    HashMismatch { expected: String, actual: String },
    #[error("firmware images are at most {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the upload is empty")]
    Empty,
    #[error("reading the upload failed: {0}")]
    Body(String),
    #[error("firmware storage failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("signing failed: {0}")]
    Crypto(String),
}

#[derive(Debug, Default)]
pub struct OtaMetrics {
    pub notified: AtomicU64,
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    pub campaigns_aborted: AtomicU64,
}

/// A device's progress report (MQTT `devices/{id}/ota/progress` or HTTP).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgressReport {
    pub campaign: String,
    /// downloading, downloaded, installing, succeeded or failed.
    pub state: String,
    #[serde(default)]
    pub progress: u8,
    #[serde(default)]
    pub error: Option<String>,
}

pub struct OtaService {
    registry: Arc<Registry>,
    broker: Broker,
    dir: PathBuf,
    max_firmware_bytes: u64,
    pub metrics: OtaMetrics,
}

impl OtaService {
    /// Firmware files live under `dir/{tenant}/{firmware id}.bin`; uploads over
    /// `max_firmware_bytes` are refused.
    pub fn new(
        registry: Arc<Registry>,
        broker: Broker,
        dir: PathBuf,
        max_firmware_bytes: u64,
    ) -> Arc<OtaService> {
        Arc::new(OtaService {
            registry,
            broker,
            dir,
            max_firmware_bytes,
            metrics: OtaMetrics::default(),
        })
    }

    pub fn max_firmware_bytes(&self) -> u64 {
        self.max_firmware_bytes
    }

    pub fn firmware_path(&self, firmware: &Firmware) -> PathBuf {
        self.dir
            .join(&firmware.tenant)
            .join(format!("{}.bin", firmware.id))
    }

    /// The tenant's signing key pair, created on first use.
    async fn key_pair(&self, tenant: &str) -> Result<Ed25519KeyPair, OtaError> {
        let t = tenant.to_string();
        let stored = run_blocking(&self.registry, move |r| r.ota_signing_key(&t)).await?;
        let pkcs8 = match stored {
            Some((pkcs8, _)) => pkcs8,
            None => {
                let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                    .map_err(|e| OtaError::Crypto(e.to_string()))?;
                let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref())
                    .map_err(|e| OtaError::Crypto(e.to_string()))?;
                let (t, pkcs8, public) = (
                    tenant.to_string(),
                    doc.as_ref().to_vec(),
                    pair.public_key().as_ref().to_vec(),
                );
                // Two first uploads at once: the registry keeps one key and returns it to both.
                run_blocking(&self.registry, move |r| {
                    r.store_ota_signing_key(&t, &pkcs8, &public)
                })
                .await?
                .0
            }
        };
        Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| OtaError::Crypto(e.to_string()))
    }

    /// The tenant's raw 32-byte Ed25519 public key (devices verify firmware with it).
    pub async fn public_key(&self, tenant: &str) -> Result<Vec<u8>, OtaError> {
        Ok(self.key_pair(tenant).await?.public_key().as_ref().to_vec())
    }

    /// Streams an upload to disk, checks its hash, signs and records it.
    pub async fn store_firmware<S, E>(
        &self,
        tenant: &str,
        profile: &str,
        version: &str,
        expected_sha256: &str,
        mut body: S,
        max_bytes: u64,
    ) -> Result<Firmware, OtaError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let expected = expected_sha256.to_ascii_lowercase();
        let id = {
            let r = Arc::clone(&self.registry);
            run_blocking(&r, |r| r.new_firmware_id()).await?
        };
        let dir = self.dir.join(tenant);
        tokio::fs::create_dir_all(&dir).await?;
        let tmp = dir.join(format!("{id}.part"));
        let result = async {
            let mut file = tokio::fs::File::create(&tmp).await?;
            let mut hasher = Sha256::new();
            let mut size: u64 = 0;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| OtaError::Body(e.to_string()))?;
                size += chunk.len() as u64;
                if size > max_bytes {
                    return Err(OtaError::TooLarge { limit: max_bytes });
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await?;
            }
            if size == 0 {
                return Err(OtaError::Empty);
            }
            let digest = hasher.finalize();
            let actual = hex::encode(digest);
            if actual != expected {
                return Err(OtaError::HashMismatch { expected, actual });
            }
            // Durable before it is recorded: a record never points at a torn file.
            file.sync_all().await?;
            Ok((size, digest))
        }
        .await;
        let (size, digest) = match result {
            Ok(ok) => ok,
            Err(error) => {
                tokio::fs::remove_file(&tmp).await.ok();
                return Err(error);
            }
        };
        let signature = self.key_pair(tenant).await?.sign(&digest);
        let firmware = Firmware {
            id,
            tenant: tenant.to_string(),
            profile: profile.to_string(),
            version: version.to_string(),
            size,
            sha256: hex::encode(digest),
            signature: hex::encode(signature.as_ref()),
            created_at: now_ms(),
        };
        let path = self.firmware_path(&firmware);
        tokio::fs::rename(&tmp, &path).await?;
        sync_dir(&dir).await;
        let record = firmware.clone();
        if let Err(error) = run_blocking(&self.registry, move |r| r.create_firmware(&record)).await
        {
            tokio::fs::remove_file(&path).await.ok();
            return Err(error.into());
        }
        tracing::info!(tenant, firmware = %firmware.id, profile, version, size, "Firmware stored.");
        Ok(firmware)
    }

    pub async fn delete_firmware(&self, tenant: &str, id: &str) -> Result<(), OtaError> {
        let (t, i) = (tenant.to_string(), id.to_string());
        let firmware = run_blocking(&self.registry, move |r| {
            let firmware = r.get_firmware(&t, &i)?;
            r.delete_firmware(&t, &i)?;
            Ok::<_, wulian_registry::Error>(firmware)
        })
        .await?;
        tokio::fs::remove_file(self.firmware_path(&firmware))
            .await
            .ok();
        Ok(())
    }

    pub async fn create_campaign(
        &self,
        tenant: &str,
        new: NewCampaign,
    ) -> Result<Campaign, OtaError> {
        let t = tenant.to_string();
        let campaign = run_blocking(&self.registry, move |r| r.create_campaign(&t, &new)).await?;
        tracing::info!(tenant, campaign = %campaign.id, devices = campaign.counts.total, "OTA campaign started.");
        self.advance(&campaign).await?;
        let (t, id) = (tenant.to_string(), campaign.id.clone());
        Ok(run_blocking(&self.registry, move |r| r.get_campaign(&t, &id)).await?)
    }

    pub async fn cancel_campaign(&self, tenant: &str, id: &str) -> Result<Campaign, OtaError> {
        let (t, i) = (tenant.to_string(), id.to_string());
        let notified = run_blocking(&self.registry, move |r| {
            r.ota_end_campaign(&t, &i, "cancelled", Some("cancelled by the operator"))
        })
        .await?;
        for device in &notified {
            self.withdraw(tenant, device);
        }
        let (t, i) = (tenant.to_string(), id.to_string());
        Ok(run_blocking(&self.registry, move |r| r.get_campaign(&t, &i)).await?)
    }

    /// One engine step over every running campaign.
    pub async fn tick(&self) -> Result<(), OtaError> {
        let campaigns = run_blocking(&self.registry, |r| r.running_campaigns()).await?;
        for campaign in campaigns {
            self.advance(&campaign).await?;
        }
        Ok(())
    }

    async fn advance(&self, campaign: &Campaign) -> Result<(), OtaError> {
        let tenant = campaign.tenant.clone();
        let id = campaign.id.clone();
        let deadline = now_ms() - campaign.device_timeout_ms;
        let timed_out = run_blocking(&self.registry, {
            let id = id.clone();
            move |r| r.ota_time_out(&id, deadline)
        })
        .await?;
        for device in &timed_out {
            self.metrics.failed.fetch_add(1, Ordering::Relaxed);
            self.withdraw(&tenant, device);
        }
        let campaign = run_blocking(&self.registry, {
            let (t, id) = (tenant.clone(), id.clone());
            move |r| r.get_campaign(&t, &id)
        })
        .await?;
        let c = &campaign.counts;
        let finished = c.succeeded + c.failed;
        if c.failed >= u64::from(campaign.min_failures.max(1))
            && c.failed * 100 > u64::from(campaign.failure_threshold_pct) * finished
        {
            let reason = format!(
                "{} of {finished} finished devices failed (threshold {}%)",
                c.failed, campaign.failure_threshold_pct
            );
            self.end(&campaign, "aborted", &reason).await?;
            self.metrics
                .campaigns_aborted
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(tenant = %tenant, campaign = %id, reason, "OTA campaign aborted.");
            return Ok(());
        }
        if c.pending == 0 && c.in_progress == 0 {
            self.end(&campaign, "completed", "every device finished")
                .await?;
            tracing::info!(tenant = %tenant, campaign = %id, succeeded = c.succeeded, failed = c.failed, "OTA campaign completed.");
            return Ok(());
        }
        let slots = u64::from(campaign.batch_size).saturating_sub(c.in_progress);
        if slots == 0 || c.pending == 0 {
            return Ok(());
        }
        let firmware = run_blocking(&self.registry, {
            let (t, f) = (tenant.clone(), campaign.firmware_id.clone());
            move |r| r.get_firmware(&t, &f)
        })
        .await?;
        let next = run_blocking(&self.registry, move |r| r.ota_next_batch(&id, slots)).await?;
        for device in next {
            self.notify(&campaign, &firmware, &device);
        }
        Ok(())
    }

    async fn end(&self, campaign: &Campaign, status: &str, reason: &str) -> Result<(), OtaError> {
        let (t, id, s, why) = (
            campaign.tenant.clone(),
            campaign.id.clone(),
            status.to_string(),
            reason.to_string(),
        );
        let notified = run_blocking(&self.registry, move |r| {
            r.ota_end_campaign(&t, &id, &s, Some(&why))
        })
        .await?;
        for device in &notified {
            self.withdraw(&campaign.tenant, device);
        }
        Ok(())
    }

    fn notify(&self, campaign: &Campaign, firmware: &Firmware, device: &str) {
        self.metrics.notified.fetch_add(1, Ordering::Relaxed);
        let job = json!({
            "campaign": campaign.id,
            "firmware": {
                "id": firmware.id,
                "version": firmware.version,
                "size": firmware.size,
                "sha256": firmware.sha256,
                "signature": firmware.signature,
                "url": format!("/api/v1/devices/{device}/firmware/{}", firmware.id),
            }
        });
        self.publish_job(&campaign.tenant, device, Bytes::from(job.to_string()));
    }

    /// Withdraws a device's job message (an empty retained message deletes the retained one).
    fn withdraw(&self, tenant: &str, device: &str) {
        self.publish_job(tenant, device, Bytes::new());
    }

    fn publish_job(&self, tenant: &str, device: &str, payload: Bytes) {
        self.broker.publish(
            tenant,
            OutboundMessage::json(format!("devices/{device}/ota"), payload, true),
        );
    }

    /// A device's progress report (a JSON [`ProgressReport`]).
    pub async fn report(
        &self,
        tenant: &str,
        device: &str,
        payload: &[u8],
    ) -> Result<CampaignDevice, OtaError> {
        let report: ProgressReport = serde_json::from_slice(payload).map_err(|e| {
            OtaError::Registry(wulian_registry::Error::Invalid {
                field: "progress",
                reason: format!("not a progress report: {e}"),
            })
        })?;
        let (t, d) = (tenant.to_string(), device.to_string());
        let row = run_blocking(&self.registry, move |r| {
            r.ota_report(
                &t,
                &d,
                &report.campaign,
                &report.state,
                report.progress,
                report.error.as_deref(),
            )
        })
        .await?;
        match row.state.as_str() {
            "succeeded" => {
                self.metrics.succeeded.fetch_add(1, Ordering::Relaxed);
                self.withdraw(tenant, device);
            }
            "failed" => {
                self.metrics.failed.fetch_add(1, Ordering::Relaxed);
                self.withdraw(tenant, device);
            }
            _ => {}
        }
        Ok(row)
    }

    /// Runs the engine until `shutdown`.
    pub async fn run(self: Arc<OtaService>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(error) = self.tick().await {
                        tracing::warn!(error = %error, "OTA engine step failed; retrying.");
                    }
                }
            }
        }
    }
}

/// fsync a directory so a rename in it is durable (best effort: not every platform allows it).
async fn sync_dir(dir: &Path) {
    if let Ok(d) = tokio::fs::File::open(dir).await {
        d.sync_all().await.ok();
    }
}
