#!/usr/bin/env bash
# Set up, then run the whole test suite (unit, integration, traffic, runtime) as root.
# Root tests are never skipped here: PYCNI_REQUIRE_ROOT=1 turns a skip into an error,
# and the junit report is checked for skips.
set -euo pipefail
. "$(dirname "$0")/as-root.sh"
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PYCNI_REQUIRE_ROOT=1
report=$(mktemp /tmp/pycni-junit.XXXXXX.xml)
set +e
.venv/bin/python -m pytest tests -n "${PYTEST_WORKERS:-auto}" -q --junitxml="$report" "$@"
rc=$?
set -e
.venv/bin/python - "$report" <<'PY'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root)
skipped = sum(int(s.get("skipped", 0)) for s in suites)
tests = sum(int(s.get("tests", 0)) for s in suites)
print(f"junit: {tests} tests, {skipped} skipped")
if skipped:
    sys.exit("skipped tests are not allowed: every test, root ones included, must run")
PY
rm -f "$report"
exit $rc
