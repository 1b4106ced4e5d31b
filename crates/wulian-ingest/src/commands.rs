//! Commands to devices: an application asks, the device answers, the platform keeps the record.
//!
//! Life of a command (docs/architecture.md): the record is stored as `pending`, published to
//! `devices/{id}/commands/{name}` at QoS 1 with the JSON body `{"id", "name", "params"}` (MQTT 5
//! devices also get a response topic and the command id as correlation data), and marked `sent`
//! — or `undelivered` when the device has no subscription to receive it. The device answers on
//! `devices/{id}/commands/{name}/response`; the first answer finishes the command as `succeeded`
//! (or `failed` when the answer carries `"error"`), and no answer within the timeout finishes it
//! as `timed_out`. Every state is written to the registry, so status stays queryable.
//!
//! Devices that fetch their commands (CoAP, see `poll`) instead of subscribing: a command no
//! subscription took stays `pending` in the device's queue until its next request carries it
//! (then `sent`); never fetched within the timeout, it finishes as `undelivered`.

mod poll;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::{Value as Json, json};
use tokio::sync::oneshot;
use wulian_broker::{Broker, OutboundMessage};
use wulian_common::blocking::run_blocking;
use wulian_common::time::now_ms;
use wulian_common::topics;
use wulian_mqtt::{Properties, QoS};
use wulian_registry::{Command, CommandStatus, Registry};

use crate::live::LiveEvents;
use poll::PollQueues;
pub use poll::{MAX_QUEUED_PER_DEVICE, POLLER_TTL_MS};

pub const MAX_COMMAND_NAME_LEN: usize = 64;
pub const MIN_TIMEOUT: Duration = Duration::from_millis(100);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Commands awaiting an answer at once, across the installation; beyond it new ones are refused
/// rather than letting a caller grow memory without bound.
pub const MAX_PENDING: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("command name must be 1 to {MAX_COMMAND_NAME_LEN} characters of A-Z a-z 0-9 _ . -")]
    InvalidName,
    #[error("timeout must be between {} and {} ms", MIN_TIMEOUT.as_millis(), MAX_TIMEOUT.as_millis())]
    InvalidTimeout,
    #[error("too many commands are awaiting an answer; try again later")]
    TooManyPending,
    #[error(transparent)]
    Registry(#[from] wulian_registry::Error),
}

pub struct CommandRequest {
    pub name: String,
    pub params: Json,
    pub timeout: Duration,
}

/// A command handed to a polling device: its id and the JSON body `{"id", "name", "params"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct PolledCommand {
    pub id: String,
    pub body: String,
}

/// A command that has been stored and sent. `finished` resolves with the final record.
pub struct SentCommand {
    pub command: Command,
    pub finished: oneshot::Receiver<Command>,
}

struct Waiter {
    tenant: String,
    device_id: String,
    answer: oneshot::Sender<Outcome>,
}

/// How a waiting command ends before its timeout.
enum Outcome {
    Answer(Json),
    /// A polling transport could not carry it (too large for one response).
    Undeliverable,
}

pub struct CommandService {
    registry: Arc<Registry>,
    broker: Broker,
    // Short critical sections only (insert/remove), never held across an await.
    waiters: Mutex<HashMap<String, Waiter>>,
    // Commands waiting for polling devices; short critical sections only, like `waiters`.
    poll: Mutex<PollQueues>,
    live: OnceLock<Arc<LiveEvents>>,
}

impl CommandService {
    pub fn new(registry: Arc<Registry>, broker: Broker) -> Arc<CommandService> {
        Arc::new(CommandService {
            registry,
            broker,
            waiters: Mutex::new(HashMap::new()),
            poll: Mutex::new(PollQueues::default()),
            live: OnceLock::new(),
        })
    }

    /// Connects the live event hub (the pipeline does, when the service is attached to it).
    pub fn attach_live(&self, live: Arc<LiveEvents>) {
        // A second pipeline (tests) keeps the first hub.
        let _first = self.live.set(live);
    }

    fn announce(&self, command: &Command) {
        if let Some(live) = self.live.get() {
            live.command(command);
        }
    }

    pub fn pending(&self) -> usize {
        self.waiters.lock().len()
    }

