"""hdvrf forwards between two net_tap ports whose taps live in separate
network namespaces: frames crafted with scapy in namespace A arrive in
namespace B unchanged (io) or with their MAC addresses swapped (macswap),
and hdvrf stops cleanly on SIGINT with every mbuf back in its pool.

Only frames carrying this run's marker are counted: anything else the
kernel sends (ARP, IPv6 chatter before the taps are moved) may cross too.
"""

from __future__ import annotations

import re
import uuid

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from conftest import MBUFS_RE, STATS_TOTAL_RE, STOPPED_RE, captured_frames

N = 200
# Locally administered, belongs to nobody.
DST_MAC = "02:00:5e:e2:e2:02"
# IEEE 802 local experimental ethertype.
EXPERIMENTAL_ETHERTYPE = 0x88B5


def craft(marker: bytes, src_mac: str, n: int = N) -> list[bytes]:
    """`n` frames, each with `marker` and its sequence number in the
    payload: even ones under a made-up ethertype, odd ones IPv4/UDP; sizes
    spread from the 60-byte minimum to a full 1514-byte frame."""
    frames = []
    for i in range(n):
        size = 60 + (i * 211) % (1514 - 60 + 1)
        tag = marker + b"#%05d#" % i
        if i % 2 == 0:
            hdr = Ether(dst=DST_MAC, src=src_mac, type=EXPERIMENTAL_ETHERTYPE)
        else:
            hdr = Ether(dst=DST_MAC, src=src_mac) / IP(src="192.0.2.1", dst="198.51.100.2", ttl=64) / UDP(
                sport=40000 + i, dport=9
            )
        fill = max(0, size - len(hdr) - len(tag))
        f = bytes(hdr / Raw(tag + bytes((i + k) & 0xFF for k in range(fill))))
        assert len(f) == max(size, len(bytes(hdr)) + len(tag)), (i, len(f))
        frames.append(f)
    return frames


def seq_of(frame: bytes, marker: bytes) -> int:
    m = re.search(re.escape(marker) + rb"#(\d{5})#", frame)
    assert m, f"marked frame without a sequence number: {frame.hex()}"
    return int(m.group(1))


def check_shutdown(topo, sent: int) -> None:
    rc, lines = topo.stop_hdvrf()
    detail = topo.hdvrf.describe()
    assert rc == 0, detail
    stopped = [m for m in map(STOPPED_RE.match, lines) if m]
    assert len(stopped) == 1, detail
    rx, tx = int(stopped[0].group(2)), int(stopped[0].group(3))
    assert rx >= sent and tx >= sent, f"final totals rx {rx} tx {tx} < {sent} sent\n{detail}"
    mbufs = [m for m in map(MBUFS_RE.match, lines) if m]
    assert len(mbufs) == 1 and mbufs[0].group(1) == mbufs[0].group(2), detail


def wait_stats_total(topo, at_least: int) -> None:
    """The periodic stats line catches up with what was sent."""

    def caught_up(line: str) -> bool:
        m = STATS_TOTAL_RE.search(line) if line.startswith("stats:") else None
        return bool(m) and int(m.group(1)) >= at_least and int(m.group(2)) >= at_least

    topo.hdvrf.wait_line(caught_up, 10, f"a stats line with total rx and tx >= {at_least}")


def exchange(topo, tmp_path, marker: bytes) -> tuple[list[bytes], dict[int, bytes]]:
    """Sends N marked frames A -> B; returns them and what B captured, by
    sequence number (each sequence number captured exactly once)."""
    sniffer = topo.start_sniffer(marker, count=N, timeout=30)
    frames = craft(marker, topo.mac_a)
    topo.send(frames, tmp_path / "frames.hex")
    assert sniffer.wait(timeout=60) == 0, sniffer.describe()
    got = captured_frames(sniffer)
    by_seq: dict[int, bytes] = {}
    for f in got:
        s = seq_of(f, marker)
        assert s not in by_seq, f"frame {s} arrived twice"
        by_seq[s] = f
    missing = sorted(set(range(N)) - set(by_seq))
    assert not missing, f"{len(missing)} of {N} frames did not arrive, e.g. {missing[:10]}\n{topo.hdvrf.describe()}"
    return frames, by_seq


def test_io_forwards_frames_unchanged(tap_topology, tmp_path):
    topo = tap_topology("io")
    marker = b"HDVRF-E2E-" + uuid.uuid4().hex[:16].encode()
    frames, by_seq = exchange(topo, tmp_path, marker)
    for i, f in enumerate(frames):
        assert by_seq[i] == f, f"frame {i} changed in io mode:\nsent {f.hex()}\ngot  {by_seq[i].hex()}"
    wait_stats_total(topo, N)
    check_shutdown(topo, N)


def test_macswap_swaps_addresses(tap_topology, tmp_path):
    topo = tap_topology("macswap")
    marker = b"HDVRF-E2E-" + uuid.uuid4().hex[:16].encode()
    frames, by_seq = exchange(topo, tmp_path, marker)
    for i, f in enumerate(frames):
        want = f[6:12] + f[0:6] + f[12:]
        assert by_seq[i] == want, f"frame {i} not MAC-swapped:\nsent {f.hex()}\ngot  {by_seq[i].hex()}"
        assert Ether(by_seq[i]).dst == topo.mac_a and Ether(by_seq[i]).src == DST_MAC
    wait_stats_total(topo, N)
    check_shutdown(topo, N)
