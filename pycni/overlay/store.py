"""The etcd boundary: etcd3gw (etcd's v3 JSON gateway over HTTP) with member failover.

Why etcd3gw: python-etcd3 0.12 does not import with today's protobuf (its generated
_pb2 modules predate protobuf 4); etcd3gw 2.7 imports cleanly (~96 ms, so never on the
plugin start-up path) and speaks the gateway that etcd 3.4 serves at /v3/. It talks to
one member; this module tries each member of `cluster-store` in turn, with short
timeouts, and turns every transport or quorum failure into `Unavailable` (CNI code 11
at the plugin edge).

Keys and values are text; the gateway's base64 is handled here.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

from pycni import errors
from pycni.overlay.spec import ClusterStore

TIMEOUT = 2.0  # seconds per member and request: a lost quorum answers within ~2 s x members


class Unavailable(errors.TryAgainLater):
    """etcd cannot be reached or has no quorum: try again later (code 11)."""


class Compacted(Exception):
    """A watch started below the compacted revision: re-list, then watch again."""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    # etcd holds bytes: a key or value some other client wrote need not be UTF-8 (what
    # reads it then finds it malformed, instead of the whole range failing to decode)
    return base64.b64decode(text).decode(errors="replace")


def prefix_end(prefix: str) -> str:
    """etcd's range_end for a prefix: the prefix with its last byte incremented."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return raw.decode()


def _client_module() -> Any:
    """etcd3gw, off the plugin start-up path. A plugin executable runs as `python -IS`
    (no site-packages, for start-up speed); only then are site directories added."""
    try:
        import etcd3gw
    except ImportError:
        import site

        site.main()
        import etcd3gw
    return etcd3gw


def _why(exc: Exception) -> str:
    """A transport failure in a few words (TLS problems named as such)."""
    # etcd3gw keeps the underlying error's text in detail_text, not in str()
    text = f"{getattr(exc, 'detail_text', '') or ''} {exc}"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "TLS: the server's certificate is not signed by kv.cacertfile's CA"
    if "SSL" in text or "TLS" in text:
        return "TLS handshake failed (client certificate missing or refused?)"
    if "timed out" in text or "Timeout" in type(exc).__name__:
        return f"no answer within {TIMEOUT:g}s"
    if "refused" in text:
        return "connection refused"
    return type(exc).__name__


class KV:
    __slots__ = ("key", "lease", "mod_revision", "value")

    def __init__(self, d: dict[str, Any]) -> None:
        self.key = _unb64(d["key"])
        self.value = _unb64(d.get("value", ""))
        self.mod_revision = int(d.get("mod_revision", 0))
        self.lease = int(d.get("lease", 0))


