"""tuning: sysctls and link settings inside the container (drop-in for the reference `tuning`).

A chained plugin: prevResult in, prevResult out (with the interface's new MAC when
`mac` changes it). Keys, as the reference reads them:

    sysctl    {"net.ipv4.conf.IFNAME.rp_filter": "1", ...}   only net.*, only in the
              container's namespace; IFNAME is replaced by CNI_IFNAME (first occurrence)
    mac       "02:00:00:00:00:01" (also runtimeConfig.mac, capability `mac`, and CNI_ARGS
              MAC=...; precedence: args.cni > runtimeConfig > CNI_ARGS > mac)
    mtu       int; promisc true; allmulti bool; txQLen int
    args.cni  {"sysctl", "mac", "mtu", "promisc", "allmulti", "txQLen"} override the above
    dataDir   where the originals are saved (default /run/cni/tuning)

If /etc/cni/tuning/allowlist.conf exists, every sysctl key must match one of its lines
(regular expressions, unanchored, as Go's regexp.MatchString); a missing file allows
all, an unreadable one refuses sysctls (and only sysctls) with an error saying so.

ADD saves the original values in `<dataDir>/<containerID>_<ifname>.json`, the reference's
file and format (Go's MarshalIndent with one space; keys mac, promisc, mtu, allmulti,
txQLen), so either side's DEL restores the other's ADD. Sysctl originals go in an extra
"sysctl" object that the reference ignores. Unlike the reference, every key is checked
(and every sysctl read) before anything is changed, and a failed ADD undoes what it did.
DEL restores what the file names, best effort, and removes the file; GC and STATUS have
nothing to do (the file names carry no network, so a per-network GC cannot tell whose
file it is).
"""

from __future__ import annotations

import os

from pycni import conf, errors, fault, names, netns, skel, sysctl
from pycni.atomicfile import write_atomic
from pycni.result import Result, parse_result

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pycni.netlink import Link, Netlink

WHERE = "tuning"
DEFAULT_DATA_DIR = "/run/cni/tuning"
#: overrides the default dataDir (tests); the config's dataDir still wins
DATA_DIR_ENV = "PYCNI_TUNING_DATA_DIR"
ALLOWLIST = "/etc/cni/tuning/allowlist.conf"
#: the reference's configToRestore fields, in its order
BACKUP_KEYS = ("mac", "promisc", "mtu", "allmulti", "txQLen")
UINT32_MAX = 2**32 - 1
INT32_MAX = 2**31 - 1


class TuningConf:
    __slots__ = ("allmulti", "data_dir", "mac", "mtu", "promisc", "sysctl", "txqlen")

    def __init__(self, d: dict[str, Any], cni_args: str = "") -> None:
        #: dotted sysctl keys (as written in the config) -> values
        self.sysctl: dict[str, str] = {}
        self._read(d, WHERE)
        #: where the originals are saved
        self.data_dir = conf.get_str(d, "dataDir", "", WHERE) or os.environ.get(
            DATA_DIR_ENV, DEFAULT_DATA_DIR
        )
        args = skel.parse_cni_args(cni_args)
        skel.check_cni_args(args, frozenset({"MAC"}))
        if args.get("MAC"):
            self.mac = parse_mac(args["MAC"], "CNI_ARGS MAC")
        rc_mac = conf.get_str(conf.get_dict(d, "runtimeConfig", WHERE), "mac", "", WHERE)
        if rc_mac:
            self.mac = parse_mac(rc_mac, f"{WHERE}: runtimeConfig.mac")
        cni = conf.get_dict(conf.get_dict(d, "args", WHERE), "cni", f"{WHERE}: args")
        if cni:
            self._read(cni, f"{WHERE}: args.cni", override=True)

    def _read(self, d: dict[str, Any], where: str, override: bool = False) -> None:
        """The keys of the top level, or of args.cni (which only sets what it names)."""
        if not override or d.get("sysctl") is not None:
            raw = conf.get_dict(d, "sysctl", where)
            for key, value in raw.items():
                if not isinstance(value, str):
                    raise errors.InvalidConfig(
                        f"{where}: sysctl {key!r} must have a string value",
                        f'got {value!r}; write it as "{value}"',
                    )
                self.sysctl[validate_sysctl_key(key, where)] = value
        if not override or d.get("mac") is not None:
            mac = conf.get_str(d, "mac", "", where)
            #: the MAC address to set ("" leaves it)
            self.mac = parse_mac(mac, f"{where}: mac") if mac else ""
        if not override or d.get("promisc") is not None:
            #: true turns promiscuous mode on (false leaves it, as the reference)
            self.promisc = conf.get_bool(d, "promisc", False, where)
        if not override or d.get("mtu") is not None:
            #: the MTU to set (0 leaves it)
            self.mtu = conf.get_int(d, "mtu", 0, where, 0, INT32_MAX)
        if not override or d.get("allmulti") is not None:
            value = d.get("allmulti")
            #: all-multicast on/off (None leaves it)
            self.allmulti = None if value is None else conf.get_bool(d, "allmulti", False, where)
        if not override or d.get("txQLen") is not None:
            value = d.get("txQLen")
            #: the transmit queue length (None leaves it)
            self.txqlen = (
                None if value is None else conf.get_int(d, "txQLen", 0, where, 0, UINT32_MAX)
            )

    @property
    def touches_link(self) -> bool:
        return bool(
            self.mac
            or self.mtu
            or self.promisc
            or self.allmulti is not None
            or self.txqlen is not None
        )


