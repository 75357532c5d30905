//! Interop with a real GoBGP (Debian `gobgpd`; `scripts/setup` installs
//! it) over loopback: our session (AS 65001) connects to gobgpd (AS 65000,
//! passive, VPNv4); 1000 routes we advertise show in GoBGP's RIB with
//! their RD, label, route target and next hop; GoBGP's default route with
//! a label reaches us; withdrawals go both ways; GoBGP restarted: the
//! session comes back and our routes are in its RIB again, nothing stale.
//! The test plays the speaker: it answers each establishment with the
//! whole table ([`ToSession::Table`]), as `Speaker::established` does.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use control::bgp::fsm::Damping;
use control::bgp::session::{run, FromSession, PeerConfig, ToSession};
use control::bgp::{VpnPath, VpnRoute};
use control::vpn::VpnId;
use serde_json::Value;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct GoBgp {
    dir: PathBuf,
    bgp_port: u16,
    api_port: u16,
    child: Option<Child>,
}

impl GoBgp {
    fn new() -> GoBgp {
        let (bgp_port, api_port) = (free_port(), free_port());
        // One directory per daemon: tests run in parallel.
        let dir =
            std::env::temp_dir().join(format!("hdvrf-gobgp-{}-{api_port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let g = GoBgp {
            dir,
            bgp_port,
            api_port,
            child: None,
        };
        std::fs::write(
            g.dir.join("gobgpd.toml"),
            format!(
                r#"[global.config]
  as = 65000
  router-id = "192.0.2.9"
  port = {}
  local-address-list = ["127.0.0.1"]
[[neighbors]]
  [neighbors.config]
    neighbor-address = "127.0.0.1"
    peer-as = 65001
  [neighbors.transport.config]
    passive-mode = true
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "l3vpn-ipv4-unicast"
"#,
                g.bgp_port
            ),
        )
        .unwrap();
        g
    }

    fn start(&mut self) {
        let log = std::fs::File::create(self.dir.join("gobgpd.log")).unwrap();
        let child = Command::new("gobgpd")
            .args(["-t", "toml", "-f"])
            .arg(self.dir.join("gobgpd.toml"))
            .arg("--api-hosts")
            .arg(format!("127.0.0.1:{}", self.api_port))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("gobgpd runs: scripts/setup installs the Debian package gobgpd");
        self.child = Some(child);
        wait_for("gobgpd's API", || self.cli(&["neighbor", "-j"]).is_some());
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs the `gobgp` CLI against this daemon; its output as JSON, or
    /// `Some(Null)` for commands without output.
    fn cli(&self, args: &[&str]) -> Option<Value> {
        let out = Command::new("gobgp")
            .args(["-u", "127.0.0.1", "-p", &self.api_port.to_string()])
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        if text.trim().is_empty() {
            return Some(Value::Null);
        }
        serde_json::from_str(&text).ok()
    }

    /// GoBGP's VPNv4 RIB: key "RD:prefix" to (labels, next hop, targets).
    fn rib(&self) -> Rib {
        let Some(Value::Object(m)) = self.cli(&["global", "rib", "-a", "vpnv4", "-j"]) else {
            return BTreeMap::new();
        };
        m.into_iter()
            .filter_map(|(k, paths)| {
                let best = paths
                    .as_array()?
                    .iter()
                    .find(|p| p["best"] == true)?
                    .clone();
                let labels = best["nlri"]["labels"]
                    .as_array()?
                    .iter()
                    .filter_map(Value::as_u64)
                    .collect();
                let attrs = best["attrs"].as_array()?;
                let nh = attrs
                    .iter()
                    .find(|a| a["type"] == 14)
                    .and_then(|a| a["nexthop"].as_str())?
                    .to_string();
                let rts = attrs
                    .iter()
                    .find(|a| a["type"] == 16)
                    .and_then(|a| a["value"].as_array().cloned())
                    .unwrap_or_default()
                    .iter()
                    .filter(|c| c["subtype"] == 2)
                    .filter_map(|c| c["value"].as_str().map(str::to_string))
                    .collect();
                Some((k, (labels, nh, rts)))
            })
            .collect()
    }
}

impl Drop for GoBgp {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < end, "{what}: not within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn next(
    rx: &mut UnboundedReceiver<FromSession>,
    what: &str,
    want: impl Fn(&FromSession) -> bool,
) -> FromSession {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let m = rx.recv().await.expect("session alive");
            if want(&m) {
                return m;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {what} within 30 s"))
}

type Rib = BTreeMap<String, (Vec<u64>, String, Vec<String>)>;

/// The routes of our RD.
fn ours(rib: &Rib) -> Rib {
    rib.iter()
        .filter(|(k, _)| k.starts_with("65001:7:"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// GoBGP's RIB once `done` holds for it, or as it is after 30 s.
async fn rib_when(g: &std::sync::Arc<std::sync::Mutex<GoBgp>>, done: impl Fn(&Rib) -> bool) -> Rib {
    let t0 = Instant::now();
    loop {
        let gc = g.clone();
        let rib = blocking(move || gc.lock().unwrap().rib()).await;
        if done(&rib) || t0.elapsed() > Duration::from_secs(30) {
            return rib;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs blocking CLI polls off the runtime's thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test]
async fn gobgp_learns_our_routes_and_we_learn_its() {
    let mut g = GoBgp::new();
    g.start();
    let rd: VpnId = "65001:7".parse().unwrap();
    let routes: Vec<VpnRoute> = (0..1000u32)
        .map(|i| VpnRoute {
            rd,
            prefix: Ipv4Addr::from(0x0a00_0000 + i),
            len: 32,
            label: 16 + i,
        })
        .collect();
    let path = VpnPath {
        next_hop: Ipv4Addr::new(192, 0, 2, 1),
        route_targets: vec!["65000:1".parse().unwrap()],
        local_pref: None,
        med: None,
        as_path: vec![65001],
        reflection: None,
    };
    let (to, cmds) = unbounded_channel();
    let (out, mut from) = unbounded_channel();
    let cfg = PeerConfig {
        peer: SocketAddr::from((Ipv4Addr::LOCALHOST, g.bgp_port)),
        listen: None,
        local_asn: 65001,
        router_id: Ipv4Addr::new(192, 0, 2, 1),
        remote_asn: 65000,
        hold_time: 30,
        send_hold: None,
        md5_password: None,
        ttl_security: None,
        damping: Damping::DEFAULT,
    };
    let task = tokio::spawn(run(cfg, cmds, out));
    let FromSession::Established(n, k) = next(&mut from, "Established", |m| {
        matches!(m, FromSession::Established(..))
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!((n.peer_asn, n.asn4, n.hold_time), (65000, true, 30));
    to.send(ToSession::Table(k, vec![(path.clone(), routes.clone())]))
        .unwrap();

    // Our 1000 routes in GoBGP's RIB, each with its label, RD, target and
    // next hop.
    let g = std::sync::Arc::new(std::sync::Mutex::new(g));
    let want: Rib = routes
        .iter()
        .map(|r| {
            (
                format!("65001:7:{}/32", r.prefix),
                (
                    vec![u64::from(r.label)],
                    "192.0.2.1".to_string(),
                    vec!["65000:1".to_string()],
                ),
            )
        })
        .collect();
    let rib = rib_when(&g, |r| r.len() >= want.len()).await;
    assert_eq!(rib, want, "GoBGP's RIB");

    // GoBGP's default route with a label and our target reaches us.
    let gc = g.clone();
    blocking(move || {
        gc.lock().unwrap().cli(&[
            "global",
            "rib",
            "-a",
            "vpnv4",
            "add",
            "0.0.0.0/0",
            "label",
            "3001",
            "rd",
            "65000:1",
            "rt",
            "65000:1",
            "nexthop",
            "192.0.2.9",
        ])
    })
    .await
    .expect("gobgp adds the route");
    let FromSession::Learned(u) = next(
        &mut from,
        "GoBGP's default route",
        |m| matches!(m, FromSession::Learned(u) if !u.reach.is_empty()),
    )
    .await
    else {
        unreachable!()
    };
    let default = VpnRoute {
        rd: "65000:1".parse().unwrap(),
        prefix: Ipv4Addr::UNSPECIFIED,
        len: 0,
        label: 3001,
    };
    assert_eq!(u.reach, [default]);
    let p = u.path.unwrap();
    assert_eq!(p.route_targets, ["65000:1".parse::<VpnId>().unwrap()]);
    assert_eq!(p.as_path, [65000], "eBGP: GoBGP's AS first");
    assert_eq!(p.next_hop, Ipv4Addr::new(192, 0, 2, 9));

    // Withdrawals both ways.
    to.send(ToSession::Withdraw(routes[..10].to_vec())).unwrap();
    // (GoBGP's own default route is in its RIB too.)
    let rib = ours(&rib_when(&g, |r| ours(r).len() == 990).await);
    assert_eq!(rib.len(), 990);
    assert!(!rib.contains_key("65001:7:10.0.0.0/32"));
    let gc = g.clone();
    blocking(move || {
        gc.lock().unwrap().cli(&[
            "global",
            "rib",
            "-a",
            "vpnv4",
            "del",
            "0.0.0.0/0",
            "label",
            "3001",
            "rd",
            "65000:1",
        ])
    })
    .await
    .expect("gobgp deletes the route");
    let FromSession::Learned(u) = next(
        &mut from,
        "the default route's withdrawal",
        |m| matches!(m, FromSession::Learned(u) if !u.withdrawn.is_empty()),
    )
    .await
    else {
        unreachable!()
    };
    assert_eq!(
        u.withdrawn,
        [VpnRoute {
            label: 0,
            ..default
        }]
    );

    // GoBGP restarted: our session goes down, comes back, and GoBGP has
    // our 990 routes again, the withdrawn ten not among them.
    let gc = g.clone();
    blocking(move || {
        let mut g = gc.lock().unwrap();
        g.stop();
        g.start();
    })
    .await;
    next(&mut from, "Down", |m| matches!(m, FromSession::Down(_))).await;
    let FromSession::Established(_, k) = next(&mut from, "Established again", |m| {
        matches!(m, FromSession::Established(..))
    })
    .await
    else {
        unreachable!()
    };
    // The speaker's table now: without the ten withdrawn.
    to.send(ToSession::Table(
        k,
        vec![(path.clone(), routes[10..].to_vec())],
    ))
    .unwrap();
    let rib = rib_when(&g, |r| r.len() >= 990).await;
    let withdrawn: Vec<String> = routes[..10]
        .iter()
        .map(|r| format!("65001:7:{}/32", r.prefix))
        .collect();
    let want_after: BTreeMap<_, _> = want
        .into_iter()
        .filter(|(k, _)| !withdrawn.contains(k))
        .collect();
    assert_eq!(rib, want_after, "GoBGP's RIB after its restart");
    to.send(ToSession::Stop).unwrap();
    task.await.unwrap();
}

/// Scale (not in CI: `cargo test --release -p control --test
/// gobgp_interop -- --ignored --nocapture`): how long until N routes
/// (HDVRF_BGP_ROUTES, default 100000) advertised on an established session
/// are all in GoBGP's RIB.
#[tokio::test]
#[ignore]
async fn gobgp_scale() {
    let n: u32 = std::env::var("HDVRF_BGP_ROUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let mut g = GoBgp::new();
    g.start();
    let rd: VpnId = "65001:7".parse().unwrap();
    let routes: Vec<VpnRoute> = (0..n)
        .map(|i| VpnRoute {
            rd,
            prefix: Ipv4Addr::from(0x0a00_0000 + i),
            len: 32,
            label: 16 + i % 100_000,
        })
        .collect();
    let path = VpnPath {
        next_hop: Ipv4Addr::new(192, 0, 2, 1),
        route_targets: vec!["65000:1".parse().unwrap()],
        local_pref: None,
        med: None,
        as_path: vec![65001],
        reflection: None,
    };
    let (to, cmds) = unbounded_channel();
    let (out, mut from) = unbounded_channel();
    let cfg = PeerConfig {
        peer: SocketAddr::from((Ipv4Addr::LOCALHOST, g.bgp_port)),
        listen: None,
        local_asn: 65001,
        router_id: Ipv4Addr::new(192, 0, 2, 1),
        remote_asn: 65000,
        hold_time: 90,
        send_hold: None,
        md5_password: None,
        ttl_security: None,
        damping: Damping::DEFAULT,
    };
    tokio::spawn(run(cfg, cmds, out));
    let FromSession::Established(_, k) = next(&mut from, "Established", |m| {
        matches!(m, FromSession::Established(..))
    })
    .await
    else {
        unreachable!()
    };
    to.send(ToSession::Table(k, Vec::new())).unwrap();
    let t0 = Instant::now();
    to.send(ToSession::Advertise(routes, path)).unwrap();
    let g = std::sync::Arc::new(g);
    loop {
        let gc = g.clone();
        let count = blocking(move || {
            gc.cli(&["global", "rib", "summary", "-a", "vpnv4", "-j"])
                .and_then(|v| v["num_destination"].as_u64())
                .unwrap_or(0)
        })
        .await;
        if count >= u64::from(n) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "{count} of {n} after 600 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "bgp_scale routes={n} seconds={:.2}",
        t0.elapsed().as_secs_f64()
    );
    to.send(ToSession::Stop).unwrap();
}
