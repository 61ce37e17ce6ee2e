"""The domain lifecycle's plan and apply halves on a fake libvirt, and the module's argument handling.

The fake keeps what matters for planning: a persistent (inactive) definition, the definition the
running guest started with, state, autostart. Properties: check mode predicts exactly what the real
run does and changes nothing; a second run is a no-op; bad arguments end in a clear failure.
"""

from __future__ import annotations

import os
import re

import libvirt
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import lifecycle as lc
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import memo
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import model
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import plan as plan_mod
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.spec import WANTED_STATES, DomainSpec
from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import WARNINGS_KEY, VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.guest import Hypervisor
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk.record import write_disk_records
from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import guest_layout
from tests.support.runner import run_module
from tests.support.libvirt_errors import libvirt_error

UUID = "6f1c7a52-3a55-4d8e-9a43-0a2b0f1d5e01"


def guest_xml(name="g1", vcpus=1, uuid=UUID, mac="52:54:00:00:00:01", owned=(), disks=()):
    uuid_el = "<uuid>%s</uuid>" % uuid if uuid else ""
    mac_el = "<mac address='%s'/>" % mac if mac else ""
    meta = ""
    if owned:
        meta = ("<metadata><v:instance xmlns:v='https://virtfleet.dev/xmlns/libvirt/1'><v:owned-files>%s"
                "</v:owned-files></v:instance></metadata>" % "".join("<v:file>%s</v:file>" % f for f in owned))
    disk_els = "".join("<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='%s'/>"
                       "<target dev='vd%s' bus='virtio'/></disk>" % (path, chr(ord("a") + i))
                       for i, path in enumerate(disks))
    return ("<domain type='qemu'><name>%s</name>%s%s<memory unit='KiB'>131072</memory>"
            "<vcpu placement='static'>%d</vcpu><os><type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>"
            "<boot dev='hd'/></os><devices>%s<interface type='network'>%s<source network='default'/>"
            "<model type='virtio'/></interface></devices></domain>" % (name, uuid_el, meta, vcpus, disk_els, mac_el))


class FakeDomain:
    STATES = {"running": 1, "paused": 3, "shutoff": 5}

    def __init__(self, conn, xml, persistent=True):
        self.conn = conn
        self.inactive = xml
        self.live = None          # the definition the guest started with, while it runs
        self.status = "shutoff"
        self.auto = False
        self.persistent = persistent
        self.obeys_acpi = True

    def _mutate(self):
        self.conn.mutations += 1

    # -- reading
    def name(self):
        return model.Domain.from_xml(self.inactive).name

    def UUIDString(self):
        return model.Domain.from_xml(self.inactive).uuid or UUID

    def state(self):
        if self not in self.conn.domains.values():
            raise libvirt_error("no domain", libvirt.VIR_ERR_NO_DOMAIN)
        return self.STATES[self.status], 1

    def isPersistent(self):
        return self.persistent

    def autostart(self):
        return int(self.auto)

    def XMLDesc(self, flags=0):
        if flags & libvirt.VIR_DOMAIN_XML_INACTIVE or self.live is None:
            return self.inactive
        return self.live.replace("<domain type='qemu'>", "<domain type='qemu' id='7'>", 1)

    # -- acting
    def createWithFlags(self, flags=0):
        self._mutate()
        self.live = self.inactive
        self.status = "paused" if flags & libvirt.VIR_DOMAIN_START_PAUSED else "running"

    def suspend(self):
        self._mutate()
        self.status = "paused"

    def resume(self):
        self._mutate()
        self.status = "running"

    def shutdown(self):
        self._mutate()
        if self.obeys_acpi:
            self._off()

    def destroy(self):
        self._mutate()
        self._off()

    def _off(self):
        self.status, self.live = "shutoff", None
        if not self.persistent:
            self.conn.domains.pop(self.name(), None)

    def undefineFlags(self, flags=0):
        self._mutate()
        self.conn.domains.pop(self.name(), None)

    def setAutostart(self, value):
        self._mutate()
        self.auto = bool(value)

    def setMetadata(self, kind, xml, prefix, uri, flags):
        """As libvirt: one element per namespace, printed on its own line in <metadata>, which it creates."""
        assert kind == libvirt.VIR_DOMAIN_METADATA_ELEMENT and flags == libvirt.VIR_DOMAIN_AFFECT_CONFIG
        if not self.persistent:
            raise libvirt_error("cannot change persistent config of a transient domain")
        self._mutate()
        self.conn.metadata_writes += 1
        own = re.compile(r'^    <\w+:\w+ xmlns:\w+="%s"[^\n]*\n' % re.escape(uri), re.M)
        if xml is None:
            self.inactive = own.sub("", self.inactive)
            return
        tag, attrs = re.match(r'<(\w+)((?: \w+="[^"]*")*)/>$', xml).groups()
        line = '    <%s:%s xmlns:%s="%s"%s/>\n' % (prefix, tag, prefix, uri, attrs)
        if own.search(self.inactive):
            self.inactive = own.sub(lambda _match: line, self.inactive)
        elif "<metadata>" in self.inactive:
            self.inactive = self.inactive.replace("<metadata>", "<metadata>\n" + line, 1)
        else:
            self.inactive = self.inactive.replace("</name>", "</name><metadata>\n%s</metadata>" % line, 1)


