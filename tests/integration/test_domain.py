"""The domain module's lifecycle on real libvirtd with the real test guest."""

from __future__ import annotations

import os
import re

import libvirt
import pytest

from tests.integration.conftest import wait_for_report
from tests.support.runner import run_module

MIB = 1 << 20
MEMO_NS = "https://virtfleet.dev/xmlns/libvirt/memo/1"


@pytest.fixture
def guest(sandbox, guest_image):
    """A guest directory with a copy of the test image and a domain.xml written by domain_xml."""

    def make(mode="stay", vcpus=1, memory="160M", label="d"):
        name = sandbox.guest_name(label)
        instance_dir = os.path.join(sandbox.instances, name)
        # a flat copy of the test image, made (and recorded) by guest_disk as the boot role makes disks
        made = run_module("guest_disk", {"guest": name, "kind": "root", "base": guest_image["path"],
                                         "base_format": "raw", "backing": "flat", "format": "raw",
                                         "instances_path": sandbox.instances})
        assert made["_rc"] == 0, made
        disk = made["path"]
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
    # issue 10: the files the collection recorded making are removed, the layout's own ones included
    assert not os.path.exists(g["xml_file"]) and not os.path.exists(g["dir"]), gone
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


# ------------------------------------------------------------------------------------- re-run memo

def memo_key(dom):
    """The key libvirt holds in the memo of the persistent definition, or None."""
    try:
        text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, MEMO_NS, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    except libvirt.libvirtError:
        return None
    return re.search(r'key="([0-9a-f]{64})"', text).group(1)


def inactive(dom):
    return dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)


def test_rerun_fast_path_after_a_changing_run_and_full_path_after_an_edit(sandbox, guest, probed):
    g = guest(vcpus=1)
    started, path = probed(g["name"], sandbox)
    assert started["actions"] == ["define", "start"] and path["model"], started
    dom = sandbox.conn.lookupByName(g["name"])
    first_key = memo_key(dom)
    assert first_key, "a changing run that left nothing to do records a memo"
    assert memo_key(dom) and "vfmemo" not in dom.XMLDesc(0), "in the persistent definition only"
    wait_for_report(g["console"])  # a booted guest still matches what was recorded right after the start

    # re-runs: no model, no lxml, the full path's very answer, and nothing written
    defined = inactive(dom)
    fast, path = probed(g["name"], sandbox)
    assert path == {"model": False, "lxml": False}, "took the full path"
    checked, check_path = probed(g["name"], sandbox, check=True)
    assert check_path["model"] is False and checked == fast
    in_diff, diff_path = probed(g["name"], sandbox, diff=True)
    assert diff_path["model"], "diff mode needs the texts: full path"
    assert in_diff["diff"]["before"] == in_diff["diff"]["after"] and "vfmemo" not in in_diff["diff"]["before"]
    in_diff.pop("diff")
    assert fast == in_diff and fast["changed"] is False and fast["restart_pending"] is False
    assert fast["uuid"] == dom.UUIDString() and fast["state"] == fast["previous_state"] == "running"
    assert inactive(dom) == defined, "a run with nothing to do wrote to the definition"

    # an edit through libvirt (the memo is kept, the key no longer matches): the full path reports it
    edited = re.sub(r"<vcpu placement='static'>1</vcpu>", "<vcpu placement='static'>2</vcpu>", defined)
    assert edited != defined and "vfmemo" in edited
    sandbox.conn.defineXML(edited)
    predicted, path = probed(g["name"], sandbox, check=True)
    assert path["model"] and predicted["actions"] == ["redefine"]
    assert inactive(dom) == edited, "check mode wrote"
    redone, path = probed(g["name"], sandbox, diff=True)
    assert path["model"] and redone["actions"] == ["redefine"] and redone["changed"] is True
    assert [line[0] for line in redone["differences"]] == ["-", "+"] and ">2</vcpu>" in redone["differences"][0]
    assert redone["restart_pending"] is False, "the guest still runs with the desired definition"
    assert "<vcpu placement='static'>1</vcpu>" in inactive(dom)
    assert memo_key(dom) is not None
    again, path = probed(g["name"], sandbox)
    assert path["model"] is False and again == fast, "the redefining run recorded a fresh memo"

    # another desired definition: full path, restart pending, and no memo until the guest is restarted
    run_module("domain_xml", dict(g["xml_args"], vcpus=2))
    pending, path = probed(g["name"], sandbox)
    assert path["model"] and pending["actions"] == ["redefine"] and pending["restart_pending"] is True
    assert memo_key(dom) is None
    before = inactive(dom)
    still, path = probed(g["name"], sandbox)
    assert path["model"] and still["changed"] is False and still["restart_pending"] is True
    assert inactive(dom) == before and memo_key(dom) is None


