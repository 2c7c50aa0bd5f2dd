#!/usr/bin/env bash
# Build the C programs, run the core and network benchmarks, write benchmarks/RESULTS.md.
#
#   benchmarks/run.sh           core: pyperf defaults (20 processes x 3 values), ~2 min;
#                               net: 10 processes x 3 values, ~1.5 min (2 cores)
#   benchmarks/run.sh --fast    quick look (10 processes x 2 values each): ~2.5 min
#
# Options of this script:
#   --suite core|net        run only bench_core.py or only bench_net.py
#   --bench NAME            to bench_net.py for tcp5-*/rr-* names, else to bench_core.py;
#                           a suite none of the given names belongs to is skipped
#   --threadpool-workers N  to bench_core.py
#   --threads-workers N, --loop-api API   to bench_net.py
# Anything else (pyperf options) goes to both.  Results:
# benchmarks/results/core.json and net.json, each replaced only when its run
# succeeds; the report is made from both (whichever exist).  PYTHON overrides
# the interpreter (default: the project venv).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=${PYTHON:-$here/../.venv/bin/python}
results=$here/results

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//' >&2
	exit 2
}

suites=(core net)
core_args=()
net_args=()
both_args=()
core_benches=0
net_benches=0
while (($#)); do
	case $1 in
	--suite)
		[[ $# -ge 2 && ($2 == core || $2 == net) ]] || usage
		suites=("$2")
		shift 2
		;;
	--bench)
		[[ $# -ge 2 ]] || usage
		case $2 in
		tcp5-* | rr-*) net_args+=(--bench "$2") && net_benches=1 ;;
		*) core_args+=(--bench "$2") && core_benches=1 ;;
		esac
		shift 2
		;;
	--threadpool-workers)
		[[ $# -ge 2 ]] || usage
		core_args+=("$1" "$2")
		shift 2
		;;
	--threads-workers | --loop-api)
		[[ $# -ge 2 ]] || usage
		net_args+=("$1" "$2")
		shift 2
		;;
	-h | --help) usage ;;
	*)
		both_args+=("$1")
		shift
		;;
	esac
done
if ((core_benches + net_benches == 1)); then
	((core_benches)) && suites=(core) || suites=(net)
fi

make -C "$here/c"
mkdir -p "$results"

tmp=""
trap 'rm -f "$tmp"' EXIT

# run SUITE SCRIPT ARGS...: one pyperf run into results/SUITE.json
run() {
	local suite=$1 script=$2 start=$SECONDS
	shift 2
	tmp=$(mktemp "$results/.$suite.XXXXXX.json")
	rm -f "$tmp" # pyperf refuses to write over an existing file
	"$py" "$here/$script" --quiet -o "$tmp" "$@"
	mv "$tmp" "$results/$suite.json"
	echo "$suite benchmarks took $((SECONDS - start)) s; results in $results/$suite.json"
}

total=$SECONDS
for suite in "${suites[@]}"; do
	case $suite in
	core) run core bench_core.py ${core_args[@]+"${core_args[@]}"} ${both_args[@]+"${both_args[@]}"} ;;
	# --processes 10 keeps the whole run near 5 minutes; a later -p/--fast wins.
	# --timeout: a hung worker (a peer without its own hang check) fails the run.
	net) run net bench_net.py --processes 10 --timeout 300 \
		${net_args[@]+"${net_args[@]}"} ${both_args[@]+"${both_args[@]}"} ;;
	esac
done
echo "all benchmarks took $((SECONDS - total)) s"

reports=()
for suite in core net; do
	[[ -f $results/$suite.json ]] && reports+=("$results/$suite.json")
done
"$py" "$here/report.py" "${reports[@]}"
