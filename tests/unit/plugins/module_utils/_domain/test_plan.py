"""The comparison half of the domain plan (_domain/plan.py): what the desired XML must be, whose identity it
keeps, which lines differ, and that only a running guest's own XML is reduced to what survives its start."""

from __future__ import annotations

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import model
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import plan as plan_mod
from tests.support.libvirt_errors import libvirt_error
from tests.unit.plugins.module_utils._domain.test_lifecycle import FakeConn, guest_xml, params, plan_of

UUID = "6f1c7a52-3a55-4d8e-9a43-0a2b0f1d5e01"
CPU = "<cpu mode='custom' match='exact'><model fallback='allow'>%s</model></cpu>"


def with_cpu(xml, cpu_model):
    return xml.replace("</vcpu>", "</vcpu>" + CPU % cpu_model, 1)


@pytest.mark.parametrize("xml,message", [
    (None, r"^the domain XML from src is empty$"), ("", r"^the domain XML from src is empty$"),
    ("  \n", r"^the domain XML from src is empty$"), (5, r"^the domain XML from src is empty$"),
    ("<domain", r"^cannot parse the domain XML from src: not well-formed XML"),
    (guest_xml(name="other"), r"^the domain XML from src defines domain 'other', not 'g1'; the name option and "
                              r"the XML's <name> must agree$"),
    (guest_xml(uuid="not-a-uuid"), r"^the domain XML from src has an invalid UUID 'not-a-uuid'$"),
])
def test_the_desired_xml_must_parse_and_name_the_domain(xml, message):
    with pytest.raises(VirtfleetError, match=message):
        plan_mod._parse_desired(xml, "src", "g1")
    assert plan_mod._parse_desired(guest_xml(), "src", "g1").name == "g1"
    assert plan_mod._parse_desired(guest_xml(uuid=None), "src", "g1").uuid is None


def test_uuids_compare_as_uuids():
    assert plan_mod._same_uuid(UUID, UUID.upper())
    assert plan_mod._same_uuid(UUID, UUID.replace("-", ""))
    assert not plan_mod._same_uuid(UUID, UUID[:-1] + "2")
    assert plan_mod._same_uuid("Not-A-Uuid", "not-a-uuid")  # falls back to text, case-insensitive
    assert not plan_mod._same_uuid("not-a-uuid", UUID)


def test_identity_libvirt_generated_is_kept():
    desired = model.Domain.from_xml(guest_xml(uuid=None, mac=None))
    current = model.Domain.from_xml(guest_xml(mac="52:54:00:aa:bb:cc"))
    plan_mod._adopt_identity(desired, current)
    assert desired.uuid == UUID and desired.devices_of(model.Interface)[0].mac == "52:54:00:aa:bb:cc"
    spelled = model.Domain.from_xml(guest_xml(uuid=UUID.upper()))
    plan_mod._adopt_identity(spelled, current)
    assert spelled.uuid == UUID                 # an equal UUID is spelled the way libvirt spells it
    other = model.Domain.from_xml(guest_xml(uuid="0a2d9c3e-1f4b-4c5d-8e6f-7a8b9c0d1e2f", mac="52:54:00:00:00:09"))
    plan_mod._adopt_identity(other, current)
    assert other.uuid == "0a2d9c3e-1f4b-4c5d-8e6f-7a8b9c0d1e2f"
    assert other.devices_of(model.Interface)[0].mac == "52:54:00:00:00:09"
    second_nic = "<interface type='network'><source network='default'/></interface></devices>"
    two = model.Domain.from_xml(guest_xml(mac=None).replace("</devices>", second_nic))
    plan_mod._adopt_identity(two, current)
    assert [nic.mac for nic in two.devices_of(model.Interface)] == ["52:54:00:aa:bb:cc", None]


