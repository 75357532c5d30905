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
//!
//! How it survives trouble:
//!
//! - Each line goes to the file in one `write(2)` of the whole line and
//!   its newline, so a line without its newline is one that was cut short
//!   (a crash mid-write, a full disk). At start such a torn last line is
//!   dropped and counted; a line that is not UTF-8 or not JSON is skipped
//!   and named `file:line`, and the rest is still read.
//! - A write that fails part way (ENOSPC) is cut back to the last whole
//!   line (`set_len`), so the next line never glues onto a fragment; if
//!   even that fails, the next line starts with a newline and the
//!   fragment becomes one bad line at the next start. hdvrf keeps running
//!   meanwhile: the caller counts and logs, sessions are not stopped.
//! - The journal keeps the live sessions in memory, so that the file can
//!   be rewritten from them: when renewals have made it more than twice
//!   as long as the live sessions (plus [`COMPACT_SLACK`]), and after a
//!   write failed (the file then misses a change), retried every
//!   [`RETRY`] until the disk has room again.
//! - Appends are made durable in batches ([`SYNC_INTERVAL`],
//!   [`SYNC_ENTRIES`]), not one `fdatasync` per line; see there why.
//! - The file and its rewrite are mode 0600: they hold subscribers' MACs
//!   and addresses.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The journal's mode: it names subscribers (MACs, addresses, ports).
const MODE: u32 = 0o600;

/// Appends are synced (`fdatasync`) at most this long after they were
/// written. A line is in the kernel once `write(2)` returns, so a killed
/// hdvrf loses nothing; what an unsynced line risks is a crash of the
/// machine or a power cut, after which a client renews (at half its lease
/// at the latest) and comes back anyway. One sync per line would instead
/// put the disk's latency (milliseconds) on the control thread for each
/// session change, and so bound the session rate by it: a mass renewal
/// after an outage is thousands of lines a second. 100 ms is at most ten
/// syncs a second, and as much lost as a client's retransmission covers.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// Appends are synced at the latest after this many, whatever the time:
/// it bounds what a burst can leave unsynced between two ticks.
pub const SYNC_ENTRIES: usize = 128;

/// The file is rewritten while running once it holds more than twice the
/// live sessions plus this many lines: renewals append a line each, and
/// the rewrite costs O(live), so it is paid once per at least as many
/// appends (amortised O(1) per line) and never for a handful of sessions.
pub const COMPACT_SLACK: usize = 1024;

/// A failed rewrite (the disk still full) is tried again after this long,
/// not on every tick.
pub const RETRY: Duration = Duration::from_secs(1);

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

/// A session's key: (service, mac).
type Key = (String, String);

/// The open journal.
pub struct Journal {
    path: PathBuf,
    /// Opened for appending (`O_APPEND`): after a cut back with `set_len`
    /// the next line lands at the new end, not past a hole.
    file: File,
    /// The file's length up to the end of its last whole line.
    good_len: u64,
    /// A write failed part way and cutting it back failed too: the file
    /// may end in part of a line.
    torn_tail: bool,
    /// The file misses a change (an append or a sync failed): it is
    /// rewritten from `live` as soon as it can be.
    stale: bool,
    /// When the last rewrite failed, for [`RETRY`].
    rewrite_failed_at: Option<Instant>,
    /// What the file says, folded: the latest `up` of each session not
    /// since `down`.
    live: BTreeMap<Key, Saved>,
    /// Lines in the file.
    lines: usize,
    /// Appends since the last sync, and when the first of them was made.
    unsynced: usize,
    unsynced_since: Option<Instant>,
    /// The line being written, kept to reuse its allocation.
    buf: Vec<u8>,
    stats: Stats,
    /// Tests: the next append writes this many bytes, then fails.
    #[cfg(test)]
    fail_after: Option<usize>,
    /// Tests: cutting the file back fails.
    #[cfg(test)]
    fail_truncate: bool,
}

