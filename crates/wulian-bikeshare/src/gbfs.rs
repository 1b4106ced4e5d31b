//! GBFS 3.0 feeds: pure builders from input structs to feed documents (serde [`Serialize`]
//! types, so the big lists serialise straight to bytes without a `serde_json::Value` tree).
//!
//! Every document is a [`Feed`]: `last_updated` (RFC 3339, UTC), `ttl` (seconds), `version`
//! `"3.0"` and `data`. Texts for customers are arrays of [`LocalizedText`], one per language of
//! the [`FeedContext`]. URLs are `{base_url}/{feed}.json` ([`FeedContext::feed_url`]).
//!
//! # Privacy
//!
//! - Bikes on a trip are not listed ([`VehicleView::on_trip`]): GBFS says vehicles in an active
//!   rental MUST NOT appear in `vehicle_status.json`. Reserved bikes are listed with
//!   `is_reserved: true`, as the spec asks.
//! - `vehicle_id` is not the bike's code: it is [`public_vehicle_id`], an HMAC-SHA256 of the
//!   bike's code and its completed-trip counter under a server-side secret, so it rotates after
//!   every trip and stays stable between trips. HMAC is a pseudo-random function: without the
//!   secret its outputs look random, so nobody can compute the id of a known bike code, link
//!   the id before a trip to the id after it, or recover the code or the counter from an id.
//!   The 128-bit truncation keeps collisions negligible for any fleet size.
//! - Coordinates are rounded to 6 decimals (0.11 m), the precision GBFS recommends.
//! - Nothing about riders exists in the inputs, so nothing can leak into the feeds.
//!
//! # Fences as GBFS rules
//!
//! A trip ends only in a parking zone inside the service area and outside every no-parking and
//! no-riding zone ([`crate::fence::Placement::parkable`]). `geofencing_zones.json` says the
//! same with one rule per zone; GBFS gives the earlier feature precedence where zones overlap,
//! so features are ordered no-riding, no-parking, parking, service area (then input order):
//!
//! | zone kind      | start | end   | through | station_parking |
//! |----------------|-------|-------|---------|-----------------|
//! | `no_riding`    | false | false | false   | –               |
//! | `no_parking`   | true  | false | true    | –               |
//! | `parking`      | true  | true  | true    | true            |
//! | `service_area` | true  | false | true    | true            |
//! | global, with a service area    | false | false | true | – |
//! | global, without a service area | true  | false | true | true |
//!
//! Starting a ride in a no-parking zone is allowed so that a rider can take a badly parked bike
//! away. Outside the service area one may ride through but not start or end. A zone property
//! `maximum_speed_kph` (integer) becomes the rule's speed limit.
//!
//! Parking zones are also published as virtual stations (`station_information.json`,
//! `station_status.json`) with the zone as `station_area`. GBFS lets a `station_area` override
//! geofencing start/end rules, so no-parking and no-riding polygons lying wholly inside a
//! parking zone are cut out of its `station_area` as holes. Partial overlaps are not clipped;
//! nor is a parking zone drawn outside every service area: do not draw those.

use std::fmt;

use serde::{Serialize, Serializer};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::fence::FenceKind;

/// The GBFS version every feed declares.
pub const VERSION: &str = "3.0";

/// Why a feed could not be built from its inputs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GbfsError {
    /// A zone's geometry is not a usable GeoJSON (Multi)Polygon.
    #[error("zone {zone_id:?}: {reason}")]
    Zone { zone_id: String, reason: String },
    /// A vehicle type misses something GBFS requires.
    #[error("vehicle type {vehicle_type_id:?}: {reason}")]
    VehicleType {
        vehicle_type_id: String,
        reason: String,
    },
    /// A pricing plan entry is not a GBFS plan object.
    #[error("pricing plan #{index}: {reason}")]
    PricingPlan { index: usize, reason: String },
    /// A field of `system_information` breaks a GBFS rule.
    #[error("system information: {0}")]
    SystemInformation(String),
}

/// Result of this module.
pub type Result<T, E = GbfsError> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------------------------
// Common pieces
// ---------------------------------------------------------------------------------------------

/// What every feed of one system shares.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedContext {
    /// Globally unique system id (e.g. `wulian_shanghai`), as registered in GBFS' systems.csv.
    pub system_id: String,
    /// Languages of the localized texts, IETF BCP 47 (e.g. `zh-CN`, `en`).
    pub languages: Vec<String>,
    /// Where the feeds live, without a trailing slash, e.g.
    /// `http://127.0.0.1:8080/gbfs/v3/{tenant}`.
    pub base_url: String,
    /// Seconds until the data is refreshed (0: always refetch).
    pub ttl_s: u32,
    /// The instant the feeds describe, ms since the epoch.
    pub now_ms: i64,
}

impl FeedContext {
    /// The URL of `feed`: `{base_url}/{feed}.json`. Routers should accept the same path
    /// ([`FeedName::parse`] takes it with or without `.json`).
    pub fn feed_url(&self, feed: FeedName) -> String {
        format!(
            "{}/{}.json",
            self.base_url.trim_end_matches('/'),
            feed.as_str()
        )
    }

    /// `text` in every feed language: for texts (zone names) that have no translations yet.
    pub fn localized(&self, text: &str) -> Vec<LocalizedText> {
        self.languages
            .iter()
            .map(|language| LocalizedText {
                text: text.to_owned(),
                language: language.clone(),
            })
            .collect()
    }

    fn feed<D>(&self, data: D) -> Feed<D> {
        Feed {
            last_updated: Rfc3339::from_ms(self.now_ms),
            ttl: self.ttl_s,
            version: VERSION,
            data,
            size_hint: 4096,
        }
    }
}

/// One GBFS document: the common header and the feed's `data`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Feed<D> {
    pub last_updated: Rfc3339,
    pub ttl: u32,
    pub version: &'static str,
    pub data: D,
    /// Bytes to reserve when encoding: growing a 17 MB buffer by doubling costs as much as
    /// writing it.
    #[serde(skip)]
    size_hint: usize,
}

impl<D: Serialize> Feed<D> {
    /// The document as JSON bytes, the way it goes on the wire.
    pub fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.size_hint);
        serde_json::to_writer(&mut out, self)?;
        Ok(out)
    }
}

/// A translated text (GBFS "Localized String").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LocalizedText {
    pub text: String,
    /// IETF BCP 47 language code; must be one of the context's languages.
    pub language: String,
}