def test_changed_lines_are_only_the_lines_that_differ():
    assert plan_mod._changed_lines("a\nb\nc", "a\nB\nc\nd") == ["-b", "+B", "+d"]
    assert plan_mod._changed_lines("same", "same") == []


def test_a_different_uuid_cannot_be_redefined():
    conn = FakeConn()
    conn.add(guest_xml())
    other = "0a2d9c3e-1f4b-4c5d-8e6f-7a8b9c0d1e2f"
    with pytest.raises(VirtfleetError, match=r"^domain g1 is defined with UUID %s but the desired XML has UUID %s; "
                       r"libvirt cannot change a domain's UUID\. Remove the uuid from the XML to keep the existing "
                       r"one, or set state=absent first\.$" % (UUID, other)):
        plan_of(conn, params(state="defined", xml=guest_xml(uuid=other)))


def test_a_changed_cpu_model_of_a_defined_guest_is_a_redefine():
    """The persistent definition is compared in full: a CPU model change is a change (Nehalem -> Westmere)."""
    conn = FakeConn()
    conn.add(with_cpu(guest_xml(), "Nehalem"))
    plan = plan_of(conn, params(state="defined", xml=with_cpu(guest_xml(), "Westmere")))
    assert plan.actions == ["redefine"]
    assert [(c.what, c.applies) for c in plan.changes] == [("cpu", "restart")]
    assert "Westmere" in plan.after_xml and "Nehalem" in plan.before_xml
    assert any("Westmere" in line and line.startswith("+") for line in plan.differences)
    assert plan.desired_xml and "Westmere" in plan.desired_xml
    same = plan_of(conn, params(state="defined", xml=with_cpu(guest_xml(), "Nehalem")))
    assert same.actions == [] and same.changes == [] and same.differences == [] and same.desired_xml is None


def test_a_changed_cpu_model_of_a_running_guest_is_a_redefine_too():
    conn = FakeConn()
    conn.add(with_cpu(guest_xml(), "Nehalem"), status="running")
    plan = plan_of(conn, params(xml=with_cpu(guest_xml(), "Westmere")))
    assert plan.actions == ["redefine"]
    assert [(c.what, c.applies) for c in plan.changes] == [("cpu", "restart")]


def test_a_new_domain_is_defined_from_the_desired_xml_as_given():
    conn = FakeConn()
    plan = plan_of(conn, params(state="defined"))
    assert plan.actions == ["define"] and plan.desired_xml == guest_xml()
    assert plan.before_state == "absent" and plan.after_state == "shutoff"
    assert "<name>g1</name>" in plan.after_xml and plan.before_xml == ""


LIVE_CPU = ("<cpu mode='custom' match='exact' check='full'><model fallback='forbid'>%s</model>"
            "<feature policy='require' name='hypervisor'/><feature policy='disable' name='vme'/></cpu>")


def running_with_cpu(cpu_model):
    """A running guest as libvirt shows it: the live XML's CPU expanded (check='full', features filled in)."""
    conn = FakeConn()
    dom = conn.add(with_cpu(guest_xml(), cpu_model), status="running")
    dom.live = guest_xml().replace("</vcpu>", "</vcpu>" + LIVE_CPU % cpu_model, 1)
    return conn


def test_the_live_cpu_expansion_alone_is_no_pending_restart():
    plan = plan_of(running_with_cpu("Nehalem"), params(xml=with_cpu(guest_xml(), "Nehalem")))
    assert plan.actions == [] and plan.restart_pending is False and plan.pending == []


def test_a_cpu_model_the_running_guest_lacks_is_pending():
    plan = plan_of(running_with_cpu("Nehalem"), params(xml=with_cpu(guest_xml(), "Westmere")))
    assert plan.actions == ["redefine"]
    assert plan.restart_pending is True
    assert [d.what for d in plan.pending] == ["cpu"]
    restart = plan_of(running_with_cpu("Nehalem"), params(xml=with_cpu(guest_xml(), "Westmere"), apply="restart"))
    assert restart.actions == ["redefine", "shutdown", "start"]


