"""The Debian test guest (tests/guest-debian): a guest with sshd and python3 that Ansible can manage.

Built once by tests/guest-debian/build-image.sh and cached between runs by its build stamp (the build
downloads Debian packages, so the first run takes a few minutes and later runs none).
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support.runner import REPO

IMAGE_NAME = "virtfleet-debian-guest.qcow2"
BUILD_SCRIPT = os.path.join(REPO, "tests", "guest-debian", "build-image.sh")


def build_debian_guest(out: str) -> str:
    """Build (or find up to date) the image in ``out``; returns its path. Fails the test with the build's words."""
    os.makedirs(out, exist_ok=True)
    os.chmod(out, 0o755)
    proc = subprocess.run(["bash", BUILD_SCRIPT, out], capture_output=True, text=True, timeout=1200, check=False)
    if proc.returncode != 0:
        pytest.fail("building the Debian test guest failed:\n%s\n%s" % (proc.stdout[-3000:], proc.stderr[-3000:]),
                    pytrace=False)
    return os.path.join(out, IMAGE_NAME)