/// An RFC 3339 UTC timestamp with second precision (`2026-01-01T08:00:00Z`), formatted into a
/// fixed buffer so that 100,000 of them cost no allocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rfc3339([u8; 20]);

impl Rfc3339 {
    /// `ms` since the epoch, clamped to years 1970..=9999 (the format has four year digits).
    pub fn from_ms(ms: i64) -> Rfc3339 {
        let secs = ms.clamp(0, 253_402_300_799_999).div_euclid(1000);
        let (y, m, d) = wulian_common::time::civil_from_days(secs.div_euclid(86_400));
        let sod = secs.rem_euclid(86_400);
        let mut b = *b"0000-00-00T00:00:00Z";
        put_digits(&mut b[0..4], y);
        put_digits(&mut b[5..7], m);
        put_digits(&mut b[8..10], d);
        put_digits(&mut b[11..13], sod / 3600);
        put_digits(&mut b[14..16], sod / 60 % 60);
        put_digits(&mut b[17..19], sod % 60);
        Rfc3339(b)
    }

    /// The timestamp as text, for logs and `Last-Modified`-style headers.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written.
        std::str::from_utf8(&self.0).unwrap_or("1970-01-01T00:00:00Z")
    }
}

/// Writes `value` as zero-padded decimal digits filling `out`.
fn put_digits(out: &mut [u8], mut value: i64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + u8::try_from(value.rem_euclid(10)).unwrap_or(0);
        value /= 10;
    }
}

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// `x` rounded to 6 decimals, GBFS' recommended coordinate precision.
pub fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

fn valid_lat_lon(lat: f64, lon: f64) -> bool {
    lat.is_finite()
        && lon.is_finite()
        && (-90.0..=90.0).contains(&lat)
        && (-180.0..=180.0).contains(&lon)
}

// ---------------------------------------------------------------------------------------------
// gbfs.json, gbfs_versions.json, manifest.json
// ---------------------------------------------------------------------------------------------

/// The feeds of a GBFS 3.0 data set, by their spec names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedName {
    Gbfs,
    GbfsVersions,
    SystemInformation,
    VehicleTypes,
    StationInformation,
    StationStatus,
    VehicleStatus,
    SystemPricingPlans,
    GeofencingZones,
}

impl FeedName {
    /// Every feed this module builds, in the order `gbfs.json` lists them.
    pub const ALL: [FeedName; 9] = [
        FeedName::Gbfs,
        FeedName::GbfsVersions,
        FeedName::SystemInformation,
        FeedName::VehicleTypes,
        FeedName::StationInformation,
        FeedName::StationStatus,
        FeedName::VehicleStatus,
        FeedName::SystemPricingPlans,
        FeedName::GeofencingZones,
    ];

    /// What `gbfs.json` lists by default: every feed but itself.
    pub const PUBLISHED: [FeedName; 8] = [
        FeedName::GbfsVersions,
        FeedName::SystemInformation,
        FeedName::VehicleTypes,
        FeedName::StationInformation,
        FeedName::StationStatus,
        FeedName::VehicleStatus,
        FeedName::SystemPricingPlans,
        FeedName::GeofencingZones,
    ];

    /// The spec's base file name, e.g. `vehicle_status`.
    pub fn as_str(self) -> &'static str {
        match self {
            FeedName::Gbfs => "gbfs",
            FeedName::GbfsVersions => "gbfs_versions",
            FeedName::SystemInformation => "system_information",
            FeedName::VehicleTypes => "vehicle_types",
            FeedName::StationInformation => "station_information",
            FeedName::StationStatus => "station_status",
            FeedName::VehicleStatus => "vehicle_status",
            FeedName::SystemPricingPlans => "system_pricing_plans",
            FeedName::GeofencingZones => "geofencing_zones",
        }
    }

    /// A URL path segment (`vehicle_status` or `vehicle_status.json`) to a feed.
    pub fn parse(segment: &str) -> Option<FeedName> {
        let name = segment.strip_suffix(".json").unwrap_or(segment);
        FeedName::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

impl fmt::Display for FeedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `gbfs.json` `data`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiscoveryData {
    pub feeds: Vec<FeedLink>,
}

/// One published feed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeedLink {
    pub name: FeedName,
    pub url: String,
}

/// `gbfs.json`, the discovery file, listing `feeds` (usually [`FeedName::PUBLISHED`]). GBFS
/// requires `system_information` and `vehicle_status` or `station_status` to be among them,
/// and `station_status` whenever `station_information` is.
pub fn gbfs(ctx: &FeedContext, feeds: &[FeedName]) -> Feed<DiscoveryData> {
    let feeds = feeds
        .iter()
        .map(|&name| FeedLink {
            name,
            url: ctx.feed_url(name),
        })
        .collect();
    ctx.feed(DiscoveryData { feeds })
}

/// A GBFS version of a data set and the URL of its `gbfs.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionLink {
    /// `MAJOR.MINOR`, e.g. `2.3`.
    pub version: String,
    pub url: String,
}

/// `gbfs_versions.json` / `manifest.json` version lists.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionsData {
    pub versions: Vec<VersionLink>,
}

/// Sorted by increasing MAJOR.MINOR (the spec's order), one entry per version.
fn sorted_versions(mut versions: Vec<VersionLink>) -> Vec<VersionLink> {
    fn key(v: &VersionLink) -> (u32, u32) {
        let mut parts = v
            .version
            .split('.')
            .map(|p| p.parse::<u32>().unwrap_or(u32::MAX));
        (
            parts.next().unwrap_or(u32::MAX),
            parts.next().unwrap_or(u32::MAX),
        )
    }
    versions.sort_by_key(key);
    versions.dedup_by(|a, b| a.version == b.version);
    versions
}

/// `gbfs_versions.json`: this 3.0 data set plus `others` (older versions still served).
pub fn gbfs_versions(ctx: &FeedContext, others: &[VersionLink]) -> Feed<VersionsData> {
    let mut versions = vec![VersionLink {
        version: VERSION.to_owned(),
        url: ctx.feed_url(FeedName::Gbfs),
    }];
    versions.extend(others.iter().filter(|v| v.version != VERSION).cloned());
    ctx.feed(VersionsData {
        versions: sorted_versions(versions),
    })
}

/// One data set (one system) in `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManifestDataset {
    pub system_id: String,
    pub versions: Vec<VersionLink>,
}

