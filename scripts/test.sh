#!/usr/bin/env bash
# Set up this host and run the whole test suite: unit tests, then integration tests that drive
# real libvirtd and real guests. Extra arguments go to pytest (e.g. -k boot, -x).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$repo/scripts/setup-host.sh"
cd "$repo"
exec .venv/bin/pytest -p no:cacheprovider "$@" tests
