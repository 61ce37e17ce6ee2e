"""ansible-test units passes, with the ansible-core this project pins and with the oldest it supports
(meta/runtime.yml's requires_ansible). Full ansible-test sanity is tests/sanity/test_ansible_test_sanity.py."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import yaml

from tests.support.runner import REPO

OLDEST_SUPPORTED = "2.17.14"  # the newest patch release of the oldest minor version meta/runtime.yml allows


def test_oldest_supported_release_is_what_runtime_yml_allows():
    with open(os.path.join(REPO, "meta", "runtime.yml")) as handle:
        requires = yaml.safe_load(handle)["requires_ansible"]
    assert requires == ">=%s.0" % ".".join(OLDEST_SUPPORTED.split(".")[:2])


@pytest.mark.parametrize("core", ["pinned", OLDEST_SUPPORTED])
def test_ansible_test_units_passes(core):
    env = dict(os.environ)
    env.pop("VIRTFLEET_ANSIBLE_CORE", None)
    if core != "pinned":
        env["VIRTFLEET_ANSIBLE_CORE"] = core
    proc = subprocess.run([os.path.join(REPO, "scripts", "ansible-test.sh"), "units", "--requirements",
                           "--python", "3.11"], capture_output=True, text=True, timeout=1500, env=env, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-8000:]
    # ansible-test runs pytest once per kind of test (modules, module_utils, controller); every run must pass.
    summaries = re.findall(r"^=+ (\d+ passed.*|.*failed.*) in [\d.]+s", output, re.M)
    assert summaries and not [s for s in summaries if "failed" in s or "error" in s], summaries
