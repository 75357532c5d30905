//! The `hdvrf` command as an operator meets it: bad input gives one line
//! naming the field or the cause and a non-zero exit, never a stack dump;
//! SIGINT at full rate stops cleanly with every mbuf back.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};

use dataplane::topology::{ethernet, ipv4_udp};
use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_hdvrf")
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hdvrf-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn config(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("hdvrf.toml");
    std::fs::write(&p, body).unwrap();
    p
}

fn run_cfg(cfg: &Path) -> Output {
    Command::new(bin())
        .args(["run", "--config"])
        .arg(cfg)
        .args(["--duration", "2"])
        .output()
        .unwrap()
}

/// The error contract: exit status 2, exactly one `hdvrf: error:` line,
/// which names `needle`, and no panic or backtrace.
fn assert_one_line_error(out: &Output, needle: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    let errs: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("hdvrf: error:"))
        .collect();
    assert_eq!(errs.len(), 1, "stderr: {stderr}");
    assert!(errs[0].contains(needle), "{:?} lacks {needle:?}", errs[0]);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("stack backtrace"),
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "extra output on stderr: {stderr}"
    );
    errs[0].to_owned()
}

const TWO_NULLS: &str = r#"[dataplane]
workers = [1]
hugepages = "off"
memory_mb = 256

[[port]]
name = "a"
device = "DEV_A"

[[port]]
name = "b"
device = "net_null1"
"#;

/// `hdvrf run --config cfg` with its stdout lines arriving on a channel.
struct Hdvrf {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every stdout line received so far.
    seen: Vec<String>,
}

/// A failed assertion must not leave a router polling a core behind it.
impl Drop for Hdvrf {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Hdvrf {
    fn start(cfg: &Path) -> Hdvrf {
        let mut child = Command::new(bin())
            .args(["run", "--config"])
            .arg(cfg)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel::<String>();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Hdvrf {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Polls stdout until a line satisfies `pred` (30 s hang guard).
    fn wait_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(100)) {
                let hit = pred(&l);
                self.seen.push(l);
                if hit {
                    return;
                }
            }
        }
        panic!("never saw {what}: {:?}", self.seen);
    }

    /// Sends SIGINT and waits for the exit; returns (status, time to exit,
    /// stderr). All remaining stdout lines land in `seen`.
    fn interrupt(&mut self) -> (ExitStatus, Duration, String) {
        let (status, took) = interrupt(&mut self.child);
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.seen.push(l);
        }
        (status, took, stderr_of(&mut self.child))
    }

    fn line(&self, prefix: &str) -> &str {
        self.seen
            .iter()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?}: {:?}", self.seen))
    }
}

/// SIGINT to `child`, then its exit status and how long it took. The
/// deadline only guards against a hang.
fn interrupt(child: &mut Child) -> (ExitStatus, Duration) {
    let t0 = Instant::now();
    // kill(1) sends the signal without unsafe code in the tests.
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return (s, t0.elapsed());
        }
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("hdvrf did not exit after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    stderr
}

fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut w = PcapWriter::new(std::fs::File::create(path).unwrap()).unwrap();
    for (i, f) in frames.iter().enumerate() {
        w.write_packet(&PcapPacket::new(
            Duration::from_micros(i as u64),
            f.len() as u32,
            f,
        ))
        .unwrap();
    }
}

fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let mut r = PcapReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        out.push(p.unwrap().data.into_owned());
    }
    out
}

#[test]
fn unknown_driver_names_the_port_field() {
    let d = tmp("unknown-driver");
    let out = run_cfg(&config(&d, &TWO_NULLS.replace("DEV_A", "net_bogus0")));
    let e = assert_one_line_error(&out, "hdvrf.toml:8:10: port[0].device");
    assert!(e.contains("net_bogus0"), "{e}");
}

#[test]
fn failed_probe_names_the_port_and_the_drivers_reason() {
    let d = tmp("bad-probe");
    let out = run_cfg(&config(
        &d,
        &TWO_NULLS.replace("DEV_A", "net_pcap0,rx_pcap=/nonexistent/x.pcap"),
    ));
    let e = assert_one_line_error(&out, "hdvrf.toml:8:10: port[0].device");
    assert!(e.contains("did not probe"), "{e}");
    assert!(e.contains("/nonexistent/x.pcap"), "{e}");
}

#[test]
fn more_workers_than_cores_is_refused_before_eal() {
    let d = tmp("workers");
    let n = std::thread::available_parallelism().unwrap().get();
    let list: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
    let body = TWO_NULLS
        .replace("DEV_A", "net_null0")
        .replace("workers = [1]", &format!("workers = [{}]", list.join(", ")));
    let out = run_cfg(&config(&d, &body));
    assert_one_line_error(&out, "hdvrf.toml:2:11: dataplane.workers");
}

