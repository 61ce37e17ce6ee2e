"""Acceptance of the domain module's lifecycle (issue 5) on real libvirtd with real TCG guests.

What is asserted comes from the guest's own report (vCPUs, memory, disks, MACs, SMBIOS UUID), from
libvirt (states, autostart, definitions) and from the disk (NVRAM, owned files) — not from our results.
Guests sit on an isolated libvirt network (no ``<forward>``) that the test creates and removes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid as uuidlib

import libvirt
import pytest

from tests.integration.conftest import read_console, wait_for_report
from tests.support.runner import run_module

MIB = 1 << 20
MACS = ["52:54:00:5f:a0:01", "52:54:00:5f:a0:02"]


@pytest.fixture
def isolated_net(sandbox):
    """A transient libvirt network with no <forward> (guests on it reach nothing); destroyed afterwards."""
    token = sandbox.root.rsplit("-", 1)[-1]
    name = "vft-%s-iso" % token
    xml = ("<network><name>%s</name><bridge name='vftbr%s' stp='on' delay='0'/></network>" % (name, token))
    net = sandbox.conn.networkCreateXML(xml)
    try:
        yield name
    finally:
        try:
            net.destroy()
        except libvirt.libvirtError:
            pass


def blank(path, size):
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", path, str(size)], check=True)
    return path


@pytest.fixture
def writer(sandbox, guest_image):
    """Writes a guest's domain.xml with domain_xml; returns the facts a test needs about it."""

    def make(label="g", mode="stay", boot_disk=True, **options):
        name = sandbox.guest_name(label)
        instance_dir = os.path.join(sandbox.instances, name)
        os.makedirs(instance_dir, exist_ok=True)
        disks = options.pop("disks", [])
        if boot_disk:
            disk = os.path.join(instance_dir, "disk")
            shutil.copyfile(guest_image["path"], disk)
            disks = [{"path": disk, "format": "raw", "boot_order": 1}] + disks
        args = {"name": name, "virt_type": "qemu", "memory": "160M", "instances_path": sandbox.instances,
                "fw_cfg": {"opt/org.virtfleet/mode": mode}, "disks": disks}
        args.update(options)
        written = run_module("domain_xml", args)
        assert written["_rc"] == 0, written
        return {"name": name, "dir": instance_dir, "args": args, "xml_file": written["path"],
                "console": os.path.join(instance_dir, "console.log"), "written": written}

    return make


def domain(sandbox, name, check=False, diff=False, **args):
    args.setdefault("instances_path", sandbox.instances)
    result = run_module("domain", dict(name=name, **args), check=check, diff=diff)
    assert "Traceback" not in result["_stderr"], result["_stderr"]
    return result


def lv_state(conn, name):
    """(libvirt state name, autostart) of a domain, or ('absent', None)."""
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        return "absent", None
    names = {1: "running", 3: "paused", 5: "shutoff"}
    return names.get(dom.state()[0], str(dom.state()[0])), bool(dom.autostart())


def lv_inactive_xml(conn, name):
    return conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)


def predicted_then_done(sandbox, name, **args):
    """Run in check mode, prove nothing changed in libvirt, then run for real: both action lists."""
    before = lv_state(sandbox.conn, name)
    before_xml = lv_inactive_xml(sandbox.conn, name) if before[0] != "absent" else None
    predicted = domain(sandbox, name, check=True, **args)
    assert predicted["_rc"] == 0, predicted
    assert lv_state(sandbox.conn, name) == before, "check mode changed the domain's state"
    if before_xml is not None:
        assert lv_inactive_xml(sandbox.conn, name) == before_xml, "check mode changed the definition"
    done = domain(sandbox, name, **args)
    assert done["_rc"] == 0, done
    assert done["actions"] == predicted["actions"], (predicted, done)
    assert done["changed"] == predicted["changed"] and done["state"] == predicted["state"]
    return predicted, done


