"""The domain module's re-run memo and fast path, on the fake libvirt of test_domain_lifecycle.

Properties: the memo is written only by runs that change something and only when nothing differs
afterwards; with a matching memo the fast path returns exactly what the full path returns, without
writing and without importing the domain model or lxml; anything else that differs makes the full
path run and report as before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import memo
from tests.unit.plugins.module_utils._domain.test_lifecycle import FakeConn, ensure, fast_answer, guest_xml, params

KEY = "0123456789abcdef" * 4
LINE = '    <vfmemo:memo xmlns:vfmemo="https://virtfleet.dev/xmlns/libvirt/memo/1" key="%s"/>\n'


def full(conn, args, check=False):
    """The full path's result (the fast path is asked on its own)."""
    result = ensure(conn, dict(args), check)
    result.pop("diff")
    return result


def booted(**over):
    """A guest defined (and started, unless another state is asked for) by the module: it carries a memo."""
    conn = FakeConn()
    args = params(**over)
    assert full(conn, args)["actions"] == (["define", "start"] if args["state"] == "running" else ["define"])
    return conn, args


# ------------------------------------------------------------------------------------------ texts


def test_domain_info_does_not_report_the_memo():
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import info
    from tests.unit.plugins.module_utils._domain.test_info import LIVE_TCG_GUEST, UEFI_GUEST

    wrapped = "<metadata>\n" + LINE % KEY + "  </metadata>\n  <memory"
    assert "<metadata>" not in LIVE_TCG_GUEST and "</metadata>" in UEFI_GUEST
    assert info.describe_xml(LIVE_TCG_GUEST.replace("<memory", wrapped, 1)) == info.describe_xml(LIVE_TCG_GUEST)
    assert info.describe_xml(UEFI_GUEST.replace("</metadata>", LINE % KEY + "</metadata>", 1)) == \
        info.describe_xml(UEFI_GUEST)


def test_strip_and_read_only_our_exact_line():
    text = "<domain>\n  <metadata>\n" + LINE % KEY + "  </metadata>\n</domain>\n"
    assert memo.strip_memo(text) == "<domain>\n  <metadata>\n  </metadata>\n</domain>\n"
    assert memo.memo_of(text) == KEY
    assert memo.memo_of(text.replace(KEY, memo.PLACEHOLDER)) is None, "a placeholder is no memo"
    assert memo.strip_memo(text.replace(KEY, memo.PLACEHOLDER)) == memo.strip_memo(text)
    for other in (text.replace("    <vfmemo", "      <vfmemo"),          # nested deeper: not ours
                  text.replace('key="', 'key="x'),                         # not a sha256
                  text.replace("memo/1", "memo/2"),                        # another namespace
                  text.replace("    <vfmemo", "    <other")):             # another prefix
        assert memo.memo_of(other) is None and memo.strip_memo(other) == other
    assert memo.memo_of(text + LINE % KEY) is None, "two memos: none trusted"


def test_key_covers_code_desired_inactive_and_live_but_not_the_memo_itself():
    inactive = "<domain>\n  <metadata>\n" + LINE % KEY + "  </metadata>\n</domain>\n"
    key = memo.memo_key("c" * 64, "<desired/>", inactive, "<live/>")
    assert key == memo.memo_key("c" * 64, "<desired/>", inactive.replace(KEY, "f" * 64), "<live/>")
    assert key == memo.memo_key("c" * 64, "<desired/>", inactive, LINE % KEY + "<live/>")
    for changed in (("d" * 64, "<desired/>", inactive, "<live/>"),
                    ("c" * 64, "<desired />", inactive, "<live/>"),
                    ("c" * 64, "<desired/>", inactive.replace("<domain>", "<domain >"), "<live/>"),
                    ("c" * 64, "<desired/>", inactive, "<live />"),
                    ("c" * 64, "<desired/>", inactive, None),
                    ("c" * 64, "<desired/>", inactive, "")):
        assert memo.memo_key(*changed) != key, changed


def test_code_digest_is_over_the_deciding_sources():
    assert memo.CODE_MODULES == ("_domain.memo", "_domain.lifecycle", "_domain.plan", "_domain.model",
                                 "_domain.normalize", "_domain.differences")
    assert memo.code() is not None and len(memo.code()) == 64


# --------------------------------------------------------------------------------------- writing