#[test]
fn config_syntax_error_has_line_and_column() {
    let d = tmp("syntax");
    let out = run_cfg(&config(&d, "[dataplane]\nworkers = [1\n"));
    let e = assert_one_line_error(&out, "hdvrf.toml:");
    assert!(e.contains("invalid array"), "{e}");
}

#[test]
fn missing_config_file_is_one_line() {
    let out = Command::new(bin())
        .args(["run", "--config", "/nonexistent/hdvrf.toml"])
        .output()
        .unwrap();
    assert_one_line_error(&out, "/nonexistent/hdvrf.toml");
}

/// Hugepages required but no hugetlbfs mounted: run in a private mount
/// namespace with every hugetlbfs unmounted (needs root, as in CI).
#[test]
fn missing_hugepage_mount_is_named() {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if !is_root {
        eprintln!("skipped: needs root for a private mount namespace");
        return;
    }
    let d = tmp("huge");
    let cfg = config(
        &d,
        &TWO_NULLS
            .replace("DEV_A", "net_null0")
            .replace("hugepages = \"off\"", "hugepages = \"on\""),
    );
    let script = format!(
        "grep hugetlbfs /proc/mounts | awk '{{print $2}}' | xargs -r -n1 umount -l; exec {} run --config {} --duration 2",
        bin(),
        cfg.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    assert_one_line_error(
        &out,
        "dataplane.hugepages = \"on\" but no hugetlbfs is mounted",
    );
}

#[test]
fn check_accepts_a_good_file_and_lists_every_error() {
    let d = tmp("check");
    let good = config(&d, &TWO_NULLS.replace("DEV_A", "net_null0"));
    let out = Command::new(bin())
        .arg("check")
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok (2 ports, 1 workers)"));

    let bad = d.join("bad.toml");
    std::fs::write(
        &bad,
        TWO_NULLS
            .replace("DEV_A", "net_null0")
            .replace("name = \"b\"", "name = \"b\"\npeer = \"nowhere\"\nmtu = 20"),
    )
    .unwrap();
    let out = Command::new(bin()).arg("check").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("port[1].peer: no port named \"nowhere\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("port[1].mtu: 20: expected 68 to 9600"),
        "{stderr}"
    );
}

#[test]
fn version_names_git_and_dpdk() {
    let out = Command::new(bin()).arg("--version").output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.starts_with("hdvrf "), "{s}");
    assert!(s.contains("built against DPDK 22.11"), "{s}");
}

/// SIGINT while forwarding at full rate (pcap replayed forever to
/// net_null, no idle sleep): clean exit 0, every mbuf back. The stop time
/// is printed for the closing note, not asserted (shared, noisy machine);
/// the deadline below only guards against a hang.
#[test]
fn sigint_at_full_rate_stops_cleanly_with_all_mbufs_back() {
    let d = tmp("sigint");
    let pcap = d.join("in.pcap");
    // One 60-byte frame: the smallest pcap for infinite replay.
    write_pcap(&pcap, &[vec![0x02; 60]]);
    let body = TWO_NULLS
        .replace(
            "DEV_A",
            &format!("net_pcap0,rx_pcap={},infinite_rx=1", pcap.display()),
        )
        .replace("name = \"b\"", "name = \"b\"\npeer = \"b\"")
        .replace("net_null1", "net_null1,no-rx=1")
        .replace(
            "memory_mb = 256",
            "memory_mb = 256\nidle_sleep_max_us = 0\nstats_interval_ms = 200",
        );
    let mut h = Hdvrf::start(&config(&d, &body));
    // Wait for a stats line showing traffic.
    h.wait_line("a stats line with traffic", |l| {
        l.starts_with("stats:") && l.contains(" Mpps tx ")
    });
    let (status, took, stderr) = h.interrupt();
    assert!(status.success(), "exit {status:?}, stderr {stderr}");
    let back = h.line("hdvrf: mbufs:");
    let (got, total) = back
        .trim_start_matches("hdvrf: mbufs: ")
        .split_once(" back")
        .unwrap()
        .0
        .split_once('/')
        .unwrap();
    assert_eq!(got, total, "{back}");
    let stopped = h.line("hdvrf: stopped in");
    eprintln!("figure: SIGINT to exit {} ms; {stopped}", took.as_millis());
}