/// `manifest.json` `data`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ManifestData {
    pub datasets: Vec<ManifestDataset>,
}

/// `manifest.json`: every data set (tenant) a publisher serves. It lives at one URL of its own
/// and `gbfs.json` must not link to it; `ctx` gives only the header (time and ttl).
pub fn manifest(ctx: &FeedContext, datasets: &[ManifestDataset]) -> Feed<ManifestData> {
    let datasets = datasets
        .iter()
        .map(|d| ManifestDataset {
            system_id: d.system_id.clone(),
            versions: sorted_versions(d.versions.clone()),
        })
        .collect();
    ctx.feed(ManifestData { datasets })
}

// ---------------------------------------------------------------------------------------------
// system_information.json
// ---------------------------------------------------------------------------------------------

/// The data license: an SPDX id, or a URL for a custom license (GBFS allows one of the two).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum License {
    /// e.g. `CC0-1.0`, `CC-BY-4.0`, `ODbL-1.0`.
    Spdx(String),
    Url(String),
}

/// Terms or privacy policy: the URL per language and the date it last changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyLink {
    pub url: Vec<LocalizedText>,
    /// `YYYY-MM-DD`.
    pub last_updated: String,
}

/// The operator's description of the system, input of [`system_information`].
#[derive(Debug, Clone, PartialEq)]
pub struct SystemInfo {
    /// Required in every feed language.
    pub name: Vec<LocalizedText>,
    pub short_name: Option<Vec<LocalizedText>>,
    pub operator: Option<Vec<LocalizedText>>,
    /// OSM `opening_hours`; `24/7` for a system that never closes.
    pub opening_hours: String,
    /// Where feed consumers report problems (required by GBFS 3.0).
    pub feed_contact_email: String,
    /// Customer service.
    pub email: Option<String>,
    /// Customer service, E.164 (`+8621…`).
    pub phone_number: Option<String>,
    pub url: Option<String>,
    /// `YYYY-MM-DD`.
    pub start_date: Option<String>,
    /// IANA time zone.
    pub timezone: String,
    /// `None` means CC0 per GBFS.
    pub license: Option<License>,
    /// Required when one publisher serves several systems (tenants).
    pub manifest_url: Option<String>,
    pub terms: Option<PolicyLink>,
    pub privacy: Option<PolicyLink>,
}

impl SystemInfo {
    /// A 24/7 system in `Asia/Shanghai` named `name` in every feed language, data under
    /// CC0-1.0.
    pub fn new(ctx: &FeedContext, name: &str, feed_contact_email: &str) -> SystemInfo {
        SystemInfo {
            name: ctx.localized(name),
            short_name: None,
            operator: None,
            opening_hours: "24/7".to_owned(),
            feed_contact_email: feed_contact_email.to_owned(),
            email: None,
            phone_number: None,
            url: None,
            start_date: None,
            timezone: "Asia/Shanghai".to_owned(),
            license: Some(License::Spdx("CC0-1.0".to_owned())),
            manifest_url: None,
            terms: None,
            privacy: None,
        }
    }
}

/// `system_information.json` `data`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SystemInformationData {
    pub system_id: String,
    pub languages: Vec<String>,
    pub name: Vec<LocalizedText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub short_name: Option<Vec<LocalizedText>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator: Option<Vec<LocalizedText>>,
    pub opening_hours: String,
    pub feed_contact_email: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_date: Option<String>,
    pub timezone: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terms_url: Option<Vec<LocalizedText>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terms_last_updated: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privacy_url: Option<Vec<LocalizedText>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privacy_last_updated: Option<String>,
}

/// Fails unless `texts` has an entry for every feed language (GBFS: translations MUST be
/// provided for each supported language).
fn check_translated(ctx: &FeedContext, field: &str, texts: &[LocalizedText]) -> Result<()> {
    for language in &ctx.languages {
        if !texts.iter().any(|t| &t.language == language) {
            return Err(GbfsError::SystemInformation(format!(
                "{field} has no text in {language:?}"
            )));
        }
    }
    Ok(())
}

/// `system_information.json`. Fails when a localized field misses a feed language or the phone
/// number is not E.164.
pub fn system_information(
    ctx: &FeedContext,
    info: &SystemInfo,
) -> Result<Feed<SystemInformationData>> {
    check_translated(ctx, "name", &info.name)?;
    for (field, texts) in [
        ("short_name", &info.short_name),
        ("operator", &info.operator),
    ] {
        if let Some(texts) = texts {
            check_translated(ctx, field, texts)?;
        }
    }
    if let Some(phone) = &info.phone_number {
        let digits = phone.strip_prefix('+').unwrap_or("");
        let e164 = (2..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if !e164 {
            return Err(GbfsError::SystemInformation(format!(
                "phone_number {phone:?} is not E.164"
            )));
        }
    }
    let (license_id, license_url) = match &info.license {
        Some(License::Spdx(id)) => (Some(id.clone()), None),
        Some(License::Url(url)) => (None, Some(url.clone())),
        None => (None, None),
    };
    Ok(ctx.feed(SystemInformationData {
        system_id: ctx.system_id.clone(),
        languages: ctx.languages.clone(),
        name: info.name.clone(),
        short_name: info.short_name.clone(),
        operator: info.operator.clone(),
        opening_hours: info.opening_hours.clone(),
        feed_contact_email: info.feed_contact_email.clone(),
        email: info.email.clone(),
        phone_number: info.phone_number.clone(),
        url: info.url.clone(),
        start_date: info.start_date.clone(),
        timezone: info.timezone.clone(),
        license_id,
        license_url,
        manifest_url: info.manifest_url.clone(),
        terms_url: info.terms.as_ref().map(|t| t.url.clone()),
        terms_last_updated: info.terms.as_ref().map(|t| t.last_updated.clone()),
        privacy_url: info.privacy.as_ref().map(|p| p.url.clone()),
        privacy_last_updated: info.privacy.as_ref().map(|p| p.last_updated.clone()),
    }))
}

// ---------------------------------------------------------------------------------------------
// vehicle_types.json
// ---------------------------------------------------------------------------------------------

/// GBFS `form_factor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FormFactor {
    Bicycle,
    CargoBicycle,
    ScooterStanding,
    ScooterSeated,
    Moped,
    Other,
}