class FakeConn:
    # The custom-mode CPU models QEMU knows, as the domain capabilities list them (QEMU 7.2 lacks Icelake-Client).
    cpu_models = ("qemu64", "Nehalem", "Westmere", "EPYC")

    def __init__(self):
        self.domains = {}
        self.mutations = 0
        self.metadata_writes = 0
        self.capabilities_asked = []

    def getDomainCapabilities(self, emulator, arch, machine, virt_type, flags=0):  # noqa: N802
        self.capabilities_asked.append((machine, virt_type, arch))
        models = "".join("<model usable='yes' vendor='Intel'>%s</model>" % name for name in self.cpu_models)
        return ("<domainCapabilities><machine>%s</machine><cpu><mode name='host-model' supported='yes'>"
                "<model fallback='forbid'>EPYC</model></mode><mode name='custom' supported='yes'>%s</mode></cpu>"
                "</domainCapabilities>" % (machine, models))

    def lookupByName(self, name):
        if name not in self.domains:
            raise libvirt_error("no domain", libvirt.VIR_ERR_NO_DOMAIN)
        return self.domains[name]

    def defineXML(self, xml):
        self.mutations += 1
        name = model.Domain.from_xml(xml).name
        if name in self.domains:
            self.domains[name].inactive = xml
            self.domains[name].persistent = True
        else:
            self.domains[name] = FakeDomain(self, xml)
        return self.domains[name]

    def listAllDomains(self, flags=0):
        return list(self.domains.values())

    def add(self, xml, status="shutoff", autostart=False):
        dom = self.defineXML(xml)
        if status != "shutoff":
            dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED if status == "paused" else 0)
        dom.auto = autostart
        self.mutations = self.metadata_writes = 0
        return dom

    def snapshot(self):
        return {n: (d.inactive, d.live, d.status, d.auto) for n, d in self.domains.items()}


def params(**over):
    base = {"name": "g1", "state": "running", "xml": guest_xml(), "autostart": None,
            "apply": "none", "shutdown_timeout": 0, "start_timeout": 0, "force_off": False,
            "remove_storage": False}
    base.update(over)
    return base


def spec_of(args):
    """The typed spec the core builds from ``args``, with its desired XML."""
    return lc.with_desired_xml(DomainSpec.from_params(dict(args)))


def plan_of(conn, args):
    return plan_mod.plan_domain(Hypervisor(conn), spec_of(args))


def ensure(conn, args, check_mode):
    """The domain module's core on the fake libvirt, through the Hypervisor wrapper. Diff mode takes the full
    path (planning and comparing); the memo's fast path is asked on its own (``fast_answer``)."""
    return lc.ensure_domain(dict(args), check_mode, diff=True, hypervisor=Hypervisor(conn))