def test_memo_written_after_define_and_start_then_the_rerun_is_fast_and_read_only():
    conn, args = booted()
    dom = conn.domains["g1"]
    assert conn.metadata_writes == 2, "a placeholder (libvirt creates <metadata>), then the key"
    assert memo.memo_of(dom.inactive) is not None
    assert memo.memo_of(dom.live or "") is None, "written to the persistent definition only"
    before, mutations = conn.snapshot(), conn.mutations
    fast = fast_answer(conn, args)
    assert fast == full(conn, args) == {
        "changed": False, "actions": [], "state": "running", "previous_state": "running",
        "restart_pending": False, "differences": [], "changes": [], "uuid": dom.UUIDString()}
    assert full(conn, args, check=True) == fast and fast_answer(conn, args) == fast
    assert conn.snapshot() == before and conn.mutations == mutations


def test_memo_in_an_existing_metadata_element_needs_one_write_only():
    conn, _args = booted(xml=guest_xml(owned=["/i/disk"]))
    assert conn.metadata_writes == 2  # placeholder in the existing <metadata>, the key
    assert "<metadata>\n" + LINE[:20] in conn.domains["g1"].inactive


def test_an_edit_outside_the_module_takes_the_full_path_and_is_reported():
    conn, args = booted()
    dom = conn.domains["g1"]
    dom.inactive = dom.inactive.replace(">1</vcpu>", ">2</vcpu>")  # a virsh edit keeps the memo
    assert memo.memo_of(dom.inactive) is not None
    assert fast_answer(conn, args) is None
    redone = full(conn, dict(args, state="defined"))
    assert redone["actions"] == ["redefine"] and redone["differences"] == [
        "-  <vcpu placement=\"static\">2</vcpu>", "+  <vcpu placement=\"static\">1</vcpu>"]
    # redefined: the new definition has no memo, the settled run records a fresh one
    assert fast_answer(conn, dict(args, state="defined")) == full(conn, dict(args, state="defined"))


def test_a_hot_plug_or_another_desired_xml_takes_the_full_path():
    conn, args = booted()
    dom = conn.domains["g1"]
    dom.live = dom.live.replace("</devices>", "<watchdog model='i6300esb'/></devices>")
    assert fast_answer(conn, args) is None
    assert full(conn, args)["restart_pending"] is True
    conn, args = booted()
    assert fast_answer(conn, dict(args, xml=args["xml"] + "\n")) is None, "the desired XML, as given"


def test_a_restart_pending_run_records_no_memo_and_later_runs_write_nothing():
    conn, args = booted()
    writes = conn.metadata_writes
    pending = full(conn, dict(args, xml=guest_xml(vcpus=2)))
    assert pending["actions"] == ["redefine"] and pending["restart_pending"] is True
    assert conn.metadata_writes == writes and memo.memo_of(conn.domains["g1"].inactive) is None
    assert fast_answer(conn, dict(args, xml=guest_xml(vcpus=2))) is None
    before = conn.snapshot()
    assert full(conn, dict(args, xml=guest_xml(vcpus=2)))["restart_pending"] is True
    assert conn.snapshot() == before
    restarted = full(conn, dict(args, xml=guest_xml(vcpus=2), apply="restart"))
    assert restarted["actions"] == ["shutdown", "start"]
    assert fast_answer(conn, dict(args, xml=guest_xml(vcpus=2), apply="restart")) is not None


@pytest.mark.parametrize("over, action", [
    ({"state": "paused"}, "suspend"), ({"state": "shutdown"}, "shutdown"), ({"autostart": True}, "autostart_on")])
def test_an_action_to_do_takes_the_full_path_and_keeps_a_valid_memo_without_writing(over, action):
    conn, args = booted()
    writes = conn.metadata_writes
    assert fast_answer(conn, dict(args, **over)) is None
    assert full(conn, dict(args, **over))["actions"] == [action]
    if action != "shutdown":  # the live definition is unchanged: the memo still holds
        assert conn.metadata_writes == writes
    fast = fast_answer(conn, dict(args, **over))
    assert fast is not None and fast == full(conn, dict(args, **over))


def test_a_shut_off_guest_keyed_without_live_xml():
    conn, args = booted(state="defined")
    assert conn.domains["g1"].status == "shutoff"
    assert fast_answer(conn, args) == full(conn, args)
    assert fast_answer(conn, dict(args, state="running")) is None  # needs a start
    conn.domains["g1"].createWithFlags(0)  # started by someone else: now there is a live text
    assert fast_answer(conn, args) is None