/// GBFS `propulsion_type` (the micromobility subset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PropulsionType {
    Human,
    ElectricAssist,
    Electric,
}

/// GBFS `return_constraint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReturnConstraint {
    FreeFloating,
    RoundtripStation,
    AnyStation,
    Hybrid,
}

/// A kind of bike the system rents, input of [`vehicle_types`].
#[derive(Debug, Clone, PartialEq)]
pub struct VehicleTypeInfo {
    pub vehicle_type_id: String,
    pub form_factor: FormFactor,
    pub propulsion_type: PropulsionType,
    /// Public name, in every feed language.
    pub name: Option<String>,
    pub wheel_count: Option<u32>,
    pub max_permitted_speed_kph: Option<u32>,
    /// Required for motorised types, absent for human-powered ones.
    pub max_range_meters: Option<f64>,
    pub return_constraint: Option<ReturnConstraint>,
    /// Required when `system_pricing_plans.json` is published.
    pub default_pricing_plan_id: Option<String>,
    pub pricing_plan_ids: Vec<String>,
}

impl VehicleTypeInfo {
    /// A pedal bicycle that must be returned to a parking zone (a virtual station).
    pub fn bicycle(
        vehicle_type_id: &str,
        name: &str,
        default_pricing_plan_id: &str,
        pricing_plan_ids: &[&str],
    ) -> VehicleTypeInfo {
        VehicleTypeInfo {
            vehicle_type_id: vehicle_type_id.to_owned(),
            form_factor: FormFactor::Bicycle,
            propulsion_type: PropulsionType::Human,
            name: Some(name.to_owned()),
            wheel_count: Some(2),
            max_permitted_speed_kph: None,
            max_range_meters: None,
            return_constraint: Some(ReturnConstraint::AnyStation),
            default_pricing_plan_id: Some(default_pricing_plan_id.to_owned()),
            pricing_plan_ids: pricing_plan_ids.iter().map(|&p| p.to_owned()).collect(),
        }
    }
}

/// `vehicle_types.json` `data`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VehicleTypesData {
    pub vehicle_types: Vec<VehicleTypeEntry>,
}

/// One entry of `vehicle_types`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VehicleTypeEntry {
    pub vehicle_type_id: String,
    pub form_factor: FormFactor,
    pub propulsion_type: PropulsionType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<Vec<LocalizedText>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wheel_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_permitted_speed: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_range_meters: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_constraint: Option<ReturnConstraint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_pricing_plan_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pricing_plan_ids: Vec<String>,
}

/// `vehicle_types.json`. Fails for a motorised type without a finite, non-negative
/// `max_range_meters`.
pub fn vehicle_types(
    ctx: &FeedContext,
    types: &[VehicleTypeInfo],
) -> Result<Feed<VehicleTypesData>> {
    let mut out = Vec::with_capacity(types.len());
    for t in types {
        let range_ok = t.max_range_meters.is_none_or(|r| r.is_finite() && r >= 0.0);
        if !range_ok || (t.propulsion_type != PropulsionType::Human && t.max_range_meters.is_none())
        {
            return Err(GbfsError::VehicleType {
                vehicle_type_id: t.vehicle_type_id.clone(),
                reason: "a motorised type needs a finite, non-negative max_range_meters".into(),
            });
        }
        out.push(VehicleTypeEntry {
            vehicle_type_id: t.vehicle_type_id.clone(),
            form_factor: t.form_factor,
            propulsion_type: t.propulsion_type,
            name: t.name.as_deref().map(|n| ctx.localized(n)),
            wheel_count: t.wheel_count,
            max_permitted_speed: t.max_permitted_speed_kph,
            max_range_meters: t.max_range_meters,
            return_constraint: t.return_constraint,
            default_pricing_plan_id: t.default_pricing_plan_id.clone(),
            pricing_plan_ids: t.pricing_plan_ids.clone(),
        });
    }
    Ok(ctx.feed(VehicleTypesData { vehicle_types: out }))
}

// ---------------------------------------------------------------------------------------------
// Rotating vehicle ids
// ---------------------------------------------------------------------------------------------

/// Domain separation: these MACs are GBFS vehicle ids, version 1 of the encoding.
const VEHICLE_ID_TAG: &[u8] = b"gbfs.vid.1";

/// The key that turns bike codes into rotating public ids: HMAC-SHA256 with the inner and
/// outer pad blocks hashed once, so an id costs two SHA-256 compressions. The secret should be
/// at least 32 random bytes, per tenant, kept server-side; changing it changes every id.
#[derive(Clone)]
pub struct VehicleIdKey {
    inner: Sha256,
    outer: Sha256,
}

impl fmt::Debug for VehicleIdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VehicleIdKey(<secret>)")
    }
}

impl VehicleIdKey {
    /// HMAC-SHA256 keyed with `secret` (RFC 2104: longer than a block is hashed first).
    pub fn new(secret: &[u8]) -> VehicleIdKey {
        let mut key = [0u8; 64];
        if secret.len() > key.len() {
            key[..32].copy_from_slice(&Sha256::digest(secret));
        } else {
            key[..secret.len()].copy_from_slice(secret);
        }
        let mut ipad = [0x36u8; 64];
        let mut opad = [0x5cu8; 64];
        for ((i, o), k) in ipad.iter_mut().zip(opad.iter_mut()).zip(key) {
            *i ^= k;
            *o ^= k;
        }
        let mut inner = Sha256::new();
        inner.update(ipad);
        let mut outer = Sha256::new();
        outer.update(opad);
        VehicleIdKey { inner, outer }
    }

    /// HMAC of the concatenation of `parts`.
    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut inner = self.inner.clone();
        for part in parts {
            inner.update(part);
        }
        let mut outer = self.outer.clone();
        outer.update(inner.finalize());
        outer.finalize().into()
    }

    /// The public id of `bike_id` after `trips_completed` trips: the first 128 bits of
    /// HMAC(tag ‖ len(bike_id) ‖ bike_id ‖ trips_completed), as 32 hex digits. The length
    /// prefix keeps (`ab`, 1) and (`a`, …) from ever sharing an input.
    pub fn public_id(&self, bike_id: &str, trips_completed: u64) -> PublicVehicleId {
        let len = u32::try_from(bike_id.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes();
        let mac = self.mac(&[
            VEHICLE_ID_TAG,
            &len,
            bike_id.as_bytes(),
            &trips_completed.to_be_bytes(),
        ]);
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 32];
        for (pair, byte) in out.chunks_exact_mut(2).zip(&mac[..16]) {
            pair[0] = HEX[usize::from(byte >> 4)];
            pair[1] = HEX[usize::from(byte & 0x0f)];
        }
        PublicVehicleId(out)
    }
}