class Store:
    """A few etcd v3 verbs, each tried on every member until one answers."""

    def __init__(self, cluster: ClusterStore, timeout: float = TIMEOUT) -> None:
        etcd3gw = _client_module()

        self.cluster = cluster
        self.timeout = timeout
        self.clients = [
            etcd3gw.Etcd3Client(
                host=host,
                port=port,
                protocol=cluster.protocol,
                ca_cert=cluster.cacert or None,
                cert_cert=cluster.cert or None,
                cert_key=cluster.key or None,
                timeout=timeout,
                api_path="/v3/",  # etcd >= 3.4; skips a discovery round trip
            )
            for host, port in cluster.endpoints
        ]
        self._good = 0  # the member that answered last

    # -- transport ----------------------------------------------------------------------

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        from etcd3gw import exceptions as gwexc

        failures = []
        n = len(self.clients)
        for i in range(n):
            idx = (self._good + i) % n
            client = self.clients[idx]
            try:
                out: dict[str, Any] = client.post(client.get_url(path), json=body)
            except (gwexc.ConnectionFailedError, gwexc.ConnectionTimeoutError) as exc:
                failures.append(f"{client.host}:{client.port}: {_why(exc)}")
                continue
            except gwexc.Etcd3Exception as exc:
                detail = str(getattr(exc, "detail_text", "") or exc)
                # no leader / timed out inside etcd: quorum lost; another member may know
                failures.append(f"{client.host}:{client.port}: {detail[:120]}")
                continue
            except OSError as exc:
                failures.append(f"{client.host}:{client.port}: {exc}")
                continue
            self._good = idx
            return out
        tls = "TLS" if any("TLS" in f for f in failures) else ""
        raise Unavailable(
            f"etcd cluster store {self.cluster.url()} is unavailable (no member answered "
            + ("over TLS)" if tls else "with a quorum)"),
            "; ".join(failures) + "; check that a majority of the etcd members is up",
        )

    # -- verbs ----------------------------------------------------------------------------

    def get(self, key: str) -> KV | None:
        out = self.call("/kv/range", {"key": _b64(key)})
        kvs = out.get("kvs") or []
        return KV(kvs[0]) if kvs else None

    def get_prefix(self, prefix: str) -> tuple[int, list[KV]]:
        """(revision, every key under prefix) at one revision."""
        out = self.call("/kv/range", {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))})
        rev = int(out.get("header", {}).get("revision", 0))
        return rev, [KV(kv) for kv in out.get("kvs") or []]

    def put(self, key: str, value: str, lease: int = 0) -> None:
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = lease
        self.call("/kv/put", body)

    def create(self, key: str, value: str, lease: int = 0) -> bool:
        """Put only if the key does not exist (one transaction); True if this call made it."""
        put: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            put["lease"] = lease
        out = self.call(
            "/kv/txn",
            {
                "compare": [{"key": _b64(key), "result": "EQUAL", "target": "CREATE",
                             "create_revision": 0}],
                "success": [{"request_put": put}],
                "failure": [],
            },
        )  # fmt: skip
        return bool(out.get("succeeded", False))

    def create_all(self, items: dict[str, str]) -> bool:
        """Put every key only if none of them exists (one transaction)."""
        out = self.call(
            "/kv/txn",
            {
                "compare": [
                    {"key": _b64(k), "result": "EQUAL", "target": "CREATE", "create_revision": 0}
                    for k in items
                ],
                "success": [
                    {"request_put": {"key": _b64(k), "value": _b64(v)}} for k, v in items.items()
                ],
                "failure": [],
            },
        )
        return bool(out.get("succeeded", False))

    def replace(self, key: str, mod_revision: int, value: str, lease: int = 0) -> bool:
        """Put only if the key is still at mod_revision (compare-and-swap)."""
        put: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            put["lease"] = lease
        out = self.call(
            "/kv/txn",
            {
                "compare": [{"key": _b64(key), "result": "EQUAL", "target": "MOD",
                             "mod_revision": mod_revision}],
                "success": [{"request_put": put}],
                "failure": [],
            },
        )  # fmt: skip
        return bool(out.get("succeeded", False))

    def delete(self, key: str) -> int:
        out = self.call("/kv/deleterange", {"key": _b64(key)})
        return int(out.get("deleted", 0))

    def delete_if(self, key: str, mod_revision: int) -> bool:
        out = self.call(
            "/kv/txn",
            {
                "compare": [{"key": _b64(key), "result": "EQUAL", "target": "MOD",
                             "mod_revision": mod_revision}],
                "success": [{"request_delete_range": {"key": _b64(key)}}],
                "failure": [],
            },
        )  # fmt: skip
        return bool(out.get("succeeded", False))

    def grant(self, ttl: int) -> int:
        out = self.call("/lease/grant", {"TTL": ttl})
        return int(out["ID"])

    def keepalive(self, lease: int) -> int:
        """Renew; the remaining TTL, 0 if the lease is gone (expired or revoked)."""
        out = self.call("/lease/keepalive", {"ID": lease})
        return int(out.get("result", {}).get("TTL", 0))

    def revoke(self, lease: int) -> None:
        self.call("/lease/revoke", {"ID": lease})

    def watch_prefix(
        self, prefix: str, start_revision: int, idle: float
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield batches of events ({"type": "PUT"|"DELETE", "kv": KV, "revision": n}) for
        keys under prefix from start_revision; returns after `idle` seconds without
        traffic (the caller renews its lease and watches again from where it was).
        Raises Compacted when start_revision is no longer available."""
        import requests

        body: dict[str, Any] = {
            "create_request": {
                "key": _b64(prefix),
                "range_end": _b64(prefix_end(prefix)),
                "start_revision": start_revision,
            }
        }
        resp = None
        failures = []
        for _ in range(len(self.clients)):  # the member that answered last, then the others
            client = self.clients[self._good]
            try:
                resp = client.session.post(
                    client.get_url("/watch"), json=body, stream=True, timeout=(self.timeout, idle)
                )
                break
            except (requests.ConnectionError, requests.Timeout) as exc:
                failures.append(f"{client.host}:{client.port}: {type(exc).__name__}")
                self._good = (self._good + 1) % len(self.clients)
        if resp is None:
            raise Unavailable("etcd watch failed on every member", "; ".join(failures))
        try:
            buf = b""
            for chunk in resp.iter_content(chunk_size=None):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    msg = json.loads(line)
                    if "error" in msg:
                        raise Unavailable("etcd watch failed", str(msg["error"])[:200])
                    result = msg.get("result", {})
                    if int(result.get("compact_revision", 0) or 0) > 0:
                        raise Compacted(result["compact_revision"])
                    if result.get("canceled"):
                        raise Unavailable(
                            "etcd canceled the watch", result.get("cancel_reason", "")
                        )
                    batch = []
                    for ev in result.get("events") or []:
                        kv = KV(ev["kv"])
                        batch.append({"type": ev.get("type", "PUT"), "kv": kv,
                                      "revision": kv.mod_revision})  # fmt: skip
                    if batch:
                        yield batch
        except (requests.ConnectionError, requests.Timeout):
            return  # idle or member gone: the caller renews and watches again
        finally:
            resp.close()
