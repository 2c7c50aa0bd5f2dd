#!/usr/bin/env bash
# Run the whole benchmark suite and write benchmarks/RESULTS.md, the plots and
# benchmarks/README-section.md.
#
#   benchmarks/run.sh           full run, about 8 minutes on the 2-core machine before
#                               the application shapes (nop1, file1, file3-refill,
#                               rr-per-event: 9 more benchmarks, roughly +1.5 min)
#   benchmarks/run.sh --fast    quick look, about 3-4 minutes: fewer processes and
#                               values, sweeps at batches 1/8/64/256 and chains
#                               1/4/16/64, half the syscall counts, 1 s profiles
#
# The steps, each a pyperf script (results/NAME.json) or a helper:
#   core      bench_core.py: nop4 and file3 (warm) against every peer, and the
#             application shapes: nop1 and file1 (one run() at a time), file3-refill
#             (64 in flight, one submit per completion)
#   cold      bench_core.py --cold: file3 with the page cache dropped before each
#             pass (needs root; skipped, with the reason in the report, if not)
#   net       bench_net.py: tcp5, rr and rr-per-event (one submit per completion)
#   sweep     bench_sweep.py: batch-size and chain-length sweeps (plots)
#   syscalls  syscalls.py: io_uring_enter and all system calls per execution (strace)
#   profiles  profiles.py: py-spy and perf profiles (where the time goes)
#   report    report.py: RESULTS.md, plots/*.png, README-section.md
#
# Options of this script:
#   --fast                  quick look (see above)
#   --suite NAME            run only this step (repeatable); the report always runs
#                           and uses the newest results of every step
#   --bench NAME            to bench_net.py for tcp5-*/rr-* names (rr-per-event-* too),
#                           to the cold run for file3cold-*, else to bench_core.py;
#                           steps none of the given names belongs to are skipped.  Some
#                           workloads share peers measured once: file1-* and
#                           file3-refill-* are compared with file3-plain, rr-per-event-*
#                           with rr-asyncio, rr-uvloop and rr-c-liburing; name those
#                           too, e.g. --bench file1-uringlets --bench file1-c-liburing
#                           --bench file3-plain
#   --threadpool-workers N  to bench_core.py
#   --threads-workers N, --loop-api API   to bench_net.py
# Anything else (pyperf options, e.g. -p 5) goes to every pyperf script and wins
# over this script's choices.  Each results file is replaced only when its step
# succeeds.  PYTHON overrides the interpreter (default: the project venv).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=${PYTHON:-$here/../.venv/bin/python}
results=$here/results

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//' >&2
	exit 2
}