/// A rotating `vehicle_id`: 32 lowercase hex digits in a fixed buffer.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicVehicleId([u8; 32]);

impl PublicVehicleId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only hex digits are ever written.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl fmt::Display for PublicVehicleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for PublicVehicleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl Serialize for PublicVehicleId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The GBFS `vehicle_id` of `bike_id` after `trips_completed` trips, keyed with `secret`; see
/// [`VehicleIdKey::public_id`] (build the key once when computing many ids).
pub fn public_vehicle_id(secret: &[u8], bike_id: &str, trips_completed: u64) -> String {
    VehicleIdKey::new(secret)
        .public_id(bike_id, trips_completed)
        .as_str()
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// vehicle_status.json
// ---------------------------------------------------------------------------------------------

/// One bike as the integrator sees it, input of [`vehicle_status`].
#[derive(Debug, Clone, PartialEq)]
pub struct VehicleView {
    /// The bike's internal code (device id); never published.
    pub bike_id: String,
    pub lat: f64,
    pub lon: f64,
    pub is_reserved: bool,
    /// In the field but not rentable (broken, low battery, workshop order).
    pub is_disabled: bool,
    /// In an active rental: the bike is left out of the feed.
    pub on_trip: bool,
    /// The lock's battery. Not published: GBFS `current_fuel_percent` is propulsion energy,
    /// which a human-powered bike does not have (e-bikes would also need
    /// `current_range_meters`).
    pub battery_pct: Option<u8>,
    pub vehicle_type_id: String,
    /// Overrides the type's default plan.
    pub pricing_plan_id: Option<String>,
    /// The parking zone (virtual station) the bike stands in, if any; GBFS requires it for a
    /// vehicle at a station.
    pub station_id: Option<String>,
    /// When the lock last reported, ms since the epoch (capped at the feed's time).
    pub last_reported_ms: i64,
    /// Trips this bike has completed: the counter the public id rotates with.
    pub trips_completed: u64,
}

/// `vehicle_status.json` `data`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VehicleStatusData<'a> {
    pub vehicles: Vec<VehicleStatusEntry<'a>>,
}

/// One listed vehicle.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VehicleStatusEntry<'a> {
    pub vehicle_id: PublicVehicleId,
    pub lat: f64,
    pub lon: f64,
    pub is_reserved: bool,
    pub is_disabled: bool,
    pub vehicle_type_id: &'a str,
    pub last_reported: Rfc3339,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub station_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pricing_plan_id: Option<&'a str>,
}

/// `vehicle_status.json`: every bike not on a trip and with a valid position (a bike without a
/// fix cannot be found on a map), ids from `key`, coordinates at 6 decimals. Pass only bikes in
/// the field: GBFS forbids listing bikes in a warehouse or a truck (disabled ones on the street
/// are listed with `is_disabled`).
pub fn vehicle_status<'a>(
    ctx: &FeedContext,
    key: &VehicleIdKey,
    vehicles: &'a [VehicleView],
) -> Feed<VehicleStatusData<'a>> {
    let mut out = Vec::with_capacity(vehicles.len());
    for v in vehicles {
        if v.on_trip || !valid_lat_lon(v.lat, v.lon) {
            continue;
        }
        out.push(VehicleStatusEntry {
            vehicle_id: key.public_id(&v.bike_id, v.trips_completed),
            lat: round6(v.lat),
            lon: round6(v.lon),
            is_reserved: v.is_reserved,
            is_disabled: v.is_disabled,
            vehicle_type_id: &v.vehicle_type_id,
            last_reported: Rfc3339::from_ms(v.last_reported_ms.min(ctx.now_ms)),
            station_id: v.station_id.as_deref(),
            pricing_plan_id: v.pricing_plan_id.as_deref(),
        });
    }
    // About 190 bytes per vehicle, more with a station or a plan.
    let size_hint = out.len().saturating_mul(224).saturating_add(256);
    Feed {
        size_hint,
        ..ctx.feed(VehicleStatusData { vehicles: out })
    }
}

// ---------------------------------------------------------------------------------------------
// Zones: geometry, geofencing_zones.json
// ---------------------------------------------------------------------------------------------

/// A zone (fence) of the tenant, input of the zone-based feeds.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneView {
    /// The zone's id (its registry name), used as `station_id` for parking zones.
    pub zone_id: String,
    /// Public name, published in every feed language.
    pub name: String,
    pub kind: FenceKind,
    /// GeoJSON Polygon or MultiPolygon (or a Feature holding one), `[lon, lat]` positions.
    pub geometry: Value,
    /// The zone's properties: `capacity` (parking zones) and `maximum_speed_kph` are read.
    pub properties: Value,
}

impl ZoneView {
    fn capacity(&self) -> Option<u32> {
        self.properties
            .get("capacity")
            .and_then(Value::as_u64)
            .and_then(|c| u32::try_from(c).ok())
    }

    fn maximum_speed_kph(&self) -> Option<u32> {
        self.properties
            .get("maximum_speed_kph")
            .and_then(Value::as_u64)
            .and_then(|c| u32::try_from(c).ok())
    }
}

/// A linear ring of `[lon, lat]` positions, closed (first == last).
type Ring = Vec<[f64; 2]>;
/// Exterior ring then holes.
type PolygonRings = Vec<Ring>;

/// A GeoJSON MultiPolygon geometry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MultiPolygon {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub coordinates: Vec<PolygonRings>,
}

impl MultiPolygon {
    fn new(coordinates: Vec<PolygonRings>) -> MultiPolygon {
        MultiPolygon {
            kind: "MultiPolygon",
            coordinates,
        }
    }
}

/// Twice the signed area of a closed ring (positive: counter-clockwise in lon/lat), computed
/// relative to the first vertex: with absolute degrees the shoelace terms are ~10^4 and a
/// 50 m zone's area ~10^-7, which would drown in rounding.
fn ring_area2(ring: &[[f64; 2]]) -> f64 {
    let Some(&[ox, oy]) = ring.first() else {
        return 0.0;
    };
    ring.windows(2)
        .map(|w| (w[0][0] - ox) * (w[1][1] - oy) - (w[1][0] - ox) * (w[0][1] - oy))
        .sum()
}