def test_guest_sees_what_was_asked_and_the_lifecycle_is_exact(sandbox, writer, isolated_net):
    scsi_size, ide_size = 24 * MIB, 28 * MIB
    want_uuid = str(uuidlib.uuid4())
    box = writer("full", vcpus=2, memory="224M", uuid=want_uuid, nics=[
        {"network": isolated_net, "mac": MACS[0]}, {"network": isolated_net, "mac": MACS[1]}])
    disks = box["args"]["disks"] + [
        {"path": blank(os.path.join(box["dir"], "scsi.raw"), scsi_size), "format": "raw", "bus": "scsi"},
        {"path": blank(os.path.join(box["dir"], "ide.raw"), ide_size), "format": "raw", "bus": "ide"}]
    box["args"]["disks"] = disks
    assert run_module("domain_xml", box["args"])["_rc"] == 0
    name = box["name"]

    # define + start: predicted exactly in check mode, with the desired XML in the diff
    predicted, started = predicted_then_done(sandbox, name, diff=True)
    assert started["actions"] == ["define", "start"] and started["state"] == "running"
    assert predicted["diff"]["before"] == "" and "<vcpu placement=\"static\">2</vcpu>" in predicted["diff"]["after"]
    assert started["diff"] == predicted["diff"]
    shown = domain(sandbox, "other", check=True, diff=True, xml_file=box["xml_file"], state="defined")
    assert shown.get("failed") and "other" in shown["msg"], "the XML names another domain"
    assert lv_state(sandbox.conn, "other")[0] == "absent"

    report = wait_for_report(box["console"])
    assert report.cpus == 2
    assert 224 * MIB - 48 * MIB <= report.mem_kib * 1024 <= 224 * MIB, report.mem_kib
    assert report.uuid == want_uuid and started["uuid"] == want_uuid
    assert sorted(report.nics.values()) == MACS
    image_size = os.path.getsize(disks[0]["path"])
    by_prefix = {}
    for dev, facts in report.disks.items():
        by_prefix.setdefault(dev[:2], []).append(facts["size"])
    assert by_prefix.get("vd") == [image_size], report.disks            # virtio
    # scsi is sd*; libata names the IDE disk sd* too (hd* on old kernels): tell them apart by size
    assert sorted(by_prefix.get("sd", []) + by_prefix.get("hd", [])) == [scsi_size, ide_size], report.disks

    # same options again: nothing to write, nothing to do
    assert run_module("domain_xml", box["args"])["changed"] is False
    again = domain(sandbox, name, diff=True)
    assert again["changed"] is False and again["actions"] == [] and again["differences"] == []
    assert again["diff"]["before"] == again["diff"]["after"]

    # running -> paused -> running, each predicted
    _p, paused = predicted_then_done(sandbox, name, state="paused")
    assert paused["actions"] == ["suspend"] and lv_state(sandbox.conn, name)[0] == "paused"
    assert domain(sandbox, name, state="paused")["changed"] is False
    _p, resumed = predicted_then_done(sandbox, name, state="running")
    assert resumed["actions"] == ["resume"] and lv_state(sandbox.conn, name)[0] == "running"

    # autostart on/off, idempotent both ways
    _p, on = predicted_then_done(sandbox, name, autostart=True)
    assert on["actions"] == ["autostart_on"] and lv_state(sandbox.conn, name)[1] is True
    assert domain(sandbox, name, autostart=True)["changed"] is False
    _p, off = predicted_then_done(sandbox, name, autostart=False)
    assert off["actions"] == ["autostart_off"] and lv_state(sandbox.conn, name)[1] is False
    assert domain(sandbox, name, autostart=False)["changed"] is False

    # shutdown waits for the guest (mode stay powers off on ACPI)
    _p, stopped = predicted_then_done(sandbox, name, state="shutdown", shutdown_timeout=60)
    assert stopped["actions"] == ["shutdown"] and stopped["state"] == "shutoff"
    assert lv_state(sandbox.conn, name)[0] == "shutoff"
    assert "acpi-poweroff" in read_console(box["console"])
    assert domain(sandbox, name, state="shutdown")["changed"] is False

    # only vCPUs change: differences are exactly the vcpu line; state defined does not start it
    box["args"]["vcpus"] = 1
    assert run_module("domain_xml", box["args"])["changed"] is True
    predicted, redefined = predicted_then_done(sandbox, name, state="defined", diff=True)
    assert redefined["actions"] == ["redefine"] and redefined["state"] == "shutoff"
    assert [line[0] for line in redefined["differences"]] == ["-", "+"], redefined["differences"]
    assert all("<vcpu" in line for line in redefined["differences"]), redefined["differences"]
    assert ">2</vcpu>" in redefined["differences"][0] and ">1</vcpu>" in redefined["differences"][1]
    assert predicted["differences"] == redefined["differences"]
    assert "<vcpu" in redefined["diff"]["before"] and redefined["diff"]["before"] != redefined["diff"]["after"]
    assert lv_state(sandbox.conn, name)[0] == "shutoff"
    assert "<vcpu placement='static'>1</vcpu>" in lv_inactive_xml(sandbox.conn, name)
    assert domain(sandbox, name, state="defined")["changed"] is False

    # absent: predicted, then again is a no-op
    _p, gone = predicted_then_done(sandbox, name, state="absent", diff=True)
    assert gone["actions"] == ["undefine"] and gone["state"] == "absent"
    assert gone["diff"]["before"] and gone["diff"]["after"] == ""
    assert lv_state(sandbox.conn, name)[0] == "absent"
    twice = domain(sandbox, name, state="absent")
    assert twice["_rc"] == 0 and twice["changed"] is False and twice["actions"] == []


