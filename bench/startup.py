"""Start-up cost: VERSION and a loopback ADD/DEL, ours vs the reference Go plugin vs a
bare interpreter, interleaved in the same run. Prints medians and ratios.

    .venv/bin/python bench/startup.py [-n 200]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from common import REFERENCE_DIR, ensure_root, median, pct, run, table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=200)
    opts = ap.parse_args()
    ensure_root()
    bindir = tempfile.mkdtemp(prefix="pycni-bench-")
    nativedir = tempfile.mkdtemp(prefix="pycni-bench-native-")
    for directory, native in ((bindir, "0"), (nativedir, "1")):
        # The Python executables (this benchmark is about their start-up), and the
        # compiled client for its VERSION (answered without Python).
        subprocess.run(
            [sys.executable, "-m", "pycni.runtime.cli", "plugins", "install", "--dir", directory],
            check=True,
            capture_output=True,
            env=dict(os.environ, PYCNI_NATIVE=native),
        )
    ours = os.path.join(bindir, "loopback")
    native_client = os.path.join(nativedir, "loopback")
    ref = os.path.join(REFERENCE_DIR, "loopback")
    with open(ours) as fh:
        interpreter = fh.readline()[2:].split()[0]
    ns = f"pycni-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    conf = json.dumps({"cniVersion": "1.0.0", "name": "bench", "type": "loopback"}).encode()
    env_base = {
        "CNI_CONTAINERID": "bench1",
        "CNI_NETNS": f"/var/run/netns/{ns}",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": bindir,
    }
    cases = {
        "bare python -I -S -c pass": lambda: run([interpreter, "-I", "-S", "-c", "pass"]),
        "VERSION ours": lambda: run([ours], env={"CNI_COMMAND": "VERSION"}),
        "VERSION reference": lambda: run([ref], env={"CNI_COMMAND": "VERSION"}),
        "VERSION compiled client": lambda: run([native_client], env={"CNI_COMMAND": "VERSION"}),
        "ADD+DEL ours": lambda: (
            run([ours], conf, dict(env_base, CNI_COMMAND="ADD", PYCNI_AGENT="0")),
            run([ours], conf, dict(env_base, CNI_COMMAND="DEL", PYCNI_AGENT="0")),
        ),
        "ADD+DEL reference": lambda: (
            run([ref], conf, dict(env_base, CNI_COMMAND="ADD")),
            run([ref], conf, dict(env_base, CNI_COMMAND="DEL")),
        ),
    }
    samples: dict[str, list[float]] = {k: [] for k in cases}
    import time

    try:
        for _ in range(3):
            for fn in cases.values():
                fn()
        # Interleave the cases so machine noise hits all of them alike.
        for _ in range(opts.n):
            for name, fn in cases.items():
                t = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - t) * 1000)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
        for directory in (bindir, nativedir):
            shutil.rmtree(directory, ignore_errors=True)
    rows = [["case", "p50 ms", "p90 ms"]]
    for name, vals in samples.items():
        rows.append([name, f"{median(vals):.2f}", f"{pct(vals, 90):.2f}"])
    print(table(rows))
    m = {k: median(v) for k, v in samples.items()}
    print()
    print(
        f"VERSION ours / bare interpreter : {m['VERSION ours'] / m['bare python -I -S -c pass']:.2f}x  (goal <= 2x)"
    )
    print(f"VERSION ours / reference       : {m['VERSION ours'] / m['VERSION reference']:.2f}x")
    print(f"ADD+DEL ours / reference       : {m['ADD+DEL ours'] / m['ADD+DEL reference']:.2f}x")


if __name__ == "__main__":
    main()