# What libvirt 9.0 shows for a running TCG guest (virsh dumpxml of real guests), by the CPU it was started with.
EXPANDED_HOST_MODEL = ("<cpu mode='custom' match='exact' check='full'><model fallback='forbid'>EPYC</model>"
                       "<vendor>AMD</vendor><feature policy='require' name='acpi'/><feature policy='require' "
                       "name='hypervisor'/><feature policy='disable' name='vme'/></cpu>")
STARTED_MAXIMUM = "<cpu mode='maximum' check='none'/>"
STARTED_WESTMERE = ("<cpu mode='custom' match='exact' check='full'><model fallback='forbid'>Westmere</model>"
                    "<topology sockets='1' dies='1' cores='1' threads='1'/><feature policy='disable' name='popcnt'/>"
                    "<feature policy='require' name='aes'/><feature policy='disable' name='x2apic'/>"
                    "<feature policy='require' name='pclmuldq'/><feature policy='require' name='hypervisor'/></cpu>")
WESTMERE = ("<cpu mode='custom' match='exact' check='partial'><model fallback='forbid'>Westmere</model>"
            "<topology sockets='1' dies='1' cores='1' threads='1'/><feature policy='disable' name='popcnt'/>"
            "<feature policy='require' name='aes'/><feature policy='optional' name='x2apic'/></cpu>")


def running_as(defined_cpu, live_cpu):
    """A running guest defined with ``defined_cpu`` whose live XML shows ``live_cpu``."""
    conn = FakeConn()
    dom = conn.add(guest_xml().replace("</vcpu>", "</vcpu>" + defined_cpu, 1), status="running")
    dom.live = guest_xml().replace("</vcpu>", "</vcpu>" + live_cpu, 1)
    return conn


def pending_of(conn, desired_cpu, **over):
    plan = plan_of(conn, params(xml=guest_xml().replace("</vcpu>", "</vcpu>" + desired_cpu, 1), **over))
    return [(d.what, d.applies) for d in plan.pending], plan


@pytest.mark.parametrize("desired,live", [
    ("<cpu mode='host-model'/>", EXPANDED_HOST_MODEL),
    ("<cpu mode='host-model'><topology sockets='1' cores='1' threads='1'/></cpu>",
     EXPANDED_HOST_MODEL.replace("<feature", "<topology sockets='1' cores='1' threads='1'/><feature", 1)),
    ("<cpu mode='maximum'/>", STARTED_MAXIMUM),
    # (TCG cannot pass the host CPU through: this one is libvirt's documented form, not seen here)
    ("<cpu mode='host-passthrough'/>", "<cpu mode='host-passthrough' check='none' migratable='on'/>"),
    ("<cpu mode='custom' match='minimum'><model>Westmere</model></cpu>", EXPANDED_HOST_MODEL.replace(
        "<vendor>AMD</vendor>", "")),  # minimum: libvirt gives the guest the host's model
], ids=["host-model", "host-model-topology", "maximum", "host-passthrough", "custom-minimum"])
def test_a_cpu_libvirt_expands_at_start_is_compared_by_topology_only(desired, live):
    conn = running_as(desired, live)
    pending, plan = pending_of(conn, desired)
    assert pending == [] and plan.actions == [] and plan.restart_pending is False
    restart, plan = pending_of(conn, desired, apply="restart")
    assert restart == [] and plan.actions == []
    assert conn.capabilities_asked == []