def validate_sysctl_key(key: str, where: str) -> str:
    """A dotted net.* key: net.<a>.<b>..., no empty component, no '/', printable ASCII."""
    if not names.valid_net_sysctl_key(key):
        raise errors.InvalidConfig(
            f"{where}: invalid net sysctl key {key!r}",
            "use the dotted form of a sysctl under net, such as net.ipv4.conf.IFNAME.rp_filter "
            "(no '/', no empty component)",
        )
    return key


def sysctl_path(key: str, ifname: str) -> str:
    """The key under /proc/sys, as the reference forms it: dots become slashes first,
    then the first IFNAME becomes the interface name (which may contain dots)."""
    return key.replace(".", "/").replace("IFNAME", ifname, 1)


def parse_mac(text: str, where: str) -> str:
    """A 6-byte MAC in any form Go's net.ParseMAC reads (aa:bb.., aa-bb.., aabb.ccdd.eeff),
    lowercased with colons; multicast and all-zero addresses are refused."""
    groups = next((text.split(sep) for sep in ":-." if sep in text), [text])
    sizes = [len(g) for g in groups]
    hexdigits = "".join(groups)
    if sizes not in ([2] * 6, [4] * 3) or any(c not in "0123456789abcdefABCDEF" for c in hexdigits):
        raise errors.InvalidConfig(
            f"{where}: invalid MAC address {text!r}", "use the form 02:42:ac:11:00:02"
        )
    mac = ":".join(hexdigits[i : i + 2] for i in range(0, 12, 2))
    mac = conf.validate_mac(mac, where)
    if mac == "00:00:00:00:00:00":
        raise errors.InvalidConfig(f"{where}: {text!r} is the all-zero MAC address")
    return mac