/// The journal's counters, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Appends, syncs and rewrites that failed.
    pub write_errors: u64,
    /// Rewrites while running (not the one at start).
    pub compactions: u64,
    /// Torn last lines dropped at start.
    pub torn_lines: u64,
    /// Lines skipped at start as unreadable.
    pub bad_lines: u64,
    /// Lines in the file now.
    pub lines: u64,
    /// Sessions the file holds.
    pub live: u64,
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
    /// A last line without its newline (a write cut short), dropped from
    /// the file: 0 or 1.
    pub torn: usize,
    /// Why the file could not be rewritten at start (a full disk, say):
    /// it is then appended to as it is and rewritten once it can be.
    pub rewrite_failed: Option<String>,
}

impl Journal {
    /// Reads what `path` holds (nothing if it does not exist), keeps the
    /// sessions still leased at `now` (unix seconds), rewrites the file
    /// with just those and opens it for appending. A file that cannot be
    /// rewritten (a full disk) is kept as it is, its torn tail cut, and
    /// appended to: hdvrf starts with its sessions either way.
    pub fn open(path: &Path, now: u64) -> Result<(Journal, Loaded), String> {
        let at = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        let mut loaded = Loaded::default();
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(at(&e)),
        };
        // Every line is written with its newline in one write: what
        // follows the last newline is a write cut short.
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole < bytes.len() {
            loaded.torn = 1;
        }
        let mut live: HashMap<Key, Saved> = HashMap::new();
        let mut order: Vec<Key> = Vec::new();
        for (i, line) in bytes[..whole].split(|&b| b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let entry = std::str::from_utf8(line)
                .map_err(|e| format!("not UTF-8: {e}"))
                .and_then(|t| serde_json::from_str::<Entry>(t).map_err(|e| e.to_string()));
            match entry {
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
                Err(why) => loaded
                    .bad_lines
                    .push(format!("{}:{}: {why}", path.display(), i + 1)),
            }
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
        if loaded.torn > 0 {
            // Cut in place first: that needs no space, so a rewrite that
            // fails below still leaves whole lines to append after.
            OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|f| f.set_len(whole as u64))
                .map_err(|e| at(&format!("cutting the torn last line: {e}")))?;
        }
        let mut stale = false;
        let (file, good_len, lines) = match rewrite(path, loaded.sessions.iter()) {
            Ok((file, len)) => {
                sync_dir(path).map_err(|e| at(&format!("syncing its directory: {e}")))?;
                (file, len, loaded.sessions.len())
            }
            Err(why) => {
                let file = open_append(path)
                    .map_err(|e| format!("{why}; and appending to {}: {e}", path.display()))?;
                loaded.rewrite_failed = Some(why);
                stale = true;
                let lines = bytes[..whole].iter().filter(|&&b| b == b'\n').count();
                (file, whole as u64, lines)
            }
        };
        let journal = Journal {
            path: path.to_owned(),
            file,
            good_len,
            torn_tail: false,
            stale,
            rewrite_failed_at: None,
            live: loaded
                .sessions
                .iter()
                .map(|s| ((s.service.clone(), s.mac.clone()), s.clone()))
                .collect(),
            lines,
            unsynced: 0,
            unsynced_since: None,
            buf: Vec::with_capacity(256),
            stats: Stats {
                torn_lines: loaded.torn as u64,
                bad_lines: loaded.bad_lines.len() as u64,
                ..Stats::default()
            },
            #[cfg(test)]
            fail_after: None,
            #[cfg(test)]
            fail_truncate: false,
        };
        Ok((journal, loaded))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The counters, and the file's size now.
    pub fn stats(&self) -> Stats {
        Stats {
            lines: self.lines as u64,
            live: self.live.len() as u64,
            ..self.stats
        }
    }

