"""One libnftables context per namespace and thread, shared by every Nft of a process
(issue 17): netctl runs a chain's plugins in one process, each with Nft objects of its
own, and a context's first command pays for building it and filling its cache from the
kernel (~400 page faults and ~1 ms with three tables) where the next pays nearly
nothing. The check runs in a child process of its own, in a network namespace of its
own, so its page-fault counts are its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.root
REPO = Path(__file__).resolve().parents[2]

CHILD = r"""
import resource, sys, threading
sys.path.insert(0, sys.argv[1])
from pycni import netns
netns.unshare(0x40000000)  # CLONE_NEWNET: a namespace of its own, gone with this process
from pycni.firewall import nft

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def t(name):
    return {"family": "inet", "table": name}

made = []
for i in range(3):
    made.append({"add": {"table": {"family": "inet", "name": f"pyt_ctx{i}"}}})
    for j in range(3):
        made.append({"add": {"chain": {**t(f"pyt_ctx{i}"), "name": f"c{j}"}}})
        made.append({"add": {"set": {**t(f"pyt_ctx{i}"), "name": f"s{j}", "type": "ipv4_addr"}}})
counts = []
for i in range(4):
    # a new Nft every time, as every plugin (and every part of one) makes its own
    before = faults()
    nft.Nft().run(made if i == 0 else [{"list": {"tables": {}}}])
    counts.append(faults() - before)
contexts = len(nft._contexts)
other = []
thread = threading.Thread(target=lambda: other.append(nft.Nft().run([{"list": {"tables": {}}}])))
thread.start()
thread.join()
print(contexts, len(nft._contexts), sum("table" in item for item in other[0]), *counts)
"""


def test_every_nft_of_a_thread_shares_one_context() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(REPO)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    contexts, with_thread, tables, *counts = (int(x) for x in out.split())
    assert contexts == 1  # four Nft objects, one namespace, one thread
    assert with_thread == 2  # another thread gets a context of its own
    assert tables == 3  # ... in the same namespace
    # The first command builds the context and its cache; the others, from new Nft
    # objects, reuse them (a context each cost ~400 faults here, as the first does).
    assert counts[0] > 100, counts
    assert max(counts[1:]) < counts[0] // 4, counts


def test_the_availability_probe_runs_once_per_namespace(host_ns, container_ns, monkeypatch) -> None:
    """Every plugin of a chain asks whether nf_tables answers; in one process (netctl)
    the kernel is asked once per namespace, and again in another namespace."""
    import os

    from pycni import netns
    from pycni.firewall import nft, nftables

    monkeypatch.setattr(nftables, "_ANSWERED", set())
    sent: list[str] = []
    real = nft.Nft._run_lib

    def counted(self, text: str, dry_run: bool) -> str:  # type: ignore[no-untyped-def]
        sent.append(text)
        return real(self, text, dry_run)

    monkeypatch.setattr(nft.Nft, "_run_lib", counted)
    fd = os.open(host_ns.path, os.O_RDONLY)
    other = os.open(container_ns().path, os.O_RDONLY)
    try:
        with netns.entered(fd):
            assert nftables.NftablesFirewall().available()
            assert nftables.NftablesFirewall().available()
        assert len([t for t in sent if nftables.PROBE_TABLE in t]) == 1
        with netns.entered(other):
            assert nftables.NftablesFirewall().available()
        assert len([t for t in sent if nftables.PROBE_TABLE in t]) == 2
    finally:
        os.close(fd)
        os.close(other)
