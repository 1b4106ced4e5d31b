//! The trip flow across the platform's services: renting (the unlock command and the lock's
//! confirmation), ending (the lock closing), settling (fare, ledger, route) and resuming a
//! trip held outside the fences.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use wulian_common::time::now_ms;
use wulian_ingest::CommandRequest;

use crate::error::{Error, Result};
use crate::fleet::Status;
use crate::service::{BikeShare, hash_token, not_enabled};
use crate::system::{self, ParkingPolicy};
use crate::trips::{self, Trip, TripState};
use crate::{lock, vehicle_events, workorders};

impl BikeShare {
    /// Rents a bike: checks rider and bike, records the trip, sends the unlock command with a
    /// single-use token and waits for the lock's confirmation. The trip is `riding` only if
    /// the lock confirmed with the token; otherwise it is `failed` and nothing is charged.
    /// A retried call with the same idempotency key returns the same trip.
    pub async fn start_trip(
        &self,
        tenant: &str,
        rider: &str,
        bike: &str,
        idempotency_key: Option<String>,
    ) -> Result<Trip> {
        if let Some(key) = &idempotency_key {
            check_idempotency_key(key)?;
            let (t, r, k) = (tenant.to_string(), rider.to_string(), key.clone());
            if let Some(existing) = self
                .db
                .run(move |c| Ok(trips::by_idempotency_key(c, &t, &r, &k)?))
                .await?
            {
                return self.settled_view(existing).await;
            }
        }
        self.metrics.trips_requested.fetch_add(1, Ordering::Relaxed);
        let now = now_ms();
        let (settings, start, plan_id) = {
            let tenants = self.tenants.read();
            let t = tenants.get(tenant).ok_or_else(not_enabled)?;
            let b = t
                .bikes
                .get(bike)
                .ok_or_else(|| Error::not_found("bike_not_found", format!("no bike {bike}")))?;
            let refusal = match t.status(b, now) {
                Status::Available | Status::OutOfFence => None,
                Status::OnTrip => Some(("bike_unavailable", "is rented")),
                Status::LowBattery => Some(("bike_battery_low", "has too little battery to ride")),
                Status::Faulty => Some(("bike_faulty", "is out of service")),
                Status::Unknown => Some(("bike_offline", "has not reported recently")),
            };
            if let Some((code, why)) = refusal {
                return Err(Error::conflict(code, format!("bike {bike} {why}")));
            }
            if let Some((lat, lon)) = b.snapshot.position()
                && !t.fences.locate(lat, lon).in_service_area
            {
                return Err(Error::conflict(
                    "outside_service_area",
                    format!("bike {bike} is outside the service area"),
                ));
            }
            (
                t.settings.clone(),
                b.snapshot.position(),
                t.settings.default_plan.clone(),
            )
        };
        let token = format!("u1.{}", crate::ids::random_hex(16)?);
        let trip_id = crate::ids::new_id("t")?;
        let expires_at = now + i64::from(settings.unlock_timeout_s) * 1000;
        let trip = {
            let (t, r, b, id, key, th) = (
                tenant.to_string(),
                rider.to_string(),
                bike.to_string(),
                trip_id.clone(),
                idempotency_key.clone(),
                hash_token(&token),
            );
            self.db
                .tx(move |tx| {
                    crate::wallet::check_can_ride(tx, &t, &r)?;
                    let inserted = trips::insert(
                        tx,
                        &trips::NewTrip {
                            id: &id,
                            tenant: &t,
                            rider: &r,
                            bike: &b,
                            plan_id: &plan_id,
                            idempotency_key: key.as_deref(),
                            token_hash: &th,
                            token_expires_at: expires_at,
                            start,
                            now,
                        },
                    );
                    match inserted {
                        Ok(trip) => {
                            trips::transition(
                                tx,
                                &t,
                                &id,
                                TripState::Requested,
                                TripState::Unlocking,
                                &[],
                                now,
                                Some("unlock sent"),
                            )?;
                            Ok(Ok(trip))
                        }
                        Err(trips::TripStoreError::BikeBusy) => Err(Error::conflict(
                            "bike_unavailable",
                            format!("bike {b} is rented"),
                        )),
                        Err(trips::TripStoreError::RiderBusy) => Err(Error::conflict(
                            "trip_in_progress",
                            "you already have a trip running",
                        )),
                        Err(trips::TripStoreError::Sql(e)) => {
                            // Two retries of one request racing: the second finds the first.
                            if let Some(k) = &key
                                && let Some(existing) = trips::by_idempotency_key(tx, &t, &r, k)?
                            {
                                return Ok(Err(existing));
                            }
                            Err(e.into())
                        }
                    }
                })
                .await?
        };
        let trip = match trip {
            Ok(trip) => trip,
            Err(existing) => return Ok(existing),
        };
        self.set_live(tenant, bike, Some((trip.id.clone(), TripState::Unlocking)));

        let request = CommandRequest {
            name: "unlock".into(),
            params: json!({"trip_id": trip.id, "token": token, "expires_at": expires_at}),
            timeout: Duration::from_secs(u64::from(settings.unlock_timeout_s)),
        };
        let outcome = match self.platform.commands.send(tenant, bike, request).await {
            // The command's own record (the device's command history) links to the trip by
            // its `trip_id` parameter; the trip needs no second write for it.
            Ok(sent) => match sent.finished.await {
                Ok(done) => unlock_answer(&done, &token),
                Err(_) => Err("the command was dropped".to_string()),
            },
            Err(e) => Err(format!("command refused: {e}")),
        };
        match outcome {
            Ok(()) => {
                self.confirm_unlock(tenant, bike, &trip.id, &token, now_ms())
                    .await?;
            }
            Err(reason) => {
                self.fail_unlock(tenant, bike, &trip.id, &reason).await?;
            }
        }
        self.trip(tenant, &trip.id).await
    }

