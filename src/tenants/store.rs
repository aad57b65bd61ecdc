//! The local tenant state: one process's keys, spend and usage in memory, written to
//! `GATEWAY_STATE_DIR/tenants.json` when `GATEWAY_STATE_DIR` is set (atomically: a temporary
//! file, fsync, rename, fsync of the directory), so it survives restarts. Admin writes are
//! written at once; spend within [`super::SYNC_EVERY`] and at shutdown.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::{now_ms, Counters, KeyRecord, Settlement, Spend};

/// The file's name in `GATEWAY_STATE_DIR`.
pub const FILE: &str = "tenants.json";

#[derive(Default, Serialize, Deserialize)]
struct Data {
    #[serde(default)]
    keys: BTreeMap<String, KeyRecord>,
    /// `key` -> period id -> micro-dollars.
    #[serde(default)]
    spend: BTreeMap<String, BTreeMap<String, u64>>,
    /// day -> key -> model -> counters.
    #[serde(default)]
    usage: BTreeMap<String, BTreeMap<String, BTreeMap<String, Counters>>>,
    /// Open reservations: key -> id -> (micro-dollars, expiry in unix ms). Not persisted: they
    /// die with the process that holds the requests.
    #[serde(skip)]
    open: HashMap<String, HashMap<String, (u64, u64)>>,
}

pub struct Local {
    data: Mutex<Data>,
    path: Option<PathBuf>,
    dirty: AtomicBool,
    /// One writer at a time (the background flush and an admin write).
    writing: Mutex<()>,
}

impl Local {
    /// The state in `dir` (created if missing), or in memory only.
    pub fn open(dir: Option<&Path>) -> Result<Local, String> {
        let mut data = Data::default();
        let path = match dir {
            None => None,
            Some(d) => {
                std::fs::create_dir_all(d).map_err(|e| {
                    format!("GATEWAY_STATE_DIR={}: cannot create it: {e}", d.display())
                })?;
                let p = d.join(FILE);
                match std::fs::read(&p) {
                    Ok(bytes) => {
                        data = serde_json::from_slice(&bytes).map_err(|e| {
                            format!(
                                "GATEWAY_STATE_DIR={}: {FILE} is not a tenant state file ({e})",
                                d.display()
                            )
                        })?;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(format!(
                            "GATEWAY_STATE_DIR={}: cannot read {FILE}: {e}",
                            d.display()
                        ))
                    }
                }
                // Writable? Found now rather than at the first spend.
                let probe = d.join(".tenants.probe");
                std::fs::write(&probe, b"")
                    .and_then(|_| std::fs::remove_file(&probe))
                    .map_err(|e| format!("GATEWAY_STATE_DIR={}: not writable: {e}", d.display()))?;
                Some(p)
            }
        };
        Ok(Local {
            data: Mutex::new(data),
            path,
            dirty: AtomicBool::new(false),
            writing: Mutex::new(()),
        })
    }

    pub fn describe(&self) -> String {
        match &self.path {
            Some(p) => format!("local file {}", p.display()),
            None => "memory (this process; set GATEWAY_STATE_DIR to keep it)".into(),
        }
    }

    pub fn keys(&self) -> Vec<KeyRecord> {
        self.data.lock().keys.values().cloned().collect()
    }

    pub fn all_records(&self) -> Vec<KeyRecord> {
        self.keys()
    }

    pub fn put(&self, rec: &KeyRecord, create: bool) -> bool {
        {
            let mut d = self.data.lock();
            let live = d
                .keys
                .get(&rec.name)
                .is_some_and(|r| r.revoked_at.is_none());
            if create == live {
                return false;
            }
            d.keys.insert(rec.name.clone(), rec.clone());
        }
        self.dirty.store(true, Ordering::Release);
        self.flush_if_dirty();
        true
    }

    /// Admits `worst` if `spent + open + worst <= budget` (and `spent + open < budget`);
    /// `Err` carries what was spent and reserved.
    pub fn reserve(
        &self,
        key: &str,
        period: &str,
        budget: u64,
        worst: u64,
        id: &str,
        expires_ms: u64,
    ) -> Result<(), Spend> {
        let now = now_ms();
        let mut d = self.data.lock();
        let spent = d
            .spend
            .get(key)
            .and_then(|p| p.get(period))
            .copied()
            .unwrap_or(0);
        if !d.open.contains_key(key) {
            d.open.insert(key.to_string(), HashMap::new());
        }
        let Some(open) = d.open.get_mut(key) else {
            return Err(Spend { spent, reserved: 0 });
        };
        open.retain(|_, (_, exp)| *exp > now);
        let reserved: u64 = open.values().map(|(m, _)| *m).sum();
        if spent + reserved >= budget || spent + reserved + worst > budget {
            return Err(Spend { spent, reserved });
        }
        open.insert(id.to_string(), (worst, expires_ms));
        Ok(())
    }

