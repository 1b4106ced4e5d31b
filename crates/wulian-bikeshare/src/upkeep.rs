//! Background upkeep: recovery after a restart, deadlines (unlocks, grace periods), trips whose
//! end signal was lost, fence and fleet refreshes, and the reduction of old routes.

use wulian_common::time::now_ms;

use crate::service::BikeShare;
use crate::trips::{self, TripState};

impl BikeShare {
    /// After a restart: unlocks whose deadline passed while the platform was down failed;
    /// riding trips whose lock reported closed while we were down end now.
    pub(crate) async fn recover(&self) {
        let live = match self.db.run(|c| Ok(trips::all_live(c)?)).await {
            Ok(l) => l,
            Err(error) => {
                tracing::error!(%error, "Could not read live trips at start.");
                return;
            }
        };
        for trip in live {
            let interrupted = matches!(trip.state, TripState::Requested | TripState::Unlocking)
                && now_ms() > trip.token_expires_at;
            if interrupted
                && let Err(error) = self
                    .fail_unlock(
                        &trip.tenant,
                        &trip.bike,
                        &trip.id,
                        "the platform restarted during the unlock",
                    )
                    .await
            {
                tracing::warn!(%error, trip = %trip.id, "Could not fail an interrupted unlock.");
            }
        }
    }

    pub(crate) async fn sweep(&self, ticks: u64) {
        let now = now_ms();
        let tenants: Vec<String> = self.tenants.read().keys().cloned().collect();
        for tenant in &tenants {
            // Grace periods that ran out settle with the dispatch fee; unlocks that outlived
            // their deadline (the waiting request was lost) fail; a riding trip whose lock
            // reported closed without a signal reaching us ends.
            let (t, due) = (tenant.clone(), now);
            let overdue = self
                .db
                .run(move |c| {
                    let live = trips::all_live(c)?;
                    Ok(live
                        .into_iter()
                        .filter(|tr| tr.tenant == t)
                        .collect::<Vec<_>>())
                })
                .await
                .unwrap_or_default();
            for trip in overdue {
                let result = match trip.state {
                    TripState::Ending if trip.grace_until.is_some_and(|g| g <= due) => {
                        self.settle(tenant, &trip.id).await.map(|_| ())
                    }
                    TripState::Requested | TripState::Unlocking
                        if due > trip.token_expires_at + 30_000 =>
                    {
                        self.fail_unlock(
                            tenant,
                            &trip.bike,
                            &trip.id,
                            "no confirmation before the deadline",
                        )
                        .await
                    }
                    TripState::Riding => {
                        let closed = self.snapshot(tenant, &trip.bike).filter(|s| {
                            s.locked == Some(true)
                                && s.reported_at.is_some_and(|r| {
                                    trip.unlocked_at.is_some_and(|u| r > u + 1_000)
                                })
                        });
                        match closed {
                            Some(s) => {
                                self.lock_closed(
                                    tenant,
                                    &trip.bike,
                                    s.reported_at.unwrap_or(due),
                                    s.position(),
                                )
                                .await
                            }
                            None => Ok(()),
                        }
                    }
                    _ => Ok(()),
                };
                if let Err(error) = result {
                    tracing::warn!(%error, trip = %trip.id, "Trip deadline handling failed.");
                }
            }
            if let Err(error) = self.refresh_fences(tenant).await {
                tracing::warn!(%error, tenant, "Reloading fences failed.");
            }
            if ticks.is_multiple_of(30)
                && let Err(error) = self.refresh_bikes(tenant).await
            {
                tracing::warn!(%error, tenant, "Refreshing the fleet failed.");
            }
            if ticks % 3600 == 1 {
                let days = self
                    .settings(tenant)
                    .map(|s| s.route_retention_days)
                    .unwrap_or(30);
                let before = now - i64::from(days) * 86_400_000;
                match self
                    .db
                    .tx(move |c| Ok(trips::reduce_routes(c, before)?))
                    .await
                {
                    Ok(n) if n > 0 => {
                        tracing::info!(tenant, trips = n, "Routes past retention reduced to cells.")
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "Reducing routes failed."),
                }
            }
        }
    }
}