    /// A lock's confirmation (its command answer or its `unlocked` event): starts the trip if
    /// the token is the one issued for this trip and bike and has not expired. Returns
    /// whether the trip started now (false: already started, or refused).
    pub async fn confirm_unlock(
        &self,
        tenant: &str,
        bike: &str,
        trip_id: &str,
        token: &str,
        at: i64,
    ) -> Result<bool> {
        let position = self.snapshot(tenant, bike).and_then(|s| s.position());
        let (t, b, id, th) = (
            tenant.to_string(),
            bike.to_string(),
            trip_id.to_string(),
            hash_token(token),
        );
        let started = self
            .db
            .tx(move |tx| {
                let Some(trip) = trips::get(tx, &t, &id)? else {
                    return Ok(false);
                };
                // Constant-time comparison is not needed: the stored value is a hash.
                if trip.bike != b || trip.token_hash != th {
                    tracing::warn!(tenant = %t, bike = %b, trip = %id, "Unlock confirmation with a wrong token or bike refused.");
                    return Ok(false);
                }
                let now = now_ms();
                // A confirmation after the token expired is refused: the trip has failed.
                if now > trip.token_expires_at + 2_000 {
                    return Ok(false);
                }
                let start = trip.start.map(|p| (p[0], p[1])).or(position);
                let (lat, lon) = (start.map(|p| p.0), start.map(|p| p.1));
                let moved = trips::transition(
                    tx,
                    &t,
                    &id,
                    TripState::Unlocking,
                    TripState::Riding,
                    &[("unlocked_at", &at), ("start_lat", &lat), ("start_lon", &lon)],
                    now,
                    Some("lock confirmed"),
                )?;
                if moved {
                    vehicle_events::record(
                        tx,
                        &t,
                        &vehicle_events::NewEvent {
                            bike: &b,
                            at,
                            change: vehicle_events::TRIP_START,
                            trip: Some(&id),
                            position: start,
                            battery: None,
                        },
                    )?;
                }
                Ok(moved)
            })
            .await?;
        if started {
            self.metrics.trips_started.fetch_add(1, Ordering::Relaxed);
            self.set_live(tenant, bike, Some((trip_id.to_string(), TripState::Riding)));
        }
        Ok(started)
    }

