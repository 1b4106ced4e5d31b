//! Commands to devices: an application asks, the device answers, the platform keeps the record.
//!
//! Life of a command (docs/architecture.md): the record is stored as `pending`, published to
//! `devices/{id}/commands/{name}` at QoS 1 with the JSON body `{"id", "name", "params"}` (MQTT 5
//! devices also get a response topic and the command id as correlation data), and marked `sent`
//! — or `undelivered` when the device has no subscription to receive it. The device answers on
//! `devices/{id}/commands/{name}/response`; the first answer finishes the command as `succeeded`
//! (or `failed` when the answer carries `"error"`), and no answer within the timeout finishes it
//! as `timed_out`. Every state is written to the registry, so status stays queryable.

use std::collections::HashMap;
use std::sync::Arc;
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

/// A command that has been stored and sent. `finished` resolves with the final record.
pub struct SentCommand {
    pub command: Command,
    pub finished: oneshot::Receiver<Command>,
}

struct Waiter {
    tenant: String,
    device_id: String,
    answer: oneshot::Sender<Json>,
}

pub struct CommandService {
    registry: Arc<Registry>,
    broker: Broker,
    // Short critical sections only (insert/remove), never held across an await.
    waiters: Mutex<HashMap<String, Waiter>>,
}

impl CommandService {
    pub fn new(registry: Arc<Registry>, broker: Broker) -> Arc<CommandService> {
        Arc::new(CommandService {
            registry,
            broker,
            waiters: Mutex::new(HashMap::new()),
        })
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
        let delivered = self.broker.publish(
            tenant,
            OutboundMessage {
                topic: topics::command_topic(device_id, &command.name),
                payload: Bytes::from(body.to_string()),
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
        let status = if delivered == 0 {
            self.waiters.lock().remove(&command.id);
            CommandStatus::Undelivered
        } else {
            CommandStatus::Sent
        };
        let command = self.finish_record(&command, status, None).await?;

        let (finished_tx, finished_rx) = oneshot::channel();
        if status.is_final() {
            // The caller may have stopped waiting (wait = false); the record is stored anyway.
            finished_tx.send(command.clone()).ok();
        } else {
            let service = Arc::clone(self);
            let record = command.clone();
            tokio::spawn(async move {
                let (status, response) = match tokio::time::timeout(req.timeout, answer_rx).await {
                    Ok(Ok(answer)) => (answer_status(&answer), Some(answer)),
                    // The waiter was dropped without an answer, or time ran out.
                    Ok(Err(_)) | Err(_) => (CommandStatus::TimedOut, None),
                };
                service.waiters.lock().remove(&record.id);
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
            Some(waiter) => waiter.answer.send(answer).is_ok(),
            None => false,
        }
    }

    async fn finish_record(
        &self,
        command: &Command,
        status: CommandStatus,
        response: Option<Json>,
    ) -> Result<Command, wulian_registry::Error> {
        let (tenant, id) = (command.tenant.clone(), command.id.clone());
        run_blocking(&self.registry, move |r| {
            r.update_command(&tenant, &id, status, response.as_ref(), now_ms())
        })
        .await
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
