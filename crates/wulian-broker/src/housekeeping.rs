//! Time-driven work that belongs to no connection: closing connections that stayed silent past
//! their keep alive, ending persistent sessions whose expiry interval passed while the client
//! was offline, publishing wills whose delay
//! (MQTT 5.0 Will Delay Interval) ran out, and the periodic `$SYS` statistics. One task per broker, started by the first
//! listener and stopped with it; also home of [`end_session`], the one way a persistent
//! session ends (expiry, or a clean start replacing it).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::Shared;
use crate::connection::publish_will;
use crate::metrics::Metrics;
use crate::session::Persistent;
use crate::sys;

/// How often expiries and will delays are checked.
const TICK: Duration = Duration::from_millis(500);

/// Starts the housekeeping task unless it already runs.
pub(crate) fn start(shared: &Arc<Shared>, shutdown: &CancellationToken) {
    if shared.housekeeping_started.swap(true, Ordering::SeqCst) {
        return;
    }
    let shared = Arc::clone(shared);
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let sys_every = shared.config.sys_interval;
        let far = Duration::from_secs(86_400 * 365);
        let mut sys_tick = tokio::time::interval(if sys_every.is_zero() { far } else { sys_every });
        sys_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => sweep(&shared).await,
                _ = sys_tick.tick(), if !sys_every.is_zero() => sys::publish_stats(&shared),
            }
        }
        shared.housekeeping_started.store(false, Ordering::SeqCst);
    });
}

/// One pass over the connections' keep-alive deadlines and the persistent sessions.
async fn sweep(shared: &Arc<Shared>) {
    let expired = shared.sessions.expire_keep_alive(shared.clock_ms());
    if expired > 0 {
        debug!(connections = expired, "keep alive expired");
    }
    let now = Instant::now();
    for p in shared.sessions.all_persistent() {
        let (expired, will) = {
            let mut st = p.state.lock();
            if st.online.is_some() || st.ended {
                continue;
            }
            let expired = st.expiry_secs != u32::MAX
                && st.offline_since.is_some_and(|since| {
                    now.saturating_duration_since(since)
                        >= Duration::from_secs(u64::from(st.expiry_secs))
                });
            if expired {
                // Decided under the lock: a client resuming now finds the session ended.
                st.ended = true;
            }
            let will_due = st.will.as_ref().is_some_and(|w| w.due <= now);
            (expired, if will_due { st.will.take() } else { None })
        };
        if let Some(w) = will {
            debug!(tenant = %p.tenant, client_id = %p.client_id, "will delay passed, publishing will");
            publish_will(shared, &w.identity, w.will, None).await;
        }
        if expired {
            Metrics::inc(&shared.metrics.sessions_expired_total);
            info!(tenant = %p.tenant, client_id = %p.client_id, "persistent session expired");
            end_session(shared, &p).await;
        }
    }
}

/// Ends a persistent session: it stops receiving messages, is forgotten (memory and store),
/// and a will still waiting for its delay is published now (MQTT 5.0 3.1.3.2.2: the will is
/// sent when the delay passes or the session ends, whichever is first).
pub(crate) async fn end_session(shared: &Arc<Shared>, p: &Arc<Persistent>) {
    let will = {
        let mut st = p.state.lock();
        st.ended = true;
        st.queue.clear();
        st.inflight.clear();
        st.will.take()
    };
    if shared.sessions.remove_persistent(p) {
        Metrics::dec(&shared.metrics.sessions_persistent);
    }
    shared.router.unregister(&p.tenant, p.sub_id);
    let (tenant, client_id) = (p.tenant.clone(), p.client_id.clone());
    shared
        .store_write("delete session", move |s| {
            s.delete_session(&tenant, &client_id)
        })
        .await;
    if let Some(w) = will {
        publish_will(shared, &w.identity, w.will, None).await;
    }
}