    /// Appends one change, in one write of the whole line. A failure is
    /// counted and returned; the journal stays usable, and the change is
    /// in the file once a rewrite succeeds.
    pub fn write(&mut self, e: &Entry) -> Result<(), String> {
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, e).map_err(|e| e.to_string())?;
        self.buf.push(b'\n');
        match e {
            Entry::Up(s) => {
                self.live
                    .insert((s.service.clone(), s.mac.clone()), s.clone());
            }
            Entry::Down { service, mac } => {
                self.live.remove(&(service.clone(), mac.clone()));
            }
        }
        if self.torn_tail {
            if self.truncate().is_ok() {
                self.torn_tail = false;
            } else {
                // The fragment ends here: one bad line at the next start
                // rather than this line lost with it.
                self.buf.insert(0, b'\n');
            }
        }
        if let Err(err) = self.append() {
            self.stats.write_errors += 1;
            self.stale = true;
            // Part of the line may be in; cut back to the last whole one.
            self.torn_tail = self.truncate().is_err();
            return Err(format!("{}: {err}", self.path.display()));
        }
        if self.torn_tail {
            // A fragment of unknown length and this line: where the file
            // ends now is only known from the file.
            self.lines += 2;
            if let Ok(m) = self.file.metadata() {
                self.good_len = m.len();
                self.torn_tail = false;
            }
        } else {
            self.lines += 1;
            self.good_len += self.buf.len() as u64;
        }
        self.unsynced += 1;
        self.unsynced_since.get_or_insert_with(Instant::now);
        if self.unsynced >= SYNC_ENTRIES {
            self.sync()?;
        }
        Ok(())
    }

    /// Called every tick of the control thread: rewrites the file when it
    /// has grown well past its live sessions or misses a change (retried
    /// every [`RETRY`] while it fails), and otherwise syncs appends that
    /// have waited [`SYNC_INTERVAL`].
    pub fn tick(&mut self, now: Instant) -> Result<(), String> {
        let bloated = self.lines > 2 * self.live.len() + COMPACT_SLACK;
        let may_retry = self
            .rewrite_failed_at
            .is_none_or(|t| now.duration_since(t) >= RETRY);
        if (bloated || self.stale) && may_retry {
            return self.compact(now);
        }
        if self
            .unsynced_since
            .is_some_and(|t| now.duration_since(t) >= SYNC_INTERVAL)
        {
            return self.sync();
        }
        Ok(())
    }

    /// Makes everything durable now (at shutdown): a file that misses a
    /// change is rewritten, otherwise pending appends are synced.
    pub fn flush(&mut self) -> Result<(), String> {
        if self.stale {
            return self.compact(Instant::now());
        }
        if self.unsynced > 0 {
            return self.sync();
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), String> {
        self.unsynced = 0;
        self.unsynced_since = None;
        if let Err(e) = self.file.sync_data() {
            self.stats.write_errors += 1;
            // After a failed fdatasync the kernel may have dropped the
            // pages it could not write: rewrite rather than trust them.
            self.stale = true;
            return Err(format!("{}: syncing: {e}", self.path.display()));
        }
        Ok(())
    }

    /// Rewrites the file with the live sessions and appends to that.
    fn compact(&mut self, now: Instant) -> Result<(), String> {
        match rewrite(&self.path, self.live.values()) {
            Ok((file, len)) => {
                self.file = file;
                self.good_len = len;
                self.lines = self.live.len();
                self.torn_tail = false;
                self.stale = false;
                self.unsynced = 0;
                self.unsynced_since = None;
                self.rewrite_failed_at = None;
                self.stats.compactions += 1;
                sync_dir(&self.path).map_err(|e| {
                    self.stats.write_errors += 1;
                    format!("{}: syncing its directory: {e}", self.path.display())
                })
            }
            Err(why) => {
                self.stats.write_errors += 1;
                self.rewrite_failed_at = Some(now);
                Err(why)
            }
        }
    }

    fn append(&mut self) -> io::Result<()> {
        #[cfg(test)]
        if let Some(n) = self.fail_after.take() {
            self.file.write_all(&self.buf[..n.min(self.buf.len())])?;
            return Err(io::Error::other("injected: no space left on device"));
        }
        self.file.write_all(&self.buf)
    }

    fn truncate(&mut self) -> io::Result<()> {
        #[cfg(test)]
        if self.fail_truncate {
            return Err(io::Error::other("injected: truncate failed"));
        }
        self.file.set_len(self.good_len)
    }
}

