#!/usr/bin/env bash
# Set up a fresh Debian machine (as root) for pycni: system packages, a venv, the package.
# Idempotent and quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(iproute2 iputils-ping nftables iptables conntrack containernetworking-plugins iperf3 procps curl python3-venv
      containerd runc busybox-static util-linux
      graphviz librsvg2-bin  # netctl graph renders SVG with dot; the tests turn it into PNG
      podman aardvark-dns  # podman's CNI backend drives our plugins; aardvark-dns: bench/dns.py's peer
      etcd-server etcd-client openssl  # overlay tests: a real 3-member etcd, a test CA
      gcc libc6-dev  # gcc: `netctl plugins install` builds the compiled plugin client (pycni/native)
      dnsmasq-base)  # DHCP server (test_dhcp) and upstream resolver (test_netctl_dns); -base: no service
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "+ apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's own interpreter where it is recent enough: it is linked statically and built
# with PGO/LTO, so every plugin exec and netctl command starts ~2 ms sooner than under a
# shared-library build (pyenv's, say) that may come first in PATH. PYTHON=... overrides.
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    PY=python3
    if /usr/bin/python3 -c 'import sys, venv; assert sys.version_info >= (3, 11)' 2>/dev/null; then
        PY=/usr/bin/python3
    fi
fi
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), "pycni needs Python >= 3.11"'
if [ ! -x .venv/bin/python ]; then
    echo "+ $PY -m venv .venv"
    "$PY" -m venv .venv
fi
stamp=.venv/.pycni-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "+ pip install -e .[test]"
    .venv/bin/pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v "^WARNING: Location" || true
    .venv/bin/python -c "import pycni.runtime.cli, pyroute2, pydantic, scapy, pytest" # fail loudly if pip failed
    touch "$stamp"
fi
# `netctl` starts like the plugins: `python -IS` with the package path written in (pip's
# entry-point script would first scan site-packages, most of a short command's start-up).
.venv/bin/python -m pycni.runtime.install --launcher .venv/bin/netctl
