#!/bin/bash
# run-tests.sh — builds (via tools/bootstrap.sh) and runs every meson test suite, then prints
# the closing line "N passed, N failed, N skipped" (counted from meson's JSON test log).
# Exit status 0 only when nothing failed.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
export BUILD_DIR
tools/bootstrap.sh || { echo "0 passed, 1 failed"; exit 1; }

meson test -C "$BUILD_DIR" --print-errorlogs --num-processes 2 "$@"
status=$?

python3 - "$BUILD_DIR/meson-logs/testlog.json" <<'PY'
import json, sys
passed = failed = skipped = 0
checks = 0
try:
    lines = open(sys.argv[1]).read().splitlines()
except OSError:
    lines = []
for line in lines:
    r = json.loads(line)
    result = r.get("result")
    if result in ("OK", "EXPECTEDFAIL"):
        passed += 1
    elif result == "SKIP":
        skipped += 1
    else:
        failed += 1
    for out_line in (r.get("stdout") or "").splitlines():
        if ": checks: " in out_line:
            try:
                checks += int(out_line.split(": checks: ")[1].split(",")[0])
            except ValueError:
                pass
if not lines:
    failed = 1
print(f"(test programs: {passed + failed + skipped}; individual checks inside them: {checks})")
print(f"{passed} passed, {failed} failed, {skipped} skipped")
PY
exit $status
