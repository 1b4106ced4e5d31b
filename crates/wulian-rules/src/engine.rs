//! The engine: the enabled rules of every tenant, a topic index per tenant, window state per
//! (rule, device), and the bounded queue that carries invocations to the host's executor.
//!
//! [`RuleEngine::process`] runs on the ingest path. It never blocks on actions: invocations
//! go to a queue bounded in invocations (`queue_capacity`), and what does not fit is dropped
//! and counted. The invocations of one message travel as one batch, so a message that fires
//! ten actions wakes the executor once, not ten times. Rule changes swap a tenant's rule set
//! atomically (copy on write), so ingest never waits for an edit.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::warn;

use crate::action::ActionInvocation;
use crate::rule::{Env, Message, Outcome, Rule};
use crate::topic::TopicIndex;
use crate::window::{DeviceMap, DeviceSlot, WindowLimits};
use crate::zones::ZoneResolver;

/// Engine settings. Defaults: a queue of 10 000 invocations and [`WindowLimits::default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Capacity of the invocation queue; beyond it invocations are dropped and counted.
    pub queue_capacity: usize,
    pub windows: WindowLimits,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            queue_capacity: 10_000,
            windows: WindowLimits::default(),
        }
    }
}

/// Counters for /metrics (suggested names in docs/rules.md), across all tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct RuleCounters {
    /// Rule evaluations (a message whose topic matched a rule's filter).
    pub evaluated: u64,
    /// Evaluations whose WHERE was true.
    pub matched: u64,
    /// Invocations queued for the executor.
    pub fired: u64,
    /// Evaluation errors plus actions that failed to render.
    pub errors: u64,
    /// Invocations dropped because the queue was full (or the executor gone).
    pub dropped: u64,
    /// Invocations the executor reported as failed.
    pub action_failures: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    evaluated: AtomicU64,
    matched: AtomicU64,
    fired: AtomicU64,
    errors: AtomicU64,
    dropped: AtomicU64,
    pub(crate) action_failures: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> RuleCounters {
        RuleCounters {
            evaluated: self.evaluated.load(Ordering::Relaxed),
            matched: self.matched.load(Ordering::Relaxed),
            fired: self.fired.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            action_failures: self.action_failures.load(Ordering::Relaxed),
        }
    }
}

/// Per-rule numbers for the API ("is my rule doing anything?").
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct RuleStats {
    pub evaluated: u64,
    pub matched: u64,
    pub errors: u64,
    /// The most recent evaluation or action-rendering error, if any.
    pub last_error: Option<String>,
    /// Devices with window or alarm state.
    pub tracked_devices: usize,
}

