#!/usr/bin/env python3
"""The end-to-end HD-VRF topology: a spoke and a hub hdvrf, MPLS between
them over a Linux bridge, two services with overlapping client pools, a
Kea per service, and an uplink host behind the hub.

    A (blue) ----- access0 \\                          / core0 ---+
    B (blue) ----- access1  > hdvrf spoke (netns S)                |  CORE: bridge br0
    C (red)  ----- access2 /   core0 198.18.1.1 --------------------+  (MPLS frames)
                 hd-core0: BGP 198.18.1.1 <-- iBGP AS 65000 -->    |
    KB: kea blue 192.0.2.50  <-veth-> S          hdvrf hub (netns H): core0 198.18.1.2
    KR: kea red  198.51.100.50 <-veth-> S                         uplink0 203.0.113.2
                                                                    |
                                                   U ("the internet"): 203.0.113.1

- Spoke: role spoke, labels from 1000 (transport 1000); blue (access0,
  access1; VPN label 1001) and red (access2; VPN label 1002), both with
  gateway 10.1.0.1 and the pool 10.1.0.10-10.1.0.19 (overlapping on
  purpose; one Kea per service, since Kea refuses identical subnets).
  Its upstream tables are filled only by BGP: the hub's 0/0 per service.
- Hub: role hub, labels from 2000 (transport 2000); blue (VPN label 2001,
  hub route 0/0 to the uplink, 203.0.113.1 resolved by ARP, and the
  client pool 10.1.0.0/24 to `discard`, so that traffic to a client whose
  route was withdrawn dies at the hub instead of leaving by the uplink)
  and red (VPN label 2002, hub route 0/0 to `discard`: red has no uplink,
  only the return path). Both advertise their hub routes to the spoke.
- The two hdvrf speak BGP through their host taps (hd-core0), over the
  very DPDK core link their traffic takes.
- Clients get their address from Kea through the spoke's DHCP relay
  (tests/e2e/dhcp_client.py), hold it as a /32 with a default route via
  the gateway, so even A -> B goes through the router (and the hub).

Used by tests/e2e/test_topology.py (and conftest.py's generic helpers) and
by scripts/demo (`topology.py demo`). Standard library only; the DHCP
client it runs needs scapy (the venv's Python).
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
E2E = ROOT / "tests" / "e2e"

# Addresses and labels of the topology.
SPOKE_CORE, HUB_CORE = "198.18.1.1", "198.18.1.2"
HUB_UPLINK, UPLINK_HOST = "203.0.113.2", "203.0.113.1"
POOL_NET = "10.1.0.0/24"  # both services' client pools lie in it
GATEWAY = "10.1.0.1"
CLIENT_NET = "10.1.0.0/24"
POOL = ("10.1.0.10", "10.1.0.19")
KEA = {"blue": ("192.0.2.254", "192.0.2.50"), "red": ("198.51.100.254", "198.51.100.50")}
SPOKE_TRANSPORT, HUB_TRANSPORT = 1000, 2000
SPOKE_VPN = {"blue": 1001, "red": 1002}
HUB_VPN = {"blue": 2001, "red": 2002}
SERVICES = ("blue", "red")
# Route distinguishers and route targets: the spoke exports its clients'
# host routes with SPOKE_EXPORT, which the hub imports; the hub exports
# its hub routes with HUB_EXPORT, which the spoke imports.
SPOKE_RD = {"blue": "65000:100", "red": "65000:200"}
SPOKE_EXPORT = {"blue": "65000:2", "red": "65000:12"}
HUB_RD = {"blue": "65000:1", "red": "65000:11"}
HUB_EXPORT = {"blue": "65000:1", "red": "65000:11"}
# Each service's hub routes in the hub's file (the extra ones
# Topology.set_hub_routes adds come after them).
HUB_ROUTES = {"blue": [("0.0.0.0/0", "uplink"), (POOL_NET, "discard")], "red": [("0.0.0.0/0", "discard")]}
# The kernel end of a net_tap port starts with the DPDK port's own MAC; each
# tap moved out gets one of its own, or the core bridge would take the
# routers' MACs for its own ports' (and keep their frames to itself), and
# a client would share its MAC with the router port it talks to.
TAP_MACS = {
    "sa0": "02:00:5e:10:00:0a",
    "sa1": "02:00:5e:10:00:0b",
    "sa2": "02:00:5e:10:00:0c",
    "sc0": "02:00:5e:c0:00:01",
    "hc0": "02:00:5e:c0:00:02",
    "hu0": "02:00:5e:0b:00:01",
}
CLIENTS = {  # name: (service, spoke port, tap name)
    "a": ("blue", "access0", "sa0"),
    "b": ("blue", "access1", "sa1"),
    "c": ("red", "access2", "sa2"),
}


# --- generic helpers (conftest.py imports these) ----------------------------

# Children in sessions of their own: a Ctrl-C at the terminal then reaches
# only this process, which stops them in order (the demo sets it).
NEW_SESSION = False


def wait_until(cond: Callable[[], object], timeout: float, what: str, interval: float = 0.02):
    """Polls `cond` until it returns something truthy; returns that value.
    Fails with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def run(*cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    """Runs a short command; on failure the assertion shows its stderr."""
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, start_new_session=NEW_SESSION)
    if check and p.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.strip() or p.stdout.strip()}"
        )
    return p