def test_a_running_custom_cpu_is_compared_by_what_survives_its_start():
    """Model, match, vendor, topology and the features named disable/forbid/force: what libvirt starts as written.
    A required feature the host lacks shows as disabled, an optional one as either: neither is compared."""
    conn = running_as(WESTMERE, STARTED_WESTMERE)
    assert pending_of(conn, WESTMERE)[0] == []
    no_mode = WESTMERE.replace(" mode='custom' match='exact' check='partial'", "")
    assert pending_of(conn, no_mode)[0] == [], "a model without a mode is a custom CPU matched exactly"
    lacked = WESTMERE.replace("</cpu>", "<feature policy='require' name='avx512f'/></cpu>")
    assert pending_of(running_as(lacked, STARTED_WESTMERE.replace(
        "</cpu>", "<feature policy='disable' name='avx512f'/></cpu>")), lacked)[0] == []
    for changed in (WESTMERE.replace(">Westmere<", ">Nehalem<"), no_mode.replace(">Westmere<", ">Nehalem<"),
                    WESTMERE.replace("match='exact'", "match='strict'"),
                    WESTMERE.replace("</model>", "</model><vendor>Intel</vendor>"),
                    WESTMERE.replace("sockets='1' dies='1' cores='1'", "sockets='1' dies='1' cores='2'"),
                    WESTMERE.replace("policy='disable' name='popcnt'", "policy='force' name='popcnt'"),
                    WESTMERE.replace("</cpu>", "<feature policy='disable' name='sse4.2'/></cpu>"),
                    WESTMERE.replace("</cpu>", "<feature policy='forbid' name='avx'/></cpu>")):
        pending, plan = pending_of(conn, changed)
        assert pending == [("cpu", "restart")], changed
        assert plan.restart_pending is True and plan.actions == ["redefine"]
        restart, plan = pending_of(conn, changed, apply="restart")
        assert plan.actions == ["redefine", "shutdown", "start"], changed


def test_a_custom_model_is_compared_with_a_guest_started_from_another_mode():
    westmere = "<cpu mode='custom' match='exact'><model fallback='allow'>Westmere</model></cpu>"
    conn = running_as("<cpu mode='host-model'/>", EXPANDED_HOST_MODEL)
    assert pending_of(conn, westmere)[0] == [("cpu", "restart")]
    assert conn.capabilities_asked == [("pc-i440fx-7.2", "qemu", "x86_64")]
    assert pending_of(running_as(STARTED_MAXIMUM, STARTED_MAXIMUM), westmere)[0] == [("cpu", "restart")]


def test_a_model_qemu_lacks_is_compared_only_when_libvirt_may_not_replace_it():
    """libvirt starts Icelake-Client (which QEMU 7.2 lacks) with fallback allow as IvyBridge: a restart would not
    give the guest the model, so it is not asked for; with fallback forbid the model is compared."""
    icelake = "<cpu mode='custom' match='exact'><model fallback='allow'>Icelake-Client</model></cpu>"
    conn = running_as(icelake, LIVE_CPU % "IvyBridge")
    pending, plan = pending_of(conn, icelake, apply="restart")
    assert pending == [] and plan.actions == [] and plan.restart_pending is False
    assert conn.capabilities_asked == [("pc-i440fx-7.2", "qemu", "x86_64")]
    forbidden = icelake.replace("'allow'", "'forbid'")
    assert pending_of(conn, forbidden)[0] == [("cpu", "restart")]
    conn.cpu_models += ("Icelake-Client",)
    assert pending_of(conn, icelake)[0] == [("cpu", "restart")], "a model QEMU offers is started as named"


def test_the_hypervisor_is_asked_about_a_model_only_when_the_running_guest_shows_another():
    conn = running_as(WESTMERE, STARTED_WESTMERE)
    relaxed = WESTMERE.replace("'forbid'", "'allow'")
    assert pending_of(conn, relaxed)[0] == [] and conn.capabilities_asked == []
    assert pending_of(conn, relaxed.replace(">Westmere<", ">Nehalem<"))[0] == [("cpu", "restart")]
    assert len(conn.capabilities_asked) == 1


