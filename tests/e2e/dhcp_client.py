"""A scapy DHCP client for the end-to-end tests, run inside a namespace:

    dhcp_client.py IFACE MAC VLAN lease
        DISCOVER -> OFFER -> REQUEST -> ACK; prints
        `lease ADDRESS SERVER_ID LEASE_SECONDS`
    dhcp_client.py IFACE MAC VLAN renew ADDRESS SERVER_ID
        a REQUEST in RENEWING state; prints `renewed ADDRESS LEASE_SECONDS`
    dhcp_client.py IFACE MAC VLAN release ADDRESS SERVER_ID
        sends a RELEASE (no answer is expected); prints `released`
    dhcp_client.py IFACE MAC VLAN arp GATEWAY
        who-has GATEWAY; prints `is-at MAC`

VLAN 0 sends untagged frames. Exits 1 with a message when an answer does
not come within 10 s (DHCP_TIMEOUT in the environment changes that).
"""

import os
import random
import sys
import threading

from scapy.all import AsyncSniffer, conf
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Dot1Q, Ether

iface, mac, vlan, action = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
args = sys.argv[5:]
conf.checkIPaddr = False
TIMEOUT = float(os.environ.get("DHCP_TIMEOUT", "10"))
chaddr = bytes.fromhex(mac.replace(":", "")) + b"\x00" * 10
sock = conf.L2socket(iface=iface)


def l2(dst="ff:ff:ff:ff:ff:ff"):
    e = Ether(src=mac, dst=dst)
    return e / Dot1Q(vlan=vlan) if vlan else e


def ask(pkt, match):
    """Sends `pkt` and returns the first received frame `match` accepts."""
    ready = threading.Event()
    sn = AsyncSniffer(iface=iface, lfilter=match, count=1, store=True, started_callback=ready.set)
    sn.start()
    if not ready.wait(timeout=TIMEOUT):
        sys.exit("the capture did not start")
    sock.send(pkt)
    sn.join(timeout=TIMEOUT)
    if sn.running:
        sn.stop()
    got = sn.results or []
    return got[0] if got else None


def dhcp_opt(p, name):
    for o in p[DHCP].options:
        if isinstance(o, tuple) and o[0] == name:
            return o[1]
    return None


def reply_to(xid, kind):
    def m(p):
        return BOOTP in p and p[BOOTP].op == 2 and p[BOOTP].xid == xid and DHCP in p and dhcp_opt(p, "message-type") == kind

    return m


if action == "lease":
    xid = random.getrandbits(32)
    base = l2() / IP(src="0.0.0.0", dst="255.255.255.255") / UDP(sport=68, dport=67)
    disc = base / BOOTP(chaddr=chaddr, xid=xid, flags=0x8000) / DHCP(options=[("message-type", "discover"), "end"])
    offer = ask(disc, reply_to(xid, 2))
    if offer is None:
        sys.exit("no OFFER")
    addr, server = offer[BOOTP].yiaddr, dhcp_opt(offer, "server_id")
    req = base / BOOTP(chaddr=chaddr, xid=xid, flags=0x8000) / DHCP(
        options=[("message-type", "request"), ("requested_addr", addr), ("server_id", server), "end"]
    )
    ack = ask(req, reply_to(xid, 5))
    if ack is None:
        sys.exit("no ACK")
    print("lease", ack[BOOTP].yiaddr, server, dhcp_opt(ack, "lease_time"), flush=True)
elif action == "renew":
    # RENEWING (RFC 2131 section 4.4.5): unicast to the server, ciaddr set.
    addr, server = args
    xid = random.getrandbits(32)
    req = (
        l2(dst="ff:ff:ff:ff:ff:ff")
        / IP(src=addr, dst=server)
        / UDP(sport=68, dport=67)
        / BOOTP(chaddr=chaddr, ciaddr=addr, xid=xid)
        / DHCP(options=[("message-type", "request"), "end"])
    )
    ack = ask(req, reply_to(xid, 5))
    if ack is None:
        sys.exit("no ACK to the renewal")
    print("renewed", ack[BOOTP].yiaddr, dhcp_opt(ack, "lease_time"), flush=True)
elif action == "release":
    addr, server = args
    rel = (
        l2()
        / IP(src=addr, dst=server)
        / UDP(sport=68, dport=67)
        / BOOTP(chaddr=chaddr, ciaddr=addr, xid=random.getrandbits(32))
        / DHCP(options=[("message-type", "release"), ("server_id", server), "end"])
    )
    sock.send(rel)
    print("released", flush=True)
elif action == "arp":
    (gw,) = args
    req = l2() / ARP(op=1, hwsrc=mac, psrc="0.0.0.0", pdst=gw)
    rep = ask(req, lambda p: ARP in p and p[ARP].op == 2 and p[ARP].psrc == gw)
    if rep is None:
        sys.exit("no ARP reply")
    print("is-at", rep[ARP].hwsrc, flush=True)
else:
    sys.exit(f"unknown action {action}")
sock.close()