def fast_answer(conn, args):
    """The memo's fast-path answer (None: the full path must run)."""
    return memo.fast_result(Hypervisor(conn), spec_of(args))


# ------------------------------------------------------------------------------------ plans


@pytest.mark.parametrize("have, want, actions", [
    ("absent", "running", ["define", "start"]),
    ("absent", "defined", ["define"]),
    ("absent", "paused", ["define", "start_paused"]),
    ("absent", "shutdown", ["define"]),
    ("absent", "absent", []),
    ("shutoff", "running", ["start"]),
    ("running", "paused", ["suspend"]),
    ("paused", "running", ["resume"]),
    ("paused", "shutdown", ["shutdown"]),
    ("running", "defined", []),
    ("running", "absent", ["destroy", "undefine"]),
    ("shutoff", "absent", ["undefine"]),
])
def test_plan_actions(have, want, actions):
    conn = FakeConn()
    if have != "absent":
        conn.add(guest_xml(), status=have)
    assert plan_of(conn, params(state=want)).actions == actions


def test_only_a_vcpu_change_gives_exactly_that_line():
    conn = FakeConn()
    conn.add(guest_xml(vcpus=1))
    plan = plan_of(conn, params(xml=guest_xml(vcpus=2), state="defined"))
    assert plan.actions == ["redefine"]
    assert plan.differences == ["-  <vcpu placement=\"static\">1</vcpu>", "+  <vcpu placement=\"static\">2</vcpu>"]


def test_defined_uuid_and_macs_are_kept_when_the_xml_omits_them():
    conn = FakeConn()
    conn.add(guest_xml())
    result = ensure(conn, params(xml=guest_xml(uuid=None, mac=None), state="defined"), False)
    assert result["changed"] is False and result["uuid"] == UUID


def test_another_uuid_or_name_in_the_xml_is_refused():
    conn = FakeConn()
    conn.add(guest_xml())
    with pytest.raises(VirtfleetError, match="UUID"):
        plan_of(conn, params(xml=guest_xml(uuid="6f1c7a52-3a55-4d8e-9a43-0a2b0f1d5e02")))
    with pytest.raises(VirtfleetError, match="defines domain 'g2', not 'g1'"):
        plan_of(conn, params(xml=guest_xml(name="g2")))
    assert plan_of(conn, params(xml=guest_xml(uuid=UUID.upper().replace("-", "")))).actions == ["start"]


def test_shutdown_ignored_names_the_state_and_force_off_destroys():
    conn = FakeConn()
    conn.add(guest_xml(), status="running").obeys_acpi = False
    with pytest.raises(VirtfleetError, match="waiting for domain g1 to be shutoff.*force_off"):
        ensure(conn, params(state="shutdown"), False)
    result = ensure(conn, params(state="shutdown", force_off=True), False)
    assert result["actions"] == ["shutdown", "destroy"] and result["state"] == "shutoff"


def test_transient_domain_is_destroyed_not_undefined():
    conn = FakeConn()
    dom = conn.add(guest_xml(), status="running")
    dom.persistent = False
    result = ensure(conn, params(state="absent"), False)
    assert result["actions"] == ["destroy"] and result["state"] == "absent"


