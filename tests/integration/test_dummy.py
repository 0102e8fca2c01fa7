"""dummy, exec'd as a runtime does. Our kernel has no dummy ("Unknown device type"):
ADD must answer a CNI error naming the module and leave nothing behind; where the
kernel has it, the real behaviour is tested. One test covers both."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration import sublinks
from tests.integration.sublinks import kernel_has, links, ok

pytestmark = pytest.mark.root


def conf(tmp_path: Path, **keys: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"cniVersion": "1.0.0", "name": "dmnet", "type": "dummy",
                         "ipam": sublinks.host_local(tmp_path, routes=[])}  # fmt: skip
    c.update(keys)
    return {k: v for k, v in c.items() if v is not None}


def leases(tmp_path: Path) -> list[str]:
    return sublinks.leases(tmp_path, "dmnet")


def test_dummy_add_check_del_or_clean_refusal(run_plugin, host_ns, container_ns,
                                              tmp_path) -> None:  # fmt: skip
    a = container_ns()
    c = conf(tmp_path)
    if not kernel_has("dummy"):
        before, host_before = links(a), links(host_ns)
        err = run_plugin("dummy", "ADD", c, netns=a.path, container_id="ca", in_ns=host_ns).error
        assert err["code"] == 7, err
        assert "no dummy support" in err["msg"] and "kernel module dummy" in err["msg"]
        assert "modprobe dummy" in err["details"]
        assert links(a) == before and links(host_ns) == host_before and leases(tmp_path) == []
        ok(run_plugin("dummy", "DEL", c, netns=a.path, container_id="ca", in_ns=host_ns))
        return

    # -- the kernel has dummy links: the real behaviour --
    r = ok(run_plugin("dummy", "ADD", c, netns=a.path, container_id="ca", in_ns=host_ns))
    link = a.link("eth0")
    assert link["linkinfo"]["info_kind"] == "dummy" and "UP" in link["flags"]
    assert a.addrs("eth0")[0] == r["ips"][0]["address"]
    a.run("ping", "-c", "1", "-W", "1", r["ips"][0]["address"].split("/")[0])
    ok(run_plugin("dummy", "CHECK", {**c, "prevResult": r}, netns=a.path, container_id="ca",
                  in_ns=host_ns))  # fmt: skip
    a.run("ip", "link", "set", "eth0", "down")
    bad = run_plugin("dummy", "CHECK", {**c, "prevResult": r}, netns=a.path, container_id="ca",
                     in_ns=host_ns)  # fmt: skip
    assert "is down" in bad.error["msg"]
    ok(run_plugin("dummy", "DEL", c, netns=a.path, container_id="ca", in_ns=host_ns))
    assert a.link("eth0") is None and leases(tmp_path) == []


def test_bad_keys(run_plugin, host_ns, container_ns, tmp_path) -> None:
    a = container_ns()
    before = links(a)
    for keys, needle in (
        ({"ipam": None}, "dummy interface requires an IPAM configuration"),
        ({"ipam": {"type": ""}}, "dummy interface requires an IPAM configuration"),
        ({"ipam": 3}, "'ipam' must be an object"),
        ({"dns": []}, "'dns' must be an object"),
    ):
        err = run_plugin("dummy", "ADD", conf(tmp_path, **keys), netns=a.path,
                         container_id="ca", in_ns=host_ns).error  # fmt: skip
        assert err["code"] == 7 and needle in err["msg"], err
        assert links(a) == before and leases(tmp_path) == []
