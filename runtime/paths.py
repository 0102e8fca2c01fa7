"""Where netctl keeps things. One variable, NETCTL_ROOT, moves all of it (tests and
sandboxes set it); each directory can also be moved on its own.

    config   $NETCTL_CONFIG_DIR  or ROOT/etc/netctl        networks (CNI conflists), daemon.json
    run      $NETCTL_RUN_DIR     or ROOT/run/netctl        containers' live state, netns bind mounts, agent socket
    lib      $NETCTL_LIB_DIR     or ROOT/var/lib/netctl    IPAM leases, the CNI result cache, plugin executables
"""

from __future__ import annotations

import os
import stat

#: what netctl (and the plugins it runs) create files with, whatever the caller's umask:
#: state, config and plugin directories that others can write are how a local user
#: gets root (replace a conflist or a plugin, and the next `netctl run` runs it)
UMASK = 0o022


def insecure_reason(path: str) -> str | None:
    """Why root must not trust `path` (a directory netctl reads config or code from, or
    keeps state in): it, or a directory above it, is not owned by root or is writable
    by group or others (a sticky directory such as /tmp is fine above it: nobody else
    can replace what root made there). None when it is trustworthy or does not exist."""
    current = os.path.abspath(path)
    first = True
    while True:
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            return f"cannot check {current}: {exc.strerror}"
        if st is not None:
            if stat.S_ISLNK(st.st_mode):
                try:
                    st = os.stat(current)
                except OSError:
                    return f"{current} is a dangling symbolic link"
            sticky = bool(st.st_mode & stat.S_ISVTX) and not first
            if st.st_uid != 0:
                return f"{current} is owned by uid {st.st_uid}, not root"
            if st.st_mode & 0o022 and not sticky:
                return f"{current} is writable by {'group' if st.st_mode & 0o020 else 'others'} (mode {stat.S_IMODE(st.st_mode):04o})"
            first = False
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def _insecure_entry(directory: str) -> str | None:
    """The first file in `directory` (conflists, plugin executables) that another user
    owns or may write."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return None
    for entry in entries:
        st = entry.stat(follow_symlinks=False)
        if st.st_uid != 0 or (st.st_mode & 0o022 and not stat.S_ISLNK(st.st_mode)):
            return (
                f"{entry.path} is owned by uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):04o}"
            )
    return None


class Paths:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        root = env.get("NETCTL_ROOT") or "/"  # set but empty: the default, not the cwd
        self.root = root
        self.config = env.get("NETCTL_CONFIG_DIR") or os.path.join(root, "etc/netctl")
        self.run = env.get("NETCTL_RUN_DIR") or os.path.join(root, "run/netctl")
        self.lib = env.get("NETCTL_LIB_DIR") or os.path.join(root, "var/lib/netctl")

    @property
    def networks(self) -> str:
        """CNI conflists, one per network; any CNI runtime can be pointed here."""
        return os.path.join(self.config, "net.d")

    @property
    def daemon_config(self) -> str:
        return os.environ.get("NETCTL_DAEMON_CONFIG") or os.path.join(self.config, "daemon.json")

    @property
    def plugin_dir(self) -> str:
        """netctl's own CNI_PATH entry: the pycni plugin executables."""
        return os.path.join(self.lib, "bin")

    @property
    def cache_dir(self) -> str:
        """libcni-compatible cache dir; results live in cache_dir/results."""
        return os.path.join(self.lib, "cni")

    @property
    def ipam_dir(self) -> str:
        return os.path.join(self.lib, "networks")

    @property
    def containers(self) -> str:
        return os.path.join(self.run, "containers")

    @property
    def netns_dir(self) -> str:
        return os.path.join(self.run, "netns")

    @property
    def agent_socket(self) -> str:
        return os.path.join(self.run, "agent.sock")

    def check_secure(self) -> None:
        """As sshd and sudo refuse config they cannot trust: raise PermissionError naming
        the first of netctl's directories (and the plugin state) that another user could
        have changed. Only for root: the check guards root's trust."""
        if os.geteuid() != 0:
            return
        state = os.environ.get("PYCNI_STATE_DIR") or "/var/lib/pycni"
        # what netctl reads config or code from, or trusts as state, and what is above it
        trusted = [self.networks, self.plugin_dir, self.ipam_dir, self.cache_dir]
        trusted += [self.containers, self.netns_dir, self.config, self.run, self.lib, state]
        for directory in trusted:
            reason = insecure_reason(directory)
            if reason is None:
                reason = _insecure_entry(directory) if directory in trusted[:2] else None
            if reason is not None:
                raise PermissionError(
                    f"refusing to use {directory}: {reason}; "
                    "make it root's and not writable by others (chown root:root, chmod go-w)"
                )

    def cni_path(self) -> list[str]:
        """Where netctl looks for plugins: its own, then the usual system locations."""
        extra = os.environ.get("NETCTL_CNI_PATH")
        dirs = [self.plugin_dir]
        if extra:
            dirs += [d for d in extra.split(":") if d]
        dirs += ["/opt/cni/bin", "/usr/lib/cni"]
        return dirs