struct Installed {
    rule: Arc<Rule>,
    /// Names this rule's per-device state in the tenant's [`TenantState`]; kept when the rule
    /// is reinstalled with the same SQL, new otherwise.
    state_id: u64,
    evaluated: AtomicU64,
    matched: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Installed {
    fn new(rule: Arc<Rule>) -> Self {
        Installed {
            rule,
            state_id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            evaluated: AtomicU64::new(0),
            matched: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    fn record_error(&self, counters: &Counters, error: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        counters.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock() = Some(error);
    }
}

/// Source of state ids and rule-set generations.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Shards of a tenant's device state, so ingest threads working on different devices rarely
/// wait for each other.
const SHARDS: usize = 16;

/// A tenant's per-device state for all its stateful rules: one [`DeviceSlot`] per device, so
/// a message finds every rule's state with one lookup. It outlives rule-set changes.
struct TenantState {
    shards: Vec<Mutex<DeviceMap<DeviceSlot>>>,
}

impl TenantState {
    fn new() -> Arc<TenantState> {
        Arc::new(TenantState {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        })
    }

    fn shard(&self, device_id: &str) -> &Mutex<DeviceMap<DeviceSlot>> {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        device_id.hash(&mut h);
        &self.shards[(h.finish() % SHARDS as u64) as usize]
    }
}

/// A tenant's enabled rules, immutable: changes build a new one (copy on write).
struct TenantRules {
    rules: Vec<Arc<Installed>>,
    index: TopicIndex,
    state: Arc<TenantState>,
    /// Changes with every rebuild, so device slots drop the state of removed rules.
    generation: u64,
    /// State ids of the stateful rules.
    live_states: Vec<u64>,
    /// How long an idle device's state is kept: the configured TTL or the longest window.
    idle_ttl_ms: i64,
}

impl TenantRules {
    fn build(
        rules: Vec<Arc<Installed>>,
        state: Arc<TenantState>,
        limits: &WindowLimits,
    ) -> TenantRules {
        let mut index = TopicIndex::default();
        for (i, r) in rules.iter().enumerate() {
            index.insert(r.rule.topic_filter(), i);
        }
        let stateful = rules.iter().filter(|r| r.rule.is_stateful());
        let live_states = stateful.clone().map(|r| r.state_id).collect();
        let idle_ttl_ms = stateful
            .map(|r| r.rule.idle_ttl_ms(limits))
            .max()
            .unwrap_or(limits.idle_ttl_ms);
        TenantRules {
            rules,
            index,
            state,
            generation: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            live_states,
            idle_ttl_ms,
        }
    }
}

/// The receiving end of the invocation queue, for the host's executor task.
pub struct InvocationReceiver {
    rx: mpsc::UnboundedReceiver<Vec<ActionInvocation>>,
    pending: std::vec::IntoIter<ActionInvocation>,
    queued: Arc<AtomicUsize>,
    pub(crate) counters: Arc<Counters>,
}

impl InvocationReceiver {
    /// Takes the next invocation of the current batch, releasing its place in the queue.
    fn take_pending(&mut self) -> Option<ActionInvocation> {
        let inv = self.pending.next()?;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        Some(inv)
    }

    /// The next invocation; `None` once the engine is dropped and the queue drained.
    pub async fn recv(&mut self) -> Option<ActionInvocation> {
        loop {
            if let Some(inv) = self.take_pending() {
                return Some(inv);
            }
            self.pending = self.rx.recv().await?.into_iter();
        }
    }

    /// For a host that executes on a plain thread (not from inside an async runtime).
    pub fn blocking_recv(&mut self) -> Option<ActionInvocation> {
        loop {
            if let Some(inv) = self.take_pending() {
                return Some(inv);
            }
            self.pending = self.rx.blocking_recv()?.into_iter();
        }
    }

    /// The next invocation if one is waiting.
    pub fn try_recv(&mut self) -> Option<ActionInvocation> {
        loop {
            if let Some(inv) = self.take_pending() {
                return Some(inv);
            }
            self.pending = self.rx.try_recv().ok()?.into_iter();
        }
    }

    /// Counts an invocation the host failed to execute (shown as `action_failures`).
    pub fn record_failure(&self) {
        self.counters
            .action_failures
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// The rule engine of the whole installation (all tenants).
pub struct RuleEngine {
    tenants: RwLock<HashMap<String, Arc<TenantRules>>>,
    tx: mpsc::UnboundedSender<Vec<ActionInvocation>>,
    /// Invocations in the queue (sent, not yet taken by the receiver): the queue's bound.
    queued: Arc<AtomicUsize>,
    counters: Arc<Counters>,
    zones: Arc<dyn ZoneResolver>,
    config: EngineConfig,
}

impl RuleEngine {
    /// Creates the engine and the receiving end of its invocation queue.
    pub fn new(
        config: EngineConfig,
        zones: Arc<dyn ZoneResolver>,
    ) -> (RuleEngine, InvocationReceiver) {
        // Unbounded as a channel, bounded in invocations by `queued`: see `enqueue`.
        let (tx, rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let queued = Arc::new(AtomicUsize::new(0));
        let engine = RuleEngine {
            tenants: RwLock::new(HashMap::new()),
            tx,
            queued: queued.clone(),
            counters: counters.clone(),
            zones,
            config,
        };
        let receiver = InvocationReceiver {
            rx,
            pending: Vec::new().into_iter(),
            queued,
            counters,
        };
        (engine, receiver)
    }

    /// Installs (enables) a rule for a tenant, replacing the rule with the same id. Window
    /// and alarm state and the rule's stats survive when the SQL is unchanged (an edit of the
    /// actions only).
    pub fn install(&self, tenant: &str, rule: Rule) {
        let rule = Arc::new(rule);
        let mut tenants = self.tenants.write();
        let (current, state) = match tenants.get(tenant) {
            Some(t) => (t.rules.clone(), t.state.clone()),
            None => (Vec::new(), TenantState::new()),
        };
        let mut rules = Vec::with_capacity(current.len() + 1);
        let mut replaced = false;
        for r in current {
            if r.rule.id() == rule.id() {
                replaced = true;
                let mut installed = Installed::new(rule.clone());
                if r.rule.sql() == rule.sql() {
                    installed.state_id = r.state_id;
                    for (to, from) in [
                        (&installed.evaluated, &r.evaluated),
                        (&installed.matched, &r.matched),
                        (&installed.errors, &r.errors),
                    ] {
                        to.store(from.load(Ordering::Relaxed), Ordering::Relaxed);
                    }
                    *installed.last_error.lock() = r.last_error.lock().clone();
                }
                rules.push(Arc::new(installed));
            } else {
                rules.push(r);
            }
        }
        if !replaced {
            rules.push(Arc::new(Installed::new(rule)));
        }
        let built = TenantRules::build(rules, state, &self.config.windows);
        tenants.insert(tenant.to_string(), Arc::new(built));
    }

    /// Removes (disables) a rule; `false` if the tenant had no such rule.
    pub fn remove(&self, tenant: &str, rule_id: &str) -> bool {
        let mut tenants = self.tenants.write();
        let Some(current) = tenants.get(tenant) else {
            return false;
        };
        let before = current.rules.len();
        let rules: Vec<_> = current
            .rules
            .iter()
            .filter(|r| r.rule.id() != rule_id)
            .cloned()
            .collect();
        let removed = rules.len() != before;
        if rules.is_empty() {
            tenants.remove(tenant);
        } else if removed {
            let built = TenantRules::build(rules, current.state.clone(), &self.config.windows);
            tenants.insert(tenant.to_string(), Arc::new(built));
        }
        removed
    }

    /// Replaces all of a tenant's rules at once (start-up load). State is reset.
    pub fn replace_all(&self, tenant: &str, rules: Vec<Rule>) {
        let installed: Vec<_> = rules
            .into_iter()
            .map(|r| Arc::new(Installed::new(Arc::new(r))))
            .collect();
        let mut tenants = self.tenants.write();
        if installed.is_empty() {
            tenants.remove(tenant);
        } else {
            let built = TenantRules::build(installed, TenantState::new(), &self.config.windows);
            tenants.insert(tenant.to_string(), Arc::new(built));
        }
    }

    /// Whether any rule of the tenant listens on `topic`: lets the host skip building a
    /// [`Message`] (and parsing JSON) when no rule cares.
    pub fn wants(&self, tenant: &str, topic: &str) -> bool {
        let Some(t) = self.tenant(tenant) else {
            return false;
        };
        let mut hits = Vec::new();
        t.index.matching(topic, &mut hits);
        !hits.is_empty()
    }

    fn tenant(&self, tenant: &str) -> Option<Arc<TenantRules>> {
        self.tenants.read().get(tenant).cloned()
    }

    /// Evaluates the message against the tenant's rules whose filter matches its topic, and
    /// queues the resulting invocations. Returns how many were queued. Never blocks.
    pub fn process(&self, msg: &Message) -> usize {
        let Some(t) = self.tenant(&msg.tenant) else {
            return 0;
        };
        let mut hits = Vec::new();
        t.index.matching(&msg.topic, &mut hits);
        if hits.is_empty() {
            return 0;
        }
        // Rules run, and their actions queue, in installation order.
        hits.sort_unstable();
        let env = Env {
            now_ms: wulian_common::time::now_ms(),
            zones: self.zones.as_ref(),
            limits: &self.config.windows,
        };
        let now = Instant::now();
        let mut batch = Vec::new();
        // Totals are added once per message: the global counters are shared by every
        // ingest thread, and one contended add per rule would cost more than the rule.
        let (mut evaluated, mut matched) = (0, 0);
        // The device's slot is locked once for all its rules. Evaluation under the lock is
        // pure computation (plus the host's non-blocking zone lookups).
        let needs_state = hits
            .iter()
            .any(|&i| t.rules.get(i).is_some_and(|r| r.rule.is_stateful()));
        let mut shard = needs_state.then(|| t.state.shard(&msg.device_id).lock());
        let per_shard = self.config.windows.max_devices.div_ceil(SHARDS).max(1);
        let mut slot = shard.as_mut().and_then(|map| {
            let slot = map.get(&msg.device_id, env.now_ms, t.idle_ttl_ms, per_shard)?;
            slot.prune(t.generation, &t.live_states);
            Some(slot)
        });
        for i in hits {
            let Some(installed) = t.rules.get(i) else {
                continue;
            };
            let rule = &installed.rule;
            let device = match (&mut slot, rule.is_stateful()) {
                (Some(slot), true) => Some(slot.state(installed.state_id)),
                _ => None,
            };
            let ev = rule.evaluate_routed(msg, device, &env);
            evaluated += 1;
            installed.evaluated.fetch_add(1, Ordering::Relaxed);
            match &ev.outcome {
                Outcome::Matched(_) => {
                    matched += 1;
                    installed.matched.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Failed(e) => {
                    installed.record_error(&self.counters, e.to_string());
                }
                Outcome::NotMatched(_) | Outcome::TopicMismatch => {}
            }
            if !ev.actions.is_empty() {
                for inv in rule.invocations(msg, ev.actions, now) {
                    match inv {
                        Ok(inv) => batch.push(inv),
                        Err(e) => installed.record_error(&self.counters, e),
                    }
                }
            }
        }
        drop(shard);
        self.counters
            .evaluated
            .fetch_add(evaluated, Ordering::Relaxed);
        if matched > 0 {
            self.counters.matched.fetch_add(matched, Ordering::Relaxed);
        }
        self.enqueue(batch)
    }

    /// Queues what fits (first come, first kept), drops and counts the rest; returns how
    /// many were queued.
    fn enqueue(&self, mut batch: Vec<ActionInvocation>) -> usize {
        let n = batch.len();
        if n == 0 {
            return 0;
        }
        let capacity = self.config.queue_capacity.max(1);
        let before = self.queued.fetch_add(n, Ordering::AcqRel);
        let room = capacity.saturating_sub(before).min(n);
        if room < n {
            self.queued.fetch_sub(n - room, Ordering::AcqRel);
            self.note_dropped(&batch[room], n - room, "queue full");
            batch.truncate(room);
        }
        if room == 0 {
            return 0;
        }
        match self.tx.send(batch) {
            Ok(()) => {
                self.counters
                    .fired
                    .fetch_add(room as u64, Ordering::Relaxed);
                room
            }
            Err(mpsc::error::SendError(batch)) => {
                self.queued.fetch_sub(room, Ordering::AcqRel);
                self.note_dropped(&batch[0], room, "executor gone");
                0
            }
        }
    }

    fn note_dropped(&self, first: &ActionInvocation, n: usize, reason: &'static str) {
        let before = self.counters.dropped.fetch_add(n as u64, Ordering::Relaxed);
        // Logged when the total crosses a power of two, so that a stuck executor does not
        // flood the log.
        let after = before + n as u64;
        if before == 0 || (before + 1).next_power_of_two() <= after {
            warn!(
                tenant = %first.tenant,
                rule = %first.rule_id,
                dropped_total = after,
                reason,
                "Rule actions dropped."
            );
        }
    }

    /// Totals across all tenants.
    pub fn counters(&self) -> RuleCounters {
        self.counters.snapshot()
    }

    /// Numbers of one installed rule, `None` if it is not installed.
    pub fn rule_stats(&self, tenant: &str, rule_id: &str) -> Option<RuleStats> {
        let t = self.tenant(tenant)?;
        let r = t.rules.iter().find(|r| r.rule.id() == rule_id)?;
        // A scan of the tenant's devices, one shard locked at a time: for the API, not ingest.
        let tracked_devices = if r.rule.is_stateful() {
            t.state
                .shards
                .iter()
                .map(|s| s.lock().values().filter(|d| d.has(r.state_id)).count())
                .sum()
        } else {
            0
        };
        Some(RuleStats {
            evaluated: r.evaluated.load(Ordering::Relaxed),
            matched: r.matched.load(Ordering::Relaxed),
            errors: r.errors.load(Ordering::Relaxed),
            last_error: r.last_error.lock().clone(),
            tracked_devices,
        })
    }

    /// Installed rule ids of a tenant.
    pub fn rule_ids(&self, tenant: &str) -> Vec<String> {
        self.tenant(tenant)
            .map(|t| t.rules.iter().map(|r| r.rule.id().to_string()).collect())
            .unwrap_or_default()
    }

    /// Invocations waiting in the queue (a gauge for /metrics).
    pub fn queue_len(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests;