    pub(crate) async fn fail_unlock(
        &self,
        tenant: &str,
        bike: &str,
        trip_id: &str,
        reason: &str,
    ) -> Result<()> {
        let (t, b, id, why) = (
            tenant.to_string(),
            bike.to_string(),
            trip_id.to_string(),
            reason.to_string(),
        );
        let failed = self
            .db
            .tx(move |tx| {
                let now = now_ms();
                let mut failed = false;
                for from in [TripState::Unlocking, TripState::Requested] {
                    failed |= trips::transition(
                        tx,
                        &t,
                        &id,
                        from,
                        TripState::Failed,
                        &[("failure", &why)],
                        now,
                        Some(&why),
                    )?;
                }
                if failed {
                    let flag = format!("unlock failed: {why}");
                    system::set_flag(tx, &t, &b, Some(&flag))?;
                    let order_id = crate::ids::new_id("wo")?;
                    workorders::open(
                        tx,
                        &t,
                        &order_id,
                        &workorders::NewOrder {
                            bike: &b,
                            kind: workorders::Kind::Inspect,
                            reason: &flag,
                            target_cell: None,
                            created_by: "system",
                            assignee: None,
                        },
                        now,
                    )?;
                }
                Ok(failed.then_some(flag_text(&why)))
            })
            .await?;
        if let Some(flag) = failed {
            self.metrics.trips_failed.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                tenant,
                bike,
                trip = trip_id,
                reason,
                "Unlock failed; bike flagged."
            );
            let mut tenants = self.tenants.write();
            if let Some(b) = tenants.get_mut(tenant).and_then(|t| t.bikes.get_mut(bike)) {
                if b.trip.as_ref().is_some_and(|(id, _)| id == trip_id) {
                    b.trip = None;
                }
                b.flagged = Some(flag);
                b.out_of_service = Some(workorders::Kind::Inspect);
            }
        }
        Ok(())
    }

    /// The lock reported its shackle closed at `at`: a riding trip moves to `ending` and is
    /// settled, or held for the grace period when the bike stands outside every parking fence.
    pub async fn lock_closed(
        &self,
        tenant: &str,
        bike: &str,
        at: i64,
        position: Option<(f64, f64)>,
    ) -> Result<()> {
        let Some((trip_id, TripState::Riding)) = self.live_trip(tenant, bike) else {
            return Ok(());
        };
        let position = position.or_else(|| self.snapshot(tenant, bike).and_then(|s| s.position()));
        let (t, id) = (tenant.to_string(), trip_id.clone());
        let (lat, lon) = (position.map(|p| p.0), position.map(|p| p.1));
        let ending = self
            .db
            .tx(move |tx| {
                let Some(trip) = trips::get(tx, &t, &id)? else {
                    return Ok(false);
                };
                // A `locked` report older than the unlock is a late upload from before the trip.
                if trip.unlocked_at.is_some_and(|u| at < u) {
                    return Ok(false);
                }
                Ok(trips::transition(
                    tx,
                    &t,
                    &id,
                    TripState::Riding,
                    TripState::Ending,
                    &[("locked_at", &at), ("end_lat", &lat), ("end_lon", &lon)],
                    now_ms(),
                    Some("lock closed"),
                )?)
            })
            .await?;
        if !ending {
            return Ok(());
        }
        self.set_live(tenant, bike, Some((trip_id.clone(), TripState::Ending)));
        // Where the bike stands decides the fare: judge it by the zones as they are now.
        if let Err(error) = self.refresh_fences(tenant).await {
            tracing::warn!(tenant, %error, "Could not check the zones for changes.");
        }
        let (parkable, policy, grace) = {
            let tenants = self.tenants.read();
            let t = tenants.get(tenant).ok_or_else(not_enabled)?;
            let parkable = position.is_some_and(|(lat, lon)| t.fences.locate(lat, lon).parkable());
            (
                parkable,
                t.settings.parking_policy,
                t.settings.grace_minutes,
            )
        };
        if parkable || policy == ParkingPolicy::Fee || grace == 0 {
            self.settle(tenant, &trip_id).await?;
        } else {
            let until = now_ms() + i64::from(grace) * 60_000;
            let (t, id) = (tenant.to_string(), trip_id.clone());
            self.db
                .tx(move |c| {
                    c.execute(
                        "UPDATE trips SET grace_until = ?3, out_of_fence = 1 WHERE tenant = ?1 AND id = ?2",
                        rusqlite::params![t, id, until],
                    )?;
                    Ok(())
                })
                .await?;
        }
        Ok(())
    }

    /// Settles an `ending` trip: where the bike stands decides the fare (parking fence or the
    /// dispatch fee); the charge goes to the ledger in the same transaction as the state.
    pub async fn settle(&self, tenant: &str, trip_id: &str) -> Result<Trip> {
        let trip = self.trip(tenant, trip_id).await?;
        if trip.state != TripState::Ending {
            return Ok(trip);
        }
        let (plan, passes, placement, start_cell, end_cell, utc_offset) = {
            let tenants = self.tenants.read();
            let t = tenants.get(tenant).ok_or_else(not_enabled)?;
            let plan = t
                .plan(&trip.plan_id)
                .or_else(|| t.plans.first())
                .cloned()
                .ok_or_else(|| Error::Internal(format!("no pricing plan {}", trip.plan_id)))?;
            let placement = trip.end.map(|[lat, lon]| {
                let p = t.fences.locate(lat, lon);
                (p.parkable(), p.parking.map(str::to_string))
            });
            let cell = |p: Option<[f64; 2]>| {
                p.and_then(|[lat, lon]| {
                    crate::cells::cell(lat, lon, crate::cells::DEFAULT_RESOLUTION).ok()
                })
            };
            (
                plan,
                t.passes.clone(),
                placement,
                cell(trip.start),
                cell(trip.end),
                crate::wallet::utc_offset_minutes(&t.settings.timezone),
            )
        };
        let (parkable, zone) = placement.unwrap_or((false, None));
        let route = self.route(tenant, &trip).await;
        let distance = route_distance(&route);
        let (t, id) = (tenant.to_string(), trip_id.to_string());
        let rider = trip.rider.clone();
        let bike = trip.bike.clone();
        let settled = self
            .db
            .tx(move |tx| {
                let Some(trip) = trips::get(tx, &t, &id)? else {
                    return Ok(None);
                };
                if trip.state != TripState::Ending {
                    return Ok(None);
                }
                let now = now_ms();
                let unlocked = trip.unlocked_at.unwrap_or(trip.requested_at);
                let locked = trip.locked_at.unwrap_or(now);
                let duration = (locked - unlocked).max(0);
                let fare = crate::wallet::price_trip(
                    tx, &rider, &plan, &passes, unlocked, duration, !parkable, utc_offset,
                )?;
                let journal = crate::wallet::charge(tx, &rider, &id, &fare, now)?;
                let consent = crate::wallet::location_consent(tx, &rider)?;
                let route_json = consent.then(|| route_value(&route)).map(|v| v.to_string());
                let fare_json =
                    serde_json::to_string(&fare).map_err(|e| Error::Internal(e.to_string()))?;
                let (total, ride_charge) = (fare.total, fare.ride_charge());
                let out_of_fence = i64::from(!parkable);
                let moved = trips::transition(
                    tx,
                    &t,
                    &id,
                    TripState::Ending,
                    TripState::Settled,
                    &[
                        ("settled_at", &now),
                        ("duration_ms", &duration),
                        ("distance_m", &distance),
                        ("fare", &fare_json),
                        ("total", &total),
                        ("ride_charge", &ride_charge),
                        ("journal_id", &journal),
                        ("end_zone", &zone),
                        ("out_of_fence", &out_of_fence),
                        ("start_cell", &start_cell),
                        ("end_cell", &end_cell),
                        ("route", &route_json),
                    ],
                    now,
                    Some(if parkable {
                        "settled in a parking fence"
                    } else {
                        "settled outside the fences"
                    }),
                )?;
                if !moved {
                    return Err(Error::conflict(
                        "trip_changed",
                        "the trip changed while settling",
                    ));
                }
                system::count_trip_end(tx, &t, &bike, locked)?;
                vehicle_events::record(
                    tx,
                    &t,
                    &vehicle_events::NewEvent {
                        bike: &bike,
                        at: locked,
                        change: vehicle_events::TRIP_END,
                        trip: Some(&id),
                        position: trip.end.map(|p| (p[0], p[1])),
                        battery: None,
                    },
                )?;
                // An order opened during the ride (a fall, tampering) takes it out of service now.
                if let Some(kind) = workorders::out_of_service_kind(tx, &t, &bike)? {
                    vehicle_events::record(
                        tx,
                        &t,
                        &vehicle_events::NewEvent {
                            bike: &bike,
                            at: locked,
                            change: vehicle_events::leaving_service(kind),
                            trip: None,
                            position: trip.end.map(|p| (p[0], p[1])),
                            battery: None,
                        },
                    )?;
                }
                Ok(Some(locked))
            })
            .await?;
        if let Some(locked) = settled {
            self.metrics.trips_settled.fetch_add(1, Ordering::Relaxed);
            {
                let mut tenants = self.tenants.write();
                if let Some(b) = tenants
                    .get_mut(tenant)
                    .and_then(|t| t.bikes.get_mut(&trip.bike))
                {
                    b.trip = None;
                    b.trips_completed += 1;
                    b.last_trip_end = Some(locked);
                }
            }
        }
        self.trip(tenant, trip_id).await
    }

    /// Reopens the lock of a trip held in its grace period so the rider can move the bike into
    /// a parking fence. The trip goes back to `riding` when the lock confirms.
    pub async fn resume_trip(&self, tenant: &str, rider: &str, trip_id: &str) -> Result<Trip> {
        let trip = self.trip(tenant, trip_id).await?;
        if trip.rider != rider {
            return Err(Error::not_found(
                "trip_not_found",
                format!("no trip {trip_id}"),
            ));
        }
        if trip.state != TripState::Ending {
            return Err(Error::conflict(
                "trip_not_ending",
                "only a trip waiting outside a parking fence can be resumed",
            ));
        }
        let settings = self.settings(tenant)?;
        // A fresh single-use token for the reopening, bound to the same trip and bike.
        let token = format!("u1.{}", crate::ids::random_hex(16)?);
        let expires_at = now_ms() + i64::from(settings.unlock_timeout_s) * 1000;
        {
            let (t, id, th) = (tenant.to_string(), trip_id.to_string(), hash_token(&token));
            self.db
                .tx(move |c| {
                    c.execute(
                        "UPDATE trips SET token_hash = ?3, token_expires_at = ?4
                         WHERE tenant = ?1 AND id = ?2 AND state = 'ending'",
                        rusqlite::params![t, id, th, expires_at],
                    )?;
                    Ok(())
                })
                .await?;
        }
        let request = CommandRequest {
            name: "unlock".into(),
            params: json!({"trip_id": trip.id, "token": token, "expires_at": expires_at}),
            timeout: Duration::from_secs(u64::from(settings.unlock_timeout_s)),
        };
        let sent = self
            .platform
            .commands
            .send(tenant, &trip.bike, request)
            .await
            .map_err(|e| Error::Platform(e.to_string()))?;
        let answer = sent
            .finished
            .await
            .map_err(|_| Error::Platform("the command was dropped".into()))?;
        if let Err(reason) = unlock_answer(&answer, &token) {
            return Err(Error::conflict(
                "lock_did_not_open",
                format!("the lock did not open ({reason}); try again or call support"),
            ));
        }
        let (t, id) = (tenant.to_string(), trip_id.to_string());
        self.db
            .tx(move |tx| {
                trips::transition(
                    tx,
                    &t,
                    &id,
                    TripState::Ending,
                    TripState::Riding,
                    &[("grace_until", &None::<i64>), ("out_of_fence", &0i64)],
                    now_ms(),
                    Some("reopened to move the bike"),
                )?;
                Ok(())
            })
            .await?;
        self.set_live(
            tenant,
            &trip.bike,
            Some((trip.id.clone(), TripState::Riding)),
        );
        self.trip(tenant, trip_id).await
    }

    /// What the trip would cost if it ended now (inside a fence), for the ride screen.
    pub async fn fare_so_far(&self, tenant: &str, trip: &Trip) -> Result<crate::pricing::Fare> {
        let (plan, passes, offset) = {
            let tenants = self.tenants.read();
            let t = tenants.get(tenant).ok_or_else(not_enabled)?;
            let plan = t
                .plan(&trip.plan_id)
                .or_else(|| t.plans.first())
                .cloned()
                .ok_or_else(|| Error::Internal(format!("no pricing plan {}", trip.plan_id)))?;
            (
                plan,
                t.passes.clone(),
                crate::wallet::utc_offset_minutes(&t.settings.timezone),
            )
        };
        let rider = trip.rider.clone();
        let unlocked = trip.unlocked_at.unwrap_or(trip.requested_at);
        let duration = trip.locked_at.unwrap_or_else(now_ms) - unlocked;
        self.db
            .run(move |c| {
                crate::wallet::price_trip(
                    c, &rider, &plan, &passes, unlocked, duration, false, offset,
                )
            })
            .await
    }

    pub async fn trip(&self, tenant: &str, trip_id: &str) -> Result<Trip> {
        let (t, id) = (tenant.to_string(), trip_id.to_string());
        self.db
            .run(move |c| {
                trips::get(c, &t, &id)?
                    .ok_or_else(|| Error::not_found("trip_not_found", format!("no trip {id}")))
            })
            .await
    }

    /// A trip found by idempotency key: while its unlock is still in flight the caller waits
    /// for the outcome (a retried request gets the same answer as the first).
    pub(crate) async fn settled_view(&self, trip: Trip) -> Result<Trip> {
        let mut trip = trip;
        let deadline = trip.token_expires_at + 3_000;
        while matches!(trip.state, TripState::Requested | TripState::Unlocking)
            && now_ms() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
            trip = self.trip(&trip.tenant, &trip.id).await?;
        }
        Ok(trip)
    }

    /// The route of a trip from the lock's stored positions between unlock and lock.
    /// (Reads stored telemetry: on the blocking pool, not a runtime thread.)
    pub(crate) async fn route(&self, tenant: &str, trip: &Trip) -> Vec<(f64, f64, i64)> {
        let tsdb = self.platform.tsdb.clone();
        let (tenant, trip) = (tenant.to_string(), trip.clone());
        tokio::task::spawn_blocking(move || route_from(&tsdb, &tenant, &trip))
            .await
            .unwrap_or_default()
    }
}

