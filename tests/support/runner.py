"""Run our modules and playbooks for real, as Ansible would, from tests.

Modules are executed as Ansible executes them on a local host: the module file with its
arguments in a JSON file (``ANSIBLE_MODULE_ARGS``), by the venv's Python. That exercises the
real argument parsing, check mode, diff mode, no_log and exit/fail paths without the ~1 s
start-up of ``ansible`` per call.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(REPO, ".build", "collections")
PYTHON = sys.executable


def module_path(name: str) -> str:
    return os.path.join(REPO, "plugins", "modules", name + ".py")


def run_module(name: str, args: Dict[str, Any], check: bool = False, diff: bool = False,
               timeout: float = 300, pythonpath_first: Optional[str] = None) -> Dict[str, Any]:
    """Run module ``name`` with ``args``; returns its JSON result plus ``_rc`` and ``_stderr``.

    ``pythonpath_first`` is searched before everything else (a test can shadow a library with a stub).
    """
    payload = dict(args)
    payload["_ansible_check_mode"] = check
    payload["_ansible_diff"] = diff
    payload["_ansible_module_name"] = "virtfleet.libvirt." + name
    payload["_ansible_tmpdir"] = tempfile.gettempdir()
    payload["_ansible_remote_tmp"] = tempfile.gettempdir()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": payload}, handle)
        args_file = handle.name
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (pythonpath_first, COLLECTIONS) if p),
               LC_ALL="C.UTF-8")
    try:
        proc = subprocess.run([PYTHON, module_path(name), args_file], capture_output=True, text=True,
                              timeout=timeout, env=env, cwd=REPO, check=False)
    finally:
        os.unlink(args_file)
    out = proc.stdout.strip()
    try:
        result = json.loads(out[out.index("{"):]) if out else {}
    except ValueError:
        raise AssertionError("module %s printed no JSON (rc=%d):\nstdout: %s\nstderr: %s"
                             % (name, proc.returncode, proc.stdout, proc.stderr))
    result["_rc"] = proc.returncode
    result["_stderr"] = proc.stderr
    return result


@dataclass
class PlaybookRun:
    rc: int
    stdout: str
    stderr: str
    recap: Dict[str, Dict[str, int]] = field(default_factory=dict)

    def changed(self, host: Optional[str] = None) -> int:
        hosts = [host] if host else list(self.recap)
        return sum(self.recap[h]["changed"] for h in hosts)

    def failed(self) -> int:
        return sum(r["failed"] + r["unreachable"] for r in self.recap.values())


_RECAP_RE = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+"
                       r"skipped=(\d+)\s+rescued=(\d+)\s+ignored=(\d+)", re.M)


def run_playbook(playbook: str, inventory: str, extra_vars: Optional[Dict[str, Any]] = None,
                 check: bool = False, diff: bool = False, limit: Optional[str] = None,
                 verbosity: int = 0, env: Optional[Dict[str, str]] = None, timeout: float = 900) -> PlaybookRun:
    cmd: List[str] = [os.path.join(os.path.dirname(PYTHON), "ansible-playbook"), "-i", inventory, playbook]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    if limit:
        cmd += ["--limit", limit]
    if verbosity:
        cmd.append("-" + "v" * verbosity)
    run_env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_FORCE_COLOR="0",
                   ANSIBLE_NOCOLOR="1", ANSIBLE_COLLECTIONS_PATH=COLLECTIONS)
    run_env.update(env or {})
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=run_env, cwd=REPO, check=False)
    recap = {}
    for match in _RECAP_RE.finditer(proc.stdout):
        recap[match.group(1)] = dict(zip(("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored"),
                                         map(int, match.groups()[1:])))
    return PlaybookRun(proc.returncode, proc.stdout, proc.stderr, recap)
