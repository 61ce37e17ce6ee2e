"""A user's first run: install the built tarball with ansible-galaxy, then boot the demo guests with
`ansible-playbook virtfleet.libvirt.boot` from an unrelated directory (no checkout, no ansible.cfg of ours),
and remove them with `virtfleet.libvirt.destroy`. The guests report their flavors on their consoles."""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess

import yaml

from tests.integration.conftest import wait_for_report
from tests.support.collection_tree import copy_collection
from tests.support.runner import PYTHON, REPO

BIN = os.path.dirname(PYTHON)
MIB = 1 << 20


def run(argv, cwd, env, timeout=900):
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, "%s failed (rc=%d):\n%s\n%s" % (
        argv[:3], proc.returncode, proc.stdout[-6000:], proc.stderr[-3000:])
    return proc


def test_installed_tarball_boots_the_demo_guests_from_any_directory(sandbox, guest_image, guest_image_url,
                                                                    tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PYTHON"))}
    env.update(HOME=str(tmp_path / "home"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", LC_ALL="C.UTF-8")
    source = copy_collection(str(tmp_path / "src"))
    run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path / "dist"),
         source], cwd=str(tmp_path), env=env)
    (tarball,) = glob.glob(str(tmp_path / "dist" / "virtfleet-libvirt-*.tar.gz"))
    collections = tmp_path / "collections"
    run([os.path.join(BIN, "ansible-galaxy"), "collection", "install", "--offline", "-p", str(collections),
         tarball], cwd=str(tmp_path), env=env)
    assert (collections / "ansible_collections" / "virtfleet" / "libvirt" / "MANIFEST.json").is_file()

    # The demo inventory (playbooks/inventory), with this sandbox's names and instance tree.
    with open(os.path.join(REPO, "playbooks", "inventory", "group_vars", "guests.yml")) as handle:
        demo_vars = yaml.safe_load(handle)
    with open(os.path.join(REPO, "playbooks", "inventory", "example.yml")) as handle:
        demo_guests = yaml.safe_load(handle)["all"]["children"]["guests"]["hosts"]
    names = {sandbox.guest_name(name.replace("demo-", "")): hostvars["virtfleet_flavor"]
             for name, hostvars in demo_guests.items()}
    demo_vars.update(virtfleet_image_url=guest_image_url, virtfleet_image_checksum="sha256:" + guest_image["sha256"],
                     virtfleet_instances_path=sandbox.instances, virtfleet_virt_type="qemu")
    inventory = {"all": {"children": {
        "hypervisors": {"hosts": {"hv1": {"ansible_connection": "local",
                                          "ansible_python_interpreter": PYTHON}}},
        "guests": {"hosts": {name: {"virtfleet_flavor": flavor} for name, flavor in names.items()},
                   "vars": demo_vars}}}}
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    (workdir / "inventory.json").write_text(json.dumps(inventory))
    env["ANSIBLE_COLLECTIONS_PATH"] = str(collections)

    first = run([os.path.join(BIN, "ansible-playbook"), "-i", "inventory.json", "virtfleet.libvirt.boot"],
                cwd=str(workdir), env=env)
    recap = dict(re.findall(r"^(\S+)\s*:\s*ok=\d+\s+changed=(\d+)", first.stdout, re.M))
    assert all(int(recap.get(name, 0)) > 0 for name in names), first.stdout[-4000:]
    for name, flavor_name in names.items():
        flavor = demo_vars["virtfleet_flavors"][flavor_name]
        report = wait_for_report(os.path.join(sandbox.instances, name, "console.log"))
        assert report.cpus == flavor["vcpus"]
        assert report.disks["vda"]["size"] == int(flavor["disk"][:-1]) * MIB
    second = run([os.path.join(BIN, "ansible-playbook"), "-i", "inventory.json", "virtfleet.libvirt.boot"],
                 cwd=str(workdir), env=env)
    recap = dict(re.findall(r"^(\S+)\s*:\s*ok=\d+\s+changed=(\d+)", second.stdout, re.M))
    # unchanged guests are not reported as hosts of their own: each has its summary line, and nothing changed
    assert recap and set(recap.values()) == {"0"}, second.stdout[-4000:]
    for name in names:
        assert re.search(r"%s: running, unchanged" % re.escape(name), second.stdout), second.stdout[-4000:]

    run([os.path.join(BIN, "ansible-playbook"), "-i", "inventory.json", "virtfleet.libvirt.destroy"],
        cwd=str(workdir), env=env)
    assert not set(names) & {d.name() for d in sandbox.conn.listAllDomains()}
