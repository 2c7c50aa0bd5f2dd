#!/usr/bin/env bash
# The suite under other kernels (issue 14), booted with virtme-ng under TCG
# by scripts/test-kernel.sh; scripts/test.sh runs this after the host suite.
#
#   bash scripts/ci-kernels.sh            # all three runs; exit status: the first failure
#
# 1. Debian 12's stock 6.1: the kernel lacks IORING_OP_BIND and LISTEN (6.11),
#    FIXED_FD_INSTALL (6.8) and socket setsockopt (6.7), so those atoms run as
#    userspace steps for real.  The semantics and engine tests, the network
#    tests, the probe against the kernel's own opcode probe, and a sample of
#    the differential conformance suite (HYPOTHESIS_PROFILE=kernel: 150
#    programs a test).  test_engine's 100k-execution ring wrap is left to the
#    host run (it alone would take minutes under TCG).
# 2. 6.12 with kernel.io_uring_disabled=2, as root: Engine("auto") must fall
#    back to the threads and say why; the semantics tests on the threads and
#    the reference interpreter.
# 3. 6.12 with kernel.io_uring_disabled=1, as nobody (not in
#    kernel.io_uring_group): the same fallback, for an unprivileged user.
#
# Under TCG on 2 cores the three take about 3.5, 2 and 1.5 minutes.
# URINGLETS_KERNEL_RUNS=NAME[,NAME] picks some of them (6.1, disabled-2,
# disabled-1).
set -uo pipefail
cd "$(dirname "$0")/.."

runs=${URINGLETS_KERNEL_RUNS:-6.1,disabled-2,disabled-1}
status=0
run() {
    local name=$1
    shift
    [[ ",$runs," == *",$name,"* ]] || return 0
    echo "== ci-kernels: $name"
    bash scripts/test-kernel.sh "$@"
    local st=$?
    echo "== ci-kernels: $name exited $st"
    ((status == 0)) && status=$st
    return 0
}

run 6.1 --env HYPOTHESIS_PROFILE=kernel 6.1 -q -rs \
    tests/test_kernel_probe.py tests/test_stop_rules.py tests/test_links.py \
    tests/test_params.py tests/test_edges.py tests/test_engine.py tests/test_net.py \
    tests/test_net_timeouts.py \
    tests/test_ops.py tests/test_splice.py tests/test_per_execution_lengths.py \
    tests/test_conformance.py -k "not ring_wrap_100k"

run disabled-2 --sysctl kernel.io_uring_disabled=2 \
    --env URINGLETS_EXPECT_NO_IO_URING=kernel.io_uring_disabled=2 6.12 -q -rs \
    tests/test_selection.py tests/test_kernel_probe.py tests/test_stop_rules.py

run disabled-1 --sysctl kernel.io_uring_disabled=1 --user nobody \
    --env URINGLETS_EXPECT_NO_IO_URING=kernel.io_uring_disabled=1 6.12 -q -rs \
    tests/test_selection.py tests/test_kernel_probe.py

exit "$status"
