//! The journal of settlements Redis did not take (it was unreachable): replayed in order when
//! it answers, each entry under an id that the settle script marks with `SET NX` (same hash
//! tag), so an entry replayed twice is counted once.
//!
//! With `GATEWAY_STATE_DIR` the journal is also a file there, `tenants-journal-ID.jsonl`, one
//! JSON entry a line, owned by this process (an exclusive `flock` held for its life). An entry
//! is appended and `fdatasync`ed as soon as it is journalled, off the request path (a blocking
//! task; entries that arrive while one write is running go out together in the next, so the
//! fsyncs group under load). After a replay Redis acknowledged, the file is cut to what is left
//! (emptied, or rewritten atomically). Files of processes that are gone (no lock held: a crash,
//! or the old process of an upgrade) are adopted at start-up and every [`ADOPT_EVERY`] ticks:
//! their entries are appended to this process's file, then the old file is removed (a crash in
//! between leaves an entry in two files: the ids make the second replay a no-op).
//!
//! Without `GATEWAY_STATE_DIR` the journal is in memory only and dies with the process.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::Settlement;

/// Entries kept (beyond, new ones are dropped with an error line).
pub const MAX: usize = 100_000;
/// Sync ticks between two looks for abandoned journal files (10 s).
pub const ADOPT_EVERY: u64 = 40;
const PREFIX: &str = "tenants-journal-";
const SUFFIX: &str = ".jsonl";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    #[serde(flatten)]
    pub s: Settlement,
}

#[derive(Default)]
struct Pending {
    entries: Vec<Entry>,
    /// How many of `entries` (from the front) are in the file.
    written: usize,
}

struct Own {
    path: PathBuf,
    file: File,
}

pub struct Journal {
    mem: Mutex<Pending>,
    /// This process's file; held while writing it (one writer at a time).
    own: Option<Mutex<Own>>,
    /// A write is scheduled (one blocking task at a time, however many entries arrive).
    scheduled: AtomicBool,
}

impl Journal {
    /// The journal, in `dir` when given (created if missing; abandoned files there adopted).
    pub fn open(dir: Option<&Path>) -> Result<Arc<Journal>, String> {
        let Some(d) = dir else {
            return Ok(Arc::new(Journal {
                mem: Mutex::new(Pending::default()),
                own: None,
                scheduled: AtomicBool::new(false),
            }));
        };
        let fail = |what: &str, e: std::io::Error| {
            format!("GATEWAY_STATE_DIR={}: {what}: {e}", d.display())
        };
        std::fs::create_dir_all(d).map_err(|e| fail("cannot create it", e))?;
        let path = d.join(format!(
            "{PREFIX}{}{SUFFIX}",
            crate::api::random_token(12).to_ascii_lowercase()
        ));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| fail("cannot create the journal file", e))?;
        flock(&file, true).map_err(|e| fail("cannot lock the journal file", e))?;
        let j = Arc::new(Journal {
            mem: Mutex::new(Pending::default()),
            own: Some(Mutex::new(Own { path, file })),
            scheduled: AtomicBool::new(false),
        });
        j.adopt();
        Ok(j)
    }

    /// This process's journal file, if any.
    pub fn path(&self) -> Option<PathBuf> {
        self.own.as_ref().map(|o| o.lock().path.clone())
    }

    pub fn len(&self) -> usize {
        self.mem.lock().entries.len()
    }

    /// Journals `s` (written to the file by a blocking task when there is one). False: full.
    pub fn push(self: &Arc<Self>, s: Settlement) -> bool {
        {
            let mut m = self.mem.lock();
            if m.entries.len() >= MAX {
                return false;
            }
            m.entries.push(Entry {
                id: crate::api::random_token(16),
                s,
            });
        }
        if self.own.is_some() && !self.scheduled.swap(true, Ordering::AcqRel) {
            let j = self.clone();
            match tokio::runtime::Handle::try_current() {
                Ok(h) => drop(h.spawn_blocking(move || j.persist())),
                Err(_) => j.persist(),
            }
        }
        true
    }

    /// Appends what is not in the file yet, one fsync per batch. At shutdown too.
    pub fn persist(&self) {
        let Some(own) = &self.own else {
            return;
        };
        let mut o = own.lock();
        // Bounded: each pass writes everything pending when it started.
        for _ in 0..16 {
            // Entries journalled from here on are taken by this pass or schedule another.
            self.scheduled.store(false, Ordering::Release);
            let (bytes, upto) = {
                let m = self.mem.lock();
                if m.written >= m.entries.len() {
                    return;
                }
                let mut b = Vec::new();
                for e in &m.entries[m.written..] {
                    if serde_json::to_writer(&mut b, e).is_ok() {
                        b.push(b'\n');
                    }
                }
                (b, m.entries.len())
            };
            let done = o.file.write_all(&bytes).and_then(|_| o.file.sync_data());
            if let Err(e) = done {
                log::error!(
                    "tenants: cannot write the journal {} ({e}); kept in memory, retried with the next entry and at shutdown",
                    o.path.display()
                );
                return;
            }
            self.mem.lock().written = upto;
        }
    }

    /// A copy of the entries, oldest first, for a replay.
    pub fn pending(&self) -> Vec<Entry> {
        self.mem.lock().entries.clone()
    }

    /// The first `n` entries were taken by Redis: dropped, and the file cut to the rest.
    pub fn replayed(&self, n: usize) {
        let Some(own) = &self.own else {
            self.mem.lock().entries.drain(..n);
            return;
        };
        let mut o = own.lock();
        let (rest, before) = {
            let mut m = self.mem.lock();
            let n = n.min(m.entries.len());
            m.entries.drain(..n);
            let before = m.written.saturating_sub(n);
            m.written = m.entries.len();
            (m.entries.clone(), before)
        };
        let cut = if rest.is_empty() {
            o.file.set_len(0).and_then(|_| o.file.sync_all())
        } else {
            rewrite(&o.path, &rest).map(|f| o.file = f)
        };
        if let Err(e) = cut {
            // The file still holds replayed entries: replaying them again is a no-op (their
            // ids are marked in Redis), so only the unwritten ones need writing.
            log::error!(
                "tenants: cannot cut the journal {} ({e}); replayed entries stay in it",
                o.path.display()
            );
            self.mem.lock().written = before;
        }
    }

    /// Takes over the journal files no live process holds.
    pub fn adopt(&self) {
        let Some(own) = &self.own else {
            return;
        };
        let (dir, mine) = {
            let o = own.lock();
            (
                o.path.parent().map(Path::to_path_buf).unwrap_or_default(),
                o.path.clone(),
            )
        };
        let Ok(list) = std::fs::read_dir(&dir) else {
            return;
        };
        for ent in list.flatten().take(1000) {
            let p = ent.path();
            let name = ent.file_name();
            let name = name.to_string_lossy();
            if p == mine || !name.starts_with(PREFIX) || !name.ends_with(SUFFIX) {
                continue;
            }
            let Ok(f) = OpenOptions::new().read(true).write(true).open(&p) else {
                continue;
            };
            if flock(&f, false).is_err() {
                continue; // a live process's journal
            }
            let mut found = Vec::new();
            for (i, line) in BufReader::new(&f).lines().enumerate() {
                let Ok(line) = line else { break };
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<Entry>(&line) {
                    Ok(e) => found.push(e),
                    // A line cut by a crash was never acknowledged as written.
                    Err(e) => log::warn!(
                        "tenants: journal {} line {} unreadable ({e}); skipped",
                        p.display(),
                        i + 1
                    ),
                }
            }
            let n = found.len();
            self.mem.lock().entries.extend(found);
            self.persist();
            let m = self.mem.lock();
            if m.written == m.entries.len() {
                drop(m);
                if let Err(e) = std::fs::remove_file(&p) {
                    log::warn!(
                        "tenants: cannot remove the adopted journal {}: {e}",
                        p.display()
                    );
                }
                if n > 0 {
                    log::warn!(
                        "tenants: {n} settlement(s) of a stopped instance taken from {} for replay",
                        p.display()
                    );
                }
            }
        }
    }
}