/// Even-odd test of `p` against a closed ring.
fn ring_contains(ring: &[[f64; 2]], p: [f64; 2]) -> bool {
    let mut inside = false;
    for w in ring.windows(2) {
        let (a, b) = (w[0], w[1]);
        if (a[1] > p[1]) != (b[1] > p[1]) {
            let x = a[0] + (p[1] - a[1]) / (b[1] - a[1]) * (b[0] - a[0]);
            if p[0] < x {
                inside = !inside;
            }
        }
    }
    inside
}

fn parse_ring(value: &Value) -> std::result::Result<Ring, String> {
    let positions = value.as_array().ok_or("a ring is not an array")?;
    let mut ring = Vec::with_capacity(positions.len() + 1);
    for pos in positions {
        let pair = pos
            .as_array()
            .filter(|p| p.len() >= 2)
            .ok_or("a position is not [lon, lat]")?;
        let (lon, lat) = match (pair[0].as_f64(), pair[1].as_f64()) {
            (Some(lon), Some(lat)) if valid_lat_lon(lat, lon) => (lon, lat),
            _ => return Err("a position is not a valid [lon, lat]".into()),
        };
        ring.push([round6(lon), round6(lat)]);
    }
    if let Some(&first) = ring.first()
        && ring.last() != Some(&first)
    {
        ring.push(first);
    }
    if ring.len() < 4 {
        return Err("a ring needs at least 3 distinct positions".into());
    }
    Ok(ring)
}

/// A polygon's rings with the right-hand rule applied (exterior counter-clockwise, holes
/// clockwise), as GBFS asks.
fn parse_polygon(value: &Value) -> std::result::Result<PolygonRings, String> {
    let rings = value
        .as_array()
        .ok_or("a polygon is not an array of rings")?;
    let mut out = Vec::with_capacity(rings.len());
    for (i, ring) in rings.iter().enumerate() {
        let mut ring = parse_ring(ring)?;
        let area2 = ring_area2(&ring);
        if area2 == 0.0 {
            return Err("a ring has no area".into());
        }
        if (i == 0) != (area2 > 0.0) {
            ring.reverse();
        }
        out.push(ring);
    }
    if out.is_empty() {
        return Err("a polygon has no ring".into());
    }
    Ok(out)
}

/// A zone geometry as MultiPolygon coordinates.
fn zone_polygons(geometry: &Value) -> std::result::Result<Vec<PolygonRings>, String> {
    let coordinates = geometry.get("coordinates");
    match (geometry.get("type").and_then(Value::as_str), coordinates) {
        (Some("Feature"), _) => zone_polygons(geometry.get("geometry").unwrap_or(&Value::Null)),
        (Some("Polygon"), Some(c)) => Ok(vec![parse_polygon(c)?]),
        (Some("MultiPolygon"), Some(c)) => {
            let polygons = c
                .as_array()
                .ok_or("MultiPolygon coordinates are not an array")?;
            let out = polygons
                .iter()
                .map(parse_polygon)
                .collect::<std::result::Result<Vec<_>, _>>()?;
            if out.is_empty() {
                return Err("a MultiPolygon has no polygon".into());
            }
            Ok(out)
        }
        _ => Err("geometry is not a GeoJSON Polygon or MultiPolygon".into()),
    }
}

fn zone_geometry(zone: &ZoneView) -> Result<Vec<PolygonRings>> {
    zone_polygons(&zone.geometry).map_err(|reason| GbfsError::Zone {
        zone_id: zone.zone_id.clone(),
        reason,
    })
}

/// Area-weighted centroid of the polygons (holes subtracted), rounded to 6 decimals, as
/// `(lat, lon)`; the mean of the exterior vertices when the area vanishes. It may fall outside
/// a concave zone, which is fine for a map pin of a virtual station.
fn centroid(polygons: &[PolygonRings]) -> (f64, f64) {
    // Relative to one vertex, for the precision reason of `ring_area2`.
    let [ox, oy] = polygons
        .first()
        .and_then(|p| p.first())
        .and_then(|r| r.first())
        .copied()
        .unwrap_or([0.0, 0.0]);
    let (mut a_sum, mut x_sum, mut y_sum) = (0.0, 0.0, 0.0);
    for ring in polygons.iter().flatten() {
        for w in ring.windows(2) {
            let (x0, y0, x1, y1) = (w[0][0] - ox, w[0][1] - oy, w[1][0] - ox, w[1][1] - oy);
            let cross = x0 * y1 - x1 * y0;
            a_sum += cross;
            x_sum += (x0 + x1) * cross;
            y_sum += (y0 + y1) * cross;
        }
    }
    // Holes are clockwise, so their negative area subtracts by itself.
    if a_sum != 0.0 {
        let (lon, lat) = (ox + x_sum / (3.0 * a_sum), oy + y_sum / (3.0 * a_sum));
        if valid_lat_lon(lat, lon) {
            return (round6(lat), round6(lon));
        }
    }
    let exterior: Vec<[f64; 2]> = polygons
        .iter()
        .filter_map(|p| p.first())
        .flat_map(|r| r.iter().skip(1).copied())
        .collect();
    let n = exterior.len().max(1) as f64;
    let lon = exterior.iter().map(|p| p[0]).sum::<f64>() / n;
    let lat = exterior.iter().map(|p| p[1]).sum::<f64>() / n;
    (round6(lat), round6(lon))
}

/// A GBFS geofencing rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// Empty: the rule applies to every vehicle type.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vehicle_type_ids: Vec<String>,
    pub ride_start_allowed: bool,
    pub ride_end_allowed: bool,
    pub ride_through_allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum_speed_kph: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub station_parking: Option<bool>,
}

/// The rule of a zone of `kind` (the mapping table of the module docs), for all vehicle types.
pub fn zone_rule(kind: FenceKind) -> Rule {
    let (start, end, through, station_parking) = match kind {
        FenceKind::NoRiding => (false, false, false, None),
        FenceKind::NoParking => (true, false, true, None),
        FenceKind::Parking => (true, true, true, Some(true)),
        FenceKind::ServiceArea => (true, false, true, Some(true)),
    };
    Rule {
        vehicle_type_ids: Vec::new(),
        ride_start_allowed: start,
        ride_end_allowed: end,
        ride_through_allowed: through,
        maximum_speed_kph: None,
        station_parking,
    }
}

