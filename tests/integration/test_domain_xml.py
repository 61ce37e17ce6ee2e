"""domain_xml against real libvirtd: the XML validates, libvirt stores exactly what we wrote, module behaviour.

Needs root and libvirtd (the ``virt_host`` fixture says so loudly). Domains are defined and undefined only,
except two test guests booted for the TPM and watchdog options. Every domain is named ``vft-dx-*`` (booted
guests ``vft-*``, through the sandbox) and removed even when a test fails.
"""

from __future__ import annotations

import difflib
import itertools
import os
import shutil
import subprocess
import uuid

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import model
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import normalize
from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import xml_file
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.guest import Hypervisor
from tests.integration.conftest import destroy_domains, transient_network, wait_for_report
from tests.support.runner import run_module


@pytest.fixture
def dx(virt_host):
    """Guest names, an instances tree under the shared scratch root, and cleanup of both."""
    from tests.integration.conftest import SCRATCH

    token = uuid.uuid4().hex[:6]
    root = os.path.join(SCRATCH, "dx-" + token)
    os.makedirs(os.path.join(root, "instances"))
    os.chmod(root, 0o755)
    names = []

    def name(label="g"):
        names.append("vft-dx-%s-%s-%d" % (token, label, len(names)))
        return names[-1]

    disk = os.path.join(root, "disk.img")
    with open(disk, "wb") as handle:
        handle.truncate(16 << 20)
    box = type("DX", (), {"root": root, "instances": os.path.join(root, "instances"), "name": staticmethod(name),
                          "conn": virt_host, "hv": Hypervisor(virt_host), "disk": disk, "names": names})()
    yield box
    destroy_domains(virt_host, names)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def isolated_network(virt_host):
    """A transient network with no <forward>: guests on it reach nothing outside."""
    with transient_network(virt_host, "vft-dx-net") as name:
        yield name


def _readback(dom) -> str:
    import libvirt

    return dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)


def _normalized(xml: str) -> str:
    return normalize.normalize_for_compare(model.Domain.from_xml(xml)).to_string()


def _define_and_compare(conn, xml: str) -> None:
    """Define ``xml``, assert libvirt's inactive copy means the same, undefine (with NVRAM)."""
    import libvirt

    dom = conn.defineXML(xml)
    try:
        want, got = _normalized(xml), _normalized(_readback(dom))
        assert want == got, "\n".join(difflib.unified_diff(want.splitlines(), got.splitlines(), "desired",
                                                           "libvirt", lineterm=""))
    finally:
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)


