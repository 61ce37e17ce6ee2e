"""The domain module's lifecycle on real libvirtd with the real test guest."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.integration.conftest import wait_for_report
from tests.support.runner import run_module

MIB = 1 << 20


@pytest.fixture
def guest(sandbox, guest_image):
    """A guest directory with a copy of the test image and a domain.xml written by domain_xml."""

    def make(mode="stay", vcpus=1, memory="160M", label="d"):
        name = sandbox.guest_name(label)
        instance_dir = os.path.join(sandbox.instances, name)
        os.makedirs(instance_dir)
        disk = os.path.join(instance_dir, "disk")
        shutil.copyfile(guest_image["path"], disk)
        args = {"name": name, "vcpus": vcpus, "memory": memory, "virt_type": "qemu",
                "instances_path": sandbox.instances, "fw_cfg": {"opt/org.virtfleet/mode": mode},
                "disks": [{"path": disk, "format": "raw"}],
                "metadata": {"owned_files": [disk, os.path.join(instance_dir, "console.log")]}}
        result = run_module("domain_xml", args)
        assert result["_rc"] == 0, result
        return {"name": name, "dir": instance_dir, "xml_args": args, "disk": disk,
                "console": os.path.join(instance_dir, "console.log"), "xml_file": result["path"]}

    return make


def domain(name, sandbox, check=False, diff=False, **args):
    args.setdefault("instances_path", sandbox.instances)
    return run_module("domain", dict(name=name, **args), check=check, diff=diff)


def test_running_is_idempotent_and_the_guest_sees_its_definition(sandbox, guest):
    g = guest(vcpus=2, memory="192M")
    predicted = domain(g["name"], sandbox, check=True)
    assert predicted["changed"] and predicted["actions"] == ["define", "start"]
    assert g["name"] not in [d.name() for d in sandbox.conn.listAllDomains()]

    started = domain(g["name"], sandbox)
    assert started["_rc"] == 0, started
    assert started["actions"] == ["define", "start"] and started["state"] == "running"
    report = wait_for_report(g["console"])
    assert report.cpus == 2
    assert 192 * MIB - 48 * MIB <= report.mem_kib * 1024 <= 192 * MIB
    assert report.uuid == started["uuid"].lower()

    again = domain(g["name"], sandbox)
    assert again["changed"] is False and again["actions"] == [], again


def test_changed_definition_of_a_running_guest_is_pending_until_restart(sandbox, guest):
    g = guest(vcpus=1)
    domain(g["name"], sandbox)
    wait_for_report(g["console"])
    run_module("domain_xml", dict(g["xml_args"], vcpus=2))

    pending = domain(g["name"], sandbox, diff=True)
    assert pending["changed"] and pending["actions"] == ["redefine"]
    assert pending["restart_pending"] is True
    assert any("vcpu" in line for line in pending["differences"])
    assert all("vcpu" in line for line in pending["differences"]), pending["differences"]
    assert wait_for_report(g["console"]).cpus == 1

    still = domain(g["name"], sandbox)
    assert still["changed"] is False and still["restart_pending"] is True, "pending until the guest restarts"

    restarted = domain(g["name"], sandbox, apply="restart")
    assert restarted["actions"] == ["shutdown", "start"], restarted
    assert wait_for_report(g["console"], predicate=lambda r: r.cpus == 2).cpus == 2
    settled = domain(g["name"], sandbox, apply="restart")
    assert settled["changed"] is False and settled["restart_pending"] is False


def test_shutdown_waits_and_absent_twice_is_ok(sandbox, guest):
    g = guest()
    domain(g["name"], sandbox)
    wait_for_report(g["console"])
    stopped = domain(g["name"], sandbox, state="shutdown", shutdown_timeout=60)
    assert stopped["actions"] == ["shutdown"] and stopped["state"] == "shutoff", stopped
    assert "acpi-poweroff" in open(g["console"]).read()

    gone = domain(g["name"], sandbox, state="absent", remove_storage=True)
    assert gone["changed"] and gone["state"] == "absent"
    assert not os.path.exists(g["disk"])
    assert os.path.exists(g["xml_file"]), "files not recorded as owned are never removed"
    again = domain(g["name"], sandbox, state="absent")
    assert again["changed"] is False and again["_rc"] == 0


def test_shutdown_of_a_guest_that_ignores_acpi_times_out_clearly(sandbox, guest):
    g = guest(mode="stay-noacpi")
    domain(g["name"], sandbox)
    wait_for_report(g["console"])
    failed = domain(g["name"], sandbox, state="shutdown", shutdown_timeout=3)
    assert failed.get("failed") and "timed out after 3 s waiting for domain" in failed["msg"]
    assert "force_off" in failed["msg"]
    forced = domain(g["name"], sandbox, state="shutdown", shutdown_timeout=3, force_off=True)
    assert forced["state"] == "shutoff" and forced["actions"] == ["shutdown", "destroy"], forced


def test_missing_xml_file_is_a_clear_error(sandbox):
    result = domain(sandbox.guest_name(), sandbox)
    assert result.get("failed") and "domain_xml first" in result["msg"]
