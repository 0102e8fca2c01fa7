# Sourced first thing by scripts/demo.sh and scripts/test.sh, which need root (network
# namespaces, nftables, mounts). As root: nothing happens. Otherwise the same command is
# run again through sudo (keeping the variables these scripts read); without sudo, the
# script stops and says how to run it.
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "$0: needs root (network namespaces, nftables) and sudo is not installed: run it as root" >&2
        exit 1
    fi
    keep=()
    for var in NETCTL_ROOT PYTEST_WORKERS PYTHON; do
        if [ -n "${!var:-}" ]; then keep+=("$var=${!var}"); fi
    done
    echo "$0: needs root: running it again with sudo" >&2
    exec sudo -- env "${keep[@]}" "$(cd "$(dirname "$0")" && pwd)/$(basename "$0")" "$@"
fi
