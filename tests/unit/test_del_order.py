"""The order of a bridge and ptp DEL's steps (no kernel: every step is recorded): the
masquerade element before IPAM frees the address it is (the next container may get
it at once), the link before the spoof check (until then the workload could still send
from it, as the reference orders them), and IPAM and the links whatever a step before
them raised."""

from __future__ import annotations

import pytest

from pycni import ipam_exec, linger, skel
from pycni.plugins import bridge, ptp

CONF = {
    "cniVersion": "1.0.0",
    "name": "pytnet",
    "type": "bridge",
    "bridge": "pytbr0",
    "ipMasq": True,
    "macspoofchk": True,
    "ipam": {"type": "host-local", "subnet": "10.99.0.0/24"},
}


class Recorder:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, module: object, fail: str = "") -> None:
        self.order: list[str] = []
        self.fail = fail

        def did(what: str) -> None:
            self.order.append(what)
            if what == self.fail:
                raise RuntimeError(f"{what} broke")

        class FW:
            def del_masquerade(self, *a: object) -> None:
                did("masquerade")

            def del_spoofcheck(self, *a: object) -> None:
                did("spoofcheck")

        monkeypatch.setattr(module, "firewall", lambda c: FW())
        if hasattr(module, "spoof_guard"):
            monkeypatch.setattr(module, "spoof_guard", lambda: FW())
        monkeypatch.setattr(ipam_exec, "run", lambda verb, cmd: did("ipam"))
        monkeypatch.setattr(module, "_del_container_side", lambda cmd: did("link"))
        monkeypatch.setattr(module, "_del_recorded_veth", lambda *a: did("record"))


def _cmd(conf: dict) -> skel.CmdArgs:
    return skel.CmdArgs("DEL", "c1", "/run/netns/pyt-none", "eth0", conf=conf)


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_bridge_del_order(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    monkeypatch.setattr(linger, "MODE", mode)
    rec = Recorder(monkeypatch, bridge)
    bridge.cmd_del(_cmd(CONF))
    assert rec.order.index("masquerade") < rec.order.index("ipam")
    assert rec.order.index("link") < rec.order.index("record") < rec.order.index("spoofcheck")
    if mode == "process":  # the link last: no thread beside the other steps
        assert rec.order == ["masquerade", "ipam", "link", "record", "spoofcheck"]


def test_bridge_del_releases_the_address_and_the_link_whatever_masquerade_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(linger, "MODE", "process")
    rec = Recorder(monkeypatch, bridge, fail="masquerade")
    with pytest.raises(RuntimeError, match="masquerade broke"):
        bridge.cmd_del(_cmd(CONF))
    assert rec.order == ["masquerade", "ipam", "link", "record"]


def test_ptp_del_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(linger, "MODE", "process")
    rec = Recorder(monkeypatch, ptp, fail="masquerade")
    conf = {k: v for k, v in CONF.items() if k not in ("bridge", "macspoofchk")}
    with pytest.raises(RuntimeError, match="masquerade broke"):
        ptp.cmd_del(_cmd({**conf, "type": "ptp"}))
    assert rec.order[:3] == ["masquerade", "ipam", "link"]
