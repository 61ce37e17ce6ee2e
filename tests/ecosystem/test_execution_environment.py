"""Execution environments: ansible-builder accepts our definitions, and what it takes from the collection is
exactly the modules' runtime needs (no test tools)."""

from __future__ import annotations

import os
import shutil
import subprocess

import yaml

from tests.ecosystem.conftest import tail

RUNTIME_LIBRARIES = {"libvirt-python", "lxml", "pycdlib", "zstandard"}
TEST_TOOLS = {"pytest", "pytest-xdist", "hypothesis", "molecule", "ansible-core"}


def install_tarball(eco_tools, tarball: str, root: str) -> str:
    os.makedirs(root, exist_ok=True)
    proc = eco_tools.run(["ansible-galaxy", "collection", "install", "--offline", "-p", root, tarball], cwd=root)
    assert proc.returncode == 0, tail(proc)
    return root


def test_builder_introspects_only_runtime_requirements(eco_tools, collection_tarball, tmp_path):
    root = install_tarball(eco_tools, collection_tarball, str(tmp_path / "collections"))
    proc = eco_tools.run(["ansible-builder", "introspect", "--sanitize", root], cwd=str(tmp_path))
    assert proc.returncode == 0, tail(proc)
    found = yaml.safe_load(proc.stdout)
    python = {line.split("#")[0].split(">")[0].split("=")[0].strip() for line in found["python"]}
    assert python == RUNTIME_LIBRARIES, found["python"]
    assert not python & TEST_TOOLS
    system = " ".join(found["system"])
    for package in ("libvirt-dev", "libvirt-devel", "pkg-config", "gcc", "qemu-utils", "qemu-img"):
        assert package in system, found["system"]


def test_builder_create_accepts_the_awx_definition(eco_tools, collection_copy, tmp_path):
    context = tmp_path / "context"
    proc = eco_tools.run(["ansible-builder", "create", "-f", "extensions/ee/execution-environment.yml",
                          "-c", str(context), "--output-filename", "Containerfile"], cwd=collection_copy)
    assert proc.returncode == 0, tail(proc)
    containerfile = (context / "Containerfile").read_text()
    assert "ansible-galaxy collection install" in containerfile
    assert "virtfleet.libvirt" in (context / "_build" / "requirements.yml").read_text()
    assert "config-manager --set-enabled crb" in containerfile


def test_builder_create_with_the_collection_from_a_local_tarball(eco_tools, collection_copy, collection_tarball,
                                                                 tmp_path):
    """The variant docs/awx.md describes for a collection not (yet) on Galaxy: the tarball in the build context."""
    definition_dir = tmp_path / "ee"
    definition_dir.mkdir()
    shutil.copy(collection_tarball, definition_dir / "virtfleet-libvirt.tar.gz")
    with open(os.path.join(collection_copy, "extensions", "ee", "execution-environment.yml")) as handle:
        definition = yaml.safe_load(handle)
    definition["dependencies"]["galaxy"] = {"collections": [
        {"name": "/build/collections/virtfleet-libvirt.tar.gz", "type": "file"}]}
    definition["additional_build_files"] = [{"src": "virtfleet-libvirt.tar.gz", "dest": "collections"}]
    (definition_dir / "execution-environment.yml").write_text(yaml.safe_dump(definition))
    context = tmp_path / "context"
    proc = eco_tools.run(["ansible-builder", "create", "-f", "execution-environment.yml", "-c", str(context)],
                         cwd=str(definition_dir))
    assert proc.returncode == 0, tail(proc)
    assert (context / "_build" / "collections" / "virtfleet-libvirt.tar.gz").is_file()
    listed = subprocess.run(["tar", "tzf", str(context / "_build" / "collections" / "virtfleet-libvirt.tar.gz")],
                            capture_output=True, text=True, check=True).stdout.split()
    assert "meta/execution-environment.yml" in listed and "meta/ee-requirements.txt" in listed
