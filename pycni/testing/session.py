"""One run of the kit: its tag, its host (the machine or a user-namespace sandbox), the
namespaces and nodes it made, and the per-namespace packet captures."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from pycni.testing import runs
from pycni.testing.node import Node, node_root
from pycni.testing.ns import PY, Host, Netns, delete_netns, make_netns


@dataclass
class Capture:
    """A running capture of one namespace: one pcap file per interface in `directory`."""

    ns: Netns
    directory: Path
    prefix: str
    proc: subprocess.Popen[str]

    def files(self) -> list[Path]:
        return sorted(self.directory.glob(f"{self.prefix}*.pcap"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Run:
    host: Host
    capture: bool = True
    capture_max_packets: int = 10000
    captures: dict[str, Capture] = field(default_factory=dict)  # by netns name
    #: namespaces a failed test used: their pcap files are kept
    failed: set[str] = field(default_factory=set)

    @property
    def tag(self) -> str:
        return self.host.tag

    @classmethod
    def start(cls, capture: bool = True) -> Run:
        run = cls(Host(runs.current_tag()), capture)
        run.host.start()
        return run

    def stop(self) -> None:
        self.host.stop()

    def netns(self, label: str, pcap_dir: Path | None = None) -> Netns:
        ns = make_netns(self.host, label)
        if self.capture and pcap_dir is not None:
            try:
                self._start_capture(ns, pcap_dir)
            except Exception:
                delete_netns(ns)
                raise
        return ns

    def node(self, label: str, base: Path, pcap_dir: Path | None = None) -> Node:
        ns = self.netns(label, pcap_dir)
        return Node(ns, node_root(base, self.tag, label))

    def _start_capture(self, ns: Netns, pcap_dir: Path) -> None:
        pcap_dir.mkdir(parents=True, exist_ok=True)
        prefix = f"{ns.label or ns.name}-"
        from pycni.testing import capture

        # the capture is stdlib only: run its file without site (-S), the start-up is most
        # of what a namespace costs with capture on
        proc = ns.popen(
            PY,
            "-I",
            "-S",
            capture.__file__,
            str(pcap_dir),
            prefix,
            str(self.capture_max_packets),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            proc.kill()
            raise RuntimeError(f"packet capture in {ns} failed: {proc.communicate()[1]}")
        ns.processes.remove(proc)  # stopped gently (flushes), not killed with the others
        self.captures[ns.name] = Capture(ns, pcap_dir, prefix, proc)

    def stop_capture(self, ns: Netns) -> Capture | None:
        cap = self.captures.pop(ns.name, None)
        if cap is not None:
            cap.stop()
        return cap

    def pcaps(self, ns: Netns) -> list[Path]:
        cap = self.captures.get(ns.name)
        return cap.files() if cap else []

    def delete(self, ns: Netns, keep_pcaps: bool) -> None:
        cap = self.stop_capture(ns)
        delete_netns(ns)
        if cap is not None and not keep_pcaps:
            for f in cap.files():
                f.unlink(missing_ok=True)

    def close_node(self, node: Node, keep_pcaps: bool) -> None:
        cap = self.stop_capture(node.ns)
        node.close()
        if cap is not None and not keep_pcaps:
            for f in cap.files():
                f.unlink(missing_ok=True)
