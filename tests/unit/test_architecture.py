"""The shape docs/architecture.md promises, checked on every run.

Imports (top-level and deferred into functions alike) point down the layers or sideways into the
shared helpers, never up and never in a cycle; module files are thin; the layout's file names, libvirt
and qemu-img each have one home.
"""

from __future__ import annotations

import ast
import os
import re
from typing import Dict, List, Set

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULE_UTILS = os.path.join(REPO, "plugins", "module_utils")
MODULES = os.path.join(REPO, "plugins", "modules")
PREFIX = "ansible_collections.virtfleet.libvirt.plugins.module_utils"
SHARED = {"_common", "_argspec", "_identifiers", "_layout", "_sizes", "_fileutil", "_qcow2", "_batch"}
LAYERS = {"_host": 1, "_image": 2, "_disk": 3, "_domain": 4, "_guest": 5, "_resize": 5}
MAX_MODULE_CODE_LINES = 20


def _our_modules() -> Dict[str, str]:
    """{dotted name below module_utils ('_domain.model', '_common'): file path}."""
    found = {}
    for directory, _dirs, files in os.walk(MODULE_UTILS):
        for name in files:
            if name.endswith(".py") and name != "__init__.py":
                rel = os.path.relpath(os.path.join(directory, name), MODULE_UTILS)[:-3]
                found[rel.replace(os.sep, ".")] = os.path.join(directory, name)
    return found


def _imports_of(path: str, known: Set[str]) -> Set[str]:
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    targets: Set[str] = set()
    for node in ast.walk(tree):
        names: List[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PREFIX):
            base = node.module[len(PREFIX):].lstrip(".")
            names = ["%s.%s" % (base, alias.name) if base else alias.name for alias in node.names]
            names.append(base)
        elif isinstance(node, ast.Import):
            names = [alias.name[len(PREFIX):].lstrip(".") for alias in node.names if alias.name.startswith(PREFIX)]
        for name in names:
            if name in known:
                targets.add(name)
    return targets


def _rank(name: str) -> int:
    top = name.split(".")[0]
    if top in SHARED:
        return 0
    assert top in LAYERS, "%s is neither a layer nor a shared helper: add it to docs/architecture.md" % name
    return LAYERS[top]


GRAPH = {name: _imports_of(path, set(_our_modules())) for name, path in _our_modules().items()}


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_imports_point_down_or_into_shared_helpers(name):
    for target in GRAPH[name]:
        if _rank(name) == 0:
            assert _rank(target) == 0, "shared helper %s imports the layer file %s" % (name, target)
        else:
            assert _rank(target) <= _rank(name), "%s imports %s, which is a layer above it" % (name, target)


def test_no_import_cycle_deferred_or_not():
    state: Dict[str, int] = {}

    def visit(node: str, path: List[str]) -> None:
        state[node] = 1
        for target in sorted(GRAPH[node]):
            if state.get(target) == 1:
                raise AssertionError("import cycle: %s" % " -> ".join(path[path.index(target):] + [target])
                                     if target in path else " -> ".join(path + [target]))
            if target not in state:
                visit(target, path + [target])
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])


def _code_lines(path: str) -> int:
    """Lines of a module file outside its DOCUMENTATION/EXAMPLES/RETURN strings, comments and blank lines."""
    with open(path, encoding="utf-8") as handle:
        source = handle.read()
    tree = ast.parse(source)
    doc_lines: Set[int] = set()
    for node in tree.body:
        names = [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
        if isinstance(node, ast.Assign) and set(names) & {"DOCUMENTATION", "EXAMPLES", "RETURN"}:
            doc_lines.update(range(node.lineno, node.end_lineno + 1))
    count = 0
    for number, line in enumerate(source.splitlines(), 1):
        text = line.strip()
        if number in doc_lines or not text or text.startswith("#"):
            continue
        count += 1
    return count


@pytest.mark.parametrize("module", sorted(m for m in os.listdir(MODULES) if m.endswith(".py")))
def test_module_files_are_thin(module):
    lines = _code_lines(os.path.join(MODULES, module))
    assert lines <= MAX_MODULE_CODE_LINES, "%s has %d lines of code outside its documentation; the logic " \
        "belongs in module_utils" % (module, lines)


# What only one file may say or do.
ONE_HOME = [
    (re.compile(r"""["'](disk\.info\.json|console\.log|domain\.xml|nvram\.fd|resize\.json|_base|locks)["']"""),
     {"_layout.py"}, "the layout's names"),
    (re.compile(r"^\s*import libvirt\b|^\s*from libvirt\b", re.M), {os.path.join("_host", "libvirt_conn.py")},
     "importing libvirt-python"),
    (re.compile(r"""["']qemu-img["']"""), {os.path.join("_host", "qemu_img.py")}, "running qemu-img"),
]


@pytest.mark.parametrize("pattern, homes, what", ONE_HOME, ids=[w for _p, _h, w in ONE_HOME])
def test_each_concern_has_one_home(pattern, homes, what):
    offenders = []
    for name, path in _our_modules().items():
        rel = os.path.relpath(path, MODULE_UTILS)
        if rel in homes:
            continue
        with open(path, encoding="utf-8") as handle:
            source = handle.read()
        # docstrings and comments may name them; code may not
        code = "\n".join(line for line in source.splitlines() if not line.strip().startswith("#"))
        code = re.sub(r'"""[\s\S]*?"""', "", code)
        if pattern.search(code):
            offenders.append(rel)
    assert not offenders, "%s happens outside %s: %s" % (what, ", ".join(sorted(homes)), ", ".join(offenders))
