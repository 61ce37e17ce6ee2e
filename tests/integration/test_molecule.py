"""`molecule test` on the collection's default scenario, from a clean checkout, in real libvirt guests.

The scenario boots two Debian guests (tests/guest-debian) with the boot role, converges a sample role in
them over SSH through a port forward on 127.0.0.1, runs molecule's idempotence step, verifies from inside
each guest, and destroys them. The test then checks that nothing of the guests is left.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import uuid

import pytest

from tests.integration.conftest import SCRATCH, TEST_PREFIX, destroy_domains
from tests.support.collection_tree import copy_collection
from tests.support.debian_guest import build_debian_guest
from tests.support.runner import PYTHON


@pytest.fixture(scope="session")
def debian_guest_image(virt_host) -> str:
    return build_debian_guest(os.path.join(SCRATCH, "debian-image"))


def molecule_env(collections_root: str, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MOLECULE_"))}
    env.update(PATH=os.path.dirname(PYTHON) + os.pathsep + env.get("PATH", ""), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0", NO_COLOR="1", ANSIBLE_COLLECTIONS_PATH=collections_root, LC_ALL="C.UTF-8")
    env.update(extra)
    return env


@contextlib.contextmanager
def molecule_run(virt_host, image, tmp_path, scenario, platforms):
    """``molecule test -s scenario`` from a copy of the checkout; yields (output, names, instances) and removes
    whatever is left of the platforms' guests afterwards."""
    token = uuid.uuid4().hex[:6]
    prefix = "%s%s-mol" % (TEST_PREFIX, token)
    names = ["%s-%s" % (prefix, platform) for platform in platforms]
    root = os.path.join(SCRATCH, "run-" + token)
    instances = os.path.join(root, "instances")
    os.makedirs(instances)
    os.chmod(root, 0o755)
    os.chmod(instances, 0o755)
    checkout = copy_collection(str(tmp_path / "checkout"))
    # A HOME of its own (molecule installs the collection under test into ~/.ansible/collections), short enough
    # for ssh's ControlPath socket under ~/.ansible/cp (at most 108 bytes).
    home = tempfile.mkdtemp(prefix="vfmol-")
    env = molecule_env(str(tmp_path / "checkout"), VIRTFLEET_MOLECULE_IMAGE=image,
                       VIRTFLEET_MOLECULE_INSTANCES=instances, VIRTFLEET_MOLECULE_PREFIX=prefix,
                       VIRTFLEET_MOLECULE_VIRT_TYPE="qemu", HOME=home)
    try:
        # One stream, in order: molecule logs its steps on stderr and ansible-playbook prints on stdout.
        proc = subprocess.run([os.path.join(os.path.dirname(PYTHON), "molecule"), "test", "-s", scenario],
                              cwd=checkout, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=1500, check=False)
        output = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout)  # molecule may colour regardless
        assert proc.returncode == 0, output[-30000:]
        # Every step of the sequence ran and passed, the idempotence step (a second converge that must change
        # nothing) included.
        for step in ("syntax", "create", "converge", "idempotence", "verify", "destroy"):
            assert re.search(r"%s: Executed: Successful" % step, output), output[-8000:]
        yield output, names, instances
        # destroy removed the guests and every file made for them; the image cache stays for the next run.
        assert not [d.name() for d in virt_host.listAllDomains() if d.name().startswith(prefix)]
        for name in names:
            leftover = os.path.join(instances, name)
            assert not os.path.exists(leftover) or os.listdir(leftover) == [], os.listdir(leftover)
        assert os.listdir(os.path.join(instances, "_base")), "the image cache should be kept"
    finally:
        destroy_domains(virt_host, names)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


def _task_output(output, task):
    assert "TASK [%s]" % task in output, output[-8000:]
    checks = output[output.index("TASK [%s]" % task):]
    return checks[:checks.index("PLAY RECAP")]


def test_molecule_test_converges_a_role_in_real_guests_and_cleans_up(virt_host, debian_guest_image, tmp_path):
    scenario = molecule_run(virt_host, debian_guest_image, tmp_path, "default", ["debian1", "debian2"])
    with scenario as (output, names, _instances):
        # verify.yml's checks ran inside both guests, over SSH.
        checks = _task_output(output, "Everything is as the role says")
        for name in names:
            assert re.search(r"ok: \[%s\]" % re.escape(name), checks), checks


def test_molecule_resize_scenario_grows_a_real_guest_with_the_resize_role(virt_host, debian_guest_image, tmp_path):
    """The resize scenario: the resize role grows the guest (cold: beyond its maxima), confirms only after its
    SSH server answers again, the idempotence step's second converge changes nothing, and the guest itself
    shows the new vCPUs, memory and disk over SSH."""
    with molecule_run(virt_host, debian_guest_image, tmp_path, "resize", ["resize1"]) as (output, names, _instances):
        [name] = names
        summary = (r"%s: running, resized cold \(flavor molecule -> grown, .*vcpus 1 -> 2, .*memory 512M -> 768M, "
                   r"disk vda 2 GiB -> 3 GiB\), downtime [0-9.]+ s, health passed, confirmed")
        assert re.search(summary % re.escape(name), output), output[-8000:]
        assert "%s: running, unchanged" % name in output, output[-8000:]  # the idempotence step's converge
        checks = _task_output(output, "The guest runs with the new flavor")
        assert re.search(r"ok: \[%s\]" % re.escape(name), checks), checks