def test_a_hypervisor_that_cannot_say_which_models_it_offers_gets_no_restart_it_may_not_honour():
    def refuse(*_args):
        raise libvirt_error("no domain capabilities")
    conn = running_as(WESTMERE, STARTED_WESTMERE)
    conn.getDomainCapabilities = refuse
    relaxed = WESTMERE.replace("'forbid'", "'allow'").replace(">Westmere<", ">Nehalem<")
    assert pending_of(conn, relaxed)[0] == []
    assert pending_of(conn, relaxed.replace("'allow'", "'forbid'"))[0] == [("cpu", "restart")]


def test_changed_lines_of_a_removal_and_of_lines_that_start_like_markers():
    assert plan_mod._changed_lines("a\n+x\nb", "a\nb") == ["-+x"]
    assert plan_mod._changed_lines("", "x") == ["+x"]


@pytest.mark.parametrize("xml,message", [
    (guest_xml(uuid="00000000-0000-0000-0000-000000000000"),
     r"^the domain XML from src has the nil UUID 00000000-0000-0000-0000-000000000000, which names no domain; "
     r"leave <uuid> out to keep the defined one or have libvirt make one$"),
    (guest_xml().replace("</devices>", "<interface type='network'><mac address='00:00:00:00:00:00'/><source "
                                       "network='default'/></interface></devices>"),
     r"^the domain XML from src gives a NIC the all-zero MAC 00:00:00:00:00:00$"),
])
def test_identities_that_name_nothing_are_refused(xml, message):
    with pytest.raises(VirtfleetError, match=message):
        plan_mod._parse_desired(xml, "src", "g1")
    nic = guest_xml().replace("</devices>", "<interface type='network'><source network='default'/></interface>"
                                            "</devices>")
    assert plan_mod._parse_desired(nic, "src", "g1").name == "g1"  # no MAC given: libvirt makes one


# ---- which files of a guest domain state=absent remove_storage=true may delete ------------------------------

import os  # noqa: E402

from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import guest_layout  # noqa: E402


class InUse:
    """What libvirt says other domains use (the one Hypervisor call removable_files makes)."""

    def __init__(self, used=None):
        self.used, self.asked = used or {}, []

    def disks_in_use(self, except_guest=None):
        self.asked.append(except_guest)
        return self.used


def _guest(tmp_path):
    layout = guest_layout(str(tmp_path / "instances"), "g1")
    os.makedirs(layout.instance_dir)
    return layout


def test_own_instance_dir_refuses_symlinks_and_non_directories(tmp_path):
    layout = guest_layout(str(tmp_path / "instances"), "g1")
    assert plan_mod.own_instance_dir(layout) is None  # nothing there
    os.makedirs(tmp_path / "instances")
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", layout.instance_dir)
    assert plan_mod.own_instance_dir(layout) == "the instance directory %s is a symbolic link (to %s)" % (
        layout.instance_dir, tmp_path / "elsewhere")
    os.unlink(layout.instance_dir)
    open(layout.instance_dir, "w").close()
    assert plan_mod.own_instance_dir(layout) == "the instance directory %s is not a directory" % layout.instance_dir
    os.unlink(layout.instance_dir)
    os.makedirs(tmp_path / "real" / "g1")
    linked = guest_layout(str(tmp_path / "linked"), "g1")
    os.symlink(tmp_path / "real", tmp_path / "linked")
    assert plan_mod.own_instance_dir(linked) is None  # the tree itself may be reached through a link
    os.makedirs(tmp_path / "tree")
    os.symlink(tmp_path / "real", tmp_path / "tree" / "real")
    below = guest_layout(str(tmp_path / "tree"), "g1", str(tmp_path / "tree" / "real" / "g1"))
    assert plan_mod.own_instance_dir(below) == ("the instance directory %s is reached through a symbolic link"
                                                % below.instance_dir)