def _cpu_model(xml):
    from lxml import etree
    node = etree.fromstring(xml.encode()).find("cpu/model")
    return None if node is None else node.text


def _running_with_cpu(sandbox, guest, model):
    g = guest(label="cpu")
    args = dict(g["xml_args"], cpu_mode="custom", cpu_model=model)
    assert run_module("domain_xml", args)["_rc"] == 0
    started = domain(g["name"], sandbox)
    assert started["_rc"] == 0 and started["state"] == "running", started
    wait_for_report(g["console"])
    dom = sandbox.conn.lookupByName(g["name"])
    assert _cpu_model(dom.XMLDesc(0)) == model
    assert domain(g["name"], sandbox)["changed"] is False
    return g, args, dom


def test_a_changed_cpu_model_is_redefined(sandbox, guest):
    """Issue 10 item 21: Nehalem -> Westmere through domain_xml's cpu_model. The persistent definition is compared
    in full (not reduced as a running guest's expanded CPU is), so the change is redefined, classified as one that
    waits for a restart, and the running guest keeps its CPU."""
    g, args, dom = _running_with_cpu(sandbox, guest, "Nehalem")
    rewritten = run_module("domain_xml", dict(args, cpu_model="Westmere"))
    assert rewritten["changed"] is True and "<model fallback=\"allow\">Westmere</model>" in rewritten["xml"]
    predicted = domain(g["name"], sandbox, check=True)
    assert predicted["changed"] and predicted["actions"] == ["redefine"], predicted
    assert _cpu_model(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)) == "Nehalem", "check mode changes nothing"

    redefined = domain(g["name"], sandbox)
    assert redefined["changed"] and redefined["actions"] == ["redefine"], redefined
    assert [c["what"] for c in redefined["changes"]] == ["cpu"], redefined["changes"]
    assert redefined["changes"][0]["applies"] == "restart"
    assert "Nehalem" in redefined["changes"][0]["before"] and "Westmere" in redefined["changes"][0]["after"]
    assert _cpu_model(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)) == "Westmere"
    assert _cpu_model(dom.XMLDesc(0)) == "Nehalem", "the running guest keeps its CPU"
    assert domain(g["name"], sandbox, state="defined")["changed"] is False


def test_a_changed_cpu_model_of_a_running_guest_is_pending_until_a_restart_applies_it(sandbox, guest):
    """Issue 10 item 21: after the redefine the running guest still has Nehalem: the restart it needs is pending, on
    this run and the next, and apply=restart gives it Westmere."""
    g, args, _dom = _running_with_cpu(sandbox, guest, "Nehalem")
    assert run_module("domain_xml", dict(args, cpu_model="Westmere"))["changed"] is True
    redefined = domain(g["name"], sandbox)
    assert redefined["actions"] == ["redefine"] and redefined["restart_pending"] is True, redefined
    still = domain(g["name"], sandbox)
    assert still["changed"] is False and still["restart_pending"] is True, still
    restarted = domain(g["name"], sandbox, apply="restart")
    assert restarted["actions"] == ["shutdown", "start"], restarted
    wait_for_report(g["console"])
    assert _cpu_model(sandbox.conn.lookupByName(g["name"]).XMLDesc(0)) == "Westmere"
    settled = domain(g["name"], sandbox, apply="restart")
    assert settled["changed"] is False and settled["restart_pending"] is False, settled
