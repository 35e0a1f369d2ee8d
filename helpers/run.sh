#!/usr/bin/env bash
# Install everything, then run the app locally: web, worker, the bundled Redis,
# Google's Pub/Sub emulator and a sample publisher, under honcho. Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
source helpers/common.sh
install_python_packages
exec .venv/bin/python -m helpers.devstack
