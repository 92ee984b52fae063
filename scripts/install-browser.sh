#!/usr/bin/env bash
# Headless Chromium + ChromeDriver from the Debian packages (chromium, chromium-driver): the
# browser tests/test_browser.py drives (the MLflow UI and the `dvc plots show` page, in CI
# they fail rather than skip without it) and scripts/screenshot_mlflow.py.
#
#     bash scripts/install.sh --browser     # the project's install, then this (CI: .ci/run)
#     bash scripts/install-browser.sh       # this alone
#
# Debian/Ubuntu; run as root or with sudo. Nothing else needs it.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    echo "chromium and chromedriver already installed: $(chromium --version 2>/dev/null)"
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "error: no apt-get here: install Chromium and its ChromeDriver by other means" \
         "(both on PATH as chromium and chromedriver, or set CHROMIUM=/path/to/chrome)" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
$sudo apt-get update -q
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver
chromium --version && chromedriver --version
