#!/usr/bin/env bash
# Set up, then the main job: a web server in a container on the default bridge
# network with -p 8080:80, fetched from the host through the published port.
set -euo pipefail
. "$(dirname "$0")/as-root.sh"
cd "$(dirname "$0")/.."
./scripts/setup.sh
NETCTL="$PWD/.venv/bin/netctl"
PY="$PWD/.venv/bin/python3"

# A sandbox for netctl's own files; the default network is configured the Docker way,
# with a daemon.json (here: its own bridge and subnet, so it cannot clash with docker0).
own_root=
if [ -z "${NETCTL_ROOT:-}" ]; then
    NETCTL_ROOT=$(mktemp -d /tmp/netctl-demo.XXXXXX)
    own_root=1
fi
export NETCTL_ROOT
export NETCTL_DAEMON_CONFIG=$NETCTL_ROOT/daemon.json
cat >"$NETCTL_DAEMON_CONFIG" <<'JSON'
{"bridge": "netctl-demo0", "bip": "10.199.0.1/24", "ip-masq": true, "icc": true}
JSON
site=$NETCTL_ROOT/site
mkdir -p "$site"
echo "<h1>hello from a pycni container</h1>" >"$site/index.html"

# Our nft tables that exist before the demo stay; the ones the demo creates go with it.
tables_before=$(nft list tables 2>/dev/null || true)
cleanup() {
    "$NETCTL" rm -f demo-web >/dev/null 2>&1 || true
    ip link del netctl-demo0 2>/dev/null || true
    for t in "inet pycni" "inet pycni_isolation" "bridge pycni_spoof"; do
        if ! grep -qx "table $t" <<<"$tables_before" && nft list table $t >/dev/null 2>&1; then
            nft delete table $t
        fi
    done
    # The sandbox goes too when the demo made it (nothing is mounted there any more:
    # `rm -f` removed the container's netns mount).
    if [ -n "$own_root" ] && ! grep -q " $NETCTL_ROOT/" /proc/self/mountinfo; then
        rm -rf "$NETCTL_ROOT"
    fi
}
trap cleanup EXIT

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step "$NETCTL" run -d --name demo-web -p 8080:80 -- "$PY" -m http.server 80 --directory "$site"
for _ in $(seq 50); do curl -fs -o /dev/null http://127.0.0.1:8080/ && break; sleep 0.1; done
step curl -fsS http://127.0.0.1:8080/
host_ip=$(ip -4 -o route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' || true)
if [ -n "$host_ip" ]; then step curl -fsS "http://$host_ip:8080/"; fi
step "$NETCTL" ps
step "$NETCTL" port demo-web
printf '\n\033[1m$ %s\033[0m\n' "netctl inspect demo-web  (network settings)"
"$NETCTL" inspect demo-web | sed -n '/"Networks"/,/^            }/p'
step "$NETCTL" run --rm --network container:demo-web -- ip -br addr
step "$NETCTL" rm -f demo-web
echo
echo "demo done: the container, its veth, lease and published port are gone"
