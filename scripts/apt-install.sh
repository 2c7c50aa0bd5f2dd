#!/usr/bin/env bash
# Install the Debian packages named that are missing, with apt-get, when run
# as root on a machine that has it; otherwise do nothing (the caller's later
# steps say what is missing).  Used by setup.sh and test-kernel.sh.
set -euo pipefail
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
fi