/// A closed console (`hdvrf run | head -1`) must not take the router down
/// or wedge it: after the reader goes away it still stops on SIGINT, with
/// every mbuf back.
#[test]
fn closed_stdout_does_not_wedge_shutdown() {
    let d = tmp("closed-stdout");
    let body = TWO_NULLS
        .replace("DEV_A", "net_null0")
        .replace("memory_mb = 256", "memory_mb = 256\nstats_interval_ms = 50");
    let cfg = config(&d, &body);
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.starts_with("hdvrf: forwarding"), "{first}");
    drop(out);
    // Let a few stats lines hit the closed pipe: poll until hdvrf has
    // certainly tried to write (it is still alive after that).
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(300) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "hdvrf died when its stdout closed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (status, _) = interrupt(&mut child);
    let stderr = stderr_of(&mut child);
    assert!(status.success(), "exit {status:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn client_frame(src_mac: [u8; 6], src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let ip = ipv4_udp(
        u32::from_be_bytes(src),
        u32::from_be_bytes(dst),
        64,
        0,
        9,
        &[0; 18],
    );
    ethernet([0x02, 0, 0, 0, 0, 0xfe], src_mac, 0, 0x0800, &ip)
}

/// `hdvrf run` in router mode on a spoke configuration: client A's
/// packets to client B (same service, same spoke) leave on the core port
/// toward the hub with the hub's labels, never back to the access side;
/// a spoofed packet is dropped and counted; the outcome counters are
/// printed at shutdown.
#[test]
fn run_router_mode_sends_client_to_client_via_the_hub() {
    let d = tmp("router");
    let a_mac = [0x02, 0xca, 0, 0, 0, 0x0a];
    let good: Vec<Vec<u8>> = (0..50)
        .map(|_| client_frame(a_mac, [10, 0, 0, 10], [10, 0, 0, 20]))
        .collect();
    let mut all = good.clone();
    all.push(client_frame(a_mac, [10, 0, 0, 20], [10, 0, 0, 10])); // B's address from A
    write_pcap(&d.join("in.pcap"), &all);
    write_pcap(&d.join("empty.pcap"), &[]);
    let body = format!(
        r#"[dataplane]
workers = [1]
forward_mode = "router"
hugepages = "off"
memory_mb = 256
stats_interval_ms = 50

[router]
role = "spoke"
label_base = 1000
label_count = 64
transport_label = 1000

[[port]]
name = "access0"
device = "net_pcap0,rx_pcap={inp},tx_pcap={aout}"
role = "access"

[[port]]
name = "core0"
device = "net_pcap1,rx_pcap={empty},tx_pcap={cout}"
role = "core"

[[next_hop]]
name = "hub"
port = "core0"
mac = "02:40:00:00:00:09"
labels = [100, 2001]

[[next_hop]]
name = "client-a"
port = "access0"
mac = "02:ca:00:00:00:0a"

[[next_hop]]
name = "client-b"
port = "access0"
mac = "02:cb:00:00:00:0b"

[[service]]
name = "blue"
gateway = "10.0.0.1"
vpn_label = 1001
access = [ {{ port = "access0", vlan = 0 }} ]
upstream = [ {{ prefix = "0.0.0.0/0", next_hop = "hub" }} ]
downstream = [
    {{ prefix = "10.0.0.10/32", next_hop = "client-a" }},
    {{ prefix = "10.0.0.20/32", next_hop = "client-b" }},
]
"#,
        inp = d.join("in.pcap").display(),
        aout = d.join("access_out.pcap").display(),
        empty = d.join("empty.pcap").display(),
        cout = d.join("core_out.pcap").display(),
    );
    let mut h = Hdvrf::start(&config(&d, &body));
    let want = format!("total rx {} ", all.len());
    h.wait_line(&want, |l| l.contains(&want));
    let (status, _, stderr) = h.interrupt();
    assert!(status.success(), "{stderr}");
    let outcomes = h.line("hdvrf: outcomes:");
    assert!(outcomes.contains("fwd_upstream=50"), "{outcomes}");
    assert!(outcomes.contains("drop_spoofed_source=1"), "{outcomes}");
    assert!(!outcomes.contains("fwd_downstream"), "{outcomes}");
    // The core pcap holds 50 labelled frames (hub's transport 100 over
    // VPN 2001); the access side got nothing.
    let core = read_pcap(&d.join("core_out.pcap"));
    let access = read_pcap(&d.join("access_out.pcap"));
    assert!(access.is_empty(), "something went back to the access port");
    for f in &core {
        assert_eq!(&f[0..6], &[0x02, 0x40, 0, 0, 0, 0x09]);
        assert_eq!(&f[12..14], &[0x88, 0x47]);
        assert_eq!(u32::from_be_bytes(f[14..18].try_into().unwrap()) >> 12, 100);
        let vpn = u32::from_be_bytes(f[18..22].try_into().unwrap());
        assert_eq!((vpn >> 12, vpn & 0x100 != 0), (2001, true));
        assert_eq!(f[22 + 8], 63, "IPv4 TTL");
    }
    assert_eq!(core.len(), 50);
}

