"""Shared helpers for hdvrf's end-to-end tests.

The topology every test here builds:

    netns A                    init netns                  netns B
    [tap A] <--fd--> hdvrf (net_tap0 <-> net_tap1) <--fd--> [tap B]

hdvrf creates both taps in the init namespace; the fixture then moves each
into a namespace of its own (data keeps flowing through the tap fds; the tap
driver's link/MTU calls fail from then on, so nothing is set after the move
but IPv6 off and link up from inside the namespace). Senders and sniffers run
as subprocesses under `ip netns exec`, with the Python running pytest (the
venv with scapy).

Nothing here sleeps in place of synchronisation: every wait polls a
condition against a deadline and fails with what it was waiting for.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The generic helpers live with the topology the demo builds too.
sys.path.insert(0, str(ROOT / "scripts"))
from topology import (  # noqa: E402,F401  (re-exported to the tests)
    LineProc,
    delete_netns,
    link_exists,
    link_mac,
    make_netns,
    netns_list,
    pid_alive,
    remove_namespaces,
    router_header,
    run,
    veth,
    wait_until,
)

HERE = Path(__file__).resolve().parent
HDVRF_BIN = os.environ.get("HDVRF_BIN", str(ROOT / "target" / "release" / "hdvrf"))
PYTHON = sys.executable

# Namespaces are named hdvrf-e2e-<pid>-<n><a|b>, so a later run can tell
# which ones a killed run left behind.
NS_PREFIX = "hdvrf-e2e-"
_seq = itertools.count()


def delete_stale_netns() -> None:
    """Deletes namespaces left by an earlier run that was killed before its
    finalizers ran (its pid is gone), ending the processes it left in them
    (a router, Kea)."""
    stale = []
    for ns in netns_list():
        m = re.match(re.escape(NS_PREFIX) + r"(\d+)-", ns)
        if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            stale.append(ns)
    remove_namespaces(stale)


def start_router(procs: list, netns: str, cfg: Path, taps=(), name: str = "hdvrf") -> "LineProc":
    """`hdvrf run` in `netns`, added to `procs`; once its management socket
    is up, each (tap, namespace) of `taps` is moved there and set up."""
    p = LineProc(["ip", "netns", "exec", netns, HDVRF_BIN, "run", "--config", str(cfg)], name)
    procs.append(p)
    p.wait_line(lambda l: l.startswith("hdvrf: management socket"), 60, f"{name}'s socket line")
    for iface, ns in taps:
        wait_until(lambda: link_exists(iface, netns), 10, f"the tap {iface}")
        run("ip", "-n", netns, "link", "set", "dev", iface, "netns", ns)
        run("ip", "-n", ns, "link", "set", "dev", iface, "up")
    return p


def start_kea(procs: list, netns: str, iface: str, cfg: Path, tmp: Path) -> "LineProc":
    """kea-dhcp4 in `netns` with its pid and lock files in `tmp`, once
    `iface` is up (Kea opens no socket on an interface that is not),
    added to `procs`; returns when it says DHCP4_STARTED."""
    wait_until(
        lambda: json.loads(run("ip", "-j", "-n", netns, "link", "show", "dev", iface).stdout)[0]["operstate"] == "UP",
        10,
        f"{iface} up for Kea",
    )
    p = LineProc(["ip", "netns", "exec", netns, "env", f"KEA_PIDFILE_DIR={tmp}", f"KEA_LOCKFILE_DIR={tmp}", "kea-dhcp4", "-c", str(cfg)], "kea")
    procs.append(p)
    p.wait_line(lambda l: "DHCP4_STARTED" in l, 20, "Kea's DHCP4_STARTED line")
    return p


def start_sniffer(procs: list, netns: str, iface: str, marker: bytes, count: int, timeout: float) -> "LineProc":
    """Starts a scapy sniffer on `iface` in `netns` for frames holding
    `marker`, waits until it captures, and adds it to `procs` (which the
    fixture ends)."""
    p = LineProc(
        ["ip", "netns", "exec", netns, PYTHON, str(HERE / "scapy_sniff.py"), iface, marker.hex(), str(count), str(timeout)],
        "sniffer",
    )
    procs.append(p)
    p.wait_line(lambda l: l == "ready", 30, "the sniffer's 'ready' line")
    return p


def send_frames(procs: list, netns: str, iface: str, frames: list[bytes], tmp: Path) -> None:
    """Sends `frames` out of `iface` in `netns` and waits until sent."""
    tmp.write_text("".join(f.hex() + "\n" for f in frames))
    p = LineProc(["ip", "netns", "exec", netns, PYTHON, str(HERE / "scapy_send.py"), iface, str(tmp)], "sender")
    procs.append(p)
    assert p.wait(timeout=60) == 0, p.describe()
    assert f"sent {len(frames)}" in p.lines(), p.describe()


def into_netns(iface: str, netns: str) -> None:
    """Moves `iface` into a new namespace `netns`, IPv6 off, link up."""
    run("ip", "netns", "add", netns)
    # Loopback stays down; IPv6 off for the namespace's defaults too, so no
    # router solicitations or DAD probes cross hdvrf.
    for key in ("all", "default"):
        run("ip", "netns", "exec", netns, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1")
    run("ip", "link", "set", "dev", iface, "netns", netns)
    run("ip", "netns", "exec", netns, "sysctl", "-qw", f"net.ipv6.conf.{iface}.disable_ipv6=1")
    run("ip", "-n", netns, "link", "set", "dev", iface, "up")


def hdvrf_config(path: Path, if_a: str, if_b: str, mode: str, stats_ms: int = 200) -> Path:
    path.write_text(
        f"""# written by tests/e2e/conftest.py