impl Drop for Journal {
    /// A journal dropped without [`Journal::flush`] still syncs what it
    /// appended.
    fn drop(&mut self) {
        if self.unsynced > 0 {
            let _ = self.file.sync_data();
        }
    }
}

/// Opens the journal for appending, creating it mode 0600.
fn open_append(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(MODE)
        .open(path)?;
    // `mode` only applies to a file created now, and through the umask.
    f.set_permissions(Permissions::from_mode(MODE))?;
    Ok(f)
}

/// Writes `sessions` to a temporary file beside `path` (mode 0600),
/// syncs it and renames it over `path`. Returns the new file, open for
/// appending, and its length. On error `path` is untouched and the
/// temporary file removed.
fn rewrite<'a>(
    path: &Path,
    sessions: impl Iterator<Item = &'a Saved>,
) -> Result<(File, u64), String> {
    let tmp = path.with_extension("journal.new");
    let at = |e: io::Error| format!("{}: {e}", tmp.display());
    let mut buf = Vec::new();
    for s in sessions {
        serde_json::to_writer(&mut buf, &Entry::Up(s.clone())).map_err(|e| e.to_string())?;
        buf.push(b'\n');
    }
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(at(e)),
    }
    let mut f = OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(MODE)
        .open(&tmp)
        .map_err(at)?;
    let done = f
        .set_permissions(Permissions::from_mode(MODE))
        .and_then(|()| f.write_all(&buf))
        .and_then(|()| f.sync_all())
        .map_err(at)
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display())));
    if let Err(why) = done {
        let _ = std::fs::remove_file(&tmp);
        return Err(why);
    }
    Ok((f, buf.len() as u64))
}