def test_removable_files_are_the_guests_own_regular_files_no_other_domain_uses(tmp_path):
    layout = _guest(tmp_path)
    disk, shared, link, sub = (layout.file(n) for n in ("disk", "disk.local", "disk.link", "subdir"))
    for path in (disk, shared):
        open(path, "w").close()
    os.symlink(disk, link)
    os.makedirs(sub)
    outside = str(tmp_path / "outside")
    open(outside, "w").close()
    in_use = InUse({os.path.realpath(shared): {"db2", "app1"}})
    candidates = [layout.file("missing"), link, disk, sub, outside, shared]
    assert plan_mod.removable_files(in_use, layout, candidates) == ([disk], [
        (link, "it is a symbolic link; only files the collection made are removed"),
        (sub, "not a regular file"),
        (outside, "not inside the guest's own instance directory %s" % layout.instance_dir),
        (shared, "domain app1, db2 uses it")])
    assert in_use.asked == ["g1"]  # asked once, leaving the guest's own disks out


def test_nothing_is_removed_from_an_instance_directory_that_is_a_symlink(tmp_path):
    layout = _guest(tmp_path)
    open(layout.file("disk"), "w").close()
    os.rename(layout.instance_dir, str(tmp_path / "moved"))
    os.symlink(tmp_path / "moved", layout.instance_dir)
    assert plan_mod.removable_files(InUse(), layout, [layout.file("disk")]) == ([], [(
        layout.instance_dir, "the instance directory %s is a symbolic link (to %s); nothing in it is removed"
        % (layout.instance_dir, tmp_path / "moved"))])


def test_removable_files_say_why_a_path_cannot_be_inspected(tmp_path):
    layout = _guest(tmp_path)
    not_a_dir = layout.file("disk")
    open(not_a_dir, "w").close()
    beyond = not_a_dir + "/below"
    assert plan_mod.removable_files(InUse(), layout, [beyond, not_a_dir]) == ([not_a_dir], [
        (beyond, "cannot inspect it: Not a directory")])


def test_a_corrupt_disk_record_stops_the_removal_saying_nothing_changed(tmp_path):
    layout = _guest(tmp_path)
    with open(layout.disk_info, "w") as handle:
        handle.write("{not json")
    with pytest.raises(VirtfleetError, match=r"^cannot tell which files of guest g1 to remove: the disk format "
                                             r"record .* is corrupt .*\. Nothing was changed\.$"):
        plan_mod.recorded_files(layout)


@pytest.mark.parametrize("state,actions,after", [("running", ["define", "start"], "running"),
                                                 ("paused", ["define", "start_paused"], "paused"),
                                                 ("shutdown", ["define"], "shutoff")])
def test_a_new_domain_starts_from_shut_off(state, actions, after):
    plan = plan_of(FakeConn(), params(state=state))
    assert (plan.actions, plan.after_state) == (actions, after)


def test_a_running_guest_behind_its_new_definition_restarts_with_apply_restart_or_reports_it_pending():
    for apply, actions, pending in (("restart", ["redefine", "shutdown", "start"], False),
                                    ("none", ["redefine"], True)):
        conn = FakeConn()
        conn.add(guest_xml(vcpus=1), status="running")
        plan = plan_of(conn, params(xml=guest_xml(vcpus=2), apply=apply))
        assert (plan.actions, plan.restart_pending) == (actions, pending)
        assert [d.what for d in plan.pending] == ["max_vcpus", "vcpus"]


def test_removing_a_domain_shows_its_definition_as_before():
    conn = FakeConn()
    conn.add(guest_xml(), status="running")
    plan = plan_of(conn, params(state="absent"))
    assert plan.actions == ["destroy", "undefine"] and plan.after_state == "absent"
    assert "<name>g1</name>" in plan.before_xml and plan.after_xml == ""


def test_a_desired_xml_given_inline_is_named_the_xml_option_in_messages():
    with pytest.raises(VirtfleetError, match=r"^cannot parse the domain XML from the xml option: "):
        plan_of(FakeConn(), params(xml="<domain"))
