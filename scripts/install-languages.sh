#!/usr/bin/env bash
# Installs the toolchains that score MultiPL-E's languages, from Debian packages (root or sudo):
#
#   bash scripts/install-languages.sh cpp,java,js,ts,php,rs,go,sh,lua,rb    (or: all)
#
# (`bash scripts/install.sh --languages LIST` calls this.) The package list of each language
# is wizardcoder/sandbox/toolchains.py's TOOLCHAINS, whose packages' files also make up that
# language's read-only sandbox root; a language whose packages are missing is refused when
# scored, naming them.
set -euo pipefail
cd "$(dirname "$0")/.."
langs="${1:?usage: install-languages.sh LANG[,LANG...] | all}"
packages=$(PYTHONPATH=. python -c 'import sys
from wizardcoder.sandbox.toolchains import packages_for
print(" ".join(packages_for(sys.argv[1])))' "$langs")
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
# shellcheck disable=SC2086  # a list of package names
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $packages \
    || { $sudo apt-get update -q && $sudo env DEBIAN_FRONTEND=noninteractive \
         apt-get install -y -q --no-install-recommends $packages; }
echo "installed the toolchains of $langs: $packages"
