//! The session journal: one JSON line per session change, appended as it
//! is published, so that a restarted hdvrf (a crash, `kill -9`, an
//! upgrade) rebuilds its sessions and their routes instead of leaving its
//! clients without a return path until they renew.
//!
//! ```text
//! {"op":"up","service":"blue","mac":"02:..","port":"access0","vlan":0,"address":"10.0.0.100","lease_end":1767000000}
//! {"op":"down","service":"blue","mac":"02:.."}
//! ```
//!
//! `lease_end` is wall-clock seconds since the epoch: it must survive the
//! process. On start the journal is folded (the last line about a client
//! wins), sessions whose lease ended while hdvrf was down are swept, and
//! the file is rewritten with what is left (write, then rename), so it
//! stays as large as the sessions it holds plus what changed since.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// One journal line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Entry {
    Up(Saved),
    Down { service: String, mac: String },
}

/// A session as the journal keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub service: String,
    pub mac: String,
    pub port: String,
    pub vlan: u16,
    pub address: Ipv4Addr,
    pub lease_end: u64,
}

/// Seconds since the epoch now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The open journal.
pub struct Journal {
    path: PathBuf,
    file: File,
}

/// What reading the journal found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Live sessions, lease not over.
    pub sessions: Vec<Saved>,
    /// Sessions whose lease ended while we were down.
    pub expired: usize,
    /// Lines that could not be read, as `file:line: why`.
    pub bad_lines: Vec<String>,
}

impl Journal {
    /// Reads what `path` holds (nothing if it does not exist), keeps the
    /// sessions still leased at `now` (unix seconds), rewrites the file
    /// with just those and opens it for appending.
    pub fn open(path: &Path, now: u64) -> Result<(Journal, Loaded), String> {
        let mut loaded = Loaded::default();
        let mut live: HashMap<(String, String), Saved> = HashMap::new();
        let mut order: Vec<(String, String)> = Vec::new();
        match File::open(path) {
            Ok(f) => {
                for (i, line) in BufReader::new(f).lines().enumerate() {
                    let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    match serde_json::from_str::<Entry>(&line) {
                        Ok(Entry::Up(s)) => {
                            let key = (s.service.clone(), s.mac.clone());
                            if !live.contains_key(&key) {
                                order.push(key.clone());
                            }
                            live.insert(key, s);
                        }
                        Ok(Entry::Down { service, mac }) => {
                            live.remove(&(service, mac));
                        }
                        Err(e) => {
                            loaded
                                .bad_lines
                                .push(format!("{}:{}: {e}", path.display(), i + 1))
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
        for key in order {
            if let Some(s) = live.remove(&key) {
                if s.lease_end > now {
                    loaded.sessions.push(s);
                } else {
                    loaded.expired += 1;
                }
            }
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let tmp = path.with_extension("journal.new");
        {
            let mut f = File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
            for s in &loaded.sessions {
                let line =
                    serde_json::to_string(&Entry::Up(s.clone())).map_err(|e| e.to_string())?;
                writeln!(f, "{line}").map_err(|e| format!("{}: {e}", tmp.display()))?;
            }
            f.sync_all()
                .map_err(|e| format!("{}: {e}", tmp.display()))?;
        }
        std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok((
            Journal {
                path: path.to_owned(),
                file,
            },
            loaded,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one change.
    pub fn write(&mut self, e: &Entry) -> Result<(), String> {
        let line = serde_json::to_string(e).map_err(|e| e.to_string())?;
        writeln!(self.file, "{line}").map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(mac: &str, addr: [u8; 4], end: u64) -> Entry {
        Entry::Up(Saved {
            service: "blue".into(),
            mac: mac.into(),
            port: "access0".into(),
            vlan: 0,
            address: addr.into(),
            lease_end: end,
        })
    }

    #[test]
    fn the_last_word_wins_expired_are_swept_and_the_file_is_compacted() {
        let dir = std::env::temp_dir().join(format!("hdvrf-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sessions.journal");
        let (mut j, l) = Journal::open(&path, 1000).unwrap();
        assert!(l.sessions.is_empty());
        j.write(&up("a", [10, 0, 0, 1], 2000)).unwrap();
        j.write(&up("b", [10, 0, 0, 2], 2000)).unwrap();
        j.write(&up("c", [10, 0, 0, 3], 1500)).unwrap();
        j.write(&up("a", [10, 0, 0, 9], 3000)).unwrap(); // a moved
        j.write(&Entry::Down {
            service: "blue".into(),
            mac: "b".into(),
        })
        .unwrap();
        drop(j);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{not json\n");
        std::fs::write(&path, text).unwrap();
        // At 1600 c's lease is over.
        let (_, l) = Journal::open(&path, 1600).unwrap();
        assert_eq!(l.sessions.len(), 1);
        assert_eq!(l.sessions[0].mac, "a");
        assert_eq!(l.sessions[0].address, Ipv4Addr::new(10, 0, 0, 9));
        assert_eq!(l.expired, 1);
        assert_eq!(l.bad_lines.len(), 1);
        assert!(
            l.bad_lines[0].contains("sessions.journal:6:"),
            "{:?}",
            l.bad_lines
        );
        // Compacted: one line left.
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
