//! The manifest: which block files make up the store, which WAL segment replay starts at,
//! the retention floor and the device tombstones that still hide data in older files.
//!
//! `<dir>/MANIFEST`: `[magic b"WLNMAN"][version u16][len u32][crc32 u32][payload]`, payload:
//!
//! ```text
//! next_generation u64, next_segment u64, floor i64,
//! [n u32] × file: generation u64, partition start i64, partition end i64, bytes u64,
//!                 points u64, min ts i64, max ts i64
//! [n u32] × tombstone: tenant str, device str, generation u64
//! version 2 adds:
//! rollup floor of the fine level i64, of the coarse level i64,
//! [n u32] × rollup file: generation u64, width i64, partition start i64, partition end i64,
//!                        bytes u64
//! version 3 adds:
//! [n u32] × device floor: tenant str, device str, floor i64
//! ```
//!
//! Version 1 manifests (no rollups) are read as version 2 with no rollups and zero floors, and
//! versions 1 and 2 as having no device floors. A manifest without device floors is still
//! stored as version 2, so a store that never used per-device retention stays readable by the
//! release before it.
//!
//! It is replaced atomically: written to `MANIFEST.tmp`, fsynced, renamed, directory fsynced.
//! A file in `blocks/` that the manifest does not name is a leftover of an interrupted flush
//! or compaction and is deleted at open.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::codec::{DecodeError, Reader, put_i64, put_str, put_u16, put_u32, put_u64};
use crate::error::{Error, Result};
use crate::fsutil::sync_dir;

const MAGIC: &[u8; 6] = b"WLNMAN";
const VERSION: u16 = 3;
/// The version stored when there are no device floors (readable by the previous release).
const VERSION_WITHOUT_DEVICE_FLOORS: u16 = 2;
pub(crate) const FILE: &str = "MANIFEST";

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FileEntry {
    pub generation: u64,
    pub partition: (i64, i64),
    pub bytes: u64,
    pub points: u64,
    pub min_ts: i64,
    pub max_ts: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Tombstone {
    pub tenant: String,
    pub device: String,
    /// Data of the device in files with a lower generation is deleted.
    pub generation: u64,
}

/// A rollup file (see `rollup`): one partition at one bucket width.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RollupEntry {
    pub generation: u64,
    pub width: i64,
    pub partition: (i64, i64),
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Manifest {
    pub next_generation: u64,
    pub next_segment: u64,
    /// Points with a smaller timestamp were dropped by retention.
    pub floor: i64,
    pub files: Vec<FileEntry>,
    pub tombstones: Vec<Tombstone>,
    /// Rollup files of a partition ending at or below the floor of their level (fine, coarse)
    /// were dropped by rollup retention.
    pub rollup_floors: [i64; 2],
    pub rollups: Vec<RollupEntry>,
    /// Per-device raw retention floors above `floor` (per-device retention policies).
    pub device_floors: DeviceFloors,
}

/// Per-device retention floors: a device's points below its floor were dropped by retention
/// (or are about to be: their partitions are rewritten after the floor is stored), are hidden
/// from reads, and later writes below it are discarded. Only floors above the store-wide floor
/// are kept. Floors never go down.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct DeviceFloors {
    by_tenant: BTreeMap<String, BTreeMap<String, i64>>,
    /// The highest floor (`i64::MIN` when empty): a timestamp at or above it needs no lookup.
    max: i64,
    len: usize,
}

impl DeviceFloors {
    /// The floor of a device; `i64::MIN` when it has none.
    pub(crate) fn get(&self, tenant: &str, device: &str) -> i64 {
        if self.len == 0 {
            return i64::MIN;
        }
        self.by_tenant
            .get(tenant)
            .and_then(|d| d.get(device))
            .copied()
            .unwrap_or(i64::MIN)
    }

    /// Whether `ts` is below the device's floor (cheap for timestamps above every floor).
    pub(crate) fn hides(&self, tenant: &str, device: &str, ts: i64) -> bool {
        ts < self.max() && ts < self.get(tenant, device)
    }