def test_remove_storage_deletes_only_what_the_collection_recorded_in_the_guests_own_directory(tmp_path):
    """Issue 10 item 1 (replaces the test of the metadata rule, which deleted whatever owned_files listed)."""
    layout = guest_layout(str(tmp_path), "g1")
    os.makedirs(layout.instance_dir)
    outside = tmp_path / "victim"
    files = {name: layout.file(name) for name in ("disk", "disk.local", "disk.config", "disk.swap", "notes.txt")}
    for name, path in files.items():
        if name != "disk.swap":
            open(path, "w").close()
    os.symlink(str(outside), files["disk.swap"])
    for path in (layout.digest_of("disk.config"), layout.domain_xml, layout.console_log, str(outside)):
        open(path, "w").close()
    write_disk_records(layout, {name: {"format": "raw"} for name in ("disk", "disk.local", "disk.config",
                                                                     "disk.swap", "../victim")})
    conn = FakeConn()
    conn.add(guest_xml(owned=[str(outside), files["notes.txt"], "relative/path"], disks=[files["disk"]]))
    conn.add(guest_xml(name="other", uuid=None, disks=[files["disk.local"]]))
    args = params(state="absent", remove_storage=True, instances_path=str(tmp_path))
    predicted = ensure(conn, args, True)
    expected = [files["disk"], files["disk.config"], layout.digest_of("disk.config"), layout.domain_xml,
                layout.console_log, layout.disk_info]
    assert predicted["removed_files"] == expected and not conn.mutations
    kept = " ".join(predicted[WARNINGS_KEY])
    assert "disk.local is kept: domain other uses it" in kept and "disk.swap is kept: it is a symbolic link" in kept
    assert "%s is kept: the domain's metadata lists it" % outside in kept and "notes.txt is kept" in kept
    done = ensure(conn, args, False)
    assert done["actions"] == predicted["actions"] == ["undefine", "remove_storage"]
    assert done["removed_files"] == expected
    assert sorted(os.listdir(layout.instance_dir)) == ["disk.local", "disk.swap", "notes.txt"]
    assert outside.exists()


def test_remove_storage_finishes_after_the_domain_is_gone_and_never_works_through_a_symlinked_directory(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "disk").write_text("not ours")
    layout = guest_layout(str(tmp_path / "instances"), "g1")
    os.makedirs(os.path.dirname(layout.instance_dir))
    os.symlink(str(elsewhere), layout.instance_dir)
    write_disk_records(guest_layout(str(tmp_path / "instances"), "g1", str(elsewhere)), {"disk": {"format": "raw"}})
    args = params(state="absent", remove_storage=True, instances_path=str(tmp_path / "instances"))
    refused = ensure(FakeConn(), args, False)
    assert refused["changed"] is False and refused["removed_files"] == []
    assert "is a symbolic link" in refused[WARNINGS_KEY][0] and (elsewhere / "disk").exists()
    os.unlink(layout.instance_dir)
    os.makedirs(layout.instance_dir)
    open(layout.file("disk"), "w").close()
    write_disk_records(layout, {"disk": {"format": "raw"}})
    predicted = ensure(FakeConn(), args, True)  # no domain any more: the files are still removed
    finished = ensure(FakeConn(), args, False)
    assert finished["actions"] == predicted["actions"] == ["remove_storage"]
    assert finished["removed_files"] == predicted["removed_files"] == [layout.file("disk"), layout.disk_info,
                                                                       layout.instance_dir]
    assert ensure(FakeConn(), args, False)["changed"] is False


# ------------------------------------------------------------------------------- properties

WORLD = st.fixed_dictionaries({
    "have": st.sampled_from(["absent", "shutoff", "running", "paused"]),
    "have_vcpus": st.integers(1, 3),
    "have_autostart": st.booleans(),
    "live_lags": st.booleans(),
    "want": st.sampled_from(WANTED_STATES),
    "want_vcpus": st.integers(1, 3),
    "autostart": st.sampled_from([None, True, False]),
    "apply": st.sampled_from(["none", "restart"]),
    "omit_identity": st.booleans(),
})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(WORLD)
@example({"have": "paused", "have_vcpus": 1, "have_autostart": False, "live_lags": True, "want": "defined",
          "want_vcpus": 1, "autostart": None, "apply": "restart", "omit_identity": False})  # restart kept it paused