def test_identity_is_stable_and_kept_when_the_xml_omits_it(sandbox, writer, isolated_net):
    box = writer("ident", boot_disk=False, nics=[{"network": isolated_net}, {"network": isolated_net}])
    first = box["written"]
    second = run_module("domain_xml", box["args"])
    assert second["changed"] is False
    assert first["macs"] == second["macs"] and first["uuid"] == second["uuid"]
    assert len(set(first["macs"])) == 2 and all(m.startswith("52:54:00:") for m in first["macs"])

    # rendered from scratch elsewhere (no file to take the UUID from): same MACs, derived from the name
    elsewhere = run_module("domain_xml", dict(box["args"], path=os.path.join(sandbox.root, "other.xml")))
    assert elsewhere["macs"] == first["macs"]

    defined = domain(sandbox, box["name"], state="defined")
    assert defined["actions"] == ["define"] and defined["uuid"] == first["uuid"]
    assert lv_state(sandbox.conn, box["name"])[0] == "shutoff"

    # the same XML without uuid and MACs: the domain module keeps the defined ones, nothing changes
    stripped = first["xml"].replace("<uuid>%s</uuid>" % first["uuid"], "")
    for mac in first["macs"]:
        stripped = stripped.replace("<mac address='%s'/>" % mac, "").replace('<mac address="%s"/>' % mac, "")
    assert first["uuid"] not in stripped and not any(m in stripped for m in first["macs"]), stripped
    kept = domain(sandbox, box["name"], state="defined", xml=stripped, diff=True)
    assert kept["_rc"] == 0 and kept["changed"] is False and kept["actions"] == [], kept
    assert kept["uuid"] == first["uuid"]
    live = lv_inactive_xml(sandbox.conn, box["name"])
    assert all(mac in live for mac in first["macs"])

    # a different explicit UUID is a clear error, not a silent second domain
    other = domain(sandbox, box["name"], state="defined", xml=first["xml"].replace(first["uuid"], str(uuidlib.uuid4())))
    assert other.get("failed") and "UUID" in other["msg"]
    assert sandbox.conn.lookupByName(box["name"]).UUIDString() == first["uuid"]


def test_shutdown_timeout_is_clear_and_force_off_destroys(sandbox, writer):
    box = writer("noacpi", mode="stay-noacpi")
    name = box["name"]
    assert domain(sandbox, name)["state"] == "running"
    wait_for_report(box["console"])

    failed = domain(sandbox, name, state="shutdown", shutdown_timeout=2)
    assert failed.get("failed"), failed
    assert "waiting for domain %s to be shutoff" % name in failed["msg"] and "force_off" in failed["msg"]
    assert lv_state(sandbox.conn, name)[0] == "running", "nothing is forced without force_off"

    forced = domain(sandbox, name, state="shutdown", shutdown_timeout=2, force_off=True)
    assert forced["_rc"] == 0 and forced["actions"] == ["shutdown", "destroy"] and forced["state"] == "shutoff"
    assert lv_state(sandbox.conn, name)[0] == "shutoff"

    # a running guest: absent destroys then undefines, as predicted
    _p, started = predicted_then_done(sandbox, name, state="running")
    assert started["actions"] == ["start"]
    _p, gone = predicted_then_done(sandbox, name, state="absent")
    assert gone["actions"] == ["destroy", "undefine"] and lv_state(sandbox.conn, name)[0] == "absent"


def test_absent_removes_uefi_nvram_and_only_owned_storage(sandbox, writer):
    probe = os.path.join(sandbox.root, "probe")
    os.makedirs(probe)
    box = writer("uefi", mode="once", boot_disk=False, firmware="uefi", memory="128M")
    made = run_module("guest_disk", {"guest": box["name"], "kind": "blank", "size": "4M", "file_name": "owned.raw",
                                     "format": "raw", "instances_path": sandbox.instances})
    assert made["_rc"] == 0, made
    owned = made["path"]  # recorded in disk.info.json: the collection made it
    foreign = blank(os.path.join(probe, "foreign.raw"), 4 * MIB)
    box["args"]["disks"] = [{"path": owned, "format": "raw"}, {"path": foreign, "format": "raw"}]
    # a directory listed as owned is never deleted (only regular files and links are)
    box["args"]["metadata"] = {"owned_files": [owned, probe]}
    written = run_module("domain_xml", box["args"])
    assert written["_rc"] == 0, written
    nvram = os.path.join(box["dir"], "nvram.fd")
    assert "<nvram" in written["xml"] and nvram in written["xml"]

    started = domain(sandbox, box["name"])
    assert started["_rc"] == 0 and started["state"] == "running", started
    assert os.path.exists(nvram), "libvirt creates the NVRAM from its template at start"

    predicted, gone = predicted_then_done(sandbox, box["name"], state="absent", remove_storage=True)
    assert gone["actions"] == ["destroy", "undefine", "remove_storage"], gone
    # issue 10: what the collection recorded making, and the layout's own files (the NVRAM goes with undefine)
    assert gone["removed_files"] == predicted["removed_files"] == [
        owned, box["xml_file"], box["console"], os.path.join(box["dir"], "disk.info.json"), box["dir"]], gone
    assert lv_state(sandbox.conn, box["name"])[0] == "absent"
    assert not os.path.exists(nvram), "undefine removes the NVRAM"
    assert not os.path.exists(owned)
    assert os.path.exists(foreign) and os.path.isdir(probe), "paths not owned (or not files) stay"
    assert not os.path.exists(box["xml_file"])
    assert domain(sandbox, box["name"], state="absent", remove_storage=True)["changed"] is False
