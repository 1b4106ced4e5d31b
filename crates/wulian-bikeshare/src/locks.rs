//! What locks do beyond the trip flow: their events (confirmations, closing, falls, tampering)
//! and the work orders they open; the operator's work-order updates.

use wulian_common::time::now_ms;

use crate::error::Result;
use crate::service::{BikeShare, Signal};
use crate::{lock, system, vehicle_events, workorders};

impl BikeShare {
    pub(crate) async fn handle(&self, signal: Signal) {
        let closing = matches!(&signal, Signal::Closed { .. })
            || matches!(&signal, Signal::Event { name, .. } if name == "locked");
        let _slot = match closing {
            true => self.closing.acquire().await.ok(),
            false => None,
        };
        let result = match &signal {
            Signal::Closed { tenant, bike, at } => self.lock_closed(tenant, bike, *at, None).await,
            Signal::Event {
                tenant,
                bike,
                name,
                payload,
            } => self.on_event(tenant, bike, name, payload).await,
        };
        if let Err(error) = result {
            tracing::warn!(?signal, %error, "Handling a lock signal failed.");
        }
    }

    pub(crate) async fn on_event(
        &self,
        tenant: &str,
        bike: &str,
        name: &str,
        payload: &[u8],
    ) -> Result<()> {
        let Some(event) = lock::LockEvent::parse(payload) else {
            tracing::debug!(
                tenant,
                bike,
                name,
                "Lock event is not a JSON object; ignored."
            );
            return Ok(());
        };
        let at = event.ts.unwrap_or_else(now_ms);
        match name {
            "unlocked" => {
                if let (Some(trip), Some(token)) = (&event.trip_id, &event.token) {
                    self.confirm_unlock(tenant, bike, trip, token, at).await?;
                }
            }
            "locked" => {
                self.lock_closed(tenant, bike, at, event.position()).await?;
            }
            other => {
                if let Some(kind) = lock::needs_attention(other) {
                    let kind = workorders::Kind::parse(kind).unwrap_or(workorders::Kind::Inspect);
                    let on_trip = self.live_trip(tenant, bike).is_some();
                    // A fall during a ride is the rider's business; a parked bike that falls or
                    // moves needs a visit.
                    if !(on_trip && other == "fall") {
                        self.open_work_order(
                            tenant,
                            bike,
                            kind,
                            &format!("lock reported {other}"),
                            "system",
                            None,
                        )
                        .await?;
                    }
                }
            }
        }
        Ok(())
    }

    pub async fn open_work_order(
        &self,
        tenant: &str,
        bike: &str,
        kind: workorders::Kind,
        reason: &str,
        by: &str,
        assignee: Option<&str>,
    ) -> Result<workorders::WorkOrder> {
        let (t, b, r, by_) = (
            tenant.to_string(),
            bike.to_string(),
            reason.to_string(),
            by.to_string(),
        );
        let assignee = workorders::check_assignee(assignee)?;
        let position = self.snapshot(tenant, bike).and_then(|s| s.position());
        // A bike on a trip stays `on_trip` for the city; the settlement records it leaving
        // service right after the trip ends (MDS allows no maintenance during a trip).
        let on_trip = self.live_trip(tenant, bike).is_some();
        let (order, new) = self
            .db
            .tx(move |tx| {
                let id = crate::ids::new_id("wo")?;
                let now = now_ms();
                let (order, new) = workorders::open(
                    tx,
                    &t,
                    &id,
                    &workorders::NewOrder {
                        bike: &b,
                        kind,
                        reason: &r,
                        target_cell: None,
                        created_by: &by_,
                        assignee: assignee.as_deref(),
                    },
                    now,
                )?;
                if new && kind.takes_bike_out() && !on_trip {
                    vehicle_events::record(
                        tx,
                        &t,
                        &vehicle_events::NewEvent {
                            bike: &b,
                            at: now,
                            change: vehicle_events::leaving_service(kind),
                            trip: None,
                            position,
                            battery: None,
                        },
                    )?;
                }
                Ok((order, new))
            })
            .await?;
        if new && kind.takes_bike_out() {
            let mut tenants = self.tenants.write();
            if let Some(b) = tenants.get_mut(tenant).and_then(|t| t.bikes.get_mut(bike)) {
                b.out_of_service = Some(kind);
            }
        }
        Ok(order)
    }

    /// Moves a work order on; finishing the last open order of a bike returns it to service
    /// (and clears an unlock-failure flag when the order was the inspection it opened).
    pub async fn update_work_order(
        &self,
        tenant: &str,
        id: &str,
        change: workorders::Change,
    ) -> Result<workorders::WorkOrder> {
        let (t, i) = (tenant.to_string(), id.to_string());
        let position_of = |bike: &str| self.snapshot(tenant, bike).and_then(|s| s.position());
        let pre = {
            let (t, i) = (t.clone(), i.clone());
            self.db.run(move |c| workorders::get(c, &t, &i)).await?
        };
        let position = pre.as_ref().and_then(|o| position_of(&o.bike));
        // On a trip the bike never left service for the city (see `open_work_order`).
        let on_trip = pre
            .as_ref()
            .is_some_and(|o| self.live_trip(tenant, &o.bike).is_some());
        let (order, back) = self
            .db
            .tx(move |tx| {
                let now = now_ms();
                let order = workorders::update(tx, &t, &i, &change, now)?;
                let finished = matches!(
                    change.state,
                    Some(workorders::State::Done | workorders::State::Cancelled)
                );
                let still_out = workorders::out_of_service_kind(tx, &t, &order.bike)?;
                if finished && still_out.is_none() {
                    system::set_flag(tx, &t, &order.bike, None)?;
                    if order.kind.takes_bike_out() && !on_trip {
                        vehicle_events::record(
                            tx,
                            &t,
                            &vehicle_events::NewEvent {
                                bike: &order.bike,
                                at: now,
                                change: if order.kind == workorders::Kind::Battery {
                                    vehicle_events::BATTERY_CHARGED
                                } else {
                                    vehicle_events::MAINTENANCE_END
                                },
                                trip: None,
                                position,
                                battery: None,
                            },
                        )?;
                    }
                }
                Ok((order, (finished, still_out)))
            })
            .await?;
        let (finished, still_out) = back;
        if finished {
            let mut tenants = self.tenants.write();
            if let Some(b) = tenants
                .get_mut(tenant)
                .and_then(|t| t.bikes.get_mut(&order.bike))
            {
                b.out_of_service = still_out;
                if still_out.is_none() {
                    b.flagged = None;
                }
            }
        }
        Ok(order)
    }
}
