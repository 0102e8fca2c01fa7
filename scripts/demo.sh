#!/usr/bin/env bash
# Set up, then show pycni at work: install the plugins, attach a fresh network
# namespace to a `none`-mode network (loopback plugin), run a workload in it, detach.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
NETCTL=.venv/bin/netctl
export NETCTL_ROOT=${NETCTL_ROOT:-$(mktemp -d /tmp/netctl-demo.XXXXXX)}
ns=netctl-demo-$$
confdir=$NETCTL_ROOT/etc/netctl/net.d
cleanup() { ip netns del "$ns" 2>/dev/null || true; }
trap cleanup EXIT

echo "== plugins"
$NETCTL plugins install
$NETCTL plugins list
mkdir -p "$confdir"
echo '{"cniVersion": "1.1.0", "name": "none", "plugins": [{"type": "loopback"}]}' >"$confdir/00-none.conflist"

echo "== a workload in its own network namespace, mode none"
ip netns add "$ns"
$NETCTL cni add none --netns "/var/run/netns/$ns" --id demo1
ip netns exec "$ns" sh -c 'echo "inside: $(ip -br addr)"; ping -c1 -W1 127.0.0.1 >/dev/null && echo "inside: 127.0.0.1 answers"'
$NETCTL cni check none --netns "/var/run/netns/$ns" --id demo1 && echo "CHECK: ok"
$NETCTL cni del none --netns "/var/run/netns/$ns" --id demo1 && echo "DEL: ok"
