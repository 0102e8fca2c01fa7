"""Where netctl keeps things. One variable, NETCTL_ROOT, moves all of it (tests and
sandboxes set it); each directory can also be moved on its own.

    config   $NETCTL_CONFIG_DIR  or ROOT/etc/netctl        networks (CNI conflists), daemon.json
    run      $NETCTL_RUN_DIR     or ROOT/run/netctl        containers' live state, netns bind mounts, agent socket
    lib      $NETCTL_LIB_DIR     or ROOT/var/lib/netctl    IPAM leases, the CNI result cache, plugin executables
"""

from __future__ import annotations

import os


class Paths:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        root = env.get("NETCTL_ROOT", "/")
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

    def cni_path(self) -> list[str]:
        """Where netctl looks for plugins: its own, then the usual system locations."""
        extra = os.environ.get("NETCTL_CNI_PATH")
        dirs = [self.plugin_dir]
        if extra:
            dirs += [d for d in extra.split(":") if d]
        dirs += ["/opt/cni/bin", "/usr/lib/cni"]
        return dirs
