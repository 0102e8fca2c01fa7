"""nft JSON, the one place for it: the expression helpers every table of ours is built
with (pure), and the transport, `Nft`: a JSON batch (or a constant script) applied as
one transaction through libnftables (ctypes, in-process) or, without the library,
`nft -j -f -` started with posix_spawn. `table inet pycni` (nftables.py), `table inet
pycni_isolation` (isolation.py), `table bridge pycni_spoof` (spoofcheck.py) and the
firewall plugin's accepts (forward.py) all go through here; only constants, integers,
`ipaddress` output and names of our own making go in.
"""

from __future__ import annotations

import _thread
import os

from pycni import errors, fastjson

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ipaddress
    from typing import Any

    Cmd = dict[str, Any]
    Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# -- expressions (pure) ----------------------------------------------------------------------

L4PROTO = {"meta": {"key": "l4proto"}}
DPORT = {"payload": {"protocol": "th", "field": "dport"}}
DROP = {"drop": None}
ACCEPT = {"accept": None}
RETURN = {"return": None}
MASQUERADE = {"masquerade": None}


def meta(key: str) -> dict[str, Any]:
    return {"meta": {"key": key}}


def payload(protocol: str, field: str) -> dict[str, Any]:
    return {"payload": {"protocol": protocol, "field": field}}