/// Syncs the directory holding `path`, so that a rename in it is durable.
fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
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

    fn down(mac: &str) -> Entry {
        Entry::Down {
            service: "blue".into(),
            mac: mac.into(),
        }
    }

    /// A directory of the test's own, removed when the test ends.
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let d =
                std::env::temp_dir().join(format!("hdvrf-journal-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Dir(d)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn macs(l: &Loaded) -> Vec<&str> {
        l.sessions.iter().map(|s| s.mac.as_str()).collect()
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
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

    #[test]
    fn a_torn_last_line_is_cut_and_counted_and_the_file_usable_after() {
        let d = Dir::new("torn");
        let path = d.0.join("sessions.journal");
        let (mut j, _) = Journal::open(&path, 1000).unwrap();
        j.write(&up("a", [10, 0, 0, 1], 2000)).unwrap();
        j.write(&up("b", [10, 0, 0, 2], 2000)).unwrap();
        drop(j);
        // A kill in the middle of the third line's write.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"op":"up","service":"blue","mac":"c","po"#)
            .unwrap();
        drop(f);
        let (mut j, l) = Journal::open(&path, 1000).unwrap();
        assert_eq!(l.torn, 1);
        assert_eq!(j.stats().torn_lines, 1);
        assert!(l.bad_lines.is_empty(), "{:?}", l.bad_lines);
        assert_eq!(macs(&l), ["a", "b"]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.ends_with('\n') && !text.contains(r#""mac":"c""#),
            "{text}"
        );
        j.write(&up("d", [10, 0, 0, 4], 2000)).unwrap();
        drop(j);
        let (_, l) = Journal::open(&path, 1000).unwrap();
        assert_eq!((l.torn, l.bad_lines.len()), (0, 0), "{:?}", l.bad_lines);
        assert_eq!(macs(&l), ["a", "b", "d"]);
    }

    #[test]
    fn non_utf8_and_bad_json_lines_are_skipped_with_file_and_line() {
        let d = Dir::new("bad");
        let path = d.0.join("sessions.journal");
        let good = |mac: &str| serde_json::to_vec(&up(mac, [10, 0, 0, 1], 2000)).unwrap();
        let mut bytes = good("a");
        bytes.extend_from_slice(b"\n{\"op\":\"up\",\"mac\":\"\xff\xfe\"}\n");
        bytes.extend_from_slice(b"{\"op\":\"sideways\"}\n\n");
        bytes.extend_from_slice(&good("b"));
        bytes.push(b'\n');
        std::fs::write(&path, bytes).unwrap();
        let (j, l) = Journal::open(&path, 1000).unwrap();
        assert_eq!(macs(&l), ["a", "b"]);
        assert_eq!(l.bad_lines.len(), 2, "{:?}", l.bad_lines);
        assert!(
            l.bad_lines[0].contains("sessions.journal:2: not UTF-8"),
            "{:?}",
            l.bad_lines
        );
        assert!(
            l.bad_lines[1].contains("sessions.journal:3: "),
            "{:?}",
            l.bad_lines
        );
        assert_eq!(j.stats().bad_lines, 2);
    }

    #[test]
    fn the_file_is_mode_0600_even_when_it_was_not() {
        let d = Dir::new("mode");
        let path = d.0.join("sessions.journal");
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        // A temporary file left by a crash, readable by all.
        let tmp = path.with_extension("journal.new");
        std::fs::write(&tmp, b"").unwrap();
        std::fs::set_permissions(&tmp, Permissions::from_mode(0o644)).unwrap();
        let (mut j, _) = Journal::open(&path, 1000).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert!(!tmp.exists());
        // And so is what a rewrite while running leaves.
        j.write(&up("a", [10, 0, 0, 1], 2000)).unwrap();
        j.stale = true;
        j.tick(Instant::now()).unwrap();
        assert_eq!(j.stats().compactions, 1);
        assert_eq!(mode(&path), 0o600);
        // A file kept because it could not be rewritten is fixed too.
        drop(j);
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        open_append(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn the_file_is_compacted_while_running_to_exactly_the_live_sessions() {
        let d = Dir::new("compact");
        let path = d.0.join("sessions.journal");
        let (mut j, _) = Journal::open(&path, 1000).unwrap();
        j.write(&up("a", [10, 0, 0, 1], 2000)).unwrap();
        j.write(&up("b", [10, 0, 0, 2], 2000)).unwrap();
        j.write(&up("c", [10, 0, 0, 3], 2000)).unwrap();
        // Not yet worth a rewrite.
        j.tick(Instant::now() + SYNC_INTERVAL).unwrap();
        assert_eq!(j.stats().compactions, 0);
        let renewals = COMPACT_SLACK as u64 + 10;
        for i in 0..renewals {
            j.write(&up("a", [10, 0, 0, 1], 2000 + i)).unwrap();
        }
        j.write(&down("b")).unwrap();
        j.write(&up("d", [10, 0, 0, 4], 2000)).unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        assert_eq!(j.stats().lines, renewals + 5);
        j.tick(Instant::now()).unwrap();
        assert_eq!(j.stats().compactions, 1);
        assert_eq!(j.stats().lines, 3);
        let after = std::fs::metadata(&path).unwrap().len();
        assert!(after * 100 < before, "{before} -> {after}");
        // Appends go on in the new file.
        j.write(&up("e", [10, 0, 0, 5], 2000)).unwrap();
        drop(j);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 4);
        let (_, l) = Journal::open(&path, 1000).unwrap();
        let mut got: Vec<_> = l
            .sessions
            .iter()
            .map(|s| (s.mac.as_str(), s.lease_end))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("a", 2000 + renewals - 1),
                ("c", 2000),
                ("d", 2000),
                ("e", 2000)
            ]
        );
        assert!(l.bad_lines.is_empty());
    }

    #[test]
    fn appends_are_synced_in_batches() {
        let d = Dir::new("sync");
        let path = d.0.join("sessions.journal");
        let (mut j, _) = Journal::open(&path, 1000).unwrap();
        let t0 = Instant::now();
        j.write(&up("a", [10, 0, 0, 1], 2000)).unwrap();
        j.write(&up("b", [10, 0, 0, 2], 2000)).unwrap();
        assert_eq!(j.unsynced, 2);
        j.tick(t0).unwrap();
        assert_eq!(j.unsynced, 2, "synced before its time");
        j.tick(Instant::now() + SYNC_INTERVAL).unwrap();
        assert_eq!(j.unsynced, 0);
        for i in 0..SYNC_ENTRIES as u64 {
            j.write(&up("a", [10, 0, 0, 1], 2000 + i)).unwrap();
        }
        assert_eq!(j.unsynced, 0, "a burst is synced every {SYNC_ENTRIES}");
        j.write(&up("a", [10, 0, 0, 1], 3000)).unwrap();
        j.flush().unwrap();
        assert_eq!(j.unsynced, 0);
    }

    #[test]
    fn a_write_failing_mid_line_is_cut_back_and_every_whole_entry_restored() {
        let d = Dir::new("partial");
        let path = d.0.join("sessions.journal");
        let (mut j, _) = Journal::open(&path, 1000).unwrap();
        j.write(&up("a", [10, 0, 0, 1], 2000)).unwrap();
        j.write(&up("b", [10, 0, 0, 2], 2000)).unwrap();
        let whole = std::fs::read(&path).unwrap();
        j.fail_after = Some(20);
        assert!(j.write(&up("c", [10, 0, 0, 3], 2000)).is_err());
        assert_eq!(j.stats().write_errors, 1);
        assert_eq!(std::fs::read(&path).unwrap(), whole, "the fragment stays");
        j.write(&up("d", [10, 0, 0, 4], 2000)).unwrap();
        drop(j);
        let (_, l) = Journal::open(&path, 1000).unwrap();
        assert_eq!((l.torn, l.bad_lines.len()), (0, 0), "{:?}", l.bad_lines);
        assert_eq!(macs(&l), ["a", "b", "d"]);
    }

    #[test]
    fn a_fragment_that_cannot_be_cut_is_ended_by_the_next_line() {
        let d = Dir::new("fragment");
        let path = d.0.join("sessions.journal");
        let (mut j, _) = Journal::open(&path, 1000).unwrap();
        j.write(&up("a", [10, 0, 0, 1], 2000)).unwrap();
        j.write(&up("b", [10, 0, 0, 2], 2000)).unwrap();
        j.fail_after = Some(20);
        j.fail_truncate = true;
        assert!(j.write(&up("c", [10, 0, 0, 3], 2000)).is_err());
        j.write(&up("d", [10, 0, 0, 4], 2000)).unwrap();
        j.write(&up("e", [10, 0, 0, 5], 2000)).unwrap();
        drop(j);
        let (_, l) = Journal::open(&path, 1000).unwrap();
        assert_eq!(macs(&l), ["a", "b", "d", "e"]);
        assert_eq!(l.torn, 0);
        assert_eq!(l.bad_lines.len(), 1, "{:?}", l.bad_lines);
        assert!(l.bad_lines[0].contains("sessions.journal:3: "));
    }

    #[test]
    fn a_change_a_failed_write_missed_is_written_by_the_next_rewrite() {
        let d = Dir::new("heal");
        let path = d.0.join("sessions.journal");
        let (mut j, _) = Journal::open(&path, 1000).unwrap();
        j.write(&up("a", [10, 0, 0, 1], 2000)).unwrap();
        j.fail_after = Some(0);
        assert!(j.write(&down("a")).is_err());
        j.fail_after = Some(7);
        assert!(j.write(&up("b", [10, 0, 0, 2], 2000)).is_err());
        let t = Instant::now();
        j.tick(t).unwrap();
        assert_eq!(j.stats().compactions, 1);
        // Nothing to redo: the next tick leaves the file alone.
        j.tick(t + RETRY).unwrap();
        assert_eq!(j.stats().compactions, 1);
        drop(j);
        let (_, l) = Journal::open(&path, 1000).unwrap();
        assert_eq!(macs(&l), ["b"]);
    }

    /// A tmpfs mounted for a test, unmounted however the test ends.
    struct Tmpfs(PathBuf);

    impl Tmpfs {
        /// `None` where mounting is not allowed (not root, a container).
        fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
            let root = std::fs::read_to_string("/proc/self/status")
                .ok()?
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|u| u.split_whitespace().nth(1).map(|e| e == "0"))?;
            if !root {
                return None;
            }
            std::fs::create_dir_all(dir).ok()?;
            let ok = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={size},mode=0700"))
                .arg("tmpfs")
                .arg(dir)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = std::fs::remove_dir(dir);
                return None;
            }
            Some(Tmpfs(dir.to_owned()))
        }

        fn resize(&self, size: &str) {
            let ok = std::process::Command::new("mount")
                .args(["-o"])
                .arg(format!("remount,size={size}"))
                .arg(&self.0)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "remounting {}", self.0.display());
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let umount = |lazy: bool| {
                let mut c = std::process::Command::new("umount");
                if lazy {
                    c.arg("-l");
                }
                c.arg(&self.0).status().is_ok_and(|s| s.success())
            };
            if !umount(false) && !umount(true) {
                eprintln!("could not unmount {}", self.0.display());
                return;
            }
            let _ = std::fs::remove_dir(&self.0);
        }
    }

    #[test]
    fn a_full_filesystem_costs_the_failed_changes_only() {
        let d = Dir::new("full");
        let mnt = d.0.join("tmpfs");
        let Some(fs) = Tmpfs::mount(&mnt, "64k") else {
            println!("skipped: cannot mount a tmpfs here (needs root)");
            return;
        };
        let path = fs.0.join("sessions.journal");
        let (mut j, _) = Journal::open(&path, 1000).unwrap();
        let entry = |i: u32| {
            up(
                &format!("02:00:00:00:{:02x}:{:02x}", i >> 8, i & 0xff),
                (0x0a00_0000 | i).to_be_bytes(),
                2000,
            )
        };
        let mut written = Vec::new();
        let mut failed = None;
        for i in 0..10_000 {
            match j.write(&entry(i)) {
                Ok(()) => written.push(i),
                Err(m) => {
                    assert!(m.contains("No space left"), "{m}");
                    failed = Some(i);
                    break;
                }
            }
        }
        let failed = failed.expect("64 KiB never filled");
        // The same line again fails the same way, and hdvrf goes on.
        for _ in 0..3 {
            assert!(j.write(&entry(failed)).is_err());
        }
        assert!(j.tick(Instant::now()).is_err(), "no room for a rewrite");
        assert_eq!(j.stats().write_errors, 5);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.last(), Some(&b'\n'), "a fragment is left");
        drop(j);
        // A restart on the full disk restores every whole entry.
        let (mut j, l) = Journal::open(&path, 1000).unwrap();
        assert!(l.rewrite_failed.is_some());
        assert_eq!((l.torn, l.bad_lines.len()), (0, 0), "{:?}", l.bad_lines);
        let want: Vec<String> = written
            .iter()
            .map(|&i| match entry(i) {
                Entry::Up(s) => s.mac,
                Entry::Down { .. } => unreachable!(),
            })
            .collect();
        assert_eq!(macs(&l), want);
        // Room again: writes succeed and the file is rewritten whole.
        fs.resize("1m");
        j.write(&entry(failed)).unwrap();
        j.tick(Instant::now()).unwrap();
        assert_eq!(j.stats().compactions, 1);
        drop(j);
        let (_, l) = Journal::open(&path, 1000).unwrap();
        assert!(l.rewrite_failed.is_none());
        assert_eq!((l.torn, l.bad_lines.len()), (0, 0), "{:?}", l.bad_lines);
        assert_eq!(l.sessions.len(), written.len() + 1);
    }
}
