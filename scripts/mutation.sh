#!/usr/bin/env bash
# Mutation testing of the pure logic (issue 10 item 21) with mutmut 2.x, one file group at a time.
#
#   scripts/mutation.sh [GROUP...]    groups: sizes names fileio inspector comparison prune (default: all of them)
#   scripts/mutation.sh --results     survivors and per-file figures of the runs so far, without running
#   .../mutmut show ID                what mutant ID changed (venv below)
#
# mutmut edits the source file in place for each mutant and runs that group's unit tests (fast: -x, no cache, no
# hypothesis plugin); a mutant none of them fails on "survives". Run it only in a checkout of your own, never while
# another process imports the same files. The cache (.mutmut-cache) makes a second run test only survivors and
# mutants of changed lines. mutmut lives in its own venv (MUTMUT_VENV, default /work/tools/mut-venv), made on
# first use. bench/README.md ("Mutation testing") has the figures and the survivors judged equivalent.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
venv=${MUTMUT_VENV:-/work/tools/mut-venv}
if [ ! -x "$venv/bin/mutmut" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'mutmut<3'
fi
mu=plugins/module_utils
ut=tests/unit/plugins/module_utils
# A mutant often has the size of the original and is written within the same second as the one before: Python's
# bytecode cache (keyed by mtime and size) would then run a stale mutant. Never write bytecode, drop what exists.
export PYTHONDONTWRITEBYTECODE=1
find plugins -name __pycache__ -type d -prune -exec rm -rf {} +
pytest_cmd="$repo/.venv/bin/python -m pytest -x -q -p no:cacheprovider -p no:hypothesispytest"

declare -A paths tests
paths[sizes]="$mu/_sizes.py"
tests[sizes]="$ut/test_sizes.py"
paths[names]="$mu/_layout.py,$mu/_identifiers.py"
tests[names]="$ut/test_layout.py $ut/test_identifiers.py"
paths[fileio]="$mu/_fileutil.py,$mu/_qcow2.py"
tests[fileio]="$ut/test_fileutil.py $ut/test_qcow2.py"
# The inspector's fast crafted-byte tests first, then the corpus and qemu-img's view of it. Left out, to keep a
# run of 2000 mutants within an hour or so: the fuzzers (they assert only "no crash"), the qemu-img creation
# matrix (created and written images at three sizes: slow, and what it checks the corpus checks too) and the one
# timing assertion (a loaded machine would make it kill mutants at random). The figures are therefore a floor.
paths[inspector]="$mu/_image/format.py"
tests[inspector]="$ut/_image/test_format_rules.py $ut/_image/test_format.py $ut/_image/test_format_vs_qemu.py \
-k 'not never_crash and not created_image and not written_by_qemu and not inspects_fast'"
paths[comparison]="$mu/_domain/normalize.py,$mu/_domain/differences.py,$mu/_domain/plan.py"
tests[comparison]="$ut/_domain/test_normalize.py $ut/_domain/test_differences.py $ut/_domain/test_plan.py \
$ut/_domain/test_lifecycle.py"
paths[prune]="$mu/_image/prune.py"
tests[prune]="$ut/_image/test_prune.py"

summary() {
    "$venv/bin/mutmut" results || true
    "$venv/bin/python" - <<'PY'
import sqlite3
rows = sqlite3.connect(".mutmut-cache").execute(
    "select f.filename, m.status, count(*) from Mutant m join Line l on m.line = l.id "
    "join SourceFile f on l.sourcefile = f.id group by 1, 2").fetchall()
files = {}
for name, status, count in rows:
    files.setdefault(name, {})[status] = count
print("%-44s %6s %7s %9s %8s" % ("file", "total", "killed", "survived", "killed%"))
for name, counts in sorted(files.items()):
    total = sum(counts.values())
    # ok_suspicious: killed, only slowly; bad_timeout: the tests hung on the mutant, which they do not on the original
    killed = counts.get("ok_killed", 0) + counts.get("ok_suspicious", 0) + counts.get("bad_timeout", 0)
    print("%-44s %6d %7d %9d %7.1f%%" % (name, total, killed, total - killed, 100.0 * killed / total))
PY
}

if [ "${1:-}" = "--run-tests" ]; then
    # The runner mutmut calls for each mutant. mutmut counts only exit status 1 as a kill; a mutant that breaks
    # the import (pytest's collection error, status 2) fails the tests just as surely, so every failure is 1.
    eval "$pytest_cmd ${tests[$2]}" || exit 1
    exit 0
fi
if [ "${1:-}" = "--results" ]; then
    summary
    exit 0
fi
groups=("$@")
[ ${#groups[@]} -gt 0 ] || groups=(sizes names fileio inspector comparison prune)
for group in "${groups[@]}"; do
    [ -n "${paths[$group]:-}" ] || { echo "unknown group $group" >&2; exit 2; }
    echo "== $group: ${paths[$group]}"
    # mutmut exits non-zero when mutants survive; the figures printed at the end are what matters.
    "$venv/bin/mutmut" run --paths-to-mutate "${paths[$group]}" --tests-dir tests/unit --no-progress \
        --simple-output --runner "$repo/scripts/mutation.sh --run-tests $group" || true
done
summary
