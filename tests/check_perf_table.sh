#!/bin/bash
# check_perf_table.sh — docs/PERFORMANCE.md's table of predicted ms per step must be what the
# model prints today (`moire-perf-model --markdown`, engine/models/perf_model.c): a change to the
# model or to its device figures fails here until the table is regenerated.
# Usage: check_perf_table.sh MOIRE_PERF_MODEL DOCS_PERFORMANCE_MD
set -u
tool=${1:?moire-perf-model}
doc=${2:?docs/PERFORMANCE.md}
table=$("$tool" --markdown) || { echo "perf_table: $tool failed"; exit 1; }
checks=0 failures=0
while IFS= read -r line; do
    checks=$((checks + 1))
    if ! grep -qxF -- "$line" "$doc"; then
        failures=$((failures + 1))
        echo "not in $doc (regenerate the table with moire-perf-model --markdown):"
        echo "  $line"
    fi
done <<<"$table"
echo "perf_table: checks: $checks, failures: $failures"
[ "$failures" = 0 ]
