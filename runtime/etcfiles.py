"""A container's own /etc/resolv.conf, /etc/hosts and /etc/hostname (pure text builders).

Docker's rules: --dns/--dns-search/--dns-option (or the daemon config's) replace the
host's settings; otherwise the host's resolv.conf is used, minus loopback nameservers,
which a container on a bridge cannot reach (systemd-resolved's 127.0.0.53), with
public resolvers as the fallback when nothing is left. In host mode the host's file is
used as is.
"""

from __future__ import annotations

DEFAULT_NAMESERVERS = ["8.8.8.8", "8.8.4.4"]

HOSTS_HEADER = """127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
ff00::0\tip6-mcastprefix
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
"""


class AddHostError(ValueError):
    pass


class EtcValueError(ValueError):
    """A value that would not stay one line, one word, of resolv.conf or hosts."""


def _one_word(value: str) -> bool:
    # Every value lands on a line of a file the container's resolver parses: no
    # whitespace (a second word) and no control character (a second line, a NUL).
    return bool(value) and value.isprintable() and not any(c.isspace() for c in value)


def check_dns(value: str, flag: str = "--dns") -> str:
    """A nameserver: an IP address (as Docker: 'x is not an ip address')."""
    try:
        import ipaddress

        return str(ipaddress.ip_address(value))
    except ValueError:
        raise EtcValueError(
            f'invalid argument "{value}" for "{flag}" flag: {value} is not an ip address'
        ) from None


def check_dns_search(value: str, flag: str = "--dns-search") -> str:
    """A search domain ("." clears the list, as Docker)."""
    if value == ".":
        return value
    if not _one_word(value) or len(value) > 253 or not value.isascii():
        raise EtcValueError(
            f'invalid argument "{value!s}" for "{flag}" flag: not a valid domain name'
        )
    return value


def check_dns_option(value: str, flag: str = "--dns-option") -> str:
    """A resolv.conf option such as ndots:2 or edns0."""
    if not _one_word(value) or len(value) > 253:
        raise EtcValueError(
            f'invalid argument "{value}" for "{flag}" flag: an option is one word, e.g. ndots:2'
        )
    return value


def check_hostname(value: str, flag: str = "--hostname") -> str:
    """A host name for /etc/hosts and /etc/hostname: RFC 1123 labels, at most 253."""
    labels = value.split(".")
    if (
        not value
        or len(value) > 253
        or not all(
            0 < len(label) <= 63
            and label.isascii()
            and all(c.isalnum() or c == "-" for c in label)
            and label[0] != "-"
            and label[-1] != "-"
            for label in labels
        )
    ):
        raise EtcValueError(
            f'invalid argument "{value}" for "{flag}" flag: invalid hostname format, '
            "use letters, digits, '-' and '.', at most 63 characters a label"
        )
    return value


def parse_resolv_conf(text: str) -> tuple[list[str], list[str], list[str]]:
    nameservers: list[str] = []
    search: list[str] = []
    options: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        key, _, rest = line.partition(" ")
        fields = rest.split()
        if key == "nameserver" and fields:
            nameservers.append(fields[0])
        elif key in ("search", "domain"):
            search = fields
        elif key == "options":
            options.extend(fields)
    return nameservers, search, options


def _octet(text: str) -> bool:
    """A decimal 0-255 as ipaddress reads a dotted quad's part (no leading zero)."""
    if not (text.isascii() and text.isdigit() and len(text) <= 3):
        return False
    return int(text) <= 255 and (text == "0" or not text.startswith("0"))


def _is_loopback(ns: str) -> bool:
    # Every run reads the host's nameservers: a dotted quad needs no `ipaddress`
    # (~4 ms of `run --network none`'s imports with what it pulls in).
    octets = ns.split(".")
    if len(octets) == 4 and all(_octet(o) for o in octets):
        return octets[0] == "127"
    import ipaddress

    try:
        return ipaddress.ip_address(ns.split("%")[0]).is_loopback
    except ValueError:
        return False


def resolv_conf(
    host_text: str,
    dns: list[str],
    dns_search: list[str],
    dns_options: list[str],
    host_mode: bool = False,
    ipv6: bool = False,
) -> str:
    if host_mode and not (dns or dns_search or dns_options):
        return host_text
    servers, search, options = parse_resolv_conf(host_text)
    if dns:
        servers = list(dns)
    elif not host_mode:
        servers = [s for s in servers if not _is_loopback(s)]
        if not ipv6:
            servers = [s for s in servers if ":" not in s] or servers
        if not servers:
            servers = list(DEFAULT_NAMESERVERS)
    if dns_search:
        search = [] if dns_search == ["."] else list(dns_search)
    if dns_options:
        options = list(dns_options)
    lines = [f"nameserver {s}" for s in servers]
    if search:
        lines.append("search " + " ".join(search))
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def embedded_resolv_conf(
    host_text: str,
    upstreams: list[str],
    dns_search: list[str],
    dns_options: list[str],
    resolver: str = "127.0.0.11",
) -> str:
    """resolv.conf of a container on a user-defined network: the embedded resolver is
    its one nameserver (Docker's layout: ndots:0 unless --dns-option says otherwise),
    and the comment says where the resolver forwards other names."""
    _servers, search, options = parse_resolv_conf(host_text)
    if dns_search:
        search = [] if dns_search == ["."] else list(dns_search)
    options = [o for o in (dns_options or options)]
    if not any(o.startswith("ndots:") for o in options):
        options = ["ndots:0", *options]
    lines = [f"nameserver {resolver}"]
    if search:
        lines.append("search " + " ".join(search))
    lines.append("options " + " ".join(options))
    lines.append("")
    lines.append(f"# ExtServers: [{' '.join(upstreams)}]")
    return "\n".join(lines) + "\n"


def parse_add_host(spec: str, host_gateway: str = "") -> tuple[str, str]:
    """HOST:IP (also HOST=IP, [v6] brackets, and host-gateway) -> (host, ip)."""
    sep = "=" if "=" in spec else ":"
    host, _, ip = spec.partition(sep)
    if not host or not ip or not _one_word(spec):
        raise AddHostError(
            f'invalid argument "{spec}" for "--add-host" flag: bad format for add-host: "{spec}"'
        )
    if ip.startswith("[") and ip.endswith("]"):
        ip = ip[1:-1]
    if ip == "host-gateway":
        if not host_gateway:
            raise AddHostError(
                f'invalid argument "{spec}" for "--add-host" flag: unable to derive the IP value for host-gateway'
            )
        return host, host_gateway
    import ipaddress

    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise AddHostError(
            f'invalid argument "{spec}" for "--add-host" flag: invalid IP address in add-host: "{ip}"'
        ) from None
    return host, ip


def hosts_file(
    hostname: str, addresses: list[str], extra: list[tuple[str, str]], host_mode_text: str = ""
) -> str:
    out = host_mode_text.rstrip("\n") + "\n" if host_mode_text else HOSTS_HEADER
    for host, ip in extra:
        out += f"{ip}\t{host}\n"
    for addr in addresses:
        out += f"{addr}\t{hostname}\n"
    return out