/// The rule outside every zone: no start or end outside the service area when one is drawn;
/// without one the whole city is the service area.
pub fn global_rule(has_service_area: bool) -> Rule {
    if has_service_area {
        Rule {
            vehicle_type_ids: Vec::new(),
            ride_start_allowed: false,
            ride_end_allowed: false,
            ride_through_allowed: true,
            maximum_speed_kph: None,
            station_parking: None,
        }
    } else {
        zone_rule(FenceKind::ServiceArea)
    }
}

/// Precedence of zone kinds in `geofencing_zones.json`: the earlier feature wins.
fn precedence(kind: FenceKind) -> u8 {
    match kind {
        FenceKind::NoRiding => 0,
        FenceKind::NoParking => 1,
        FenceKind::Parking => 2,
        FenceKind::ServiceArea => 3,
    }
}

/// `geofencing_zones.json` `data`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GeofencingData {
    pub geofencing_zones: FeatureCollection,
    pub global_rules: Vec<Rule>,
}

/// A GeoJSON FeatureCollection of zones.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureCollection {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub features: Vec<ZoneFeature>,
}

/// One zone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZoneFeature {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub geometry: MultiPolygon,
    pub properties: ZoneProperties,
}

/// A zone's public name and rules.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZoneProperties {
    pub name: Vec<LocalizedText>,
    pub rules: Vec<Rule>,
}

/// `geofencing_zones.json` for `zones`, rules per [`zone_rule`] restricted to
/// `vehicle_type_ids` (empty: all types). Fails on the first zone whose geometry is unusable.
pub fn geofencing_zones(
    ctx: &FeedContext,
    zones: &[ZoneView],
    vehicle_type_ids: &[String],
) -> Result<Feed<GeofencingData>> {
    let mut ordered: Vec<&ZoneView> = zones.iter().collect();
    // Stable: zones of one kind keep the caller's order.
    ordered.sort_by_key(|z| precedence(z.kind));
    let mut features = Vec::with_capacity(ordered.len());
    for zone in ordered {
        let mut rule = zone_rule(zone.kind);
        rule.vehicle_type_ids = vehicle_type_ids.to_vec();
        rule.maximum_speed_kph = zone.maximum_speed_kph();
        features.push(ZoneFeature {
            kind: "Feature",
            geometry: MultiPolygon::new(zone_geometry(zone)?),
            properties: ZoneProperties {
                name: ctx.localized(&zone.name),
                rules: vec![rule],
            },
        });
    }
    let has_service_area = zones.iter().any(|z| z.kind == FenceKind::ServiceArea);
    let mut global = global_rule(has_service_area);
    global.vehicle_type_ids = vehicle_type_ids.to_vec();
    Ok(ctx.feed(GeofencingData {
        geofencing_zones: FeatureCollection {
            kind: "FeatureCollection",
            features,
        },
        global_rules: vec![global],
    }))
}

// ---------------------------------------------------------------------------------------------
// station_information.json, station_status.json
// ---------------------------------------------------------------------------------------------

/// `station_information.json` `data`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StationInformationData {
    pub stations: Vec<StationInfoEntry>,
}

/// A parking zone as a virtual station.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StationInfoEntry {
    pub station_id: String,
    pub name: Vec<LocalizedText>,
    pub lat: f64,
    pub lon: f64,
    pub is_virtual_station: bool,
    pub station_area: MultiPolygon,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
}

fn bbox(ring: &[[f64; 2]]) -> [f64; 4] {
    ring.iter().fold(
        [
            f64::INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        ],
        |b, p| {
            [
                b[0].min(p[0]),
                b[1].min(p[1]),
                b[2].max(p[0]),
                b[3].max(p[1]),
            ]
        },
    )
}

/// Cuts every restricted polygon lying wholly inside one of `parking`'s polygons out of it as
/// a hole (clockwise, per the right-hand rule).
fn carve(parking: &mut [PolygonRings], restricted: &[(Ring, [f64; 4])]) {
    for polygon in parking.iter_mut() {
        let Some(exterior) = polygon.first() else {
            continue;
        };
        let outer = bbox(exterior);
        let mut holes = Vec::new();
        for (ring, b) in restricted {
            let within_box =
                b[0] >= outer[0] && b[1] >= outer[1] && b[2] <= outer[2] && b[3] <= outer[3];
            if within_box && ring.iter().all(|&p| ring_contains(exterior, p)) {
                let mut hole = ring.clone();
                hole.reverse();
                holes.push(hole);
            }
        }
        polygon.extend(holes);
    }
}

/// `station_information.json`: every parking zone of `zones` as a virtual station, its area
/// the zone minus the no-parking and no-riding zones wholly inside it, its position the
/// area's centroid, its capacity the zone property `capacity` when set. Fails on the first
/// unusable geometry.
pub fn station_information(
    ctx: &FeedContext,
    zones: &[ZoneView],
) -> Result<Feed<StationInformationData>> {
    let mut restricted = Vec::new();
    for zone in zones
        .iter()
        .filter(|z| matches!(z.kind, FenceKind::NoParking | FenceKind::NoRiding))
    {
        for polygon in zone_geometry(zone)? {
            if let Some(exterior) = polygon.into_iter().next() {
                let b = bbox(&exterior);
                restricted.push((exterior, b));
            }
        }
    }
    let mut stations = Vec::new();
    for zone in zones.iter().filter(|z| z.kind == FenceKind::Parking) {
        let mut polygons = zone_geometry(zone)?;
        let (lat, lon) = centroid(&polygons);
        carve(&mut polygons, &restricted);
        stations.push(StationInfoEntry {
            station_id: zone.zone_id.clone(),
            name: ctx.localized(&zone.name),
            lat,
            lon,
            is_virtual_station: true,
            station_area: MultiPolygon::new(polygons),
            capacity: zone.capacity(),
        });
    }
    Ok(ctx.feed(StationInformationData { stations }))
}

/// Vehicles of one type at a station.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VehicleTypeCount {
    pub vehicle_type_id: String,
    pub count: u32,
}

/// What the integrator counted in one parking zone, input of [`station_status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StationCounts {
    pub zone_id: String,
    /// Rentable bikes per vehicle type (not reserved, not disabled, not on a trip).
    pub available: Vec<VehicleTypeCount>,
    /// Disabled bikes standing in the zone.
    pub disabled: u32,
}

