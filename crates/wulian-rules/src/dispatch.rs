//! The executor side: the host implements [`ActionExecutor`]; [`InvocationReceiver::run`]
//! feeds it from the queue.

use std::future::Future;

use tracing::warn;

use crate::action::ActionInvocation;
use crate::engine::InvocationReceiver;

/// Why an action failed, as the host reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ActionError(pub String);

/// Carries out invocations: raise/clear alarms, publish, send commands, write telemetry,
/// call webhooks. Implemented by the host; the crate performs no side effects itself.
///
/// `run` awaits one `execute` at a time, so a slow action delays the ones behind it (never
/// ingest: the queue in front is bounded and drops when full). An executor with slow
/// actions (webhooks) should spawn them onto its own bounded pool and return.
pub trait ActionExecutor: Send + Sync {
    fn execute(
        &self,
        invocation: ActionInvocation,
    ) -> impl Future<Output = Result<(), ActionError>> + Send;
}

impl InvocationReceiver {
    /// Feeds every invocation to `executor` until the engine is dropped. Failures are
    /// counted (`action_failures`) and logged.
    pub async fn run<E: ActionExecutor>(mut self, executor: E) {
        while let Some(inv) = self.recv().await {
            let (tenant, rule, index) = (inv.tenant.clone(), inv.rule_id.clone(), inv.action_index);
            if let Err(e) = executor.execute(inv).await {
                self.record_failure();
                warn!(tenant = %tenant, rule = %rule, action = index, error = %e, "Rule action failed.");
            }
        }
    }
}
