#!/usr/bin/env bash
# Build the C reference, run the core benchmarks, write benchmarks/RESULTS.md.
#
#   benchmarks/run.sh           pyperf defaults (20 processes x 3 values): ~2 min on 2 cores
#   benchmarks/run.sh --fast    quick look (10 processes x 2 values): ~1 min
#
# Any other arguments go to bench_core.py (pyperf options, --bench NAME,
# --threadpool-workers N).  Results: benchmarks/results/core.json, replaced
# only when the run succeeds.  PYTHON overrides the interpreter (default: the
# project venv).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=${PYTHON:-$here/../.venv/bin/python}
results=$here/results
out=$results/core.json

make -C "$here/c"
mkdir -p "$results"

tmp=$(mktemp "$results/.core.XXXXXX.json")
rm -f "$tmp" # pyperf refuses to write over an existing file
trap 'rm -f "$tmp"' EXIT

start=$SECONDS
"$py" "$here/bench_core.py" --quiet -o "$tmp" "$@"
mv "$tmp" "$out"
echo "benchmarks took $((SECONDS - start)) s; results in $out"

"$py" "$here/report.py" "$out"
