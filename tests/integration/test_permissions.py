"""A root netctl never leaves state others can write, and never trusts state others
could have written: one `netctl run` under `umask 000` used to leave /etc/netctl,
/var/lib/netctl, /run/netctl and the plugins' state world-writable, after which an
unprivileged user could replace a conflist or a plugin and the next root `netctl run`
ran their code."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_netctl_run import PY, Netctl, netctl  # noqa: F401 (fixture)
from tests.integration.test_portmap import bridge_conf

pytestmark = pytest.mark.root
NOBODY = 65534


def writable_by_others(root: Path) -> list[str]:
    bad = []
    for p in [root, *root.rglob("*")]:
        st = p.lstat()
        if stat.S_ISLNK(st.st_mode) or stat.S_ISSOCK(st.st_mode):
            continue
        if st.st_mode & 0o022:
            bad.append(f"{p} {stat.S_IMODE(st.st_mode):04o}")
    return bad


def as_nobody_in(directory: Path, name: str, text: str) -> int:
    """Write `name` in `directory` as the unprivileged user nobody (through a directory
    descriptor root opened, so only `directory`'s own permissions decide); its status."""
    dirfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dirfd)
            os.write(fd, text.encode())
            os._exit(0)
        except BaseException:
            os._exit(1)
    os.close(dirfd)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def under_umask_000(nc: Netctl, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = ["nsenter", f"--net={nc.node.path}", "sh", "-c", 'umask 000; exec "$@"', "sh"]
    return subprocess.run(
        [*cmd, PY, "-m", "pycni.runtime.cli", *args], env=nc.env, capture_output=True, text=True
    )


def test_nothing_netctl_makes_is_writable_by_others_whatever_the_umask(netctl: Netctl) -> None:  # noqa: F811
    proc = under_umask_000(
        netctl, "run", "-d", "--name", "u0", "-p", "18690:80", "--", "sleep", "30"
    )
    assert proc.returncode == 0, proc.stderr
    netctl("network", "create", "--subnet", "10.69.0.0/24", "u0net")
    for part in ("etc/netctl", "run/netctl", "var/lib/netctl"):
        assert writable_by_others(netctl.root / part) == []
    netctl("rm", "-f", "u0")


@pytest.mark.parametrize("how", ["world-writable", "owned by another user"])
def test_root_refuses_directories_others_could_have_changed(netctl: Netctl, how) -> None:  # noqa: F811
    netctl("network", "create", "--subnet", "10.70.0.0/24", "shared")
    target = netctl.root / "etc/netctl/net.d"
    if how == "world-writable":
        target.chmod(0o777)
        # the attack itself: an unprivileged user drops a conflist of their own there
        evil = {"cniVersion": "1.0.0", "name": "evil", "plugins": [{"type": "bridge"}]}
        assert as_nobody_in(target, "evil.conflist", json.dumps(evil)) == 0
        assert (target / "evil.conflist").stat().st_uid == NOBODY
    else:
        os.chown(target, NOBODY, NOBODY)
    for args in (("run", "--rm", "--network", "shared", "--", "true"), ("ps",), ("network", "ls")):
        proc = netctl(*args, check=False)
        assert proc.returncode == 125, proc.stdout + proc.stderr
        assert "refusing to use" in proc.stderr and str(netctl.root / "etc/netctl") in proc.stderr
        assert "chmod go-w" in proc.stderr
    assert netctl.veths() == [] and netctl.leases() == []
    # fixed by the administrator: trusted again
    (target / "evil.conflist").unlink(missing_ok=True)
    os.chown(target, 0, 0)
    target.chmod(0o755)
    assert netctl("run", "--rm", "--network", "shared", "--", "true").returncode == 0


def test_plugins_write_their_state_privately_whatever_the_umask(
    plugin_dir, host_ns, container_ns, state_dir, tmp_path
) -> None:
    c = container_ns()
    conf = bridge_conf(tmp_path, macspoofchk=True)
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "um0",
        "CNI_NETNS": c.path,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(plugin_dir),
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "PYCNI_STATE_DIR": str(state_dir),
    }
    proc = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            host_ns.name,
            "sh",
            "-c",
            'umask 000; exec "$@"',
            "sh",
            str(plugin_dir / "bridge"),
        ],
        input=json.dumps(conf).encode(),
        env=env,
        capture_output=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert writable_by_others(state_dir) == []
    assert writable_by_others(tmp_path / "ipam") == []
    records = [p for p in state_dir.rglob("*.json")]
    assert records and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in records), records