def refused_by_allowlist(keys: list[str], path: str = ALLOWLIST) -> str | None:
    """The first key the allowlist refuses, or None. A missing file allows everything."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.IOFailure(
            f"{WHERE}: cannot read the sysctl allowlist {path}",
            f"{exc}; sysctls are refused until it is readable (or removed)",
        ) from None
    import re

    patterns = []
    for line in text.split("\n"):
        line = line.strip()
        if line:
            try:
                patterns.append(re.compile(line))
            except re.error as exc:
                raise errors.InvalidConfig(
                    f"{WHERE}: invalid regular expression {line!r} in {path}", str(exc)
                ) from None
    for key in keys:
        if not any(p.search(key) for p in patterns):
            return key
    return None


def check_duplicate_sysctls(stdin: bytes) -> None:
    """The reference refuses a config whose sysctl object repeats a key."""
    import json

    class Pairs(dict):
        duplicated = False

    def hook(pairs: list[tuple[str, Any]]) -> Pairs:
        out = Pairs(pairs)
        out.duplicated = len(out) != len(pairs)
        return out

    try:
        top = json.loads(stdin, object_pairs_hook=hook)
    except ValueError:
        return  # skel decoded it already; nothing more to say
    for key, value in top.items():
        if key.lower() == "sysctl" and isinstance(value, Pairs) and value.duplicated:
            raise errors.InvalidConfig(
                f"{WHERE}: duplicated sysctl keys are not allowed", "name each sysctl once"
            )


# -- the backup file -------------------------------------------------------------------


def backup_path(data_dir: str, container_id: str, ifname: str) -> str:
    return os.path.join(data_dir, f"{container_id}_{ifname}.json")


def backup_text(saved: dict[str, Any]) -> str:
    """Go's json.MarshalIndent(configToRestore, "", " "): fixed key order, one space of
    indent per level (the values are flat, the sysctl map one level deeper)."""
    from pycni.fastjson import dumps

    items: list[tuple[str, Any]] = [(k, saved[k]) for k in BACKUP_KEYS if k in saved]
    if saved.get("sysctl"):
        items.append(("sysctl", dict(sorted(saved["sysctl"].items()))))
    if not items:
        return "{}"
    lines = []
    for key, value in items:
        if isinstance(value, dict):
            inner = ",\n".join(f"  {dumps(k)}: {dumps(v)}" for k, v in value.items())
            text = "{\n" + inner + "\n }"
        else:
            text = dumps(value)
        lines.append(f" {dumps(key)}: {text}")
    return "{\n" + ",\n".join(lines) + "\n}"


def read_backup(path: str) -> dict[str, Any] | None:
    """The saved originals; None when there is no file or it is not a JSON object
    (the reference then restores nothing)."""
    from pycni import fastjson

    try:
        with open(path, "rb") as fh:
            saved = fastjson.loads(fh.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


def write_backup(path: str, saved: dict[str, Any]) -> None:
    try:
        write_atomic(path, backup_text(saved), 0o600, dir_mode=0o700)
    except OSError as exc:
        raise errors.IOFailure(
            f"{WHERE}: cannot save the original values in {path}", str(exc)
        ) from None


def remove_backup(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# -- the kernel edge -------------------------------------------------------------------


def _sysctl_error(key: str, value: str | None, exc: OSError) -> errors.CniError:
    if isinstance(exc, FileNotFoundError):
        return errors.InvalidConfig(
            f"{WHERE}: no sysctl {key} in the container's network namespace",
            "check the name (and that the interface it names exists)",
        )
    if isinstance(exc, IsADirectoryError):
        return errors.InvalidConfig(f"{WHERE}: {key} is a directory, not a sysctl")
    if value is not None and exc.errno in (22, 34, 1, 13):  # EINVAL ERANGE EPERM EACCES
        return errors.InvalidConfig(
            f"{WHERE}: the kernel refused {key} = {value!r}", exc.strerror or str(exc)
        )
    return errors.CniError(f"{WHERE}: {key}: {exc.strerror or exc}")


def write_sysctl(key: str, value: str) -> None:
    """Write as the reference does (one write, also to write-only keys such as
    net.ipv4.route.flush, which cannot be opened for reading)."""
    fd = sysctl.open_key(key, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _link(nl: Netlink, ifname: str) -> Link:
    link = nl.link(ifname)
    if link is None:
        raise errors.InvalidConfig(
            f"{WHERE}: interface {ifname} not found in the container's network namespace",
            "chain tuning after the plugin that creates CNI_IFNAME",
        )
    return link


def _link_values(c: TuningConf, link: Link | None = None) -> dict[str, Any]:
    """The link attributes the config sets, keyed as the backup file spells them: the
    values wanted, or with `link`, the link's current ones (the originals to save)."""
    out: dict[str, Any] = {}
    if c.mac:
        out["mac"] = link.mac if link else c.mac
    if c.promisc:
        out["promisc"] = link.promisc if link else True
    if c.mtu:
        out["mtu"] = link.mtu if link else c.mtu
    if c.allmulti is not None:
        out["allmulti"] = link.allmulti if link else c.allmulti
    if c.txqlen is not None:
        out["txQLen"] = link.txqlen if link else c.txqlen
    return out


def _set_link(nl: Netlink, index: int, values: dict[str, Any]) -> None:
    """Apply saved-format values in the reference's order of restoring them."""
    if values.get("mtu"):
        nl.set_link(index, mtu=values["mtu"])
    if values.get("mac"):
        nl.set_link(index, mac=values["mac"])
    if values.get("promisc") is not None:
        nl.set_link(index, promisc=bool(values["promisc"]))
    if values.get("allmulti") is not None:
        nl.set_link(index, allmulti=bool(values["allmulti"]))
    if values.get("txQLen") is not None:
        nl.set_link(index, txqlen=values["txQLen"])


