#!/usr/bin/env bash
# Mutation testing of the pure logic (issue 10 item 21): mutmut's mutants, one file group at a time.
#
#   scripts/mutation.sh [GROUP...]    groups: sizes names fileio inspector comparison prune (default: all of them)
#   scripts/mutation.sh --results     per-file figures and the surviving mutants of the runs so far
#   RECHECK=1 scripts/mutation.sh G   test only the survivors of G's last finished run again (after adding tests)
#
# mutmut 2.x (in its own venv: MUTMUT_VENV, default /work/tools/mut-venv, made on first use) lists and applies the
# mutations; scripts/mutate_inprocess.py runs each group's unit tests on every mutant inside one process (pytest -x;
# the first failure kills the mutant), patching the imported module instead of rewriting the file and starting
# pytest 2000 times. The source files on disk never change. Results: .mutation/<file>.json.
# docs/mutation.md has the figures and the survivors judged equivalent.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
venv=${MUTMUT_VENV:-/work/tools/mut-venv}
if [ ! -x "$venv/bin/mutmut" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'mutmut<3'
fi
site=$("$venv/bin/python" -c 'import mutmut, os; print(os.path.dirname(os.path.dirname(mutmut.__file__)))')
mu=plugins/module_utils
ut=tests/unit/plugins/module_utils

declare -A paths tests
paths[sizes]="$mu/_sizes.py"
tests[sizes]="$ut/test_sizes.py"
paths[names]="$mu/_layout.py $mu/_identifiers.py"
tests[names]="$ut/test_layout.py $ut/test_identifiers.py"
paths[fileio]="$mu/_fileutil.py $mu/_qcow2.py"
tests[fileio]="$ut/test_fileutil.py $ut/test_qcow2.py"
# The inspector's fast crafted-byte tests first, then the corpus (test_format.py) and, of the qemu-img matrix
# (test_format_vs_qemu.py: slow, it creates hundreds of images), the VHD creator cases only. Left out too: the
# fuzzers (they assert only "no crash") and the one timing assertion (a loaded machine would make it kill mutants
# at random). The figures are therefore a floor.
paths[inspector]="$mu/_image/format.py"
tests[inspector]="$ut/_image/test_format_rules.py $ut/_image/test_format.py $ut/_image/test_format_vs_qemu.py
-k|not never_crash and not inspects_fast and (not test_format_vs_qemu or creator or geometry)"
# (the lifecycle's property test through real Ansible module runs is left out: seconds per example)
paths[comparison]="$mu/_domain/normalize.py $mu/_domain/differences.py $mu/_domain/plan.py"
tests[comparison]="$ut/_domain/test_normalize.py $ut/_domain/test_differences.py $ut/_domain/test_plan.py
$ut/_domain/test_lifecycle.py -k|not never_prints_a_traceback"
paths[prune]="$mu/_image/prune.py"
tests[prune]="$ut/_image/test_prune.py"

summary() {
    "$venv/bin/python" - <<'PY'
import glob, json
print("%-44s %6s %7s %9s %8s" % ("file", "total", "killed", "survived", "killed%"))
survivors = []
for path in sorted(glob.glob(".mutation/*.json")):  # the merged results, not the shards (*.json.K-of-N)
    data = json.load(open(path))
    counts = {}
    for mutant in data["mutants"]:
        counts[mutant["status"]] = counts.get(mutant["status"], 0) + 1
        if mutant["status"] in ("survived", "unapplied"):
            survivors.append((data["file"], mutant))
    total = len(data["mutants"])
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    print("%-44s %6d %7d %9d %7.1f%%" % (data["file"], total, killed, total - killed, 100.0 * killed / total))
for name, mutant in survivors:
    print("%s:%d [%s] %s  ->  %s" % (name, mutant["line"], mutant["status"], mutant["original"][:90],
                                     mutant["mutant"][:90]))
PY
}

if [ "${1:-}" = "--results" ]; then
    summary
    exit 0
fi
groups=("$@")
[ ${#groups[@]} -gt 0 ] || groups=(sizes names fileio inspector comparison prune)
mkdir -p .mutation
for group in "${groups[@]}"; do
    [ -n "${paths[$group]:-}" ] || { echo "unknown group $group" >&2; exit 2; }
    # the test selection: paths and words split on blanks, a "-k|expression" keeps its expression whole
    selection=()
    mapfile -t selection < <(printf '%s\n' "${tests[$group]}" | tr ' ' '\n' | awk '
        /^-k\|/ { sub(/^-k\|/, ""); print "-k"; expr = $0; inexpr = 1; next }
        inexpr { expr = expr " " $0; next }
        { print }
        END { if (inexpr) print expr }')
    for file in ${paths[$group]}; do
        module=ansible_collections.virtfleet.libvirt.${file%.py}
        module=${module//\//.}
        echo "== $group: $file"
        extra=()
        [ "$group" != inspector ] || extra=(--memoize-builders tests.support.hostile_images)
        out=".mutation/$(basename "$file" .py).json"
        # SHARDS=N runs N processes on every N-th mutant each (the results are merged); default 1. ONLY="1 5" runs
        # only those shards: a systematic sample of the file's mutants (say so when you quote its figures).
        shards=${SHARDS:-1}
        only=${ONLY:-$(seq 1 "$shards")}
        pids=()
        for shard in $only; do
            .venv/bin/python scripts/mutate_inprocess.py --mutmut-site "$site" --module "$module" --file "$file" \
                "${extra[@]}" --shard "$shard/$shards" --out "$out.$shard-of-$shards" ${RECHECK:+--recheck} \
                -- "${selection[@]}" &
            pids+=($!)
        done
        for pid in "${pids[@]}"; do wait "$pid"; done
        shard_results=()
        for shard in $only; do shard_results+=("$out.$shard-of-$shards"); done
        .venv/bin/python scripts/mutate_inprocess.py --mutmut-site "$site" --module "$module" --file "$file" \
            --out "$out" --merge "${shard_results[@]}"
    done
done
summary
