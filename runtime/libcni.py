"""The runtime side of CNI (what libcni does for containerd, CRI-O and podman).

- Load networks from a config dir: `*.conflist` sorted, then `*.conf`/`*.json`
  wrapped as single-plugin lists; pick the version from cniVersion/cniVersions.
- Build each plugin's request: the plugin object plus name, cniVersion, prevResult,
  and runtimeConfig filtered by the plugin's `capabilities`.
- ADD forward and, on failure, DEL what was added (libcni leaves that to its caller;
  a runtime that forgets leaks, so we do it here); DEL in reverse; CHECK; GC; STATUS;
  `disableCheck` / `disableGC` honoured.
- Results cached in libcni's `cniCacheV1` format at <cache>/results/<net>-<cid>-<ifname>,
  so DEL/CHECK/GC work across restarts and tools can read each other's cache.
"""

from __future__ import annotations

import binascii  # base64 imports re, for b64encode's one call to binascii
import os

from pycni import errors, fastjson, invoke, skel
from pycni import version as cniver
from pycni.atomicfile import write_atomic
from pycni.record import dataclass, field
from pycni.result import Result, parse_result

TYPE_CHECKING = False  # typing, json and dataclasses cost more than `network ls` may spend
if TYPE_CHECKING:
    from typing import Any

CACHE_KIND = "cniCacheV1"

# The conflist format lives in conflist.py (light enough for `network ls`); re-exported.
from pycni.runtime.conflist import (  # noqa: E402
    ConfigError,
    NetworkConfigList,
    conflist_from_bytes,
    conflist_from_conf,
)

__all__ = ["ConfigError", "NetworkConfigList", "conflist_from_bytes", "conflist_from_conf"]


@dataclass
class RuntimeConf:
    """Per-attachment arguments: what a container runtime passes for one interface."""

    container_id: str
    netns: str
    ifname: str = "eth0"
    args: list[tuple[str, str]] = field(default_factory=list)
    capability_args: dict[str, Any] = field(default_factory=dict)


def _files(directory: str, extensions: tuple[str, ...]) -> list[str]:
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    return [
        os.path.join(directory, n)
        for n in names
        if os.path.splitext(n)[1] in extensions and os.path.isfile(os.path.join(directory, n))
    ]


def load_networks(directory: str) -> list[NetworkConfigList]:
    """Every network in `directory`: conflists first (sorted), then .conf/.json."""
    out: list[NetworkConfigList] = []
    seen: set[str] = set()
    for path in _files(directory, (".conflist",)):
        with open(path, "rb") as fh:
            net = conflist_from_bytes(fh.read(), path)
        if net.name not in seen:
            seen.add(net.name)
            out.append(net)
    for path in _files(directory, (".conf", ".json")):
        with open(path, "rb") as fh:
            net = conflist_from_conf(fh.read(), path)
        if net.name not in seen:
            seen.add(net.name)
            out.append(net)
    return out


def load_network(directory: str, name: str) -> NetworkConfigList:
    for net in load_networks(directory):
        if net.name == name:
            return net
    raise ConfigError(f'no net configuration with name "{name}" in {directory}')