def match(left: object, right: object, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def prefix(net: Network) -> dict[str, Any]:
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def concat(*items: object) -> dict[str, Any]:
    return {"concat": list(items)}


def flags_clear(key: str, flags: list[str]) -> dict[str, Any]:
    """ct <key> & (flags) == 0: none of the connection-tracking flags is set."""
    mask: object = flags[0] if len(flags) == 1 else {"|": flags}
    return {"match": {"op": "==", "left": {"&": [{"ct": {"key": key}}, mask]}, "right": 0}}


def rule(table: dict[str, str], chain: str, *expr: object) -> Cmd:
    """`add rule` to `chain` of `table` ({"family": ..., "table": ...})."""
    return {"add": {"rule": {**table, "chain": chain, "expr": list(expr)}}}


def rule_counts(cmds: list[Cmd]) -> dict[str, int]:
    """{chain: number of rules} that a batch adds: what a listing must show afterwards."""
    counts: dict[str, int] = {}
    for cmd in cmds:
        added = cmd.get("add", {}).get("rule")
        if added is not None:
            counts[added["chain"]] = counts.get(added["chain"], 0) + 1
    return counts


# -- transport -----------------------------------------------------------------------------------

NOT_AVAILABLE = (
    "nftables backend needs libnftables or the nft binary; install the nftables "
    "package or set ipMasqBackend to iptables"
)

_lib: Any = None  # the library's functions, False when it cannot be loaded
# (netns st_dev, st_ino, thread id) -> nft_ctx, shared by every Nft of the process
_contexts: dict[tuple[int, int, int], Any] = {}


class _Lib:
    """The libnftables functions used here, typed as before through ctypes, but bound
    with pycni.ffi (`_ctypes` only: `import ctypes` alone costs ~3 ms of every ADD)."""

    def __init__(self, lib: Any) -> None:
        from pycni.ffi import c_bool, c_char_p, c_int, c_uint, c_void_p

        vp, cp = c_void_p, c_char_p
        self.nft_ctx_new = lib.function("nft_ctx_new", vp, (c_uint,))
        self.nft_ctx_free = lib.function("nft_ctx_free", c_int, (vp,))
        self.nft_ctx_output_set_flags = lib.function(
            "nft_ctx_output_set_flags", c_int, (vp, c_uint)
        )
        self.nft_ctx_set_dry_run = lib.function("nft_ctx_set_dry_run", c_int, (vp, c_bool))
        for fn in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            setattr(self, fn, lib.function(fn, c_int, (vp,)))
        for fn in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            setattr(self, fn, lib.function(fn, cp, (vp,)))
        self.nft_run_cmd_from_buffer = lib.function("nft_run_cmd_from_buffer", c_int, (vp, cp))


def _load_lib() -> Any:
    global _lib
    if _lib is None:
        from pycni import ffi

        try:
            _lib = _Lib(ffi.Library("libnftables.so.1"))
        except (OSError, AttributeError):
            _lib = False
    return _lib


NFT_CTX_OUTPUT_JSON = 1 << 4


def netns_key() -> tuple[int, int]:
    """(st_dev, st_ino) of the calling thread's network namespace: what a context, or
    an answer learned through one, is kept per."""
    st = os.stat("/proc/thread-self/ns/net")
    return st.st_dev, st.st_ino


# Verbs after which the kernel has something to free (JSON keys or script words; a
# false match costs a fork at exit).
_RELEASES = ("delete", "destroy", "flush", "replace")


class NftError(Exception):
    """libnftables or nft reported an error (the message is nft's, one line each)."""


class Nft:
    """Runs one JSON batch. transport: "lib" (libnftables via ctypes), "exec"
    (`nft -j -f -`), or None: the library when it loads, else the binary."""

    def __init__(self, transport: str | None = None) -> None:
        if transport not in (None, "lib", "exec"):
            raise errors.InvalidConfig(f"unknown nft transport {transport!r}", "use lib or exec")
        self.transport = transport

    def mode(self) -> str | None:
        if self.transport != "exec" and _load_lib():
            return "lib"
        if self.transport != "lib":
            from pycni.firewall import spawn

            if spawn.which("nft"):
                return "exec"
        return None

    def run(self, cmds: list[Cmd], dry_run: bool = False) -> list[dict[str, Any]]:
        """Apply (or list) in one transaction; returns the `nftables` array of the output."""
        mode = self.mode()
        if mode is None:
            raise errors.PluginNotAvailable(NOT_AVAILABLE)
        text = fastjson.dumps({"nftables": cmds})
        out = self._run_lib(text, dry_run) if mode == "lib" else self._run_exec(text, dry_run)
        if not out.strip():
            return []
        return list(fastjson.loads(out).get("nftables", []))

    def run_script(self, script: str) -> None:
        """Apply constant nft text in one transaction: only for what the JSON syntax of
        nft 1.0.6 cannot say (sets declared with `typeof` over raw payload). Never
        pass data from a config here: elements go through `run`."""
        mode = self.mode()
        if mode is None:
            raise errors.PluginNotAvailable(NOT_AVAILABLE)
        if mode == "lib":
            self._run_lib(script, False)  # libnftables parses text when it is not JSON
            return
        from pycni.firewall import spawn

        nft = spawn.which("nft")
        assert nft is not None  # mode() found it
        done = spawn.run([nft, "-f", "-"], script.encode())
        if done.rc != 0:
            raise NftError(_clean(done.stderr.decode("utf-8", "replace")) or done.describe())

    @staticmethod
    def _context(dry_run: bool) -> Any:
        # A context's netlink socket belongs to the namespace it was opened in, so keep
        # one per namespace (a test, or netctl, may switch namespaces between calls),
        # and one per thread (a context is not thread-safe). Every Nft of the process
        # shares it: netctl runs a chain's plugins in one process, and a context's
        # first command costs ~450 page faults more than the next (its cache).
        key = (*netns_key(), _thread.get_ident())
        ctx = _contexts.get(key)
        lib = _lib
        if ctx is None:
            ctx = lib.nft_ctx_new(0)
            if not ctx:
                raise errors.InternalError("libnftables: cannot create a context")
            lib.nft_ctx_output_set_flags(ctx, NFT_CTX_OUTPUT_JSON)
            lib.nft_ctx_buffer_output(ctx)
            lib.nft_ctx_buffer_error(ctx)
            _contexts[key] = ctx
        lib.nft_ctx_set_dry_run(ctx, dry_run)
        return ctx

    def _run_lib(self, text: str, dry_run: bool) -> str:
        ctx = self._context(dry_run)
        if not dry_run and any(verb in text for verb in _RELEASES):
            # The kernel frees what this deletes after an RCU grace period, and the
            # close of our socket at exit would wait for that (linger).
            from pycni import linger

            linger.netfilter_sockets_at_exit()
        rc = _lib.nft_run_cmd_from_buffer(ctx, text.encode())
        out = (_lib.nft_ctx_get_output_buffer(ctx) or b"").decode("utf-8", "replace")
        err = (_lib.nft_ctx_get_error_buffer(ctx) or b"").decode("utf-8", "replace")
        if rc != 0:
            raise NftError(_clean(err) or f"libnftables returned {rc}")
        return out

    def _run_exec(self, text: str, dry_run: bool) -> str:
        from pycni.firewall import spawn

        nft = spawn.which("nft")
        if nft is None:
            raise errors.PluginNotAvailable(NOT_AVAILABLE)
        argv = [nft, "-j"] + (["-c"] if dry_run else []) + ["-f", "-"]
        done = spawn.run(argv, text.encode())
        if done.rc != 0:
            raise NftError(_clean(done.stderr.decode("utf-8", "replace")) or done.describe())
        return done.stdout.decode("utf-8", "replace")


def _clean(err: str) -> str:
    lines = [line.strip() for line in err.splitlines() if line.strip()]
    lines = [line.removeprefix("internal:0:0-0: ") for line in lines]
    return "; ".join(dict.fromkeys(lines))
