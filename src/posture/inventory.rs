//! Inventory provider: a file (TOML or JSON) mapping device ids to their posture, exported by an
//! MDM or asset inventory. Read once per change, looked up with one hash probe per request;
//! reloaded like the policy, and a broken file keeps the last good inventory.
//!
//! ```toml
//! [device."3f2a...c9"]           # device id: fingerprint (default), serial or SAN
//! managed = true
//! disk_encrypted = true
//! os = "macos"
//! os_version = "14.5"
//! firewall = true
//! last_seen = "2026-11-23T08:00:00Z"
//! tags = ["corp"]
//! ```
//! JSON: `{"device": {"3f2a...c9": {"managed": true, ...}}}`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Deserialize;

use super::{DeviceIdSource, Lookup, PostureError, PostureProvider, Query, RawPosture, Unavailable, normalize_id};

type Devices = HashMap<String, Arc<super::DevicePosture>>;

pub struct Inventory {
    path: PathBuf,
    source: DeviceIdSource,
    devices: ArcSwap<Devices>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInventory {
    #[serde(default)]
    device: HashMap<String, RawPosture>,
}

impl Inventory {
    pub fn load(path: &Path, source: DeviceIdSource) -> Result<Self, PostureError> {
        Ok(Self {
            path: path.to_path_buf(),
            source,
            devices: ArcSwap::from_pointee(parse_file(path, source)?),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.devices.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads the file again and swaps it in if valid; on error the current inventory stays.
    pub fn reload(&self) -> Result<usize, PostureError> {
        let devices = parse_file(&self.path, self.source)?;
        let n = devices.len();
        self.devices.store(Arc::new(devices));
        Ok(n)
    }
}

impl PostureProvider for Inventory {
    fn name(&self) -> &'static str {
        "inventory"
    }

    fn lookup(&self, q: &Query<'_>) -> Lookup {
        Lookup::Ready(
            self.devices
                .load()
                .get(q.device_id)
                .cloned()
                .ok_or(Unavailable::DeviceUnknown),
        )
    }
}

fn parse_file(path: &Path, source: DeviceIdSource) -> Result<Devices, PostureError> {
    let err = |message: String| PostureError::Inventory {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    parse(&text, path.extension().is_some_and(|e| e == "json"), source).map_err(err)
}

/// Parses inventory text; errors name the device and, for TOML, the line.
pub fn parse(text: &str, json: bool, source: DeviceIdSource) -> Result<Devices, String> {
    let raw: RawInventory = if json {
        serde_json::from_str(text).map_err(|e| e.to_string())?
    } else {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| crate::diag::line_col(text, s.start).0)
                .map_or(String::new(), |l| format!("line {l}: "));
            format!("{line}{}", e.message())
        })?
    };
    let mut devices = HashMap::with_capacity(raw.device.len());
    for (id, p) in raw.device {
        let posture = p.into_posture().map_err(|e| format!("device `{id}`: {e}"))?;
        devices.insert(normalize_id(source, &id), Arc::new(posture));
    }
    Ok(devices)
}
