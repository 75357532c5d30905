"""What the benchmark drivers share: the scale spoke (scripts/bench-scale:
SERVICES services, one access VLAN each, and SESSIONS subscribers spread
over them), its session journal, the management socket and VmRSS.

`a` is the driver's parsed arguments: `services`, `sessions` and
`memory_mb` are read here. Standard library only.
"""
import json
import os
import socket
import time


def base_config(a, tmp, sock, journal=None, *, access="net_null0,no-rx=1", core="net_null1,no-rx=1",
                metrics="", max_sessions=None, idle_us=1000, dataplane_extra=""):
    """The spoke without subscribers, as TOML lines. The keywords'
    defaults are bench-scale's: net_null ports, no metrics, room for
    `a.sessions` sessions."""
    lines = [f"""[dataplane]
main_lcore = 0
workers = [1]
{dataplane_extra}forward_mode = "router"
hugepages = "off"
memory_mb = {a.memory_mb}
mbufs = 8191
idle_sleep_max_us = {idle_us}
stats_interval_ms = 0

[control]
socket = "{sock}"
metrics = "{metrics}"
max_sessions = {max_sessions or max(a.sessions, 1)}
"""]
    if journal:
        lines.append(f'session_journal = "{journal}"\n')
    lines.append(f"""
[router]
role = "spoke"
label_base = 1000
label_count = {a.services + 16}
transport_label = 1000

[[port]]
name = "access0"
device = "{access}"
role = "access"

[[port]]
name = "core0"
device = "{core}"
role = "core"

[[next_hop]]
name = "hub"
port = "core0"
mac = "02:40:00:00:00:09"
labels = [100, 2001]
""")
    return lines


def service_name(s):
    return f"svc{s:04d}"


def subscribers(a):
    """(service, index, address, mac) of every subscriber, spread evenly."""
    for n in range(a.sessions):
        s, i = n % a.services, n // a.services
        # 256 /24s per service, 250 subscribers in each.
        hi = (s << 8) | (i // 250)
        address = f"{10 + (hi >> 16)}.{hi >> 8 & 0xff}.{hi & 0xff}.{2 + i % 250}"
        mac = f"02:5c:{s >> 8 & 0xff:02x}:{s & 0xff:02x}:{i >> 8 & 0xff:02x}:{i & 0xff:02x}"
        yield s, i, address, mac


def service_block(s, extra=""):
    """Service s; `extra`: more of its TOML lines (its downstream routes)."""
    return f"""
[[service]]
name = "{service_name(s)}"
gateway = "172.16.{s >> 8 & 0xff}.{(s & 0xff) or 1}"
vpn_label = {1001 + s}
anti_spoofing = true
access = [ {{ port = "access0", vlan = {s + 1} }} ]
upstream = [ {{ prefix = "0.0.0.0/0", next_hop = "hub" }} ]
{extra}"""


def write_restore_config(a, tmp, sock, extra="", service_extra=None, **base):
    """Services without subscribers, and the journal of their sessions;
    `extra` (TOML) goes after the services, `service_extra(s)` (TOML
    lines) into service s, `base` to base_config."""
    journal = os.path.join(tmp, "sessions.journal")
    end = int(time.time()) + 86400
    with open(journal, "w") as f:
        for s, i, address, mac in subscribers(a):
            f.write(json.dumps({"op": "up", "service": service_name(s), "mac": mac, "port": "access0",
                                "vlan": s + 1, "address": address, "lease_end": end},
                               separators=(",", ":")) + "\n")
    os.chmod(journal, 0o600)
    lines = base_config(a, tmp, sock, journal, **base)
    for s in range(a.services):
        lines.append(service_block(s, service_extra(s) if service_extra else ""))
    lines.append(extra)
    path = os.path.join(tmp, "restore.toml")
    with open(path, "w") as f:
        f.write("".join(lines))
    return path, journal


def ask(sock, cmd, timeout=60, **args):
    """One request on the management socket; None while it is not there."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.settimeout(timeout)
            c.connect(sock)
            c.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
            buf = bytearray()
            while not buf.endswith(b"\n"):
                chunk = c.recv(1 << 20)
                if not chunk:
                    break
                buf += chunk
        return json.loads(buf)
    except (OSError, ValueError):
        return None


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