fast=0
steps=()
core_args=()
cold_args=()
net_args=()
pyperf_args=()
benches=()
while (($#)); do
	case $1 in
	--fast)
		fast=1
		shift
		;;
	--suite)
		[[ $# -ge 2 ]] || usage
		case $2 in
		core | cold | net | sweep | syscalls | profiles) steps+=("$2") ;;
		*) usage ;;
		esac
		shift 2
		;;
	--bench)
		[[ $# -ge 2 ]] || usage
		case $2 in
		tcp5-* | rr-*) net_args+=(--bench "$2") && benches+=(net) ;;
		file3cold-*) cold_args+=(--bench "$2") && benches+=(cold) ;;
		*) core_args+=(--bench "$2") && benches+=(core) ;;
		esac
		shift 2
		;;
	--threadpool-workers)
		[[ $# -ge 2 ]] || usage
		core_args+=("$1" "$2")
		cold_args+=("$1" "$2")
		shift 2
		;;
	--threads-workers | --loop-api)
		[[ $# -ge 2 ]] || usage
		net_args+=("$1" "$2")
		shift 2
		;;
	-h | --help) usage ;;
	*)
		pyperf_args+=("$1")
		shift
		;;
	esac
done
if ((${#steps[@]} == 0)); then
	if ((${#benches[@]})); then
		mapfile -t steps < <(printf '%s\n' "${benches[@]}" | sort -u)
	else
		steps=(core cold net sweep syscalls profiles)
	fi
fi

# Processes x values per pyperf script (pyperf's own --fast would override -p).
if ((fast)); then
	core_pyperf=(-p 3 -n 2)
	cold_pyperf=(-p 2 -n 2)
	net_pyperf=(-p 3 -n 2)
	sweep_pyperf=(-p 3 -n 2 --batches 1,8,64,256 --chains 1,4,16,64)
	helper_args=(--fast)
else
	core_pyperf=(-p 10 -n 3)
	cold_pyperf=(-p 3 -n 3)
	net_pyperf=(-p 10 -n 3)
	sweep_pyperf=(-p 4 -n 3 --min-time 0.05)
	helper_args=()
fi

make -C "$here/c"
mkdir -p "$results"

tmp=""
trap 'rm -f "$tmp"' EXIT
declare -A took=()
notes_cold=""
# Anything else busy on the machine (the test suite, say) is noted in the report.
busy=$(pgrep -a -f pytest | head -3 | cut -c1-120 | paste -sd ';' || true)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

# pyperf_run STEP SCRIPT ARGS...: one pyperf run into results/STEP.json; returns
# the script's exit status (explicitly: callers may run it where set -e is off)
pyperf_run() {
	local step=$1 script=$2 start=$SECONDS
	shift 2
	tmp=$(mktemp "$results/.$step.XXXXXX.json") || return
	rm -f "$tmp" # pyperf refuses to write over an existing file
	"$py" "$here/$script" --quiet -o "$tmp" "$@" || return
	mv "$tmp" "$results/$step.json" || return
	took[$step]=$((SECONDS - start))
	echo "$step: ${took[$step]} s; results in $results/$step.json"
}

total=$SECONDS
for step in "${steps[@]}"; do
	case $step in
	core)
		pyperf_run core bench_core.py "${core_pyperf[@]}" \
			${core_args[@]+"${core_args[@]}"} ${pyperf_args[@]+"${pyperf_args[@]}"} || exit
		;;
	cold)
		# exit status 3: cold runs impossible here (no root, tmpfs): say why, go on
		errors=$(mktemp)
		status=0
		pyperf_run cold bench_core.py --cold "${cold_pyperf[@]}" \
			${cold_args[@]+"${cold_args[@]}"} ${pyperf_args[@]+"${pyperf_args[@]}"} \
			2>"$errors" || status=$?
		cat "$errors" >&2
		if ((status == 3)); then
			notes_cold=$(sed -n 's/^cold file3 skipped: //p' "$errors")
			rm -f "$results/cold.json" "$tmp"
		elif ((status != 0)); then
			rm -f "$errors"
			exit "$status"
		fi
		rm -f "$errors"
		;;
	net)
		# --timeout: a hung worker (a peer without its own hang check) fails the run.
		pyperf_run net bench_net.py "${net_pyperf[@]}" --timeout 300 \
			${net_args[@]+"${net_args[@]}"} ${pyperf_args[@]+"${pyperf_args[@]}"} || exit
		;;
	sweep)
		pyperf_run sweep bench_sweep.py "${sweep_pyperf[@]}" \
			${pyperf_args[@]+"${pyperf_args[@]}"} || exit
		;;
	syscalls | profiles)
		start=$SECONDS
		script=$step.py
		out=$results/syscalls.json
		[[ $step == profiles ]] && out=$results/profile.json
		"$py" "$here/$script" -o "$out" ${helper_args[@]+"${helper_args[@]}"}
		took[$step]=$((SECONDS - start))
		echo "$step: ${took[$step]} s; results in $out"
		;;
	esac
done
seconds=$((SECONDS - total))
echo "all steps took $seconds s"

# run.json: how this run went, for the report
{
	printf '{"mode": "%s", "seconds": %d, "date": "%s", "load_at_start": "%s"' \
		"$([[ $fast == 1 ]] && echo fast || echo full)" "$seconds" "$(date -Iseconds)" "$load_start"
	printf ', "steps": {'
	sep=""
	for step in "${steps[@]}"; do
		[[ -n ${took[$step]+x} ]] || continue
		printf '%s"%s": %d' "$sep" "$step" "${took[$step]}"
		sep=", "
	done
	printf '}'
	[[ -z $notes_cold ]] || printf ', "cold_skipped": "%s"' "${notes_cold//\"/\'}"
	[[ -z $busy ]] || printf ', "busy": "%s"' "${busy//\"/\'}"
	printf '}\n'
} >"$results/run.json"

reports=()
for suite in core cold net sweep; do
	[[ -f $results/$suite.json ]] && reports+=("$results/$suite.json")
done
"$py" "$here/report.py" "${reports[@]}"