    /// The highest floor, `i64::MIN` when there is none.
    pub(crate) fn max(&self) -> i64 {
        if self.len == 0 { i64::MIN } else { self.max }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets a device's floor (replacing any).
    pub(crate) fn insert(&mut self, tenant: &str, device: &str, floor: i64) {
        let devices = self.by_tenant.entry(tenant.to_string()).or_default();
        match devices.insert(device.to_string(), floor) {
            None => {
                self.len += 1;
                self.max = if self.len == 1 {
                    floor
                } else {
                    self.max.max(floor)
                };
            }
            Some(old) if old == self.max && floor < old => {
                self.max = self.iter().map(|(_, _, f)| f).max().unwrap_or(floor);
            }
            Some(_) => self.max = self.max.max(floor),
        }
    }

    /// Every (tenant, device, floor), by tenant and device.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str, i64)> {
        self.by_tenant.iter().flat_map(|(t, devices)| {
            devices
                .iter()
                .map(move |(d, f)| (t.as_str(), d.as_str(), *f))
        })
    }
}

impl Default for Manifest {
    fn default() -> Manifest {
        Manifest {
            next_generation: 1,
            next_segment: 1,
            floor: 0,
            files: Vec::new(),
            tombstones: Vec::new(),
            rollup_floors: [0, 0],
            rollups: Vec::new(),
            device_floors: DeviceFloors::default(),
        }
    }
}

