"""antsibull-changelog accepts the fragments and the generated changelog, and the release has a summary."""

from __future__ import annotations

import os

import yaml

from tests.ecosystem.conftest import tail


def test_antsibull_changelog_lint_passes(eco_tools, collection_copy):
    proc = eco_tools.run(["antsibull-changelog", "lint"], cwd=collection_copy)
    assert proc.returncode == 0 and proc.stdout.strip() == "", tail(proc)
    proc = eco_tools.run(["antsibull-changelog", "lint-changelog-yaml", "changelogs/changelog.yaml"],
                         cwd=collection_copy)
    assert proc.returncode == 0 and proc.stdout.strip() == "", tail(proc)


def test_the_current_version_is_released_with_a_summary(collection_copy):
    with open(os.path.join(collection_copy, "galaxy.yml")) as handle:
        version = yaml.safe_load(handle)["version"]
    with open(os.path.join(collection_copy, "changelogs", "changelog.yaml")) as handle:
        releases = yaml.safe_load(handle)["releases"]
    assert version in releases
    assert releases[version]["changes"]["release_summary"].strip()
    with open(os.path.join(collection_copy, "CHANGELOG.rst")) as handle:
        assert "v%s" % version in handle.read()


def test_changelog_rst_is_what_antsibull_changelog_generates(eco_tools, tmp_path):
    from tests.support.collection_tree import copy_collection

    copy = copy_collection(str(tmp_path))
    proc = eco_tools.run(["antsibull-changelog", "generate"], cwd=copy)
    assert proc.returncode == 0, tail(proc)
    diff = eco_tools.run(["/usr/bin/git", "diff", "--stat", "--exit-code", "--", "CHANGELOG.rst", "changelogs"],
                         cwd=copy)
    assert diff.returncode == 0, "CHANGELOG.rst differs from its generated form; run antsibull-changelog generate:\n" \
        + diff.stdout
