//! Per-device state for fleets of hundreds of thousands of devices, by tenant and device id.
//!
//! Each tenant's values sit packed in one vector, found through a table of 4-byte indices
//! hashed by device id; the id is stored once, beside its value. A `HashMap<String, V>` keeps
//! a 24-byte key in every bucket and sits up to half empty after it grows, which for a
//! 150-byte value is ~300 bytes a device; here it is the value, its id and ~10 bytes.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

/// tenant → device id → `V`.
#[derive(Debug)]
pub(crate) struct DeviceTable<V> {
    tenants: HashMap<String, Devices<V>>,
    len: usize,
}

impl<V> Default for DeviceTable<V> {
    fn default() -> Self {
        DeviceTable {
            tenants: HashMap::new(),
            len: 0,
        }
    }
}

impl<V> DeviceTable<V> {
    /// Values over all tenants.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn get(&self, tenant: &str, device: &str) -> Option<&V> {
        self.tenants.get(tenant)?.get(device)
    }

    pub(crate) fn get_mut(&mut self, tenant: &str, device: &str) -> Option<&mut V> {
        self.tenants.get_mut(tenant)?.get_mut(device)
    }

    /// The device's value, inserted from `new` (allocating its keys) only the first time.
    pub(crate) fn get_or_insert_with(
        &mut self,
        tenant: &str,
        device: &str,
        new: impl FnOnce() -> V,
    ) -> &mut V {
        if !self.tenants.contains_key(tenant) {
            self.tenants.insert(tenant.to_string(), Devices::default());
        }
        let devices = self.tenants.get_mut(tenant).expect("inserted above");
        let (value, inserted) = devices.get_or_insert_with(device, new);
        if inserted {
            self.len += 1;
        }
        value
    }

    pub(crate) fn remove(&mut self, tenant: &str, device: &str) -> Option<V> {
        let devices = self.tenants.get_mut(tenant)?;
        let removed = devices.remove(device)?;
        self.len -= 1;
        if devices.len() == 0 {
            self.tenants.remove(tenant);
        }
        Some(removed)
    }

    /// Keeps the values for which `keep` is true.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        for devices in self.tenants.values_mut() {
            devices.retain(&mut keep);
        }
        self.tenants.retain(|_, devices| devices.len() > 0);
        self.len = self.tenants.values().map(Devices::len).sum();
    }

    /// The tenants that have values.
    pub(crate) fn tenants(&self) -> impl Iterator<Item = &str> {
        self.tenants.keys().map(String::as_str)
    }

    pub(crate) fn tenant(&self, tenant: &str) -> Option<&Devices<V>> {
        self.tenants.get(tenant)
    }

    pub(crate) fn tenant_mut(&mut self, tenant: &str) -> Option<&mut Devices<V>> {
        self.tenants.get_mut(tenant)
    }
}

/// One tenant's devices.
pub(crate) struct Devices<V> {
    /// Positions in `entries`, hashed by the entry's device id.
    index: HashTable<u32>,
    entries: Vec<(Box<str>, V)>,
    hasher: RandomState,
}

impl<V> std::fmt::Debug for Devices<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Devices")
            .field("len", &self.entries.len())
            .finish()
    }
}

impl<V> Default for Devices<V> {
    fn default() -> Self {
        Devices {
            index: HashTable::new(),
            entries: Vec::new(),
            hasher: RandomState::new(),
        }
    }
}

impl<V> Devices<V> {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn position(&self, device: &str) -> Option<usize> {
        let entries = &self.entries;
        self.index
            .find(self.hasher.hash_one(device), |&i| {
                &*entries[i as usize].0 == device
            })
            .map(|&i| i as usize)
    }

    pub(crate) fn get(&self, device: &str) -> Option<&V> {
        self.position(device).map(|i| &self.entries[i].1)
    }

    pub(crate) fn get_mut(&mut self, device: &str) -> Option<&mut V> {
        self.position(device).map(|i| &mut self.entries[i].1)
    }

