#!/usr/bin/env bash
# Install everything, then run the app locally: web, worker, the bundled Redis,
# Google's Pub/Sub emulator and a sample publisher, under honcho (helpers/devstack.py). Ctrl-C stops
# web and workers first, then Redis and the emulator.
set -euo pipefail
cd "$(dirname "$0")/.."
source helpers/common.sh
install_python_packages --quiet
exec .venv/bin/python -m helpers.devstack