fn flag_text(reason: &str) -> String {
    format!("unlock failed: {reason}")
}

fn check_idempotency_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > 128 || key.chars().any(|c| c.is_control()) {
        return Err(Error::invalid(
            "invalid_idempotency_key",
            "Idempotency-Key: 1 to 128 printable characters",
        ));
    }
    Ok(())
}

/// Whether a finished unlock command is the lock's confirmation of this token.
fn unlock_answer(
    command: &wulian_registry::Command,
    token: &str,
) -> std::result::Result<(), String> {
    use wulian_registry::CommandStatus as S;
    match command.status {
        S::Succeeded => {
            let result = command.response.as_ref().and_then(|r| r.get("result"));
            let echoed = result.and_then(|r| r.get("token")).and_then(Value::as_str);
            let opened = result
                .and_then(|r| r.get("unlocked"))
                .and_then(Value::as_bool);
            if echoed == Some(token) && opened == Some(true) {
                Ok(())
            } else {
                Err("the lock's answer did not confirm this unlock".into())
            }
        }
        S::Failed => Err(command
            .response
            .as_ref()
            .and_then(|r| r.get("error"))
            .and_then(Value::as_str)
            .map_or_else(
                || "the lock refused".to_string(),
                |e| format!("the lock refused: {e}"),
            )),
        S::TimedOut => Err("the lock did not answer in time".into()),
        S::Undelivered => Err("the lock is offline".into()),
        other => Err(format!("unexpected command status {other:?}")),
    }
}

