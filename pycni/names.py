"""The naming rules, written once: stdlib-free, import-free, for plugins and netctl.

- `valid_name`: libcni's rule for container IDs and network names, which is also
  Docker's for container and network names: ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$
- `validate_network_name`, `validate_type`: libcni's checks of a network name and of a
  plugin type (a file name, never a path), raising its errors (pycni.errors is imported
  only when one is raised).
- `ifname_problem`: the kernel's dev_valid_name() for interface names (1-15 bytes,
  not "." or "..", no '/', ':', whitespace or NUL), as a reason callers turn into
  their own error (libcni's words in skel, a config error in conf, pydantic's in
  daemon_config).
"""

from __future__ import annotations

NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
IFNAMSIZ = 16  # the kernel's limit, the terminating NUL included


def valid_name(text: str) -> bool:
    """^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"""
    return (
        bool(text)
        and text[0].isascii()
        and text[0].isalnum()
        and all(c in NAME_CHARS for c in text)
    )


def validate_network_name(name: str) -> None:
    if not name:
        from pycni import errors

        raise errors.InvalidConfig("missing network name")
    if not valid_name(name):
        from pycni import errors

        raise errors.InvalidConfig("invalid characters found in network name", name)


def validate_type(plugin_type: object) -> str:
    if not isinstance(plugin_type, str) or not plugin_type:
        from pycni import errors

        raise errors.InvalidConfig("no plugin name provided", 'every plugin config needs a "type"')
    if (
        "/" in plugin_type
        or "\\" in plugin_type
        or "\0" in plugin_type
        or plugin_type in (".", "..")
    ):
        from pycni import errors

        raise errors.InvalidConfig(
            f"invalid plugin name: {plugin_type}",
            "a plugin type is a file name looked up in CNI_PATH, never a path",
        )
    return plugin_type


def ifname_problem(name: str) -> str | None:
    """None for a valid interface name, else which rule it breaks: "empty", "long",
    "dots" or "chars"."""
    if not name:
        return "empty"
    if len(name.encode()) > IFNAMSIZ - 1:
        return "long"
    if name in (".", ".."):
        return "dots"
    if any(c in "/:\0" or c.isspace() for c in name):
        return "chars"
    return None


def valid_ifname(name: str) -> bool:
    return ifname_problem(name) is None


SYSCTL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.@+")


def valid_net_sysctl_key(key: str) -> bool:
    """A dotted net.* sysctl key (net.<a>.<b>..., no empty component, no '/'), as the
    tuning plugin and `netctl run --sysctl` take them."""
    parts = key.split(".")
    return (
        bool(key)
        and all(c in SYSCTL_CHARS for c in key)
        and len(parts) >= 3
        and parts[0] == "net"
        and all(parts)
    )