def _prev(cmd: skel.CmdArgs) -> Result:
    if cmd.conf.get("prevResult") is None:
        raise errors.InvalidConfig(
            "Required prevResult missing", "tuning is a chained plugin: put it after bridge/ptp/..."
        )
    return parse_result(cmd.conf["prevResult"])


def cmd_add(cmd: skel.CmdArgs) -> Result:
    c = TuningConf(cmd.conf, cmd.args)
    if c.sysctl:
        check_duplicate_sysctls(cmd.stdin)
        refused = refused_by_allowlist(list(c.sysctl))
        if refused is not None:
            raise errors.InvalidConfig(
                f"Sysctl {refused} is not allowed", f"it matches no line of {ALLOWLIST}"
            )
    prev = _prev(cmd)
    sysctls = {sysctl_path(k, cmd.ifname): (k, v) for k, v in c.sysctl.items()}
    fd = netns.open_netns(cmd.netns)
    try:
        with netns.entered(fd):
            _add_in_netns(c, cmd, sysctls)
    finally:
        os.close(fd)
    if c.mac:
        for iface in prev.interfaces:
            if iface.name == cmd.ifname:
                iface.mac = c.mac
    return prev


def _add_in_netns(c: TuningConf, cmd: skel.CmdArgs, sysctls: dict[str, tuple[str, str]]) -> None:
    from pycni.netlink import Netlink, NetlinkError

    # Read everything first: a missing sysctl or link, or an MTU out of the device's
    # range, is refused before anything changes.
    saved: dict[str, Any] = {}
    original: dict[str, str] = {}
    for path, (key, _value) in sysctls.items():
        try:
            original[path] = sysctl.read(path)
        except PermissionError:
            continue  # write-only (net.ipv4.route.flush): nothing to save or restore
        except OSError as exc:
            raise _sysctl_error(key, None, exc) from None
    with Netlink() as nl:
        link = _link(nl, cmd.ifname) if c.touches_link else None
        if link is not None:
            if c.mtu and (c.mtu < link.min_mtu or (link.max_mtu and c.mtu > link.max_mtu)):
                raise errors.InvalidConfig(
                    f"{WHERE}: mtu {c.mtu} is out of range for {cmd.ifname}",
                    f"the device accepts {link.min_mtu} to {link.max_mtu or 'any'}",
                )
            saved = _link_values(c, link)
        if original:
            saved["sysctl"] = {sysctls[p][0]: v for p, v in original.items()}
        path = backup_path(c.data_dir, cmd.container_id, cmd.ifname)
        earlier = read_backup(path) if saved else None
        if saved:
            if earlier:  # ADD again: the first ADD's originals are the real ones
                saved.update({k: v for k, v in earlier.items() if k != "sysctl"})
                if isinstance(earlier.get("sysctl"), dict):
                    saved.setdefault("sysctl", {}).update(earlier["sysctl"])
            write_backup(path, saved)
        written: list[str] = []
        try:
            for p, (key, value) in sysctls.items():
                try:
                    write_sysctl(p, value)
                except OSError as exc:
                    raise _sysctl_error(key, value, exc) from None
                written.append(p)
            fault.point("after-sysctls")
            if link is not None:
                try:
                    _set_link(nl, link.index, _link_values(c))
                except NetlinkError as exc:
                    raise errors.InvalidConfig(
                        f"{WHERE}: cannot set {cmd.ifname}: {exc.strerror}", exc.kernel_msg
                    ) from None
                fault.point("after-link")
        except BaseException:
            for p in written:
                if p not in original:
                    continue
                try:
                    write_sysctl(p, original[p])
                except OSError:
                    pass
            if link is not None:
                try:
                    _set_link(nl, link.index, _link_values(c, link))
                except NetlinkError:
                    pass
            if earlier:
                write_backup(path, earlier)  # an earlier ADD's originals stay for its DEL
            elif saved:
                remove_backup(path)
            raise


