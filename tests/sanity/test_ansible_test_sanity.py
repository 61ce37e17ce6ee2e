"""ansible-test sanity must pass: module docs match argument specs, imports are guarded, style holds."""

import os
import subprocess

from tests.support.runner import REPO


def test_ansible_test_sanity_passes():
    proc = subprocess.run([os.path.join(REPO, "scripts", "sanity.sh")], capture_output=True, text=True,
                          timeout=900, check=False)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines()
             if line.startswith(("ERROR", "FATAL")) or "Running sanity test" in line]
    assert proc.returncode == 0, "\n".join(lines[-80:])
