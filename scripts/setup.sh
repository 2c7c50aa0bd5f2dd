#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine for uringlets: system packages (when
# root), a virtualenv in .venv, and the package with the extras named in $1
# (e.g. "test").  Idempotent.  Sourced by tour.sh and test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="${1:-}"
packages=(gcc python3-dev python3-venv linux-libc-dev)
if [[ "$extras" == *test* ]]; then
    # real peers for the network tests
    packages+=(redis-server redis-tools memcached curl)
    # clients of the static server: a load generator and a real browser
    packages+=(wrk chromium)
fi
if [[ "$extras" == *bench* ]]; then
    # the C liburing reference, syscall accounting and profiles
    packages+=(make liburing-dev strace linux-perf redis-server)
    # the static server's load generator and its nginx peer (bench_serve.py)
    packages+=(wrk nginx-light)
fi

bash scripts/apt-install.sh "${packages[@]}"

python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# Editable: the extension is built beside the sources, so the tests import
# the very tree they sit in.
if [[ -n "$extras" ]]; then
    .venv/bin/python -m pip install -q -e ".[$extras]"
else
    .venv/bin/python -m pip install -q -e .
fi