/// An exclusive `flock` on `f` (held until it is closed); `wait: false` fails at once when
/// another process holds it. (`File::lock` is newer than the crate's minimum Rust.)
fn flock(f: &File, wait: bool) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let op = libc::LOCK_EX | if wait { 0 } else { libc::LOCK_NB };
    // SAFETY: flock on a descriptor `f` owns for the duration of the call.
    if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Writes `entries` to `path` atomically (temporary file locked before it takes the name, so
/// no other process sees it unowned) and returns the new file, open for appending.
fn rewrite(path: &Path, entries: &[Entry]) -> std::io::Result<File> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&tmp)?;
    flock(&f, true)?;
    let mut b = Vec::new();
    for e in entries {
        serde_json::to_writer(&mut b, e).map_err(std::io::Error::other)?;
        b.push(b'\n');
    }
    f.write_all(&b)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()?;
    drop(f);
    let f = OpenOptions::new().append(true).open(path)?;
    flock(&f, true)?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::super::Counters;
    use super::*;

    fn s(cost: u64) -> Settlement {
        Settlement {
            key: "k".into(),
            periods: ["d", "w", "m", "total"].map(String::from),
            reservation: None,
            day: "2026-12-05".into(),
            model: "m".into(),
            counters: Counters {
                requests: 1,
                prompt_tokens: 1,
                completion_tokens: 1,
                cost,
            },
        }
    }

    #[test]
    fn entries_survive_the_process_and_are_cut_after_replay() {
        let dir = tempfile::tempdir().unwrap();
        let a = Journal::open(Some(dir.path())).unwrap();
        for c in 1..=3 {
            assert!(a.push(s(c)));
        }
        let path = a.path().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
        // A live process's file is not taken.
        let b = Journal::open(Some(dir.path())).unwrap();
        assert_eq!(b.len(), 0);
        drop(b);
        let ids: Vec<String> = a.pending().into_iter().map(|e| e.id).collect();
        a.replayed(1);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
        // A stopped process's file is adopted (ids kept) and removed.
        drop(a);
        let c = Journal::open(Some(dir.path())).unwrap();
        let got: Vec<String> = c.pending().into_iter().map(|e| e.id).collect();
        assert_eq!(got, ids[1..]);
        assert_eq!(got.len(), 2);
        assert!(!path.exists());
        c.replayed(2);
        assert_eq!(c.len(), 0);
        assert_eq!(std::fs::metadata(c.path().unwrap()).unwrap().len(), 0);
    }

    #[test]
    fn memory_only_without_a_dir() {
        let j = Journal::open(None).unwrap();
        assert!(j.push(s(1)));
        assert_eq!(j.path(), None);
        j.persist();
        j.replayed(1);
        assert_eq!(j.len(), 0);
    }
}
