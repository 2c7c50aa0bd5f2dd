#!/usr/bin/env bash
# Set up (see setup.sh) and run the whole test suite, then the linters, then
# the suite under other kernels (scripts/ci-kernels.sh: Debian 12's 6.1, and
# 6.12 with io_uring disabled, booted with virtme-ng).
# pytest's exit code 5 (no tests ran) fails like any other non-zero code.
# The kernel runs need root (to install qemu and the kernel packages) or
# those already installed; elsewhere they are skipped with a message.
# URINGLETS_KERNEL_RUNS=none skips them; =6.1 (etc.) picks some.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
.venv/bin/python -m pytest -p no:cacheprovider "$@"
.venv/bin/ruff check uringlets tests benchmarks examples
.venv/bin/ruff format --check uringlets tests benchmarks examples
.venv/bin/mypy
if [[ ${URINGLETS_KERNEL_RUNS:-} == none ]]; then
    echo "test.sh: kernel runs skipped (URINGLETS_KERNEL_RUNS=none)"
elif ! apt-cache show linux-image-amd64 linux-image-6.12-amd64 >/dev/null 2>&1; then
    echo "test.sh: kernel runs skipped: Debian 12's kernel packages are not available here"
elif [[ $(id -u) -eq 0 ]] || command -v qemu-system-x86_64 >/dev/null; then
    bash scripts/ci-kernels.sh
else
    echo "test.sh: kernel runs skipped: not root, and qemu-system-x86 is not installed"
fi