class CNIConfig:
    """Runs chains: the plugin search path plus the cache directory."""

    def __init__(
        self,
        path: list[str],
        cache_dir: str,
        env: dict[str, str] | None = None,
        inprocess: bool = False,
    ) -> None:
        self.path = path
        self.cache_dir = cache_dir
        #: run pycni plugins found in the path in-process (netctl does; a libcni
        #: replacement for other runtimes would keep exec'ing)
        self.inprocess = inprocess and os.environ.get("NETCTL_PLUGINS_INPROCESS", "1") != "0"
        self.env = (
            env
            if env is not None
            else {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        )

    # -- building requests ----------------------------------------------------------

    def _request(
        self,
        net: NetworkConfigList,
        plugin: dict[str, Any],
        rt: RuntimeConf | None,
        prev: Result | None,
    ) -> bytes:
        conf = dict(plugin)
        conf["name"] = net.name
        conf["cniVersion"] = net.cni_version
        if prev is not None:
            conf["prevResult"] = prev.to_wire(net.cni_version)
        if rt is not None:
            caps = plugin.get("capabilities") or {}
            runtime_config = {
                k: v
                for k, v in rt.capability_args.items()
                if isinstance(caps, dict) and caps.get(k) is True
            }
            if runtime_config:
                conf["runtimeConfig"] = runtime_config
        return fastjson.dumps(conf, sort_keys=True).encode()

    def _env(self, command: str, rt: RuntimeConf | None) -> dict[str, str]:
        env = dict(self.env)
        env.update(
            CNI_COMMAND=command,
            CNI_CONTAINERID=rt.container_id if rt else "",
            CNI_NETNS=rt.netns if rt else "",
            CNI_IFNAME=rt.ifname if rt else "",
            CNI_ARGS=";".join(f"{k}={v}" for k, v in rt.args) if rt else "",
            CNI_PATH=":".join(self.path),
        )
        return env

    def _exec(
        self,
        net: NetworkConfigList,
        plugin: dict[str, Any],
        command: str,
        stdin: bytes,
        rt: RuntimeConf | None,
    ) -> bytes:
        path = invoke.find_in_path(plugin.get("type"), self.path)
        try:
            own = self._own_verbs(path) if self.inprocess else None
            if own is not None:
                # One of ours, found where any runtime would find it: run its verb in
                # this process (same code, same env, same namespace), saving one
                # interpreter start per plugin per container.
                out, code = skel.run(own, self._env(command, rt), stdin)
                if code != 0:
                    raise invoke.error_from_output(out.encode(), b"", code)
                return out.encode()
            return invoke.exec_plugin(path, command, stdin, self._env(command, rt))
        except errors.CniError as exc:
            exc.msg = f'plugin type="{plugin.get("type")}" failed ({command.lower()}): {exc.msg}'
            raise

    @staticmethod
    def _own_verbs(path: str) -> skel.Verbs | None:
        name = invoke.own_plugin(path)
        if name is None:
            return None
        from pycni import plugins

        return plugins.load(name)

    # -- cache ----------------------------------------------------------------------

    def cache_path(self, net_name: str, rt: RuntimeConf) -> str:
        if not (net_name and rt.container_id and rt.ifname):
            raise errors.InvalidConfig(
                f"cache file path requires network name ({net_name!r}), container ID ({rt.container_id!r}), and interface name ({rt.ifname!r})"
            )
        return os.path.join(self.cache_dir, "results", f"{net_name}-{rt.container_id}-{rt.ifname}")

    def _write_cache(self, net: NetworkConfigList, rt: RuntimeConf, result: Result) -> None:
        path = self.cache_path(net.name, rt)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        entry: dict[str, Any] = {
            "kind": CACHE_KIND,
            "containerId": rt.container_id,
            "config": binascii.b2a_base64(
                net.raw or fastjson.dumps(net.to_json()).encode(), newline=False
            ).decode(),
            "ifName": rt.ifname,
            "networkName": net.name,
        }
        if rt.netns:
            entry["netns"] = rt.netns
        if rt.args:
            entry["cniArgs"] = [list(a) for a in rt.args]
        if rt.capability_args:
            entry["capabilityArgs"] = rt.capability_args
        entry["result"] = result.to_wire(net.cni_version)
        write_atomic(path, fastjson.dumps(entry), 0o600)  # no fsync, as libcni (os.WriteFile)

    def cached_result(self, net: NetworkConfigList, rt: RuntimeConf) -> Result | None:
        try:
            with open(self.cache_path(net.name, rt), "rb") as fh:
                obj = fastjson.loads(fh.read())
        except (OSError, ValueError):
            return None
        if isinstance(obj, dict) and obj.get("kind") == CACHE_KIND:
            obj = obj.get("result")
        if not obj:
            return None
        try:
            return parse_result(obj, "cached result")
        except errors.CniError:
            return None

    def cached_entry(self, net_name: str, rt: RuntimeConf) -> dict[str, Any] | None:
        try:
            with open(self.cache_path(net_name, rt), "rb") as fh:
                obj = fastjson.loads(fh.read())
        except (OSError, ValueError):
            return None
        return obj if isinstance(obj, dict) and obj.get("kind") == CACHE_KIND else None

    def cached_attachments(self, net_name: str | None = None) -> list[dict[str, Any]]:
        directory = os.path.join(self.cache_dir, "results")
        out = []
        for path in _files(directory, ("",)):
            try:
                with open(path, "rb") as fh:
                    obj = fastjson.loads(fh.read())
            except (OSError, ValueError):
                continue
            if not isinstance(obj, dict) or obj.get("kind") != CACHE_KIND:
                continue
            if not obj.get("ifName") or not obj.get("networkName"):
                continue
            if net_name is None or obj["networkName"] == net_name:
                out.append(obj)
        return out

    def _drop_cache(self, net_name: str, rt: RuntimeConf) -> None:
        try:
            os.unlink(self.cache_path(net_name, rt))
        except OSError:
            pass

    # -- verbs ----------------------------------------------------------------------

    def add(self, net: NetworkConfigList, rt: RuntimeConf) -> Result:
        skel.validate_container_id(rt.container_id)
        skel.validate_ifname(rt.ifname)
        prev: Result | None = None
        ran = 0
        try:
            for plugin in net.plugins:
                ran += 1
                out = self._exec(net, plugin, "ADD", self._request(net, plugin, rt, prev), rt)
                try:
                    obj = fastjson.loads(out)
                except ValueError as exc:
                    raise errors.DecodingFailure(f"failed to unmarshal raw result: {exc}") from None
                if isinstance(obj, dict) and not obj.get("cniVersion"):
                    obj["cniVersion"] = net.cni_version
                prev = parse_result(obj, f"result of {plugin.get('type')}")
        except BaseException:
            # Undo what the chain did, the failed plugin included, newest first: libcni
            # leaves this to its caller and a caller that forgets leaks addresses.
            for plugin in reversed(net.plugins[:ran]):
                try:
                    self._exec(net, plugin, "DEL", self._request(net, plugin, rt, prev), rt)
                except errors.CniError:
                    pass
            raise
        assert prev is not None
        self._write_cache(net, rt, prev)
        return prev

    def delete(self, net: NetworkConfigList, rt: RuntimeConf) -> None:
        prev = self.cached_result(net, rt) if cniver.supports_check(net.cni_version) else None
        for plugin in reversed(net.plugins):
            self._exec(net, plugin, "DEL", self._request(net, plugin, rt, prev), rt)
        self._drop_cache(net.name, rt)

    def check(self, net: NetworkConfigList, rt: RuntimeConf) -> None:
        if not cniver.supports_check(net.cni_version):
            raise errors.IncompatibleVersion(
                f"configuration version {net.cni_version!r} does not support the CHECK command"
            )
        if net.disable_check:
            return
        prev = self.cached_result(net, rt)
        for plugin in net.plugins:
            self._exec(net, plugin, "CHECK", self._request(net, plugin, rt, prev), rt)

    def gc(self, net: NetworkConfigList, valid: list[tuple[str, str]] | None) -> list[str]:
        """DEL stale cached attachments, then send GC to every plugin; returns the errors."""
        if net.disable_gc:
            return []
        problems: list[str] = []
        keep = set(valid or [])
        for entry in self.cached_attachments(net.name):
            key = (entry.get("containerId", ""), entry.get("ifName", ""))
            if valid is not None and key in keep:
                continue
            rt = RuntimeConf(
                container_id=key[0],
                netns=entry.get("netns", ""),
                ifname=key[1],
                args=[(a[0], a[1]) for a in entry.get("cniArgs") or []],
                capability_args=entry.get("capabilityArgs") or {},
            )
            try:
                self.delete(net, rt)
            except errors.CniError as exc:
                problems.append(f"failed to delete stale attachment {key[0]} {key[1]}: {exc}")
        if not cniver.supports_gc_status(net.cni_version):
            return problems
        attachments = [{"containerID": c, "ifname": i} for c, i in sorted(keep)]
        for plugin in net.plugins:
            conf = dict(plugin)
            conf.update(name=net.name, cniVersion=net.cni_version)
            conf["cni.dev/valid-attachments"] = attachments
            conf["cni.dev/attachments"] = attachments
            try:
                self._exec(net, plugin, "GC", fastjson.dumps(conf, sort_keys=True).encode(), None)
            except errors.CniError as exc:
                problems.append(f"failed to GC plugin {plugin.get('type')}: {exc}")
        return problems

    def status(self, net: NetworkConfigList) -> None:
        if not cniver.supports_gc_status(net.cni_version):
            return
        for plugin in net.plugins:
            conf = dict(plugin)
            conf.update(name=net.name, cniVersion=net.cni_version)
            self._exec(net, plugin, "STATUS", fastjson.dumps(conf, sort_keys=True).encode(), None)
