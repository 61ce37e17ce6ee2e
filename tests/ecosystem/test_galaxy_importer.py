"""Galaxy's own import check accepts the built tarball, and the tarball holds the collection and nothing else."""

from __future__ import annotations

import os
import tarfile

from tests.ecosystem.conftest import tail

# galaxy-importer as Galaxy runs it, minus the checks that are tests of their own here: the container-based
# ansible-test run (tests/sanity) and ansible-lint (test_ansible_lint.py, with the production profile, which is
# stricter than the importer's).
IMPORTER_CONFIG = """[galaxy-importer]
LOG_LEVEL_MAIN = INFO
RUN_ANSIBLE_TEST = False
RUN_ANSIBLE_LINT = False
RUN_FLAKE8 = False
"""


def test_galaxy_importer_accepts_the_tarball(eco_tools, collection_tarball, tmp_path):
    config = tmp_path / "galaxy-importer.cfg"
    config.write_text(IMPORTER_CONFIG)
    proc = eco_tools.run(["python", "-m", "galaxy_importer.main", collection_tarball], cwd=str(tmp_path),
                         env=eco_tools.env(GALAXY_IMPORTER_CONFIG=str(config)))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, tail(proc)
    errors = [line for line in output.splitlines() if line.startswith("ERROR")]
    assert errors == [], tail(proc)
    assert "Loading role boot" in output and "Loading module image_cache" in output, tail(proc)


def test_tarball_holds_the_collection_without_dev_files_or_caches(collection_tarball):
    with tarfile.open(collection_tarball) as tar:
        names = set(tar.getnames())
    for wanted in ("LICENSE", "README.md", "MANIFEST.json", "FILES.json", "meta/runtime.yml",
                   "meta/execution-environment.yml", "meta/ee-requirements.txt", "bindep.txt",
                   "changelogs/changelog.yaml", "plugins/modules/domain.py", "playbooks/boot.yml",
                   "playbooks/molecule_create.yml", "playbooks/molecule_destroy.yml",
                   "extensions/molecule/default/molecule.yml", "docs/molecule.md", "docs/awx.md"):
        assert wanted in names, "%s is missing from %s" % (wanted, os.path.basename(collection_tarball))
    unwanted_parts = {".ansible", ".hypothesis", ".pytest_cache", "__pycache__", ".build", ".venv", ".ci",
                      "bench", "output"}
    unwanted_files = {"ansible.cfg", "pytest.ini", "requirements.txt", ".gitignore"}
    leaked = sorted(n for n in names if unwanted_parts & set(n.split("/")) or n in unwanted_files
                    or n.endswith((".pyc", ".tar.gz")))
    assert leaked == []
