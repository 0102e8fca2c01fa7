"""A real containerd (Debian's, with its CRI plugin) driven over CRI as the kubelet does.

Everything it keeps (root, state, sockets, the pods' network namespaces, the CNI config
and the IPAM leases) lives in one directory of the test's; it runs inside the test's
throwaway host namespace, so the bridges and firewall entries the plugins make never
touch the real host. `Containerd.stop()` stops containerd and every shim it started,
by PID, and unmounts what is left under its directory.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
PAUSE_IMAGE = "pycni.test/pause:1"


_PROTOS: list[tuple[ModuleType, ModuleType]] = []


def _protos() -> tuple[ModuleType, ModuleType]:
    """Compile the CRI subset with grpcio-tools (once per process) and import it; the
    generated files are removed once imported."""
    if _PROTOS:
        return _PROTOS[0]
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="pycni-cri-")
    try:
        rc = protoc.main(
            [
                "protoc",
                f"-I{HERE}",
                f"--python_out={out}",
                f"--grpc_python_out={out}",
                str(HERE / "cri_subset.proto"),
            ]
        )
        assert rc == 0, "protoc failed on tests/cri/cri_subset.proto"
        sys.path.insert(0, out)
        try:
            import cri_subset_pb2  # type: ignore[import-not-found]
            import cri_subset_pb2_grpc  # type: ignore[import-not-found]
        finally:
            sys.path.remove(out)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    _PROTOS.append((cri_subset_pb2, cri_subset_pb2_grpc))
    return _PROTOS[0]


def _blob(layout: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def pause_image(path: Path) -> Path:
    """An OCI image archive whose only process sleeps (busybox-static), built offline:
    no registry is reachable here, and the CRI needs its sandbox image locally."""
    busybox = shutil.which("busybox")
    assert busybox, "busybox-static is needed for the pause image (scripts/setup.sh installs it)"
    layout = path / "layout"
    (layout / "blobs" / "sha256").mkdir(parents=True)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("bin")
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        tar.add(busybox, "bin/busybox")
    layer_tar = raw.getvalue()
    layer = _blob(layout, gzip.compress(layer_tar, mtime=0))
    layer["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
    config = _blob(
        layout,
        json.dumps(
            {
                "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(
                    os.uname().machine, "amd64"
                ),
                "os": "linux",
                "config": {"Entrypoint": ["/bin/busybox", "sleep", "2147483"]},
                "rootfs": {
                    "type": "layers",
                    "diff_ids": [f"sha256:{hashlib.sha256(layer_tar).hexdigest()}"],
                },
            }
        ).encode(),
    )
    config["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = _blob(
        layout,
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config,
                "layers": [layer],
            }
        ).encode(),
    )
    manifest["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
    manifest["annotations"] = {
        "io.containerd.image.name": PAUSE_IMAGE,
        "org.opencontainers.image.ref.name": PAUSE_IMAGE.rsplit(":", 1)[1],
    }
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest]}))
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    archive = path / "pause.tar"
    with tarfile.open(archive, "w") as tar:
        for item in sorted(layout.iterdir()):
            tar.add(item, item.name)
    return archive


CONFIG = """\
version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{d}/c.sock"

[ttrpc]
  address = "{d}/c.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{image}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin_dir}"
    conf_dir = "{d}/net.d"
    max_conf_num = 1
