#!/usr/bin/env bash
# Full ansible-test sanity (every test: validate-modules, import, pylint, pep8, shellcheck, yamllint, ...)
# through scripts/ansible-test.sh. Extra arguments go to ansible-test, e.g. --test pylint to run one test.
# The shellcheck test needs the distro package (scripts/setup-host.sh installs it).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
command -v shellcheck >/dev/null || { echo "sanity: shellcheck is missing; run scripts/setup-host.sh" >&2; exit 1; }
exec "$repo/scripts/ansible-test.sh" sanity --requirements --python 3.11 "$@"
