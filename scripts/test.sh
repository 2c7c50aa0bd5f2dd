#!/usr/bin/env bash
# Set up (see setup.sh) and run the whole test suite, then the linters.
# pytest's exit code 5 (no tests ran) fails like any other non-zero code.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
.venv/bin/python -m pytest -p no:cacheprovider "$@"
.venv/bin/ruff check uringlets tests benchmarks examples
.venv/bin/ruff format --check uringlets tests benchmarks examples
.venv/bin/mypy
