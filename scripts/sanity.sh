#!/usr/bin/env bash
# ansible-test sanity (validate-modules, import, and the code-style tests) on a copy of the
# collection placed at the path ansible-test demands (.../ansible_collections/virtfleet/libvirt).
# Uses its own venv (.build/sanity-venv) so the test venv stays as requirements.txt says.
# ansible-test bootstraps pip from a host this machine cannot reach; tests/sanity/get_pip_offline.py
# stands in for that script. Extra arguments go to ansible-test (e.g. --test validate-modules).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$repo/.build/sanity-venv"
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$repo/requirements.txt" | cut -d' ' -f1)
if [ ! -x "$venv/bin/ansible-test" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$repo/requirements.txt"
    echo "$want" > "$stamp"
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
(cd "$repo" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$dest" 2>/dev/null || true)
cd "$dest"
git init -q && git add -A
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(--test validate-modules --test import --test compile --test yamllint
                                  --test ansible-doc --test no-assert --test pep8 --test shebang)
exec "$venv/bin/ansible-test" sanity --requirements --python 3.11 "${tests[@]}"