def cmd_del(cmd: skel.CmdArgs) -> None:
    # Only dataDir matters: everything to undo is in the backup file, so a config that
    # ADD would refuse still cleans up.
    data_dir = conf.get_str(cmd.conf, "dataDir", "", WHERE) or os.environ.get(
        DATA_DIR_ENV, DEFAULT_DATA_DIR
    )
    path = backup_path(data_dir, cmd.container_id, cmd.ifname)
    saved = read_backup(path)
    if saved is None:
        return
    if saved and cmd.netns:
        try:
            fd = netns.open_netns(cmd.netns)
        except errors.CniError:
            fd = -1  # the namespace is gone, and with it everything to restore
        if fd >= 0:
            try:
                with netns.entered(fd):
                    restore(saved, cmd.ifname)
            finally:
                os.close(fd)
    remove_backup(path)


def restore(saved: dict[str, Any], ifname: str) -> list[str]:
    """Put the originals back, best effort (as the reference, DEL does not fail on it);
    returns what could not be restored."""
    from pycni.netlink import Netlink, NetlinkError

    problems = []
    values = saved.get("sysctl")
    if isinstance(values, dict):
        for key, value in values.items():
            if not isinstance(key, str) or not isinstance(value, str):
                continue
            try:
                write_sysctl(sysctl_path(validate_sysctl_key(key, WHERE), ifname), value)
            except (OSError, errors.CniError) as exc:
                problems.append(f"{key}: {exc}")
    with Netlink() as nl:
        link = nl.link(ifname)
        if link is None:
            return problems
        for key in ("mtu", "mac", "promisc", "allmulti", "txQLen"):
            value = saved.get(key)
            if value is None or (key in ("mac", "mtu") and not value):
                continue
            try:
                _set_link(nl, link.index, {key: value})
            except (NetlinkError, ValueError, TypeError) as exc:
                problems.append(f"{key}: {exc}")
    if problems:
        skel.log_exception(errors.CniError(f"{WHERE}: could not restore " + "; ".join(problems)))
    return problems


def cmd_check(cmd: skel.CmdArgs) -> None:
    c = TuningConf(cmd.conf, cmd.args)
    if c.sysctl:
        check_duplicate_sysctls(cmd.stdin)
    _prev(cmd)
    from pycni.netlink import Netlink

    fd = netns.open_netns(cmd.netns)
    try:
        with netns.entered(fd), Netlink() as nl:
            for key, want in c.sysctl.items():
                path = sysctl_path(key, cmd.ifname)
                try:
                    have = sysctl.read(path)
                except OSError as exc:
                    raise _sysctl_error(key, None, exc) from None
                if have.split() != want.split():
                    raise errors.CniError(
                        f"Error: Tuning configured value of {key} is {want}, current value is {have}"
                    )
            link = nl.link(cmd.ifname)
            if link is None:
                raise errors.CniError(f"Cannot find container link {cmd.ifname}")
            if c.mac and c.mac != link.mac:
                raise errors.CniError(
                    f"Error: Tuning configured Ethernet of {cmd.ifname} is {c.mac}, current value is {link.mac}"
                )
            # As the reference: promisc false in the config means "must be off".
            if c.promisc != link.promisc:
                raise errors.CniError(
                    f"Error: Tuning link {cmd.ifname} configured promisc is {str(c.promisc).lower()}, "
                    f"current value is {int(link.promisc)}"
                )
            if c.mtu and c.mtu != link.mtu:
                raise errors.CniError(
                    f"Error: Tuning configured MTU of {cmd.ifname} is {c.mtu}, current value is {link.mtu}"
                )
            if c.allmulti is not None and c.allmulti != link.allmulti:
                raise errors.CniError(
                    f"Error: Tuning configured all-multicast mode of {cmd.ifname} is "
                    f"{str(c.allmulti).lower()}, current value is {str(link.allmulti).lower()}"
                )
            if c.txqlen is not None and c.txqlen != link.txqlen:
                raise errors.CniError(
                    f"Error: Tuning configured Transmit Queue Length of {cmd.ifname} is {c.txqlen}, "
                    f"current value is {link.txqlen}"
                )
    finally:
        os.close(fd)


VERBS = skel.Verbs(about="pycni tuning plugin", add=cmd_add, delete=cmd_del, check=cmd_check)


def main() -> None:
    skel.main(VERBS)