def test_check_mode_predicts_exactly_and_a_second_run_is_a_no_op(world):
    conn = FakeConn()
    if world["have"] != "absent":
        dom = conn.add(guest_xml(vcpus=world["have_vcpus"]), status=world["have"], autostart=world["have_autostart"])
        if world["live_lags"] and dom.live is not None:
            dom.live = guest_xml(vcpus=world["have_vcpus"] % 3 + 1)  # started before the last redefine
    omit = world["omit_identity"] and world["have"] != "absent"
    args = params(state=world["want"], autostart=world["autostart"], apply=world["apply"],
                  xml=guest_xml(vcpus=world["want_vcpus"], uuid=None if omit else UUID, mac=None if omit else
                                "52:54:00:00:00:01"))
    before = conn.snapshot()
    predicted = ensure(conn, dict(args), True)
    assert conn.snapshot() == before and conn.mutations == 0, "check mode changed something"
    done = ensure(conn, dict(args), False)
    assert done["actions"] == predicted["actions"]
    assert done["state"] == predicted["state"]
    assert done["changed"] == predicted["changed"] == bool(done["actions"])
    settled, mutations = conn.snapshot(), conn.mutations
    again = ensure(conn, dict(args), False)
    assert again["changed"] is False and again["actions"] == [], (world, done, again)
    assert conn.snapshot() == settled and conn.mutations == mutations, "a run with nothing to do wrote"
    # The re-run memo: recorded exactly when the changing run left nothing to do; then the fast path
    # answers what the full path answers, and it never touches libvirt.
    fast = fast_answer(conn, args)
    assert conn.mutations == mutations
    expect_fast = bool(done["actions"]) and world["want"] != "absent" and not again["restart_pending"]
    assert (fast is not None) == expect_fast, (world, done, again)
    if fast is not None:
        again.pop("diff")
        assert fast == again
    if world["want"] == "absent":
        assert "g1" not in conn.domains
    else:
        dom = conn.domains["g1"]
        assert dom.UUIDString() == UUID
        assert {"running": "running", "paused": "paused", "shutdown": "shutoff"}.get(world["want"], dom.status) \
            == dom.status
        if world["autostart"] is not None:
            assert dom.auto is world["autostart"]


ANYTHING = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 6, 10 ** 6), st.text(max_size=30),
                     st.lists(st.text(max_size=5), max_size=2))
HOSTILE_NAMES = st.one_of(st.sampled_from(["", " ", "../etc", "a/b", "x\n<y/>", "\x00", ".", "..", " g1",
                                           "g" * 300, "</name><on_crash>"]), st.text(max_size=40))
XML_TEXTS = st.one_of(st.text(max_size=60), st.sampled_from([guest_xml(), guest_xml(name="other"), "<domain/>",
                                                             guest_xml(uuid="not-a-uuid"), "<a><b></a>", ""]))


@settings(max_examples=300, deadline=None)
@given(name=HOSTILE_NAMES, state=st.one_of(st.sampled_from(WANTED_STATES), ANYTHING), xml=XML_TEXTS,
       timeout=ANYTHING, remove_storage=st.booleans())
def test_bad_arguments_end_in_a_clear_error_never_an_exception(name, state, xml, timeout, remove_storage):
    conn = FakeConn()
    conn.add(guest_xml(), status="running")
    try:
        ensure(conn, params(name=name, state=state, xml=xml, shutdown_timeout=timeout,
                            remove_storage=remove_storage), True)
    except VirtfleetError as exc:
        assert exc.msg and "Traceback" not in exc.msg


MODULE_ARGS = st.fixed_dictionaries({"name": HOSTILE_NAMES}, optional={
    "state": st.one_of(st.sampled_from(["running", "absent", "bogus"]), ANYTHING),
    "xml": XML_TEXTS,
    "shutdown_timeout": ANYTHING,
    "autostart": ANYTHING,
    "remove_storage": ANYTHING,
    "force_off": ANYTHING,
    "wait_for_address": ANYTHING,
    "address_timeout": ANYTHING,
    "bogus_option": ANYTHING,
})


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(args=MODULE_ARGS)
def test_the_module_never_prints_a_traceback(args, tmp_path_factory):
    """Through Ansible's real argument parsing, on libvirt's in-process test driver (no daemon touched)."""
    args = dict(args, uri="test:///default", instances_path=str(tmp_path_factory.mktemp("inst")))
    result = run_module("domain", args, check=True)
    assert "Traceback" not in result["_stderr"], result["_stderr"]
    assert "internal error" not in result.get("msg", ""), result
    if result["_rc"] != 0:
        assert result.get("failed") and result.get("msg"), result