impl Manifest {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut p = Vec::new();
        put_u64(&mut p, self.next_generation);
        put_u64(&mut p, self.next_segment);
        put_i64(&mut p, self.floor);
        put_u32(&mut p, self.files.len() as u32);
        for f in &self.files {
            put_u64(&mut p, f.generation);
            put_i64(&mut p, f.partition.0);
            put_i64(&mut p, f.partition.1);
            put_u64(&mut p, f.bytes);
            put_u64(&mut p, f.points);
            put_i64(&mut p, f.min_ts);
            put_i64(&mut p, f.max_ts);
        }
        put_u32(&mut p, self.tombstones.len() as u32);
        for t in &self.tombstones {
            put_str(&mut p, &t.tenant);
            put_str(&mut p, &t.device);
            put_u64(&mut p, t.generation);
        }
        put_i64(&mut p, self.rollup_floors[0]);
        put_i64(&mut p, self.rollup_floors[1]);
        put_u32(&mut p, self.rollups.len() as u32);
        for r in &self.rollups {
            put_u64(&mut p, r.generation);
            put_i64(&mut p, r.width);
            put_i64(&mut p, r.partition.0);
            put_i64(&mut p, r.partition.1);
            put_u64(&mut p, r.bytes);
        }
        let version = if self.device_floors.is_empty() {
            VERSION_WITHOUT_DEVICE_FLOORS
        } else {
            put_u32(&mut p, self.device_floors.len() as u32);
            for (tenant, device, floor) in self.device_floors.iter() {
                put_str(&mut p, tenant);
                put_str(&mut p, device);
                put_i64(&mut p, floor);
            }
            VERSION
        };
        let mut out = Vec::with_capacity(p.len() + 16);
        out.extend_from_slice(MAGIC);
        put_u16(&mut out, version);
        put_u32(&mut out, p.len() as u32);
        put_u32(&mut out, crc32fast::hash(&p));
        out.extend_from_slice(&p);
        out
    }

    fn decode(bytes: &[u8]) -> std::result::Result<Manifest, (u64, String)> {
        if bytes.len() < 16 || &bytes[..6] != MAGIC {
            return Err((0, "not a manifest (bad magic or too short)".into()));
        }
        let version = u16::from_le_bytes([bytes[6], bytes[7]]);
        if !(1..=VERSION).contains(&version) {
            return Err((6, format!("unsupported manifest version {version}")));
        }
        let len = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(bytes[12..16].try_into().unwrap_or_default());
        if bytes.len() - 16 != len {
            return Err((8, format!("length {len}, file holds {}", bytes.len() - 16)));
        }
        let payload = &bytes[16..];
        if crc32fast::hash(payload) != crc {
            return Err((16, "checksum mismatch".into()));
        }
        let mut r = Reader::new(payload);
        let m = (|| -> std::result::Result<Manifest, DecodeError> {
            let next_generation = r.u64()?;
            let next_segment = r.u64()?;
            let floor = r.i64()?;
            let n = r.count(56)?;
            let mut files = Vec::with_capacity(n);
            for _ in 0..n {
                files.push(FileEntry {
                    generation: r.u64()?,
                    partition: (r.i64()?, r.i64()?),
                    bytes: r.u64()?,
                    points: r.u64()?,
                    min_ts: r.i64()?,
                    max_ts: r.i64()?,
                });
            }
            let n = r.count(16)?;
            let mut tombstones = Vec::with_capacity(n);
            for _ in 0..n {
                tombstones.push(Tombstone {
                    tenant: r.str()?.to_string(),
                    device: r.str()?.to_string(),
                    generation: r.u64()?,
                });
            }
            let mut rollup_floors = [0, 0];
            let mut rollups = Vec::new();
            if version >= 2 {
                rollup_floors = [r.i64()?, r.i64()?];
                let n = r.count(40)?;
                rollups.reserve(n);
                for _ in 0..n {
                    rollups.push(RollupEntry {
                        generation: r.u64()?,
                        width: r.i64()?,
                        partition: (r.i64()?, r.i64()?),
                        bytes: r.u64()?,
                    });
                }
            }
            let mut device_floors = DeviceFloors::default();
            if version >= 3 {
                let n = r.count(16)?;
                for _ in 0..n {
                    let tenant = r.str()?;
                    let device = r.str()?;
                    device_floors.insert(tenant, device, r.i64()?);
                }
            }
            r.finish()?;
            Ok(Manifest {
                next_generation,
                next_segment,
                floor,
                files,
                tombstones,
                rollup_floors,
                rollups,
                device_floors,
            })
        })()
        .map_err(|e| (16, e.0))?;
        Ok(m)
    }

    /// Reads `<dir>/MANIFEST`; `None` if there is none. Removes a leftover `MANIFEST.tmp`.
    pub(crate) fn load(dir: &Path) -> Result<Option<Manifest>> {
        let tmp = dir.join(format!("{FILE}.tmp"));
        if tmp.exists() {
            fs::remove_file(&tmp).map_err(Error::io("remove an unfinished manifest"))?;
        }
        let path = dir.join(FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::Io {
                    context: "read the manifest",
                    source,
                });
            }
        };
        Manifest::decode(&bytes)
            .map(Some)
            .map_err(|(offset, reason)| Error::Corrupt {
                file: path,
                offset,
                reason,
            })
    }

    /// Replaces `<dir>/MANIFEST` atomically and durably.
    pub(crate) fn store(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join(format!("{FILE}.tmp"));
        let bytes = self.encode();
        (|| -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, dir.join(FILE))?;
            sync_dir(dir)
        })()
        .map_err(Error::io("write the manifest"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), None);
        let m = Manifest {
            next_generation: 9,
            next_segment: 4,
            floor: 86_400_000,
            files: vec![FileEntry {
                generation: 3,
                partition: (0, 86_400_000),
                bytes: 100,
                points: 10,
                min_ts: 1,
                max_ts: 2,
            }],
            tombstones: vec![Tombstone {
                tenant: "t".into(),
                device: "d".into(),
                generation: 5,
            }],
            rollup_floors: [60_000, 0],
            rollups: vec![RollupEntry {
                generation: 3,
                width: 60_000,
                partition: (0, 86_400_000),
                bytes: 77,
            }],
            device_floors: DeviceFloors::default(),
        };
        m.store(dir.path()).unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), Some(m.clone()));
        // Without device floors it is stored as version 2 (readable by the previous release);
        // with them as version 3.
        let version = |dir: &Path| {
            let bytes = fs::read(dir.join(FILE)).unwrap();
            u16::from_le_bytes([bytes[6], bytes[7]])
        };
        assert_eq!(version(dir.path()), 2);
        let mut m = m;
        m.device_floors.insert("t", "d", 3 * 86_400_000);
        m.device_floors.insert("t", "e", 86_400_000);
        m.device_floors.insert("u", "d", 2 * 86_400_000);
        m.store(dir.path()).unwrap();
        assert_eq!(version(dir.path()), 3);
        let back = Manifest::load(dir.path()).unwrap().unwrap();
        assert_eq!(back, m);
        assert_eq!(back.device_floors.len(), 3);
        assert_eq!(back.device_floors.max(), 3 * 86_400_000);
        assert_eq!(back.device_floors.get("u", "d"), 2 * 86_400_000);
        assert_eq!(back.device_floors.get("u", "e"), i64::MIN);
        assert!(back.device_floors.hides("t", "e", 5));
        assert!(!back.device_floors.hides("t", "e", 86_400_000));
        assert!(!back.device_floors.hides("x", "y", 5));
        // Lowering the highest floor lowers the maximum (equality follows the contents).
        let mut f = back.device_floors.clone();
        f.insert("t", "d", 86_400_000);
        assert_eq!(f.max(), 2 * 86_400_000);
        let mut g = DeviceFloors::default();
        for (t, d, v) in f.iter() {
            g.insert(t, d, v);
        }
        assert_eq!(f, g);
        let path = dir.path().join(FILE);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            Manifest::load(dir.path()),
            Err(Error::Corrupt { .. })
        ));
    }
}
