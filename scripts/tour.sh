#!/usr/bin/env bash
# Set up (see setup.sh) and run the tour: real chains on this kernel, each
# completion printed, and how fast a batch runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python examples/tour.py
