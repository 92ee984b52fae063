#!/usr/bin/env bash
# Installs wizardcoder and everything it needs into the current Python (3.11+).
# CPU machines: torch is pinned by constraints.txt to the local CPU wheel, so no CUDA
# packages are pulled. GPU users: WIZARDCODER_TORCH="torch==2.x.y" (any CUDA build) or
# WIZARDCODER_TORCH=skip when torch is already installed.
#   --browser   also headless Chromium + ChromeDriver from the Debian packages
#               (scripts/install-browser.sh; root or sudo): what tests/test_browser.py drives,
#               and what CI installs (.ci/run)
#   --languages LIST   also the MultiPL-E toolchains of LIST (cpp,java,js,ts,php,rs,go,sh,
#               lua,rb or all) from Debian packages (scripts/install-languages.sh; root or sudo)
set -euo pipefail
cd "$(dirname "$0")/.."
browser=0
rest=()
languages=""
while [ $# -gt 0 ]; do
    case "$1" in
        --browser) browser=1 ;;
        --languages) languages="${2:?--languages needs a list}"; shift ;;
        --languages=*) languages="${1#--languages=}" ;;
        *) rest+=("$1") ;;
    esac
    shift
done
set -- "${rest[@]+"${rest[@]}"}"
torch_spec="${WIZARDCODER_TORCH:-torch==2.13.0}"
constraints=()
if [ "$torch_spec" = "torch==2.13.0" ]; then
    constraints=(-c constraints.txt)
fi
if [ "$torch_spec" != "skip" ]; then
    python -m pip install -q "$torch_spec"
fi
python -m pip install -q "${constraints[@]}" -e ".[dev]"
if [ "$browser" = 1 ]; then
    bash scripts/install-browser.sh
fi
if [ -n "$languages" ]; then
    bash scripts/install-languages.sh "$languages"
fi
