#!/usr/bin/env bash
# Run ansible-test (sanity, units, ...) on a copy of the collection placed at the path ansible-test demands
# (.../ansible_collections/virtfleet/libvirt). Arguments go to ansible-test, e.g.
#   scripts/ansible-test.sh units --requirements --python 3.11
# ansible-core comes from its own venv, .build/ansible-test-<version>: the version pinned in requirements.txt,
# or VIRTFLEET_ANSIBLE_CORE (e.g. 2.17.14, the oldest release meta/runtime.yml supports). ansible-test puts
# each test's requirements in venvs of its own (--requirements), from PyPI.
# ansible-test bootstraps pip with a script from a host this machine cannot reach; tests/sanity/get_pip_offline.py
# stands in for it (it seeds pip from the interpreter's ensurepip).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pinned=$(sed -n 's/^ansible-core==\([^ ]*\).*/\1/p' "$repo/requirements.txt")
version=${VIRTFLEET_ANSIBLE_CORE:-$pinned}
venv="$repo/.build/ansible-test-$version"
if [ ! -x "$venv/bin/ansible-test" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "ansible-core==$version"
fi
mkdir -p ~/.ansible/test/cache
for v in 24.2 25.0.1 25.1.1 25.2 25.3; do
    cp "$repo/tests/sanity/get_pip_offline.py" ~/.ansible/test/cache/get_pip_${v//./_}.py
done
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
dest="$tree/ansible_collections/virtfleet/libvirt"
mkdir -p "$dest"
# Only what git tracks or would track (no venvs, caches or build output).
if ! (cd "$repo" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$dest" 2>/dev/null); then
    echo "ansible-test.sh: some tracked files are missing from the checkout (deleted, not committed yet)" >&2
fi
cd "$dest"
git init -q && git add -A
# The venv first on PATH: in host mode ansible-test runs tests with its python3.X, which has ansible-core.
export PATH="$venv/bin:$PATH"
echo "ansible-test $* (ansible-core $version)" >&2
"$venv/bin/ansible-test" "$@"
