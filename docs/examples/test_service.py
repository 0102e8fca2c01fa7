"""The tutorial's test (docs/testing.md): a server in one container, a client in
another, the published port reached from a third namespace, and a firewall rule on the
host that must block a fourth."""

import os
import time

from pycni.testing import traffic

# The host's own firewall: nothing from the internet reaches the published port.
# (FIREWALL_SOURCE lets the tutorial show a failing run: set it to the office's subnet.)
BLOCKED = os.environ.get("FIREWALL_SOURCE", "198.18.2.0/24")
GUARD = f"""
table inet guard {{
    chain prerouting {{
        type filter hook prerouting priority raw; policy accept;
        ip saddr {BLOCKED} tcp dport 8080 drop
    }}
}}
"""


def http_status(place, url, seconds=10.0):
    """The HTTP status of the first answer within `seconds` (the server takes a moment to
    start), or None when nothing answered."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        answer = traffic.http_get(place, url, timeout=1)
        if answer is not None:
            return answer[0]
        time.sleep(0.2)
    return None


def test_service(topology):
    topo = topology("service.yaml")
    web = topo["web"]
    web.run("nft", "-f", "-", input=GUARD)
    api_ip = topo.ip("web/api")

    # container to container, on the network
    assert http_status(topo["web/client"], f"http://{api_ip}/") == 200
    # the published port, from a namespace outside the host
    assert http_status(topo["office"], "http://198.18.1.1:8080/") == 200
    # and the firewall keeps the internet out (a bounded attempt, not a hang)
    assert traffic.http_get(topo["internet"], "http://198.18.2.1:8080/", timeout=1) is None
    assert traffic.ping(topo["internet"], "198.18.2.1")  # the host itself answers
