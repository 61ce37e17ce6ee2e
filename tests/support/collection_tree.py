"""The collection as the ecosystem's tools see it: a clean copy of the checkout, and its built tarball.

ansible-test, ansible-lint and galaxy-importer want the collection at a path ending in
``ansible_collections/virtfleet/libvirt`` and must not see venvs, caches or build output, so the
copy holds only what git tracks or would track (as scripts/sanity.sh does).
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
from typing import List

from tests.support.runner import REPO

ECO_REQUIREMENTS = os.path.join(REPO, "tests", "ecosystem", "requirements.txt")


def checkout_files(repo: str = REPO) -> List[str]:
    """Paths (relative to ``repo``) that git tracks or would track."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=repo, check=True,
                         capture_output=True).stdout
    return sorted(p for p in out.decode().split("\0") if p and os.path.isfile(os.path.join(repo, p)))


def copy_collection(root: str, repo: str = REPO) -> str:
    """Copy the checkout to ``root``/ansible_collections/virtfleet/libvirt (a git repository of its own,
    as ansible-test expects); returns that path."""
    dest = os.path.join(root, "ansible_collections", "virtfleet", "libvirt")
    for rel in checkout_files(repo):
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(repo, rel), target)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    return dest


def build_tarball(collection: str, output: str, ansible_galaxy: str) -> str:
    """``ansible-galaxy collection build`` of ``collection`` into ``output``; returns the tarball's path."""
    os.makedirs(output, exist_ok=True)
    subprocess.run([ansible_galaxy, "collection", "build", "--force", "--output-path", output, collection],
                   check=True, capture_output=True, text=True)
    (tarball,) = glob.glob(os.path.join(output, "virtfleet-libvirt-*.tar.gz"))
    return tarball


def venv_with(path: str, requirements: str, timeout: float = 900) -> str:
    """A venv at ``path`` holding exactly ``requirements``, rebuilt only when that file changes; returns bin/."""
    bindir = os.path.join(path, "bin")
    stamp = os.path.join(path, ".requirements.sha256")
    with open(requirements, "rb") as handle:
        want = hashlib.sha256(handle.read()).hexdigest()
    try:
        with open(stamp) as handle:
            current = handle.read().strip()
    except FileNotFoundError:
        current = ""
    if current != want or not os.path.exists(os.path.join(bindir, "python")):
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", path], check=True)
        proc = subprocess.run([os.path.join(bindir, "pip"), "install", "-q", "--disable-pip-version-check",
                               "-r", requirements], capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise RuntimeError("pip install -r %s failed:\n%s" % (requirements, proc.stderr[-3000:]))
        with open(stamp, "w") as handle:
            handle.write(want + "\n")
    return bindir
