"""qemu:///session: an unprivileged user boots a guest with the collection, its instances under the user's home.

The hypervisor is this machine reached as the user ``vfsession`` (Ansible's become, the user's session libvirtd,
the distro's Python with python3-libvirt and python3-lxml). The guest's only NIC is QEMU's own user networking
with a forward on 127.0.0.1, which needs no privileges; the guest testifies on its serial console.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess

import pytest

from tests.integration.conftest import wait_for_report
from tests.support.runner import run_playbook

USER = "vfsession"
LIST_SESSION_DOMAINS = ("import libvirt; "
                        "print(' '.join(d.name() for d in libvirt.open('qemu:///session').listAllDomains()))")


def as_user(*argv):
    return subprocess.run(["/usr/sbin/runuser", "-u", USER, "--"] + list(argv), capture_output=True, text=True,
                          timeout=120, check=False, env={"PATH": "/usr/bin:/bin", "HOME": pwd.getpwnam(USER).pw_dir})


@pytest.fixture(scope="module")
def session_user(virt_host):
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", USER], check=True)
    home = pwd.getpwnam(USER).pw_dir
    probe = as_user("/usr/bin/python3", "-c", LIST_SESSION_DOMAINS)
    assert probe.returncode == 0, "the user's session libvirtd does not answer: %s" % probe.stderr
    return home


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unprivileged_user_boots_a_guest_on_its_session_with_a_loopback_forward(session_user, guest_image,
                                                                                   virt_host, tmp_path):
    home = session_user
    user = pwd.getpwnam(USER)
    name = "vft-session-%s" % os.urandom(3).hex()
    work = os.path.join(home, "vft-" + name)
    os.makedirs(work)
    image = os.path.join(work, "guest.img")
    shutil.copyfile(guest_image["path"], image)
    for path in (work, image):
        os.chown(path, user.pw_uid, user.pw_gid)
    instances = os.path.join(work, "instances")
    port = _free_port()
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": {"hv": {
        "ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3",
        "ansible_become": True, "ansible_become_method": "su", "ansible_become_user": USER}}}}))
    item = {"name": name, "image": {"url": image, "format": "raw"}, "disks": [{"kind": "root", "size": "96M"}],
            "xml": {"vcpus": 1, "memory": "128M", "virt_type": "qemu", "fw_cfg": {"opt/org.virtfleet/mode": "stay"},
                    "nics": [{"type": "user", "port_forwards": [
                        {"proto": "tcp", "address": "127.0.0.1", "host_port": port, "guest_port": 22}]}]}}
    playbook = tmp_path / "session.yml"
    playbook.write_text(json.dumps([{"hosts": "hv", "gather_facts": False, "tasks": [
        {"name": "Boot the guest", "virtfleet.libvirt.guest": {
            "uri": "qemu:///session", "instances_path": "{{ vf_instances }}", "items": "{{ vf_items }}"},
         "register": "booted"},
        {"name": "Show", "ansible.builtin.debug": {"var": "booted"}}]}]))
    env = {"ANSIBLE_PIPELINING": "True"}  # no module files in root's temp dir for the other user to read
    extra = {"vf_instances": instances, "vf_items": [item]}
    try:
        run = run_playbook(str(playbook), str(inventory), extra_vars=extra, env=env)
        assert run.rc == 0 and run.changed() == 1, run.stdout[-4000:] + run.stderr[-2000:]
        guest_dir = os.path.join(instances, name)
        # everything the run made belongs to the user, under the user's home
        for entry in os.listdir(guest_dir):
            assert os.stat(os.path.join(guest_dir, entry)).st_uid == user.pw_uid, entry
        assert name in as_user("/usr/bin/python3", "-c", LIST_SESSION_DOMAINS).stdout.split()
        assert name not in {d.name() for d in virt_host.listAllDomains()}  # not on qemu:///system
        report = wait_for_report(os.path.join(guest_dir, "console.log"))
        assert report.cpus == 1 and len(report.nics) == 1, report
        # QEMU, running as the user, listens for the forward on loopback only
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass
        again = run_playbook(str(playbook), str(inventory), extra_vars=extra, env=env)
        assert again.rc == 0 and again.changed() == 0, again.stdout[-4000:]
    finally:
        as_user("/usr/bin/python3", "-c", "import libvirt\nc = libvirt.open('qemu:///session')\n"
                "for d in c.listAllDomains():\n    if d.name() == %r:\n        d.isActive() and d.destroy()\n"
                "        d.undefine()" % name)
        shutil.rmtree(work, ignore_errors=True)