/// `station_status.json` `data`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StationStatusData {
    pub stations: Vec<StationStatusEntry>,
}

/// One virtual station's status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StationStatusEntry {
    pub station_id: String,
    pub num_vehicles_available: u32,
    pub vehicle_types_available: Vec<VehicleTypeCount>,
    pub num_vehicles_disabled: u32,
    /// Free places when the zone has a capacity; a virtual station without one is unlimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_docks_available: Option<u32>,
    pub is_installed: bool,
    pub is_renting: bool,
    pub is_returning: bool,
    pub last_reported: Rfc3339,
}

/// `station_status.json`: one entry per parking zone of `zones` (the same stations as
/// [`station_information`]), counts from `counts` (a zone without counts is empty), every type
/// of `vehicle_type_ids` listed (0 when absent), as of the context's time.
pub fn station_status(
    ctx: &FeedContext,
    zones: &[ZoneView],
    counts: &[StationCounts],
    vehicle_type_ids: &[String],
) -> Feed<StationStatusData> {
    let by_zone: std::collections::HashMap<&str, &StationCounts> =
        counts.iter().map(|c| (c.zone_id.as_str(), c)).collect();
    let now = Rfc3339::from_ms(ctx.now_ms);
    let mut stations = Vec::new();
    for zone in zones.iter().filter(|z| z.kind == FenceKind::Parking) {
        let c = by_zone.get(zone.zone_id.as_str());
        let mut by_type: Vec<VehicleTypeCount> = vehicle_type_ids
            .iter()
            .map(|id| VehicleTypeCount {
                vehicle_type_id: id.clone(),
                count: 0,
            })
            .collect();
        for tc in c.map(|c| c.available.as_slice()).unwrap_or_default() {
            match by_type
                .iter_mut()
                .find(|t| t.vehicle_type_id == tc.vehicle_type_id)
            {
                Some(t) => t.count = t.count.saturating_add(tc.count),
                None => by_type.push(tc.clone()),
            }
        }
        let available = by_type
            .iter()
            .fold(0u32, |sum, t| sum.saturating_add(t.count));
        let disabled = c.map_or(0, |c| c.disabled);
        stations.push(StationStatusEntry {
            station_id: zone.zone_id.clone(),
            num_vehicles_available: available,
            vehicle_types_available: by_type,
            num_vehicles_disabled: disabled,
            num_docks_available: zone
                .capacity()
                .map(|cap| cap.saturating_sub(available.saturating_add(disabled))),
            is_installed: true,
            is_renting: true,
            // Even a full zone accepts returns (GBFS: true unless returns are refused).
            is_returning: true,
            last_reported: now,
        });
    }
    ctx.feed(StationStatusData { stations })
}

// ---------------------------------------------------------------------------------------------
// system_pricing_plans.json
// ---------------------------------------------------------------------------------------------

/// `system_pricing_plans.json` `data`: the plan entries as given.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PricingPlansData<'a> {
    pub plans: &'a [Value],
}

/// `system_pricing_plans.json` wrapping `plans` (from `pricing::to_gbfs`, one per plan).
/// Fails when an entry is not an object with a string `plan_id`, or an id repeats.
pub fn system_pricing_plans<'a>(
    ctx: &FeedContext,
    plans: &'a [Value],
) -> Result<Feed<PricingPlansData<'a>>> {
    let mut seen = std::collections::HashSet::new();
    for (index, plan) in plans.iter().enumerate() {
        let id =
            plan.get("plan_id")
                .and_then(Value::as_str)
                .ok_or_else(|| GbfsError::PricingPlan {
                    index,
                    reason: "not an object with a string plan_id".into(),
                })?;
        if !seen.insert(id) {
            return Err(GbfsError::PricingPlan {
                index,
                reason: format!("plan_id {id:?} appears twice"),
            });
        }
    }
    Ok(ctx.feed(PricingPlansData { plans }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let key = VehicleIdKey::new(b"Jefe");
        let mac = key.mac(&[b"what do ya want ", b"for nothing?"]);
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // A key longer than a block is hashed first (RFC 4231 case 6).
        let key = VehicleIdKey::new(&[0xaa; 131]);
        let mac = key.mac(&[b"Test Using Larger Than Block-Size Key - Hash Key First"]);
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn rfc3339_formats_and_clamps() {
        assert_eq!(Rfc3339::from_ms(0).as_str(), "1970-01-01T00:00:00Z");
        assert_eq!(
            Rfc3339::from_ms(1_700_000_000_123).as_str(),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(
            Rfc3339::from_ms(951_782_400_999).as_str(),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(Rfc3339::from_ms(-5).as_str(), "1970-01-01T00:00:00Z");
        assert_eq!(Rfc3339::from_ms(i64::MAX).as_str(), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn polygons_get_the_right_hand_rule_and_close() {
        // Clockwise, unclosed square with a counter-clockwise hole.
        let g = json!({"type": "Polygon", "coordinates": [
            [[0.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0]],
            [[0.2, 0.2], [0.8, 0.2], [0.8, 0.8], [0.2, 0.8], [0.2, 0.2]]
        ]});
        let p = zone_polygons(&g).unwrap();
        assert_eq!(p.len(), 1);
        assert!(ring_area2(&p[0][0]) > 0.0, "exterior counter-clockwise");
        assert!(ring_area2(&p[0][1]) < 0.0, "hole clockwise");
        assert_eq!(p[0][0].first(), p[0][0].last());
        let (lat, lon) = centroid(&p);
        assert_eq!((lat, lon), (0.5, 0.5));
        for bad in [
            json!({"type": "Point", "coordinates": [0, 0]}),
            json!({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [0, 0]]]}),
            json!({"type": "Polygon", "coordinates": [[[0, 0], [0, 95], [1, 1]]]}),
            json!({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [2, 2], [0, 0]]]}),
            json!({"type": "MultiPolygon", "coordinates": []}),
        ] {
            assert!(zone_polygons(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn precedence_puts_restrictions_first() {
        let mut kinds = FenceKind::ALL.to_vec();
        kinds.sort_by_key(|&k| precedence(k));
        assert_eq!(
            kinds,
            [
                FenceKind::NoRiding,
                FenceKind::NoParking,
                FenceKind::Parking,
                FenceKind::ServiceArea
            ]
        );
    }
}
