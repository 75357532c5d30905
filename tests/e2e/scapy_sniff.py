"""Sniffer for the end-to-end tests, run inside a namespace:

    scapy_sniff.py IFACE MARKER_HEX COUNT TIMEOUT

Captures frames on IFACE whose bytes contain the marker until COUNT of them
arrived or TIMEOUT seconds passed. Prints `ready` once the capture socket is
open, then, at the end, `frame <hex>` per captured frame and `done <n>`.
"""

import sys

from scapy.all import AsyncSniffer, conf

iface, marker, count, timeout = sys.argv[1], bytes.fromhex(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
# A burst of full-size frames must not overflow the socket while Python
# dissects: ask for a large receive buffer (capped by net.core.rmem_max).
conf.bufsize = 1 << 22


def wire(p):
    """The frame as received, not as scapy would rebuild it."""
    return p.original or bytes(p)


sniffer = AsyncSniffer(
    iface=iface,
    store=True,
    lfilter=lambda p: marker in wire(p),
    count=count,
    started_callback=lambda: print("ready", flush=True),
)
sniffer.start()
sniffer.join(timeout=timeout)
if sniffer.running:
    sniffer.stop()
frames = sniffer.results or []
for p in frames:
    print("frame", wire(p).hex())
print("done", len(frames), flush=True)
