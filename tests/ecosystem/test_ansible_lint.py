"""ansible-lint --profile production passes on the collection (roles, playbooks, molecule scenarios, metadata)."""

from __future__ import annotations

import os

from tests.ecosystem.conftest import tail


def test_ansible_lint_production_profile_passes(eco_tools, collection_copy, tmp_path):
    collections_root = os.path.dirname(os.path.dirname(os.path.dirname(collection_copy)))
    proc = eco_tools.run(["ansible-lint", "--profile", "production", "--offline", "--nocolor"], cwd=collection_copy,
                         env=eco_tools.env(ANSIBLE_COLLECTIONS_PATH=collections_root, HOME=str(tmp_path)))
    assert proc.returncode == 0, tail(proc, 12000)
    assert "Passed" in proc.stdout + proc.stderr, tail(proc)