class LineProc:
    """A subprocess whose stdout and stderr are collected line by line by
    reader threads, so the caller can wait for a line while it keeps running."""

    def __init__(self, cmd: list[str], name: str):
        self.cmd = cmd
        self.name = name
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=NEW_SESSION,
        )
        self._lock = threading.Lock()
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for t in self._readers:
            t.start()

    def _read(self, stream, sink: list[str]) -> None:
        for line in stream:
            with self._lock:
                sink.append(line.rstrip("\n"))
        stream.close()

    def lines(self) -> list[str]:
        with self._lock:
            return list(self.out)

    def describe(self) -> str:
        with self._lock:
            out, err = list(self.out), list(self.err)
        return (
            f"{self.name} ({' '.join(self.cmd)}), exit {self.proc.poll()}\n"
            f"--- stdout:\n" + "\n".join(out[-40:]) + "\n--- stderr:\n" + "\n".join(err[-40:])
        )

    def wait_line(self, pred: Callable[[str], bool], timeout: float, what: str) -> str:
        """Waits for a stdout line matching `pred`; fails early if the
        process exits without printing one."""

        def found():
            for line in self.lines():
                if pred(line):
                    return line
            if self.proc.poll() is not None:
                for t in self._readers:
                    t.join(timeout=2)
                for line in self.lines():
                    if pred(line):
                        return line
                raise AssertionError(f"{what}: process ended first\n{self.describe()}")
            return None

        try:
            return wait_until(found, timeout, what)
        except AssertionError as e:
            if "process ended first" in str(e):
                raise
            raise AssertionError(f"{e}\n{self.describe()}") from None

    def wait(self, timeout: float) -> int:
        """Waits for exit, then for the readers to drain the pipes."""
        rc = self.proc.wait(timeout=timeout)
        for t in self._readers:
            t.join(timeout=5)
        return rc

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(timeout)

    def kill(self) -> None:
        """Best-effort end for finalizers: SIGINT, then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for t in self._readers:
            t.join(timeout=2)


def link_exists(iface: str, netns: Optional[str] = None) -> bool:
    cmd = ["ip"] + (["-n", netns] if netns else []) + ["link", "show", "dev", iface]
    return subprocess.run(cmd, capture_output=True).returncode == 0


def link_mac(iface: str, netns: Optional[str] = None) -> str:
    cmd = ["ip", "-j"] + (["-n", netns] if netns else []) + ["link", "show", "dev", iface]
    return json.loads(run(*cmd).stdout)[0]["address"]


def netns_list() -> list[str]:
    out = run("ip", "netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def delete_netns(name: str) -> None:
    if name in netns_list():
        run("ip", "netns", "del", name, check=False)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def make_netns(netns: str) -> None:
    """A new namespace with IPv6 off (no kernel chatter on the wire) and
    loopback up."""
    run("ip", "netns", "add", netns)
    for key in ("all", "default"):
        run("ip", "netns", "exec", netns, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1")
    run("ip", "-n", netns, "link", "set", "dev", "lo", "up")


def veth(a: tuple[str, str, str], b: tuple[str, str, str]) -> None:
    """A veth pair between two namespaces, each end (name, namespace,
    address/len) addressed and up."""
    (na, nsa, aa), (nb, nsb, ab) = a, b
    run("ip", "link", "add", na, "netns", nsa, "type", "veth", "peer", "name", nb, "netns", nsb)
    for name, ns, addr in (a, b):
        run("ip", "-n", ns, "addr", "add", addr, "dev", name)
        run("ip", "-n", ns, "link", "set", "dev", name, "up")


def router_header(sock, metrics: str = "", role: str = "spoke", label_base: int = 1000, control_extra: str = "", lcores: tuple[int, int] = (0, 1)) -> str:
    """The [dataplane], [control] and [router] sections the router tests
    share: one worker (lcore 1), 512 MB, a management socket at `sock`,
    `label_base` + 64 local labels with `label_base` as the transport
    label."""
    return f"""[dataplane]
main_lcore = {lcores[0]}
workers = [{lcores[1]}]
forward_mode = "router"
hugepages = "auto"
memory_mb = 512
idle_sleep_max_us = 100
stats_interval_ms = 0