def _validate(xml: str, directory: str) -> None:
    path = os.path.join(directory, "validate-%s.xml" % uuid.uuid4().hex[:6])
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(xml)
    proc = subprocess.run(["virt-xml-validate", path, "domain"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr + xml


MATRIX = list(itertools.product(["bios", "uefi"], ["pc", "q35"], ["virtio", "scsi", "sata", "ide"],
                                ["network", "bridge", "direct"]))


@pytest.mark.parametrize("firmware, machine, bus, nic", MATRIX, ids=["-".join(c) for c in MATRIX])
def test_matrix_validates_and_libvirt_stores_what_we_wrote(dx, isolated_network, firmware, machine, bus, nic):
    name = dx.name("m")
    source = {"network": isolated_network, "bridge": "vftdxbr0", "direct": "vftdxeth0"}[nic]
    params = {"name": name, "vcpus": 2, "memory": "192M", "virt_type": "qemu", "machine": machine,
              "firmware": firmware, "instances_path": dx.instances,
              "disks": [{"path": dx.disk, "format": "raw", "bus": bus},
                        {"path": dx.disk, "device": "cdrom", "boot_order": 1}] if bus != "virtio" else
                       [{"path": dx.disk, "format": "raw", "bus": bus, "boot_order": 2}],
              "nics": [{nic: source}], "fw_cfg": {"opt/org.virtfleet/mode": "stay"},
              "metadata": {"flavor": "tiny", "owned_files": [dx.disk]}}
    if bus == "ide" and machine == "q35":
        with pytest.raises(VirtfleetError, match="no IDE"):
            xml_file.ensure_domain_xml(params, check_mode=True, hypervisor=dx.hv)
        return
    result = xml_file.ensure_domain_xml(params, check_mode=False, hypervisor=dx.hv)
    assert result["changed"] and result["machine"].startswith("pc-q35" if machine == "q35" else "pc-i440fx")
    with open(result["path"], encoding="utf-8") as handle:
        assert handle.read() == result["xml"]
    _validate(result["xml"], dx.root)
    _define_and_compare(dx.conn, result["xml"])


def test_feature_rich_guest_round_trips_through_libvirt(dx, isolated_network):
    params = {"name": dx.name("rich"), "vcpus": 2, "max_vcpus": 4, "memory": "256M", "max_memory": "1G",
              "virt_type": "qemu", "machine": "q35", "firmware": "uefi", "secure_boot": True, "graphics": "spice",
              "guest_agent": True, "title": "</title><devices>", "description": "a & <b>",
              "cpu_mode": "custom", "cpu_model": "Nehalem", "instances_path": dx.instances,
              "disks": [{"path": dx.disk, "format": "raw", "cache": "none", "discard": "unmap", "serial": "root0"},
                        {"device": "cdrom"}],
              "nics": [{"network": isolated_network}, {"bridge": "vftdxbr0", "model": "e1000"}],
              "extra_devices": ["<watchdog model='i6300esb' action='poweroff'/>",
                                "<memballoon model='virtio'><stats period='10'/></memballoon>"]}
    result = xml_file.ensure_domain_xml(params, check_mode=False, hypervisor=dx.hv)
    _validate(result["xml"], dx.root)
    _define_and_compare(dx.conn, result["xml"])
    params_kernel = {"name": dx.name("kern"), "virt_type": "qemu", "instances_path": dx.instances,
                     "kernel": dx.disk, "initrd": dx.disk, "cmdline": "console=ttyS0", "graphics": "vnc"}
    result = xml_file.ensure_domain_xml(params_kernel, check_mode=False, hypervisor=dx.hv)
    _validate(result["xml"], dx.root)
    _define_and_compare(dx.conn, result["xml"])


def _args(dx, name, **extra):
    args = {"name": name, "vcpus": 1, "memory": "160M", "virt_type": "qemu", "instances_path": dx.instances,
            "fw_cfg": {"opt/org.virtfleet/mode": "stay"}, "disks": [{"path": dx.disk, "format": "raw"}],
            "nics": [{"network": "default"}],
            "metadata": {"owned_files": [dx.disk, os.path.join(dx.instances, name, "console.log")]}}
    args.update(extra)
    return args


def test_module_second_run_changes_nothing_and_does_not_write(dx):
    name = dx.name("idem")
    first = run_module("domain_xml", _args(dx, name))
    assert first["_rc"] == 0 and first["changed"], first
    path = first["path"]
    assert path == os.path.join(dx.instances, name, "domain.xml")
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    assert oct(os.stat(os.path.dirname(path)).st_mode & 0o777) == "0o755"
    assert first["virt_type"] == "qemu" and first["machine"].startswith("pc-i440fx-")
    assert first["macs"] == [model.Domain.from_xml(first["xml"]).devices_of(model.Interface)[0].mac]
    stat = os.stat(path)
    second = run_module("domain_xml", _args(dx, name))
    assert second["changed"] is False and second["uuid"] == first["uuid"] and second["xml"] == first["xml"]
    assert os.stat(path).st_mtime_ns == stat.st_mtime_ns and os.stat(path).st_ino == stat.st_ino


def test_module_check_mode_writes_nothing(dx):
    name = dx.name("check")
    predicted = run_module("domain_xml", _args(dx, name), check=True)
    assert predicted["_rc"] == 0 and predicted["changed"] is True, predicted
    assert not os.path.exists(os.path.join(dx.instances, name))
    run_module("domain_xml", _args(dx, name))
    stat = os.stat(predicted["path"])
    changed = run_module("domain_xml", _args(dx, name, vcpus=3), check=True)
    assert changed["changed"] is True
    assert os.stat(predicted["path"]).st_mtime_ns == stat.st_mtime_ns
    assert model.Domain.from_xml(open(predicted["path"]).read()).vcpus == 1


def test_module_diff_shows_exactly_the_vcpu_line(dx):
    name = dx.name("diff")
    run_module("domain_xml", _args(dx, name))
    result = run_module("domain_xml", _args(dx, name, vcpus=2), diff=True)
    assert result["changed"], result
    lines = [line for line in difflib.unified_diff(result["diff"]["before"].splitlines(),
                                                   result["diff"]["after"].splitlines(), lineterm="", n=0)
             if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert lines == ['-  <vcpu placement="static">1</vcpu>', '+  <vcpu placement="static">2</vcpu>'], lines


def test_uuid_is_kept_from_file_then_from_libvirt_and_explicit_wins(dx):
    name = dx.name("uuid")
    first = run_module("domain_xml", _args(dx, name))
    dx.conn.defineXML(first["xml"])
    os.unlink(first["path"])
    again = run_module("domain_xml", _args(dx, name))
    assert again["uuid"] == first["uuid"], "taken from the defined domain"
    explicit = str(uuid.uuid4())
    forced = run_module("domain_xml", _args(dx, name, uuid=explicit.upper()))
    assert forced["uuid"] == explicit and forced["changed"]


def test_module_defined_by_domain_module_is_idempotent(dx):
    name = dx.name("dom")
    result = run_module("domain_xml", _args(dx, name, nics=[]))
    defined = run_module("domain", {"name": name, "state": "defined", "instances_path": dx.instances})
    assert defined["_rc"] == 0 and defined["actions"] == ["define"], defined
    again = run_module("domain", {"name": name, "state": "defined", "instances_path": dx.instances})
    assert again["changed"] is False, again
    assert again["uuid"].lower() == result["uuid"]


@pytest.mark.parametrize("override, message", [
    ({"name": "../../etc"}, "invalid guest name"),
    ({"vcpus": 0}, "vcpus must be between"),
    ({"memory": "lots"}, "memory"),
    ({"disks": [{"format": "raw"}]}, "missing 'path'"),
    ({"machine": "no-such-machine"}, "machine type"),
    ({"extra_devices": ["<hostdev"]}, "not a device XML"),
])
def test_module_bad_input_fails_clearly_and_writes_nothing(dx, override, message):
    name = dx.name("bad")
    args = _args(dx, name)
    args.update(override)
    result = run_module("domain_xml", args)
    assert result.get("failed") and message in result["msg"], result
    assert not os.path.exists(os.path.join(dx.instances, name))


LIVE_COMBOS = [
    {"machine": "pc"},
    {"machine": "q35", "firmware": "uefi", "graphics": "vnc", "guest_agent": True, "cdrom": True},
    {"machine": "pc", "graphics": "spice", "cpu_mode": "custom", "cpu_model": "Nehalem", "max_vcpus": 2,
     "max_memory": "512M", "cdrom": True},
]


@pytest.mark.parametrize("combo", LIVE_COMBOS, ids=["pc", "q35-uefi", "pc-custom-cpu-hotplug"])
def test_started_guest_live_xml_matches_its_definition(dx, isolated_network, combo):
    """Started paused (no CPU time): what libvirt shows for the running guest still compares equal."""
    import libvirt

    combo = dict(combo)
    disks = [{"path": dx.disk, "format": "raw"}]
    if combo.pop("cdrom", False):
        iso = os.path.join(dx.root, "cd.iso")
        with open(iso, "wb") as handle:
            handle.truncate(1 << 20)
        disks.append({"path": iso, "device": "cdrom"})
    params = dict(combo, name=dx.name("live"), virt_type="qemu", memory="128M", instances_path=dx.instances,
                  disks=disks, nics=[{"network": isolated_network}])
    result = xml_file.ensure_domain_xml(params, check_mode=False, hypervisor=dx.hv)
    dom = dx.conn.defineXML(result["xml"])
    dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
    try:
        want = normalize.normalize_for_compare(model.Domain.from_xml(result["xml"]), runtime=True).to_string()
        got = _normalized(dom.XMLDesc(0))
        assert want == got, "\n".join(difflib.unified_diff(want.splitlines(), got.splitlines(), "desired",
                                                           "live", lineterm=""))
        assert _normalized(result["xml"]) == _normalized(_readback(dom))
    finally:
        dom.destroy()


# ------------------------------------------------------------------------------- re-run fast path

def _counting_render(monkeypatch):
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import xml_file as dxm

    calls = []
    real = dxm.render_domain_xml

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(dxm, "render_domain_xml", counting)
    return calls


def test_rerun_fast_path_taken_only_when_inputs_libvirt_code_and_file_are_unchanged(dx, monkeypatch):
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import xml_file as dxm

    name = dx.name("fast")
    args = _args(dx, name)
    first = xml_file.ensure_domain_xml(dict(args), False, hypervisor=dx.hv)
    path = first["path"]
    record = dxm.read_record(path)
    assert first["changed"] and record is not None and record["path"] == path, record
    calls = _counting_render(monkeypatch)

    # Same inputs: the recorded rendering is returned without rendering, identical in every field.
    again = xml_file.ensure_domain_xml(dict(args), False, hypervisor=dx.hv)
    assert calls == [] and again["changed"] is False
    assert {k: again[k] for k in ("xml", "uuid", "macs", "machine", "virt_type", "path")} == \
        {k: first[k] for k in ("xml", "uuid", "macs", "machine", "virt_type", "path")}

    # A changed input renders (check mode: predicted, nothing written, the record is untouched).
    stat = os.stat(path)
    changed = xml_file.ensure_domain_xml(dict(args, vcpus=2), True, hypervisor=dx.hv)
    assert calls == [1] and changed["changed"] and '<vcpu placement="static">2</vcpu>' in changed["xml"]
    assert os.stat(path).st_mtime_ns == stat.st_mtime_ns and dxm.read_record(path) == record

    # The file edited behind our back: rendered again and restored.
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("<!-- edited -->\n")
    restored = xml_file.ensure_domain_xml(dict(args), False, hypervisor=dx.hv)
    assert calls == [1, 1] and restored["changed"] and restored["xml"] == first["xml"]
    assert open(path, encoding="utf-8").read() == first["xml"]

    # Other rendering code (or other libvirt answers): the key differs, the full path runs and the
    # record is refreshed without a change to the file.
    monkeypatch.setattr(dxm, "code_digest", lambda: "0" * 64)
    stat = os.stat(path)
    other_code = xml_file.ensure_domain_xml(dict(args), False, hypervisor=dx.hv)
    assert calls == [1, 1, 1] and other_code["changed"] is False and other_code["xml"] == first["xml"]
    assert os.stat(path).st_mtime_ns == stat.st_mtime_ns and dxm.read_record(path)["key"] != record["key"]
    monkeypatch.setattr(dxm, "code_digest", lambda: None)  # no code digest: never the fast path
    xml_file.ensure_domain_xml(dict(args), False, hypervisor=dx.hv)
    assert calls == [1, 1, 1, 1]


def test_rerun_fast_path_keys_on_libvirt_answers_and_skips_uefi(dx, monkeypatch):
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import xml_file as dxm

    name = dx.name("facts")
    args = _args(dx, name)
    xml_file.ensure_domain_xml(dict(args), False, hypervisor=dx.hv)
    calls = _counting_render(monkeypatch)
    real_answers = dxm.host_answers
    # libvirt now canonicalises the machine differently (a qemu upgrade): not the recorded key.
    monkeypatch.setattr(dxm, "host_answers", lambda hv, params: (real_answers(hv, params)[0], "<other/>"))
    assert dxm.record_key(dict(args), dxm.host_answers(dx.hv, args)) != dxm.read_record(
        os.path.join(dx.instances, name, "domain.xml"))["key"]
    monkeypatch.setattr(dxm, "host_answers", real_answers)
    xml_file.ensure_domain_xml(dict(args), False, hypervisor=dx.hv)
    assert calls == []
    assert dxm.host_answers(dx.hv, dict(args, firmware="uefi")) is None


def test_rerun_check_mode_writes_no_record(dx):
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import xml_file as dxm

    name = dx.name("norec")
    args = _args(dx, name)
    first = xml_file.ensure_domain_xml(dict(args), False, hypervisor=dx.hv)
    os.removexattr(first["path"], dxm.RECORD_XATTR)
    xml_file.ensure_domain_xml(dict(args), True, hypervisor=dx.hv)
    assert dxm.read_record(first["path"]) is None
    xml_file.ensure_domain_xml(dict(args), False, hypervisor=dx.hv)
    assert dxm.read_record(first["path"]) is not None


@pytest.mark.parametrize("extra", [{}, {"instance_dir": "/srv/x/../y"}, {"path": "/srv/a/./b.xml"},
                                   {"instances_path": "/srv/inst/"}])
def test_the_fast_paths_output_path_equals_the_specs(extra):
    """One function finds the file for the fast path; the full path's typed spec must name the same file."""
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import xml_file as dxm
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.xml_spec import DomainXmlSpec

    params = dict({"name": "g1"}, **extra)
    assert dxm.output_path(params) == DomainXmlSpec.from_params(params).path


# ------------------------------------------------------------------------- tpm, watchdog, memballoon

DEVICE_CASES = [
    {"machine": "q35", "firmware": "uefi", "tpm": True, "tpm_model": "tpm-crb", "watchdog": "itco",
     "watchdog_action": "poweroff", "memballoon": False},
    {"machine": "pc", "tpm": True, "watchdog": "i6300esb", "watchdog_action": "inject-nmi", "memballoon": False},
]


@pytest.mark.parametrize("case", DEVICE_CASES, ids=["q35-crb-itco", "pc-tis-i6300esb"])
def test_tpm_watchdog_and_no_balloon_validate_and_libvirt_stores_what_we_wrote(dx, case):
    params = dict(case, name=dx.name("dev"), virt_type="qemu", memory="128M", instances_path=dx.instances,
                  disks=[{"path": dx.disk, "format": "raw"}])
    if params["watchdog"] == "itco" and dx.conn.getLibVersion() < 9001000:
        # libvirt 9.0 has no itco model (its schema refuses it): the module says so before writing.
        with pytest.raises(VirtfleetError, match="itco needs libvirt 9.1 or later"):
            xml_file.ensure_domain_xml(params, check_mode=False, hypervisor=dx.hv)
        assert not os.path.exists(os.path.join(dx.instances, params["name"], "domain.xml"))
        params["watchdog"] = "i6300esb"
    result = xml_file.ensure_domain_xml(params, check_mode=False, hypervisor=dx.hv)
    assert "<tpm model=\"%s\">" % case.get("tpm_model", "tpm-tis") in result["xml"]
    assert "<memballoon model=\"none\"/>" in result["xml"]
    _validate(result["xml"], dx.root)
    _define_and_compare(dx.conn, result["xml"])
    with pytest.raises(VirtfleetError, match="watchdog itco"):
        xml_file.ensure_domain_xml(dict(params, machine="pc", watchdog="itco"), check_mode=True, hypervisor=dx.hv)


def _boot_guest(sandbox, guest_image, label, **options):
    """Write the definition through domain_xml and start it through domain; the guest stays and reports."""
    name = sandbox.guest_name(label)
    instance_dir = os.path.join(sandbox.instances, name)
    os.makedirs(instance_dir)
    root = os.path.join(instance_dir, "disk")
    shutil.copyfile(guest_image["path"], root)
    xml_args = dict(options, name=name, vcpus=1, memory="128M", virt_type="qemu",
                    instances_path=sandbox.instances, fw_cfg={"opt/org.virtfleet/mode": "stay"},
                    disks=[{"path": root, "format": "raw", "boot_order": 1}])
    written = run_module("domain_xml", xml_args)
    assert written["_rc"] == 0 and written["changed"], written
    started = run_module("domain", {"name": name, "instances_path": sandbox.instances})
    assert started["_rc"] == 0 and started["state"] == "running", started
    return name, xml_args, os.path.join(instance_dir, "console.log")


def _rerun_changes_nothing(sandbox, name, xml_args):
    again = run_module("domain_xml", xml_args)
    assert again["_rc"] == 0 and again["changed"] is False, again
    again = run_module("domain", {"name": name, "instances_path": sandbox.instances})
    assert again["_rc"] == 0 and again["changed"] is False, again


def test_guest_with_tpm_sees_a_tpm2_and_absent_removes_its_state(sandbox, guest_image):
    import libvirt

    name, xml_args, console = _boot_guest(sandbox, guest_image, "tpm", tpm=True)
    report = wait_for_report(console, predicate=lambda r: r.tpms)
    assert report.tpms == {"tpm0": "2"}, report
    dom = sandbox.conn.lookupByName(name)
    state_dir = os.path.join("/var/lib/libvirt/swtpm", dom.UUIDString())
    assert os.path.isdir(state_dir), "libvirt keeps the emulated TPM's state there"
    _rerun_changes_nothing(sandbox, name, xml_args)

    gone = run_module("domain", {"name": name, "instances_path": sandbox.instances, "state": "absent"})
    assert gone["_rc"] == 0 and gone["changed"], gone
    with pytest.raises(libvirt.libvirtError, match="Domain not found"):
        sandbox.conn.lookupByName(name)
    assert not os.path.exists(state_dir)


def test_guest_with_watchdog_and_no_balloon_starts_and_reruns_unchanged(sandbox, guest_image):
    import libvirt

    name, xml_args, console = _boot_guest(sandbox, guest_image, "wdog", watchdog="i6300esb", memballoon=False)
    report = wait_for_report(console)
    assert report.tpms == {}
    live = model.Domain.from_xml(sandbox.conn.lookupByName(name).XMLDesc(0))
    assert [(w.model, w.action) for w in live.devices_of(model.Watchdog)] == [("i6300esb", "reset")]
    assert [m.model for m in live.devices_of(model.MemBalloon)] == ["none"]
    _rerun_changes_nothing(sandbox, name, xml_args)
    assert sandbox.conn.lookupByName(name).state()[0] == libvirt.VIR_DOMAIN_RUNNING


@pytest.fixture
def host_links():
    """A Linux bridge with no uplink, and a veth whose peer sits in a network namespace this test makes:
    NICs on them reach nothing outside the machine."""
    tag = uuid.uuid4().hex[:6]
    bridge, lower, peer, netns = "vftbr%s" % tag, "vftva%s" % tag, "vftvb%s" % tag, "vft-nics-%s" % tag
    steps = [["ip", "link", "add", bridge, "type", "bridge"], ["ip", "link", "set", bridge, "up"],
             ["ip", "netns", "add", netns],
             ["ip", "link", "add", lower, "type", "veth", "peer", "name", peer],
             ["ip", "link", "set", peer, "netns", netns], ["ip", "link", "set", lower, "up"]]
    try:
        for step in steps:
            subprocess.run(step, check=True, capture_output=True, timeout=30)
        yield {"bridge": bridge, "lower": lower}
    finally:
        for cleanup in (["ip", "link", "del", lower], ["ip", "link", "del", bridge], ["ip", "netns", "del", netns]):
            subprocess.run(cleanup, capture_output=True, timeout=30, check=False)


def test_guest_on_a_bridge_and_a_macvtap_sees_both_nics(sandbox, guest_image, host_links):
    """Interface types bridge and direct (macvtap) on a running guest: the guest sees both MACs, the host
    has a tap enslaved to the bridge and a macvtap on the lower device, re-runs change nothing and absent
    leaves neither device behind."""
    name, xml_args, console = _boot_guest(
        sandbox, guest_image, "nics",
        nics=[{"bridge": host_links["bridge"]}, {"direct": host_links["lower"], "model": "virtio"}])
    report = wait_for_report(console, predicate=lambda r: len(r.nics) == 2)

    listed = run_module("domain_info", {"name": name})
    assert listed["_rc"] == 0, listed
    [dom] = listed["domains"]
    nics = dom["interfaces"]
    assert [(n["type"], n["source"]) for n in nics] == [
        ("bridge", host_links["bridge"]), ("direct", host_links["lower"])]
    assert sorted(n["mac"] for n in nics) == report.macs(), "the guest sees exactly the MACs libvirt holds"
    tap, macvtap = nics[0]["target"], nics[1]["target"]
    assert os.path.basename(os.readlink("/sys/class/net/%s/master" % tap)) == host_links["bridge"]
    assert os.path.exists("/sys/class/net/%s/lower_%s" % (macvtap, host_links["lower"])), \
        "libvirt made a macvtap on the lower device"
    with open("/sys/class/net/%s/address" % macvtap) as handle:
        assert handle.read().strip() == nics[1]["mac"], "a macvtap carries the guest NIC's MAC"

    _rerun_changes_nothing(sandbox, name, xml_args)

    gone = run_module("domain", {"name": name, "instances_path": sandbox.instances, "state": "absent"})
    assert gone["_rc"] == 0 and gone["changed"], gone
    assert not os.path.exists("/sys/class/net/%s" % tap) and not os.path.exists("/sys/class/net/%s" % macvtap)


# ------------------------------------------------------------------ user-mode networking (issue 13 item 2)

def _libvirt_parses_passt(conn) -> bool:
    """Whether this libvirt accepts <backend type='passt'/> (Debian 12's 9.0.0 does not)."""
    import libvirt

    probe = libvirt.open("test:///default")
    try:
        probe.defineXML("<domain type='test'><name>vft-passt-probe</name><memory>65536</memory><os><type>hvm</type>"
                        "</os><devices><interface type='user'><backend type='passt'/></interface></devices></domain>")
        return True
    except libvirt.libvirtError:
        return False
    finally:
        probe.close()


def test_a_user_nic_on_passt_with_loopback_port_forwards(dx):
    """backend passt: domain_xml writes what libvirt's schema takes; on a libvirt that cannot run passt, domain fails
    saying so and defines nothing."""
    name = dx.name("user")
    args = _args(dx, name, nics=[{"type": "user", "backend": "passt",
                                  "port_forwards": [{"host_port": 22222, "guest_port": 22}]}])
    written = run_module("domain_xml", args)
    assert written["_rc"] == 0, written
    assert "<portForward proto=\"tcp\" address=\"127.0.0.1\">" in written["xml"]
    _validate(written["xml"], dx.root)
    if _libvirt_parses_passt(dx.conn):
        raise AssertionError("this host's libvirt now runs passt: replace this test with one in which the guest is "
                             "reached through 127.0.0.1:22222")
    defined = run_module("domain", {"name": name, "state": "running", "instances_path": dx.instances})
    assert defined.get("failed") and "cannot run the passt backend" in defined["msg"], defined
    assert name not in [d.name() for d in dx.conn.listAllDomains()]


@pytest.mark.parametrize("machine, bus, slot", [("pc", "pci.0", "0x1f"), ("q35", "pcie.0", "0x1c")])
def test_a_user_nic_on_qemus_user_networking_is_stored_as_written(dx, machine, bus, slot):
    """The default backend: QEMU's own user networking on <qemu:commandline>, which this libvirt validates and stores
    as written (the guest behind it is tested in test_user_nic.py)."""
    name = dx.name("user")
    args = _args(dx, name, machine=machine,
                 nics=[{"type": "user", "port_forwards": [{"host_port": 22222, "guest_port": 22}]}])
    written = run_module("domain_xml", args)
    assert written["_rc"] == 0, written
    assert '<qemu:arg value="user,id=vfnet0,restrict=on,hostfwd=tcp:127.0.0.1:22222-:22"/>' in written["xml"]
    assert '<qemu:arg value="virtio-net-pci,netdev=vfnet0,mac=%s,bus=%s,addr=%s"/>' % (
        written["macs"][0], bus, slot) in written["xml"]
    _validate(written["xml"], dx.root)
    _define_and_compare(dx.conn, written["xml"])