pub(crate) fn route_distance(route: &[(f64, f64, i64)]) -> f64 {
    route
        .windows(2)
        .map(|w| wulian_rules::geo::distance_m(w[0].0, w[0].1, w[1].0, w[1].1))
        .sum::<f64>()
        .round()
}

fn route_value(route: &[(f64, f64, i64)]) -> Value {
    Value::Array(
        route
            .iter()
            .map(|(la, lo, ts)| json!([la, lo, ts]))
            .collect(),
    )
}

/// The route of a trip from the lock's stored positions between unlock and lock.
fn route_from(tsdb: &wulian_tsdb::Tsdb, tenant: &str, trip: &Trip) -> Vec<(f64, f64, i64)> {
    let Some(from) = trip.unlocked_at else {
        return Vec::new();
    };
    let to = trip.locked_at.unwrap_or_else(now_ms) + 1;
    const MAX_POINTS: usize = 20_000;
    let mut route: Vec<(f64, f64, i64)> =
        crate::fleet::stored_positions(tsdb, tenant, &trip.bike, from, to, MAX_POINTS)
            .into_iter()
            .filter(|(la, lo, _)| lock::valid_position(*la, *lo))
            .collect();
    if let (Some([la, lo]), true) = (trip.start, route.is_empty()) {
        route.push((la, lo, from));
    }
    if let Some([la, lo]) = trip.end {
        route.push((la, lo, to - 1));
    }
    route.dedup_by(|a, b| a.2 == b.2);
    route
}