"""


class Containerd:
    """containerd in `netns` (a throwaway host namespace's path) with CNI plugins from
    `bin_dir` and the conflist `conflist`; `env` goes to containerd, and through it to
    every plugin it execs."""

    def __init__(
        self, netns: str, bin_dir: str, conflist: dict[str, Any], env: dict[str, str]
    ) -> None:
        # A short directory: unix socket paths are limited to 107 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="pytcd-", dir="/tmp"))
        self.netns = netns
        self.bin_dir = bin_dir
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.pb, self.pb_grpc = _protos()
        (self.dir / "net.d").mkdir()
        (self.dir / "net.d" / "10-test.conflist").write_text(json.dumps(conflist))
        (self.dir / "config.toml").write_text(
            CONFIG.format(d=self.dir, image=PAUSE_IMAGE, bin_dir=bin_dir)
        )
        self.image = pause_image(self.dir)
        self._channel: Any = None
        self.holder: subprocess.Popen[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def socket(self) -> str:
        return str(self.dir / "c.sock")

    def start(self) -> None:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **self.env}
        log = open(self.dir / "containerd.log", "ab")  # noqa: SIM115 (kept by the process)
        if self.holder is None:
            self.holder = self._mount_namespace()
        self.proc = subprocess.Popen(
            [
                "nsenter",
                "-t",
                str(self.holder.pid),
                "-m",
                f"--net={self.netns}",
                "containerd",
                "--config",
                str(self.dir / "config.toml"),
            ],
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"containerd exited: {self.log()[-3000:]}")
            if os.path.exists(self.socket):
                try:
                    self.version()
                    break
                except Exception:
                    pass
            time.sleep(0.1)
        else:
            raise AssertionError(f"containerd did not answer in 30 s: {self.log()[-3000:]}")
        self.ctr("images", "import", "--all-platforms", str(self.image))

    def _mount_namespace(self) -> subprocess.Popen[bytes]:
        """A process that holds a mount namespace of containerd's own for as long as the
        test runs (containerd restarts in it, as a node's containerd finds its /run
        again): directories of ours over /run and /var/lib, because containerd 1.6 keeps
        runc state and shim sockets under /run/containerd and go-cni its result cache
        under /var/lib/cni, paths it cannot move."""
        for sub in ("run", "varlib"):
            (self.dir / sub).mkdir(exist_ok=True)
        script = (
            'mount --make-rprivate / && mount --bind "$1/run" /run && '
            'mount --bind "$1/varlib" /var/lib && echo ready && exec sleep 86400'
        )
        holder = subprocess.Popen(
            ["unshare", "-m", "sh", "-c", script, "sh", str(self.dir)],
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert holder.stdout is not None
        if holder.stdout.readline().strip() != b"ready":
            holder.kill()
            holder.wait()
            raise AssertionError("could not make containerd's mount namespace")
        return holder

    def log(self) -> str:
        try:
            return (self.dir / "containerd.log").read_text(errors="replace")
        except OSError:
            return ""

    def ctr(self, *args: str) -> str:
        proc = subprocess.run(
            ["ctr", "--address", self.socket, "--namespace", "k8s.io", *args],
            capture_output=True,
            timeout=60,
        )
        assert proc.returncode == 0, f"ctr {' '.join(args)}: {proc.stderr.decode()}"
        return proc.stdout.decode()

    def kill(self) -> None:
        """Stop containerd itself (SIGTERM, then SIGKILL); its shims and pods live on, as
        on a node whose containerd restarts."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def in_mounts(self, *cmd: str) -> list[str]:
        """`cmd` in containerd's mount namespace (where the pods' netns mounts are)."""
        assert self.holder is not None
        return ["nsenter", "-t", str(self.holder.pid), "-m", *cmd]

    def shim_pids(self) -> list[int]:
        """The shims containerd started for this instance (their command line names our
        socket), found by PID."""
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if (
                cmdline
                and cmdline[0].endswith(b"containerd-shim-runc-v2")
                and self.socket.encode() in cmdline
            ):
                pids.append(int(entry))
        return pids

    def stop(self) -> None:
        """Remove every pod (through CRI), stop containerd and its shims by PID, unmount
        and delete the directory."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                for pod in self.list_pods():
                    try:
                        self.stop_pod(pod.id)
                        self.remove_pod(pod.id)
                    except Exception:
                        pass
        finally:
            self.kill()
            for pid in self.shim_pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 10
            while self.shim_pids() and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.holder is not None:
                self.holder.kill()  # its mount namespace, and every mount in it, go too
                self.holder.wait()
                self.holder = None
            for mount in reversed(mounts_under(self.dir)):
                subprocess.run(["umount", "-l", mount], capture_output=True)
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- CRI -----------------------------------------------------------------------------

    @property
    def runtime(self) -> Any:
        import grpc

        if self._channel is None:
            self._channel = grpc.insecure_channel(f"unix://{self.socket}")
        return self.pb_grpc.RuntimeServiceStub(self._channel)

    def version(self) -> Any:
        return self.runtime.Version(self.pb.VersionRequest(version="v1"), timeout=5)

    def run_pod(self, name: str, ports: list[tuple[int, int]] = (), **annotations: str) -> str:  # type: ignore[assignment]
        pb = self.pb
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(
                name=name, uid=f"uid-{name}", namespace="default", attempt=0
            ),
            hostname=name,
            log_directory=str(self.dir / "logs" / name),
            port_mappings=[
                pb.PortMapping(protocol=pb.TCP, container_port=cport, host_port=hport)
                for hport, cport in ports
            ],
            annotations=annotations,
            linux=pb.LinuxPodSandboxConfig(),
        )
        reply = self.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=120)
        return str(reply.pod_sandbox_id)

    def pod_status(self, pod_id: str) -> tuple[Any, dict[str, Any]]:
        reply = self.runtime.PodSandboxStatus(
            self.pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True), timeout=30
        )
        info = json.loads(reply.info["info"]) if "info" in reply.info else {}
        return reply.status, info

    def pod_netns(self, pod_id: str) -> str:
        _status, info = self.pod_status(pod_id)
        for ns in info["runtimeSpec"]["linux"]["namespaces"]:
            if ns["type"] == "network":
                return str(ns["path"])
        raise AssertionError(f"pod {pod_id} has no network namespace: {info}")

    def stop_pod(self, pod_id: str) -> None:
        self.runtime.StopPodSandbox(
            self.pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=120
        )

    def remove_pod(self, pod_id: str) -> None:
        self.runtime.RemovePodSandbox(
            self.pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=120
        )

    def list_pods(self) -> list[Any]:
        return list(self.runtime.ListPodSandbox(self.pb.ListPodSandboxRequest(), timeout=30).items)


def mounts_under(directory: Path) -> list[str]:
    prefix = str(directory) + "/"
    out = []
    with open("/proc/self/mounts") as fh:
        for line in fh:
            target = line.split()[1].replace("\\040", " ")
            if target.startswith(prefix):
                out.append(target)
    return out


SUBNET = "10.88.0.0/16"


def conflist(leases: Path) -> dict[str, Any]:
    """What a node's /etc/cni/net.d holds for containerd: bridge + portmap."""
    return {
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "pytcni0",
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": SUBNET}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(leases),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