    /// The value and whether it was inserted now.
    fn get_or_insert_with(&mut self, device: &str, new: impl FnOnce() -> V) -> (&mut V, bool) {
        if let Some(i) = self.position(device) {
            return (&mut self.entries[i].1, false);
        }
        let at = u32::try_from(self.entries.len()).expect("under 4 billion devices a tenant");
        self.entries.push((device.into(), new()));
        let Devices {
            index,
            entries,
            hasher,
        } = self;
        index.insert_unique(hasher.hash_one(device), at, |&i| {
            hasher.hash_one(&*entries[i as usize].0)
        });
        (&mut self.entries[at as usize].1, true)
    }

    fn remove(&mut self, device: &str) -> Option<V> {
        let hash = self.hasher.hash_one(device);
        let entries = &self.entries;
        let found = self
            .index
            .find_entry(hash, |&i| &*entries[i as usize].0 == device)
            .ok()?;
        let (at, _) = found.remove();
        let at = at as usize;
        let last = self.entries.len() - 1;
        let (_, value) = self.entries.swap_remove(at);
        if at != last {
            // The last entry moved into the hole: point its index there.
            let moved = self.hasher.hash_one(&*self.entries[at].0);
            if let Some(i) = self.index.find_mut(moved, |&i| i as usize == last) {
                *i = at as u32;
            }
        }
        Some(value)
    }

    fn retain(&mut self, keep: &mut impl FnMut(&V) -> bool) {
        let before = self.entries.len();
        self.entries.retain(|(_, v)| keep(v));
        if self.entries.len() == before {
            return;
        }
        let Devices {
            index,
            entries,
            hasher,
        } = self;
        index.clear();
        for (i, (device, _)) in entries.iter().enumerate() {
            index.insert_unique(hasher.hash_one(&**device), i as u32, |&j| {
                hasher.hash_one(&*entries[j as usize].0)
            });
        }
    }

    /// Every device and its value, in insertion order (until removals reorder it).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.entries.iter().map(|(d, v)| (&**d, v))
    }

    /// The device at `position` (`0..len()`), for walking the table in slices.
    pub(crate) fn get_index_mut(&mut self, position: usize) -> Option<(&str, &mut V)> {
        self.entries.get_mut(position).map(|(d, v)| (&**d, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_find_remove_and_retain() {
        let mut table: DeviceTable<u32> = DeviceTable::default();
        for i in 0..1000u32 {
            *table.get_or_insert_with("t1", &format!("d{i}"), || 0) += i;
        }
        *table.get_or_insert_with("t2", "d1", || 7) += 1;
        assert_eq!(table.len(), 1001);
        assert_eq!(table.get("t1", "d999"), Some(&999));
        assert_eq!(table.get("t2", "d1"), Some(&8));
        assert_eq!(table.get("t2", "d2"), None);
        assert_eq!(table.get("t3", "d1"), None);

        // Removing from the middle moves the last entry into the hole; both stay findable.
        assert_eq!(table.remove("t1", "d10"), Some(10));
        assert_eq!(table.remove("t1", "d10"), None);
        assert_eq!(table.get("t1", "d999"), Some(&999));
        assert_eq!(table.get("t1", "d0"), Some(&0));
        assert_eq!(table.len(), 1000);
        *table.get_mut("t1", "d999").unwrap() += 1;
        assert_eq!(table.get("t1", "d999"), Some(&1000));

        table.retain(|&v| v % 2 == 0);
        assert_eq!(table.get("t1", "d998"), Some(&998));
        assert_eq!(table.get("t1", "d997"), None);
        assert_eq!(table.get("t2", "d1"), Some(&8));
        assert_eq!(table.len(), 501);

        assert_eq!(table.remove("t2", "d1"), Some(8));
        assert_eq!(table.tenants().collect::<Vec<_>>(), vec!["t1"]);
        let devices = table.tenant_mut("t1").unwrap();
        let mut seen = 0;
        for i in 0..devices.len() {
            let (id, v) = devices.get_index_mut(i).unwrap();
            assert_eq!(id, format!("d{v}").replace("d1000", "d999"));
            seen += 1;
        }
        assert_eq!(seen, 500);
        assert_eq!(table.tenant("t1").unwrap().iter().count(), 500);
    }
}