@pytest.mark.parametrize("state", ["shutdown", "paused", "defined", "absent"])
def test_waiting_for_an_address_needs_a_running_guest(state):
    with pytest.raises(VirtfleetError, match="wait_for_address needs state=running"):
        DomainSpec.from_params(params(state=state, wait_for_address=True))


@pytest.mark.parametrize("timeout", [-1, 86401, True, "5"])
def test_address_timeout_is_bounded(timeout):
    with pytest.raises(VirtfleetError, match="address_timeout must be a number of seconds from 0 to 86400"):
        DomainSpec.from_params(params(wait_for_address=True, address_timeout=timeout))


def test_a_pending_restart_says_which_differences_wait_for_it_and_changes_are_classified():
    conn = FakeConn()
    conn.add(guest_xml(vcpus=1), status="running")
    result = ensure(conn, params(xml=guest_xml(vcpus=2)), False)
    assert result["actions"] == ["redefine"] and result["restart_pending"] is True
    assert [(c["what"], c["before"], c["after"], c["applies"]) for c in result["changes"]] == [
        ("max_vcpus", 1, 2, "restart"), ("vcpus", 1, 2, "restart")]
    [warning] = result[WARNINGS_KEY]
    assert warning.endswith("It needs the restart for: max_vcpus: 1 -> 2 (restart); vcpus: 1 -> 2 (restart)")
    # the next run has nothing to redefine; what the guest lacks is still said
    again = ensure(conn, params(xml=guest_xml(vcpus=2)), False)
    assert again["changes"] == [] and again["restart_pending"] is True
    assert "vcpus: 1 -> 2 (restart)" in again[WARNINGS_KEY][0]


# Issue 10 item 10: one guest-name rule; domain took names domain_xml refuses (the 255-character rule is gone).
NAMES_DOMAIN_XML_REFUSES = ["a b", "caf\u00e9", "cafe\u0301", "x<y>&", "g" * 65, "_base", "locks", "g1\n", "-x", ".."]


@pytest.mark.parametrize("name", NAMES_DOMAIN_XML_REFUSES)
def test_domain_accepts_only_the_one_guest_name_rule(name):
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.xml_spec import DomainXmlSpec

    with pytest.raises(VirtfleetError, match="invalid guest name") as by_domain_xml:
        DomainXmlSpec.from_params({"name": name})
    with pytest.raises(VirtfleetError, match="invalid guest name") as by_domain:
        ensure(FakeConn(), params(name=name, xml=guest_xml(name="g1")), True)
    assert by_domain.value.msg == by_domain_xml.value.msg


def test_the_module_refuses_such_a_name_before_touching_libvirt(tmp_path):
    result = run_module("domain", {"name": "web 1", "uri": "test:///default", "instances_path": str(tmp_path),
                                   "xml": guest_xml(name="web 1")}, check=True)
    assert result.get("failed") and "invalid guest name 'web 1'" in result["msg"], result


@pytest.mark.parametrize("xml, message", [
    (guest_xml(uuid="00000000-0000-0000-0000-000000000000"), "has the nil UUID"),
    (guest_xml(mac="00:00:00:00:00:00"), "the all-zero MAC"),
    (guest_xml().replace("</devices>", "<interface type='network'><mac address='52:54:00:00:00:01'/>"
                         "<source network='default'/></interface></devices>"), "two NICs the MAC 52:54:00:00:00:01"),
])
def test_a_desired_definition_with_a_nil_uuid_or_clashing_macs_is_refused(xml, message):
    """Issue 10 item 12, for definitions given to domain directly."""
    with pytest.raises(VirtfleetError, match=message):
        ensure(FakeConn(), params(xml=xml), True)