def test_absent_and_unreadable_code_never_use_a_memo(monkeypatch):
    conn, args = booted()
    assert fast_answer(conn, dict(args, state="absent")) is None
    assert fast_answer(conn, dict(args, name="nothere")) is None
    monkeypatch.setattr(memo, "code", lambda: None)
    assert fast_answer(conn, args) is None
    conn2 = FakeConn()
    full(conn2, args)
    assert conn2.metadata_writes == 0


def test_a_memo_that_does_not_read_back_as_written_is_removed(monkeypatch):
    conn = FakeConn()
    args = params()
    real = memo._set

    def misprinted(guest, value):
        real(guest, value)
        if value not in (None, memo.PLACEHOLDER):
            dom = conn.domains["g1"]
            dom.inactive = dom.inactive.replace(' key="', ' at="1" key="')  # another libvirt's way

    monkeypatch.setattr(memo, "_set", misprinted)
    assert full(conn, args)["actions"] == ["define", "start"]
    assert "vfmemo" not in conn.domains["g1"].inactive
    assert fast_answer(conn, args) is None


def test_a_libvirt_error_while_recording_only_means_no_memo():
    conn = FakeConn()
    args = params()
    full(conn, dict(args, state="defined"))
    dom = conn.domains["g1"]
    dom.inactive = memo.strip_memo(dom.inactive)
    dom.persistent = False  # setMetadata refuses
    done = full(conn, args)
    assert done["actions"] == ["start"] and done["state"] == "running"
    assert fast_answer(conn, args) is None


# ------------------------------------------------------------------------------- through the module

CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
texts = json.loads(sys.argv[2])
from ansible_collections.virtfleet.libvirt.plugins.modules import domain as mod
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.guest import Hypervisor

class Dom:
    def name(self): return texts["params"]["name"]
    def state(self): return (1, 1)
    def autostart(self): return 0
    def UUIDString(self): return texts["uuid"]
    def XMLDesc(self, flags=0): return texts["inactive"] if flags & 2 else texts["live"]

class Conn:
    def lookupByName(self, name): return Dom()

# What the module's main() hands to run_core, with a hypervisor on the fake connection.
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.lifecycle import ensure_domain
result = ensure_domain(texts["params"], check_mode=texts["check"], diff=texts["diff"],
                           hypervisor=Hypervisor(Conn()))
result.pop("diff", None)
loaded = sorted(m for m in sys.modules if m == "lxml" or m.startswith("lxml.") or m.endswith(
    ("._domain.model", "._domain.plan", "._domain.normalize", "._domain.differences")))
print(json.dumps({"result": result, "loaded": loaded}))
"""


def run_core_in_a_fresh_python(dom, args, diff=False, check=False):
    module_args = dict(args, uri="test:///default", instances_path="/nonexistent", xml_file=None)
    payload = {"inactive": dom.XMLDesc(2), "live": dom.XMLDesc(0), "uuid": dom.UUIDString(),
               "params": module_args, "diff": diff, "check": check}
    collections = next(p for p in sys.path if p.endswith(os.path.join(".build", "collections")))
    proc = subprocess.run([sys.executable, "-c", CHILD, collections, json.dumps(payload)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def test_the_modules_fast_path_imports_neither_the_model_nor_lxml():
    conn, args = booted()
    dom = conn.domains["g1"]
    expected = full(conn, args)
    fast = run_core_in_a_fresh_python(dom, args)
    assert fast == {"result": expected, "loaded": []}
    # diff mode, or a definition that differs: the full path, same answer as here
    in_diff = run_core_in_a_fresh_python(dom, args, diff=True)
    assert in_diff["result"] == expected and any(m.endswith("_domain.model") for m in in_diff["loaded"])
    dom.inactive = dom.inactive.replace(">1</vcpu>", ">2</vcpu>")
    edited = run_core_in_a_fresh_python(dom, dict(args, state="defined"), check=True)
    assert edited["result"]["actions"] == ["redefine"] and "lxml" in edited["loaded"]


def test_the_guest_agent_channel_connecting_does_not_change_the_key():
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import memo as memo_mod

    live = ("<domain type='qemu' id='3'>\n  <devices>\n    <channel type='unix'>\n"
            "      <target type='virtio' name='org.qemu.guest_agent.0' state='%s'/>\n"
            "    </channel>\n  </devices>\n</domain>\n")
    keys = {memo_mod.memo_key("0" * 64, "<domain/>", "<domain/>", live % state)
            for state in ("connected", "disconnected")}
    assert len(keys) == 1
    # anything else in the live XML still changes it
    assert memo_mod.memo_key("0" * 64, "<domain/>", "<domain/>", (live % "connected").replace("guest_agent",
                             "other")) not in keys