/// `hdvrf ctl` with `args` against `sock`: (exit code, stdout, stderr).
fn ctl(sock: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .arg("ctl")
        .arg("--socket")
        .arg(sock)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `hdvrf ctl -j` that must succeed, parsed.
fn ctl_json(sock: &Path, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["-j"];
    a.extend_from_slice(args);
    let (code, out, err) = ctl(sock, &a);
    assert_eq!(code, 0, "ctl {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("ctl {args:?}: {e}: {out}"))
}

fn outcome(stats: &serde_json::Value, name: &str) -> u64 {
    stats["total"]["outcomes"][name].as_u64().unwrap_or(0)
}

/// GET `path` from `addr`: (status line, body).
fn http_get(addr: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    let (head, body) = r.split_once("\r\n\r\n").unwrap_or((&r, ""));
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

/// Polls until `cond` holds (30 s hang guard).
fn poll(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(30), "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ctl_shows_counters_and_changes_routes_under_traffic() {
    let d = tmp("ctl");
    let a_mac = [0x02, 0xca, 0, 0, 0, 0x0a];
    let frames: Vec<Vec<u8>> = (0..64)
        .map(|_| client_frame(a_mac, [10, 0, 0, 10], [10, 0, 0, 20]))
        .collect();
    write_pcap(&d.join("in.pcap"), &frames);
    let sock = d.join("ctl.sock");
    let body = format!(
        r#"[dataplane]
workers = [1]
forward_mode = "router"
hugepages = "off"
memory_mb = 256
stats_interval_ms = 0

[control]
socket = "{sock}"
metrics = "127.0.0.1:0"

[router]
role = "spoke"
label_base = 1000
label_count = 64
transport_label = 1000

[[port]]
name = "access0"
device = "net_pcap0,rx_pcap={inp},infinite_rx=1"
role = "access"

[[port]]
name = "core0"
device = "net_null1,no-rx=1"
role = "core"

[[next_hop]]
name = "hub"
port = "core0"
mac = "02:40:00:00:00:09"
labels = [100, 2001]

[[next_hop]]
name = "hub2"
port = "core0"
mac = "02:40:00:00:00:0a"
labels = [100, 2002]

[[next_hop]]
name = "client-a"
port = "access0"
mac = "02:ca:00:00:00:0a"

[[service]]
name = "blue"
gateway = "10.0.0.1"
vpn_label = 1001
access = [ {{ port = "access0", vlan = 0 }} ]
upstream = [ {{ prefix = "0.0.0.0/0", next_hop = "hub" }} ]
downstream = [ {{ prefix = "10.0.0.10/32", next_hop = "client-a" }} ]
"#,
        sock = sock.display(),
        inp = d.join("in.pcap").display(),
    );
    let mut h = Hdvrf::start(&config(&d, &body));
    h.wait_line("the management socket", |l| {
        l.starts_with("hdvrf: management socket")
    });
    let metrics = h
        .line("hdvrf: metrics on http://")
        .trim_start_matches("hdvrf: metrics on http://")
        .trim_end_matches("/metrics")
        .to_owned();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");

    // Counters come from the workers, summed per core by control.
    poll("traffic forwarded", || {
        outcome(&ctl_json(&sock, &["show", "stats"]), "fwd_upstream") > 10_000
    });
    let st = ctl_json(&sock, &["show", "stats"]);
    assert_eq!(st["cores"][0]["lcore"], 1);
    assert!(st["total"]["rx"].as_u64().unwrap() >= outcome(&st, "fwd_upstream"));
    assert_eq!(st["ports"][1]["name"], "core0");
    let (code, out, _) = ctl(&sock, &["show", "stats"]);
    assert_eq!(code, 0);
    assert!(out.contains("fwd_upstream"), "{out}");

    // Packet trace: the next 5 packets of access0, each explained.
    let (code, _, err) = ctl(&sock, &["trace", "add", "5", "access0"]);
    assert_eq!(code, 0, "{err}");
    poll("5 packets traced", || {
        ctl_json(&sock, &["trace", "show"])["packets"]
            .as_array()
            .map_or(0, |a| a.len())
            == 5
    });
    let tr = ctl_json(&sock, &["trace", "show"]);
    assert_eq!(tr["remaining"], 0);
    for p in tr["packets"].as_array().unwrap() {
        for (k, want) in [
            ("in_port", serde_json::json!("access0")),
            ("direction", serde_json::json!("upstream")),
            ("service", serde_json::json!("blue")),
            ("table", serde_json::json!("upstream")),
            (
                "route",
                serde_json::json!({"prefix": "0.0.0.0/0", "next_hop": "hub"}),
            ),
            ("labels_out", serde_json::json!([100, 2001])),
            ("outcome", serde_json::json!("fwd_upstream")),
            ("out_port", serde_json::json!("core0")),
            ("src", serde_json::json!("10.0.0.10")),
            ("dst", serde_json::json!("10.0.0.20")),
            ("tables_changed", serde_json::json!(false)),
        ] {
            assert_eq!(p[k], want, "{k} in {p}");
        }
    }
    let (_, out, _) = ctl(&sock, &["trace", "show"]);
    assert!(
        out.contains(
            "route 0.0.0.0/0 via hub, out with labels [100 2001] => fwd_upstream on core0"
        ),
        "{out}"
    );
    let (code, _, err) = ctl(&sock, &["trace", "add", "1", "nowhere"]);
    assert_eq!(code, 1);
    assert!(err.contains("no port named \"nowhere\""), "{err}");
    assert_eq!(ctl(&sock, &["trace", "clear"]).0, 0);
    assert_eq!(
        ctl_json(&sock, &["trace", "show"])["packets"],
        serde_json::json!([])
    );

    // Prometheus text: the workers' counters and the tables.
    let (status, page) = http_get(&metrics, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{page}");
    let fwd: u64 = page
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "hdvrf_packets_total{lcore=\"1\",kind=\"forward\",outcome=\"fwd_upstream\"} ",
            )
        })
        .unwrap_or_else(|| panic!("no fwd_upstream sample: {page}"))
        .parse()
        .unwrap();
    assert!(fwd > 10_000, "{fwd}");
    assert!(page.contains("# TYPE hdvrf_packets_total counter"));
    assert!(page.contains("hdvrf_routes{service=\"blue\",table=\"upstream\"} 1\n"));
    assert!(page.contains("hdvrf_port_tx_packets_total{port=\"core0\"} "));
    assert_eq!(http_get(&metrics, "/").0, "HTTP/1.1 404 Not Found");

    // The only upstream route goes: from the reply on, nothing is
    // forwarded and packets count as "no route".
    let (code, out, err) = ctl(&sock, &["route", "del", "blue", "upstream", "0.0.0.0/0"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("table generation 1"), "{out}");
    let frozen = outcome(&ctl_json(&sock, &["show", "stats"]), "fwd_upstream");
    let drops0 = ctl_json(&sock, &["show", "drops"])["reasons"]["drop_no_route"]
        .as_u64()
        .unwrap();
    poll("no-route drops", || {
        ctl_json(&sock, &["show", "drops"])["reasons"]["drop_no_route"]
            .as_u64()
            .unwrap()
            > drops0 + 10_000
    });
    assert_eq!(
        outcome(&ctl_json(&sock, &["show", "stats"]), "fwd_upstream"),
        frozen
    );

    // A more specific route to the second hub path: traffic follows it.
    let (code, _, err) = ctl(
        &sock,
        &["route", "add", "blue", "upstream", "10.0.0.0/24", "hub2"],
    );
    assert_eq!(code, 0, "{err}");
    poll("forwarding again", || {
        outcome(&ctl_json(&sock, &["show", "stats"]), "fwd_upstream") > frozen + 10_000
    });
    let routes = ctl_json(&sock, &["show", "routes", "blue", "upstream"]);
    assert_eq!(
        routes,
        serde_json::json!([{"service": "blue", "table": "upstream",
                            "prefix": "10.0.0.0/24", "next_hop": "hub2"}])
    );
    let nh = ctl_json(&sock, &["show", "next-hops"]);
    assert_eq!(nh[1]["labels"], serde_json::json!([100, 2002]));
    let svc = ctl_json(&sock, &["show", "services"]);
    assert_eq!(svc[0]["routes"]["upstream"], 1);
    let st = ctl_json(&sock, &["show", "stats"]);
    assert_eq!(st["publication"]["commits"], 2);

    let labels = ctl_json(&sock, &["show", "labels"]);
    assert_eq!(
        (labels["base"].as_u64(), labels["count"].as_u64()),
        (Some(1000), Some(64))
    );
    assert_eq!(
        labels["bound"],
        serde_json::json!([
            {"label": 1000, "action": "pop", "detail": {}},
            {"label": 1001, "action": "pop-downstream", "detail": {"service": "blue"}},
        ])
    );
    // A client that sends an endless line is cut off with a reason, and
    // the server goes on serving.
    {
        use std::io::{Read, Write};
        let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        let _ = c.write_all(&vec![b'x'; 100 * 1024]);
        // The server may close with our excess unread (a reset after its
        // reply): keep what arrived before any error.
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = c.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let reply = String::from_utf8_lossy(&got);
        assert!(reply.contains("request over 65536 bytes"), "{reply}");
    }

    // Refusals name what is wrong and exit 1; nothing changes.
    for (args, want) in [
        (
            vec!["route", "add", "blue", "upstream", "10.0.0.1/24", "hub2"],
            "host bits",
        ),
        (
            vec!["route", "add", "green", "upstream", "10.0.0.0/24", "hub2"],
            "no service named \"green\" (services: blue)",
        ),
        (
            vec!["route", "add", "blue", "upstream", "10.0.0.0/24", "nowhere"],
            "no next hop named \"nowhere\"",
        ),
        (
            vec!["route", "del", "blue", "upstream", "10.9.0.0/16"],
            "no route 10.9.0.0/16",
        ),
        (vec!["show", "routes", "blue", "sideways"], "unknown table"),
    ] {
        let (code, _, err) = ctl(&sock, &args);
        assert_eq!(code, 1, "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert_eq!(
        ctl_json(&sock, &["show", "stats"])["publication"]["commits"],
        2
    );

    // reload: the file's routes come back (runtime changes undone) in one
    // commit; a change that needs a restart is refused whole.
    let cfg = d.join("hdvrf.toml");
    let reloaded = body.replace(
        "upstream = [ { prefix = \"0.0.0.0/0\", next_hop = \"hub\" } ]",
        "upstream = [ { prefix = \"0.0.0.0/0\", next_hop = \"hub\" }, { prefix = \"10.0.0.0/25\", next_hop = \"hub2\" } ]",
    );
    assert_ne!(reloaded, body, "the edit applies");
    std::fs::write(&cfg, &reloaded).unwrap();
    let r = ctl_json(&sock, &["reload"]);
    assert_eq!(
        r,
        serde_json::json!({
            "added": 2, "changed": 0, "removed": 1, "generation": 3,
            "next_hops": {"added": 0, "changed": 0, "removed": 0},
            "labels_changed": 0, "services_changed": 0, "access_changed": 0,
            "rules": {"set": 0, "removed": 0},
            "bgp_table_ops": 0, "kept_for_sessions": 0,
        })
    );
    let routes = ctl_json(&sock, &["show", "routes", "blue", "upstream"]);
    let listed: Vec<(String, String)> = routes
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["prefix"].as_str().unwrap().into(),
                r["next_hop"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("0.0.0.0/0".into(), "hub".into()),
            ("10.0.0.0/25".into(), "hub2".into())
        ]
    );
    let again = ctl_json(&sock, &["reload"]);
    assert_eq!(again["generation"], serde_json::Value::Null);
    std::fs::write(&cfg, reloaded.replace("net_null1", "net_null2")).unwrap();
    let (code, _, err) = ctl(&sock, &["reload"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("changes to port need a restart; nothing was applied"),
        "{err}"
    );
    assert_eq!(
        ctl_json(&sock, &["show", "routes", "blue", "upstream"]),
        routes
    );

    // clear stats: counting starts again from zero.
    let before = ctl_json(&sock, &["show", "stats"])["total"]["rx"]
        .as_u64()
        .unwrap();
    let (code, _, _) = ctl(&sock, &["clear", "stats"]);
    assert_eq!(code, 0);
    let after = ctl_json(&sock, &["show", "stats"])["total"]["rx"]
        .as_u64()
        .unwrap();
    assert!(after < before, "rx {after} after clear, {before} before");

    let (status, _, stderr) = h.interrupt();
    assert!(status.success(), "{stderr}");
    assert!(!sock.exists(), "socket left behind");
    assert!(h.line("hdvrf: mbufs:").contains("back in the pool"));
    // Nobody home: exit 2 with the socket named.
    let (code, _, err) = ctl(&sock, &["show", "stats"]);
    assert_eq!(code, 2);
    assert!(err.contains(&sock.display().to_string()), "{err}");
    std::fs::remove_dir_all(&d).ok();
}

/// A frame from a spoke to the hub: VPN label 2001 (bottom of stack) over
/// a 100-byte IPv4/UDP packet to `dst`:`dport`.
fn from_spoke_frame(dst: [u8; 4], dport: u16) -> Vec<u8> {
    let ip = ipv4_udp(
        u32::from_be_bytes([10, 0, 0, 10]),
        u32::from_be_bytes(dst),
        64,
        0,
        dport,
        &[0; 72],
    );
    let lse = (2001u32 << 12 | 1 << 8 | 64).to_be_bytes();
    ethernet(
        [0x02, 0, 0, 0, 0, 0xfe],
        [0x02, 0xc0, 0, 0, 0, 1],
        0,
        0x8847,
        &[&lse[..], &ip].concat(),
    )
}

/// A hub at full rate from a spoke (net_pcap replaying forever): the deny
/// rule drops and counts, the police rule passes no more than its rate
/// plus its burst, the count rule sees everything, metrics and `show
/// policy` agree, and a reload that removes the deny rule keeps the
/// counts of the rules that stay.
#[test]
fn hub_policy_denies_polices_and_counts_under_traffic() {
    let d = tmp("policy");
    let mut frames = Vec::new();
    for _ in 0..16 {
        frames.push(from_spoke_frame([10, 0, 0, 20], 5353)); // policed
        frames.push(from_spoke_frame([10, 0, 0, 66], 80)); // denied
        frames.push(from_spoke_frame([10, 0, 0, 30], 80)); // passes
    }
    write_pcap(&d.join("in.pcap"), &frames);
    let sock = d.join("ctl.sock");
    // 8 Mbit/s = 1,000,000 bytes/s: 10,000 of these packets a second.
    const RATE_BYTES: f64 = 1_000_000.0;
    const BURST: u64 = 20_000;
    let rules = |with_deny: bool| {
        format!(
            "policy = [\n    {{ prefix = \"10.0.0.0/24\", action = \"count\" }},\n{}    {{ prefix = \"10.0.0.20/32\", protocol = \"udp\", port = \"5000-5999\", action = \"police\", rate_bps = 8000000, burst_bytes = {BURST} }},\n]\n",
            if with_deny { "    { prefix = \"10.0.0.66/32\", action = \"deny\" },\n" } else { "" }
        )
    };
    let body = |with_deny: bool| {
        format!(
            r#"[dataplane]
workers = [1]
forward_mode = "router"
hugepages = "off"
memory_mb = 256
stats_interval_ms = 0

[control]
socket = "{sock}"
metrics = "127.0.0.1:0"

[router]
role = "hub"
label_base = 2000
label_count = 64
transport_label = 2000

[[port]]
name = "uplink0"
device = "net_null0,no-rx=1"
role = "access"

[[port]]
name = "core0"
device = "net_pcap1,rx_pcap={inp},infinite_rx=1"
role = "core"

[[next_hop]]
name = "internet"
port = "uplink0"
mac = "02:ee:00:00:00:01"

[[next_hop]]
name = "spoke1"
port = "core0"
mac = "02:c0:00:00:00:01"
labels = [1000, 1001]

[[service]]
name = "blue"
vpn_label = 2001
access = [ {{ port = "uplink0" }} ]
hub = [
    {{ prefix = "10.0.0.0/24", next_hop = "spoke1" }},
    {{ prefix = "0.0.0.0/0", next_hop = "internet" }},
]
{rules}"#,
            sock = sock.display(),
            inp = d.join("in.pcap").display(),
            rules = rules(with_deny),
        )
    };
    let cfg = config(&d, &body(true));
    let mut h = Hdvrf::start(&cfg);
    h.wait_line("the management socket", |l| {
        l.starts_with("hdvrf: management socket")
    });
    let metrics = h
        .line("hdvrf: metrics on http://")
        .trim_start_matches("hdvrf: metrics on http://")
        .trim_end_matches("/metrics")
        .to_owned();
    let policy = || ctl_json(&sock, &["show", "policy", "blue"]);
    let rule = |v: &serde_json::Value, i: usize, k: &str| v[i][k].as_u64().unwrap();
    poll("denied traffic", || rule(&policy(), 1, "dropped") > 20_000);

    // The police rule over a span of wall time: what passed is within
    // the rate plus the burst (bounded from above only: the machine may
    // be slow to offer load, never fast to pass it).
    let (p0, t0) = (policy(), Instant::now());
    poll("policed traffic", || {
        rule(&policy(), 2, "packets") > rule(&p0, 2, "packets") + 50_000
    });
    let (p1, elapsed) = (policy(), t0.elapsed().as_secs_f64());
    let passed = |v: &serde_json::Value| rule(v, 2, "packets") - rule(v, 2, "dropped");
    let passed_bytes = ((passed(&p1) - passed(&p0)) * 100) as f64;
    assert!(
        passed_bytes <= RATE_BYTES * (elapsed + 0.05) + BURST as f64,
        "{passed_bytes} bytes passed in {elapsed:.3} s: over 1,000,000 bytes/s plus the burst"
    );
    assert!(rule(&p1, 2, "dropped") > rule(&p0, 2, "dropped"), "{p1}");
    assert!(passed(&p1) > 0, "{p1}");
    // Each rule's bytes are its packets' IPv4 length.
    for i in 0..3 {
        assert_eq!(
            rule(&p1, i, "bytes"),
            rule(&p1, i, "packets") * 100,
            "rule {i}: {p1}"
        );
    }
    assert_eq!(
        (p1[1]["action"].as_str(), rule(&p1, 1, "dropped")),
        (Some("deny"), rule(&p1, 1, "packets"))
    );
    // The count rule sees all three destinations: at least as many as the
    // other two together (counts are read one after another, under load).
    assert!(
        rule(&p1, 0, "packets") >= rule(&p0, 1, "packets") + rule(&p0, 2, "packets"),
        "{p1}"
    );
    let st = ctl_json(&sock, &["show", "stats"]);
    assert!(
        outcome(&st, "drop_policy_deny") >= rule(&p1, 1, "dropped"),
        "{st}"
    );
    assert!(
        outcome(&st, "drop_policy_police") >= rule(&p1, 2, "dropped"),
        "{st}"
    );
    assert!(outcome(&st, "fwd_hub_to_spoke") > 0, "{st}");
    let (_, body_text) = http_get(&metrics, "/metrics");
    let deny_line = body_text
        .lines()
        .find(|l| {
            l.starts_with("hdvrf_policy_drops_total{service=\"blue\",rule=\"1\",action=\"deny\"}")
        })
        .unwrap_or_else(|| panic!("no deny rule drops in the metrics: {body_text}"));
    assert!(
        deny_line
            .rsplit(' ')
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= rule(&p1, 1, "dropped")
    );
    let (code, text, err) = ctl(&sock, &["show", "policy"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains("police") && text.contains("5000-5999") && text.contains("10.0.0.66/32"),
        "{text}"
    );

    // Without the deny rule: two rules left, the police rule keeps its
    // counts (its slot), nothing is denied any more.
    std::fs::write(&cfg, body(false)).unwrap();
    let r = ctl_json(&sock, &["reload"]);
    assert_eq!(
        (r["rules"]["set"].as_u64(), r["rules"]["removed"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
    let p2 = policy();
    assert_eq!(p2.as_array().unwrap().len(), 2, "{p2}");
    assert_eq!(p2[1]["action"], "police");
    assert!(
        rule(&p2, 1, "packets") >= rule(&p1, 2, "packets"),
        "{p2} after {p1}"
    );
    let denied = outcome(&ctl_json(&sock, &["show", "stats"]), "drop_policy_deny");
    let hub_to_spoke = outcome(&ctl_json(&sock, &["show", "stats"]), "fwd_hub_to_spoke");
    poll("traffic to 10.0.0.66 forwarded", || {
        outcome(&ctl_json(&sock, &["show", "stats"]), "fwd_hub_to_spoke") > hub_to_spoke + 100_000
    });
    assert_eq!(
        outcome(&ctl_json(&sock, &["show", "stats"]), "drop_policy_deny"),
        denied
    );

    let (status, _, stderr) = h.interrupt();
    assert!(status.success(), "exit {status:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The malformed-packet corpus (`scripts/gen-corpus`, in `tests/corpus`):
/// each port's pcap replayed once through a spoke, and every outcome
/// counter exactly as `expected.json` specifies; every mbuf back at the
/// end (frames larger than an mbuf arrive chained).
#[test]
fn malformed_corpus_gives_exact_counters() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(corpus.join("expected.json")).unwrap())
            .unwrap();
    let d = tmp("corpus");
    write_pcap(&d.join("empty.pcap"), &[]);
    for port in ["access", "core"] {
        let want = &expected[port];
        let pcap = |p: &str| {
            if p == port {
                corpus.join(format!("{port}.pcap"))
            } else {
                d.join("empty.pcap")
            }
        };
        let sock = d.join(format!("{port}.sock"));
        let body = std::fs::read_to_string(corpus.join("spoke.toml"))
            .unwrap()
            .replace("SOCK", &sock.display().to_string())
            .replace("ACCESS_IN", &pcap("access").display().to_string())
            .replace("CORE_IN", &pcap("core").display().to_string())
            .replace(
                "ACCESS_OUT",
                &d.join("out-access.pcap").display().to_string(),
            )
            .replace("CORE_OUT", &d.join("out-core.pcap").display().to_string());
        let mut h = Hdvrf::start(&config(&d, &body));
        h.wait_line("the management socket", |l| {
            l.starts_with("hdvrf: management socket")
        });
        let frames = want["frames"].as_u64().unwrap();
        let mut st = serde_json::Value::Null;
        poll("the corpus through the router", || {
            st = ctl_json(&sock, &["show", "stats"]);
            let o = st["total"]["outcomes"].as_object().unwrap();
            o.values().map(|v| v.as_u64().unwrap()).sum::<u64>() >= frames
        });
        let got: std::collections::BTreeMap<String, u64> = st["total"]["outcomes"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .filter(|&(_, n)| n != 0)
            .collect();
        let want_outcomes: std::collections::BTreeMap<String, u64> = want["outcomes"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .collect();
        assert_eq!(
            got, want_outcomes,
            "{port} corpus: outcomes (classes: {})",
            want["classes"]
        );
        assert_eq!(st["total"]["rx"].as_u64(), Some(frames), "{port}: {st}");
        let (status, _, stderr) = h.interrupt();
        assert!(status.success(), "{port}: exit {status:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        let mbufs = h.line("hdvrf: mbufs:").to_owned();
        let (back, total) = mbufs
            .trim_start_matches("hdvrf: mbufs: ")
            .split_once(" back")
            .unwrap()
            .0
            .split_once('/')
            .unwrap();
        assert_eq!(back, total, "{port}: {mbufs}");
    }
}
