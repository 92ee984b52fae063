#!/usr/bin/env bash
# Optional: headless Chromium + ChromeDriver (Debian packages) for the browser checks:
# scripts/screenshot_mlflow.py (MLflow UI and `dvc plots show` screenshots) and the slow
# tests that drive them (they skip, with the reason, when the browser is absent).
# scripts/install.sh does not need this. Run as root (or with sudo) on Debian/Ubuntu.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    echo "chromium and chromedriver already installed: $(chromium --version 2>/dev/null)"
    exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
$sudo apt-get update -q
$sudo apt-get install -y -q chromium chromium-driver
chromium --version && chromedriver --version