    /// Stores, publishes and starts waiting for the device's answer. Fails with
    /// `Registry(NotFound)` when the device is not in `tenant`.
    pub async fn send(
        self: &Arc<Self>,
        tenant: &str,
        device_id: &str,
        req: CommandRequest,
    ) -> Result<SentCommand, CommandError> {
        if !is_valid_command_name(&req.name) {
            return Err(CommandError::InvalidName);
        }
        if req.timeout < MIN_TIMEOUT || req.timeout > MAX_TIMEOUT {
            return Err(CommandError::InvalidTimeout);
        }
        if self.pending() >= MAX_PENDING {
            return Err(CommandError::TooManyPending);
        }
        let now = now_ms();
        let command = Command {
            id: new_command_id(),
            tenant: tenant.to_string(),
            device_id: device_id.to_string(),
            name: req.name,
            params: req.params,
            status: CommandStatus::Pending,
            response: None,
            timeout_ms: u64::try_from(req.timeout.as_millis()).unwrap_or(u64::MAX),
            created_at: now,
            updated_at: now,
        };
        {
            let (tenant, device_id, record) =
                (tenant.to_string(), device_id.to_string(), command.clone());
            run_blocking(&self.registry, move |r| {
                r.get_device(&tenant, &device_id)?;
                r.insert_command(&record)
            })
            .await?;
        }

        let (answer_tx, answer_rx) = oneshot::channel();
        self.waiters.lock().insert(
            command.id.clone(),
            Waiter {
                tenant: tenant.to_string(),
                device_id: device_id.to_string(),
                answer: answer_tx,
            },
        );
        let body = json!({"id": command.id, "name": command.name, "params": command.params});
        let body_text = body.to_string();
        let delivered = self.broker.publish(
            tenant,
            OutboundMessage {
                topic: topics::command_topic(device_id, &command.name),
                payload: Bytes::from(body_text.clone()),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: Properties {
                    response_topic: Some(topics::command_response_topic(device_id, &command.name)),
                    correlation_data: Some(Bytes::from(command.id.clone())),
                    content_type: Some("application/json".to_string()),
                    message_expiry_interval: Some(
                        u32::try_from(req.timeout.as_secs().max(1)).unwrap_or(u32::MAX),
                    ),
                    ..Properties::default()
                },
            },
        );
        let status = if delivered > 0 {
            CommandStatus::Sent
        } else if self
            .poll
            .lock()
            .queue(tenant, device_id, &command.id, body_text, now)
        {
            // Stays `pending` (as stored) until the device's next request fetches it.
            CommandStatus::Pending
        } else {
            self.waiters.lock().remove(&command.id);
            CommandStatus::Undelivered
        };
        let command = if status == CommandStatus::Pending {
            self.announce(&command);
            command
        } else {
            self.finish_record(&command, status, None).await?
        };

        let (finished_tx, finished_rx) = oneshot::channel();
        if status.is_final() {
            // The caller may have stopped waiting (wait = false); the record is stored anyway.
            finished_tx.send(command.clone()).ok();
        } else {
            let service = Arc::clone(self);
            let record = command.clone();
            tokio::spawn(async move {
                let outcome = tokio::time::timeout(req.timeout, answer_rx).await;
                service.waiters.lock().remove(&record.id);
                let never_fetched =
                    service
                        .poll
                        .lock()
                        .remove(&record.tenant, &record.device_id, &record.id);
                let (status, response) = match outcome {
                    Ok(Ok(Outcome::Answer(answer))) => (answer_status(&answer), Some(answer)),
                    Ok(Ok(Outcome::Undeliverable)) => (CommandStatus::Undelivered, None),
                    // Queued for a polling device that never came to fetch it.
                    Ok(Err(_)) | Err(_) if never_fetched => (CommandStatus::Undelivered, None),
                    // The waiter was dropped without an answer, or time ran out.
                    Ok(Err(_)) | Err(_) => (CommandStatus::TimedOut, None),
                };
                match service.finish_record(&record, status, response).await {
                    Ok(done) => {
                        finished_tx.send(done).ok();
                    }
                    Err(error) => {
                        tracing::error!(command_id = %record.id, error = %error, "Could not store command result.")
                    }
                }
            });
        }
        Ok(SentCommand {
            command,
            finished: finished_rx,
        })
    }

    /// Hands a device's answer to the waiting command. `correlation` is the MQTT 5 correlation
    /// data; without it the answer's JSON `"id"` names the command. Returns false when no
    /// command of this device is waiting under that id (late, unknown or someone else's).
    pub fn resolve(
        &self,
        tenant: &str,
        device_id: &str,
        correlation: Option<&[u8]>,
        payload: &[u8],
    ) -> bool {
        let answer: Json = serde_json::from_slice(payload)
            .unwrap_or_else(|_| Json::String(String::from_utf8_lossy(payload).into_owned()));
        let id = match correlation.and_then(|c| std::str::from_utf8(c).ok()) {
            Some(id) => id.to_string(),
            None => match answer.get("id").and_then(Json::as_str) {
                Some(id) => id.to_string(),
                None => return false,
            },
        };
        let mut waiters = self.waiters.lock();
        let belongs = waiters
            .get(&id)
            .is_some_and(|w| w.tenant == tenant && w.device_id == device_id);
        if !belongs {
            return false;
        }
        match waiters.remove(&id) {
            Some(waiter) => waiter.answer.send(Outcome::Answer(answer)).is_ok(),
            None => false,
        }
    }

