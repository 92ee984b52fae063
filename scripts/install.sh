#!/usr/bin/env bash
# Installs wizardcoder and everything it needs into the current Python (3.11+).
# CPU machines: torch is pinned by constraints.txt to the local CPU wheel, so no CUDA
# packages are pulled. GPU users: WIZARDCODER_TORCH="torch==2.x.y" (any CUDA build) or
# WIZARDCODER_TORCH=skip when torch is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
torch_spec="${WIZARDCODER_TORCH:-torch==2.13.0}"
constraints=()
if [ "$torch_spec" = "torch==2.13.0" ]; then
    constraints=(-c constraints.txt)
fi
if [ "$torch_spec" != "skip" ]; then
    python -m pip install -q "$torch_spec"
fi
python -m pip install -q "${constraints[@]}" -e ".[dev]"
