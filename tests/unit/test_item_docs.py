"""Each module's list form is documented from its top-level option docs (scripts/sync-item-docs.py)."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_generated_item_docs_are_current():
    proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "sync-item-docs.py"), "--check"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