[dataplane]
main_lcore = 0
workers = [1]
forward_mode = "{mode}"
hugepages = "auto"
memory_mb = 512
idle_sleep_max_us = 100
stats_interval_ms = {stats_ms}
eal_args = []

[[port]]
name = "a"
device = "net_tap0,iface={if_a}"
peer = "b"

[[port]]
name = "b"
device = "net_tap1,iface={if_b}"
peer = "a"
"""
    )
    return path


STOPPED_RE = re.compile(r"^hdvrf: stopped in (\d+) ms: rx (\d+) tx (\d+) drops (\d+)")
MBUFS_RE = re.compile(r"^hdvrf: mbufs: (\d+)/(\d+) back in the pool$")
STATS_TOTAL_RE = re.compile(r"total rx (\d+) tx (\d+) drop (\d+)")


@dataclass
class TapTopology:
    hdvrf: LineProc
    config: Path
    ns_a: str
    ns_b: str
    if_a: str
    if_b: str
    mac_a: str
    mac_b: str
    procs: list[LineProc] = field(default_factory=list)

    def in_ns(self, netns: str, argv: list[str], name: str) -> LineProc:
        """Starts `argv` inside `netns`; the fixture ends it if the test
        does not."""
        p = LineProc(["ip", "netns", "exec", netns] + argv, name)
        self.procs.append(p)
        return p

    def start_sniffer(self, marker: bytes, count: int, timeout: float) -> LineProc:
        """Starts a scapy sniffer on tap B and waits until it captures."""
        return start_sniffer(self.procs, self.ns_b, self.if_b, marker, count, timeout)

    def send(self, frames: list[bytes], tmp: Path) -> None:
        """Sends `frames` from tap A (in namespace A) and waits until sent."""
        send_frames(self.procs, self.ns_a, self.if_a, frames, tmp)

    def stop_hdvrf(self) -> tuple[int, list[str]]:
        """SIGINT to hdvrf; returns its exit code and every stdout line."""
        rc = self.hdvrf.stop(signal.SIGINT, timeout=30)
        return rc, self.hdvrf.lines()


def captured_frames(sniffer: LineProc) -> list[bytes]:
    """The frames a finished sniffer printed (`frame <hex>` lines)."""
    return [bytes.fromhex(l.split()[1]) for l in sniffer.lines() if l.startswith("frame ")]


@pytest.fixture
def tap_topology(tmp_path):
    """Factory: `tap_topology(mode)` starts hdvrf with two net_tap ports in
    forwarding mode `mode` and puts each tap in a namespace of its own.
    Everything is torn down afterwards, also when the test fails."""
    if os.geteuid() != 0:
        pytest.skip("end-to-end tests need root (network namespaces, tap interfaces, DPDK)")
    if not os.access(HDVRF_BIN, os.X_OK):
        pytest.fail(f"hdvrf binary {HDVRF_BIN} not found: cargo build --release, or set HDVRF_BIN")
    delete_stale_netns()

    made: list[TapTopology] = []
    hdvrfs: list[LineProc] = []
    namespaces: list[str] = []

    def make(mode: str) -> TapTopology:
        n = next(_seq)
        pid = os.getpid()
        if_a, if_b = f"hdv{pid}t{n}a", f"hdv{pid}t{n}b"
        assert len(if_a) <= 15, if_a
        ns_a, ns_b = f"{NS_PREFIX}{pid}-{n}a", f"{NS_PREFIX}{pid}-{n}b"
        cfg = hdvrf_config(tmp_path / f"hdvrf-{n}.toml", if_a, if_b, mode)

        hd = LineProc([HDVRF_BIN, "run", "--config", str(cfg)], "hdvrf")
        hdvrfs.append(hd)
        hd.wait_line(lambda l: l.startswith("hdvrf: forwarding ("), 60, "hdvrf's 'forwarding' line")
        for iface in (if_a, if_b):
            wait_until(lambda: link_exists(iface), 10, f"tap {iface} to exist")
        mac_a, mac_b = link_mac(if_a), link_mac(if_b)

        namespaces.extend([ns_a, ns_b])
        into_netns(if_a, ns_a)
        into_netns(if_b, ns_b)
        for iface, ns in ((if_a, ns_a), (if_b, ns_b)):
            wait_until(
                lambda: "UP" in json.loads(run("ip", "-j", "-n", ns, "link", "show", "dev", iface).stdout)[0]["flags"],
                10,
                f"{iface} up in {ns}",
            )
        topo = TapTopology(hd, cfg, ns_a, ns_b, if_a, if_b, mac_a, mac_b)
        made.append(topo)
        return topo

    yield make

    for topo in made:
        for p in topo.procs:
            p.kill()
    for hd in hdvrfs:
        hd.kill()
    for ns in namespaces:
        delete_netns(ns)


@contextlib.contextmanager
def netns_linked(names, *links):
    """Namespaces `names`, joined by veth pairs `links` (as `veth` takes
    them), for a test that needs root: yields the list of processes it
    starts, which are killed, and the namespaces deleted, at the end."""
    if os.geteuid() != 0:
        pytest.skip("end-to-end tests need root (network namespaces, DPDK)")
    delete_stale_netns()
    made, procs = [], []
    try:
        for ns in names:
            made.append(ns)
            make_netns(ns)
        for a, b in links:
            veth(a, b)
        yield procs
    finally:
        for p in procs:
            p.kill()
        for ns in made:
            delete_netns(ns)


class CtlRouter:
    """A running hdvrf with configuration `text` (its SOCK the management
    socket), asked through `hdvrf ctl -j`."""

    def __init__(self, procs: list, tmp: Path, netns: str, name: str, text: str):
        self.sock = tmp / f"{name}.sock"
        cfg = tmp / f"{name}.toml"
        cfg.write_text(text.replace("SOCK", str(self.sock)))
        self.proc = start_router(procs, netns, cfg, name=name)

    def ctl(self, *args: str):
        return json.loads(run(HDVRF_BIN, "ctl", "-s", str(self.sock), "-j", *args).stdout)

    def neighbor(self) -> dict:
        return self.ctl("show", "bgp", "neighbors")[0]

    def routes(self, table: str) -> dict[str, str]:
        return {r["prefix"]: r["next_hop"] for r in self.ctl("show", "routes", "blue", table)}