[control]
socket = "{sock}"
metrics = "{metrics}"
{control_extra}
[router]
role = "{role}"
label_base = {label_base}
label_count = 64
transport_label = {label_base}
"""


def namespace_pids(netns: str) -> list[int]:
    p = run("ip", "netns", "pids", netns, check=False)
    return [int(x) for x in p.stdout.split()] if p.returncode == 0 else []


def remove_namespaces(names: list[str]) -> None:
    """Ends every process still inside `names` (by pid: SIGINT, then
    SIGKILL) and deletes the namespaces."""
    present = set(netns_list())
    names = [n for n in names if n in present]
    pids = [pid for n in names for pid in namespace_pids(n)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        if pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for n in names:
        run("ip", "netns", "del", n, check=False)


# --- sockets inside a namespace ---------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_OUTGOING = 4


def in_netns(netns: str, fn: Callable[[], object]):
    """Runs `fn` on a thread that has entered `netns` (setns(2) moves only
    the calling thread); sockets it opens stay in that namespace."""
    out: dict = {}

    def body():
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    e = ctypes.get_errno()
                    raise OSError(e, f"setns({netns}): {os.strerror(e)}")
            finally:
                os.close(fd)
            out["v"] = fn()
        except BaseException as e:  # handed to the caller
            out["e"] = e

    t = threading.Thread(target=body)
    t.start()
    t.join()
    if "e" in out:
        raise out["e"]
    return out["v"]


@dataclass
class Frame:
    at: float
    outgoing: bool
    data: bytes


class Capture:
    """Every frame seen on `iface` in `netns` from construction on, read by
    a thread (an AF_PACKET socket: no external sniffer, nothing to wait
    for: the socket captures once this returns). `promisc` for a bridge,
    whose own interface otherwise sees only frames addressed to it."""

    def __init__(self, netns: str, iface: str, promisc: bool = False):
        self.netns, self.iface = netns, iface

        def open_socket():
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
            s.bind((iface, ETH_P_ALL))
            if promisc:
                mreq = struct.pack("iHH8s", socket.if_nametoindex(iface), PACKET_MR_PROMISC, 0, b"")
                s.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            return s

        self._sock = in_netns(netns, open_socket)
        self._sock.settimeout(0.05)
        self._lock = threading.Lock()
        self._frames: list[Frame] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self._sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self._frames.append(Frame(time.monotonic(), addr[2] == PACKET_OUTGOING, data))

    def frames(self, marker: Optional[bytes] = None) -> list[Frame]:
        with self._lock:
            fs = list(self._frames)
        return [f for f in fs if marker is None or marker in f.data]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def labels_of(frame: bytes) -> list[int]:
    """The MPLS label stack of an Ethernet frame (empty if not MPLS)."""
    if len(frame) < 14 or struct.unpack_from("!H", frame, 12)[0] != 0x8847:
        return []
    out, off = [], 14
    while off + 4 <= len(frame):
        word = struct.unpack_from("!I", frame, off)[0]
        out.append(word >> 12)
        off += 4
        if word & 0x100:
            break
    return out


def ethertype(frame: bytes) -> int:
    return struct.unpack_from("!H", frame, 12)[0] if len(frame) >= 14 else 0


def ipv4_of(frame: bytes) -> Optional[tuple[str, str, int]]:
    """(source, destination, protocol) of the IPv4 packet in a plain or
    labelled Ethernet frame; None if there is none."""
    t = ethertype(frame)
    if t == 0x0800:
        off = 14
    elif t == 0x8847:
        off = 14 + 4 * len(labels_of(frame))
    else:
        return None
    if len(frame) < off + 20 or frame[off] >> 4 != 4:
        return None
    return socket.inet_ntoa(frame[off + 12 : off + 16]), socket.inet_ntoa(frame[off + 16 : off + 20]), frame[off + 9]


# --- the topology --------------------------------------------------------------


def spoke_config(
    sock: Path,
    hold_time: int,
    lcores: tuple[int, int],
    journal: Path,
    next_hops: Optional[list[tuple[str, str, str]]] = None,
    downstream: Optional[dict[str, list[tuple[str, str]]]] = None,
) -> str:
    """The spoke's configuration; `next_hops` are extra static next hops
    (name, port, MAC), `downstream` maps a service to static downstream
    routes (prefix, next hop) in the file (the spoke advertises them like
    its sessions' host routes)."""
    downstream = downstream or {}
    services = ""
    for name, rd, imp, exp, ports in (
        ("blue", SPOKE_RD["blue"], HUB_EXPORT["blue"], SPOKE_EXPORT["blue"], ("access0", "access1")),
        ("red", SPOKE_RD["red"], HUB_EXPORT["red"], SPOKE_EXPORT["red"], ("access2",)),
    ):
        access = ", ".join(f'{{ port = "{p}" }}' for p in ports)
        down = ""
        if downstream.get(name):
            items = ", ".join(f'{{ prefix = "{p}", next_hop = "{nh}" }}' for p, nh in downstream[name])
            down = f"downstream = [ {items} ]\n"
        services += f"""
[[service]]
name = "{name}"
gateway = "{GATEWAY}"
vpn_label = {SPOKE_VPN[name]}
address_server = "{KEA[name][1]}"
access = [ {access} ]
route_distinguisher = "{rd}"
import_targets = ["{imp}"]
export_targets = ["{exp}"]
{down}"""
    extra_nh = "".join(
        f"""
[[next_hop]]
name = "{n}"
port = "{port}"
mac = "{mac}"
"""
        for n, port, mac in (next_hops or [])
    )
    return (
        "# written by scripts/topology.py: the spoke\n"
        + router_header(sock, role="spoke", label_base=SPOKE_TRANSPORT, lcores=lcores, control_extra=f'session_journal = "{journal}"\n')
        + f"""
[[port]]
name = "access0"
device = "net_tap0,iface=sa0"
role = "access"

[[port]]
name = "access1"
device = "net_tap1,iface=sa1"
role = "access"

[[port]]
name = "access2"
device = "net_tap2,iface=sa2"
role = "access"

[[port]]
name = "core0"
device = "net_tap3,iface=sc0"
role = "core"
address = "{SPOKE_CORE}/24"

# The hub: its MAC by ARP; its transport label (BGP adds the VPN label).
[[next_hop]]
name = "hub"
port = "core0"
address = "{HUB_CORE}"
labels = [{HUB_TRANSPORT}]
{extra_nh}{services}
[bgp]
asn = 65000
router_id = "{SPOKE_CORE}"

[[bgp.neighbor]]
address = "{HUB_CORE}"
remote_asn = 65000
hold_time = {hold_time}
via = "hub"
"""
    )


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return json.dumps(str(v))


def hub_config(
    sock: Path,
    hold_time: int,
    lcores: tuple[int, int],
    policy: Optional[dict[str, list[dict]]] = None,
    routes: Optional[dict[str, list[tuple[str, str]]]] = None,
) -> str:
    """The hub's configuration; `policy` maps a service to its ordered
    target-policy rules (`[{"prefix": ..., "action": "deny"}, ...]`),
    `routes` to hub routes (prefix, next hop) beyond HUB_ROUTES."""
    policy = policy or {}
    routes = routes or {}

    def hub_routes(service: str) -> str:
        items = ", ".join(f'{{ prefix = "{p}", next_hop = "{nh}" }}' for p, nh in HUB_ROUTES[service] + list(routes.get(service, [])))
        return f"hub = [ {items} ]"

    def rules(service: str) -> str:
        if service not in policy:
            return ""
        items = ", ".join("{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in r.items()) + " }" for r in policy[service])
        return f"policy = [ {items} ]\n"

    return (
        "# written by scripts/topology.py: the hub\n"
        + router_header(sock, role="hub", label_base=HUB_TRANSPORT, lcores=lcores)
        + f"""
[[port]]
name = "core0"
device = "net_tap0,iface=hc0"
role = "core"
address = "{HUB_CORE}/24"

[[port]]
name = "uplink0"
device = "net_tap1,iface=hu0"
role = "access"
address = "{HUB_UPLINK}/24"

# The spoke: its MAC by ARP; its transport label (BGP adds the VPN label).
[[next_hop]]
name = "spoke"
port = "core0"
address = "{SPOKE_CORE}"
labels = [{SPOKE_TRANSPORT}]

[[next_hop]]
name = "uplink"
port = "uplink0"
address = "{UPLINK_HOST}"

[[service]]
name = "blue"
vpn_label = {HUB_VPN["blue"]}
access = [ {{ port = "uplink0" }} ]
# The clients' pool is a null route: a client's /32 (learnt from the
# spoke) wins while its session lasts, and after it traffic to the
# address is dropped here as no route, not sent to the uplink.
{hub_routes("blue")}
route_distinguisher = "{HUB_RD["blue"]}"
import_targets = ["{SPOKE_EXPORT["blue"]}"]
export_targets = ["{HUB_EXPORT["blue"]}"]
{rules("blue")}
[[service]]
name = "red"
vpn_label = {HUB_VPN["red"]}
# Red has no uplink: its default route (advertised to the spoke, so red
# clients send everything to the hub) discards what red's clients'
# routes do not cover.
{hub_routes("red")}
route_distinguisher = "{HUB_RD["red"]}"
import_targets = ["{SPOKE_EXPORT["red"]}"]
export_targets = ["{HUB_EXPORT["red"]}"]
{rules("red")}
[bgp]
asn = 65000
router_id = "{HUB_CORE}"

[[bgp.neighbor]]
address = "{SPOKE_CORE}"
remote_asn = 65000
hold_time = {hold_time}
passive = true
via = "spoke"
"""
    )


def kea_config(iface: str, leases: Path) -> str:
    return json.dumps(
        {
            "Dhcp4": {
                "interfaces-config": {"interfaces": [iface], "dhcp-socket-type": "udp"},
                "lease-database": {"type": "memfile", "persist": True, "name": str(leases), "lfc-interval": 0},
                "valid-lifetime": 3600,
                "subnet4": [{"id": 1, "subnet": CLIENT_NET, "pools": [{"pool": f"{POOL[0]} - {POOL[1]}"}]}],
                "loggers": [{"name": "kea-dhcp4", "output_options": [{"output": "stdout"}], "severity": "INFO"}],
            }
        },
        indent=1,
    )


STOPPED_RE = re.compile(r"^hdvrf: stopped in (\d+) ms: rx (\d+) tx (\d+) drops (\d+)")
MBUFS_RE = re.compile(r"^hdvrf: mbufs: (\d+)/(\d+) back in the pool$")


class Router:
    """One hdvrf of the topology: its namespace, configuration, socket and
    process, and `hdvrf ctl` on it."""

    def __init__(self, topo: "Topology", name: str, netns: str, cfg: Path, sock: Path):
        self.topo, self.name, self.netns, self.cfg, self.sock = topo, name, netns, cfg, sock
        self.proc: Optional[LineProc] = None
        self.exit: Optional[int] = None

    def start(self, taps: list[tuple[str, str]]) -> None:
        """`hdvrf run` in its namespace; once the management socket is up,
        each (tap, namespace) of `taps` is moved there and set up."""
        self.proc = self.topo.spawn(["ip", "netns", "exec", self.netns, self.topo.hdvrf_bin, "run", "--config", str(self.cfg)], self.name)
        self.proc.wait_line(lambda l: l.startswith("hdvrf: management socket"), 60, f"{self.name}'s socket line")
        for iface, ns in taps:
            wait_until(lambda: link_exists(iface, self.netns), 10, f"the tap {iface}")
            run("ip", "-n", self.netns, "link", "set", "dev", iface, "netns", ns)
            if iface in TAP_MACS:
                run("ip", "-n", ns, "link", "set", "dev", iface, "address", TAP_MACS[iface])
            run("ip", "-n", ns, "link", "set", "dev", iface, "up")

    def ctl_raw(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run(self.topo.hdvrf_bin, "ctl", "-s", str(self.sock), "-j", *args, check=check)

    def ctl(self, *args: str):
        """`hdvrf ctl -j ARGS`, the reply as JSON."""
        return json.loads(self.ctl_raw(*args).stdout)

    def outcomes(self) -> dict[str, int]:
        return self.ctl("show", "stats")["total"]["outcomes"]

    def outcome(self, name: str) -> int:
        return self.outcomes().get(name, 0)

    def drops(self) -> dict[str, int]:
        return self.ctl("show", "drops")["reasons"]

    def drop(self, reason: str) -> int:
        return self.drops().get(reason, 0)

    def routes(self, service: str, table: str) -> dict[str, str]:
        return {r["prefix"]: r["next_hop"] for r in self.ctl("show", "routes", service, table)}

    def neighbor(self) -> dict:
        return self.ctl("show", "bgp", "neighbors")[0]

    def mbufs(self) -> int:
        """Mbufs out of the pools now (rx rings, packets in flight; the
        workers' pool caches count as free)."""
        return self.ctl("show", "stats")["mbufs_in_use"]

    @property
    def pid(self) -> Optional[int]:
        """The hdvrf process's pid (`ip netns exec` execs it in place)."""
        return self.proc.proc.pid if self.proc is not None and self.proc.proc.poll() is None else None

    def rss_kb(self) -> Optional[int]:
        """The process's resident set (VmRSS, kB); None once it is gone.
        Hugepage-backed memory (the mbuf pools when hugepages are in use)
        is not part of it."""
        pid = self.pid
        if pid is None:
            return None
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None

    def established(self) -> bool:
        return self.neighbor()["state"] == "Established"

    def stop(self, timeout: float = 30) -> tuple[int, bool]:
        """SIGINT; returns (exit status, every mbuf back in its pool)."""
        if self.proc is None:
            return 0, True
        self.exit = self.proc.stop(signal.SIGINT, timeout=timeout)
        mbufs = [m for m in map(MBUFS_RE.match, self.proc.lines()) if m]
        return self.exit, len(mbufs) == 1 and mbufs[0].group(1) == mbufs[0].group(2)


@dataclass
class Client:
    name: str
    service: str
    port: str
    netns: str
    iface: str
    mac: str = ""
    address: Optional[str] = None
    server: Optional[str] = None


class Topology:
    """Builds (up) and removes (down) the whole topology; a context
    manager. Namespace names start with `prefix` (the tests put their pid
    in it). Files go to a directory of its own under `workdir`, removed by
    down(). `log` gets one line per step."""

    def __init__(
        self,
        prefix: str,
        workdir: Optional[Path | str] = None,
        hdvrf_bin: Optional[str] = None,
        python: str = sys.executable,
        hold_time: int = 6,
        lcores: tuple[int, int] = (0, 1),
        log: Callable[[str], None] = lambda s: None,
    ):
        self.prefix = prefix
        self.hdvrf_bin = hdvrf_bin or os.environ.get("HDVRF_BIN", str(ROOT / "target" / "release" / "hdvrf"))
        self.python = python
        self.hold_time = hold_time
        self.lcores = lcores
        self.log = log
        self.ns = {k: f"{prefix}{k}" for k in ("s", "h", "kb", "kr", "a", "b", "c", "u", "core")}
        self._workdir = Path(workdir) if workdir else None
        self.dir: Optional[Path] = None
        self.procs: list[LineProc] = []
        self.made: list[str] = []
        self.spoke: Optional[Router] = None
        self.hub: Optional[Router] = None
        self.kea: dict[str, LineProc] = {}
        self.clients = {n: Client(n, svc, port, self.ns[n], tap) for n, (svc, port, tap) in CLIENTS.items()}
        self.hub_policy: dict[str, list[dict]] = {}
        self.hub_routes: dict[str, list[tuple[str, str]]] = {}
        # Static next hops (name, port, MAC) and downstream routes
        # (service: [(prefix, next hop)]) in the spoke's file.
        self.spoke_next_hops: list[tuple[str, str, str]] = []
        self.spoke_downstream: dict[str, list[tuple[str, str]]] = {}
        self.released_at: Optional[float] = None

    # -- lifecycle --

    def __enter__(self):
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc):
        self.down()

    def spawn(self, cmd: list[str], name: str) -> LineProc:
        p = LineProc(cmd, name)
        self.procs.append(p)
        return p

    def up(self, clients: bool = True) -> None:
        for tool in ("kea-dhcp4", "ip"):
            if not shutil.which(tool):
                raise RuntimeError(f"{tool} not found: scripts/setup installs it")
        if not os.access(self.hdvrf_bin, os.X_OK):
            raise RuntimeError(f"hdvrf binary {self.hdvrf_bin} not found: cargo build --release, or set HDVRF_BIN")
        stale = [n for n in netns_list() if n.startswith(self.prefix)]
        if stale:
            self.log(f"removing namespaces left by an earlier run: {' '.join(stale)}")
            remove_namespaces(stale)
        self.dir = Path(tempfile.mkdtemp(prefix="hdvrf-topology-", dir=self._workdir))
        ns = self.ns
        self.log("namespaces: " + " ".join(ns.values()))
        for n in ns.values():
            self.made.append(n)
            make_netns(n)
        # The core link: a bridge both routers' core taps join.
        run("ip", "-n", ns["core"], "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0")
        run("ip", "-n", ns["core"], "link", "set", "dev", "br0", "up")
        # The address servers, one per service, each on a veth of its own.
        for svc, key in (("blue", "kb"), ("red", "kr")):
            local, server = KEA[svc]
            veth((f"k{svc[0]}", ns["s"], f"{local}/24"), ("kea", ns[key], f"{server}/24"))
            run("ip", "-n", ns[key], "route", "add", CLIENT_NET, "via", local)
            d = self.dir / f"kea-{svc}"
            d.mkdir()
            (d / "kea.json").write_text(kea_config("kea", d / "leases.csv"))
            self.start_kea(svc)
        # The hub first (it waits for the spoke's connection), then the spoke.
        self.hub = Router(self, "hub", ns["h"], self.dir / "hub.toml", self.dir / "hub.sock")
        self.write_hub_config()
        self.log(f"hub: hdvrf in {ns['h']} ({self.hub.cfg})")
        self.start_hub()
        self.spoke = Router(self, "spoke", ns["s"], self.dir / "spoke.toml", self.dir / "spoke.sock")
        self.write_spoke_config()
        self.log(f"spoke: hdvrf in {ns['s']} ({self.spoke.cfg})")
        self.start_spoke()
        self.log("waiting for BGP between the spoke and the hub")
        self.wait_bgp(60)
        if clients:
            self.lease_all()

    def start_kea(self, svc: str) -> None:
        """kea-dhcp4 for service `svc` in its namespace, on the
        configuration and lease file up() wrote (a restarted Kea reads
        back the leases it wrote before); returns once it has started."""
        key = {"blue": "kb", "red": "kr"}[svc]
        netns, d = self.ns[key], self.dir / f"kea-{svc}"
        wait_until(
            lambda: json.loads(run("ip", "-j", "-n", netns, "link", "show", "dev", "kea").stdout)[0]["operstate"] == "UP",
            10,
            f"kea's veth up in {netns}",
        )
        self.log(f"kea-dhcp4 for {svc} at {KEA[svc][1]}")
        k = self.spawn(["ip", "netns", "exec", netns, "env", f"KEA_PIDFILE_DIR={d}", f"KEA_LOCKFILE_DIR={d}", "kea-dhcp4", "-c", str(d / "kea.json")], f"kea-{svc}")
        self.kea[svc] = k
        k.wait_line(lambda l: "DHCP4_STARTED" in l, 20, f"kea-{svc}'s DHCP4_STARTED line")

    def kill_kea(self, svc: str) -> int:
        """SIGKILL to service `svc`'s Kea (no chance to write anything
        more); returns its exit status once it is gone."""
        k = self.kea[svc]
        k.proc.kill()
        return k.wait(timeout=30)

    def kea_leases(self, svc: str) -> set[tuple[str, str]]:
        """Service `svc`'s active leases as Kea's memfile holds them:
        (address, MAC) from the last row written for each address (the
        file is a log: a renewal appends a row, a release appends one with
        a valid lifetime of 0), kept if that lifetime is not 0, not past
        its end, and its state is default (0)."""
        path = self.dir / f"kea-{svc}" / "leases.csv"
        last: dict[str, dict] = {}
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                try:
                    row["valid_lifetime"], row["expire"], row["state"] = int(row["valid_lifetime"]), int(row["expire"]), int(row["state"])
                except (TypeError, ValueError):
                    continue  # a row Kea is writing right now
                last[row["address"]] = row
        now = time.time()
        return {(a, r["hwaddr"].lower()) for a, r in last.items() if r["valid_lifetime"] > 0 and r["expire"] > now and r["state"] == 0}

    def sessions(self, svc: Optional[str] = None) -> list[dict]:
        """The spoke's sessions (`show sessions`), of one service or all."""
        return [s for s in self.spoke.ctl("show", "sessions") if svc is None or s["service"] == svc]

    def mismatches(self) -> list[str]:
        """What keeps the topology from being converged; empty when it is:
        both BGP sessions Established; per service, the spoke's sessions
        equal to its Kea's active leases as (address, MAC) sets, and its
        downstream table one host route per session to the client's MAC
        plus the downstream routes of its file (set_spoke_downstream)
        but for those on a session's address (the session's route wins);
        the spoke advertising exactly one route per session and per such
        route (RD, VPN label, export target, its next hop) and the hub's
        RIB-in equal to that; the hub's table holding those routes toward
        the spoke besides its own, nothing else; the hub advertising its
        hub routes (those of the file) and the spoke's RIB-in equal to
        that; the spoke's upstream tables equal to what it imports from
        the hub's advertisements."""
        out: list[str] = []
        s, h = self.spoke, self.hub
        if not s.established() or not h.established():
            out.append(f"BGP: spoke {s.neighbor()['state']}, hub {h.neighbor()['state']}")
        sessions = self.sessions()
        per = {svc: [(x["address"], x["mac"]) for x in sessions if x["service"] == svc] for svc in SERVICES}
        for svc in SERVICES:
            have = set(per[svc])
            if len(have) != len(per[svc]):
                out.append(f"{svc}: duplicate sessions {sorted(per[svc])}")
            leases = self.kea_leases(svc)
            if have != leases:
                out.append(f"{svc}: spoke sessions {sorted(have)} != Kea's active leases {sorted(leases)}")
            # A live session's host route is the session's: a file route
            # for the same /32 is left out of the table while it lives.
            want = dict(self.spoke_downstream.get(svc, []))
            want.update({f"{a}/32": f"~{m}" for a, m in have})
            got = s.routes(svc, "downstream")
            if got != want:
                out.append(f"{svc}: spoke downstream {got} != its sessions' host routes and the file's {want}")
        view = lambda rows: sorted((r["prefix"], r["rd"], r["label"], tuple(sorted(r["route_targets"])), r["next_hop"]) for r in rows)  # noqa: E731
        spoke_out = view(s.ctl("show", "bgp", "rib", "out"))
        # One advertisement per prefix: a session's and the file's route
        # for one /32 are one route.
        own = {svc: {f"{a}/32" for a, _ in set(per[svc])} | {p for p, _ in self.spoke_downstream.get(svc, [])} for svc in SERVICES}
        want_out = sorted((p, SPOKE_RD[svc], SPOKE_VPN[svc], (SPOKE_EXPORT[svc],), SPOKE_CORE) for svc in SERVICES for p in own[svc])
        if spoke_out != want_out:
            out.append(f"spoke RIB-out {spoke_out} != one route per session and per downstream route of the file {want_out}")
        hub_in = view(h.ctl("show", "bgp", "rib", "in"))
        if hub_in != spoke_out:
            out.append(f"hub RIB-in {hub_in} != spoke RIB-out {spoke_out}")
        hub_out_rows = h.ctl("show", "bgp", "rib", "out")
        hub_out = view(hub_out_rows)
        want_hub_out = sorted(
            (p, HUB_RD[svc], HUB_VPN[svc], (HUB_EXPORT[svc],), HUB_CORE)
            for svc in SERVICES
            for p, _ in HUB_ROUTES[svc] + list(self.hub_routes.get(svc, []))
        )
        if hub_out != want_hub_out:
            out.append(f"hub RIB-out {hub_out} != its hub routes {want_hub_out}")
        spoke_in = view(s.ctl("show", "bgp", "rib", "in"))
        if spoke_in != hub_out:
            out.append(f"spoke RIB-in {spoke_in} != hub RIB-out {hub_out}")
        for svc in SERVICES:
            want = {p: f"~bgp/spoke/{SPOKE_VPN[svc]}" for p in own[svc]}
            want.update({p: nh for p, nh in HUB_ROUTES[svc] + list(self.hub_routes.get(svc, []))})
            got = h.routes(svc, "hub")
            if got != want:
                out.append(f"hub {svc} table {got} != its routes and the sessions' {want}")
            want = {r["prefix"]: f"~bgp/hub/{r['label']}" for r in hub_out_rows if HUB_EXPORT[svc] in r["route_targets"]}
            got = s.routes(svc, "upstream")
            if got != want:
                out.append(f"spoke {svc} upstream {got} != what it imports from the hub {want}")
        return out

    def dhcp(self, name: str, mac: str, *action: str, timeout: Optional[float] = None) -> subprocess.CompletedProcess:
        """tests/e2e/dhcp_client.py ACTION in client `name`'s namespace
        and on its interface, as a client with MAC `mac` (not necessarily
        the interface's: more clients behind one access port); `timeout`
        is the client's wait for each answer. Not checked."""
        c = self.clients[name]
        env = ["env", f"DHCP_TIMEOUT={timeout}"] if timeout is not None else []
        return run("ip", "netns", "exec", c.netns, *env, self.python, str(E2E / "dhcp_client.py"), c.iface, mac, "0", *action, check=False, timeout=60)

    def start_hub(self) -> None:
        """The hub's hdvrf, its taps moved to the core bridge and to U,
        which gets its address and its route to the clients on it."""
        ns = self.ns
        self.hub.start([("hc0", ns["core"]), ("hu0", ns["u"])])
        run("ip", "-n", ns["core"], "link", "set", "dev", "hc0", "master", "br0")
        run("ip", "-n", ns["u"], "addr", "add", f"{UPLINK_HOST}/24", "dev", "hu0")
        run("ip", "-n", ns["u"], "route", "add", CLIENT_NET, "via", HUB_UPLINK)

    def kill_and_restart_hub(self) -> int:
        """SIGKILL to the hub's hdvrf, then a new one on the same
        configuration (it keeps no state: BGP gives it back). Returns the
        killed process's exit status."""
        self.hub.proc.proc.kill()
        rc = self.hub.proc.proc.wait(timeout=30)
        wait_until(lambda: not link_exists("hu0", self.ns["u"]), 10, "hu0 gone with the killed hub")
        self.start_hub()
        return rc

    def start_spoke(self) -> None:
        """The spoke's hdvrf, its taps moved to the clients and the core
        bridge."""
        ns = self.ns
        self.spoke.start([("sa0", ns["a"]), ("sa1", ns["b"]), ("sa2", ns["c"]), ("sc0", ns["core"])])
        run("ip", "-n", ns["core"], "link", "set", "dev", "sc0", "master", "br0")

    def kill_and_restart_spoke(self) -> int:
        """SIGKILL to the spoke's hdvrf (its taps, and with them the
        clients' interfaces, vanish), then a new one on the same
        configuration and journal; the clients put their leased addresses
        back on the new interfaces, as a client whose link bounced does.
        Returns the killed process's exit status."""
        self.spoke.proc.proc.kill()
        rc = self.spoke.proc.proc.wait(timeout=30)
        for c in self.clients.values():
            wait_until(lambda: not link_exists(c.iface, c.netns), 10, f"{c.iface} gone with the killed spoke")
        self.start_spoke()
        for c in self.clients.values():
            if c.address:
                self.configure(c, c.address, c.server)
        return rc

    def wait_bgp(self, timeout: float) -> None:
        """Both ends Established and the hub's routes (its 0/0, blue's
        pool, any set_hub_routes added) in each spoke service's upstream
        table."""
        wait_until(lambda: self.spoke.established() and self.hub.established(), timeout, "BGP Established at the spoke and the hub")
        for svc in SERVICES:
            want = {p: f"~bgp/hub/{HUB_VPN[svc]}" for p, _ in HUB_ROUTES[svc] + list(self.hub_routes.get(svc, []))}
            wait_until(lambda: self.spoke.routes(svc, "upstream") == want, timeout, f"the hub's routes in the spoke's {svc} upstream table")

    def lease_all(self) -> None:
        """Every client leases an address and configures it."""
        self.lease(*self.clients)

    def lease(self, *names: str) -> None:
        """Clients `names` lease an address (in parallel: each DHCP client
        is a Python with scapy to start) and configure it."""
        for n in names:
            c = self.clients[n]
            c.mac = link_mac(c.iface, c.netns)
        ps = {n: self.spawn(self.dhcp_cmd(self.clients[n], "lease"), f"dhcp-{n}") for n in names}
        for n, p in ps.items():
            rc = p.wait(timeout=60)
            lease = [l for l in p.lines() if l.startswith("lease ")]
            if rc != 0 or not lease:
                raise AssertionError(f"client {n} got no lease\n{p.describe()}")
            _, addr, server, secs = lease[0].split()
            self.configure(self.clients[n], addr, server)
            self.log(f"client {n.upper()} ({self.clients[n].service}, {self.clients[n].mac}): {addr} from {server}, {secs} s")

    def dhcp_cmd(self, c: Client, *action: str) -> list[str]:
        return ["ip", "netns", "exec", c.netns, self.python, str(E2E / "dhcp_client.py"), c.iface, c.mac, "0", *action]

    def configure(self, c: Client, addr: str, server: str) -> None:
        """The leased address as a /32, the gateway on-link, the default
        route via it: every packet, even to a neighbour in the pool, goes
        to the router."""
        c.address, c.server = addr, server
        run("ip", "-n", c.netns, "addr", "add", f"{addr}/32", "dev", c.iface)
        run("ip", "-n", c.netns, "route", "add", GATEWAY, "dev", c.iface, "scope", "link")
        run("ip", "-n", c.netns, "route", "add", "default", "via", GATEWAY, "dev", c.iface)

    def release(self, name: str) -> None:
        """Client `name` releases its lease and drops its address."""
        c = self.clients[name]
        p = run(*self.dhcp_cmd(c, "release", c.address, c.server), timeout=60)
        assert "released" in p.stdout, p.stdout + p.stderr
        run("ip", "-n", c.netns, "route", "flush", "dev", c.iface, check=False)
        run("ip", "-n", c.netns, "addr", "flush", "dev", c.iface, check=False)
        c.address = None
        self.released_at = time.monotonic()

    def write_hub_config(self) -> None:
        self.hub.cfg.write_text(hub_config(self.hub.sock, self.hold_time, self.lcores, self.hub_policy, self.hub_routes))

    def set_hub_routes(self, service: str, routes: Optional[list[tuple[str, str]]], reload: bool = True) -> Optional[subprocess.CompletedProcess]:
        """Rewrites the hub's configuration with `routes` (prefix, next
        hop) as `service`'s hub routes beyond HUB_ROUTES (None: none) and,
        with `reload`, runs `hdvrf ctl reload`; returns its result (not
        checked). The hub advertises its hub routes: the spoke learns them."""
        if routes:
            self.hub_routes[service] = list(routes)
        else:
            self.hub_routes.pop(service, None)
        self.write_hub_config()
        return self.hub.ctl_raw("reload", check=False) if reload else None

    def write_spoke_config(self) -> None:
        self.spoke.cfg.write_text(
            spoke_config(self.spoke.sock, self.hold_time, self.lcores, self.dir / "sessions.journal", self.spoke_next_hops, self.spoke_downstream)
        )

    def set_spoke_downstream(
        self,
        service: str,
        routes: Optional[list[tuple[str, str]]],
        next_hops: Optional[list[tuple[str, str, str]]] = None,
        reload: bool = True,
    ) -> Optional[subprocess.CompletedProcess]:
        """Rewrites the spoke's configuration with `routes` (prefix, next
        hop) as `service`'s static downstream routes (None: none) and
        `next_hops` (name, port, MAC) as its extra static next hops (None:
        as they were) and, with `reload`, runs `hdvrf ctl reload`; returns
        its result (not checked). The spoke advertises its downstream
        routes: the hub learns them."""
        if routes:
            self.spoke_downstream[service] = list(routes)
        else:
            self.spoke_downstream.pop(service, None)
        if next_hops is not None:
            self.spoke_next_hops = list(next_hops)
        self.write_spoke_config()
        return self.spoke.ctl_raw("reload", check=False) if reload else None

    def set_hub_policy(self, service: str, rules: Optional[list[dict]], reload: bool = True) -> Optional[subprocess.CompletedProcess]:
        """Rewrites the hub's configuration with `rules` as `service`'s
        target policy (None: none) and, with `reload`, runs `hdvrf ctl
        reload`; returns its result (not checked)."""
        if rules is None:
            self.hub_policy.pop(service, None)
        else:
            self.hub_policy[service] = rules
        self.write_hub_config()
        return self.hub.ctl_raw("reload", check=False) if reload else None

    def stop_routers(self) -> dict[str, tuple[int, bool]]:
        """Stops the spoke, then the hub (SIGINT); each one's exit status
        and whether every mbuf came back."""
        out = {}
        for r in (self.spoke, self.hub):
            if r is not None and r.proc is not None and r.exit is None:
                try:
                    out[r.name] = r.stop()
                except subprocess.TimeoutExpired:
                    r.proc.kill()
                    out[r.name] = (-1, False)
        return out

    def down(self) -> None:
        """Removes everything up() made, also after a partial up()."""
        try:
            self.stop_routers()
        except Exception:
            pass
        for p in reversed(self.procs):
            try:
                p.kill()
            except Exception:
                pass
        remove_namespaces(self.made)
        self.made = []
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    # -- traffic --

    def exec(self, netns: str, *argv: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
        """Runs a command inside a namespace of the topology (a key of
        `ns`, or a namespace name)."""
        return run("ip", "netns", "exec", self.ns.get(netns, netns), *argv, timeout=timeout, check=check)

    def ping(self, src: str, dst: str, count: int = 5, interval: float = 0.2, marker: Optional[bytes] = None, wait: float = 3) -> tuple[int, int]:
        """`count` pings from client `src` to `dst`; (sent, received).
        `marker` (up to 16 bytes) fills the payload, for captures. `wait`:
        seconds for a reply (ping ends at once when all came; only lost
        ones cost this time)."""
        argv = ["ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", str(wait)]
        if marker:
            argv += ["-p", marker.hex()]
        p = self.exec(src, *argv, dst, check=False, timeout=count * interval + wait + 30)
        m = re.search(r"(\d+) packets transmitted, (\d+) received", p.stdout)
        if not m:
            raise AssertionError(f"ping {dst} from {src}: {p.stdout} {p.stderr}")
        return int(m.group(1)), int(m.group(2))

    def capture_core(self) -> Capture:
        """Every frame crossing the core bridge."""
        return Capture(self.ns["core"], "br0", promisc=True)

    def capture_client(self, name: str) -> Capture:
        c = self.clients[name]
        return Capture(c.netns, c.iface)

    def block_hub_bgp(self) -> None:
        """Drops BGP (TCP 179) both ways on the hub's host side (nftables
        in its namespace): the hub's sessions die, its data plane runs on."""
        rules = """table inet hdvrf_topology {
  chain in { type filter hook input priority 0; tcp dport 179 counter drop; tcp sport 179 counter drop; }
  chain out { type filter hook output priority 0; tcp dport 179 counter drop; tcp sport 179 counter drop; }
}
"""
        p = subprocess.run(["ip", "netns", "exec", self.ns["h"], "nft", "-f", "-"], input=rules, capture_output=True, text=True, timeout=30, start_new_session=NEW_SESSION)
        if p.returncode != 0:
            raise AssertionError(f"nft: {p.stderr.strip()}")

    def unblock_hub_bgp(self) -> None:
        self.exec("h", "nft", "delete", "table", "inet", "hdvrf_topology")

    def describe(self) -> str:
        """Every process's recent output, for failure messages."""
        return "\n".join(p.describe() for p in self.procs if p.name in ("spoke", "hub", "kea-blue", "kea-red"))


# --- the demo ---------------------------------------------------------------


def cpus_allowed() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def demo(args) -> int:
    """Builds the topology, shows A -> B and A -> the internet crossing
    spoke and hub, live per-second stats until Ctrl-C or --seconds."""
    say = lambda s: print(f"demo: {s}", flush=True)  # noqa: E731
    try:
        import scapy  # noqa: F401  (the DHCP client needs it)
    except ImportError:
        say(f"error: {sys.executable} has no scapy; run scripts/setup (it makes .venv) or use .venv/bin/python")
        return 1
    cpus = cpus_allowed()
    if len(cpus) < 2:
        say(f"error: hdvrf needs two CPUs (main lcore and one worker); this process may use {cpus}")
        return 1
    global NEW_SESSION
    NEW_SESSION = True
    stop = threading.Event()

    def interrupt(*_):
        raise KeyboardInterrupt

    # While the topology comes up: stop at once (and clean up).
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    # The demo's own directory: what a killed run left there goes first.
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for d in workdir.glob("hdvrf-topology-*"):
        shutil.rmtree(d, ignore_errors=True)
    topo = Topology(args.prefix, workdir, args.hdvrf_bin, lcores=(cpus[0], cpus[1]), log=say)
    status = 1
    try:
        say(f"hdvrf: {topo.hdvrf_bin}")
        topo.up()
        # From now on: leave the stats loop and stop in order.
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        a, b = topo.clients["a"], topo.clients["b"]
        say(f"spoke upstream (from BGP): blue {topo.spoke.routes('blue', 'upstream')}, red {topo.spoke.routes('red', 'upstream')}")
        say(f"hub table blue (return path + uplink): {topo.hub.routes('blue', 'hub')}")
        pings = {
            "A->B": topo.spawn(["ip", "netns", "exec", a.netns, "ping", "-n", "-i", "0.2", b.address], "ping-a-b"),
            "A->internet": topo.spawn(["ip", "netns", "exec", a.netns, "ping", "-n", "-i", "0.2", UPLINK_HOST], "ping-a-u"),
        }
        say(f"ping A {a.address} -> B {b.address} (client -> spoke -> hub -> spoke -> client)")
        say(f"ping A {a.address} -> {UPLINK_HOST} (client -> spoke -> hub -> uplink and back)")
        say("per second: packets by outcome at the spoke and the hub" + (f", for {args.seconds} s" if args.seconds else "; Ctrl-C stops"))
        keys_s = ("fwd_upstream", "fwd_downstream")
        keys_h = ("fwd_hub_to_spoke", "fwd_hub_to_uplink")
        prev_s, prev_h = topo.spoke.outcomes(), topo.hub.outcomes()
        replies = lambda p: sum(1 for l in p.lines() if " bytes from " in l)  # noqa: E731
        start = time.monotonic()
        tick = 0
        while not stop.is_set():
            tick += 1
            if stop.wait(timeout=max(0.0, start + tick - time.monotonic())):
                break
            if args.seconds and time.monotonic() - start >= args.seconds:
                stop.set()
            if topo.spoke.proc.proc.poll() is not None or topo.hub.proc.proc.poll() is not None:
                say("a router exited by itself")
                break
            now_s, now_h = topo.spoke.outcomes(), topo.hub.outcomes()
            d = lambda now, prev, k: now.get(k, 0) - prev.get(k, 0)  # noqa: E731
            dropped = lambda now, prev: sum(v - prev.get(k, 0) for k, v in now.items() if k.startswith("drop_"))  # noqa: E731
            print(
                f"{tick:4d}s  spoke: upstream {d(now_s, prev_s, keys_s[0]):4d} downstream {d(now_s, prev_s, keys_s[1]):4d} drops {dropped(now_s, prev_s):3d}"
                f"  | hub: to spoke {d(now_h, prev_h, keys_h[0]):4d} to uplink {d(now_h, prev_h, keys_h[1]):4d} drops {dropped(now_h, prev_h):3d}"
                f"  | replies A->B {replies(pings['A->B']):4d} A->internet {replies(pings['A->internet']):4d}",
                flush=True,
            )
            prev_s, prev_h = now_s, now_h
        print(flush=True)
        ok = True
        for name, p in pings.items():
            p.stop(signal.SIGINT, timeout=10)
            summary = [l for l in p.lines() if "packets transmitted" in l or l.startswith("rtt")]
            say(f"ping {name}: " + "; ".join(summary))
            if replies(p) == 0:
                say(f"no replies for {name}")
                ok = False
        s_tot, h_tot = topo.spoke.outcomes(), topo.hub.outcomes()
        say("spoke totals: " + ", ".join(f"{k} {v}" for k, v in sorted(s_tot.items()) if v))
        say("hub totals:   " + ", ".join(f"{k} {v}" for k, v in sorted(h_tot.items()) if v))
        for name, (rc, mbufs) in topo.stop_routers().items():
            r = topo.spoke if name == "spoke" else topo.hub
            for line in r.proc.lines():
                if STOPPED_RE.match(line) or MBUFS_RE.match(line):
                    say(f"{name}: {line}")
            if rc != 0 or not mbufs:
                say(f"{name} did not stop cleanly: exit {rc}, every mbuf back: {mbufs}")
                for line in r.proc.err[-10:]:
                    say(f"  {line}")
                ok = False
        status = 0 if ok else 1
    except KeyboardInterrupt:
        say("interrupted")
    except (AssertionError, RuntimeError, subprocess.TimeoutExpired) as e:
        say(f"error: {e}")
        if topo.procs:
            print(topo.describe(), file=sys.stderr)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        topo.down()
        say("topology removed")
    return status


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="build the topology, ping across it, live stats until Ctrl-C")
    d.add_argument("--seconds", type=float, default=0, help="stop after this long (default: until Ctrl-C)")
    d.add_argument("--prefix", default="hdvrf-demo-", help="namespace name prefix")
    d.add_argument("--workdir", default="/run/hdvrf-demo", help="the demo's directory: configurations, sockets, Kea's files (default /run/hdvrf-demo)")
    d.add_argument("--hdvrf-bin", default=None, help="the hdvrf binary (default: $HDVRF_BIN or target/release/hdvrf)")
    c = sub.add_parser("clean", help="remove a topology left by a killed run")
    c.add_argument("--prefix", default="hdvrf-demo-")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("topology: run as root (network namespaces, tap interfaces, DPDK)", file=sys.stderr)
        return 1
    if args.cmd == "clean":
        remove_namespaces([n for n in netns_list() if n.startswith(args.prefix)])
        return 0
    return demo(args)


if __name__ == "__main__":
    sys.exit(main())