    pub fn settle(&self, s: &Settlement) {
        let mut d = self.data.lock();
        if let Some(member) = &s.reservation {
            let id = member.split(':').next().unwrap_or_default();
            if let Some(open) = d.open.get_mut(&s.key) {
                open.remove(id);
            }
        }
        if s.counters.cost > 0 {
            if let Some(spend) = slot(&mut d.spend, &s.key) {
                for p in &s.periods {
                    if let Some(v) = slot(spend, p) {
                        *v += s.counters.cost;
                    }
                }
            }
        }
        if s.counters.requests == 0 && s.counters.cost == 0 {
            drop(d);
            return;
        }
        let row = slot(&mut d.usage, &s.day)
            .and_then(|keys| slot(keys, &s.key))
            .and_then(|models| slot(models, &s.model));
        if let Some(c) = row {
            c.add(&s.counters);
        }
        drop(d);
        self.dirty.store(true, Ordering::Release);
    }

    pub fn spend(&self, key: &str, period: &str) -> Spend {
        let now = now_ms();
        let d = self.data.lock();
        Spend {
            spent: d
                .spend
                .get(key)
                .and_then(|p| p.get(period))
                .copied()
                .unwrap_or(0),
            reserved: d
                .open
                .get(key)
                .map(|o| o.values().filter(|(_, e)| *e > now).map(|(m, _)| *m).sum())
                .unwrap_or(0),
        }
    }

    pub fn usage(&self, key: &str, day: &str) -> BTreeMap<String, Counters> {
        self.data
            .lock()
            .usage
            .get(day)
            .and_then(|k| k.get(key))
            .cloned()
            .unwrap_or_default()
    }

    /// Writes the file if anything changed since the last write (no file: nothing to do).
    pub fn flush_if_dirty(&self) {
        let Some(path) = &self.path else {
            self.dirty.store(false, Ordering::Release);
            return;
        };
        let _one = self.writing.lock();
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return;
        }
        let bytes = {
            let mut d = self.data.lock();
            // Old daily rows go (the file stays bounded).
            let oldest =
                super::day_name((super::unix_now() / 86_400) as i64 - super::USAGE_DAYS as i64);
            d.usage = std::mem::take(&mut d.usage).split_off(&oldest);
            serde_json::to_vec(&*d)
        };
        let written = bytes
            .map_err(std::io::Error::other)
            .and_then(|b| write_atomic(path, &b));
        if let Err(e) = written {
            // Kept dirty: the next tick tries again.
            self.dirty.store(true, Ordering::Release);
            log::error!("tenants: cannot write {}: {e}", path.display());
        }
    }
}

/// The value under `k`, made (and its key allocated) only when missing: the request path
/// finds its key, period and model rows already there.
fn slot<'a, V: Default>(m: &'a mut BTreeMap<String, V>, k: &str) -> Option<&'a mut V> {
    if !m.contains_key(k) {
        m.insert(k.to_string(), V::default());
    }
    m.get_mut(k)
}

/// Writes `bytes` to `path` so a reader (or a crash) sees the old file or the new one whole.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{FILE}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settlement(key: &str, cost: u64, res: Option<String>) -> Settlement {
        Settlement {
            key: key.into(),
            periods: ["d", "w", "m", "total"].map(String::from),
            reservation: res,
            day: "2026-12-05".into(),
            model: "m".into(),
            counters: Counters {
                requests: 1,
                prompt_tokens: 3,
                completion_tokens: 2,
                cost,
            },
        }
    }

    #[test]
    fn reservations_hold_the_budget_and_settle_to_real_cost() {
        let l = Local::open(None).unwrap();
        let far = now_ms() + 60_000;
        // $10 budget, $2 worst case each: exactly five.
        let mut ok = 0;
        for i in 0..8 {
            if l.reserve("a", "total", 10, 2, &format!("r{i}"), far)
                .is_ok()
            {
                ok += 1;
            }
        }
        assert_eq!(ok, 5);
        for i in 0..5 {
            l.settle(&settlement("a", 2, Some(format!("r{i}:2"))));
        }
        assert_eq!(
            l.spend("a", "total"),
            Spend {
                spent: 10,
                reserved: 0
            }
        );
        assert!(l.reserve("a", "total", 10, 0, "z", far).is_err(), "spent");
        // Expired reservations stop counting.
        assert!(l.reserve("b", "total", 10, 9, "x", now_ms() - 1).is_ok());
        assert!(l.reserve("b", "total", 10, 9, "y", far).is_ok());
        assert_eq!(l.usage("a", "2026-12-05")["m"].requests, 5);
    }

    #[test]
    fn file_survives_reopen_and_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("state");
        let l = Local::open(Some(&sub)).unwrap();
        let rec = KeyRecord {
            name: "t".into(),
            sha256: "00".repeat(32),
            created_at: 1,
            expires_at: None,
            budget: None,
            models: None,
            rpm: None,
            tpm: None,
            burst: None,
            revoked_at: None,
        };
        assert!(l.put(&rec, true));
        assert!(!l.put(&rec, true), "taken");
        l.settle(&settlement("t", 7, None));
        l.flush_if_dirty();
        let again = Local::open(Some(&sub)).unwrap();
        assert_eq!(again.keys(), vec![rec]);
        assert_eq!(again.spend("t", "total").spent, 7);
        std::fs::write(sub.join(FILE), b"{not json").unwrap();
        let e = Local::open(Some(&sub)).err().unwrap();
        assert!(e.contains("GATEWAY_STATE_DIR"), "{e}");
    }
}
