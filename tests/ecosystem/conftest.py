"""Fixtures for the ecosystem's own checks: their tools' venv, a clean copy of the collection, its tarball.

The tools (galaxy-importer, ansible-lint, antsibull-changelog, ansible-builder) live in their own venv,
``.build/eco-venv``, built from tests/ecosystem/requirements.txt, so the test venv stays as
requirements.txt says. Each check runs on a copy holding only what git tracks or would track.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import pytest

from tests.support.collection_tree import ECO_REQUIREMENTS, build_tarball, copy_collection, venv_with
from tests.support.runner import REPO

ECO_VENV = os.path.join(REPO, ".build", "eco-venv")


@dataclass
class Tools:
    bindir: str

    def path(self, name: str) -> str:
        return os.path.join(self.bindir, name)

    def env(self, **extra: str) -> Dict[str, str]:
        """The environment the tools run in: their venv first on PATH, no colour, nothing from the test venv."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PYTHON", "VIRTUAL_ENV"))}
        env.update(PATH=self.bindir + os.pathsep + env.get("PATH", ""), NO_COLOR="1", ANSIBLE_NOCOLOR="1",
                   ANSIBLE_FORCE_COLOR="0", LC_ALL="C.UTF-8")
        env.update(extra)
        return env

    def run(self, argv: Sequence[str], cwd: str, timeout: float = 900,
            env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
        tool = argv[0] if os.path.isabs(argv[0]) else self.path(argv[0])
        return subprocess.run([tool, *argv[1:]], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              env=env or self.env(), check=False)


@pytest.fixture(scope="session")
def eco_tools() -> Tools:
    return Tools(venv_with(ECO_VENV, ECO_REQUIREMENTS))


@pytest.fixture(scope="session")
def collection_copy(tmp_path_factory) -> str:
    """A clean copy at .../ansible_collections/virtfleet/libvirt (shared by the read-only checks)."""
    return copy_collection(str(tmp_path_factory.mktemp("collection")))


# What a working checkout accumulates (tool caches, build output); build_ignore must keep all of it out.
DEV_LEFTOVERS = (".ansible/collections/x.json", ".hypothesis/examples/x", ".pytest_cache/v/x", "tests/output/x.xml",
                 "plugins/module_utils/__pycache__/x.cpython-311.pyc", ".build/collections/x", ".venv/bin/x",
                 "bench/results/x.json", "virtfleet-libvirt-0.0.1.tar.gz")


@pytest.fixture(scope="session")
def collection_tarball(eco_tools, tmp_path_factory) -> str:
    """``ansible-galaxy collection build`` of a copy that also holds the leftovers of a working checkout."""
    source = copy_collection(str(tmp_path_factory.mktemp("build-source")))
    for rel in DEV_LEFTOVERS:
        os.makedirs(os.path.dirname(os.path.join(source, rel)) or source, exist_ok=True)
        with open(os.path.join(source, rel), "w") as handle:
            handle.write("left over\n")
    return build_tarball(source, str(tmp_path_factory.mktemp("dist")), eco_tools.path("ansible-galaxy"))


def tail(proc: subprocess.CompletedProcess, limit: int = 6000) -> str:
    """What a failing tool said, for the assertion message."""
    return ("rc=%d\n%s\n%s" % (proc.returncode, proc.stdout[-limit:], proc.stderr[-limit:])).strip()
