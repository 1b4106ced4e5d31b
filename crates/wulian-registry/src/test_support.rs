//! Fixture builders for tests in this crate and in crates built on it (API, ingest). Tiny and
//! dependency-free, so they are compiled always rather than behind a feature flag.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::{Command, CommandStatus, NewDevice, NewTenant, Registry, Result, Tenant, now_ms};

/// An in-memory registry with tenant `tenant_id` created (not bootstrapped).
pub fn registry_with_tenant(tenant_id: &str) -> Result<(Registry, Tenant)> {
    let registry = Registry::open_in_memory()?;
    let tenant = registry.create_tenant(&new_tenant(tenant_id))?;
    Ok((registry, tenant))
}

/// `NewTenant` with the given id, named after it.
pub fn new_tenant(id: &str) -> NewTenant {
    NewTenant {
        id: Some(id.to_string()),
        name: format!("Tenant {id}"),
    }
}

/// `NewDevice` with defaults for everything but the id.
pub fn new_device(id: &str) -> NewDevice {
    NewDevice {
        id: id.to_string(),
        ..NewDevice::default()
    }
}

/// `NewDevice` with a profile and labels.
pub fn new_device_with(id: &str, profile: &str, labels: &[(&str, &str)]) -> NewDevice {
    NewDevice {
        id: id.to_string(),
        profile: Some(profile.to_string()),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect::<BTreeMap<_, _>>(),
        ..NewDevice::default()
    }
}

/// A pending command for `device_id`, created now, with a fresh id.
pub fn new_command(tenant: &str, device_id: &str, name: &str) -> Command {
    let now = now_ms();
    Command {
        id: crate::new_command_id(),
        tenant: tenant.to_string(),
        device_id: device_id.to_string(),
        name: name.to_string(),
        params: Value::Object(serde_json::Map::new()),
        status: CommandStatus::Pending,
        response: None,
        timeout_ms: 10_000,
        created_at: now,
        updated_at: now,
    }
}