    /// Records that the device fetches its commands (it just made a request over a polling
    /// transport): from now on, within [`POLLER_TTL_MS`], commands no MQTT subscription takes
    /// wait for its next request instead of finishing as `undelivered`.
    pub fn note_poller(&self, tenant: &str, device_id: &str) {
        if !self.poll.lock().note(tenant, device_id, now_ms()) {
            tracing::warn!(
                tenant,
                device_id,
                "Too many polling devices; commands to this one are not queued."
            );
        }
    }

    /// Hands the device its queued commands, oldest first, as many as fit in `budget` bytes
    /// as a JSON array (the rest wait for its next request), and marks them `sent`. A command
    /// larger than `ceiling` (the transport's largest response) can never be carried and
    /// finishes as `undelivered`.
    pub async fn take_for_device(
        &self,
        tenant: &str,
        device_id: &str,
        budget: usize,
        ceiling: usize,
    ) -> Vec<PolledCommand> {
        let taken = self.poll.lock().take(tenant, device_id, budget, ceiling);
        for id in &taken.too_large {
            tracing::info!(tenant, device_id, command_id = %id, "Command too large for a polling device's response; undelivered.");
            if let Some(waiter) = self.waiters.lock().remove(id) {
                waiter.answer.send(Outcome::Undeliverable).ok();
            }
        }
        if taken.fits.is_empty() {
            return Vec::new();
        }
        let (tenant, ids) = (
            tenant.to_string(),
            taken
                .fits
                .iter()
                .map(|(id, _)| id.clone())
                .collect::<Vec<_>>(),
        );
        let sent = run_blocking(&self.registry, move |r| {
            let mut sent = Vec::with_capacity(ids.len());
            for id in &ids {
                match r.update_command(&tenant, id, CommandStatus::Sent, None, now_ms()) {
                    Ok(command) => sent.push(command),
                    // Already answered or timed out meanwhile: that final status stands.
                    Err(wulian_registry::Error::Conflict(_)) => {}
                    Err(error) => {
                        tracing::error!(command_id = %id, error = %error, "Could not mark command sent.")
                    }
                }
            }
            sent
        })
        .await;
        sent.iter().for_each(|command| self.announce(command));
        taken
            .fits
            .into_iter()
            .map(|(id, body)| PolledCommand { id, body })
            .collect()
    }

    async fn finish_record(
        &self,
        command: &Command,
        status: CommandStatus,
        response: Option<Json>,
    ) -> Result<Command, wulian_registry::Error> {
        let (tenant, id) = (command.tenant.clone(), command.id.clone());
        let done = run_blocking(&self.registry, move |r| {
            r.update_command(&tenant, &id, status, response.as_ref(), now_ms())
        })
        .await?;
        self.announce(&done);
        Ok(done)
    }
}

/// An answer that carries a non-null `"error"`, or `"status": "error" | "failed"`, is a failure.
fn answer_status(answer: &Json) -> CommandStatus {
    let has_error = answer.get("error").is_some_and(|e| !e.is_null());
    let failed_status = matches!(
        answer.get("status").and_then(Json::as_str),
        Some("error" | "failed")
    );
    if has_error || failed_status {
        CommandStatus::Failed
    } else {
        CommandStatus::Succeeded
    }
}

pub fn is_valid_command_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_COMMAND_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn new_command_id() -> String {
    wulian_registry::new_command_id()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified() {
        assert_eq!(
            answer_status(&json!({"ok": true})),
            CommandStatus::Succeeded
        );
        assert_eq!(
            answer_status(&json!({"error": null})),
            CommandStatus::Succeeded
        );
        assert_eq!(
            answer_status(&json!({"error": "jammed"})),
            CommandStatus::Failed
        );
        assert_eq!(
            answer_status(&json!({"status": "failed"})),
            CommandStatus::Failed
        );
        assert_eq!(answer_status(&json!("done")), CommandStatus::Succeeded);
    }

    #[test]
    fn command_names() {
        assert!(is_valid_command_name("reboot"));
        assert!(is_valid_command_name("set-interval.v2"));
        assert!(!is_valid_command_name(""));
        assert!(!is_valid_command_name("a/b"));
        assert!(!is_valid_command_name("+"));
        assert!(!is_valid_command_name(&"x".repeat(65)));
    }
}
