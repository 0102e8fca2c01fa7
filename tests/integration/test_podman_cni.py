"""podman 4.3's CNI backend drives our plugins: `podman run -p` on its generated default
network (bridge -> portmap -> firewall -> tuning) with only our plugins in
`cni_plugin_dirs`, traffic to the published port through a host whose FORWARD policy
is drop, then `podman rm -f` leaves nothing behind.

Everything podman touches lives under the test's tmp dir or dies with the test: a
private containers.conf (CONTAINERS_CONF), its own --root/--runroot/tmp_dir, the CNI
config dir and plugin dir, XDG_* and HOME. Podman runs in the throwaway host network
namespace and in a private mount namespace (a `sleep` the test starts and kills) where
/run/netns, /var/lib (host-local's default dataDir /var/lib/cni, our /var/lib/pycni)
and /dev/shm (podman's lock) are the test's directories, and /sys is the namespace's own
sysfs with the host's cgroup tree bound back in (runc needs it).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Netns, sh
from tests.traffic import wire_outside

pytestmark = pytest.mark.root

SUBNET = "10.79.0.0/24"
GATEWAY = "10.79.0.1"
HOST_PORT = 8093

INNER = """set -e
mount --rbind /sys/fs/cgroup {t}/cgroup
mount -t sysfs sysfs /sys
mount --rbind {t}/cgroup /sys/fs/cgroup
mount --bind {t}/netns /run/netns
mount --bind {t}/varlib /var/lib
mount --bind {t}/shm /dev/shm
echo ready
exec sleep 3600
"""


def busybox_root(d: Path) -> Path:
    """A busybox-static root: /bin/busybox, applet symlinks, an index page."""
    root = d / "rootfs"
    (root / "bin").mkdir(parents=True)
    for sub in ("proc", "sys", "dev", "etc", "tmp"):
        (root / sub).mkdir()
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    applets = sh(str(root / "bin" / "busybox"), "--list").split()
    for applet in applets:
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    (root / "index.html").write_text("hello from podman over pycni\n")
    return root


class Podman:
    def __init__(self, t: Path, host: Netns, plugin_dir: Path) -> None:
        self.t = t
        t.mkdir(parents=True)
        for sub in ("root", "runroot", "tmp", "conf.d", "xdg", "home", "netns", "varlib", "shm"):
            (t / sub).mkdir()
        (t / "cgroup").mkdir()
        (t / "varlib" / "cni").mkdir()
        self.bin = t / "cni-bin"
        shutil.copytree(plugin_dir, self.bin)  # `netctl plugins install --dir`'s output
        # only ours: every plugin of podman's chain is the installer's, none a reference copy
        for name in ("bridge", "host-local", "portmap", "firewall", "tuning"):
            ours = (self.bin / name).read_bytes()
            assert ours and ours != Path("/usr/lib/cni", name).read_bytes(), name
        self.state = t / "varlib" / "pycni"  # our plugins' default state dir, in the mount ns
        env_lines = [
            f"CONTAINERS_CONF={t}/containers.conf",
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            f"XDG_RUNTIME_DIR={t}/xdg",
        ]
        (t / "containers.conf").write_text(
            f"""[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{t}/tmp/events.log"
tmp_dir = "{t}/tmp"
runtime = "runc"
conmon_env_vars = {json.dumps(env_lines)}
[network]
network_backend = "cni"
cni_plugin_dirs = ["{self.bin}"]
network_config_dir = "{t}/conf.d"
default_subnet = "{SUBNET}"
"""
        )
        self.env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "CONTAINERS_CONF": f"{t}/containers.conf",
            "XDG_RUNTIME_DIR": f"{t}/xdg",
            "XDG_CONFIG_HOME": f"{t}/home/.config",
            "XDG_DATA_HOME": f"{t}/home/.local/share",
            "XDG_CACHE_HOME": f"{t}/home/.cache",
            "HOME": f"{t}/home",
            "TMPDIR": f"{t}/tmp",
        }
        (t / "inner.sh").write_text(INNER.format(t=t))
        self.sleeper = subprocess.Popen(
            ["nsenter", f"--net={host.path}", "unshare", "-m", "--propagation", "private",
             "sh", str(t / "inner.sh")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.sleeper.stdout is not None
        line = self.sleeper.stdout.readline()
        if line.strip() != "ready":
            self.sleeper.kill()
            raise AssertionError(f"mount namespace setup failed: {self.sleeper.stderr.read()}")  # type: ignore[union-attr]

    def inside(self, *cmd: str, check: bool = True, timeout: float = 120) -> str:
        """Run in podman's network and mount namespaces, with podman's environment."""
        argv = ["nsenter", "-t", str(self.sleeper.pid), "-m", "-n", "env", "-i"]
        argv += [f"{k}={v}" for k, v in self.env.items()]
        return sh(*argv, *cmd, check=check, timeout=timeout)

    def podman(self, *args: str, check: bool = True) -> str:
        t = self.t
        base = ["podman", "--root", f"{t}/root", "--runroot", f"{t}/runroot"]
        base += ["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"]
        return self.inside(*base, *args, check=check)

    def close(self) -> None:
        self.podman("rm", "-a", "-f", check=False)
        self.sleeper.kill()
        self.sleeper.wait()
        for stream in (self.sleeper.stdout, self.sleeper.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def podman(tmp_path: Path, host_ns: Netns, plugin_dir: Path) -> Iterator[Podman]:
    # podman refuses a runroot longer than 50 characters: a short directory of the
    # test's own in /tmp (linked from tmp_path), removed at the end
    short = Path(tempfile.mkdtemp(prefix="pyt-podman-", dir="/tmp"))
    (tmp_path / "podman").symlink_to(short)
    p = Podman(short / "t", host_ns, plugin_dir)
    try:
        yield p
    finally:
        try:
            p.close()
        finally:
            shutil.rmtree(short, ignore_errors=True)


def http_get(ns: Netns, ip: str, port: int) -> str:
    code = (
        "import socket,sys\n"
        "s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=3)\n"
        "s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n"
        "d=b''\n"
        "while True:\n"
        "    b=s.recv(4096)\n"
        "    if not b: break\n"
        "    d+=b\n"
        "print(d.decode())\n"
    )
    return ns.run("python3", "-c", code, ip, str(port), check=False, timeout=20)


def our_kernel_entries(host: Netns, ip: str, cid: str) -> list[str]:
    """Anything of this container's left in nft (ours or iptables-nft's) or iptables."""
    found = []
    nft = host.run("nft", "-j", "list", "ruleset")
    for needle in (ip, cid[:12]):
        if needle in nft:
            found.append(f"nft ruleset mentions {needle}")
    ipt = host.run("iptables-save")
    if ip in ipt:
        found.append(f"iptables mentions {ip}")
    return found


def test_podman_run_publish_and_rm_with_only_our_plugins(
    podman: Podman, host_ns: Netns, container_ns, tmp_path: Path
) -> None:
    # a host like Docker's: nothing is forwarded unless someone accepts it
    host_ns.run("iptables", "-P", "FORWARD", "DROP")
    outside = container_ns()
    wire_outside(host_ns, outside)
    rootfs = busybox_root(tmp_path)
    ulimits = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
    cid = podman.podman(
        "run", "-d", "--runtime", "runc", *ulimits, "-p", f"{HOST_PORT}:80",
        "--rootfs", str(rootfs), "busybox", "httpd", "-f", "-p", "80",
    ).strip()  # fmt: skip
    assert len(cid) == 64, cid
    inspect = json.loads(podman.podman("inspect", cid))[0]
    ip = inspect["NetworkSettings"]["Networks"]["podman"]["IPAddress"]
    assert ip.startswith("10.79.0.")

    # podman's generated default network is the conflist libcni ran: read it back
    # from libcni's cache (under the test's /var/lib)
    cached = list((podman.t / "varlib" / "cni" / "results").glob(f"podman-{cid}-eth0"))
    assert cached, sorted(p.name for p in (podman.t / "varlib" / "cni").rglob("*"))
    conf = json.loads(cached[0].read_text())["config"]
    plugins = json.loads(base64.b64decode(conf))["plugins"]
    assert [p["type"] for p in plugins] == ["bridge", "portmap", "firewall", "tuning"]

    # our plugins did the work: our state, our lease, the reference layout of firewall
    assert (podman.state / "firewall" / ".forward" / "podman").is_dir()
    leases = podman.t / "varlib" / "cni" / "networks" / "podman"
    assert (leases / ip).read_text().startswith(cid)
    assert f"-A CNI-FORWARD -s {ip}/32 -j ACCEPT" in host_ns.run("iptables-save", "-t", "filter")

    # traffic: from the host namespace to the published port, and from outside
    for client, addr in ((host_ns, GATEWAY), (host_ns, "127.0.0.1"), (outside, "198.18.0.1")):
        deadline = time.monotonic() + 10
        page = ""
        while time.monotonic() < deadline:
            page = http_get(client, addr, HOST_PORT)
            if "hello from podman" in page:
                break
            time.sleep(0.2)
        assert "hello from podman over pycni" in page, (client.name, addr, page)

    podman.podman("rm", "-f", cid)
    # nothing left: no veth, no lease, no kernel entry of ours, no netns, no record
    links = [link["ifname"] for link in host_ns.ip_json("link", "show")]
    assert not [name for name in links if name.startswith("veth")], links
    assert not (leases / ip).exists()
    assert our_kernel_entries(host_ns, ip, cid) == []
    assert list((podman.t / "netns").iterdir()) == []
    records = [p for p in podman.state.rglob("*.json")]
    assert records == [], records
    assert not list((podman.state / "firewall" / ".ports").iterdir())
    assert podman.podman("ps", "-a", "-q").strip() == ""
    # the host namespace kept its drop policy: we never flip it
    assert ":FORWARD DROP" in host_ns.run("iptables-save", "-t", "filter")
